# distutils: language = c++
# A run loop through aoti_cy's cimport API, entirely without the GIL: what a
# Cython extension embedding a model pays per call.
cimport aoti_cy
from aoti_cy cimport AtenTensorHandle, ModelContainer
from libcpp.vector cimport vector


def run_loop(ModelContainer model, list inputs, long iters):
    """Run ``model`` ``iters`` times on ``inputs`` inside one nogil block."""
    cdef vector[AtenTensorHandle] templates, handles, outputs
    cdef size_t j, num_inputs = len(inputs), num_outputs = model.num_outputs
    cdef long _
    for tensor in inputs:
        templates.push_back(aoti_cy.handle_from_tensor(tensor))
    handles.resize(num_inputs)
    outputs.resize(num_outputs)
    try:
        with nogil:
            for _ in range(iters):
                for j in range(num_inputs):
                    handles[j] = aoti_cy.new_handle_ref(templates[j])
                aoti_cy.run_handles(model, handles.data(), num_inputs,
                                    outputs.data(), num_outputs, NULL)
                aoti_cy.free_handles(outputs.data(), num_outputs)
    finally:
        aoti_cy.free_handles(templates.data(), num_inputs)
