"""The HTTP route's JSON: simple inputs as nested lists, turned into the
call the exported module takes, and outputs back into JSON.

A request body is ``{"args": [...], "kwargs": {...}}`` (either may be left
out), or a bare list (the positional arguments). The structure follows the
model's input spec: a tuple or list in the spec takes a JSON list, a dict a
JSON object with the same keys. At a leaf where the model takes a tensor
(known from the example inputs), the value must fit that tensor's dtype
exactly (``_json_values``: nothing is converted); without example inputs a
list or number becomes a tensor of the dtype its values pick, and a bool,
string or null is passed as it is (non-tensor arguments fixed at export,
e.g. ``return_dict``).
"""

import torch
import torch.utils._pytree as pytree

from aoti_cy.serving._json_values import JSONInputError, tensor_from_json

__all__ = ["JSONInputError", "call_from_json", "leaf_dtypes", "to_json"]


def _walk(spec, value, leaf, where="input"):
    """Rebuild ``value`` along ``spec``, replacing its leaves by
    ``leaf(value, where)`` (``where`` names the leaf's path)."""
    def walk(node, item, where):
        if node.is_leaf():
            return leaf(item, where)
        if node.type in (tuple, list):
            if not isinstance(item, (list, tuple)) or len(item) != node.num_children:
                raise TypeError(f"{where}: expected a list of {node.num_children} "
                                f"items, got {_describe(item)}")
            return node.type(walk(child, part, _label(where, i))
                             for i, (child, part) in enumerate(zip(node.children(), item)))
        if node.type is dict:
            keys = list(node.context)
            if not isinstance(item, dict) or set(item) != set(keys):
                raise TypeError(f"{where}: expected an object with keys {keys}, got "
                                f"{sorted(item) if isinstance(item, dict) else _describe(item)}")
            return {k: walk(child, item[k], f"{where}[{k!r}]")
                    for k, child in zip(keys, node.children())}
        raise TypeError(f"{where}: the model takes a {node.type.__name__} here, which "
                        f"the JSON route cannot build; call through a handle instead")
    return walk(spec, value, where)


def _label(where, i):
    return ("args", "kwargs")[i] if where == "body" else f"{where}[{i}]"


def _describe(item):
    return f"a list of {len(item)}" if isinstance(item, (list, tuple)) else type(item).__name__


def _args_kwargs(spec, kwargs):
    """``spec`` (the model's (args, kwargs)) for a call giving the keywords
    in ``kwargs``: those of non-tensor arguments may be left out, as in a
    handle call (a tensor left out is then reported as missing)."""
    if not (spec.type is tuple and spec.num_children == 2 and spec.child(1).type is dict):
        raise TypeError("the model's input spec is not (args, kwargs); the JSON route needs it")
    args_spec, kwargs_spec = spec.children()
    expected = list(kwargs_spec.context)
    unknown = sorted(set(kwargs) - set(expected)) if isinstance(kwargs, dict) else []
    if unknown:
        raise TypeError(f"kwargs: the model takes no keyword {unknown[0]!r}"
                        f"{f' (nor {unknown[1:]})' if len(unknown) > 1 else ''}; "
                        f"its keywords are {expected}")
    kept = [k for i, k in enumerate(expected)
            if k in kwargs or not kwargs_spec.child(i).is_leaf()]
    if kept == expected or not isinstance(kwargs, dict):
        return spec
    kwargs_spec = pytree.TreeSpec(dict, kept, [kwargs_spec.child(expected.index(k)) for k in kept])
    return pytree.TreeSpec(tuple, None, [args_spec, kwargs_spec])


def leaf_dtypes(in_spec, example):
    """{leaf path: dtype} of the tensors of ``example`` ((args, kwargs)), the
    paths as the JSON route names them."""
    dtypes = {}

    def note(value, where):
        if isinstance(value, torch.Tensor):
            dtypes[where] = value.dtype
    args, kwargs = example
    _walk(_args_kwargs(in_spec, kwargs), [args, kwargs], note, "body")
    return dtypes


def call_from_json(in_spec, body, dtypes=None):
    """(args, kwargs) for the model from a decoded JSON body; ``dtypes`` as
    :func:`leaf_dtypes` gives them. Raises ``TypeError`` for a body that does
    not follow the input spec and :class:`JSONInputError` (a ``ValueError``)
    for a value its input cannot hold exactly, both naming the input."""
    if isinstance(body, list):
        body = {"args": body}
    if not isinstance(body, dict) or set(body) - {"args", "kwargs"}:
        raise TypeError('the body must be a list of arguments or an object with '
                        '"args" and/or "kwargs"')
    args, kwargs = body.get("args", []), body.get("kwargs", {})
    spec = _args_kwargs(in_spec, kwargs)

    def tensor(value, where):
        if dtypes and where in dtypes:
            return tensor_from_json(value, dtypes[where], where)
        if not dtypes and isinstance(value, (list, int, float)) and not isinstance(value, bool):
            return tensor_from_json(value, None, where)
        return value
    return _walk(spec, [args, kwargs], tensor, "body")


def to_json(outputs):
    """Outputs as JSON-ready values: tensors as nested lists, tuples as lists."""
    def convert(value):
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().tolist()
        if hasattr(value, "tolist"):      # numpy
            return value.tolist()
        return value
    leaves, spec = pytree.tree_flatten(outputs)
    rebuilt = pytree.tree_unflatten([convert(v) for v in leaves], spec)
    return _plain(rebuilt)


def _plain(value):
    if isinstance(value, dict):   # ModelOutput too
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
