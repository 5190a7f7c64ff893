# What every call checks before it reaches a model: the input sequence, the
# stream, and the model's own per-input checks (csrc/input_guards.cpp, built
# into this module only). Shared by ModelContainer and Model.

from aoti_cy.includes.abi cimport AtenTensorHandle
from aoti_cy._library cimport ModelLibrary

cdef object input_sequence(object inputs, size_t expected, tuple names)
cdef void* stream_pointer(object stream, object device) except? NULL
cdef void* input_guards_for(ModelLibrary library, size_t num_inputs, int cuda_index) except? NULL
cdef void free_input_guards(void* guards) noexcept nogil
cdef int check_input_handles(void* guards, AtenTensorHandle* handles, size_t n,
                             tuple names) except -1 nogil
