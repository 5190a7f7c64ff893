# The public Cython API of aoti_cy: `cimport aoti_cy` (or this module) to run
# a loaded model from Cython, including inside `with nogil:`.
#
#     cimport aoti_cy
#     cdef aoti_cy.ModelContainer c = aoti_cy_module.load(path)
#     ...
#     with nogil:
#         aoti_cy.run_handles(c, inputs, n_in, outputs, n_out, NULL)
#
# The C API is the module-level functions below: consumers bind them by name
# and signature when they are imported (Cython's __pyx_capi__), so a change
# fails loudly at import instead of calling the wrong function. The classes
# carry no C methods; their fields are aoti_cy's own (not API). A change to
# any of this bumps AOTI_CY_CAPI_VERSION (tests/test_capi.py holds the
# snapshot). Consumers compile as C++ (the ABI's bool is C++ bool).
#
# Handle ownership follows the C ABI: input handles are consumed (also when
# the call fails), output handles belong to the caller on success.

from aoti_cy.includes.abi cimport (
    AtenTensorHandle, AOTInductorModelContainerHandle, AOTInductorModelHandle)
from aoti_cy._library cimport ModelLibrary

cdef enum:
    # The version of the C API below that a consumer was compiled against;
    # compare with capi_version() at run time.
    AOTI_CY_CAPI_VERSION = 2

# aoti_cy_proxy_executor_failed (csrc/proxy_executor.h), reached through the
# executor object: it lives in another extension module.
ctypedef int (*ExecutorFailedFn)(const void* handle) noexcept nogil


cdef class _HandleOwner:
    # What containers and models share: the library they came from (kept
    # alive under them) and the gate between calls and close().
    cdef readonly ModelLibrary library
    cdef int _active_runs          # touched only through csrc/run_gate.h
    cdef int _closed               # idem; 1 until created, 1 again once closed
    cdef object __weakref__
    cdef tuple _input_names
    cdef tuple _output_names
    cdef bint _check_inputs
    cdef void* _input_guards       # AotiCyInputGuards*; NULL: inputs not checked
    cdef tuple _unset_constants    # FQNs of constants with no value yet
    cdef bint _weights_missing     # some constant has no value: runs refuse
    cdef str _weights_hint         # how to give them
    cdef object _package           # the extracted package the model lives in


cdef class ModelContainer(_HandleOwner):
    cdef AOTInductorModelContainerHandle _handle
    cdef size_t _num_inputs
    cdef size_t _num_outputs
    cdef int _device_type          # c10::DeviceType: 0 CPU, 1 CUDA
    cdef int _device_index         # -1 on CPU
    cdef tuple _call_spec
    cdef object _call_spec_parser  # aoti_cy._call.CallSpec, parsed at creation
    cdef bint _flat_call           # inputs: a flat tuple of tensors, no kwargs
    cdef int _out_kind             # OUT_GENERAL / OUT_TUPLE / OUT_LEAF
    cdef object _device            # torch.device
    cdef tuple _constants          # ConstantInfo per constant, read on first use
    cdef bint _blob_loaded         # the runtime accepts a constants blob once
    cdef dict _shapes              # internal name -> shape, once every one is known
    cdef object _weights_lock      # serialises load_weights
    cdef object _extract_lock      # one extract at a time (its entries are the container's)
    cdef void* _proxy_executor     # AOTIProxyExecutorHandle for fallback ops, or NULL
    cdef ExecutorFailedFn _executor_failed  # whether one of its calls failed here
    cdef object _proxy_executor_owner  # the Python object that owns it
    cdef object _graphs            # aoti_cy.cuda_graphs.GraphRunner, or None
    cdef dict _external_constants  # the caller's tensors it runs on, or None


cdef class Model(_HandleOwner):
    cdef AOTInductorModelHandle _handle
    cdef size_t _num_inputs
    cdef size_t _num_outputs
    cdef tuple _constants
    cdef object _table             # aoti_cy._constants.ConstantTable
    cdef object _lock              # one run or update at a time


# ---- the C API --------------------------------------------------------------

# The C API version of the aoti_cy that is loaded.
cdef int capi_version() noexcept nogil

# Run `container` on raw handles; callable without the GIL. Inputs are checked
# as by ModelContainer.run when the container checks inputs (a mismatch raises
# ValueError, taking the GIL to do so). The `num_inputs` input handles are
# consumed, also on failure, and their slots left NULL. On success
# `outputs[0:num_outputs]` hold new handles owned by the caller (a NULL one
# stands for no tensor). `stream` NULL means the current stream of the model's
# device (ignored on CPU).
cdef int run_handles(ModelContainer container,
                     AtenTensorHandle* inputs, size_t num_inputs,
                     AtenTensorHandle* outputs, size_t num_outputs,
                     void* stream) except -1 nogil

# Tensors <-> handles for code that drives run_handles itself. Each handle
# made holds a reference to the tensor's storage; no data is copied.
# A new handle referring to `tensor` (a numpy array is viewed as a CPU tensor).
cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL
# The tensor a handle refers to, stealing the handle (None for NULL).
cdef object tensor_from_handle(AtenTensorHandle handle)
# A new handle to the same tensor (NULL when out of memory): how nogil code
# makes a fresh input handle for every run.
cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil
# Free every non-NULL handle (a repeated one once) and NULL the slots.
cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil
