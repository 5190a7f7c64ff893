// Our ProxyExecutor: a model's fallback ops run through the c10 dispatcher
// (see proxy_executor.h). Everything that can be checked is checked when a
// node is added; a call checks only what the model passes it.
// (Over 600 lines: the Binder, which matches a serialized node to its op's
// schema, and the executor, which replays what it bound, share the Kernel
// layout and nothing else; split them when either grows.)
#include "proxy_executor.h"

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type.h>
#include <c10/core/Device.h>
#include <torch/csrc/inductor/aoti_torch/proxy_executor.h>

#include <algorithm>
#include <climits>
#include <exception>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <utility>

namespace {

using c10::TypeKind;

// A node that does not fit its op's schema; the message says why.
struct Invalid : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kind_name(int kind) {
  static const char* const names[] = {
      "as_none",   "as_tensor",  "as_tensors",       "as_optional_tensors",
      "as_optional_tensor",      "as_int",           "as_sym_int",
      "as_ints",   "as_sym_ints", "as_float",        "as_floats",
      "as_bool",   "as_bools",   "as_string",        "as_strings",
      "as_scalar_type",          "as_memory_format", "as_layout",
      "as_device"};
  if (kind < 0 || kind >= static_cast<int>(sizeof(names) / sizeof(names[0]))) {
    return "an unknown kind";
  }
  return names[kind];
}

// Export-schema enum values (torch/_export/serde/schema.py) to c10's: the
// serialized numbers are not c10's own.
c10::ScalarType serialized_scalar_type(int64_t value) {
  using S = c10::ScalarType;
  switch (value) {
    case 1: return S::Byte;
    case 2: return S::Char;
    case 3: return S::Short;
    case 4: return S::Int;
    case 5: return S::Long;
    case 6: return S::Half;
    case 7: return S::Float;
    case 8: return S::Double;
    case 9: return S::ComplexHalf;
    case 10: return S::ComplexFloat;
    case 11: return S::ComplexDouble;
    case 12: return S::Bool;
    case 13: return S::BFloat16;
    case 28: return S::UInt16;
    case 29: return S::Float8_e4m3fn;
    case 30: return S::Float8_e5m2;
    case 31: return S::Float8_e4m3fnuz;
    case 32: return S::Float8_e5m2fnuz;
    case 33: return S::Float8_e8m0fnu;
    case 34: return S::UInt32;
    case 35: return S::UInt64;
  }
  throw Invalid("unknown serialized scalar type " + std::to_string(value));
}

c10::Layout serialized_layout(int64_t value) {
  switch (value) {
    case 1: return c10::kSparse;
    case 2: return c10::kSparseCsr;
    case 3: return c10::kSparseCsc;
    case 4: return c10::kSparseBsr;
    case 5: return c10::kSparseBsc;
    case 6: return c10::kMkldnn;
    case 7: return c10::kStrided;
  }
  throw Invalid("unknown serialized layout " + std::to_string(value));
}

c10::MemoryFormat serialized_memory_format(int64_t value) {
  switch (value) {
    case 1: return c10::MemoryFormat::Contiguous;
    case 2: return c10::MemoryFormat::ChannelsLast;
    case 3: return c10::MemoryFormat::ChannelsLast3d;
    case 4: return c10::MemoryFormat::Preserve;
  }
  throw Invalid("unknown serialized memory format " + std::to_string(value));
}

// Where a run's flattened arguments go: in schema order, each takes
// `length` tensors or ints from the model's arrays.
enum class Slot : uint8_t { Tensor, TensorList, OptionalTensorList, Int, IntList };

struct DynamicArg {
  size_t stack_index;
  Slot slot;
  size_t length;
  std::vector<bool> present;  // OptionalTensorList: a tensor (true) or None
};

// What each returned value becomes: tensors written into the model's output
// handles (after the input tensors), an int compared with the one the model
// was compiled for (after the input ints), or nothing.
enum class Out : uint8_t { Skip, Tensor, TensorList, Int };

struct Output {
  Out kind;
  size_t length;
};

struct Kernel {
  Kernel(std::string target_, c10::OperatorHandle op_)
      : target(std::move(target_)), op(std::move(op_)) {}

