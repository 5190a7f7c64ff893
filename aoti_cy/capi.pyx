"""The public C API (declared in capi.pxd): thin entry points onto the
container's own run path, for Cython code that runs models without the GIL.
A container crosses the API as an opaque pointer, so consumers never compile
against aoti_cy's object layout."""

from cpython.object cimport PyObject

cimport aoti_cy._tensor_bridge as bridge
from aoti_cy.interface cimport ModelContainer

CAPI_VERSION = AOTI_CY_CAPI_VERSION


cdef int capi_version() noexcept nogil:
    return AOTI_CY_CAPI_VERSION


cdef Container* container_of(object model) except NULL:
    if not isinstance(model, ModelContainer):
        raise TypeError(f"expected an aoti_cy.ModelContainer, got {type(model).__name__}")
    return <Container*><PyObject*>model


cdef size_t num_inputs(Container* container) noexcept nogil:
    return (<ModelContainer><PyObject*>container)._num_inputs


cdef size_t num_outputs(Container* container) noexcept nogil:
    return (<ModelContainer><PyObject*>container)._num_outputs


cdef int run_handles(Container* container,
                     AtenTensorHandle* inputs, size_t count_in,
                     AtenTensorHandle* outputs, size_t count_out,
                     void* stream) except -1 nogil:
    if container == NULL:
        bridge.free_handles(inputs, count_in)
        with gil:
            raise TypeError("run_handles needs a container, got NULL")
    return (<ModelContainer><PyObject*>container).invoke(
        inputs, count_in, outputs, count_out, stream, False)


cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL:
    return bridge.handle_from_tensor(tensor)


cdef object tensor_from_handle(AtenTensorHandle handle):
    return bridge.tensor_from_handle(handle)


cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil:
    return bridge.new_handle_ref(handle)


cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil:
    bridge.free_handles(handles, count)
