from os import PathLike

REQUIRED_SYMBOLS: tuple[str, ...]
OPTIONAL_SYMBOLS: tuple[str, ...]


class ModelLibrary:
    path: str
    loaded_path: str
    executable_stack: bool
    def exported(self) -> dict[str, bool]: ...
    def release_file_pages(self) -> int: ...


def open_library(path: str | PathLike[str], *,
                 allow_executable_stack: bool = False) -> ModelLibrary: ...
