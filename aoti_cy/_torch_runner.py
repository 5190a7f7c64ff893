"""torch's runner-level loaders run by aoti_cy: the classes
``torch._C._aoti.AOTIModelContainerRunnerCpu`` / ``...Cuda`` (a bare model
`.so`, as ``torch._export.aot_compile`` or ``torch._inductor.aot_compile``
writes it) and ``torch._export.aot_load``, each backed by an aoti_cy
:class:`~aoti_cy.ModelContainer`."""

import mmap
import os

import torch

from aoti_cy._device import stream_address
from aoti_cy._proxy_executor import executor_for
from aoti_cy._torch_common import (as_runtime_error, count_container, cuda_unavailable,
                                   resolve_check_inputs, update_constant_buffer)
from aoti_cy.errors import (ArgumentRuntimeError, PackageNotFoundRuntimeError,
                            PackageRuntimeError)
from aoti_cy.interface import ModelContainer

__all__ = ["AOTIModelContainerRunnerCpu", "AOTIModelContainerRunnerCuda", "aot_load"]

# torch.dtype -> c10::ScalarType code, what torch's runner reports per constant.
_SCALAR_TYPES = {
    torch.uint8: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4,
    torch.float16: 5, torch.float32: 6, torch.float64: 7, torch.complex32: 8,
    torch.complex64: 9, torch.complex128: 10, torch.bool: 11, torch.bfloat16: 15,
    torch.float8_e5m2: 23, torch.float8_e4m3fn: 24, torch.float8_e5m2fnuz: 25,
    torch.float8_e4m3fnuz: 26,
}


