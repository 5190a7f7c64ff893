# `cimport aoti_cy` gives the public Cython API (see aoti_cy/interface.pxd).
from aoti_cy.includes.abi cimport AtenTensorHandle
from aoti_cy.interface cimport (
    AOTI_CY_CAPI_VERSION, Model, ModelContainer, capi_version, free_handles,
    handle_from_tensor, new_handle_ref, run_handles, tensor_from_handle)
