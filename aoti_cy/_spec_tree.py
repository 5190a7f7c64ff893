"""Serialized pytree specs as trees of named leaves, for people.

Works on the JSON text itself, so a spec whose types are not registered in
this process (a ``transformers`` ``ModelOutput`` before ``transformers`` is
imported) still shows its structure and field names.
"""

import json

__all__ = ["Node", "leaves", "input_roots", "output_roots", "parse_spec"]


class Node:
    """One node of a spec: ``kind`` ("leaf", "tuple", "list", "dict" or a
    class name), ``children`` a list of (key, Node), where key is an int
    (position) or a str (dict key or field name); ``leaf`` the leaf's index in
    flattening order for a leaf."""

    def __init__(self, kind, children=(), leaf=None):
        self.kind = kind
        self.children = list(children)
        self.leaf = leaf

    def to_json(self):
        if self.kind == "leaf":
            return {"leaf": self.leaf}
        return {"type": self.kind,
                "children": [{"key": key, **child.to_json()} for key, child in self.children]}


_SHORT = {"builtins.tuple": "tuple", "builtins.list": "list", "builtins.dict": "dict",
          "collections.OrderedDict": "OrderedDict", "collections.defaultdict": "defaultdict"}


def parse_spec(text):
    """The Node tree of a serialized spec (``[version, tree]`` JSON), or None
    when the text is empty or not a spec."""
    try:
        document = json.loads(text)
        tree = document[1] if isinstance(document, list) and len(document) == 2 else document
        counter = [0]
        return _node(tree, counter)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return None


def _node(tree, counter):
    kind = tree.get("type")
    children = tree.get("children_spec") or []
    if kind is None and not children:
        counter[0] += 1
        return Node("leaf", leaf=counter[0] - 1)
    keys = _keys(tree.get("context"), len(children))
    name = _SHORT.get(kind, str(kind).rpartition(".")[2])
    return Node(name, [(key, _node(child, counter)) for key, child in zip(keys, children)])


def _keys(context, count):
    """Field names or dict keys from a node's context, else positions."""
    try:
        value = json.loads(context) if isinstance(context, str) else context
    except ValueError:
        value = None
    if isinstance(value, list) and len(value) == count and all(
            isinstance(k, (str, int)) for k in value):
        return value
    return list(range(count))


def input_roots(node):
    """The top-level arguments of an input spec ``(args, kwargs)`` as
    (name, Node): ``args[i]`` for positional ones, the key for keywords.
    Other shapes of spec come back as one root named ``inputs``."""
    if (node is not None and node.kind == "tuple" and len(node.children) == 2
            and node.children[1][1].kind == "dict"):
        args, kwargs = node.children[0][1], node.children[1][1]
        return ([(f"args[{key}]", child) for key, child in args.children]
                + [(str(key), child) for key, child in kwargs.children])
    return [("inputs", node)] if node is not None else []


def output_roots(node):
    """The top level of an output spec as (name, Node): a single tensor is
    ``output``; a container's entries are named by their key."""
    if node is None:
        return []
    if node.kind == "leaf":
        return [("output", node)]
    return [(child_path("", node.kind, key), child) for key, child in node.children]


def child_path(parent, parent_kind, key):
    """The path of a child: ``a[0]``, ``a['x']``, ``a.logits``; a top-level
    key (``parent`` empty) is the bare name or ``[i]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if not parent:
        return key
    if parent_kind in ("dict", "OrderedDict", "defaultdict"):
        return f"{parent}[{key!r}]"
    return f"{parent}.{key}"


def leaves(roots):
    """(path, leaf index) of every leaf under ``roots`` ((name, Node)
    pairs), in flattening order."""
    found = []

    def walk(path, node):
        if node.kind == "leaf":
            found.append((path, node.leaf))
            return
        for key, child in node.children:
            walk(child_path(path, node.kind, key), child)
    for name, node in roots:
        walk(name, node)
    return found
