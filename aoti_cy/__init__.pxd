# `cimport aoti_cy` gives the public Cython API (see aoti_cy/capi.pxd).
from aoti_cy.includes.handles cimport AtenTensorHandle
from aoti_cy.capi cimport (
    AOTI_CY_CAPI_VERSION, Container, capi_version, container_of, free_handles,
    handle_from_tensor, new_handle_ref, num_inputs, num_outputs, run_handles,
    tensor_from_handle)