  std::string target;
  c10::OperatorHandle op;
  std::vector<c10::IValue> stack;  // the constant arguments and defaults
  std::vector<DynamicArg> dynamic;
  std::vector<Output> outputs;
  size_t ints_in = 0, tensors_in = 0, ints_out = 0, tensors_out = 0;
};

inline at::Tensor& tensor_at(AtenTensorHandle handle) {
  return *reinterpret_cast<at::Tensor*>(handle);
}

// Matches serialized arguments to one op's schema, filling a Kernel.
class Binder {
 public:
  Binder(Kernel& kernel, c10::Device device) : k_(kernel), device_(device) {}

  void inputs(const c10::FunctionSchema& schema,
              const std::vector<AotiCyExternArg>& serialized) {
    const auto& args = schema.arguments();
    k_.stack.resize(args.size());
    std::vector<bool> filled(args.size(), false);
    for (const AotiCyExternArg& arg : serialized) {
      size_t i = 0;
      while (i < args.size() && args[i].name() != arg.name) ++i;
      if (i == args.size()) {
        throw Invalid("the op has no argument named '" + arg.name +
                      "' (its schema: " + c10::toString(schema) + ")");
      }
      if (filled[i]) throw Invalid("argument '" + arg.name + "' is given twice");
      filled[i] = true;
      bind(i, args[i].real_type(), arg, arg.name);
    }
    for (size_t i = 0; i < args.size(); ++i) {
      if (filled[i]) continue;
      const auto& fallback = args[i].default_value();
      if (!fallback.has_value()) {
        throw Invalid("argument '" + args[i].name() +
                      "' is missing and has no default value");
      }
      k_.stack[i] = *fallback;
    }
    // The model flattens its arguments in schema order.
    std::stable_sort(k_.dynamic.begin(), k_.dynamic.end(),
                     [](const DynamicArg& a, const DynamicArg& b) {
                       return a.stack_index < b.stack_index;
                     });
  }

  void outputs(const c10::FunctionSchema& schema,
               const std::vector<AotiCyExternArg>& serialized) {
    const auto& returns = schema.returns();
    if (returns.size() != serialized.size()) {
      throw Invalid("the op returns " + std::to_string(returns.size()) +
                    " values but the node describes " +
                    std::to_string(serialized.size()) + " outputs");
    }
    for (size_t i = 0; i < returns.size(); ++i) {
      const c10::TypePtr& type = returns[i].real_type();
      const AotiCyExternArg& out = serialized[i];
      const std::string what = "output " + std::to_string(i);
      const TypeKind kind = type->kind();
      if (kind == TypeKind::TensorType) {
        expect(out, what, type, {AOTI_CY_AS_TENSOR});
        add_output(Out::Tensor, 1);
      } else if (kind == TypeKind::NoneType) {
        expect(out, what, type, {AOTI_CY_AS_NONE});
        add_output(Out::Skip, 0);
      } else if (kind == TypeKind::ListType && element(type)->kind() == TypeKind::TensorType) {
        expect(out, what, type, {AOTI_CY_AS_TENSORS});
        add_output(Out::TensorList, count(out, what));
      } else if (kind == TypeKind::OptionalType &&
                 element(type)->kind() == TypeKind::TensorType) {
        expect(out, what, type, {AOTI_CY_AS_OPTIONAL_TENSOR});
        bool present = one_int(out, what) != 0;
        add_output(present ? Out::Tensor : Out::Skip, present ? 1 : 0);
      } else if (kind == TypeKind::IntType) {
        expect(out, what, type, {AOTI_CY_AS_INT});
        add_output(Out::Int, 1);
      } else {
        throw Invalid(what + " has type " + type->repr_str() +
                      ", which aoti_cy's proxy executor does not support");
      }
    }
  }

 private:
  static c10::TypePtr element(const c10::TypePtr& type) {
    if (type->kind() == TypeKind::ListType) {
      return type->castRaw<c10::ListType>()->getElementType();
    }
    return type->castRaw<c10::OptionalType>()->getElementType();
  }

