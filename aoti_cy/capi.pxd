# The public Cython API of aoti_cy: run a loaded model from other Cython
# code, including inside `with nogil:`.
#
#     cimport aoti_cy                        # or: from aoti_cy cimport capi
#     model = aoti_cy_module.load(path)      # keep it alive while you use it
#     cdef aoti_cy.Container* c = aoti_cy.container_of(model)
#     with nogil:
#         aoti_cy.run_handles(c, inputs, n_in, outputs, n_out, NULL)
#
# Nothing here exposes how aoti_cy lays out its objects: a container is an
# opaque pointer, so aoti_cy's classes can change without breaking a
# consumer. Consumers bind these functions by name and signature when they
# are imported (Cython's __pyx_capi__), so a change fails loudly at import
# instead of calling the wrong function; any change bumps
# AOTI_CY_CAPI_VERSION (tests/test_capi.py holds the snapshot). Plain C: a
# consumer may compile as C or C++.
#
# Handle ownership follows the C ABI: input handles are consumed (also when
# the call fails), output handles belong to the caller on success.

from aoti_cy.includes.handles cimport AtenTensorHandle

cdef enum:
    # The version of the C API below that a consumer was compiled against;
    # compare with capi_version() at run time.
    AOTI_CY_CAPI_VERSION = 3

cdef extern from *:
    """
    typedef struct AotiCyContainer AotiCyContainer;
    """
    # A ModelContainer, borrowed: valid while the Python object lives.
    ctypedef struct Container "AotiCyContainer"

# The C API version of the aoti_cy that is loaded.
cdef int capi_version() noexcept nogil

# The container behind an aoti_cy.ModelContainer (TypeError for anything
# else). Borrowed: hold a reference to `model` for as long as you use it.
cdef Container* container_of(object model) except NULL

# How many input and output handles a run of `container` takes.
cdef size_t num_inputs(Container* container) noexcept nogil
cdef size_t num_outputs(Container* container) noexcept nogil

# Run `container` on raw handles; callable without the GIL. Inputs are checked
# as by ModelContainer.run when the container checks inputs (a mismatch raises
# ValueError, taking the GIL to do so). The `count_in` input handles are
# consumed, also on failure, and their slots left NULL. On success
# `outputs[0:count_out]` hold new handles owned by the caller (a NULL one
# stands for no tensor). `stream` NULL means the current stream of the model's
# device (ignored on CPU).
cdef int run_handles(Container* container,
                     AtenTensorHandle* inputs, size_t count_in,
                     AtenTensorHandle* outputs, size_t count_out,
                     void* stream) except -1 nogil

# Tensors <-> handles for code that drives run_handles itself. Each handle
# made holds a reference to the tensor's storage; no data is copied.
# A new handle referring to `tensor` (a numpy array is viewed as a CPU tensor).
cdef AtenTensorHandle handle_from_tensor(object tensor) except NULL
# The tensor a handle refers to, stealing the handle (None for NULL).
cdef object tensor_from_handle(AtenTensorHandle handle)
# A new handle to the same tensor (NULL when out of memory): how nogil code
# makes a fresh input handle for every run.
cdef AtenTensorHandle new_handle_ref(AtenTensorHandle handle) noexcept nogil
# Free every non-NULL handle (a repeated one once) and NULL the slots.
cdef void free_handles(AtenTensorHandle* handles, size_t count) noexcept nogil
