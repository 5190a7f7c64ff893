// The graphed call path of aoti_cy.cuda_graphs (see graph_calls.h).
#include "graph_calls.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/Allocator.h>
#include <torch/csrc/autograd/python_variable.h>

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// The few CUDA runtime entry points used here, by their C signatures
// (cudaError_t is an int enum; streams, events and executable graphs are
// pointers), and torch's CUDA shim (AOTITorchError is int32_t).
struct Runtime {
  int (*get_device)(int*);
  int (*set_device)(int);
  int (*memcpy_async)(void*, const void*, size_t, int, void*);
  int (*graph_launch)(void*, void*);
  int (*event_create)(void**, unsigned);
  int (*event_record)(void*, void*);
  int (*stream_wait_event)(void*, void*, unsigned);
  int (*event_destroy)(void*);
  const char* (*error_string)(int);
  int32_t (*current_stream)(int32_t, void**);
  int32_t (*create_stream_guard)(void*, int32_t, void**);
  int32_t (*delete_stream_guard)(void*);
  // Copies as nodes of a graph (optional: without them a call copies with
  // memcpy_async around the launch).
  int (*graph_create)(void**, unsigned);
  int (*graph_destroy)(void*);
  int (*graph_add_memcpy_1d)(void**, void*, void* const*, size_t, void*, const void*, size_t,
                             int);
  int (*graph_add_child)(void**, void*, void* const*, size_t, void*);
  int (*graph_instantiate)(void**, void*, unsigned long long);
  int (*graph_exec_destroy)(void*);
  int (*exec_memcpy_set_1d)(void*, void*, void*, const void*, size_t, int);
  int (*node_set_enabled)(void*, void*, unsigned);
  int (*stream_synchronize)(void*);
};

Runtime runtime;
bool runtime_loaded = false;             // written with the GIL held, once
c10::Allocator* cuda_allocator = nullptr;  // torch's caching allocator, if registered
thread_local std::string last_error;

constexpr int kMemcpyDeviceToDevice = 3;      // cudaMemcpyDeviceToDevice
constexpr unsigned kEventDisableTiming = 2;   // cudaEventDisableTiming

int find_cudart(struct dl_phdr_info* info, size_t, void* data) {
  const char* name = info->dlpi_name;
  if (name != nullptr && std::strstr(name, "libcudart.so") != nullptr) {
    *static_cast<std::string*>(data) = name;
    return 1;
  }
  return 0;
}

// A CUDA runtime call's status as this thread's error: false on failure.
bool cuda_ok(int status, const char* function) {
  if (status == 0) return true;
  const char* text = runtime.error_string ? runtime.error_string(status) : "unknown error";
  last_error = std::string(function) + " failed: " + (text ? text : "unknown error") +
               " (CUDA error " + std::to_string(status) + ")";
  return false;
}

int64_t span_bytes(c10::IntArrayRef sizes, c10::IntArrayRef strides, size_t itemsize) {
  int64_t last = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (sizes[k] == 0) return 0;
    last += (sizes[k] - 1) * strides[k];
  }
  return (last + 1) * static_cast<int64_t>(itemsize);
}

// Appends a tensor's signature; false where no graph can take it.
bool add_signature(std::vector<int64_t>& signature, const at::Tensor& t, int device_index) {
  if (!t.defined() || t.layout() != c10::kStrided) return false;
  const c10::Device device = t.device();
  if (!device.is_cuda() || device.index() != device_index) return false;
  if (t.is_conj() || t.is_neg()) return false;
  c10::IntArrayRef sizes = t.sizes(), strides = t.strides();
  signature.push_back(static_cast<int64_t>(t.scalar_type()));
  signature.push_back(static_cast<int64_t>(sizes.size()));
  for (size_t k = 0; k < sizes.size(); ++k) {
    // A broadcast view: a static copy of it would not be one.
    if (strides[k] == 0 && sizes[k] > 1) return false;
    signature.push_back(sizes[k]);
    signature.push_back(strides[k]);
  }
  return true;
}

