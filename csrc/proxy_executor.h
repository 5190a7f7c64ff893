/* A proxy executor: runs the model's fallback ops (custom ops, aten ops
 * without a C shim) through the c10 dispatcher.
 *
 * A model calls `aoti_torch_proxy_executor_call_function(handle, node, ...)`
 * for each such op; libtorch casts the handle to
 * `torch::aot_inductor::ProxyExecutor*` and calls its virtual
 * `call_function`. Ours is defined in proxy_executor.cpp (the only place that
 * sees torch's headers); this header describes the ops to it.
 *
 * The package's `.json` of extern nodes is decoded in Python
 * (aoti_cy/_extern_nodes.py) into AotiCyExternNode values, each added once at
 * load: the op is looked up in the dispatcher, every argument matched to its
 * schema, the constant part of the stack built, and the places of the run's
 * flattened int and tensor arguments worked out. A run only fills those in.
 */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

/* One serialized argument or output: its JSON kind ("as_tensor", ...) as an
 * enum, and the values that kind carries. */
enum AotiCyArgKind {
  AOTI_CY_AS_NONE = 0,
  AOTI_CY_AS_TENSOR,            /* no payload */
  AOTI_CY_AS_TENSORS,           /* count */
  AOTI_CY_AS_OPTIONAL_TENSORS,  /* ints: 1 where a tensor, 0 where None */
  AOTI_CY_AS_OPTIONAL_TENSOR,   /* outputs only; ints: {1} tensor, {0} None */
  AOTI_CY_AS_INT,               /* ints: {value} */
  AOTI_CY_AS_SYM_INT,           /* ints: {value} when known */
  AOTI_CY_AS_INTS,              /* ints: the values; count */
  AOTI_CY_AS_SYM_INTS,          /* count */
  AOTI_CY_AS_FLOAT,             /* floats: {value} */
  AOTI_CY_AS_FLOATS,            /* floats */
  AOTI_CY_AS_BOOL,              /* ints: {0 or 1} */
  AOTI_CY_AS_BOOLS,             /* ints */
  AOTI_CY_AS_STRING,            /* strings: {value} */
  AOTI_CY_AS_STRINGS,           /* strings */
  AOTI_CY_AS_SCALAR_TYPE,       /* ints: {export-schema ScalarType} */
  AOTI_CY_AS_MEMORY_FORMAT,     /* ints: {export-schema MemoryFormat} */
  AOTI_CY_AS_LAYOUT,            /* ints: {export-schema Layout} */
  AOTI_CY_AS_DEVICE,            /* strings: {type}; ints: {index or -1} */
};

struct AotiCyExternArg {
  std::string name;  /* the schema argument's name (inputs only) */
  int kind = AOTI_CY_AS_NONE;
  int64_t count = 0;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
};

struct AotiCyExternNode {
  std::string target;     /* as serialized, for messages: "ns::op.overload" */
  std::string op_name;    /* "ns::op" */
  std::string overload;   /* "" for the default overload */
  std::vector<AotiCyExternArg> inputs;
  std::vector<AotiCyExternArg> outputs;
};

/* Our torch::aot_inductor::ProxyExecutor subclass, opaque here. */
struct AotiCyProxyExecutor;

/* What adding a node gave. */
enum {
  AOTI_CY_NODE_ADDED = 0,
  AOTI_CY_NODE_UNKNOWN_OP = 1,  /* no such operator in this process */
  AOTI_CY_NODE_INVALID = 2,     /* does not fit the op's schema; see error */
};

/* A new executor without nodes, for a model on device (type, index) with
 * AOTI_CY_DEVICE_* types (see tensor_bridge.h); NULL if out of memory. */
AotiCyProxyExecutor* aoti_cy_proxy_executor_new(int device_type, int device_index);
void aoti_cy_proxy_executor_free(AotiCyProxyExecutor* executor);

/* Appends `node` as the next extern node index. Never throws: on failure
 * returns UNKNOWN_OP or INVALID with the reason in `error` and adds nothing
 * (the executor is then to be freed: later indices would be off by one). */
int aoti_cy_proxy_executor_add_node(AotiCyProxyExecutor* executor,
                                    const AotiCyExternNode& node, std::string* error);

/* The address of its torch::aot_inductor::ProxyExecutor base: the
 * AOTIProxyExecutorHandle a model takes. */
void* aoti_cy_proxy_executor_handle(AotiCyProxyExecutor* executor);

/* Whether a call of the executor with this handle failed on this thread
 * since its error was last taken. A model that does not check the call's
 * status (torch 2.11's) goes on and may report success: its run is a failure
 * all the same. Needs no GIL. */
int aoti_cy_proxy_executor_failed(const void* handle) noexcept;

/* Why this executor's first failed call on this thread failed, then forgotten: the
 * model reports only that the call failed, and this names the op. Empty when
 * none failed since the last take. */
std::string aoti_cy_proxy_executor_take_error(const AotiCyProxyExecutor* executor);
