"""Where a model runs: device codes, the device a caller names, the CUDA
stream a caller gives, and the device guard.

A stream arrives in many forms (None, an int address, a torch.cuda.Stream,
an object with the CUDA stream protocol, torch's PyCapsule); ``stream_pointer``
turns each into one ``cudaStream_t`` and refuses the rest. The current stream
and the device guard come from libtorch_cuda's C shim, resolved here with
dlsym once CUDA is in use, so that this module builds and imports without a
CUDA torch and the guard works without the GIL.
"""

from cpython.pycapsule cimport PyCapsule_CheckExact, PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport uintptr_t, UINTPTR_MAX
from posix.dlfcn cimport dlclose, dlopen, dlsym, RTLD_NOW

from aoti_cy.includes.abi cimport CreateCudaGuardFn, DeleteCudaGuardFn, GetCurrentCudaStreamFn

import torch

cdef extern from "<dlfcn.h>" nogil:
    enum: RTLD_NOLOAD

CPU = AOTI_CY_DEVICE_CPU
CUDA = AOTI_CY_DEVICE_CUDA

# The only version of the CUDA stream protocol there is.
_STREAM_PROTOCOL_VERSION = 0
_MAX_ADDRESS = <uintptr_t>UINTPTR_MAX
_ACCEPTED = ("None, an int (a cudaStream_t address; 0 for the current stream), a "
             "torch.cuda.Stream, an object with __cuda_stream__ or a PyCapsule "
             "holding a cudaStream_t")

cdef object _CudaStream = torch.cuda.Stream   # ExternalStream derives from it


def parse_device(device):
    """Where a model runs, from what the caller wrote.

    Parameters
    ----------
    device : str, int, or torch.device
        Anything ``torch.device`` takes; a CUDA device without an index
        means the current one.

    Returns
    -------
    tuple
        ``(torch.device with an index for CUDA, c10 device type, index)``;
        the index is -1 on CPU.

    Raises
    ------
    ValueError
        ``device`` is no device, a CUDA device that does not exist, or a
        device type aoti_cy does not run models on.
    RuntimeError
        ``device`` is a CUDA device and CUDA is not available.
    """
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


cdef void* _address(object value, str what) except? NULL:
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{what} must be an int address, got {type(value).__name__}")
    if not 0 <= value <= _MAX_ADDRESS:
        raise ValueError(f"{what} {value} is not a stream address")
    return <void*><uintptr_t>value


cdef void* _from_protocol(object stream, object method) except? NULL:
    """The address a ``__cuda_stream__`` method gives: ``(version, address)``."""
    answer = method()
    if type(answer) is not tuple or len(answer) != 2:
        raise TypeError(f"{type(stream).__name__}.__cuda_stream__() must return "
                        f"(version, address), got {answer!r}")
    version, address = answer
    if version != _STREAM_PROTOCOL_VERSION:
        raise ValueError(f"{type(stream).__name__}.__cuda_stream__() speaks version "
                         f"{version!r} of the CUDA stream protocol; aoti_cy reads "
                         f"version {_STREAM_PROTOCOL_VERSION}")
    return _address(address, "the address __cuda_stream__() gives")


cdef void* stream_pointer(object stream, object device, str name="stream") except? NULL:
    """The raw stream ``stream`` stands for (NULL: the current stream).

    ``device`` is the model's torch.device, or None to check nothing; a
    torch.cuda.Stream of another GPU than a CUDA model's is refused with
    ValueError (the runtime could only fail on it with a CUDA error), any
    other kind of object with TypeError; messages call it ``name``.
    """
    cdef const char* capsule_name
    if stream is None:
        return NULL
    if isinstance(stream, int):
        return _address(stream, name)
    if isinstance(stream, _CudaStream):
        if device is not None and device.type == "cuda" and stream.device != device:
            raise ValueError(f"the {name} is on {stream.device} but the model runs on {device}")
        return <void*><uintptr_t>stream.cuda_stream
    if PyCapsule_CheckExact(stream):
        # torch passes a stream to its loaders' run() as a capsule of any name.
        capsule_name = PyCapsule_GetName(stream)
        return PyCapsule_GetPointer(stream, capsule_name)
    method = getattr(type(stream), "__cuda_stream__", None)
    if method is not None:
        return _from_protocol(stream, getattr(stream, "__cuda_stream__"))
    raise TypeError(f"{name} must be {_ACCEPTED}, got {type(stream).__name__}")


def stream_address(stream, device=None, name="stream"):
    """The address of the CUDA stream ``stream`` stands for.

    Parameters
    ----------
    stream : None, int, torch.cuda.Stream, object with ``__cuda_stream__``, or PyCapsule
        The stream as a caller gave it.
    device : torch.device, str or None
        The model's device: a torch.cuda.Stream of another GPU than a CUDA
        device is refused. None checks nothing.
    name : str
        What messages call the argument (the caller's parameter name).

    Returns
    -------
    int
        The ``cudaStream_t`` address; 0 means the current stream.

    Raises
    ------
    TypeError
        ``stream`` is none of the forms above.
    ValueError
        A stream of another GPU, a negative or too large address, or an
        unknown version of the CUDA stream protocol.
    """
    if device is not None and not isinstance(device, torch.device):
        device = torch.device(device)
    return <uintptr_t>stream_pointer(stream, device, name)


