# The public Cython API of aoti_cy: `cimport aoti_cy` (or this module) to run
# a loaded model from Cython, including inside `with nogil:`.
#
#     from aoti_cy.interface cimport ModelContainer, AtenTensorHandle
#     cdef ModelContainer c = aoti_cy.load(path)
#     ...
#     with nogil:
#         c.run_handles(inputs, n_in, outputs, n_out, NULL)
#
# Handle ownership follows the C ABI: input handles are consumed (also when
# the call fails), output handles belong to the caller on success.

from aoti_cy.includes.abi cimport (
    AtenTensorHandle, AOTInductorModelContainerHandle, AOTInductorModelHandle,
    ContainerActionFn,
    ContainerRunFn)
from aoti_cy._library cimport ModelLibrary

# aoti_cy_proxy_executor_failed (csrc/proxy_executor.h), reached through the
# executor object: it lives in another extension module.
ctypedef int (*ExecutorFailedFn)(const void* handle) noexcept nogil


cdef class _Gated:
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
    cdef int _raise_weights_missing(self) except -1
    cdef int _delete_handle(self) except -1
    cdef int _check_open(self) except -1
    cdef int _enter(self) except -1 nogil
    cdef void _leave(self) noexcept nogil


cdef class ModelContainer(_Gated):
    cdef AOTInductorModelContainerHandle _handle
    cdef size_t _num_inputs
    cdef size_t _num_outputs
    cdef int _device_type          # c10::DeviceType: 0 CPU, 1 CUDA
    cdef int _device_index         # -1 on CPU
    cdef tuple _call_spec
    cdef object _caller            # aoti_cy._call.CallSpec, parsed at creation
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
    cdef object _graphs            # CUDA graphs hook: aoti_cy.cuda_graphs.GraphRunner or None

    cdef _create(self, size_t num_models, object cubin_dir)
    cdef _read_metadata(self)
    cdef _read_constants(self)
    cdef tuple _read_constants_entered(self, ModelLibrary lib)
    cdef object _constant_table(self)
    cdef dict _constant_shapes(self)
    cdef _note_active_constants(self)
    cdef dict _extract(self, bint use_inactive, bint copy)
    cdef _update_constants(self, dict values, bint use_inactive, bint validate,
                           bint user_managed)
    cdef _buffer_action(self, ContainerActionFn entry, const char* function)
    cdef int run_handles(
        self, AtenTensorHandle* inputs, size_t num_inputs,
        AtenTensorHandle* outputs, size_t num_outputs,
        void* stream) except -1 nogil
    cdef int _invoke(
        self, ContainerRunFn entry, const char* function,
        AtenTensorHandle* inputs, size_t num_inputs,
        AtenTensorHandle* outputs, size_t num_outputs,
        void* stream) except -1 nogil
    cdef object _call(self, tuple args, dict kwargs, object stream)
    cdef list _run(self, ContainerRunFn entry, const char* function,
                   object inputs, object stream)
    cdef list _run_default(self, object inputs, object stream)


cdef class Model(_Gated):
    cdef AOTInductorModelHandle _handle
    cdef size_t _num_inputs
    cdef size_t _num_outputs
    cdef tuple _constants
    cdef object _table             # aoti_cy._constants.ConstantTable
    cdef object _lock              # one run or update at a time


# Tensors <-> handles for code that drives run_handles itself. Each handle
# made holds a reference to the tensor's storage; no data is copied.
cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL
cdef object tensor_from_handle(AtenTensorHandle handle)  # steals the handle
cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil
cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil
