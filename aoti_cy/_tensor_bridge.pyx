"""torch.Tensor <-> AtenTensorHandle for every extension of aoti_cy.

csrc/tensor_bridge.cpp is compiled into this extension alone, so the types
it accepts are set once, here: numpy arrays are taken wherever tensors are,
as CPU tensors sharing their memory. Other extensions cimport the functions
below (one indirect call each).
"""

from cpython.object cimport PyObject

from aoti_cy.includes.abi cimport AtenTensorHandle
from aoti_cy.includes.bridge cimport (
    AotiCyDevice, AotiCyTensorRef, aoti_cy_accept_arrays_of, aoti_cy_drop_refs,
    aoti_cy_dtype_from_scalar_type, aoti_cy_free_handles, aoti_cy_handle_from_tensor,
    aoti_cy_handles_from_tensors, aoti_cy_list_from_handles, aoti_cy_new_handle_ref,
    aoti_cy_tensor_from_borrowed_handle, aoti_cy_tensor_from_handle,
    aoti_cy_tuple_from_handles)

import numpy

aoti_cy_accept_arrays_of(<PyObject*>numpy.ndarray)


cdef int handles_from_tensors(PyObject* const* tensors, Py_ssize_t n,
                              AtenTensorHandle* out, AotiCyDevice device,
                              PyObject* names, AotiCyTensorRef** keepalive) except -1:
    return aoti_cy_handles_from_tensors(tensors, n, out, device, names, keepalive)


cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL:
    return aoti_cy_handle_from_tensor(tensor)


cdef object tensor_from_handle(AtenTensorHandle handle):
    return aoti_cy_tensor_from_handle(handle)


cdef object tensor_from_borrowed_handle(AtenTensorHandle handle):
    return aoti_cy_tensor_from_borrowed_handle(handle)


cdef object list_from_handles(AtenTensorHandle* handles, size_t n):
    return aoti_cy_list_from_handles(handles, n)


cdef object tuple_from_handles(AtenTensorHandle* handles, size_t n):
    return aoti_cy_tuple_from_handles(handles, n)


cdef object dtype_from_scalar_type(int scalar_type):
    return aoti_cy_dtype_from_scalar_type(scalar_type)


cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil:
    return aoti_cy_new_handle_ref(handle)


cdef void free_handles(AtenTensorHandle* handles, size_t n) noexcept nogil:
    aoti_cy_free_handles(handles, n)


cdef void drop_refs(AotiCyTensorRef** refs, size_t n) noexcept nogil:
    aoti_cy_drop_refs(refs, n)


def _round_trip(tensor):
    """Tests only: ``tensor`` through a handle and back (a tensor sharing its
    memory), as every extension takes an input."""
    return tensor_from_handle(handle_from_tensor(tensor))
