"""The constant entry points of a model library, one function per operation.

Each torch release changed how constants cross the ABI (a std::unordered_map,
then arrays of name/handle pairs; copies from CPU; user-managed buffers; an
entries array for extraction). The functions here pick the newest variant the
library exports, so the rest of aoti_cy sees one operation each. Callers hold
the container's (or model's) gate and have validated the values with
``aoti_cy._constants.ConstantTable``.
"""

from libc.stdint cimport int32_t, uint64_t
from libcpp cimport bool as cbool
from libcpp.string cimport string
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

from aoti_cy.includes.abi cimport (
    AOTIRuntimeError, AOTInductorConstantMapEntry, AOTInductorConstantMapHandle,
    AOTInductorModelContainerHandle, AOTInductorModelHandle, AtenTensorHandle,
    ContainerUpdateMapFn, ContainerUpdatePairsFn)
from aoti_cy._tensor_bridge cimport (
    dtype_from_scalar_type, free_handles, handle_from_tensor, tensor_from_borrowed_handle)
from aoti_cy._library cimport ModelLibrary

from aoti_cy._constants import ConstantInfo


cdef str _decode(const char* text):
    return text.decode("utf-8", "replace") if text != NULL else ""


cdef tuple read_constant_infos(ModelLibrary lib, AOTInductorModelContainerHandle handle):
    """A ConstantInfo per constant, in the runtime's order."""
    cdef size_t i, count = 0, data_size = 0
    cdef const char* name = NULL
    cdef const char* fqn = NULL
    cdef cbool from_folded = False
    cdef int32_t dtype = 0, kind = 0
    lib.check(lib.fn.container_get_num_constants(handle, &count),
              "AOTInductorModelContainerGetNumConstants")
    infos = []
    for i in range(count):
        lib.check(lib.fn.container_get_constant_name(handle, i, &name),
                  "AOTInductorModelContainerGetConstantName")
        lib.check(lib.fn.container_get_constant_original_fqn(handle, i, &fqn),
                  "AOTInductorModelContainerGetConstantOriginalFQN")
        lib.check(lib.fn.container_get_constant_from_folded(handle, i, &from_folded),
                  "AOTInductorModelContainerGetConstantFromFolded")
        lib.check(lib.fn.container_get_constant_dtype(handle, i, &dtype),
                  "AOTInductorModelContainerGetConstantDtype")
        kind_value = size_value = None
        if lib.fn.container_get_constant_type != NULL:
            lib.check(lib.fn.container_get_constant_type(handle, i, &kind),
                      "AOTInductorModelContainerGetConstantType")
            kind_value = kind
        if lib.fn.container_get_constant_data_size != NULL:
            lib.check(lib.fn.container_get_constant_data_size(handle, i, &data_size),
                      "AOTInductorModelContainerGetConstantDataSize")
            size_value = data_size
        infos.append(ConstantInfo(
            _decode(name), _decode(fqn), dtype_from_scalar_type(dtype),
            bool(from_folded), kind_value, size_value))
    return tuple(infos)


cdef int _fill_pairs(vector[AOTInductorConstantMapEntry]& pairs, list encoded,
                     dict values) except -1:
    """One (name, new handle) entry per value; ``encoded`` keeps the names'
    bytes alive. On failure the handles made so far are freed."""
    cdef size_t i, count = len(values)
    pairs.resize(count)   # value-initialised: every handle NULL
    encoded[:] = [name.encode() for name in values]
    try:
        for i, tensor in enumerate(values.values()):
            pairs[i].name = <const char*>(<bytes>encoded[i])
            pairs[i].handle = handle_from_tensor(tensor)
    except BaseException:
        for i in range(count):
            free_handles(&pairs[i].handle, 1)
        raise
    return 0


