# aoti_cy's own view of ModelContainer: private to aoti_cy's modules
# (capi.pyx), so its layout and C methods can change freely. Other Cython
# code uses the public C API in aoti_cy/capi.pxd, which exposes no layout.

from aoti_cy.includes.abi cimport AOTIRuntimeError, AOTInductorModelContainerHandle
from aoti_cy._handle_owner cimport _HandleOwner

# aoti_cy_proxy_executor_failed (csrc/proxy_executor.h), reached through the
# executor object: it lives in another extension module.
ctypedef int (*ExecutorFailedFn)(const void* handle) noexcept nogil


cdef class ModelContainer(_HandleOwner):
    cdef bint _blob_loaded         # the runtime accepts a constants blob once
    cdef object _weights_lock      # serialises load_weights
    cdef object _extract_lock      # one extract at a time (its entries are the container's)
    cdef void* _proxy_executor     # AOTIProxyExecutorHandle for fallback ops, or NULL
    cdef ExecutorFailedFn _executor_failed  # whether one of its calls failed here
    cdef object _proxy_executor_owner  # the Python object that owns it
    cdef object _graphs            # aoti_cy.cuda_graphs.GraphRunner, or None
    cdef dict _external_constants  # the caller's tensors it runs on, or None

    cdef create(self, size_t num_models, object cubin_dir)
    cdef object read_description(self)
    cdef dict external_values(self, object mapping, object cubin_dir)
    cdef object constant_table(self)
    cdef dict extract(self, bint use_inactive, bint copy)
    cdef update(self, dict values, bint use_inactive, bint full_update, bint user_managed)
    cdef object note_active_constants(self)
    cdef AOTIRuntimeError executor_checked(self, AOTIRuntimeError status) noexcept nogil
    cdef buffer_action(self, void* entry, const char* function)
    cdef require_slot_sizes(self)
    cdef bint can_extract(self)
