"""Reading the extern nodes a model calls through the proxy executor.

AOTInductor writes the ops it could not compile, and had no C shim for, to a
``.json`` beside the model library (``<stem>.wrapper.json`` next to
``<stem>.wrapper.so``): ``{"nodes": [{"node": {"target": ..., "inputs":
[...], "outputs": [...], "metadata": {...}}}, ...]}``, the node at index *i*
being the one the model calls as extern node *i*. This module checks the
file's structure and reduces every argument to its kind and the values that
kind carries (:class:`Arg`); csrc/proxy_executor.cpp then matches them to the
op's schema. Anything malformed is a PackageError naming the node.
"""

import json
import math
import os
from collections import namedtuple

from aoti_cy.errors import PackageError

__all__ = ["Arg", "Node", "json_path_for", "read_nodes"]

Node = namedtuple("Node", "target op_name overload custom_op inputs outputs")
Node.__doc__ = """One extern node: ``target`` as serialized (``ns::op.overload``),
split into ``op_name`` and ``overload`` (``""`` for the default); ``custom_op``
when torch marked it as a ``torch.library.custom_op`` or such an op of that
name is defined in this process; ``inputs`` and
``outputs`` tuples of :class:`Arg`."""

Arg = namedtuple("Arg", "name kind count ints floats strings")
Arg.__doc__ = """One serialized argument or output: ``name`` (the schema
argument's, ``""`` for outputs), ``kind`` (the JSON key, e.g. ``"as_tensor"``)
and its values: ``count`` (list lengths), ``ints``, ``floats``, ``strings``."""

INT64 = (-(1 << 63), (1 << 63) - 1)
# How torch's serializer writes floats JSON has no numbers for.
SPECIAL_FLOATS = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}

# Argument kinds that name torchbind objects: refused (see docs/fallback-ops.md).
TORCHBIND_KINDS = ("as_custom_obj",)


class _Malformed(Exception):
    """A structural problem, reported with the node it is in."""


def json_path_for(library_path):
    """Where torch puts the extern nodes of the model at ``library_path``."""
    return os.path.splitext(os.fspath(library_path))[0] + ".json"


