/* torch.Tensor <-> AtenTensorHandle, without copying data.
 *
 * An AtenTensorHandle is an owned `at::Tensor*` (torch's C shim deletes it
 * with `delete`), so a handle made here holds one reference to the tensor's
 * storage and nothing more. The declarations are plain C so that this header
 * needs no torch include path; torch's headers are used only in the .cpp.
 *
 * Functions that return int give 0 on success and -1 with a Python exception
 * set. Every function that steals handles frees all of them, also on error.
 */
#pragma once

#include <Python.h>
#include <stddef.h>

#include "device_codes.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AtenTensorOpaque AtenTensorOpaque;

/* One reference to a tensor that is not a handle: a count on its TensorImpl,
 * taken and dropped without allocating. */
typedef struct AotiCyTensorRef AotiCyTensorRef;

/* Where a model runs: a device type (device_codes.h) and an index (-1 on CPU). */
typedef struct AotiCyDevice {
  int type;
  int index;
} AotiCyDevice;

/* Accept instances of `type` (numpy.ndarray, given once at import) wherever
 * tensors are taken, as CPU tensors sharing their memory. */
void aoti_cy_accept_arrays_of(PyObject* type);

/* Makes one new handle per tensor (or numpy array, viewed without copying)
 * in `tensors[0:n]` into `out`. Raises
 * TypeError for a non-tensor and ValueError for a tensor on another device
 * than `device`; `names` (a tuple of str or NULL) names the input in the
 * message. On error no handle is left allocated and `out` is all NULL.
 * `keepalive`, if not NULL, gets a second reference per tensor, to be dropped
 * by the caller with the GIL held (aoti_cy_drop_refs): then the model dropping
 * its handle without the GIL never releases a tensor's last C++ reference,
 * which would make torch take the GIL just to decref the Python object. */
int aoti_cy_handles_from_tensors(PyObject* const* tensors, Py_ssize_t n,
                                 AtenTensorOpaque** out, AotiCyDevice device,
                                 PyObject* names, AotiCyTensorRef** keepalive);

/* Drops every non-NULL reference in `refs[0:n]` and sets it to NULL. */
void aoti_cy_drop_refs(AotiCyTensorRef** refs, size_t n);

/* One new handle for one tensor (or numpy array), or NULL with TypeError set. */
AtenTensorOpaque* aoti_cy_handle_from_tensor(PyObject* tensor);

/* Steals `handle`; a new reference to a tensor (detached from autograd),
 * Py_None for a NULL handle, or NULL with an exception set. */
PyObject* aoti_cy_tensor_from_handle(AtenTensorOpaque* handle);

/* A new reference to a tensor sharing the storage of a handle the caller
 * keeps (nothing is stolen), or NULL with an exception set. */
PyObject* aoti_cy_tensor_from_borrowed_handle(AtenTensorOpaque* handle);

/* Steals all `n` handles and returns a new list of tensors (None for a NULL
 * handle). A handle that appears twice becomes the same tensor object and is
 * freed once. */
PyObject* aoti_cy_list_from_handles(AtenTensorOpaque** handles, size_t n);
// The same as a tuple (what model(...) returns for a flat tuple output).
PyObject* aoti_cy_tuple_from_handles(AtenTensorOpaque** handles, size_t n);

/* The torch.dtype for a c10::ScalarType value (as the C ABI reports constant
 * dtypes): a new reference, or NULL with ValueError set. */
PyObject* aoti_cy_dtype_from_scalar_type(int scalar_type);

/* A new handle to the same tensor as `handle` (one more reference, no data
 * copied), or NULL if out of memory. Needs no GIL. */
AtenTensorOpaque* aoti_cy_new_handle_ref(AtenTensorOpaque* handle);

/* Frees every non-NULL handle once (a repeated one too) and sets all to NULL.
 * Needs no GIL. */
void aoti_cy_free_handles(AtenTensorOpaque** handles, size_t n);

#ifdef __cplusplus
}
#endif
