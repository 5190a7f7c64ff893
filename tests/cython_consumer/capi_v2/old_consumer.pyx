# distutils: language = c++
# A third-party extension that runs an aoti_cy model without the GIL.
cimport aoti_cy
from aoti_cy cimport AtenTensorHandle, ModelContainer
from libcpp.vector cimport vector


def run_nogil(ModelContainer model, list inputs, int repeats):
    """Run a one-input, one-output model ``repeats`` times in a nogil loop,
    input i being ``inputs[i]``; return the outputs."""
    cdef vector[AtenTensorHandle] handles
    cdef vector[AtenTensorHandle] outputs = vector[AtenTensorHandle](repeats)
    cdef int i
    for i in range(repeats):
        handles.push_back(aoti_cy.handle_from_tensor(inputs[i]))
    try:
        with nogil:
            for i in range(repeats):
                aoti_cy.run_handles(model, &handles[i], 1, &outputs[i], 1, NULL)
                handles[i] = NULL  # consumed (run_handles also NULLs it)
    finally:
        aoti_cy.free_handles(handles.data(), repeats)
    return [aoti_cy.tensor_from_handle(outputs[i]) for i in range(repeats)]


def run_once_nogil(ModelContainer model, list inputs, int num_outputs):
    """One run of a model on ``inputs`` inside ``with nogil:``; return its
    outputs."""
    cdef int n = len(inputs)
    cdef vector[AtenTensorHandle] handles
    cdef vector[AtenTensorHandle] outputs = vector[AtenTensorHandle](num_outputs)
    cdef int i
    for i in range(n):
        handles.push_back(aoti_cy.handle_from_tensor(inputs[i]))
    try:
        with nogil:
            aoti_cy.run_handles(model, handles.data(), n, outputs.data(), num_outputs, NULL)
    finally:
        aoti_cy.free_handles(handles.data(), n)
    return [aoti_cy.tensor_from_handle(outputs[i]) for i in range(num_outputs)]


def versions():
    """(the C API version this consumer was compiled against, the loaded one)."""
    return aoti_cy.AOTI_CY_CAPI_VERSION, aoti_cy.capi_version()