struct Span {
  void* data;
  size_t bytes;
};

struct Output {
  bool none;
  std::vector<int64_t> sizes, strides;
  c10::ScalarType dtype;
  const void* data;
  size_t bytes;
  int device_index;
};

at::Tensor allocate(const Output& out) {
  if (cuda_allocator != nullptr) {
    // What torch's empty_strided does for CUDA, minus the dispatcher: the
    // caching allocator serves the current device and stream.
    return at::Tensor(at::detail::empty_strided_generic(
        out.sizes, out.strides, cuda_allocator,
        c10::DispatchKeySet(c10::DispatchKey::CUDA), out.dtype));
  }
  return at::empty_strided(out.sizes, out.strides,
                           at::TensorOptions().dtype(out.dtype).device(
                               c10::Device(c10::DeviceType::CUDA, out.device_index)));
}

}  // namespace

// A copy node of an entry's own graph: its node and where it copies now.
struct CopyNode {
  void* node = nullptr;          // none for a copy of no bytes
  void* dst = nullptr;
  const void* src = nullptr;
  bool enabled = true;
};

struct AotiCyGraphEntry {
  std::vector<int64_t> signature;
  std::vector<Span> inputs;
  std::vector<Output> outputs;
  void* graph_exec = nullptr;    // torch's exec between raw copies (NULL: torch replays)
  // With copies embedded: a graph of its own, input copies -> the captured
  // graph -> output copies, whose copy nodes every call points at its own
  // tensors; a call launches own_exec instead of graph_exec.
  void* own_graph = nullptr;
  void* own_exec = nullptr;
  std::vector<CopyNode> copy_in, copy_out;

  ~AotiCyGraphEntry() { release_own_graph(); }

  void release_own_graph() {
    if (own_exec != nullptr) {
      runtime.graph_exec_destroy(own_exec);
      own_exec = nullptr;
    }
    if (own_graph != nullptr) {
      runtime.graph_destroy(own_graph);
      own_graph = nullptr;
    }
    copy_in.clear();
    copy_out.clear();
  }
};

namespace {

// Turns a copy node on and points it at dst and src (no update where it
// already copies there: the caching allocator often hands back an address).
bool aim_copy(void* exec, CopyNode& copy, void* dst, const void* src, size_t bytes) {
  if (copy.node == nullptr) return true;
  if (!copy.enabled) {
    if (!cuda_ok(runtime.node_set_enabled(exec, copy.node, 1), "cudaGraphNodeSetEnabled")) {
      return false;
    }
    copy.enabled = true;
  }
  if (copy.dst == dst && copy.src == src) return true;
  if (!cuda_ok(runtime.exec_memcpy_set_1d(exec, copy.node, dst, src, bytes,
                                          kMemcpyDeviceToDevice),
               "cudaGraphExecMemcpyNodeSetParams1D")) {
    return false;
  }
  copy.dst = dst;
  copy.src = src;
  return true;
}

bool disable_copy(void* exec, CopyNode& copy) {
  if (copy.node == nullptr || !copy.enabled) return true;
  if (!cuda_ok(runtime.node_set_enabled(exec, copy.node, 0), "cudaGraphNodeSetEnabled")) {
    return false;
  }
  copy.enabled = false;
  return true;
}

}  // namespace

struct AotiCyGraphCall {
  std::vector<int64_t> signature;
  std::vector<const void*> given;
  std::vector<at::Tensor> fresh;
  void* last_stream = nullptr;   // where the set's buffers were last used
  bool used = false;
  void* event = nullptr;         // orders a new stream after last_stream
  void* guard = nullptr;         // the call's device and stream guard
  void* stream = nullptr;        // the call's stream
};

