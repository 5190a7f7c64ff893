from types import TracebackType
from typing import Any

import torch

CPU: int
CUDA: int

_Device = str | int | torch.device
# None, an int address, a torch.cuda.Stream, an object with __cuda_stream__,
# or a PyCapsule around cudaStream_t.
_Stream = Any


def parse_device(device: _Device) -> tuple[torch.device, int, int]: ...
def stream_address(stream: _Stream, device: _Device | None = None, name: str = "stream") -> int: ...


class DeviceGuard:
    device_type: int
    device_index: int
    def __init__(self, device: _Device | None = None) -> None: ...
    def __enter__(self) -> DeviceGuard: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool: ...


def on_device(device: _Device) -> DeviceGuard: ...
