// The shape contract: see shape_contract.h.
#include "shape_contract.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "dtype_names.h"

namespace {

constexpr int64_t kNoLimit = -1;
constexpr size_t kStackDepth = 32;
constexpr size_t kInlineSymbols = 64;

struct Program {
  std::vector<std::pair<int64_t, int64_t>> ops;
  std::string text;
  // Most programs are one constant or one symbol: read without the stack
  // machine (set by finish()).
  enum Shape { kEmpty, kConstant, kSymbol, kGeneral } shape = kEmpty;
  int64_t operand = 0;
  void finish() {
    shape = ops.empty() ? kEmpty : ops.size() > 1 ? kGeneral
            : ops[0].first == AOTI_CY_OP_CONST ? kConstant
            : ops[0].first == AOTI_CY_OP_SYMBOL ? kSymbol : kGeneral;
    operand = ops.empty() ? 0 : ops[0].second;
  }
  // The slot of a program that is one symbol, else -1.
  int64_t lone_symbol() const { return shape == kSymbol ? operand : -1; }
  bool constant() const { return shape == kConstant; }
};

struct Dim {
  Program size;
  Program stride;
  int64_t low = 0;          // bounds the symbols' ranges do not imply
  int64_t high = kNoLimit;
};

struct Input {
  bool covered = false;
  int64_t dtype = -1;        // c10::ScalarType, -1: unknown
  caffe2::TypeMeta meta;     // the same, as tensors hold it
  int64_t device_type = -1;  // c10::DeviceType, -1: unknown
  std::vector<Dim> dims;
  std::string label;
};

struct Binding {
  int64_t symbol, kind, input, dim, p, q, d;
};

bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Evaluates `program` over `symbols`; false when it cannot (overflow,
// division by zero, a malformed program).
bool evaluate(const Program& program, const int64_t* symbols, size_t num_symbols,
              int64_t* result) {
  int64_t stack[kStackDepth];
  size_t top = 0;
  for (const auto& [op, argument] : program.ops) {
    if (op == AOTI_CY_OP_CONST || op == AOTI_CY_OP_SYMBOL) {
      if (top == kStackDepth) return false;
      if (op == AOTI_CY_OP_SYMBOL &&
          (argument < 0 || static_cast<size_t>(argument) >= num_symbols)) {
        return false;
      }
      stack[top++] = op == AOTI_CY_OP_CONST ? argument : symbols[argument];
      continue;
    }
    if (op == AOTI_CY_OP_NEG) {
      if (top < 1 || stack[top - 1] == INT64_MIN) return false;
      stack[top - 1] = -stack[top - 1];
      continue;
    }
    if (top < 2) return false;
    const int64_t b = stack[--top];
    int64_t& a = stack[top - 1];
    switch (op) {
      case AOTI_CY_OP_ADD:
        if (!checked_add(a, b, &a)) return false;
        break;
      case AOTI_CY_OP_SUB:
        if (__builtin_sub_overflow(a, b, &a)) return false;
        break;
      case AOTI_CY_OP_MUL:
        if (!checked_mul(a, b, &a)) return false;
        break;
      case AOTI_CY_OP_FLOORDIV:
        if (b == 0 || (a == INT64_MIN && b == -1)) return false;
        a = floor_div(a, b);
        break;
      case AOTI_CY_OP_MOD:
        if (b == 0 || (a == INT64_MIN && b == -1)) return false;
        a = a % b;  // C++'s %, as the model computes it
        break;
      case AOTI_CY_OP_MAX:
        a = std::max(a, b);
        break;
      case AOTI_CY_OP_MIN:
        a = std::min(a, b);
        break;
      default:
        return false;
    }
  }
  if (top != 1) return false;
  *result = stack[0];
  return true;
}

// evaluate(), with the common shapes inline.
inline bool value_of(const Program& program, const int64_t* symbols, size_t num_symbols,
                     int64_t* result) {
  if (program.shape == Program::kConstant) {
    *result = program.operand;
    return true;
  }
  if (program.shape == Program::kSymbol && static_cast<size_t>(program.operand) < num_symbols) {
    *result = symbols[program.operand];
    return true;
  }
  return evaluate(program, symbols, num_symbols, result);
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

}  // namespace

struct AotiCyShapeContract {
  std::vector<std::pair<int64_t, int64_t>> ranges;  // per symbol: low, high
  std::vector<std::string> symbol_names;
  std::vector<Binding> bindings;
  std::vector<Input> inputs;

  // The binding that gives `symbol` its value from a tensor, following
  // aliases; nullptr when none does.
  const Binding* source_of(int64_t symbol) const {
    for (int hops = 0; hops < 64; ++hops) {
      const Binding* found = nullptr;
      for (const Binding& b : bindings) {
        if (b.symbol == symbol) found = &b;
      }
      if (found == nullptr || found->kind != AOTI_CY_FROM_SYMBOL) return found;
      symbol = found->input;
    }
    return nullptr;
  }

  // "input 0 ('input_ids') dim 1": where a binding reads its value.
  std::string where(const Binding& b) const { return inputs[b.input].label + " " + local(b); }
  static std::string local(const Binding& b) {
    return (b.kind == AOTI_CY_FROM_SIZE ? "dim " : "stride ") + std::to_string(b.dim);
  }
  // How every refusal of an input starts.
  static std::string misfit(const Input& input) {
    return input.label + " does not fit the model: ";
  }

  // Whether the handles fit, computing no message: the path of every call.
  bool fits(AtenTensorOpaque** handles, size_t n, int64_t* symbols) const noexcept;
  // Why they do not fit ("" if they do), once fits() said no.
  std::string check(AtenTensorOpaque** handles, size_t n, int64_t* symbols,
                    size_t* failed) const;
  std::string check_input_kind(size_t i, const at::Tensor& t) const;
  std::string bind(AtenTensorOpaque** handles, size_t n, int64_t* symbols,
                   size_t* failed) const;
  std::string check_dims(size_t i, const at::Tensor& t, const int64_t* symbols) const;
  std::string symbols_of(const Program& program, const int64_t* symbols) const;
};

namespace {

const at::Tensor& tensor_at(AtenTensorOpaque** handles, size_t i) {
  return *reinterpret_cast<at::Tensor*>(handles[i]);
}

}  // namespace

bool AotiCyShapeContract::fits(AtenTensorOpaque** handles, size_t n,
                               int64_t* symbols) const noexcept {
  const size_t count = std::min(n, inputs.size());
  const size_t num_symbols = ranges.size();
  for (size_t i = 0; i < count; ++i) {
    const Input& spec = inputs[i];
    if (!spec.covered) continue;
    const c10::TensorImpl* t = tensor_at(handles, i).unsafeGetTensorImpl();
    if (t->dim() != static_cast<int64_t>(spec.dims.size()) ||
        (spec.dtype >= 0 && t->dtype() != spec.meta) ||
        (spec.device_type >= 0 && static_cast<int64_t>(t->device_type()) != spec.device_type)) {
      return false;
    }
  }
  for (const Binding& b : bindings) {
    int64_t value = 0;
    if (b.kind == AOTI_CY_FROM_SYMBOL) {
      value = symbols[b.input];
    } else {
      if (static_cast<size_t>(b.input) >= count) continue;
      const c10::TensorImpl* t = tensor_at(handles, b.input).unsafeGetTensorImpl();
      if (b.dim >= t->dim()) return false;
      value = b.kind == AOTI_CY_FROM_SIZE ? t->sizes()[b.dim] : t->strides()[b.dim];
    }
    int64_t numerator = value;
    if (b.p != 1 || b.q != 0 || b.d != 1) {
      if (!checked_mul(b.p, value, &numerator) || !checked_add(numerator, b.q, &numerator) ||
          numerator % b.d != 0) {
        return false;
      }
      numerator /= b.d;
    }
    symbols[b.symbol] = numerator;
    if (b.kind != AOTI_CY_FROM_SYMBOL) {
      const auto [low, high] = ranges[b.symbol];
      if (numerator < low || (high != kNoLimit && numerator > high)) return false;
    }
  }
  for (size_t i = 0; i < count; ++i) {
    const Input& spec = inputs[i];
    if (!spec.covered) continue;
    const c10::TensorImpl* t = tensor_at(handles, i).unsafeGetTensorImpl();
    const int64_t* sizes = t->sizes().data();
    const size_t ndim = spec.dims.size();
    for (size_t d = 0; d < ndim; ++d) {
      const Dim& dim = spec.dims[d];
      int64_t want = 0;
      if (sizes[d] < dim.low || (dim.high != kNoLimit && sizes[d] > dim.high)) return false;
      if (dim.size.shape != Program::kEmpty &&
          (!value_of(dim.size, symbols, num_symbols, &want) || want != sizes[d])) {
        return false;
      }
    }
    if (t->numel() == 0) continue;
    const int64_t* strides = t->strides().data();
    for (size_t d = 0; d < ndim; ++d) {
      const Dim& dim = spec.dims[d];
      int64_t want = 0;
      if (dim.stride.shape == Program::kEmpty || sizes[d] <= 1) continue;
      if (!value_of(dim.stride, symbols, num_symbols, &want) || want != strides[d]) {
        return false;
      }
    }
  }
  return true;
}

std::string AotiCyShapeContract::check_input_kind(size_t i, const at::Tensor& t) const {
  const Input& spec = inputs[i];
  if (t.dim() != static_cast<int64_t>(spec.dims.size())) {
    return misfit(spec) + "it has " + std::to_string(t.dim()) + " dimensions, the model expects " +
           std::to_string(spec.dims.size()) + " (got " + aoti_cy_describe_tensor(t) + ")";
  }
  if (spec.dtype >= 0 && static_cast<int64_t>(t.scalar_type()) != spec.dtype) {
    return misfit(spec) + "it has dtype " + aoti_cy_dtype_name(t.scalar_type()) +
           ", the model expects " +
           aoti_cy_dtype_name(static_cast<c10::ScalarType>(spec.dtype));
  }
  if (spec.device_type >= 0 && static_cast<int64_t>(t.device().type()) != spec.device_type) {
    return misfit(spec) + "it is on " + t.device().str() + ", the model expects a " +
           c10::DeviceTypeName(static_cast<c10::DeviceType>(spec.device_type)) + " tensor";
  }
  return "";
}

std::string AotiCyShapeContract::bind(AtenTensorOpaque** handles, size_t n, int64_t* symbols,
                                      size_t* failed) const {
  for (const Binding& b : bindings) {
    int64_t value = 0;
    if (b.kind == AOTI_CY_FROM_SYMBOL) {
      value = symbols[b.input];
    } else {
      if (b.input < 0 || static_cast<size_t>(b.input) >= n) continue;
      const at::Tensor& t = tensor_at(handles, b.input);
      if (b.dim >= t.dim()) {
        *failed = b.input;
        return misfit(inputs[b.input]) + "it has " + std::to_string(t.dim()) +
               " dimensions, the model reads its dim " + std::to_string(b.dim);
      }
      value = b.kind == AOTI_CY_FROM_SIZE ? t.sizes()[b.dim] : t.strides()[b.dim];
    }
    int64_t numerator = 0;
    if (!checked_mul(b.p, value, &numerator) || !checked_add(numerator, b.q, &numerator) ||
        b.d <= 0 || numerator % b.d != 0) {
      *failed = b.kind == AOTI_CY_FROM_SYMBOL ? 0 : b.input;
      const Binding* origin = b.kind == AOTI_CY_FROM_SYMBOL ? source_of(b.input) : &b;
      std::string text = "the value of " + quoted(symbol_names[b.symbol]);
      if (origin != nullptr && origin->kind == AOTI_CY_FROM_SIZE) {
        const Dim& dim = inputs[origin->input].dims.size() > static_cast<size_t>(origin->dim)
                             ? inputs[origin->input].dims[origin->dim]
                             : Dim();
        text = misfit(inputs[origin->input]) + local(*origin) + " is " + std::to_string(value) + ", which is not " +
               (dim.size.text.empty() ? "a valid size" : dim.size.text) + " for any whole " +
               quoted(symbol_names[b.symbol]);
        *failed = origin->input;
      }
      return text;
    }
    symbols[b.symbol] = numerator / b.d;
    if (b.kind == AOTI_CY_FROM_SYMBOL) continue;
    const auto [low, high] = ranges[b.symbol];
    const int64_t got = symbols[b.symbol];
    if (got < low || (high != kNoLimit && got > high)) {
      *failed = b.input;
      const std::string limit = got < low ? "below the model's minimum of " +
                                                std::to_string(low)
                                          : "above the model's maximum of " +
                                                std::to_string(high);
      const Dim* dim = b.kind == AOTI_CY_FROM_SIZE &&
                               static_cast<size_t>(b.dim) < inputs[b.input].dims.size()
                           ? &inputs[b.input].dims[b.dim]
                           : nullptr;
      if (dim != nullptr && dim->size.lone_symbol() == b.symbol) {
        return misfit(inputs[b.input]) + local(b) + " is " + std::to_string(value) + ", " + limit + " (" +
               quoted(symbol_names[b.symbol]) + ")";
      }
      return misfit(inputs[b.input]) + local(b) + " is " + std::to_string(value) + ", so " +
             quoted(symbol_names[b.symbol]) + " is " + std::to_string(got) + ", " + limit;
    }
  }
  return "";
}

std::string AotiCyShapeContract::symbols_of(const Program& program,
                                            const int64_t* symbols) const {
  std::string text;
  std::vector<int64_t> seen;
  for (const auto& [op, argument] : program.ops) {
    if (op != AOTI_CY_OP_SYMBOL ||
        std::find(seen.begin(), seen.end(), argument) != seen.end()) {
      continue;
    }
    seen.push_back(argument);
    text += text.empty() ? " (" : ", ";
    text += symbol_names[argument] + " = " + std::to_string(symbols[argument]);
    if (const Binding* origin = source_of(argument)) {
      text += " from " + where(*origin);
      const std::vector<Dim>& dims = inputs[origin->input].dims;
      if (origin->kind == AOTI_CY_FROM_SIZE && static_cast<size_t>(origin->dim) < dims.size() &&
          dims[origin->dim].size.lone_symbol() != argument && !dims[origin->dim].size.text.empty()) {
        text += ", which is " + dims[origin->dim].size.text;
      }
    }
  }
  return text.empty() ? text : text + ")";
}

std::string AotiCyShapeContract::check_dims(size_t i, const at::Tensor& t,
                                            const int64_t* symbols) const {
  const Input& spec = inputs[i];
  const int64_t* sizes = t.sizes().data();
  const size_t num_symbols = ranges.size();
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    const Dim& dim = spec.dims[d];
    int64_t want = 0;
    if (sizes[d] < dim.low) {
      return misfit(spec) + "dim " + std::to_string(d) + " is " + std::to_string(sizes[d]) +
             ", below the model's minimum of " + std::to_string(dim.low);
    }
    if (dim.high != kNoLimit && sizes[d] > dim.high) {
      return misfit(spec) + "dim " + std::to_string(d) + " is " + std::to_string(sizes[d]) +
             ", above the model's maximum of " + std::to_string(dim.high);
    }
    if (dim.size.ops.empty()) continue;
    if (!value_of(dim.size, symbols, num_symbols, &want)) {
      return misfit(spec) + "dim " + std::to_string(d) + " is " + std::to_string(sizes[d]) +
             ", and the model's size " + dim.size.text + " cannot be computed from it" +
             symbols_of(dim.size, symbols);
    }
    if (want != sizes[d]) {
      const std::string head = misfit(spec) + "dim " + std::to_string(d) + " is " +
                               std::to_string(sizes[d]);
      if (dim.size.constant()) return head + ", the model expects " + std::to_string(want);
      const int64_t symbol = dim.size.lone_symbol();
      const Binding* origin = symbol >= 0 ? source_of(symbol) : nullptr;
      if (origin != nullptr && origin->kind == AOTI_CY_FROM_SIZE && origin->p == origin->d &&
          origin->q == 0) {
        return head + ", but " + where(*origin) + " is " + std::to_string(want) +
               ": both are " + quoted(symbol_names[symbol]);
      }
      return head + ", but the model expects " + dim.size.text + " = " +
             std::to_string(want) + symbols_of(dim.size, symbols);
    }
  }
  if (t.numel() == 0) return "";  // no element is read: strides do not matter
  const int64_t* strides = t.strides().data();
  for (size_t d = 0; d < spec.dims.size(); ++d) {
    const Dim& dim = spec.dims[d];
    int64_t want = 0;
    if (dim.stride.ops.empty() || sizes[d] <= 1) continue;  // as torch compares them
    if (!value_of(dim.stride, symbols, num_symbols, &want) || want != strides[d]) {
      return misfit(spec) + "it has stride " + std::to_string(strides[d]) + " at dim " +
             std::to_string(d) + ", the model expects " + dim.stride.text +
             (dim.stride.constant() ? "" : " = " + std::to_string(want)) +
             " (got " + aoti_cy_describe_tensor(t) +
             "); pass x.contiguous() (or x.clone(memory_format=torch.contiguous_format) "
             "where a size-1 dim has an odd stride)";
    }
  }
  return "";
}

std::string AotiCyShapeContract::check(AtenTensorOpaque** handles, size_t n, int64_t* symbols,
                                       size_t* failed) const {
  const size_t count = std::min(n, inputs.size());
  for (size_t i = 0; i < count; ++i) {
    if (!inputs[i].covered) continue;
    std::string why = check_input_kind(i, tensor_at(handles, i));
    if (!why.empty()) {
      *failed = i;
      return why;
    }
  }
  std::string why = bind(handles, count, symbols, failed);
  if (!why.empty()) return why;
  for (size_t i = 0; i < count; ++i) {
    if (!inputs[i].covered) continue;
    why = check_dims(i, tensor_at(handles, i), symbols);
    if (!why.empty()) {
      *failed = i;
      return why;
    }
  }
  return "";
}

namespace {

// Reads the encoded words (see _shape_contract.ShapeContract.encode).
struct Reader {
  const int64_t* words;
  size_t length;
  size_t at = 0;
  bool ok = true;
  int64_t next() {
    if (at >= length) {
      ok = false;
      return 0;
    }
    return words[at++];
  }
  // A count that must be small and not negative.
  size_t count(size_t limit) {
    const int64_t value = next();
    if (value < 0 || static_cast<size_t>(value) > limit) {
      ok = false;
      return 0;
    }
    return static_cast<size_t>(value);
  }
};

bool read_program(Reader& reader, Program* program) {
  const size_t length = reader.count(4096);
  for (size_t k = 0; k < length && reader.ok; ++k) {
    const int64_t op = reader.next();
    const int64_t argument = reader.next();
    if (op < AOTI_CY_OP_CONST || op > AOTI_CY_OP_NEG) return false;
    program->ops.emplace_back(op, argument);
  }
  program->finish();
  return reader.ok;
}

}  // namespace

extern "C" {

AotiCyShapeContract* aoti_cy_shape_contract_new(const int64_t* words, size_t length,
                                                const char* const* texts, size_t num_texts) {
  try {
    auto contract = std::make_unique<AotiCyShapeContract>();
    Reader reader{words, length};
    const size_t num_symbols = reader.count(1 << 16);
    const size_t num_inputs = reader.count(1 << 16);
    const size_t num_bindings = reader.count(1 << 16);
    if (!reader.ok || num_texts < num_inputs + num_symbols) return nullptr;
    size_t text = 0;
    for (size_t k = 0; k < num_symbols; ++k) {
      const int64_t low = reader.next();
      const int64_t high = reader.next();
      contract->ranges.emplace_back(low, high);
    }
    for (size_t k = 0; k < num_bindings; ++k) {
      Binding b{};
      b.symbol = reader.next();
      b.kind = reader.next();
      b.input = reader.next();
      b.dim = reader.next();
      b.p = reader.next();
      b.q = reader.next();
      b.d = reader.next();
      const bool from_tensor = b.kind == AOTI_CY_FROM_SIZE || b.kind == AOTI_CY_FROM_STRIDE;
      if (b.symbol < 0 || static_cast<size_t>(b.symbol) >= num_symbols || b.d <= 0 ||
          (from_tensor && (b.input < 0 || static_cast<size_t>(b.input) >= num_inputs ||
                           b.dim < 0)) ||
          (b.kind == AOTI_CY_FROM_SYMBOL &&
           (b.input < 0 || static_cast<size_t>(b.input) >= num_symbols)) ||
          b.kind < AOTI_CY_FROM_SIZE || b.kind > AOTI_CY_FROM_SYMBOL) {
        return nullptr;
      }
      contract->bindings.push_back(b);
    }
    for (size_t k = 0; k < num_inputs; ++k) contract->inputs.emplace_back();
    for (size_t k = 0; k < num_inputs; ++k) contract->inputs[k].label = texts[text++];
    for (size_t k = 0; k < num_symbols; ++k) contract->symbol_names.emplace_back(texts[text++]);
    for (size_t i = 0; i < num_inputs && reader.ok; ++i) {
      Input& input = contract->inputs[i];
      const int64_t rank = reader.next();
      if (rank < 0) continue;
      if (rank > 64) return nullptr;
      input.covered = true;
      input.dtype = reader.next();
      if (input.dtype >= 0) {
        if (input.dtype >= static_cast<int64_t>(c10::ScalarType::NumOptions)) return nullptr;
        input.meta = c10::scalarTypeToTypeMeta(static_cast<c10::ScalarType>(input.dtype));
      }
      input.device_type = reader.next();
      input.dims.resize(static_cast<size_t>(rank));
      for (Dim& dim : input.dims) {
        if (!read_program(reader, &dim.size) || !read_program(reader, &dim.stride)) {
          return nullptr;
        }
        if (text + 2 > num_texts) return nullptr;
        dim.size.text = texts[text++];
        dim.stride.text = texts[text++];
        dim.low = reader.next();
        dim.high = reader.next();
      }
    }
    if (!reader.ok || reader.at != length) return nullptr;
    return contract.release();
  } catch (...) {
    return nullptr;
  }
}

void aoti_cy_shape_contract_free(AotiCyShapeContract* contract) { delete contract; }

int aoti_cy_shape_contract_covers(const AotiCyShapeContract* contract, size_t i) {
  return contract != nullptr && i < contract->inputs.size() && contract->inputs[i].covered;
}

long aoti_cy_shape_contract_check(const AotiCyShapeContract* contract,
                                  AtenTensorOpaque** handles, size_t n, char* reason,
                                  size_t size) {
  int64_t inline_symbols[kInlineSymbols];
  std::vector<int64_t> many;
  int64_t* symbols = inline_symbols;
  size_t failed = 0;
  std::string why;
  try {
    if (contract->ranges.size() > kInlineSymbols) {
      many.resize(contract->ranges.size());
      symbols = many.data();
    }
    // fits() binds every symbol before reading it.
    if (contract->fits(handles, n, symbols)) return -1;
    std::fill(symbols, symbols + contract->ranges.size(), 0);
    why = contract->check(handles, n, symbols, &failed);
    if (why.empty()) return -1;
  } catch (const std::exception& e) {
    why = std::string("checking the inputs' shapes failed: ") + e.what();
  } catch (...) {
    why = "checking the inputs' shapes failed";
  }
  if (size > 0) {
    const size_t length = std::min(why.size(), size - 1);
    why.copy(reason, length);
    reason[length] = '\0';
  }
  return static_cast<long>(failed);
}

}  // extern "C"