namespace {

// Fresh outputs for an entry from the caching allocator (current device and
// stream), into call->fresh; false with last_error on failure.
bool allocate_outputs(AotiCyGraphCall* call, const AotiCyGraphEntry* entry) {
  call->fresh.clear();
  try {
    for (const Output& out : entry->outputs) {
      if (out.none) {
        call->fresh.emplace_back();
      } else {
        call->fresh.push_back(allocate(out));
      }
    }
  } catch (const std::exception& e) {
    last_error = std::string("allocating the outputs failed: ") + e.what();
    call->fresh.clear();
    return false;
  }
  return true;
}

// A call of an entry with embedded copies: aims the input copies at the
// call's inputs (off for an input that is the static one), allocates fresh
// outputs and aims the output copies at them (off with static outputs), and
// launches the entry's graph once.
bool embedded_copies_launch(AotiCyGraphCall* call, AotiCyGraphEntry* entry, void* stream,
                            int fresh_outputs) {
  void* exec = entry->own_exec;
  for (size_t i = 0; i < entry->copy_in.size(); ++i) {
    const Span& to = entry->inputs[i];
    const void* given = call->given[i];
    const bool ok = given == to.data
                        ? disable_copy(exec, entry->copy_in[i])
                        : aim_copy(exec, entry->copy_in[i], to.data, given, to.bytes);
    if (!ok) return false;
  }
  if (fresh_outputs && !allocate_outputs(call, entry)) return false;
  bool ok = true;
  for (size_t i = 0; ok && i < entry->copy_out.size(); ++i) {
    const Output& out = entry->outputs[i];
    if (!fresh_outputs) {
      ok = disable_copy(exec, entry->copy_out[i]);
    } else if (!out.none) {
      ok = aim_copy(exec, entry->copy_out[i], call->fresh[i].data_ptr(), out.data, out.bytes);
    }
  }
  ok = ok && cuda_ok(runtime.graph_launch(exec, stream), "cudaGraphLaunch");
  if (!ok) call->fresh.clear();
  return ok;
}

}  // namespace