  static void expect(const AotiCyExternArg& arg, const std::string& what,
                     const c10::TypePtr& type, std::initializer_list<int> kinds) {
    for (int kind : kinds) {
      if (arg.kind == kind) return;
    }
    std::string wanted;
    for (int kind : kinds) {
      wanted += (wanted.empty() ? "" : " or ") + std::string(kind_name(kind));
    }
    throw Invalid(what + " (" + type->repr_str() + ") is serialized as " +
                  kind_name(arg.kind) + ", expected " + wanted);
  }

  static void malformed(const AotiCyExternArg& arg, const std::string& what) {
    throw Invalid(what + ": malformed " + std::string(kind_name(arg.kind)) + " value");
  }

  static int64_t one_int(const AotiCyExternArg& arg, const std::string& what) {
    if (arg.ints.size() != 1) malformed(arg, what);
    return arg.ints[0];
  }

  static double one_float(const AotiCyExternArg& arg, const std::string& what) {
    if (arg.floats.size() != 1) malformed(arg, what);
    return arg.floats[0];
  }

  static const std::string& one_string(const AotiCyExternArg& arg, const std::string& what) {
    if (arg.strings.size() != 1) malformed(arg, what);
    return arg.strings[0];
  }

  static size_t count(const AotiCyExternArg& arg, const std::string& what) {
    // Counts add up into the model's int-typed argument counts.
    if (arg.count < 0 || arg.count > INT_MAX / 4) malformed(arg, what);
    return static_cast<size_t>(arg.count);
  }

  void add_dynamic(size_t index, Slot slot, size_t length, std::vector<bool> present = {}) {
    bool tensors = slot == Slot::Tensor || slot == Slot::TensorList ||
                   slot == Slot::OptionalTensorList;
    (tensors ? k_.tensors_in : k_.ints_in) += length;
    k_.dynamic.push_back({index, slot, length, std::move(present)});
  }

  void add_output(Out kind, size_t length) {
    if (kind == Out::Int) {
      k_.ints_out += length;
    } else {
      k_.tensors_out += length;
    }
    k_.outputs.push_back({kind, length});
  }

  void bind(size_t index, const c10::TypePtr& type, const AotiCyExternArg& arg,
            const std::string& name) {
    const std::string what = "argument '" + name + "'";
    c10::IValue& value = k_.stack[index];
    switch (type->kind()) {
      case TypeKind::OptionalType:
        if (arg.kind == AOTI_CY_AS_NONE) {
          value = c10::IValue();  // the model passes nothing for a None
        } else {
          bind(index, element(type), arg, name);
        }
        return;
      case TypeKind::TensorType:
        expect(arg, what, type, {AOTI_CY_AS_TENSOR});
        add_dynamic(index, Slot::Tensor, 1);
        return;
      case TypeKind::IntType:
      case TypeKind::SymIntType:
        expect(arg, what, type, {AOTI_CY_AS_INT, AOTI_CY_AS_SYM_INT});
        add_dynamic(index, Slot::Int, 1);
        return;
      case TypeKind::NumberType:
        // A Scalar: ints come from the model at run time, floats and
        // bools are constants of the graph.
        expect(arg, what, type,
               {AOTI_CY_AS_INT, AOTI_CY_AS_SYM_INT, AOTI_CY_AS_FLOAT, AOTI_CY_AS_BOOL});
        if (arg.kind == AOTI_CY_AS_FLOAT) {
          value = one_float(arg, what);
        } else if (arg.kind == AOTI_CY_AS_BOOL) {
          value = one_int(arg, what) != 0;
        } else {
          add_dynamic(index, Slot::Int, 1);
        }
        return;
      case TypeKind::FloatType:
        // A float argument is a constant even when written as an int.
        expect(arg, what, type, {AOTI_CY_AS_FLOAT, AOTI_CY_AS_INT});
        value = arg.kind == AOTI_CY_AS_FLOAT ? one_float(arg, what)
                                             : static_cast<double>(one_int(arg, what));
        return;
      case TypeKind::BoolType:
        expect(arg, what, type, {AOTI_CY_AS_BOOL});
        value = one_int(arg, what) != 0;
        return;
      case TypeKind::StringType:
        expect(arg, what, type, {AOTI_CY_AS_STRING});
        value = one_string(arg, what);
        return;
      case TypeKind::ScalarTypeType:
        expect(arg, what, type, {AOTI_CY_AS_SCALAR_TYPE});
        value = serialized_scalar_type(one_int(arg, what));
        return;
      case TypeKind::LayoutType:
        expect(arg, what, type, {AOTI_CY_AS_LAYOUT});
        value = serialized_layout(one_int(arg, what));
        return;
      case TypeKind::MemoryFormatType:
        expect(arg, what, type, {AOTI_CY_AS_MEMORY_FORMAT});
        value = serialized_memory_format(one_int(arg, what));
        return;
      case TypeKind::DeviceObjType: {
        expect(arg, what, type, {AOTI_CY_AS_DEVICE});
        c10::DeviceType device_type = c10::Device(one_string(arg, what)).type();
        int64_t device_index = one_int(arg, what);
        if (device_index < -1 || device_index > 127) malformed(arg, what);
        // The model's own device where the types agree: a package compiled
        // for cuda:0 and loaded on cuda:1 runs its ops on cuda:1.
        value = device_type == device_.type()
                    ? device_
                    : c10::Device(device_type, static_cast<c10::DeviceIndex>(device_index));
        return;
      }
      case TypeKind::ListType:
        bind_list(index, type, arg, what);
        return;
      default:
        throw Invalid(what + " has type " + type->repr_str() +
                      ", which aoti_cy's proxy executor does not support");
    }
  }

