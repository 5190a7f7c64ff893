# The container's and model's constant entry points, one function per
# operation, each choosing among the variants the model's torch release
# exports. Callers hold the handle's gate; nothing here validates values
# (aoti_cy/_constants.py does, before these are called).

from aoti_cy.includes.abi cimport AOTInductorModelContainerHandle, AOTInductorModelHandle
from aoti_cy._library cimport ModelLibrary

cdef tuple read_constant_infos(ModelLibrary lib, AOTInductorModelContainerHandle handle)
cdef dict extract_constants(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                            bint use_inactive, bint copy)
cdef update_constants(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                      dict values, object device, bint use_inactive,
                      bint full_update, bint user_managed)
cdef unsigned long long constants_blob_size(
    ModelLibrary lib, AOTInductorModelContainerHandle handle) except? 0
cdef load_constants_blob(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                         const unsigned char* data)
cdef update_model_constants(ModelLibrary lib, AOTInductorModelHandle handle, dict values)
cdef AOTInductorModelContainerHandle create_over_constants(
    ModelLibrary lib, size_t num_models, const char* device,
    const char* cubin_dir, dict values) except NULL
cdef bint did_call_load_constants(
    ModelLibrary lib, AOTInductorModelContainerHandle handle) except -1
cdef set_pinned_async_copy(ModelLibrary lib, bint enabled)
