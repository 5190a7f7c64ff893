from os import PathLike

REQUIRED_SYMBOLS: tuple[str, ...]
OPTIONAL_SYMBOLS: tuple[str, ...]


class ModelLibrary:
    path: str
    def exported(self) -> dict[str, bool]: ...
    def release_file_pages(self) -> int: ...


def open_library(path: str | PathLike[str]) -> ModelLibrary: ...
