"""Which device a model runs on, from what the caller wrote."""

import torch

# c10::DeviceType values, as the ABI and csrc/tensor_bridge.h use them.
CPU, CUDA = 0, 1


def parse_device(device):
    """``(torch.device with an index for CUDA, c10 device type, index)``;
    ValueError or RuntimeError saying why ``device`` cannot run a model."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"invalid device {device!r}: {e}") from None
    if dev.type == "cpu":
        return torch.device("cpu"), CPU, -1
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"the model is for {dev} but CUDA is not available here "
                f"(torch {torch.__version__}, cuda={torch.version.cuda})")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if not 0 <= index < torch.cuda.device_count():
            raise ValueError(
                f"device cuda:{index} does not exist "
                f"({torch.cuda.device_count()} CUDA devices)")
        return torch.device("cuda", index), CUDA, index
    raise ValueError(f"unsupported device {dev}: aoti_cy runs models on cpu and cuda")
