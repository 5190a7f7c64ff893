// Input guards: the model's own input checks, plus rank and memo (see
// input_guards.h).
#include "input_guards.h"

#include "dtype_names.h"
#include "shape_contract.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

inline at::Tensor* from_handle(AtenTensorOpaque* handle) {
  return reinterpret_cast<at::Tensor*>(handle);
}

// Layouts with more dims than this are checked every time, not memoised.
constexpr int kMaxMemoDims = 8;

// The first layout an input's check accepted. Written once (state 0 -> 1 ->
// 2) and read by any thread once state is 2.
struct Layout {
  std::atomic<int> state{0};
  caffe2::TypeMeta dtype;
  c10::DeviceType device_type = c10::DeviceType::CPU;
  int64_t ndim = 0;
  int64_t sizes[kMaxMemoDims] = {};
  int64_t strides[kMaxMemoDims] = {};

  // The per-run fast path: a handful of loads and compares.
  bool matches(const c10::TensorImpl& t) const {
    if (state.load(std::memory_order_acquire) != 2) return false;
    // Only plain strided tensors: sizes() of nested or Python-subclass
    // tensors may throw or call into Python.
    if (t.layout() != c10::kStrided || t.is_nested() || t.is_python_dispatch()) {
      return false;
    }
    if (t.dtype() != dtype || t.device_type() != device_type || t.dim() != ndim) {
      return false;
    }
    const int64_t* s = t.sizes().data();
    const int64_t* st = t.strides().data();
    for (int64_t k = 0; k < ndim; ++k) {
      if (s[k] != sizes[k] || st[k] != strides[k]) return false;
    }
    return true;
  }

  void remember(const c10::TensorImpl& t) {
    if (t.dim() > kMaxMemoDims) return;
    int expected = 0;
    if (!state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return;
    dtype = t.dtype();
    device_type = t.device_type();
    ndim = t.dim();
    std::copy(t.sizes().begin(), t.sizes().end(), sizes);
    std::copy(t.strides().begin(), t.strides().end(), strides);
    state.store(2, std::memory_order_release);
  }
};

struct Guard {
  AotiCyInputCheck check = nullptr;
  bool covered = false;  // checked in full by the shape contract
  std::atomic<int> rank{-1};  // the model's rank for this input, -1 until learned
  Layout accepted;
};

// Runs one model check; false with its message in `reason` if it throws.
// The model's messages read "input_handles[i]: <reason>\n": keep <reason>.
bool passes(AotiCyInputCheck check, AtenTensorOpaque** handles, std::string* reason) {
  try {
    check(handles);
    return true;
  } catch (const std::exception& e) {
    *reason = e.what();
  } catch (...) {
    *reason = "the model's input check failed";
  }
  const std::string prefix = "input_handles[";
  const size_t colon = reason->find("]: ");
  if (reason->compare(0, prefix.size(), prefix) == 0 && colon != std::string::npos) {
    reason->erase(0, colon + 3);
  }
  while (!reason->empty() && std::isspace(static_cast<unsigned char>(reason->back()))) {
    reason->pop_back();
  }
  // "unmatched dtype, expected: 4(at::kLong), but got: 3": as torch names them.
  int expected = -1, got = -1;
  if (std::sscanf(reason->c_str(), "unmatched dtype, expected: %d(at::k%*[A-Za-z0-9_]), but got: %d",
                  &expected, &got) == 2 &&
      expected >= 0 && got >= 0) {
    *reason = "it has dtype " + aoti_cy_dtype_name(static_cast<c10::ScalarType>(got)) +
              ", the model expects " +
              aoti_cy_dtype_name(static_cast<c10::ScalarType>(expected));
  }
  return false;
}

// The lower bound inductor puts on a dynamic dim is 2, not the exported
// minimum: sizes 0 and 1 are specialised away while tracing, and the
// generated code still handles 1 (torch's runner runs it). A dim of size 1
// refused only for that is accepted; 0 stays refused (index arithmetic
// modulo a size of 0 would trap). Returns the dim, or -1.
int64_t size_one_refused(const std::string& why) {
  long long dim = -1, bound = 0, got = 0;
  if (std::sscanf(why.c_str(),
                  "dim value is too small at %lld, expected it to be >= %lld, but got: %lld",
                  &dim, &bound, &got) == 3 &&
      bound == 2 && got == 1) {
    return dim;
  }
  return -1;
}

// Runs input `i`'s check on a probe of `like`'s dtype and device with these
// sizes and strides; "" if it passes, else the check's message. The probe
// holds no data (checks read only metadata) and has as many dims as given,
// so a check that stops at a mismatch never reads past its arrays. Dims
// below `relax_below` of size 1 refused only by inductor's lower bound of 2
// are checked as 2 instead (see size_one_refused).
std::string probe(AotiCyInputCheck check, AtenTensorOpaque** handles, size_t i,
                  const at::Tensor& like, std::vector<int64_t> sizes,
                  c10::IntArrayRef strides, int64_t relax_below) {
  at::Tensor fake = at::empty(
      {0}, at::TensorOptions().dtype(like.scalar_type()).device(like.device()));
  struct Restore {  // put the caller's handle back whatever happens
    AtenTensorOpaque** slot;
    AtenTensorOpaque* real;
    ~Restore() { *slot = real; }
  } restore{&handles[i], handles[i]};
  handles[i] = reinterpret_cast<AtenTensorOpaque*>(&fake);
  std::string why;
  for (int64_t tries = 0; tries <= relax_below; ++tries) {
    fake.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides);
    if (passes(check, handles, &why)) return "";
    const int64_t dim = size_one_refused(why);
    if (dim < 0 || dim >= relax_below || sizes[dim] != 1) break;
    sizes[dim] = 2;
  }
  return why;
}

