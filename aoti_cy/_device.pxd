# Where a model runs: the device codes (csrc/device_codes.h), CUDA streams
# given by callers in any of their forms, and the device guard every run and
# every call that makes CUDA objects goes through. The one place aoti_cy
# touches libtorch_cuda's C shim (resolved with dlsym: no CUDA build needed).

cdef extern from "device_codes.h":
    # c10::DeviceType values, as the ABI and the tensor bridge use them.
    enum:
        AOTI_CY_DEVICE_CPU
        AOTI_CY_DEVICE_CUDA

# The raw stream a caller gave (NULL for None or 0: the current stream of the
# model's device). ``device`` is the model's torch.device (or None: not
# checked); a torch.cuda.Stream of another GPU than a CUDA model's is refused.
cdef void* stream_pointer(object stream, object device, str name=*) except? NULL

# The current CUDA stream of ``device_index``, as torch sees it.
cdef int current_stream(int device_index, void** stream) except -1 nogil

# Make a device current until leave_device(guard[0]): a CUDA device's guard,
# or NULL (nothing to undo) on CPU. Callable with or without the GIL.
cdef int enter_device(int device_type, int device_index, void** guard) except -1 nogil
# Put back the device current before enter_device; NULL does nothing.
cdef void leave_device(void* guard) noexcept nogil


cdef class DeviceGuard:
    # A context manager over enter_device / leave_device.
    cdef readonly int device_type
    cdef readonly int device_index
    cdef void* _guard
    cdef bint _entered


# A DeviceGuard for a device already parsed (no Python-level parsing).
cdef DeviceGuard guard_for(int device_type, int device_index)
