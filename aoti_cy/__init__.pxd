# `cimport aoti_cy` gives the public Cython API (see aoti_cy/interface.pxd).
from aoti_cy.includes.abi cimport AtenTensorHandle
from aoti_cy.interface cimport (
    ModelContainer, Model, handle_from_tensor, tensor_from_handle,
    new_handle_ref, free_handles)
