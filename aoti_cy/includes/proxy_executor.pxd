# csrc/proxy_executor.h: our torch::aot_inductor::ProxyExecutor, built from
# decoded extern nodes. Only aoti_cy._proxy_executor cimports this.

from libc.stdint cimport int64_t
from libcpp.string cimport string
from libcpp.vector cimport vector

cdef extern from "proxy_executor.h":
    enum AotiCyArgKind:
        AOTI_CY_AS_NONE
        AOTI_CY_AS_TENSOR
        AOTI_CY_AS_TENSORS
        AOTI_CY_AS_OPTIONAL_TENSORS
        AOTI_CY_AS_OPTIONAL_TENSOR
        AOTI_CY_AS_INT
        AOTI_CY_AS_SYM_INT
        AOTI_CY_AS_INTS
        AOTI_CY_AS_SYM_INTS
        AOTI_CY_AS_FLOAT
        AOTI_CY_AS_FLOATS
        AOTI_CY_AS_BOOL
        AOTI_CY_AS_BOOLS
        AOTI_CY_AS_STRING
        AOTI_CY_AS_STRINGS
        AOTI_CY_AS_SCALAR_TYPE
        AOTI_CY_AS_MEMORY_FORMAT
        AOTI_CY_AS_LAYOUT
        AOTI_CY_AS_DEVICE

    enum:
        AOTI_CY_NODE_ADDED
        AOTI_CY_NODE_UNKNOWN_OP
        AOTI_CY_NODE_INVALID

    cppclass AotiCyExternArg:
        string name
        int kind
        int64_t count
        vector[int64_t] ints
        vector[double] floats
        vector[string] strings

    cppclass AotiCyExternNode:
        string target
        string op_name
        string overload
        vector[AotiCyExternArg] inputs
        vector[AotiCyExternArg] outputs

    cppclass AotiCyProxyExecutor:
        pass

    AotiCyProxyExecutor* aoti_cy_proxy_executor_new(int device_type, int device_index)
    void aoti_cy_proxy_executor_free(AotiCyProxyExecutor* executor) nogil
    int aoti_cy_proxy_executor_add_node(
        AotiCyProxyExecutor* executor, const AotiCyExternNode& node, string* error)
    void* aoti_cy_proxy_executor_handle(AotiCyProxyExecutor* executor)
    string aoti_cy_proxy_executor_take_error(const AotiCyProxyExecutor* executor)
    int aoti_cy_proxy_executor_failed(const void* handle) noexcept nogil
