# Raw C declarations of the AOTInductor model ABI
# (torch/csrc/inductor/aoti_runtime/interface.h).
#
# Nothing here is linked: every entry point lives in a model `.so` and is
# resolved with dlsym into `aoti_cy._library.AOTIFunctions`. The types are
# declared in Cython (not through the torch header): the opaque handles in
# handles.pxd, plain C, which the public C API shares.

from libc.stdint cimport int32_t, uint8_t, uint64_t
from libcpp cimport bool as cbool  # C++ bool: one byte, as the ABI expects

from aoti_cy.includes.handles cimport (
    AOTIProxyExecutorHandle, AOTInductorConstantMapHandle, AOTInductorModelContainerHandle,
    AOTInductorModelHandle, AOTInductorStreamHandle, AtenTensorHandle)

ctypedef int32_t AOTIRuntimeError

cdef enum:
    AOTI_RUNTIME_SUCCESS = 0
    AOTI_RUNTIME_FAILURE = 1

ctypedef struct AOTInductorConstantMapEntry:
    const char* name
    AtenTensorHandle handle

# --- container lifecycle ---------------------------------------------------
ctypedef AOTIRuntimeError (*ContainerCreateFn)(
    AOTInductorModelContainerHandle*, size_t num_models, cbool is_cpu,
    const char* cubin_dir) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerCreateWithDeviceFn)(
    AOTInductorModelContainerHandle*, size_t num_models,
    const char* device_str, const char* cubin_dir) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerDeleteFn)(
    AOTInductorModelContainerHandle) noexcept nogil
# torch >= 2.14: a container over the caller's tensors (no weights loaded from
# the .so; the runtime takes its own reference to each tensor, the handles
# stay the caller's), constants folded at creation.
ctypedef AOTIRuntimeError (*ContainerCreateWithExternalConstantsFn)(
    AOTInductorModelContainerHandle*, size_t num_models, const char* device_str,
    const char* cubin_dir, const AOTInductorConstantMapEntry* constant_entries,
    size_t num_constant_entries) noexcept nogil

# --- running ----------------------------------------------------------------
# Input handles are stolen (the model nulls each one it takes); the arrays
# themselves are borrowed; output handles are owned by the caller.
ctypedef AOTIRuntimeError (*ContainerRunFn)(
    AOTInductorModelContainerHandle,
    AtenTensorHandle* input_handles, size_t num_inputs,
    AtenTensorHandle* output_handles, size_t num_outputs,
    AOTInductorStreamHandle, AOTIProxyExecutorHandle) noexcept nogil

# --- metadata ---------------------------------------------------------------
ctypedef AOTIRuntimeError (*ContainerGetSizeFn)(
    AOTInductorModelContainerHandle, size_t* ret) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerGetNameFn)(
    AOTInductorModelContainerHandle, size_t idx, const char** ret) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerGetCallSpecFn)(
    AOTInductorModelContainerHandle, const char** in_spec,
    const char** out_spec) noexcept nogil

# --- constants --------------------------------------------------------------
ctypedef AOTIRuntimeError (*ContainerGetBoolFn)(
    AOTInductorModelContainerHandle, size_t idx, cbool* ret) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerGetInt32Fn)(
    AOTInductorModelContainerHandle, size_t idx, int32_t* ret) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerGetSizeAtFn)(
    AOTInductorModelContainerHandle, size_t idx, size_t* ret) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerExtractMapFn)(
    AOTInductorModelContainerHandle, AOTInductorConstantMapHandle,
    cbool use_inactive) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerExtractEntriesFn)(
    AOTInductorModelContainerHandle, const AOTInductorConstantMapEntry** entries,
    size_t* num_entries, cbool use_inactive) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerUpdateMapFn)(
    AOTInductorModelContainerHandle, AOTInductorConstantMapHandle,
    cbool use_inactive, cbool validate_full_update) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerUpdatePairsFn)(
    AOTInductorModelContainerHandle, const AOTInductorConstantMapEntry* pairs,
    size_t num_pairs, cbool use_inactive, cbool validate_full_update) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerUpdateInactiveMapFn)(
    AOTInductorModelContainerHandle, AOTInductorConstantMapHandle) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerUpdateInactivePairsFn)(
    AOTInductorModelContainerHandle, const AOTInductorConstantMapEntry* pairs,
    size_t num_pairs) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerActionFn)(
    AOTInductorModelContainerHandle) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerRunConstantFoldingFn)(
    AOTInductorModelContainerHandle, cbool use_inactive,
    AOTInductorStreamHandle, AOTIProxyExecutorHandle) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerGetBlobSizeFn)(
    AOTInductorModelContainerHandle, uint64_t* ret) noexcept nogil
ctypedef AOTIRuntimeError (*ContainerUpdateFromBlobFn)(
    AOTInductorModelContainerHandle, const uint8_t* blob) noexcept nogil
# torch >= 2.14: whether the container's model ran load_constants() (every
# container made by Create*, not one made over external constants).
ctypedef AOTIRuntimeError (*ContainerDidCallLoadConstantsFn)(
    AOTInductorModelContainerHandle, cbool* ret) noexcept nogil
# torch >= 2.14: a setting of the model library (not of one container):
# staged pinned-memory async copies for host-to-GPU weight uploads.
ctypedef AOTIRuntimeError (*SetUsePinnedAsyncConstantsCopyFn)(cbool enabled) noexcept nogil

# --- single-instance model ----------------------------------------------------
ctypedef AOTIRuntimeError (*ModelCreateFn)(
    AOTInductorModelHandle*, AOTInductorConstantMapHandle) noexcept nogil
ctypedef AOTIRuntimeError (*ModelCreateV2Fn)(
    AOTInductorModelHandle*, const AOTInductorConstantMapEntry* pairs,
    size_t num_pairs) noexcept nogil
ctypedef AOTIRuntimeError (*ModelRunFn)(
    AOTInductorModelHandle, AtenTensorHandle* input_handles,
    AtenTensorHandle* output_handles) noexcept nogil
ctypedef AOTIRuntimeError (*ModelUpdateConstantsMapFn)(
    AOTInductorModelHandle, AOTInductorConstantMapHandle) noexcept nogil
ctypedef AOTIRuntimeError (*ModelUpdateConstantsMapV2Fn)(
    AOTInductorModelHandle, const AOTInductorConstantMapEntry* pairs,
    int32_t num_pairs) noexcept nogil
ctypedef AOTIRuntimeError (*ModelDeleteFn)(AOTInductorModelHandle) noexcept nogil
ctypedef AOTIRuntimeError (*ModelGetNumOutputsFn)(
    AOTInductorModelHandle, size_t* ret) noexcept nogil

# --- errors -------------------------------------------------------------------
ctypedef AOTIRuntimeError (*GetLastErrorFn)(const char** message) noexcept nogil

# libtorch's CUDA shim (libtorch_cuda.so), not the model: the current stream,
# and a device guard (c10::cuda::CUDAGuard) for runs on another GPU.
ctypedef int32_t (*GetCurrentCudaStreamFn)(
    int32_t device_index, void** ret_stream) noexcept nogil
ctypedef int32_t (*CreateCudaGuardFn)(int32_t device_index, void** ret_guard) noexcept nogil
ctypedef int32_t (*DeleteCudaGuardFn)(void* guard) noexcept nogil


# Not part of interface.h: the input check inductor generates in every model,
# `static void check_input_<i>(AtenTensorHandle* input_handles)`, found in the
# library's symbol table (see csrc/input_guards.h). Throws on a mismatch.
ctypedef void (*InputCheckFn)(AtenTensorHandle* input_handles) noexcept nogil
