# A third-party extension that runs an aoti_cy model without the GIL.
# Compiled as C: the public C API needs no C++.
cimport aoti_cy
from libc.stdlib cimport calloc, free


def run_nogil(model, list inputs, int repeats):
    """Run a one-input, one-output model ``repeats`` times in a nogil loop,
    input i being ``inputs[i]``; return the outputs."""
    cdef aoti_cy.Container* container = aoti_cy.container_of(model)
    cdef aoti_cy.AtenTensorHandle* handles = <aoti_cy.AtenTensorHandle*>calloc(
        repeats, sizeof(aoti_cy.AtenTensorHandle))
    cdef aoti_cy.AtenTensorHandle* outputs = <aoti_cy.AtenTensorHandle*>calloc(
        repeats, sizeof(aoti_cy.AtenTensorHandle))
    cdef int i
    if handles == NULL or outputs == NULL:
        free(handles)
        free(outputs)
        raise MemoryError()
    try:
        for i in range(repeats):
            handles[i] = aoti_cy.handle_from_tensor(inputs[i])
        with nogil:
            for i in range(repeats):
                aoti_cy.run_handles(container, &handles[i], 1, &outputs[i], 1, NULL)
                handles[i] = NULL  # consumed (run_handles also NULLs it)
        return [aoti_cy.tensor_from_handle(outputs[i]) for i in range(repeats)]
    finally:
        aoti_cy.free_handles(handles, repeats)
        free(handles)
        free(outputs)


def run_once_nogil(model, list inputs):
    """One run of a model on ``inputs`` inside ``with nogil:``; return its
    outputs."""
    cdef aoti_cy.Container* container = aoti_cy.container_of(model)
    cdef size_t n = len(inputs), count_out = aoti_cy.num_outputs(container)
    cdef aoti_cy.AtenTensorHandle* handles = <aoti_cy.AtenTensorHandle*>calloc(
        n + 1, sizeof(aoti_cy.AtenTensorHandle))
    cdef aoti_cy.AtenTensorHandle* outputs = <aoti_cy.AtenTensorHandle*>calloc(
        count_out + 1, sizeof(aoti_cy.AtenTensorHandle))
    cdef size_t i
    if handles == NULL or outputs == NULL:
        free(handles)
        free(outputs)
        raise MemoryError()
    try:
        for i in range(n):
            handles[i] = aoti_cy.handle_from_tensor(inputs[i])
        with nogil:
            aoti_cy.run_handles(container, handles, n, outputs, count_out, NULL)
        return [aoti_cy.tensor_from_handle(outputs[i]) for i in range(count_out)]
    finally:
        aoti_cy.free_handles(handles, n)
        free(handles)
        free(outputs)


def counts(model):
    """(inputs, outputs) a run of ``model`` takes, read without the GIL."""
    cdef aoti_cy.Container* container = aoti_cy.container_of(model)
    cdef size_t count_in, count_out
    with nogil:
        count_in = aoti_cy.num_inputs(container)
        count_out = aoti_cy.num_outputs(container)
    return count_in, count_out


def versions():
    """(the C API version this consumer was compiled against, the loaded one)."""
    return aoti_cy.AOTI_CY_CAPI_VERSION, aoti_cy.capi_version()