cdef dict extract_constants(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                            bint use_inactive, bint copy):
    """Original FQN -> tensor of each constant that is not folded. Without
    ``copy`` the tensors are views of the buffer, valid until its next update:
    the runtime keeps the entries until its next extract, so the caller
    allows one extract at a time."""
    cdef const AOTInductorConstantMapEntry* entries = NULL
    cdef size_t i, count = 0
    cdef unordered_map[string, AtenTensorHandle] constant_map
    cdef cbool inactive = use_inactive
    cdef AOTIRuntimeError status
    result = {}
    if lib.fn.container_extract_constants_map_entries != NULL:
        with nogil:
            status = lib.fn.container_extract_constants_map_entries(
                handle, &entries, &count, inactive)
        lib.check(status, "AOTInductorModelContainerExtractConstantsMapEntries")
        for i in range(count):
            result[_decode(entries[i].name)] = tensor_from_borrowed_handle(
                entries[i].handle)
    else:
        lib.require(<void*>lib.fn.container_extract_constants_map,
                    "AOTInductorModelContainerExtractConstantsMap")
        with nogil:
            status = lib.fn.container_extract_constants_map(
                handle, <AOTInductorConstantMapHandle>&constant_map, inactive)
        lib.check(status, "AOTInductorModelContainerExtractConstantsMap")
        for item in constant_map:
            result[item.first.decode("utf-8", "replace")] = \
                tensor_from_borrowed_handle(item.second)
    if copy:
        result = {k: t.clone() for k, t in result.items()}
    return result


cdef update_constants(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                      dict values, object device, bint use_inactive,
                      bint full_update, bint user_managed):
    """Set constants (internal name -> tensor) in the active or inactive
    buffer: copied, or with ``user_managed`` used in place (on ``device``)."""
    cdef vector[AOTInductorConstantMapEntry] pairs
    cdef unordered_map[string, AtenTensorHandle] constant_map
    cdef AOTIRuntimeError status
    cdef size_t i, count = len(values)
    cdef cbool inactive = use_inactive, full = full_update
    cdef ContainerUpdatePairsFn pairs_entry
    cdef ContainerUpdateMapFn map_entry
    from_cpu = device.type != "cpu" and any([t.device.type == "cpu" for t in values.values()])
    if user_managed and from_cpu:
        raise ValueError("user_managed constants must be on the model's device "
                         f"({device}); CPU tensors can only be copied")
    if (from_cpu and lib.fn.container_update_constant_buffer_from_cpu_pairs == NULL
            and lib.fn.container_update_constant_buffer_from_cpu == NULL):
        # Models from before the FromCpu entry points: copy them over here.
        values = {k: t.to(device) for k, t in values.items()}
        from_cpu = False
    if user_managed:
        pairs_entry = lib.fn.container_update_user_managed_constant_buffer_pairs
        map_entry = lib.fn.container_update_user_managed_constant_buffer
        names = ("AOTInductorModelContainerUpdateUserManagedConstantBufferPairs",
                 "AOTInductorModelContainerUpdateUserManagedConstantBuffer")
    elif from_cpu:
        pairs_entry = lib.fn.container_update_constant_buffer_from_cpu_pairs
        map_entry = lib.fn.container_update_constant_buffer_from_cpu
        names = ("AOTInductorModelContainerUpdateConstantBufferFromCpuPairs",
                 "AOTInductorModelContainerUpdateConstantBufferFromCpu")
    else:
        pairs_entry = lib.fn.container_update_constant_buffer_pairs
        map_entry = lib.fn.container_update_constant_buffer
        names = ("AOTInductorModelContainerUpdateConstantBufferPairs",
                 "AOTInductorModelContainerUpdateConstantBuffer")
    if pairs_entry == NULL:
        lib.require(<void*>map_entry, names[1].encode())
    encoded = []
    _fill_pairs(pairs, encoded, values)
    try:
        if pairs_entry != NULL:
            with nogil:
                status = pairs_entry(handle, pairs.data(), count, inactive, full)
            lib.check(status, names[0].encode())
        else:
            _as_map(pairs, constant_map)
            with nogil:
                status = map_entry(handle, <AOTInductorConstantMapHandle>&constant_map,
                                   inactive, full)
            lib.check(status, names[1].encode())
    finally:
        # Copies and user-managed entries both take their own reference.
        for i in range(count):
            free_handles(&pairs[i].handle, 1)


cdef unsigned long long constants_blob_size(
        ModelLibrary lib, AOTInductorModelContainerHandle handle) except? 0:
    """Bytes of the constants blob the model reads its weights from."""
    cdef uint64_t size = 0
    lib.require(<void*>lib.fn.container_get_constants_blob_size,
                "AOTInductorModelContainerGetConstantsBlobSize")
    lib.check(lib.fn.container_get_constants_blob_size(handle, &size),
              "AOTInductorModelContainerGetConstantsBlobSize")
    return size