  void bind_list(size_t index, const c10::TypePtr& type, const AotiCyExternArg& arg,
                 const std::string& what) {
    const c10::TypePtr item = element(type);
    c10::IValue& value = k_.stack[index];
    switch (item->kind()) {
      case TypeKind::TensorType:
        expect(arg, what, type, {AOTI_CY_AS_TENSORS});
        add_dynamic(index, Slot::TensorList, count(arg, what));
        return;
      case TypeKind::OptionalType:
        if (element(item)->kind() != TypeKind::TensorType) break;
        expect(arg, what, type, {AOTI_CY_AS_OPTIONAL_TENSORS, AOTI_CY_AS_TENSORS});
        if (arg.kind == AOTI_CY_AS_TENSORS) {
          size_t n = count(arg, what);
          add_dynamic(index, Slot::OptionalTensorList, n, std::vector<bool>(n, true));
        } else {
          if (arg.ints.size() > static_cast<size_t>(INT_MAX / 4)) malformed(arg, what);
          std::vector<bool> present;
          for (int64_t flag : arg.ints) present.push_back(flag != 0);
          size_t n = static_cast<size_t>(std::count(present.begin(), present.end(), true));
          add_dynamic(index, Slot::OptionalTensorList, n, std::move(present));
        }
        return;
      case TypeKind::IntType:
        expect(arg, what, type, {AOTI_CY_AS_INTS});
        add_dynamic(index, Slot::IntList, count(arg, what));
        return;
      case TypeKind::SymIntType:
        expect(arg, what, type, {AOTI_CY_AS_INTS, AOTI_CY_AS_SYM_INTS});
        add_dynamic(index, Slot::IntList, count(arg, what));
        return;
      case TypeKind::NumberType:
        expect(arg, what, type, {AOTI_CY_AS_INTS, AOTI_CY_AS_FLOATS, AOTI_CY_AS_BOOLS});
        if (arg.kind == AOTI_CY_AS_INTS) {
          add_dynamic(index, Slot::IntList, count(arg, what));
        } else if (arg.kind == AOTI_CY_AS_FLOATS) {
          value = arg.floats;
        } else {
          value = bools(arg);
        }
        return;
      case TypeKind::FloatType:
        expect(arg, what, type, {AOTI_CY_AS_FLOATS});
        value = arg.floats;
        return;
      case TypeKind::BoolType:
        expect(arg, what, type, {AOTI_CY_AS_BOOLS});
        value = bools(arg);
        return;
      case TypeKind::StringType:
        expect(arg, what, type, {AOTI_CY_AS_STRINGS});
        value = arg.strings;
        return;
      default:
        break;
    }
    throw Invalid(what + " has type " + type->repr_str() +
                  ", which aoti_cy's proxy executor does not support");
  }

