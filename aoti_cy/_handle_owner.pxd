# The base of ModelContainer and Model (private to aoti_cy's modules).

from aoti_cy.includes.abi cimport AOTIRuntimeError, AtenTensorHandle
from aoti_cy._library cimport ModelLibrary

# The ABI's delete entry points (container and model), through one type.
ctypedef AOTIRuntimeError (*DeleteHandleFn)(void* handle) noexcept nogil


cdef class _HandleOwner:
    # What containers and models share: the library they came from (kept
    # alive under them), its description, the gate between calls and
    # close(), the input checks and the one run path.
    cdef readonly ModelLibrary library
    cdef int _active_runs          # touched only through csrc/run_gate.h
    cdef int _closed               # idem; 1 until created, 1 again once closed
    cdef object __weakref__
    cdef object _description       # aoti_cy._description.ModelDescription
    cdef tuple _input_names        # the description's, read by every run's messages
    cdef size_t _num_inputs
    cdef size_t _num_outputs
    cdef bint _flat_call           # inputs: a flat tuple of tensors, no kwargs
    cdef int _out_kind             # aoti_cy._call OUT_GENERAL / OUT_TUPLE / OUT_LEAF
    cdef object _device            # torch.device
    cdef int _device_type          # AOTI_CY_DEVICE_CPU / _CUDA
    cdef int _device_index         # -1 on CPU
    cdef bint _check_inputs
    cdef void* _input_guards       # AotiCyInputGuards*; NULL: inputs not checked
    cdef object _weights           # aoti_cy._constants.ConstantsState
    cdef bint _weights_missing     # _weights.missing, kept here for nogil runs
    cdef object _package           # the extracted package the model lives in
    cdef void* _handle             # the C handle owned (container or model); NULL: none
    cdef DeleteHandleFn _delete_handle  # frees it
    cdef const char* _delete_name  # that entry point's name, for errors

    cdef int check_open(self) except -1
    cdef void* stream_for(self, object stream) except? NULL
    cdef int enter(self) except -1 nogil
    cdef void leave(self) noexcept nogil
    cdef int describe(self, object description, object device,
                      bint check_inputs) except -1
    cdef int note_constants_present(self, object present) except -1
    cdef object call(self, tuple args, dict kwargs, object stream)
    cdef object run_default(self, object inputs, object stream, bint as_tuple)
    cdef object run_tensors(self, object inputs, object stream, bint single_threaded,
                            bint as_tuple)
    cdef int invoke(self, AtenTensorHandle* inputs, size_t count_in,
                    AtenTensorHandle* outputs, size_t count_out, void* stream,
                    bint single_threaded) except -1 nogil
    cdef int own_handle(self, void* handle, void* delete_fn,
                        const char* delete_name) except -1
    cdef int free_handle(self, bint check) except -1
    # What subclasses provide: their C entry point, its name and their
    # failure message.
    cdef AOTIRuntimeError call_entry(self, AtenTensorHandle* inputs,
                                     AtenTensorHandle* outputs, void* stream,
                                     bint single_threaded) noexcept nogil
    cdef const char* entry_name(self, bint single_threaded) noexcept nogil
    cdef int raise_failure(self, AOTIRuntimeError status,
                           const char* function) except -1 nogil
