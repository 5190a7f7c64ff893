# csrc/input_guards.h: a run's inputs checked by the model's own checks.
# Only the extension itself cimports this (the header is not installed):
# the public .pxd files hold a guards pointer as void*.

from aoti_cy.includes.abi cimport AtenTensorHandle, InputCheckFn

cdef extern from "input_guards.h" nogil:
    ctypedef struct AotiCyInputGuards:
        pass

    AotiCyInputGuards* aoti_cy_input_guards_new(const InputCheckFn* checks, size_t n,
                                                int cuda_index)
    void aoti_cy_input_guards_free(AotiCyInputGuards* guards)
    long aoti_cy_check_inputs(
        AotiCyInputGuards* guards, AtenTensorHandle* handles, size_t n,
        char* reason, size_t size)