extern "C" {

int aoti_cy_graph_runtime_load(void) {
  if (runtime_loaded) return 0;
  void* torch_cuda = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_NOLOAD);
  if (torch_cuda == nullptr) {
    PyErr_SetString(PyExc_RuntimeError,
                    "CUDA graphs need torch's CUDA libraries (libtorch_cuda.so is not "
                    "loaded: this torch has no CUDA support)");
    return -1;
  }
  // dlsym on torch's library also searches what it links, the CUDA runtime
  // among them; failing that, the runtime is looked up among the loaded
  // libraries by name.
  void* cudart = torch_cuda;
  if (dlsym(cudart, "cudaMemcpyAsync") == nullptr) {
    std::string path;
    dl_iterate_phdr(find_cudart, &path);
    cudart = path.empty() ? nullptr : dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  }
  Runtime found{};
  const char* missing = nullptr;
#define AOTI_CY_FIND(lib, field, name)                                        \
  found.field = reinterpret_cast<decltype(found.field)>(                      \
      (lib) != nullptr ? dlsym((lib), name) : nullptr);                       \
  if (found.field == nullptr && missing == nullptr) missing = name;
  AOTI_CY_FIND(cudart, get_device, "cudaGetDevice")
  AOTI_CY_FIND(cudart, set_device, "cudaSetDevice")
  AOTI_CY_FIND(cudart, memcpy_async, "cudaMemcpyAsync")
  AOTI_CY_FIND(cudart, graph_launch, "cudaGraphLaunch")
  AOTI_CY_FIND(cudart, event_create, "cudaEventCreateWithFlags")
  AOTI_CY_FIND(cudart, event_record, "cudaEventRecord")
  AOTI_CY_FIND(cudart, stream_wait_event, "cudaStreamWaitEvent")
  AOTI_CY_FIND(cudart, event_destroy, "cudaEventDestroy")
  AOTI_CY_FIND(cudart, error_string, "cudaGetErrorString")
  AOTI_CY_FIND(torch_cuda, current_stream, "aoti_torch_get_current_cuda_stream")
  AOTI_CY_FIND(torch_cuda, create_stream_guard, "aoti_torch_create_cuda_stream_guard")
  AOTI_CY_FIND(torch_cuda, delete_stream_guard, "aoti_torch_delete_cuda_stream_guard")
  AOTI_CY_FIND(cudart, stream_synchronize, "cudaStreamSynchronize")
#undef AOTI_CY_FIND
#define AOTI_CY_FIND_OPTIONAL(field, name)                                     \
  found.field = reinterpret_cast<decltype(found.field)>(                      \
      cudart != nullptr ? dlsym(cudart, name) : nullptr);
  AOTI_CY_FIND_OPTIONAL(graph_create, "cudaGraphCreate")
  AOTI_CY_FIND_OPTIONAL(graph_destroy, "cudaGraphDestroy")
  AOTI_CY_FIND_OPTIONAL(graph_add_memcpy_1d, "cudaGraphAddMemcpyNode1D")
  AOTI_CY_FIND_OPTIONAL(graph_add_child, "cudaGraphAddChildGraphNode")
  AOTI_CY_FIND_OPTIONAL(graph_instantiate, "cudaGraphInstantiateWithFlags")
  AOTI_CY_FIND_OPTIONAL(graph_exec_destroy, "cudaGraphExecDestroy")
  AOTI_CY_FIND_OPTIONAL(exec_memcpy_set_1d, "cudaGraphExecMemcpyNodeSetParams1D")
  AOTI_CY_FIND_OPTIONAL(node_set_enabled, "cudaGraphNodeSetEnabled")
#undef AOTI_CY_FIND_OPTIONAL
  if (missing != nullptr) {
    PyErr_Format(PyExc_RuntimeError,
                 "CUDA graphs cannot find %s in the CUDA libraries torch has loaded",
                 missing);
    return -1;
  }
  try {
    cuda_allocator = c10::GetAllocator(c10::DeviceType::CUDA);
  } catch (const std::exception&) {
    cuda_allocator = nullptr;   // outputs then come from at::empty_strided
  }
  runtime = found;
  runtime_loaded = true;
  return 0;
}

const char* aoti_cy_graph_error(void) { return last_error.c_str(); }

const char* aoti_cy_graph_runtime_path(void) {
  Dl_info info;
  if (!runtime_loaded || dladdr(reinterpret_cast<void*>(runtime.memcpy_async), &info) == 0 ||
      info.dli_fname == nullptr) {
    return "";
  }
  return info.dli_fname;
}

AotiCyGraphCall* aoti_cy_graph_call_new(void) { return new AotiCyGraphCall(); }

void aoti_cy_graph_call_free(AotiCyGraphCall* call) {
  if (call == nullptr) return;
  if (call->event != nullptr && runtime.event_destroy != nullptr) {
    runtime.event_destroy(call->event);
  }
  delete call;
}

int aoti_cy_graph_signature(AotiCyGraphCall* call, PyObject* const* items, Py_ssize_t n,
                            int device_index) {
  call->signature.clear();
  call->given.clear();
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!THPVariable_Check(items[i])) return 0;
    const at::Tensor& t = THPVariable_Unpack(items[i]);
    try {
      if (!add_signature(call->signature, t, device_index)) return 0;
      call->given.push_back(t.const_data_ptr());
    } catch (const std::exception&) {
      return 0;   // no data (a fake or meta-like tensor): the plain run says why
    }
  }
  return 1;
}

