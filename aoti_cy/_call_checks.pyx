"""What every call checks before it reaches a model.

A wrong input count or a tensor the model was not compiled for would make
the model throw across the C ABI (aborting the process) or read out of
bounds, so calls are checked here first: the input sequence and its length,
the stream, and each input against the model's own generated checks
(``csrc/input_guards.cpp``: dtype, sizes, strides, device), without the GIL.
"""

from cpython.sequence cimport PySequence_Fast
from libc.stdint cimport uintptr_t

import os

import torch

from aoti_cy.includes.abi cimport AtenTensorHandle, InputCheckFn
from aoti_cy.includes.input_guards cimport (
    AotiCyInputGuards, aoti_cy_check_inputs, aoti_cy_input_guards_free,
    aoti_cy_input_guards_new)
from aoti_cy._library cimport ModelLibrary

from aoti_cy.errors import PackageError


cdef object input_sequence(object inputs, size_t expected, tuple names):
    """``inputs`` as a list or tuple of the expected length, or an exception.
    Callers then read its item array directly, running no Python code until
    the handles are made."""
    if type(inputs) is not list and type(inputs) is not tuple:
        if isinstance(inputs, torch.Tensor) or not hasattr(inputs, "__len__"):
            raise TypeError(
                f"inputs must be a list or tuple of tensors, got {type(inputs).__name__}")
        inputs = PySequence_Fast(inputs, "inputs must be a sequence of tensors")
    if <size_t>len(inputs) != expected:
        raise ValueError(f"the model takes {expected} inputs {names}, got {len(inputs)}")
    return inputs


cdef void* stream_pointer(object stream, object device) except? NULL:
    """A raw stream from an int, a torch.cuda.Stream (or anything with a
    ``cuda_stream`` attribute), or NULL for None. A stream object of another
    GPU than ``device`` (a CUDA model's) is refused: the runtime could only
    fail on it with a CUDA error."""
    if stream is None:
        return NULL
    if isinstance(stream, int):
        return <void*><uintptr_t>stream
    try:
        raw = stream.cuda_stream
    except AttributeError:
        raise TypeError(
            f"stream must be a torch.cuda.Stream, an int or None, got "
            f"{type(stream).__name__}") from None
    where = getattr(stream, "device", None)
    if device.type == "cuda" and where is not None and where != device:
        raise ValueError(f"the stream is on {where} but the model runs on {device}")
    return <void*><uintptr_t>raw


cdef void* input_guards_for(ModelLibrary library, size_t num_inputs, int cuda_index) except? NULL:
    """Guards running the model's own input checks, for ``check_inputs=True``
    (NULL when the model has no inputs); ``cuda_index`` is a CUDA model's GPU
    (-1 on CPU), whose inputs on another GPU the guards refuse. A library without the checks
    (stripped) is refused unless it checks its own inputs because
    AOTI_RUNTIME_CHECK_INPUTS is set."""
    cdef const InputCheckFn* checks = library.input_checks(num_inputs)
    cdef AotiCyInputGuards* guards
    if checks == NULL:
        if num_inputs == 0 or os.environ.get(
                "AOTI_RUNTIME_CHECK_INPUTS", "0")[:1] not in ("", "0"):
            return NULL   # nothing to check, or the model checks every run itself
        raise PackageError(
            f"{library.path} has no input-check functions (check_input_<i>; "
            f"was it stripped?), so wrong shapes or dtypes could not be caught. "
            f"Load it with check_inputs=False to run it unchecked, or set "
            f"AOTI_RUNTIME_CHECK_INPUTS=1 before the model first runs to use "
            f"its own, slower checks")
    guards = aoti_cy_input_guards_new(checks, num_inputs, cuda_index)
    if guards == NULL:
        raise MemoryError()
    return guards


cdef void free_input_guards(void* guards) noexcept nogil:
    aoti_cy_input_guards_free(<AotiCyInputGuards*>guards)


cdef int check_input_handles(void* guards, AtenTensorHandle* handles, size_t n,
                             tuple names) except -1 nogil:
    """Check input handles with their guards; ValueError naming the input
    that does not fit."""
    cdef char reason[512]
    cdef long failed = aoti_cy_check_inputs(
        <AotiCyInputGuards*>guards, handles, n, reason, sizeof(reason))
    if failed >= 0:
        _raise_mismatch(failed, reason, names)
    return 0


# Apart from check_input_handles: a nogil function with Python locals takes
# the GIL at its exit, also when nothing failed.
cdef int _raise_mismatch(long index, const char* reason, tuple names) except -1 with gil:
    label = f"input {index}"
    if 0 <= index < len(names):
        label += f" ({names[index]!r})"
    raise ValueError(f"{label} does not fit the model: "
                     f"{reason.decode('utf-8', 'replace')}")
