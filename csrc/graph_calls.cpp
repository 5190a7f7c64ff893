// The graphed call path of aoti_cy.cuda_graphs (see graph_calls.h).
#include "graph_calls.h"

#include <ATen/EmptyTensor.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_strided.h>
#include <c10/core/Allocator.h>
#include <torch/csrc/autograd/python_variable.h>

#include <dlfcn.h>
#include <link.h>

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

struct AotiCyGraphEntry {
  std::vector<int64_t> signature;
  std::vector<Span> inputs;
  std::vector<Output> outputs;
  void* graph_exec = nullptr;
};

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
#undef AOTI_CY_FIND
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

void aoti_cy_graph_entry_set_exec(AotiCyGraphEntry* entry, void* graph_exec) {
  entry->graph_exec = graph_exec;
}

int aoti_cy_graph_entry_matches(const AotiCyGraphEntry* entry, const AotiCyGraphCall* call) {
  return entry->signature == call->signature;
}

int aoti_cy_graph_begin(AotiCyGraphCall* call, const AotiCyGraphEntry* entry,
                        int device_index, void* stream) {
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
  if (ok && entry != nullptr) {
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
  call->fresh.clear();
  if (fresh_outputs && entry != nullptr) {
    try {
      for (const Output& out : entry->outputs) {
        if (out.none) {
          call->fresh.emplace_back();
          continue;
        }
        at::Tensor t = allocate(out);
        if (out.bytes != 0) {
          ok = cuda_ok(runtime.memcpy_async(t.data_ptr(), out.data, out.bytes,
                                            kMemcpyDeviceToDevice, call->stream),
                       "cudaMemcpyAsync");
          if (!ok) break;
        }
        call->fresh.push_back(std::move(t));
      }
    } catch (const std::exception& e) {
      last_error = std::string("allocating the outputs failed: ") + e.what();
      ok = false;
    }
    if (!ok) call->fresh.clear();
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