AotiCyGraphEntry* aoti_cy_graph_entry_new(PyObject* const* inputs, Py_ssize_t n_in,
                                          PyObject* const* outputs, Py_ssize_t n_out,
                                          void* graph_exec) {
  auto* entry = new AotiCyGraphEntry();
  entry->graph_exec = graph_exec;
  try {
    for (Py_ssize_t i = 0; i < n_in; ++i) {
      if (!THPVariable_Check(inputs[i])) throw std::runtime_error("a static input is not a tensor");
      const at::Tensor& t = THPVariable_Unpack(inputs[i]);
      const int index = t.device().index();
      if (!add_signature(entry->signature, t, index)) {
        throw std::runtime_error("a static input has no graph signature");
      }
      entry->inputs.push_back(Span{t.data_ptr(), static_cast<size_t>(span_bytes(
                                                      t.sizes(), t.strides(), t.itemsize()))});
    }
    for (Py_ssize_t i = 0; i < n_out; ++i) {
      Output out{};
      out.none = outputs[i] == Py_None;
      if (!out.none) {
        if (!THPVariable_Check(outputs[i])) throw std::runtime_error("an output is not a tensor");
        const at::Tensor& t = THPVariable_Unpack(outputs[i]);
        if (!t.device().is_cuda() || t.layout() != c10::kStrided) {
          // A replay recomputes GPU work only: this output would keep the
          // value of the captured run.
          throw std::runtime_error("output " + std::to_string(i) + " is a " +
                                   t.device().str() + " tensor, which a replay does not "
                                   "recompute");
        }
        out.sizes = t.sizes().vec();
        out.strides = t.strides().vec();
        out.dtype = t.scalar_type();
        out.data = t.const_data_ptr();
        out.bytes = static_cast<size_t>(span_bytes(t.sizes(), t.strides(), t.itemsize()));
        out.device_index = t.device().index();
      }
      entry->outputs.push_back(std::move(out));
    }
  } catch (const std::exception& e) {
    delete entry;
    PyErr_Format(PyExc_RuntimeError, "cannot describe a captured graph: %s", e.what());
    return nullptr;
  }
  return entry;
}

void aoti_cy_graph_entry_free(AotiCyGraphEntry* entry) { delete entry; }

