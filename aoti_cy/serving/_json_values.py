"""One tensor from a JSON value, refused unless it holds exactly what was sent.

``torch.tensor(value, dtype=...)`` converts silently: 1.7 becomes 1 for an
int64 input, ``true`` becomes 1.0, 300 wraps to 44 in uint8. Here a value is
taken only when the tensor holds it exactly:

- a bool input takes JSON ``true``/``false`` only;
- an integer input takes JSON integers only (no ``1.0``, no bools), each
  within the dtype's range; NaN and infinities are not integers;
- a floating-point input takes numbers (no bools): an integer only when the
  dtype holds it exactly (16777217 is refused for float32, 2049 for
  float16); a number with a fraction or exponent is rounded to the nearest
  value of the dtype, as any decimal is, but refused when it is finite and
  beyond the dtype's range (it would become infinite); NaN and infinities
  (Python's JSON reads ``NaN``, ``Infinity``) are taken as they are;
- the nested lists must be rectangular (no ragged lists) and hold only
  numbers (no strings, nulls or objects);
- complex and other dtypes are refused: JSON has no way to spell them.

Without a known dtype (no example inputs), the values pick it: all bools
-> bool, all integers -> int64, any other number -> torch's default dtype
(float32), under the same rules.
"""

import torch

__all__ = ["JSONInputError", "tensor_from_json"]

_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
            torch.uint16, torch.uint32, torch.uint64)
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class JSONInputError(ValueError):
    """A JSON value that the input it is meant for cannot hold exactly."""


def tensor_from_json(value, dtype, where):
    """The tensor of ``dtype`` (None: chosen by the values) holding ``value``
    (a number or nested lists of numbers) exactly; :class:`JSONInputError`
    naming ``where`` and the first offending element otherwise."""
    shape, flat = _shape_and_values(value, where)
    if dtype is None:
        dtype = _inferred_dtype(flat, where, shape)
    if dtype is torch.bool:
        _require(flat, shape, where, lambda v: type(v) is bool, "true or false", dtype)
        return torch.tensor(flat, dtype=dtype).reshape(shape)
    if dtype in _INTEGER:
        _require(flat, shape, where, lambda v: type(v) is int, "an integer", dtype)
        info = torch.iinfo(dtype)
        for i, v in enumerate(flat):
            if not info.min <= v <= info.max:
                raise JSONInputError(
                    f"{where}: element {_position(i, shape)} is {_digits(v)}, out of the range of "
                    f"{_name(dtype)} [{info.min}, {info.max}]")
        return torch.tensor(flat, dtype=dtype).reshape(shape)
    if dtype in _FLOAT:
        _require(flat, shape, where, lambda v: type(v) in (int, float), "a number", dtype)
        _check_integers_exact(flat, shape, dtype, where)
        as_double = torch.tensor([float(v) for v in flat], dtype=torch.float64)
        converted = as_double.to(dtype)
        overflow = torch.isinf(converted) & torch.isfinite(as_double)
        if overflow.any():
            i = int(overflow.nonzero()[0, 0])
            raise JSONInputError(
                f"{where}: element {_position(i, shape)} is {flat[i]!r}, beyond the range of "
                f"{_name(dtype)} (largest {torch.finfo(dtype).max:g})")
        return converted.reshape(shape)
    raise JSONInputError(f"{where}: the model takes {_name(dtype)} here, which the JSON "
                         f"route cannot build; call through a handle instead")


def _shape_and_values(value, where):
    """(shape, flat list of leaves) of a number or rectangular nested lists."""
    if not isinstance(value, list):
        if type(value) not in (bool, int, float):
            raise JSONInputError(f"{where}: expected a number or nested lists of numbers, "
                                 f"got {_kind(value)}")
        return (), [value]
    shape, level = [], [value]
    while True:
        size = len(level[0])
        for i, node in enumerate(level):
            if len(node) != size:
                raise JSONInputError(
                    f"{where}: ragged nested lists: the list at {_position(i, shape)} has "
                    f"{len(node)} items where the first at its depth has {size}")
        shape.append(size)
        children = [child for node in level for child in node]
        if not children:
            return tuple(shape), []
        nested = [isinstance(child, list) for child in children]
        if all(nested):
            level = children
            continue
        if any(nested):
            i = nested.index(not nested[0])
            raise JSONInputError(
                f"{where}: ragged nested lists: element {_position(i, tuple(shape))} is "
                f"{'a list' if nested[i] else _kind(children[i])} where "
                f"{'lists' if nested[0] else 'numbers'} are at its depth")
        return tuple(shape), children


def _inferred_dtype(flat, where, shape):
    kinds = {type(v) for v in flat}
    if kinds <= {bool} and kinds:
        return torch.bool
    if bool in kinds:
        i = next(i for i, v in enumerate(flat) if type(v) is bool)
        raise JSONInputError(f"{where}: element {_position(i, shape)} is a bool among "
                             f"numbers; a tensor holds one or the other")
    if kinds <= {int}:
        return torch.int64
    return torch.get_default_dtype()


def _require(flat, shape, where, accepted, wanted, dtype):
    for i, v in enumerate(flat):
        if not accepted(v):
            raise JSONInputError(
                f"{where}: element {_position(i, shape)} is {_show(v)}, where the model takes "
                f"{_name(dtype)} ({wanted}; values are never converted)")


def _check_integers_exact(flat, shape, dtype, where):
    """JSON integers for a float input: only those ``dtype`` holds exactly."""
    indices = [i for i, v in enumerate(flat) if type(v) is int]
    if not indices:
        return
    for i in indices:   # exact in float64 first (Python compares int and float exactly)
        try:
            exact = float(flat[i]) == flat[i]
        except OverflowError:
            exact = False
        if not exact:
            break
    else:
        values = torch.tensor([float(flat[i]) for i in indices], dtype=torch.float64)
        inexact = values.to(dtype).to(torch.float64) != values
        if not inexact.any():
            return
        i = indices[int(inexact.nonzero()[0, 0])]
    raise JSONInputError(
        f"{where}: element {_position(i, shape)} is the integer {_digits(flat[i])}, which "
        f"{_name(dtype)} cannot hold exactly")


def _position(index, shape):
    """The nested-list index (``[1][0]``) of the ``index``-th element of a
    row-major ``shape``."""
    if not shape:
        return "(the value)"
    parts = []
    for size in reversed(shape):
        index, rest = divmod(index, size) if size else (index, 0)
        parts.append(rest)
    return "".join(f"[{p}]" for p in reversed(parts))


def _name(dtype):
    return str(dtype).removeprefix("torch.")


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value!r}"[:80]
    if isinstance(value, dict):
        return "an object"
    if type(value) in (int, float):
        return f"the number {_digits(value)}"
    return type(value).__name__


def _show(value):
    if type(value) is bool:
        return f"{str(value).lower()} (a bool)"
    if type(value) is float:
        return f"{value!r} (a float)"
    if type(value) is int:
        return f"{_digits(value)} (an integer)"
    return _kind(value)


def _digits(value):
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"