  static c10::List<bool> bools(const AotiCyExternArg& arg) {
    c10::List<bool> list;
    list.reserve(arg.ints.size());
    for (int64_t flag : arg.ints) list.push_back(flag != 0);
    return list;
  }

  Kernel& k_;
  c10::Device device_;
};

// The reason the last call failed, per thread: read back by the thread that
// ran the model, which only learns that the call failed.
thread_local const AotiCyProxyExecutor* failed_executor = nullptr;
thread_local std::string failure_reason;

}  // namespace

struct AotiCyProxyExecutor final : public torch::aot_inductor::ProxyExecutor {
  explicit AotiCyProxyExecutor(c10::Device device_) : device(device_) {}

  void call_function(int extern_node_index, int num_ints, int64_t* flatten_int_args,
                     int num_tensors, AtenTensorHandle* flatten_tensor_args) override {
    try {
      call(extern_node_index, num_ints, flatten_int_args, num_tensors, flatten_tensor_args);
    } catch (const c10::Error& e) {
      fail(extern_node_index, e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(extern_node_index, e.what());
    }
  }

  [[noreturn]] void fail(int index, const char* why) const {
    std::string message = "aoti_cy proxy executor: extern node " + std::to_string(index);
    if (index >= 0 && static_cast<size_t>(index) < kernels.size()) {
      message += " (" + kernels[index].target + ")";
    }
    message += " failed: ";
    message += why;
    if (failed_executor != this) {  // keep the first failure of a run: its cause
      failed_executor = this;
      failure_reason = message;
    }
    throw std::runtime_error(message);
  }

  void call(int index, int num_ints, int64_t* ints, int num_tensors,
            AtenTensorHandle* tensors) const {
    if (index < 0 || static_cast<size_t>(index) >= kernels.size()) {
      throw std::runtime_error("no such node: the package's .json describes " +
                               std::to_string(kernels.size()) + " nodes");
    }
    const Kernel& k = kernels[index];
    const size_t want_ints = k.ints_in + k.ints_out;
    const size_t want_tensors = k.tensors_in + k.tensors_out;
    // Nothing is read from the model's arrays before their lengths are known good.
    if (num_ints < 0 || num_tensors < 0 || static_cast<size_t>(num_ints) != want_ints ||
        static_cast<size_t>(num_tensors) != want_tensors) {
      throw std::runtime_error(
          "the model passed " + std::to_string(num_ints) + " ints and " +
          std::to_string(num_tensors) + " tensors, the node's serialized arguments take " +
          std::to_string(want_ints) + " and " + std::to_string(want_tensors) +
          ": the package's .json does not match its model");
    }
    if ((want_ints > 0 && ints == nullptr) || (want_tensors > 0 && tensors == nullptr)) {
      throw std::runtime_error("the model passed a NULL argument array");
    }
    for (size_t i = 0; i < want_tensors; ++i) {
      if (tensors[i] == nullptr) {
        throw std::runtime_error("the model passed a NULL tensor handle");
      }
    }

    std::vector<c10::IValue> stack(k.stack);
    size_t t = 0, n = 0;
    for (const DynamicArg& arg : k.dynamic) {
      c10::IValue& value = stack[arg.stack_index];
      switch (arg.slot) {
        case Slot::Tensor:
          value = tensor_at(tensors[t++]);
          break;
        case Slot::Int:
          value = ints[n++];
          break;
        case Slot::TensorList: {
          c10::List<at::Tensor> list;
          list.reserve(arg.length);
          for (size_t j = 0; j < arg.length; ++j) list.push_back(tensor_at(tensors[t++]));
          value = std::move(list);
          break;
        }
        case Slot::OptionalTensorList: {
          c10::List<std::optional<at::Tensor>> list;
          list.reserve(arg.present.size());
          for (bool present : arg.present) {
            list.push_back(present ? std::optional<at::Tensor>(tensor_at(tensors[t++]))
                                   : std::nullopt);
          }
          value = std::move(list);
          break;
        }
        case Slot::IntList:
          value = std::vector<int64_t>(ints + n, ints + n + arg.length);
          n += arg.length;
          break;
      }
    }

    k.op.callBoxed(stack);

    if (stack.size() != k.outputs.size()) {
      throw std::runtime_error("the op returned " + std::to_string(stack.size()) +
                               " values, its schema " + std::to_string(k.outputs.size()));
    }
    for (size_t i = 0; i < k.outputs.size(); ++i) {
      const Output& out = k.outputs[i];
      c10::IValue& value = stack[i];
      switch (out.kind) {
        case Out::Skip:
          break;
        case Out::Tensor:
          if (!value.isTensor() || !value.toTensor().defined()) {
            throw std::runtime_error("output " + std::to_string(i) +
                                     " is not a tensor (got " + value.tagKind() + ")");
          }
          tensor_at(tensors[t++]) = std::move(value).toTensor();
          break;
        case Out::TensorList: {
          if (!value.isTensorList() || value.toTensorList().size() != out.length) {
            throw std::runtime_error("output " + std::to_string(i) + " is not a list of " +
                                     std::to_string(out.length) + " tensors");
          }
          c10::List<at::Tensor> list = std::move(value).toTensorList();
          for (size_t j = 0; j < out.length; ++j) {
            at::Tensor item = list.get(j);
            if (!item.defined()) {
              throw std::runtime_error("output " + std::to_string(i) +
                                       " holds an undefined tensor");
            }
            tensor_at(tensors[t++]) = std::move(item);
          }
          break;
        }
        case Out::Int:
          // The model was compiled for this value; it must not change.
          if (!value.isInt() || value.toInt() != ints[n]) {
            throw std::runtime_error(
                "output " + std::to_string(i) + " should be the int " +
                std::to_string(ints[n]) + " the model was compiled for");
          }
          ++n;
          break;
      }
    }
  }

  c10::Device device;
  std::vector<Kernel> kernels;
};

AotiCyProxyExecutor* aoti_cy_proxy_executor_new(int device_type, int device_index) {
  try {
    return new AotiCyProxyExecutor(
        c10::Device(static_cast<c10::DeviceType>(device_type),
                    static_cast<c10::DeviceIndex>(device_index)));
  } catch (const std::exception&) {
    return nullptr;
  }
}

void aoti_cy_proxy_executor_free(AotiCyProxyExecutor* executor) {
  delete executor;
}

int aoti_cy_proxy_executor_add_node(AotiCyProxyExecutor* executor,
                                    const AotiCyExternNode& node, std::string* error) {
  try {
    auto op = c10::Dispatcher::singleton().findSchema({node.op_name, node.overload});
    if (!op.has_value()) {
      *error = "no operator " + node.target + " is registered in this process";
      return AOTI_CY_NODE_UNKNOWN_OP;
    }
    const c10::FunctionSchema& schema = op->schema();
    if (schema.is_vararg() || schema.is_varret()) {
      throw Invalid("ops with variable arguments are not supported");
    }
    Kernel kernel(node.target, *op);
    Binder binder(kernel, executor->device);
    binder.inputs(schema, node.inputs);
    binder.outputs(schema, node.outputs);
    executor->kernels.push_back(std::move(kernel));
    return AOTI_CY_NODE_ADDED;
  } catch (const c10::Error& e) {
    *error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    *error = e.what();
  }
  return AOTI_CY_NODE_INVALID;
}

void* aoti_cy_proxy_executor_handle(AotiCyProxyExecutor* executor) {
  return static_cast<torch::aot_inductor::ProxyExecutor*>(executor);
}

int aoti_cy_proxy_executor_failed(const void* handle) noexcept {
  return failed_executor != nullptr &&
         static_cast<const void*>(static_cast<const torch::aot_inductor::ProxyExecutor*>(
             failed_executor)) == handle;
}

std::string aoti_cy_proxy_executor_take_error(const AotiCyProxyExecutor* executor) {
  if (failed_executor != executor) return std::string();
  failed_executor = nullptr;
  return std::move(failure_reason);
}