cdef load_constants_blob(ModelLibrary lib, AOTInductorModelContainerHandle handle,
                         const unsigned char* data):
    """Copy every constant out of a buffer laid out as the constants blob."""
    cdef AOTIRuntimeError status
    lib.require(<void*>lib.fn.model_update_constants_from_blob,
                "AOTInductorModelUpdateConstantsFromBlob")
    with nogil:
        status = lib.fn.model_update_constants_from_blob(handle, data)
    lib.check(status, "AOTInductorModelUpdateConstantsFromBlob")


cdef update_model_constants(ModelLibrary lib, AOTInductorModelHandle handle, dict values):
    """Give a single model instance every constant (internal name -> tensor);
    the model keeps the tensors as they are."""
    cdef vector[AOTInductorConstantMapEntry] pairs
    cdef unordered_map[string, AtenTensorHandle] constant_map
    cdef AOTIRuntimeError status
    cdef size_t count = len(values)
    encoded = []
    _fill_pairs(pairs, encoded, values)
    # From here on the model owns the handles.
    if lib.fn.model_update_constants_map_v2 != NULL:
        with nogil:
            status = lib.fn.model_update_constants_map_v2(
                handle, pairs.data(), <int32_t>count)
        lib.check(status, "AOTInductorModelUpdateConstantsMapV2")
    else:
        _as_map(pairs, constant_map)
        with nogil:
            status = lib.fn.model_update_constants_map(
                handle, <AOTInductorConstantMapHandle>&constant_map)
        lib.check(status, "AOTInductorModelUpdateConstantsMap")


cdef void _as_map(vector[AOTInductorConstantMapEntry]& pairs,
                  unordered_map[string, AtenTensorHandle]& constant_map):
    # Older models take a std::unordered_map; this assumes the model was
    # built with the same C++ ABI as this extension.
    cdef size_t i
    for i in range(pairs.size()):
        constant_map[string(pairs[i].name)] = pairs[i].handle


cdef AOTInductorModelContainerHandle create_over_constants(
        ModelLibrary lib, size_t num_models, const char* device,
        const char* cubin_dir, dict values) except NULL:
    """A container whose constants are ``values`` (internal name -> tensor
    on the model's device, every constant), used in place: the runtime loads
    no weights of its own, takes its own reference to each tensor's storage
    (the handles stay ours, freed here) and folds constants at creation."""
    cdef vector[AOTInductorConstantMapEntry] pairs
    cdef AOTInductorModelContainerHandle handle = NULL
    cdef AOTIRuntimeError status
    cdef size_t i, count = len(values)
    lib.require(<void*>lib.fn.container_create_with_external_constants,
                "AOTInductorModelContainerCreateWithExternalConstants")
    encoded = []
    _fill_pairs(pairs, encoded, values)
    try:
        with nogil:
            status = lib.fn.container_create_with_external_constants(
                &handle, num_models, device, cubin_dir, pairs.data(), count)
    finally:
        for i in range(count):
            free_handles(&pairs[i].handle, 1)
    lib.check(status, "AOTInductorModelContainerCreateWithExternalConstants")
    return handle


cdef bint did_call_load_constants(
        ModelLibrary lib, AOTInductorModelContainerHandle handle) except -1:
    """Whether the container's model loaded its constants itself (False for
    a container made over external constants)."""
    cdef cbool called = False
    lib.require(<void*>lib.fn.container_did_call_load_constants,
                "AOTInductorModelContainerDidCallLoadConstants")
    lib.check(lib.fn.container_did_call_load_constants(handle, &called),
              "AOTInductorModelContainerDidCallLoadConstants")
    return called


cdef set_pinned_async_copy(ModelLibrary lib, bint enabled):
    """Turn the library's pinned async host-to-GPU constant copies on or off
    (for every container of that library from now on)."""
    lib.require(<void*>lib.fn.set_use_pinned_async_constants_copy,
                "AOTInductorSetUsePinnedAsyncConstantsCopy")
    lib.check(lib.fn.set_use_pinned_async_constants_copy(enabled),
              "AOTInductorSetUsePinnedAsyncConstantsCopy")
