"""What a model's generated C++ says about its inputs.

AOTInductor ships the wrapper source it compiled (``<stem>.wrapper.cpp``,
beside ``<stem>.wrapper.so``) in every package. Its ``check_input_<i>``
functions hold each input's dtype, static sizes and the bounds of its dynamic
dims, as the messages they would raise; ``run_impl`` reads each dynamic dim
into a size symbol (``int64_t s72 = arg23_1_size[0];``), which names the dims
several inputs share. The compiled ``.so`` keeps none of this in a readable
form, and the package holds no exported program, so this file is where
``python -m aoti_cy inspect`` learns shapes.
"""

import os
import re

import torch

__all__ = ["InputInfo", "read_inputs", "wrapper_source_for"]

# at::k<Name> in the checks' messages -> torch dtype
_DTYPES = {
    "Float": torch.float32, "Double": torch.float64, "Half": torch.float16,
    "BFloat16": torch.bfloat16, "Long": torch.int64, "Int": torch.int32,
    "Short": torch.int16, "Char": torch.int8, "Byte": torch.uint8, "Bool": torch.bool,
    "ComplexFloat": torch.complex64, "ComplexDouble": torch.complex128,
    "Float8_e4m3fn": getattr(torch, "float8_e4m3fn", None),
    "Float8_e5m2": getattr(torch, "float8_e5m2", None),
}

_MESSAGE = r'"input_handles\[(\d+)\]: '
_DTYPE = re.compile(_MESSAGE + r'unmatched dtype, "\s*<<\s*"expected: "\s*<<\s*\w+\s*<<\s*"\(at::k(\w+)\)')
_STATIC = re.compile(_MESSAGE + r'unmatched dim value at (\d+), "\s*<<\s*"expected: (-?\d+),')
_LOW = re.compile(_MESSAGE + r'dim value is too small at (\d+), "\s*<<\s*"expected it to be >= (-?\d+),')
_HIGH = re.compile(_MESSAGE + r'dim value is too large at (\d+), "\s*<<\s*"expected to be <= (-?\d+),')
_STRIDE = re.compile(_MESSAGE + r'unmatched stride value at (\d+), "\s*<<\s*"expected: (-?\d+),')
_DEVICE = re.compile(_MESSAGE + r'unmatched device type, "\s*<<\s*"expected: "\s*<<\s*\w+\s*<<\s*"\d+\((\w+)\)')
_INPUT_VAR = re.compile(r'auto (\w+) = std::move\(inputs\[(\d+)\]\);')
_SYMBOL = re.compile(r'int64_t (s\d+) = (\w+)_size\[(\d+)\];')


class InputInfo:
    """One input as its generated check sees it: ``dtype`` (a torch dtype or
    None), ``device_type`` ("cpu", "cuda", ... or None) and ``dims``, one
    dict per dim: ``{"size": n}`` for a static dim, ``{"symbol": "s72",
    "min": lo, "max": hi}`` for a dynamic one (``max`` None when unbounded,
    ``symbol`` None when the model reads no symbol for it); ``strides`` maps
    dims to the static strides the check compares."""

    def __init__(self):
        self.dtype = None
        self.device_type = None
        self.dims = {}
        self.strides = {}     # dim -> the static stride the check compares

    @property
    def rank(self):
        return max(self.dims) + 1 if self.dims else 0


def wrapper_source_for(library_path):
    """The generated wrapper source beside a model library, or None."""
    candidate = os.path.splitext(os.fspath(library_path))[0] + ".cpp"
    return candidate if os.path.isfile(candidate) else None


def read_inputs(source_path, num_inputs):
    """One InputInfo per input, from the wrapper source at ``source_path``."""
    with open(source_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    inputs = [InputInfo() for _ in range(num_inputs)]

    def at(index):
        index = int(index)
        return inputs[index] if index < num_inputs else InputInfo()

    def dim(index, d):
        return at(index).dims.setdefault(int(d), {})

    for index, name in _DTYPE.findall(text):
        at(index).dtype = _DTYPES.get(name)
    for index, name in _DEVICE.findall(text):
        at(index).device_type = name
    for index, d, size in _STATIC.findall(text):
        dim(index, d)["size"] = int(size)
    for index, d, low in _LOW.findall(text):
        dim(index, d)["min"] = int(low)
    for index, d, high in _HIGH.findall(text):
        dim(index, d)["max"] = int(high)
    for index, d, stride in _STRIDE.findall(text):
        at(index).strides[int(d)] = int(stride)
        dim(index, d)
    variables = {name: int(index) for name, index in _INPUT_VAR.findall(text)}
    for symbol, variable, d in _SYMBOL.findall(text):
        if variable in variables:
            dim(variables[variable], d)["symbol"] = symbol
    for info in inputs:
        for d in range(info.rank):
            entry = info.dims.setdefault(d, {})
            if "size" not in entry:
                entry.setdefault("symbol", None)
                entry.setdefault("min", 0)
                entry.setdefault("max", None)
    _match_unread_dims(inputs)
    return inputs


def _match_unread_dims(inputs):
    """A dynamic dim the model reads no symbol for is one export made equal
    to another input's (the model reads each symbol once, from its first
    input). It takes the symbol of the one read dim with the same bounds;
    with several such, it stays None and ``candidates`` lists them."""
    read = {}
    for info in inputs:
        for entry in info.dims.values():
            if entry.get("symbol"):
                read.setdefault(entry["symbol"], (entry["min"], entry["max"]))
    for info in inputs:
        for entry in info.dims.values():
            if "size" not in entry and entry["symbol"] is None:
                same = [s for s, bounds in read.items()
                        if bounds == (entry["min"], entry["max"])]
                if len(same) == 1:
                    entry["symbol"] = same[0]
                else:
                    entry["candidates"] = same
