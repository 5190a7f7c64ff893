"""What every call checks before it reaches a model.

A wrong input count or a tensor the model was not compiled for would make
the model throw across the C ABI (aborting the process) or read out of
bounds, so calls are checked here first: the input sequence and its length,
and the inputs against the model's shape contract
(``csrc/shape_contract.cpp``: dtype, device, every size and stride as an
expression of size symbols shared across inputs, symbol ranges) and, for any
input the contract does not cover, the model's own generated check
(``csrc/input_guards.cpp``), without the GIL. The stream is read by
``aoti_cy._device.stream_pointer``.
"""

from cpython.sequence cimport PySequence_Fast
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

import os
import warnings

import torch

from aoti_cy.includes.abi cimport AtenTensorHandle, InputCheckFn
from aoti_cy.includes.input_guards cimport (
    AotiCyInputGuards, AotiCyShapeContract, aoti_cy_check_inputs,
    aoti_cy_input_guards_free, aoti_cy_input_guards_new, aoti_cy_shape_contract_new)
from aoti_cy._library cimport ModelLibrary

from aoti_cy import _shape_contract, _spec_tree
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


def input_labels(tuple names, object call_spec_text):
    """How messages name each input: ``input 1 ('attention_mask')`` by the
    call spec's path (``args[0]``, ``input_ids``, ``kwargs['mask']``), else
    by the model's internal name."""
    paths = [None] * len(names)
    try:
        tree = _spec_tree.parse_spec(call_spec_text) if call_spec_text else None
        leaves = _spec_tree.leaves(_spec_tree.input_roots(tree))
    except Exception:  # noqa: BLE001 - an unreadable spec names nothing
        leaves = []
    if len(leaves) == len(names):
        for path, index in leaves:
            if 0 <= index < len(names):
                paths[index] = path
    return tuple([f"input {i} ({paths[i] or names[i]!r})" for i in range(len(names))])


def shape_contract_of(ModelLibrary library, size_t num_inputs):
    """The library's shape contract (aoti_cy._shape_contract), or None when
    no wrapper source lies beside it (or it cannot be read: warned)."""
    try:
        return _shape_contract.contract_for(library.path, num_inputs)
    except Exception as e:  # noqa: BLE001 - the model's own checks still apply
        warnings.warn(f"the shape contract of {library.path} could not be read ({e}); "
                      f"only the model's per-input checks apply", RuntimeWarning, stacklevel=3)
        return None


cdef AotiCyShapeContract* _encode_contract(object contract, tuple labels) except? NULL:
    if contract is None:
        return NULL
    words, texts = contract.encode(labels)
    encoded = [t.encode("utf-8", "replace") for t in texts]
    cdef int64_t* word_array = <int64_t*>malloc(max(len(words), 1) * sizeof(int64_t))
    cdef const char** text_array = <const char**>malloc(max(len(encoded), 1) * sizeof(char*))
    cdef AotiCyShapeContract* result = NULL
    cdef Py_ssize_t k
    try:
        if word_array == NULL or text_array == NULL:
            raise MemoryError()
        for k in range(len(words)):
            word_array[k] = words[k]
        for k in range(len(encoded)):
            text_array[k] = <bytes>encoded[k]
        result = aoti_cy_shape_contract_new(word_array, len(words), text_array, len(encoded))
    finally:
        free(word_array)
        free(text_array)
    if result == NULL:
        raise MemoryError("the shape contract could not be built")
    return result


cdef void* input_guards_for(ModelLibrary library, size_t num_inputs, int cuda_index,
                            tuple names, object call_spec_text) except? NULL:
    """Guards for ``check_inputs=True`` (NULL when the model has no inputs):
    the model's shape contract where its source says it, the model's own
    per-input checks for the rest; ``cuda_index`` is a CUDA model's GPU (-1
    on CPU), whose inputs on another GPU the guards refuse. A library
    without either (stripped, no source) is refused unless it checks its
    own inputs because AOTI_RUNTIME_CHECK_INPUTS is set."""
    cdef const InputCheckFn* checks = library.input_checks(num_inputs)
    cdef AotiCyInputGuards* guards
    cdef AotiCyShapeContract* encoded = NULL
    if num_inputs == 0:
        return NULL
    contract = shape_contract_of(library, num_inputs)
    if checks == NULL and (contract is None or <size_t>len(contract.covered) < num_inputs):
        if os.environ.get("AOTI_RUNTIME_CHECK_INPUTS", "0")[:1] not in ("", "0"):
            return NULL   # the model checks every run itself
        raise PackageError(
            f"{library.path} has no input-check functions (check_input_<i>; "
            f"was it stripped?), so wrong shapes or dtypes could not be caught. "
            f"Load it with check_inputs=False to run it unchecked, or set "
            f"AOTI_RUNTIME_CHECK_INPUTS=1 before the model first runs to use "
            f"its own, slower checks")
    labels = input_labels(names, call_spec_text)
    encoded_labels = [label.encode("utf-8", "replace") for label in labels]
    cdef const char** label_array = <const char**>malloc(num_inputs * sizeof(char*))
    cdef size_t k
    if label_array == NULL:
        raise MemoryError()
    try:
        for k in range(num_inputs):
            label_array[k] = <bytes>encoded_labels[k]
        encoded = _encode_contract(contract, labels)
        guards = aoti_cy_input_guards_new(checks, num_inputs, label_array, cuda_index,
                                          encoded)   # takes the contract, also on failure
    finally:
        free(label_array)
    if guards == NULL:
        raise MemoryError()
    return guards


cdef void free_input_guards(void* guards) noexcept nogil:
    aoti_cy_input_guards_free(<AotiCyInputGuards*>guards)


cdef int check_input_handles(void* guards, AtenTensorHandle* handles,
                             size_t n) except -1 nogil:
    """Check input handles with their guards; ValueError naming the input
    that does not fit (and the one it is tied to)."""
    cdef char reason[1024]
    cdef long failed = aoti_cy_check_inputs(
        <AotiCyInputGuards*>guards, handles, n, reason, sizeof(reason))
    if failed >= 0:
        _raise_mismatch(reason)
    return 0


# Apart from check_input_handles: a nogil function with Python locals takes
# the GIL at its exit, also when nothing failed.
cdef int _raise_mismatch(const char* reason) except -1 with gil:
    raise ValueError(reason.decode("utf-8", "replace"))
