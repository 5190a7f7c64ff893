"""aoti_cy._device without a model: device parsing, every form of stream a
caller may give (and the ones refused), and the device guard."""

import ctypes

import pytest
import torch

from aoti_cy import _device
from aoti_cy._device import DeviceGuard, on_device, parse_device, stream_address

HAS_CUDA = torch.cuda.is_available()
STREAM_FORMS = "stream must be None, an int"


def capsule(address, name=None):
    """A PyCapsule holding ``address``, as torch passes a stream to its loaders."""
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(address, name, None)


class ProtocolStream:
    """An object speaking the CUDA stream protocol: (version, address)."""

    def __init__(self, answer):
        self.answer = answer

    def __cuda_stream__(self):
        return self.answer


# ---- device codes and parse_device -------------------------------------------

def test_device_codes_are_c10_device_types():
    assert _device.CPU == torch.autograd.DeviceType.CPU.value
    assert _device.CUDA == torch.autograd.DeviceType.CUDA.value


@pytest.mark.parametrize("device", ["cpu", "cpu:0", torch.device("cpu"), torch.device("cpu", 0)])
def test_parse_device_cpu(device):
    assert parse_device(device) == (torch.device("cpu"), _device.CPU, -1)


@pytest.mark.parametrize("device", ["gpu", "", "cuda:x", None, 3.5, object()])
def test_parse_device_refuses_what_is_no_device(device):
    with pytest.raises(ValueError, match="invalid device"):
        parse_device(device)


@pytest.mark.parametrize("device", ["meta", "mps", "xpu:0"])
def test_parse_device_refuses_devices_models_do_not_run_on(device):
    with pytest.raises(ValueError, match="unsupported device .* runs models on cpu and cuda"):
        parse_device(device)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_parse_device_cuda_without_cuda(device):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        parse_device(device)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_parse_device_cuda_without_index_is_the_current_one():
    index = torch.cuda.current_device()
    assert parse_device("cuda") == (torch.device("cuda", index), _device.CUDA, index)
    assert parse_device(f"cuda:{index}")[2] == index


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_parse_device_refuses_a_gpu_that_does_not_exist():
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"cuda:{count} does not exist"):
        parse_device(f"cuda:{count}")


# ---- stream_address / stream_pointer ---------------------------------------------

@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_stream_none_and_zero_mean_the_current_stream(device):
    assert stream_address(None, device) == 0
    assert stream_address(0, device) == 0


@pytest.mark.parametrize("address", [1, 0x7F00DEADBEEF, 2 ** 64 - 1])
def test_stream_int_is_its_address(address):
    assert stream_address(address) == address


@pytest.mark.parametrize("name", [None, b"cudaStream_t", b"stream"])
def test_stream_capsule_of_any_name(name):
    held = capsule(0x1234, name)
    assert stream_address(held) == 0x1234
    assert stream_address(held, "cpu") == 0x1234


def test_stream_protocol():
    assert stream_address(ProtocolStream((0, 0x5678))) == 0x5678
    assert stream_address(ProtocolStream((0, 0))) == 0


@pytest.mark.parametrize("address", [-1, 2 ** 64])
def test_stream_address_out_of_range(address):
    with pytest.raises(ValueError, match=f"stream {address} is not a stream address"):
        stream_address(address)


@pytest.mark.parametrize("stream", ["s", 1.5, object(), [1], b"\x00", torch.zeros(1),
                                    torch.device("cpu")])
def test_stream_of_another_kind_is_refused(stream):
    with pytest.raises(TypeError, match=f"{STREAM_FORMS}.*got {type(stream).__name__}"):
        stream_address(stream)


def test_stream_bool_is_refused():
    with pytest.raises(TypeError, match="stream must be an int address, got bool"):
        stream_address(True)


def test_stream_attribute_alone_is_not_a_stream():
    # Only torch.cuda.Stream's cuda_stream is read; a look-alike says nothing
    # about its device.
    class LookAlike:
        cuda_stream = 0x1234
    with pytest.raises(TypeError, match=f"{STREAM_FORMS}.*got LookAlike"):
        stream_address(LookAlike())


@pytest.mark.parametrize("answer, error, message", [
    ((1, 0x10), ValueError, "version 1 of the CUDA stream protocol"),
    ((0, -5), ValueError, "-5 is not a stream address"),
    ((0, "0x10"), TypeError, "must be an int address, got str"),
    ((0, 0x10, 0), TypeError, r"must return \(version, address\)"),
    ([0, 0x10], TypeError, r"must return \(version, address\)"),
    (0x10, TypeError, r"must return \(version, address\)"),
])
def test_stream_protocol_answer_refused(answer, error, message):
    with pytest.raises(error, match=message):
        stream_address(ProtocolStream(answer))


def test_stream_protocol_method_that_raises():
    class Broken:
        def __cuda_stream__(self):
            raise LookupError("no stream yet")
    with pytest.raises(LookupError, match="no stream yet"):
        stream_address(Broken())


def test_stream_address_refuses_a_bad_device():
    with pytest.raises(RuntimeError):
        stream_address(5, "nonsense")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_torch_cuda_streams():
    device = torch.device("cuda", torch.cuda.current_device())
    stream = torch.cuda.Stream(device)
    assert stream_address(stream, device) == stream.cuda_stream
    assert stream_address(stream) == stream.cuda_stream
    external = torch.cuda.ExternalStream(stream.cuda_stream, device=device)
    assert stream_address(external, device) == stream.cuda_stream
    assert stream_address(torch.cuda.current_stream(device), device) == \
        torch.cuda.current_stream(device).cuda_stream


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_torch_cuda_stream_of_another_gpu_is_refused():
    stream = torch.cuda.Stream(torch.device("cuda", 1))
    with pytest.raises(ValueError, match="the stream is on cuda:1 but the model runs on cuda:0"):
        stream_address(stream, "cuda:0")
    # A CPU model's stream is refused by the run itself, not here.
    assert stream_address(stream, "cpu") == stream.cuda_stream


# ---- the device guard ------------------------------------------------------------------

def test_guard_on_cpu_does_nothing():
    with on_device("cpu") as guard:
        assert (guard.device_type, guard.device_index) == (_device.CPU, -1)
    with DeviceGuard(torch.device("cpu")):
        pass


def test_guard_is_entered_once_at_a_time():
    guard = on_device("cpu")
    with guard:
        with pytest.raises(RuntimeError, match="already entered"):
            guard.__enter__()
    with guard:   # again, once left
        pass


def test_guard_refuses_what_parse_device_refuses():
    with pytest.raises(ValueError, match="unsupported device"):
        on_device("meta")
    with pytest.raises(ValueError, match="invalid device"):
        DeviceGuard("gpu")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_guard_leaves_the_current_device_as_it_was():
    before = torch.cuda.current_device()
    last = torch.cuda.device_count() - 1
    with on_device(f"cuda:{last}") as guard:
        assert guard.device_index == last
        assert torch.cuda.current_device() == last
    assert torch.cuda.current_device() == before
    with pytest.raises(KeyError):
        with on_device(f"cuda:{last}"):
            raise KeyError("inside")
    assert torch.cuda.current_device() == before


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_guard_moves_to_another_gpu_and_back():
    torch.cuda.set_device(0)
    try:
        with on_device("cuda:1"):
            assert torch.cuda.current_device() == 1
            with on_device("cuda:0"):
                assert torch.cuda.current_device() == 0
            assert torch.cuda.current_device() == 1
        assert torch.cuda.current_device() == 0
    finally:
        torch.cuda.set_device(0)
