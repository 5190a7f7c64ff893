# torch.Tensor <-> AtenTensorHandle, without copying data (csrc/tensor_bridge.h,
# compiled into this extension only). Every extension that turns tensors into
# handles or back cimports these, so all of them accept the same inputs
# (numpy arrays as CPU tensors sharing their memory included).
#
# Ownership as in csrc/tensor_bridge.h: an AtenTensorHandle is one owned
# reference to a tensor; functions that steal handles free all of them, also
# on error.

from cpython.object cimport PyObject

from aoti_cy.includes.abi cimport AtenTensorHandle
from aoti_cy.includes.bridge cimport AotiCyDevice, AotiCyTensorRef

# One new handle per tensor in tensors[0:n] into out[0:n]: TypeError for a
# non-tensor, ValueError for one on another device than `device`, naming the
# input by `names` (a tuple of str, or NULL). On error every slot is NULL.
# `keepalive` (or NULL) gets one more reference per tensor, dropped by the
# caller with the GIL (drop_refs) after the model has run.
cdef int handles_from_tensors(PyObject* const* tensors, Py_ssize_t n,
                              AtenTensorHandle* out, AotiCyDevice device,
                              PyObject* names, AotiCyTensorRef** keepalive) except -1
# A new handle for one tensor (or numpy array).
cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL
# The tensor a handle refers to, stealing the handle (None for NULL).
cdef object tensor_from_handle(AtenTensorHandle handle)
# A tensor sharing the storage of a handle the caller keeps.
cdef object tensor_from_borrowed_handle(AtenTensorHandle handle)
# Steal all n handles; a list / tuple of tensors (one tensor per repeated handle).
cdef object list_from_handles(AtenTensorHandle* handles, size_t n)
cdef object tuple_from_handles(AtenTensorHandle* handles, size_t n)
# The torch.dtype of a c10::ScalarType value; ValueError for an unknown one.
cdef object dtype_from_scalar_type(int scalar_type)
# Without the GIL: one more handle to the same tensor (NULL when out of
# memory); free every non-NULL handle once and NULL the slots; drop refs.
cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil
cdef void free_handles(AtenTensorHandle* handles, size_t n) noexcept nogil
cdef void drop_refs(AotiCyTensorRef** refs, size_t n) noexcept nogil
