"""The device module and the one tensor bridge on real compiled models:
numpy arrays through every constant entry point (checked against eager),
streams in every form through the run path, and the bridge compiled into one
extension that the others share."""

import ctypes
import os
import re
import shutil
import subprocess

import numpy
import pytest
import torch

import aoti_cy
from aoti_cy import _constant_calls, _device, _tensor_bridge, interface
from aoti_cy.testing import EXAMPLES, MLP, make_model
from real_models import REAL_MODELS, UPDATABLE, perturbed_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HAS_CUDA = torch.cuda.is_available()
BRIDGE_SYMBOLS = ("aoti_cy_handles_from_tensors", "aoti_cy_handle_from_tensor",
                  "aoti_cy_tensor_from_handle", "aoti_cy_accept_arrays_of")


def random_weights(model, seed):
    """New values for every constant the compiled model keeps (inductor
    inlines the small ones; eager keeps their seeded values too)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype)
            for k, v in model.extract_constants_map().items()}


def eager_mlp(weights, inputs):
    module = make_model(MLP)
    module.load_state_dict(weights, strict=False)
    with torch.no_grad():
        return module(*inputs)


def as_arrays(weights):
    return {k: v.numpy() for k, v in weights.items()}


# ---- numpy arrays through the constant entry points -------------------------------------

@pytest.fixture(scope="module")
def mlp_package():
    return EXAMPLES["mlp"].package("cpu")


@pytest.mark.parametrize("entry", ["update_constant_buffer", "user_managed",
                                   "update_inactive_constant_buffer+swap", "load_weights"])
def test_numpy_constants_on_a_container(mlp_package, entry):
    inputs = EXAMPLES["mlp"].inputs()
    with aoti_cy.load(mlp_package) as model:
        weights = random_weights(model, seed=3)
        arrays = as_arrays(weights)
        if entry == "update_constant_buffer":
            model.update_constant_buffer(arrays)
        elif entry == "user_managed":
            model.update_constant_buffer(arrays, user_managed=True)
        elif entry == "update_inactive_constant_buffer+swap":
            model.update_inactive_constant_buffer(arrays)
            model.swap_constant_buffer()
        else:
            model.load_weights(arrays)
        torch.testing.assert_close(model.run(inputs)[0], eager_mlp(weights, inputs))
        if entry == "user_managed":
            # The model runs on the arrays' own memory.
            changed = {k: v.clone() for k, v in weights.items()}
            changed["fc1.bias"] += 1
            arrays["fc1.bias"] += 1
            torch.testing.assert_close(model.run(inputs)[0], eager_mlp(changed, inputs))


def test_numpy_constants_on_a_model_instance(mlp_package):
    inputs = EXAMPLES["mlp"].inputs()
    with aoti_cy.load(mlp_package) as container:
        weights = random_weights(container, seed=4)
    with aoti_cy.Model(mlp_package, constants=as_arrays(weights)) as model:
        torch.testing.assert_close(model.run(inputs)[0], eager_mlp(weights, inputs))
        other = {k: -v for k, v in weights.items()}
        model.update_constants_map(as_arrays(other))
        torch.testing.assert_close(model.run(inputs)[0], eager_mlp(other, inputs))


def test_numpy_external_constants(mlp_package):
    inputs = EXAMPLES["mlp"].inputs()
    with aoti_cy.load(mlp_package) as container:
        weights = random_weights(container, seed=5)
    if not container.library.exported()["AOTInductorModelContainerCreateWithExternalConstants"]:
        pytest.skip("this torch's models cannot run over external constants")
    with aoti_cy.load(mlp_package, external_constants=as_arrays(weights)) as model:
        torch.testing.assert_close(model.run(inputs)[0], eager_mlp(weights, inputs))


def test_numpy_weights_on_a_transformers_model():
    real = REAL_MODELS["bert"]
    eager = real.eager()
    state = perturbed_state_dict(eager, seed=9)
    with aoti_cy.load(real.package(**UPDATABLE)) as model:
        model.load_weights({k: v.numpy() for k, v in state.items()})
        theirs = torch._inductor.aoti_load_package(real.package(**UPDATABLE))
        for shape in real.calls:
            args, kwargs = real.call(**shape)
            with torch.no_grad():
                want = real.output(eager(*args, **kwargs))
            got = real.output(model(*args, **kwargs))
            torch.testing.assert_close(got, want)
            # torch's loader, still on the compiled weights, differs: the
            # arrays' values were used.
            assert not torch.allclose(real.output(theirs(*args, **kwargs))[0], got[0])


def test_numpy_inputs_through_the_bridge():
    array = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    tensor = _tensor_bridge._round_trip(array)
    assert tensor.data_ptr() == array.ctypes.data      # a view, no copy
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (2, 3)
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        _tensor_bridge._round_trip([1.0, 2.0])


# ---- streams through the run path ----------------------------------------------------------

def _capsule(address):
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    return new(address, None, None)


class ProtocolStream:
    def __init__(self, address):
        self.address = address

    def __cuda_stream__(self):
        return (0, self.address)


@pytest.mark.parametrize("stream", [None, 0, ProtocolStream(0)])
def test_cpu_model_runs_on_the_current_stream_forms(mlp_package, stream):
    inputs = EXAMPLES["mlp"].inputs()
    with aoti_cy.load(mlp_package) as model:
        torch.testing.assert_close(model.run(inputs, stream)[0],
                                   EXAMPLES["mlp"].eager()(*inputs))


@pytest.mark.parametrize("stream", [1234, _capsule(1234), ProtocolStream(1234)])
def test_cpu_model_refuses_a_stream_in_every_form(mlp_package, stream):
    with aoti_cy.load(mlp_package) as model:
        with pytest.raises(ValueError, match="stream is only meaningful for CUDA models"):
            model.run(EXAMPLES["mlp"].inputs(), stream)


@pytest.mark.parametrize("stream", ["s", object(), -1, ProtocolStream(-1)])
def test_run_refuses_what_is_no_stream(mlp_package, stream):
    with aoti_cy.load(mlp_package) as model:
        with pytest.raises((TypeError, ValueError), match="stream"):
            model.run(EXAMPLES["mlp"].inputs(), stream)


def test_torch_compat_takes_a_capsule(mlp_package):
    from aoti_cy.torch_compat import aoti_load_package
    inputs = EXAMPLES["mlp"].inputs()
    compiled = aoti_load_package(mlp_package)
    torch.testing.assert_close(compiled.loader.run(inputs, None)[0],
                               EXAMPLES["mlp"].eager()(*inputs))
    with pytest.raises(RuntimeError, match="stream is only meaningful for CUDA models"):
        compiled.loader.run(inputs, _capsule(1234))
    with pytest.raises(TypeError, match="stream_handle must be"):   # torch's parameter name
        compiled.loader.run(inputs, "s")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_model_runs_on_every_form_of_stream():
    example = EXAMPLES["mlp"]
    inputs = example.inputs("cuda")
    want = example.eager("cuda")(*inputs)
    stream = torch.cuda.Stream()
    with aoti_cy.load(example.package("cuda")) as model:
        for given in (stream, torch.cuda.ExternalStream(stream.cuda_stream),
                      stream.cuda_stream, _capsule(stream.cuda_stream),
                      ProtocolStream(stream.cuda_stream)):
            stream.wait_stream(torch.cuda.current_stream())
            out = model.run(inputs, given)[0]
            stream.synchronize()
            torch.testing.assert_close(out, want)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_model_refuses_another_gpus_stream():
    example = EXAMPLES["mlp"]
    with aoti_cy.load(example.package("cuda"), device="cuda:0") as model:
        with pytest.raises(ValueError, match="the stream is on cuda:1 but the model runs on cuda:0"):
            model.run(example.inputs("cuda"), torch.cuda.Stream("cuda:1"))


# ---- one tensor bridge, one set of device codes ----------------------------------------------

def _defined_symbols(module):
    if shutil.which("nm") is None:
        pytest.skip("needs nm")
    out = subprocess.run(["nm", "-D", "--defined-only", module.__file__],
                         capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_tensor_bridge_is_compiled_into_its_own_extension():
    assert set(BRIDGE_SYMBOLS) <= _defined_symbols(_tensor_bridge)
    assert not set(BRIDGE_SYMBOLS) & _defined_symbols(_constant_calls)
    # What _constant_calls cimports, it reaches through _tensor_bridge's C API.
    assert {"handle_from_tensor", "tensor_from_borrowed_handle", "free_handles",
            "dtype_from_scalar_type"} <= set(_tensor_bridge.__pyx_capi__)


def test_every_other_extension_shares_the_tensor_bridge():
    from aoti_cy import _handle_owner, _model, capi
    for module in (interface, _handle_owner, _model, capi):
        assert not set(BRIDGE_SYMBOLS) & _defined_symbols(module), module.__name__


def test_setup_compiles_the_tensor_bridge_into_its_extension_only():
    with open(os.path.join(ROOT, "setup.py")) as f:
        setup = f.read()
    users = re.findall(r'Extension\("(aoti_cy\.\w+)",\s*\[([^\]]*)\]', setup)
    compiling = {name for name, sources in users if "csrc/tensor_bridge.cpp" in sources}
    assert "aoti_cy._tensor_bridge" in compiling
    assert "aoti_cy._constant_calls" not in compiling
    assert compiling == {"aoti_cy._tensor_bridge"}


def test_device_codes_are_defined_once():
    definition = re.compile(r"AOTI_CY_DEVICE_(CPU|CUDA)\s*=(?!=)")
    found = []
    for folder in ("csrc", "aoti_cy", os.path.join("aoti_cy", "includes")):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith((".h", ".cpp", ".pyx", ".pxd", ".py")) and not (
                    folder == "aoti_cy" and name.endswith(".cpp")):   # Cython's output
                with open(os.path.join(ROOT, folder, name)) as f:
                    if definition.search(f.read()):
                        found.append(os.path.join(folder, name))
    assert found == [os.path.join("csrc", "device_codes.h")]
    with open(os.path.join(ROOT, "csrc", "device_codes.h")) as f:
        header = f.read()
    values = dict(re.findall(r"AOTI_CY_DEVICE_(CPU|CUDA)\s*=\s*(\d+)", header))
    assert (int(values["CPU"]), int(values["CUDA"])) == (_device.CPU, _device.CUDA)


def test_a_cpu_model_refuses_a_stream_for_constant_folding_as_for_a_run(mlp_package):
    # One check for both: a stream given to a model that does not run on CUDA.
    with aoti_cy.load(mlp_package) as model:
        for call in (lambda: model.run(EXAMPLES["mlp"].inputs(), 1234),
                     lambda: model.run_constant_folding(stream=1234)):
            with pytest.raises(ValueError, match="stream is only meaningful for CUDA models"):
                call()
        model.run_constant_folding()   # no stream: fine, and the model still runs
        torch.testing.assert_close(model.run(EXAMPLES["mlp"].inputs())[0],
                                   EXAMPLES["mlp"].eager()(*EXAMPLES["mlp"].inputs()))