# ---- libtorch_cuda's shim ------------------------------------------------------

# Resolved on first need, all or nothing: libtorch_cuda.so is loaded by torch
# whenever CUDA is in use.
cdef struct CudaShim:
    GetCurrentCudaStreamFn get_current_stream
    CreateCudaGuardFn create_guard
    DeleteCudaGuardFn delete_guard

cdef CudaShim _cuda_shim


cdef int _resolve_cuda_shim() except -1 nogil:
    global _cuda_shim
    cdef void* torch_cuda = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD)
    cdef CudaShim found
    if torch_cuda != NULL:
        found.get_current_stream = <GetCurrentCudaStreamFn>dlsym(
            torch_cuda, "aoti_torch_get_current_cuda_stream")
        found.create_guard = <CreateCudaGuardFn>dlsym(torch_cuda, "aoti_torch_create_cuda_guard")
        found.delete_guard = <DeleteCudaGuardFn>dlsym(torch_cuda, "aoti_torch_delete_cuda_guard")
        dlclose(torch_cuda)  # drops only the reference RTLD_NOLOAD took
        if (found.get_current_stream != NULL and found.create_guard != NULL
                and found.delete_guard != NULL):
            _cuda_shim = found   # a plain store of pointers: racing resolvers agree
            return 0
    with gil:
        raise RuntimeError(
            "cannot find aoti_torch_get_current_cuda_stream / aoti_torch_create_cuda_guard "
            "in libtorch_cuda.so: this torch has no CUDA support loaded")


cdef int current_stream(int device_index, void** stream) except -1 nogil:
    """The current CUDA stream of ``device_index``, as torch sees it."""
    if _cuda_shim.delete_guard == NULL:
        _resolve_cuda_shim()
    if _cuda_shim.get_current_stream(device_index, stream) != 0:
        with gil:
            raise RuntimeError(
                f"aoti_torch_get_current_cuda_stream failed for cuda:{device_index}")
    return 0


cdef int enter_device(int device_type, int device_index, void** guard) except -1 nogil:
    """Make the device current until ``leave_device(guard[0])``.

    A model's run creates its completion event, and its runtime allocates
    constant buffers, on the *current* CUDA device: on another GPU than the
    model's, the run fails and new weights land on the wrong GPU. On CPU
    there is nothing to do and ``guard[0]`` is NULL.
    """
    guard[0] = NULL
    if device_type != AOTI_CY_DEVICE_CUDA:
        return 0
    if _cuda_shim.delete_guard == NULL:
        _resolve_cuda_shim()
    if _cuda_shim.create_guard(device_index, guard) != 0:
        guard[0] = NULL
        with gil:
            raise RuntimeError(f"aoti_torch_create_cuda_guard failed for cuda:{device_index}")
    return 0


cdef void leave_device(void* guard) noexcept nogil:
    """Put back the device current before enter_device."""
    if guard != NULL:
        _cuda_shim.delete_guard(guard)


cdef class DeviceGuard:
    """``with DeviceGuard(device):`` makes ``device`` the current device
    and puts back the one current before on exit; on CPU it does nothing.

    Parameters
    ----------
    device : str, int, or torch.device
        As :func:`parse_device` takes it.

    A guard is entered once at a time; make one per ``with``.
    """

    def __cinit__(self, device=None):
        self._guard = NULL
        self._entered = False
        self.device_type = AOTI_CY_DEVICE_CPU
        self.device_index = -1
        if device is not None:
            _, self.device_type, self.device_index = parse_device(device)

    def __enter__(self):
        if self._entered:
            raise RuntimeError("this DeviceGuard is already entered; make one per `with`")
        enter_device(self.device_type, self.device_index, &self._guard)
        self._entered = True
        return self

    def __exit__(self, *exc_info):
        cdef void* guard = self._guard
        self._guard = NULL
        self._entered = False
        leave_device(guard)
        return False

    def __dealloc__(self):
        leave_device(self._guard)   # a guard entered and never left

    def __repr__(self):
        where = "cpu" if self.device_type == AOTI_CY_DEVICE_CPU else f"cuda:{self.device_index}"
        return f"<aoti_cy DeviceGuard {where}>"


cdef DeviceGuard guard_for(int device_type, int device_index):
    cdef DeviceGuard guard = DeviceGuard.__new__(DeviceGuard)
    guard.device_type = device_type
    guard.device_index = device_index
    return guard


def on_device(device):
    """A context manager that makes ``device`` current while it is entered.

    Parameters
    ----------
    device : str, int, or torch.device
        As :func:`parse_device` takes it; a CPU device does nothing.

    Returns
    -------
    DeviceGuard
    """
    return DeviceGuard(device)