int aoti_cy_graph_entry_embed_copies(AotiCyGraphEntry* entry, void* captured_graph,
                                     int device_index) {
  if (runtime.graph_create == nullptr || runtime.graph_destroy == nullptr ||
      runtime.graph_add_memcpy_1d == nullptr || runtime.graph_add_child == nullptr ||
      runtime.graph_instantiate == nullptr || runtime.graph_exec_destroy == nullptr ||
      runtime.exec_memcpy_set_1d == nullptr || runtime.node_set_enabled == nullptr) {
    last_error = "this CUDA runtime cannot update copies in an instantiated graph "
                 "(cudaGraphExecMemcpyNodeSetParams1D, cudaGraphNodeSetEnabled)";
    return -1;
  }
  if (captured_graph == nullptr) {
    last_error = "the captured graph is not available (torch keeps no cudaGraph_t)";
    return -1;
  }
  entry->release_own_graph();
  // Copy nodes are built pointing at a placeholder of the largest copy's
  // size; every call points them at its own tensors before launching.
  size_t largest = 0;
  for (const Span& in : entry->inputs) largest = std::max(largest, in.bytes);
  for (const Output& out : entry->outputs) {
    if (!out.none) largest = std::max(largest, out.bytes);
  }
  at::Tensor placeholder;
  void* graph = nullptr;
  void* exec = nullptr;
  std::vector<CopyNode> copy_in(entry->inputs.size()), copy_out(entry->outputs.size());
  try {
    if (largest != 0) {
      placeholder = at::empty({static_cast<int64_t>(largest)},
                              at::TensorOptions().dtype(at::kByte).device(
                                  c10::Device(c10::DeviceType::CUDA, device_index)));
    }
  } catch (const std::exception& e) {
    last_error = std::string("allocating a placeholder for the copies failed: ") + e.what();
    return -1;
  }
  void* scratch = largest != 0 ? placeholder.data_ptr() : nullptr;
  bool ok = cuda_ok(runtime.graph_create(&graph, 0), "cudaGraphCreate");
  std::vector<void*> before;
  for (size_t i = 0; ok && i < entry->inputs.size(); ++i) {
    const Span& in = entry->inputs[i];
    if (in.bytes == 0) continue;
    ok = cuda_ok(runtime.graph_add_memcpy_1d(&copy_in[i].node, graph, nullptr, 0, in.data,
                                             scratch, in.bytes, kMemcpyDeviceToDevice),
                 "cudaGraphAddMemcpyNode1D");
    copy_in[i].dst = in.data;
    copy_in[i].src = scratch;
    before.push_back(copy_in[i].node);
  }
  void* model = nullptr;
  if (ok) {
    ok = cuda_ok(runtime.graph_add_child(&model, graph, before.data(), before.size(),
                                         captured_graph),
                 "cudaGraphAddChildGraphNode");
  }
  for (size_t i = 0; ok && i < entry->outputs.size(); ++i) {
    const Output& out = entry->outputs[i];
    if (out.none || out.bytes == 0) continue;
    ok = cuda_ok(runtime.graph_add_memcpy_1d(&copy_out[i].node, graph, &model, 1, scratch,
                                             out.data, out.bytes, kMemcpyDeviceToDevice),
                 "cudaGraphAddMemcpyNode1D");
    copy_out[i].dst = scratch;
    copy_out[i].src = out.data;
  }
  if (ok) {
    ok = cuda_ok(runtime.graph_instantiate(&exec, graph, 0), "cudaGraphInstantiateWithFlags");
  }
  if (!ok) {
    if (exec != nullptr) runtime.graph_exec_destroy(exec);
    if (graph != nullptr) runtime.graph_destroy(graph);
    return -1;
  }
  // The placeholder goes back to the allocator: a node still aimed at it is
  // aimed at whatever tensor is given that address next, which is right.
  entry->own_graph = graph;
  entry->own_exec = exec;
  entry->copy_in = std::move(copy_in);
  entry->copy_out = std::move(copy_out);
  return 0;
}

void aoti_cy_graph_entry_release_own_graph(AotiCyGraphEntry* entry) {
  entry->release_own_graph();
}

int aoti_cy_graph_entry_copies_embedded(const AotiCyGraphEntry* entry) {
  return entry->own_exec != nullptr;
}

int aoti_cy_graph_call_wait(AotiCyGraphCall* call, int device_index) {
  if (!call->used) return 0;
  // A last stream of NULL is the legacy default stream of the *current*
  // device: make the set's device current while waiting.
  int device = -1;
  if (!cuda_ok(runtime.get_device(&device), "cudaGetDevice")) return -1;
  if (device != device_index &&
      !cuda_ok(runtime.set_device(device_index), "cudaSetDevice")) {
    return -1;
  }
  const bool ok =
      cuda_ok(runtime.stream_synchronize(call->last_stream), "cudaStreamSynchronize");
  if (device != device_index) runtime.set_device(device);
  return ok ? 0 : -1;
}

void aoti_cy_graph_entry_set_exec(AotiCyGraphEntry* entry, void* graph_exec) {
  entry->graph_exec = graph_exec;
}

int aoti_cy_graph_entry_matches(const AotiCyGraphEntry* entry, const AotiCyGraphCall* call) {
  return entry->signature == call->signature;
}