std::string rank_message(int64_t ndim, const std::string& expected) {
  return "it has " + std::to_string(ndim) + " dimensions, the model expects " + expected;
}

// The tensor's own check; "" if it passes (see probe for dims of size 1).
std::string check_tensor(const Guard& guard, AtenTensorOpaque** handles, size_t i,
                         const at::Tensor& tensor) {
  std::string why;
  if (passes(guard.check, handles, &why)) return "";
  if (size_one_refused(why) < 0) return why;
  return probe(guard.check, handles, i, tensor, tensor.sizes().vec(), tensor.strides(),
               tensor.dim());
}

// Whether the check reads dim `dim` of a probe shaped like `sizes`/`strides`:
// two marker values there (size 0 stride -7, size 1 stride -9) that no
// checked dim accepts both of, and whose messages differ when it is read.
// `same_failure` receives the message when both fail alike (the mismatch is
// elsewhere). Two markers, because one can collide with a real layout (a
// negative stride is rewritten where the size is 0).
bool reads_dim(const Guard& guard, AtenTensorOpaque** handles, size_t i,
               const at::Tensor& like, std::vector<int64_t> sizes,
               std::vector<int64_t> strides, size_t dim, std::string* same_failure) {
  sizes[dim] = 0;
  strides[dim] = -7;
  const std::string first = probe(guard.check, handles, i, like, sizes, strides,
                                  static_cast<int64_t>(dim));
  sizes[dim] = 1;
  strides[dim] = -9;
  const std::string second = probe(guard.check, handles, i, like, sizes, strides,
                                   static_cast<int64_t>(dim));
  if (first.empty() && second.empty()) return false;
  if (first == second) {
    *same_failure = first;
    return false;
  }
  return true;
}

