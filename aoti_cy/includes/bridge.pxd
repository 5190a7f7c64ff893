# csrc/tensor_bridge.h: torch.Tensor <-> AtenTensorHandle (no data copies).

from cpython.object cimport PyObject

from aoti_cy.includes.abi cimport AtenTensorHandle

cdef extern from "tensor_bridge.h":
    enum:
        AOTI_CY_DEVICE_CPU
        AOTI_CY_DEVICE_CUDA

    ctypedef struct AotiCyTensorRef:
        pass

    ctypedef struct AotiCyDevice:
        int type
        int index

    void aoti_cy_accept_arrays_of(PyObject* ndarray_type)

    # These need the GIL; each raises through the usual Python error protocol.
    int aoti_cy_handles_from_tensors(
        PyObject* const* tensors, Py_ssize_t n, AtenTensorHandle* out,
        AotiCyDevice device, PyObject* names, AotiCyTensorRef** keepalive) except -1
    AtenTensorHandle aoti_cy_handle_from_tensor(object tensor) except NULL
    object aoti_cy_tensor_from_handle(AtenTensorHandle handle)
    object aoti_cy_tensor_from_borrowed_handle(AtenTensorHandle handle)
    object aoti_cy_list_from_handles(AtenTensorHandle* handles, size_t n)
    object aoti_cy_tuple_from_handles(AtenTensorHandle* handles, size_t n)
    object aoti_cy_dtype_from_scalar_type(int scalar_type)

    AtenTensorHandle aoti_cy_new_handle_ref(AtenTensorHandle handle) nogil
    void aoti_cy_free_handles(AtenTensorHandle* handles, size_t n) nogil
    void aoti_cy_drop_refs(AotiCyTensorRef** refs, size_t n) nogil


# csrc/run_buffers.h: one run's handle arrays, on the stack up to 16 tensors.
cdef extern from "run_buffers.h" nogil:
    cdef cppclass AotiCyRunBuffers:
        AtenTensorHandle* inputs
        AotiCyTensorRef** keepalive
        AtenTensorHandle* outputs
        void reserve(size_t num_inputs, size_t num_outputs) except +
