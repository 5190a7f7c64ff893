// Every conversion between Python tensors and AtenTensorHandle goes through
// here (with input_guards.cpp, the only code that sees torch's C++ headers).
#include "tensor_bridge.h"

#include <ATen/core/Tensor.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/tensor_numpy.h>

#include <exception>
#include <string>

static_assert(AOTI_CY_DEVICE_CPU == static_cast<int>(c10::DeviceType::CPU) &&
                  AOTI_CY_DEVICE_CUDA == static_cast<int>(c10::DeviceType::CUDA),
              "device_codes.h must hold c10::DeviceType values");

namespace {

inline AtenTensorOpaque* to_handle(const at::Tensor& tensor) {
  return reinterpret_cast<AtenTensorOpaque*>(new at::Tensor(tensor));
}

inline at::Tensor* from_handle(AtenTensorOpaque* handle) {
  return reinterpret_cast<at::Tensor*>(handle);
}

using ImplPtr = c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;

inline AotiCyTensorRef* new_ref(const at::Tensor& tensor) {
  return reinterpret_cast<AotiCyTensorRef*>(ImplPtr(tensor.getIntrusivePtr()).release());
}

std::string input_label(Py_ssize_t i, PyObject* names) {
  std::string label = "input " + std::to_string(i);
  if (names != nullptr && PyTuple_Check(names) && i < PyTuple_GET_SIZE(names)) {
    const char* name = PyUnicode_AsUTF8(PyTuple_GET_ITEM(names, i));
    if (name != nullptr) {
      label += " ('" + std::string(name) + "')";
    } else {
      PyErr_Clear();
    }
  }
  return label;
}

std::string device_label(AotiCyDevice device) {
  if (device.type == AOTI_CY_DEVICE_CPU) return "cpu";
  return "cuda:" + std::to_string(device.index);
}

bool on_device(const at::Tensor& tensor, AotiCyDevice device) {
  const c10::Device& d = tensor.device();
  if (static_cast<int>(d.type()) != device.type) return false;
  return device.type == AOTI_CY_DEVICE_CPU || d.index() == device.index;
}

// A numpy array as a CPU tensor sharing its memory; false (no error set) for
// anything else. Read-only arrays are taken too: most models only read their
// inputs (one that updates an input in place needs a writable array; see docs/loading.md).
PyTypeObject* ndarray_type = nullptr;  // numpy.ndarray, set once at import

bool tensor_from_array(PyObject* item, at::Tensor* out) {
  if (ndarray_type == nullptr || !PyObject_TypeCheck(item, ndarray_type)) {
    return false;
  }
  *out = torch::utils::tensor_from_numpy(item, /*warn_if_not_writeable=*/false);
  return true;
}

void set_type_error(Py_ssize_t i, PyObject* item, PyObject* names) {
  PyErr_Format(PyExc_TypeError, "%s must be a torch.Tensor (or numpy array), got %s",
               input_label(i, names).c_str(), Py_TYPE(item)->tp_name);
}

}  // namespace

