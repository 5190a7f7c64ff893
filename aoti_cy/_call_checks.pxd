# What every call checks before it reaches a model: the input sequence, the
# model's shape contract and its own per-input checks
# (csrc/shape_contract.cpp and csrc/input_guards.cpp, built into this module
# only). Shared by ModelContainer and Model.

from aoti_cy.includes.abi cimport AtenTensorHandle
from aoti_cy._library cimport ModelLibrary

cdef object input_sequence(object inputs, size_t expected, tuple names)
cdef void* input_guards_for(ModelLibrary library, size_t num_inputs, int cuda_index,
                            tuple names, object call_spec_text) except? NULL
cdef void free_input_guards(void* guards) noexcept nogil
cdef int check_input_handles(void* guards, AtenTensorHandle* handles,
                             size_t n) except -1 nogil