def _library_error(so_path):
    """torch's dlopen error for a path that is no loadable library, or None."""
    if not os.path.exists(so_path):
        return PackageNotFoundRuntimeError(
            f"Error in dlopen: {so_path}: cannot open shared object file: No such file or "
            f"directory. There is no model library at {so_path}")
    try:
        with open(so_path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return PackageRuntimeError(f"Error in dlopen: {so_path}: {e.strerror}. "
                                   f"aoti_cy cannot read {so_path}: {e}")
    if magic != b"\x7fELF":
        return PackageRuntimeError(
            f"Error in dlopen: {so_path}: invalid ELF header. {so_path} is not a model "
            f"library (a .pt2 package loads with aoti_load_package)")
    return None


class _Runner:
    """What torch's runner classes share; see the subclasses."""

    # A patch sets this on the class it installs (None: AOTI_CY_CHECK_INPUTS).
    _patch_check_inputs = None

    def _open(self, model_so_path, num_models, device, cubin_dir, check_inputs):
        if not isinstance(num_models, int) or isinstance(num_models, bool):
            raise TypeError(f"num_models must be an int, got {type(num_models).__name__}")
        if num_models < 1:   # torch's message: the model's container says it so
            raise ArgumentRuntimeError(f"num_models must be >=1 when run_single_threaded is "
                                       f"false, got {num_models}")
        model_so_path = os.fspath(model_so_path)
        error = _library_error(model_so_path)
        if error is not None:
            raise error
        if check_inputs is None:
            check_inputs = self._patch_check_inputs
        try:
            self._container = count_container(ModelContainer(
                model_so_path, device=device, num_models=num_models,
                cubin_dir=cubin_dir or None,
                check_inputs=resolve_check_inputs(check_inputs),
                proxy_executor=executor_for(model_so_path, device)))
        except (ValueError, FileNotFoundError) as e:
            torch_message = None
            if "is not an AOTInductor model library" in str(e):
                torch_message = (f"Error in dlopen or dlsym: {model_so_path}: undefined "
                                 f"symbol: AOTInductorModelContainerCreateWithDevice")
            raise as_runtime_error(e, torch_message) from None

    @property
    def container(self):
        """The aoti_cy ModelContainer behind this runner."""
        return self._container

    def __repr__(self):
        return f"<aoti_cy {type(self).__name__} over {self._container!r}>"

    def run(self, inputs, stream_handle=None):
        """Run on a sequence of tensors (the model's flat inputs); return a
        list of tensors."""
        try:
            stream = stream_address(stream_handle, self._container.device, "stream_handle")
            if self._single_threaded:
                return self._container.run_single_threaded(inputs, stream)
            return self._container.run(inputs, stream)
        except ValueError as e:
            raise as_runtime_error(e, _count_message(self._container, inputs)) from None

    def _call(self, args, kwargs):
        """``model(*args, **kwargs)`` as the exported module was called."""
        try:
            return self._container(*args, **kwargs)
        except ValueError as e:
            raise as_runtime_error(e) from None

    def get_call_spec(self):
        """``[in_spec, out_spec]``: the serialized pytree specs."""
        return list(self._container.call_spec)

    def get_constant_names_to_original_fqns(self):
        """Internal constant name -> original FQN, for every constant."""
        return {c.name: c.original_fqn for c in self._container.constants}

    def get_constant_names_to_dtypes(self):
        """Internal constant name -> dtype as a ``c10::ScalarType`` code."""
        return {c.name: _SCALAR_TYPES.get(c.dtype, -1) for c in self._container.constants}

    def extract_constants_map(self, use_inactive=False):
        """FQN -> a copy of each constant that is not folded."""
        return self._container.extract_constants_map(use_inactive=bool(use_inactive))

    def update_constant_buffer(self, tensor_map, use_inactive, validate_full_updates,
                               user_managed=False):
        """Set constants by internal name (or FQN), in the active buffer or
        the inactive one; checked (names, dtypes, shapes, devices) before
        anything changes."""
        update_constant_buffer(self._container, tensor_map, use_inactive,
                               validate_full_updates, user_managed)

    def update_constant_buffer_from_blob(self, weights_path):
        """Load the constants from a raw weights blob file (the ``.blob`` a
        package with ``package_constants_on_disk_format="binary_blob"``
        ships)."""
        weights_path = os.fspath(weights_path)
        try:
            with open(weights_path, "rb") as f:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
                    self._container.update_constants_from_blob(blob)
        except FileNotFoundError as e:
            raise PackageNotFoundRuntimeError(f"cannot open the weights blob {weights_path}: "
                                              f"{e.strerror}") from None
        except ValueError as e:
            raise as_runtime_error(e) from None

    def run_const_fold(self, use_inactive, stream_handle=None):
        """Run the model's constant folding on the active (or inactive)
        buffer: after an update of constants that folded ones derive from."""
        stream = stream_address(stream_handle, self._container.device, "stream_handle")
        self._container.run_constant_folding(use_inactive=bool(use_inactive), stream=stream)

    def swap_constant_buffer(self):
        """Make the inactive constant buffer the active one."""
        self._container.swap_constant_buffer()

    def free_inactive_constant_buffer(self):
        """Free the inactive constant buffer."""
        self._container.free_inactive_constant_buffer()

    def get_metadata(self):
        """The ``<so>_metadata.json`` torch wrote beside the library."""
        return dict(self._container.metadata)


def _count_message(container, inputs):
    """torch's message for a wrong number of inputs, or None."""
    try:
        given = len(inputs)
    except TypeError:
        return None
    expected = container.num_inputs
    if given == expected:
        return None
    return f"expected inputs vector size to be {expected}, but got {given}"


class AOTIModelContainerRunnerCpu(_Runner):
    """``torch._C._aoti.AOTIModelContainerRunnerCpu`` over an aoti_cy
    container: ``AOTIModelContainerRunnerCpu(model_so_path, num_models, *,
    check_inputs=None)`` loads a CPU model `.so` with ``num_models``
    instances. ``check_inputs`` None means ``AOTI_CY_CHECK_INPUTS`` (default
    on). ``container`` is the :class:`~aoti_cy.ModelContainer`."""

    def __init__(self, model_so_path, num_models, *, check_inputs=None):
        self._single_threaded = False
        self._open(model_so_path, num_models, "cpu", None, check_inputs)


class AOTIModelContainerRunnerCuda(_Runner):
    """``torch._C._aoti.AOTIModelContainerRunnerCuda`` over an aoti_cy
    container: ``AOTIModelContainerRunnerCuda(model_so_path, num_models,
    device_str="cuda", cubin_dir="", run_single_threaded=False, *,
    check_inputs=None)``. ``cubin_dir`` is where the model's kernels are
    (default: beside the `.so`)."""

    def __init__(self, model_so_path, num_models, device_str="cuda", cubin_dir="",
                 run_single_threaded=False, *, check_inputs=None):
        device = torch.device(device_str)
        if device.type != "cuda":
            raise PackageRuntimeError(f"AOTIModelContainerRunnerCuda runs CUDA models, "
                                      f"got device {device_str!r}")
        if not torch.cuda.is_available():
            raise cuda_unavailable(device_str, os.fspath(model_so_path))
        self._single_threaded = bool(run_single_threaded)
        self._open(model_so_path, num_models, device, cubin_dir, check_inputs)

    def update_constant_buffer_from_cpu(self, tensor_map, use_inactive, validate_full_updates):
        """:meth:`update_constant_buffer` from tensors anywhere: each is
        copied to the model's device first."""
        device = self._container.device
        self.update_constant_buffer({k: v.to(device) for k, v in tensor_map.items()},
                                    use_inactive, validate_full_updates)


def aot_load(so_path, device, *, check_inputs=None):
    """``torch._export.aot_load`` run by aoti_cy: load a model `.so` from
    ``torch._export.aot_compile`` on ``device`` ("cpu", "cuda" or "cuda:N")
    and return a callable taking what the exported module took.
    ``callable.runner`` is the runner behind it."""
    if device == "cpu":
        runner = AOTIModelContainerRunnerCpu(so_path, 1, check_inputs=check_inputs)
    elif device == "cuda" or device.startswith("cuda:"):
        runner = AOTIModelContainerRunnerCuda(so_path, 1, device, check_inputs=check_inputs)
    else:
        raise RuntimeError(f"Unsupported device {device}. aoti_cy's aot_load runs cpu and "
                           f"cuda models")

    def optimized(*args, **kwargs):
        return runner._call(args, kwargs)

    optimized.runner = runner
    return optimized
