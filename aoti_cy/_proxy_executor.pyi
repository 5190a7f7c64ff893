from collections.abc import Iterable
from os import PathLike

import torch

from aoti_cy._extern_nodes import Node


class ProxyExecutor:
    targets: tuple[str, ...]
    path: str
    def __init__(self, nodes: Iterable[Node], device: str | torch.device = "cpu",
                 path: str | PathLike[str] = "<extern nodes>") -> None: ...
    @property
    def handle(self) -> int: ...
    def take_error(self) -> str | None: ...


def executor_for(library_path: str | PathLike[str],
                 device: str | torch.device) -> ProxyExecutor | None: ...
