// How messages name dtypes and tensors: as the Python user writes them
// (torch.int64, not 4(at::kLong)). Header-only, for the checks' slow paths.
#pragma once

#include <ATen/core/Tensor.h>

#include <exception>
#include <string>

// "torch.int64" for c10::ScalarType::Long, and so on.
inline std::string aoti_cy_dtype_name(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Byte: return "torch.uint8";
    case c10::ScalarType::Char: return "torch.int8";
    case c10::ScalarType::Short: return "torch.int16";
    case c10::ScalarType::Int: return "torch.int32";
    case c10::ScalarType::Long: return "torch.int64";
    case c10::ScalarType::Half: return "torch.float16";
    case c10::ScalarType::Float: return "torch.float32";
    case c10::ScalarType::Double: return "torch.float64";
    case c10::ScalarType::ComplexHalf: return "torch.complex32";
    case c10::ScalarType::ComplexFloat: return "torch.complex64";
    case c10::ScalarType::ComplexDouble: return "torch.complex128";
    case c10::ScalarType::Bool: return "torch.bool";
    case c10::ScalarType::BFloat16: return "torch.bfloat16";
    case c10::ScalarType::Float8_e5m2: return "torch.float8_e5m2";
    case c10::ScalarType::Float8_e4m3fn: return "torch.float8_e4m3fn";
    default: return std::string("torch.") + c10::toString(type);
  }
}

// "torch.float32 [2, 9] on cpu".
inline std::string aoti_cy_describe_tensor(const at::Tensor& tensor) {
  if (!tensor.defined()) return "an undefined tensor";
  std::string text = aoti_cy_dtype_name(tensor.scalar_type()) + " ";
  try {
    text += c10::str(tensor.sizes());
  } catch (const std::exception&) {
    text += "(no plain sizes)";
  }
  return text + " on " + tensor.device().str();
}