extern "C" {

void aoti_cy_accept_arrays_of(PyObject* type) {
  Py_XINCREF(type);  // kept for the life of the process
  ndarray_type = reinterpret_cast<PyTypeObject*>(type);
}

int aoti_cy_handles_from_tensors(PyObject* const* tensors, Py_ssize_t n,
                                 AtenTensorOpaque** out, AotiCyDevice device,
                                 PyObject* names, AotiCyTensorRef** keepalive) {
  // Every slot NULL first: on any failure below, the non-NULL ones are
  // exactly the references made so far.
  for (Py_ssize_t i = 0; i < n; ++i) {
    out[i] = nullptr;
    if (keepalive != nullptr) keepalive[i] = nullptr;
  }
  bool failed = false;
  Py_ssize_t made = 0;
  try {
    for (; made < n && !failed; ++made) {
      PyObject* item = tensors[made];
      at::Tensor from_array;
      const bool is_tensor = THPVariable_Check(item);
      if (!is_tensor && !tensor_from_array(item, &from_array)) {
        set_type_error(made, item, names);
        failed = true;
        break;
      }
      const at::Tensor& tensor = is_tensor ? THPVariable_Unpack(item) : from_array;
      if (!on_device(tensor, device)) {
        PyErr_Format(PyExc_ValueError,
                     "%s is on %s but the model runs on %s",
                     input_label(made, names).c_str(),
                     tensor.device().str().c_str(),
                     device_label(device).c_str());
        failed = true;
        break;
      }
      out[made] = to_handle(tensor);
      if (keepalive != nullptr) keepalive[made] = new_ref(tensor);
    }
  } catch (const c10::Error& e) {
    // e.g. a numpy array torch cannot view (negative strides, object dtype)
    PyErr_Format(PyExc_ValueError, "%s cannot be taken as a tensor: %s",
                 input_label(made, names).c_str(), e.what_without_backtrace());
    failed = true;
  } catch (const std::exception& e) {
    PyErr_Format(PyExc_ValueError, "%s cannot be taken as a tensor: %s",
                 input_label(made, names).c_str(), e.what());
    failed = true;
  }
  if (!failed) return 0;
  aoti_cy_free_handles(out, static_cast<size_t>(n));
  if (keepalive != nullptr) aoti_cy_drop_refs(keepalive, static_cast<size_t>(n));
  return -1;
}

AtenTensorOpaque* aoti_cy_handle_from_tensor(PyObject* tensor) {
  try {
    at::Tensor from_array;
    if (THPVariable_Check(tensor)) return to_handle(THPVariable_Unpack(tensor));
    if (tensor_from_array(tensor, &from_array)) return to_handle(from_array);
    PyErr_Format(PyExc_TypeError, "expected a torch.Tensor, got %s",
                 Py_TYPE(tensor)->tp_name);
    return nullptr;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyObject* aoti_cy_tensor_from_handle(AtenTensorOpaque* handle) {
  if (handle == nullptr) Py_RETURN_NONE;
  at::Tensor* owned = from_handle(handle);
  try {
    at::Tensor tensor = std::move(*owned);
    delete owned;
    owned = nullptr;
    // A model may hand back an input as is; outputs never carry autograd.
    if (tensor.defined() && tensor.requires_grad()) tensor = tensor.detach();
    return THPVariable_Wrap(std::move(tensor));
  } catch (const std::exception& e) {
    delete owned;
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

PyObject* aoti_cy_tensor_from_borrowed_handle(AtenTensorOpaque* handle) {
  if (handle == nullptr) Py_RETURN_NONE;
  try {
    return THPVariable_Wrap(*from_handle(handle));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

}  // extern "C"

namespace {

// A list or tuple of the tensors `handles` refer to, stealing the handles.
template <PyObject* (*New)(Py_ssize_t), PyObject* (*Get)(PyObject*, Py_ssize_t),
          void (*Set)(PyObject*, Py_ssize_t, PyObject*)>
PyObject* sequence_from_handles(AtenTensorOpaque** handles, size_t n) {
  PyObject* sequence = New(static_cast<Py_ssize_t>(n));
  size_t i = 0;
  if (sequence == nullptr) goto fail;
  for (; i < n; ++i) {
    PyObject* item = nullptr;
    for (size_t j = 0; j < i; ++j) {
      if (handles[j] == handles[i] && handles[i] != nullptr) {
        item = Get(sequence, static_cast<Py_ssize_t>(j));  // same handle: same tensor, one free
        Py_INCREF(item);
        break;
      }
    }
    if (item == nullptr) {
      item = aoti_cy_tensor_from_handle(handles[i]);
      if (item == nullptr) {
        ++i;  // that handle was consumed
        goto fail;
      }
    }
    Set(sequence, static_cast<Py_ssize_t>(i), item);
  }
  return sequence;

fail:
  // Free the handles not yet converted, skipping repeats of converted ones.
  for (size_t k = i; k < n; ++k) {
    bool seen = false;
    for (size_t j = 0; j < k && !seen; ++j) seen = handles[j] == handles[k];
    if (!seen) delete from_handle(handles[k]);
  }
  Py_XDECREF(sequence);
  return nullptr;
}

PyObject* list_get(PyObject* list, Py_ssize_t i) { return PyList_GET_ITEM(list, i); }
void list_set(PyObject* list, Py_ssize_t i, PyObject* item) { PyList_SET_ITEM(list, i, item); }
PyObject* tuple_get(PyObject* tuple, Py_ssize_t i) { return PyTuple_GET_ITEM(tuple, i); }
void tuple_set(PyObject* tuple, Py_ssize_t i, PyObject* item) { PyTuple_SET_ITEM(tuple, i, item); }

}  // namespace

extern "C" {

PyObject* aoti_cy_list_from_handles(AtenTensorOpaque** handles, size_t n) {
  return sequence_from_handles<PyList_New, list_get, list_set>(handles, n);
}

PyObject* aoti_cy_tuple_from_handles(AtenTensorOpaque** handles, size_t n) {
  return sequence_from_handles<PyTuple_New, tuple_get, tuple_set>(handles, n);
}

PyObject* aoti_cy_dtype_from_scalar_type(int scalar_type) {
  if (scalar_type < 0 ||
      scalar_type >= static_cast<int>(c10::ScalarType::NumOptions)) {
    PyErr_Format(PyExc_ValueError, "unknown dtype code %d", scalar_type);
    return nullptr;
  }
  try {
    PyObject* dtype = reinterpret_cast<PyObject*>(
        torch::getTHPDtype(static_cast<c10::ScalarType>(scalar_type)));
    Py_XINCREF(dtype);
    return dtype;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
}

AtenTensorOpaque* aoti_cy_new_handle_ref(AtenTensorOpaque* handle) {
  try {
    return to_handle(*from_handle(handle));
  } catch (...) {
    return nullptr;
  }
}

void aoti_cy_drop_refs(AotiCyTensorRef** refs, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (refs[i] == nullptr) continue;
    ImplPtr::reclaim(reinterpret_cast<c10::TensorImpl*>(refs[i]));  // dropped here
    refs[i] = nullptr;
  }
}

void aoti_cy_free_handles(AtenTensorOpaque** handles, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    AtenTensorOpaque* handle = handles[i];
    if (handle == nullptr) continue;
    // A model may write one output handle twice: free it once.
    for (size_t j = i + 1; j < n; ++j) {
      if (handles[j] == handle) handles[j] = nullptr;
    }
    delete from_handle(handle);
    handles[i] = nullptr;
  }
}

}  // extern "C"