def read_nodes(path):
    """The nodes of the extern-node file at ``path``, as a tuple of Node;
    PackageError when it is unreadable, not JSON or malformed."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise PackageError(f"cannot read the model's extern nodes {path}: {e}") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
        raise PackageError(
            f"the model's extern nodes {path} are not valid JSON: {e}") from None
    if not isinstance(document, dict) or not isinstance(document.get("nodes"), list):
        raise PackageError(
            f"the model's extern nodes {path} are malformed: expected an object "
            f"with a \"nodes\" list")
    nodes = []
    for index, entry in enumerate(document["nodes"]):
        try:
            nodes.append(_node(entry))
        except _Malformed as e:
            raise PackageError(
                f"extern node {index} of {path} is malformed: {e}") from None
        except PackageError as e:
            raise PackageError(f"extern node {index} of {path}: {e}") from None
    return tuple(nodes)


def _node(entry):
    if not isinstance(entry, dict) or not isinstance(entry.get("node"), dict):
        raise _Malformed('expected {"node": {...}}')
    node = entry["node"]
    target = node.get("target")
    if not isinstance(target, str):
        raise _Malformed("its target is not a string")
    if target == "call_torchbind":
        raise PackageError(
            "call_torchbind (a method of a torchbind object) is not supported by "
            "aoti_cy's proxy executor")
    op_name, _, overload = target.partition(".")
    namespace, sep, name = op_name.partition("::")
    if not sep or not namespace or not name or "." in overload or "\x00" in target:
        raise _Malformed(f"target {target!r} is not of the form namespace::op.overload")
    inputs, outputs = node.get("inputs"), node.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise _Malformed("its inputs and outputs must be lists")
    metadata = node.get("metadata")
    custom_op = ((isinstance(metadata, dict)
                  and metadata.get("torch_library_custom_op") == "1")
                 or _registered_custom_op(op_name))
    return Node(target, op_name, overload, custom_op,
                tuple(map(_input, inputs)), tuple(_arg("", o, "output") for o in outputs))


def _registered_custom_op(op_name):
    """Whether ``op_name`` (``ns::op``) is a ``torch.library.custom_op`` defined
    in this process. Some torch releases write no ``torch_library_custom_op``
    mark into the node's metadata; the op's definition, once its module is
    imported, says the same."""
    try:
        from torch._library.custom_ops import OPDEFS
    except ImportError:
        return False
    return op_name in OPDEFS


def _input(named):
    if not isinstance(named, dict) or not isinstance(named.get("name"), str):
        raise _Malformed('an input is not {"name": ..., "arg": ...}')
    return _arg(named["name"], named.get("arg"), f"argument {named['name']!r}")


def _single(value, what):
    """The (key, value) of a one-key object such as {"as_int": 3}."""
    if not isinstance(value, dict) or len(value) != 1:
        raise _Malformed(f"{what} is not an object with one key")
    (key, inner), = value.items()
    return key, inner


def _int(value, what):
    if type(value) is not int or not INT64[0] <= value <= INT64[1]:
        raise _Malformed(f"{what}: {value!r} is not a 64-bit int")
    return value


def _float(value, what):
    if isinstance(value, str) and value in SPECIAL_FLOATS:
        return SPECIAL_FLOATS[value]
    if type(value) is int:
        return float(value)
    if type(value) is not float:
        raise _Malformed(f"{what}: {value!r} is not a number")
    return value


def _bool(value, what):
    if type(value) is not bool:
        raise _Malformed(f"{what}: {value!r} is not a bool")
    return int(value)


def _str(value, what):
    if not isinstance(value, str) or "\x00" in value:
        raise _Malformed(f"{what}: {value!r} is not a string")
    return value


def _list(value, what):
    if not isinstance(value, list):
        raise _Malformed(f"{what}: expected a list")
    return value


def _tensor(value, what):
    if not isinstance(value, dict):
        raise _Malformed(f"{what}: a tensor is not an object")


def _sym_int(value, what):
    """A SymInt argument: {"as_int": n} or {"as_name": "s0"} (value unknown)."""
    key, inner = _single(value, what)
    if key == "as_int":
        return _int(inner, what)
    if key == "as_name":
        _str(inner, what)
        return 0
    raise _Malformed(f"{what}: a symbolic int is {key!r}")


def _arg(name, value, what):
    kind, inner = _single(value, what)

    def make(count=0, ints=(), floats=(), strings=()):
        return Arg(name, kind, count, tuple(ints), tuple(floats), tuple(strings))

    if kind == "as_none":
        return make()
    if kind == "as_tensor":
        _tensor(inner, what)
        return make()
    if kind == "as_tensors":
        for item in _list(inner, what):
            _tensor(item, what)
        return make(count=len(inner))
    if kind in ("as_optional_tensors", "as_optional_tensor"):
        items = _list(inner, what) if kind == "as_optional_tensors" else [inner]
        flags = []
        for item in items:
            key, tensor = _single(item, what)
            if key == "as_tensor":
                _tensor(tensor, what)
            elif key != "as_none":
                raise _Malformed(f"{what}: an optional tensor is {key!r}")
            flags.append(int(key == "as_tensor"))
        return make(count=sum(flags), ints=flags)
    if kind == "as_int":
        return make(ints=[_int(inner, what)])
    if kind == "as_sym_int":
        return make(ints=[_sym_int(inner, what)])
    if kind == "as_ints":
        return make(count=len(_list(inner, what)), ints=[_int(v, what) for v in inner])
    if kind == "as_sym_ints":
        return make(count=len(_list(inner, what)), ints=[_sym_int(v, what) for v in inner])
    if kind == "as_float":
        return make(floats=[_float(inner, what)])
    if kind == "as_floats":
        return make(count=len(_list(inner, what)), floats=[_float(v, what) for v in inner])
    if kind == "as_bool":
        return make(ints=[_bool(inner, what)])
    if kind == "as_bools":
        return make(count=len(_list(inner, what)), ints=[_bool(v, what) for v in inner])
    if kind == "as_string":
        return make(strings=[_str(inner, what)])
    if kind == "as_strings":
        return make(count=len(_list(inner, what)), strings=[_str(v, what) for v in inner])
    if kind in ("as_scalar_type", "as_memory_format", "as_layout"):
        return make(ints=[_int(inner, what)])
    if kind == "as_device":
        if not isinstance(inner, dict):
            raise _Malformed(f"{what}: a device is not an object")
        index = inner.get("index")
        return make(strings=[_str(inner.get("type"), what)],
                    ints=[-1 if index is None else _int(index, what)])
    if kind in TORCHBIND_KINDS:
        raise PackageError(
            f"{what} is a torchbind object ({kind}): torchbind objects are not "
            f"supported by aoti_cy's proxy executor")
    raise PackageError(
        f"{what} is serialized as {kind!r}, which aoti_cy's proxy executor does "
        f"not support")