// The checks compare sizes[k] and strides[k] for every dim the model knows
// and never the rank: a tensor with extra trailing dims passes them, and one
// with fewer dims has sizes read past its end. So, the first time, the rank
// is learned from probes before the tensor itself is checked:
//   1. the tensor's dims plus a marker dim: if the check reads it, the model
//      expects more dims; if both markers fail alike, the mismatch is
//      earlier (dtype, a size), which is the answer;
//   2. the tensor itself is checked (now known not to be read past its end);
//   3. its last dim marked: if the check never reads it, the model has fewer.
// Returns "" (and stores the rank) when the tensor fits, else why not.
std::string check_learning_rank(Guard& guard, AtenTensorOpaque** handles, size_t i,
                                const at::Tensor& tensor) {
  const int64_t ndim = tensor.dim();
  std::vector<int64_t> sizes(tensor.sizes().begin(), tensor.sizes().end());
  std::vector<int64_t> strides(tensor.strides().begin(), tensor.strides().end());
  sizes.push_back(0);
  strides.push_back(0);
  std::string earlier;
  if (reads_dim(guard, handles, i, tensor, sizes, strides, ndim, &earlier)) {
    return rank_message(ndim, "more");
  }
  if (!earlier.empty()) return earlier;
  std::string why = check_tensor(guard, handles, i, tensor);
  if (!why.empty()) return why;
  if (ndim > 0) {
    sizes.pop_back();
    strides.pop_back();
    std::string alike;
    if (!reads_dim(guard, handles, i, tensor, sizes, strides, ndim - 1, &alike) &&
        alike.empty()) {
      return rank_message(ndim, "fewer");
    }
  }
  guard.rank.store(static_cast<int>(ndim), std::memory_order_relaxed);
  return "";
}

// Why input `i` does not fit the model, or "" if it does.
std::string mismatch(Guard& guard, AtenTensorOpaque** handles, size_t i) {
  if (handles[i] == nullptr) return "it is a NULL handle";
  const at::Tensor* tensor = from_handle(handles[i]);
  if (!tensor->defined()) return "it is an undefined tensor";
  if (tensor->layout() != c10::kStrided || tensor->is_nested()) {
    return "it is not a dense (strided) tensor";
  }
  const int rank = guard.rank.load(std::memory_order_relaxed);
  std::string why;
  if (rank < 0) {
    why = check_learning_rank(guard, handles, i, *tensor);
  } else if (rank != tensor->dim()) {
    // Compared first: the check reads sizes[k] for every dim the model knows.
    why = rank_message(tensor->dim(), std::to_string(rank));
  } else {
    why = check_tensor(guard, handles, i, *tensor);
  }
  if (why.empty()) guard.accepted.remember(*tensor->unsafeGetTensorImpl());
  return why;
}

void copy_reason(const std::string& why, char* reason, size_t size) noexcept {
  if (size > 0) {
    const size_t length = std::min(why.size(), size - 1);
    why.copy(reason, length);
    reason[length] = '\0';
  }
}

// Input `i` through the model's check and the rank check; false with the
// reason in `reason` when it does not fit. Kept out of line: the fast path
// in aoti_cy_check_inputs builds no strings.
__attribute__((noinline)) bool check_slowly(Guard& guard, AtenTensorOpaque** handles,
                                            size_t i, const std::string& label, char* reason,
                                            size_t size) {
  std::string why;
  try {
    why = mismatch(guard, handles, i);
    if (why.empty()) return true;
    why = label + " does not fit the model: " + why;
    if (handles[i] != nullptr) why += " (got " + aoti_cy_describe_tensor(*from_handle(handles[i])) + ")";
    if (why.find("stride") != std::string::npos) {
      why += "; pass x.contiguous() (or x.clone(memory_format=torch.contiguous_format) "
             "where a size-1 dim has an odd stride)";
    }
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
    why = "checking it failed";
  }
  copy_reason(why, reason, size);
  return false;
}

// A CUDA input on another GPU than the model's: false with the reason.
__attribute__((noinline)) bool refuse_other_gpu(const at::Tensor& tensor, int cuda_index,
                                                const std::string& label, char* reason,
                                                size_t size) {
  try {
    copy_reason(label + " does not fit the model: it is on " + tensor.device().str() +
                    " but the model runs on cuda:" +
                    std::to_string(cuda_index),
                reason, size);
  } catch (...) {
    copy_reason("it is on another GPU than the model", reason, size);
  }
  return false;
}

}  // namespace

