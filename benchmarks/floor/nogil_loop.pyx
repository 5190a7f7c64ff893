# A run loop through aoti_cy's cimport API, entirely without the GIL: what a
# Cython extension embedding a model pays per call.
cimport aoti_cy
from libc.stdlib cimport calloc, free


def run_loop(model, list inputs, long iters):
    """Run ``model`` ``iters`` times on ``inputs`` inside one nogil block."""
    cdef aoti_cy.Container* container = aoti_cy.container_of(model)
    cdef size_t j, num_inputs = len(inputs), num_outputs = aoti_cy.num_outputs(container)
    cdef aoti_cy.AtenTensorHandle* templates = <aoti_cy.AtenTensorHandle*>calloc(
        3 * (num_inputs + num_outputs) + 1, sizeof(aoti_cy.AtenTensorHandle))
    cdef aoti_cy.AtenTensorHandle* handles = templates + num_inputs
    cdef aoti_cy.AtenTensorHandle* outputs = handles + num_inputs
    cdef long _
    if templates == NULL:
        raise MemoryError()
    try:
        for j in range(num_inputs):
            templates[j] = aoti_cy.handle_from_tensor(inputs[j])
        with nogil:
            for _ in range(iters):
                for j in range(num_inputs):
                    handles[j] = aoti_cy.new_handle_ref(templates[j])
                aoti_cy.run_handles(container, handles, num_inputs,
                                    outputs, num_outputs, NULL)
                aoti_cy.free_handles(outputs, num_outputs)
    finally:
        aoti_cy.free_handles(templates, num_inputs)
        free(templates)
