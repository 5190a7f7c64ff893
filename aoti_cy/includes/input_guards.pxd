# csrc/input_guards.h: a run's inputs checked by the model's own checks,
# and csrc/shape_contract.h: the relations between them.
# Only the extension itself cimports this (the header is not installed):
# the public .pxd files hold a guards pointer as void*.

from aoti_cy.includes.abi cimport AtenTensorHandle, InputCheckFn

from libc.stdint cimport int64_t

cdef extern from "shape_contract.h" nogil:
    ctypedef struct AotiCyShapeContract:
        pass

    AotiCyShapeContract* aoti_cy_shape_contract_new(
        const int64_t* words, size_t length, const char* const* texts, size_t num_texts)
    void aoti_cy_shape_contract_free(AotiCyShapeContract* contract)

cdef extern from "input_guards.h" nogil:
    ctypedef struct AotiCyInputGuards:
        pass

    AotiCyInputGuards* aoti_cy_input_guards_new(const InputCheckFn* checks, size_t n,
                                                const char* const* labels, int cuda_index,
                                                AotiCyShapeContract* contract)
    void aoti_cy_input_guards_free(AotiCyInputGuards* guards)
    long aoti_cy_check_inputs(
        AotiCyInputGuards* guards, AtenTensorHandle* handles, size_t n,
        char* reason, size_t size)