struct AotiCyInputGuards {
  size_t count = 0;
  int cuda_index = -1;  // the model's GPU, -1 for a CPU model
  std::unique_ptr<Guard[]> guards;
  std::vector<std::string> labels;
  AotiCyShapeContract* contract = nullptr;  // owned; NULL: no relations known
  ~AotiCyInputGuards() { aoti_cy_shape_contract_free(contract); }
};

namespace {

// A handle the contract may read: a defined, dense tensor (else the
// per-input path names the problem).
__attribute__((noinline)) bool refuse_unusable(AtenTensorOpaque* handle, const std::string& label,
                                               char* reason, size_t size) {
  const at::Tensor* tensor = from_handle(handle);
  try {
    if (tensor == nullptr) {
      copy_reason(label + " does not fit the model: it is a NULL handle", reason, size);
    } else if (!tensor->defined()) {
      copy_reason(label + " does not fit the model: it is an undefined tensor", reason, size);
    } else if (tensor->layout() != c10::kStrided || tensor->is_nested() ||
               tensor->unsafeGetTensorImpl()->is_python_dispatch()) {
      copy_reason(label + " does not fit the model: it is not a dense (strided) tensor", reason,
                  size);
    } else {
      return true;
    }
  } catch (...) {
    copy_reason(label + " cannot be checked", reason, size);
  }
  return false;
}

}  // namespace

extern "C" {

AotiCyInputGuards* aoti_cy_input_guards_new(const AotiCyInputCheck* checks, size_t n,
                                            const char* const* labels, int cuda_index,
                                            AotiCyShapeContract* contract) {
  try {
    auto result = std::make_unique<AotiCyInputGuards>();
    result->contract = contract;
    contract = nullptr;
    result->count = n;
    result->cuda_index = cuda_index;
    result->guards = std::make_unique<Guard[]>(n);
    for (size_t i = 0; i < n; ++i) {
      // An input the contract covers needs no model check (which would
      // also refuse what the contract's 0/1 rule lets through).
      result->guards[i].covered = aoti_cy_shape_contract_covers(result->contract, i) != 0;
      result->guards[i].check = result->guards[i].covered ? nullptr : checks[i];
      result->labels.emplace_back(labels != nullptr && labels[i] != nullptr
                                      ? labels[i]
                                      : "input " + std::to_string(i));
    }
    return result.release();
  } catch (...) {
    aoti_cy_shape_contract_free(contract);
    return nullptr;
  }
}

void aoti_cy_input_guards_free(AotiCyInputGuards* guards) {
  delete guards;
}

long aoti_cy_check_inputs(AotiCyInputGuards* guards, AtenTensorOpaque** handles,
                          size_t n, char* reason, size_t size) {
  const size_t count = std::min(n, guards->count);
  const int cuda_index = guards->cuda_index;
  for (size_t i = 0; i < count; ++i) {
    const Guard& guard = guards->guards[i];
    const at::Tensor* tensor = from_handle(handles[i]);
    if (cuda_index >= 0 && tensor != nullptr && tensor->defined() && tensor->is_cuda() &&
        tensor->get_device() != cuda_index) {
      refuse_other_gpu(*tensor, cuda_index, guards->labels[i], reason, size);
      return static_cast<long>(i);
    }
    if (guard.covered) {
      const bool usable = tensor != nullptr && tensor->defined() &&
                          tensor->layout() == c10::kStrided && !tensor->is_nested() &&
                          !tensor->unsafeGetTensorImpl()->is_python_dispatch();
      if (!usable && !refuse_unusable(handles[i], guards->labels[i], reason, size)) {
        return static_cast<long>(i);
      }
      continue;
    }
    if (guard.check == nullptr ||
        (tensor != nullptr && tensor->defined() &&
         guard.accepted.matches(*tensor->unsafeGetTensorImpl()))) {
      continue;
    }
    if (!check_slowly(guards->guards[i], handles, i, guards->labels[i], reason, size)) {
      return static_cast<long>(i);
    }
  }
  if (guards->contract != nullptr) {
    return aoti_cy_shape_contract_check(guards->contract, handles, count, reason, size);
  }
  return -1;
}

}  // extern "C"
