# The loaded model library: its dlopen handle and the table of C entry points
# resolved from it. One ModelLibrary per model .so file; every container and
# model made from it keeps it alive, so the library is never unloaded under
# them.

from libcpp.vector cimport vector

from aoti_cy.includes.abi cimport *


cdef struct AOTIFunctions:
    # Filled from _library.SYMBOLS, which names the symbol for each field.
    # Exported by every model built by torch >= 2.6 (checked at load).
    ContainerCreateFn container_create
    ContainerDeleteFn container_delete
    ContainerRunFn container_run
    ContainerGetSizeFn container_get_num_inputs
    ContainerGetNameFn container_get_input_name
    ContainerGetSizeFn container_get_num_outputs
    ContainerGetNameFn container_get_output_name
    ContainerGetCallSpecFn container_get_call_spec
    ContainerGetSizeFn container_get_num_constants
    ContainerGetNameFn container_get_constant_name
    ContainerGetNameFn container_get_constant_original_fqn
    ContainerGetBoolFn container_get_constant_from_folded
    ContainerGetInt32Fn container_get_constant_dtype
    ContainerUpdateMapFn container_update_constant_buffer
    ContainerRunConstantFoldingFn container_run_constant_folding
    ContainerActionFn container_swap_constant_buffer
    ModelCreateFn model_create
    ModelRunFn model_run
    ModelUpdateConstantsMapFn model_update_constants_map
    ModelDeleteFn model_delete
    ModelGetNumOutputsFn model_get_num_outputs

    # Optional: NULL when the model's torch release predates them.
    ContainerCreateWithDeviceFn container_create_with_device
    ContainerRunFn container_run_single_threaded
    ContainerGetInt32Fn container_get_constant_type
    ContainerGetSizeAtFn container_get_constant_data_size
    ContainerExtractMapFn container_extract_constants_map
    ContainerExtractEntriesFn container_extract_constants_map_entries
    ContainerUpdateMapFn container_update_user_managed_constant_buffer
    ContainerUpdatePairsFn container_update_user_managed_constant_buffer_pairs
    ContainerUpdatePairsFn container_update_constant_buffer_pairs
    ContainerUpdateMapFn container_update_constant_buffer_from_cpu
    ContainerUpdatePairsFn container_update_constant_buffer_from_cpu_pairs
    ContainerActionFn container_free_inactive_constant_buffer
    ContainerGetBlobSizeFn container_get_constants_blob_size
    ContainerUpdateFromBlobFn model_update_constants_from_blob
    ModelCreateV2Fn model_create_v2
    ModelUpdateConstantsMapV2Fn model_update_constants_map_v2
    ContainerCreateWithExternalConstantsFn container_create_with_external_constants
    ContainerDidCallLoadConstantsFn container_did_call_load_constants
    SetUsePinnedAsyncConstantsCopyFn set_use_pinned_async_constants_copy
    GetLastErrorFn get_last_error


cdef class ModelLibrary:
    cdef void* _handle
    cdef AOTIFunctions fn
    cdef readonly str path
    cdef readonly str loaded_path       # the file dlopen mapped: path, or a fixed copy
    cdef readonly bint executable_stack  # whether the mapped file asks for one
    cdef object __weakref__
    cdef vector[InputCheckFn] _input_checks   # per input; see input_checks()
    cdef size_t _input_checks_found
    cdef bint _input_checks_read

    cdef _refuse_private_libstdcxx(self)
    cdef _resolve(self)
    cdef int require(self, const void* entry, const char* symbol) except -1
    cdef int check(self, AOTIRuntimeError status, const char* function) except -1 nogil
    cdef const InputCheckFn* input_checks(self, size_t num_inputs) except? NULL