int aoti_cy_graph_begin(AotiCyGraphCall* call, AotiCyGraphEntry* entry, int device_index,
                        void* stream, int fresh_outputs) {
  int device = -1;
  if (!cuda_ok(runtime.get_device(&device), "cudaGetDevice")) return -1;
  void* current = nullptr;
  if (runtime.current_stream(device_index, &current) != 0) {
    last_error = "aoti_torch_get_current_cuda_stream failed for cuda:" +
                 std::to_string(device_index);
    return -1;
  }
  if (stream == nullptr) stream = current;
  call->guard = nullptr;
  if (device != device_index || stream != current) {
    // Outputs come from the caching allocator for the current stream, and
    // a replay by torch runs on it: make the call's stream current.
    if (runtime.create_stream_guard(stream, device_index, &call->guard) != 0) {
      last_error = "aoti_torch_create_cuda_stream_guard failed for cuda:" +
                   std::to_string(device_index);
      call->guard = nullptr;
      return -1;
    }
  }
  call->stream = stream;
  bool ok = true;
  if (call->used && call->last_stream != stream) {
    // The set's buffers were last used on another stream: wait for it, so
    // this call overwrites no input or memory a replay there still reads.
    if (call->event == nullptr) {
      ok = cuda_ok(runtime.event_create(&call->event, kEventDisableTiming),
                   "cudaEventCreateWithFlags");
    }
    ok = ok && cuda_ok(runtime.event_record(call->event, call->last_stream), "cudaEventRecord");
    ok = ok && cuda_ok(runtime.stream_wait_event(stream, call->event, 0), "cudaStreamWaitEvent");
  }
  if (ok) {
    call->last_stream = stream;
    call->used = true;
  }
  call->fresh.clear();
  if (ok && entry != nullptr && entry->own_exec != nullptr) {
    ok = embedded_copies_launch(call, entry, stream, fresh_outputs);
  } else if (ok && entry != nullptr) {
    const size_t n = entry->inputs.size();
    for (size_t i = 0; ok && i < n; ++i) {
      const Span& to = entry->inputs[i];
      if (call->given[i] != to.data && to.bytes != 0) {
        ok = cuda_ok(runtime.memcpy_async(to.data, call->given[i], to.bytes,
                                          kMemcpyDeviceToDevice, stream),
                     "cudaMemcpyAsync");
      }
    }
    if (ok && entry->graph_exec != nullptr) {
      ok = cuda_ok(runtime.graph_launch(entry->graph_exec, stream), "cudaGraphLaunch");
    }
  }
  if (!ok && call->guard != nullptr) {
    runtime.delete_stream_guard(call->guard);
    call->guard = nullptr;
  }
  return ok ? 0 : -1;
}

int aoti_cy_graph_finish(AotiCyGraphCall* call, const AotiCyGraphEntry* entry,
                         int fresh_outputs) {
  bool ok = true;
  if (entry != nullptr && entry->own_exec != nullptr) {
    // begin allocated the outputs and its one launch filled them.
  } else if (fresh_outputs && entry != nullptr) {
    ok = allocate_outputs(call, entry);
    for (size_t i = 0; ok && i < entry->outputs.size(); ++i) {
      const Output& out = entry->outputs[i];
      if (out.none || out.bytes == 0) continue;
      ok = cuda_ok(runtime.memcpy_async(call->fresh[i].data_ptr(), out.data, out.bytes,
                                        kMemcpyDeviceToDevice, call->stream),
                   "cudaMemcpyAsync");
    }
    if (!ok) call->fresh.clear();
  } else {
    call->fresh.clear();
  }
  if (call->guard != nullptr) {
    runtime.delete_stream_guard(call->guard);
    call->guard = nullptr;
  }
  return ok ? 0 : -1;
}

PyObject* aoti_cy_graph_take_outputs(AotiCyGraphCall* call) {
  const size_t n = call->fresh.size();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(n));
  if (list == nullptr) return nullptr;
  for (size_t i = 0; i < n; ++i) {
    PyObject* item;
    if (call->fresh[i].defined()) {
      item = THPVariable_Wrap(std::move(call->fresh[i]));
      if (item == nullptr) {
        Py_DECREF(list);
        call->fresh.clear();
        return nullptr;
      }
    } else {
      item = Py_NewRef(Py_None);
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
  }
  call->fresh.clear();
  return list;
}

}  // extern "C"
