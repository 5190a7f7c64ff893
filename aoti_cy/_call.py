"""Calling a model the way the exported module was called.

The package's call spec is a pair of serialized pytree specs: the inputs, as
``(args, kwargs)``, and the outputs. ``CallSpec`` parses them once; the
container uses its fast path (no pytree) when the inputs are a flat tuple of
tensors and the outputs a flat tuple or a single tensor.

Non-tensor arguments of the export call (``return_dict=False``, a flag, an
int list) were fixed at export: the compiled model takes only the tensors.
As torch's own ``AOTICompiledModel`` does, a call may pass them as at export
and they are dropped; they may also be left out. Their exported values are
not stored in the package, so a different value cannot be detected.
"""

import json

import numpy as np
import torch
import torch.utils._pytree as pytree

__all__ = ["CallSpec", "OUT_GENERAL", "OUT_LEAF", "OUT_TUPLE"]

OUT_GENERAL, OUT_TUPLE, OUT_LEAF = 0, 1, 2


def _unregistered_types(spec_text):
    """Serialized type names in a spec that pytree does not know here."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind not in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
                found.add(kind)
            for child in node.get("children_spec") or ():
                walk(child)
    try:
        document = json.loads(spec_text)
        walk(document[1] if isinstance(document, list) and len(document) == 2 else document)
    except (ValueError, TypeError, IndexError):
        pass
    return sorted(found)


class CallSpec:
    """The parsed input and output specs of one model."""

    def __init__(self, in_spec_text, out_spec_text, num_inputs):
        self._texts = (in_spec_text, out_spec_text)
        self.num_inputs = num_inputs
        self.keywords = []
        self.flat_inputs = False
        self.out_kind = OUT_GENERAL
        self.in_spec = self.out_spec = None
        self.error = "not parsed yet"
        self._parse()

    def _parse(self):
        """Parse the specs; on failure keep the reason in ``error`` (tried
        again at the next call: the module registering a type may be
        imported after loading)."""
        try:
            in_spec = pytree.treespec_loads(self._texts[0])
            out_spec = pytree.treespec_loads(self._texts[1])
        except Exception as e:  # an empty, foreign or unregistered spec
            missing = _unregistered_types(self._texts[0]) + _unregistered_types(self._texts[1])
            if missing:
                modules = sorted({name.rpartition(".")[0] for name in missing})
                self.error = (
                    f"the model's call spec uses {', '.join(missing)}, not registered "
                    f"with pytree in this process: import {', '.join(modules)} (the "
                    f"module that registers it) before calling the model, or use run()")
            else:
                self.error = f"the model has no usable call spec ({e}); use run()"
            return
        # Assigned only once parsed: another thread may be calling.
        self.in_spec, self.out_spec = in_spec, out_spec
        num_inputs = self.num_inputs
        args_spec = self.in_spec.child(0) if self._is_args_kwargs() else None
        self.keywords = (list(self.in_spec.child(1).context)
                         if args_spec is not None else [])
        self.flat_inputs = (
            args_spec is not None and args_spec.type is tuple and not self.keywords
            and args_spec.num_children == num_inputs
            and all(args_spec.child(i).is_leaf() for i in range(num_inputs)))
        if self.out_spec.is_leaf():
            self.out_kind = OUT_LEAF
        elif self.out_spec.type is tuple and all(
                self.out_spec.child(i).is_leaf()
                for i in range(self.out_spec.num_children)):
            self.out_kind = OUT_TUPLE
        else:
            self.out_kind = OUT_GENERAL
        self.error = None

    def _usable(self):
        if self.error is not None:
            self._parse()
            if self.error is not None:
                raise TypeError(self.error)

    def _is_args_kwargs(self):
        spec = self.in_spec
        return (spec.type is tuple and spec.num_children == 2
                and spec.child(1).type is dict)

    def flatten(self, args, kwargs):
        """The model's inputs, in order, from a call's arguments."""
        self._usable()
        unknown = sorted(set(kwargs) - set(self.keywords))
        if unknown:
            raise TypeError(f"the model takes keyword arguments {self.keywords}, "
                            f"got unexpected {unknown}")
        ordered = {k: kwargs[k] for k in self.keywords if k in kwargs}
        if len(ordered) == len(self.keywords):
            try:
                leaves = self.in_spec.flatten_up_to((args, ordered))
            except (ValueError, TypeError, KeyError) as e:
                raise TypeError(
                    f"the arguments do not match the exported signature "
                    f"{self.in_spec}: {e}") from None
            if self.in_spec.num_leaves == self.num_inputs:
                # Every leaf was a tensor at export: name the one that is not.
                for i, leaf in enumerate(leaves):
                    if not isinstance(leaf, (torch.Tensor, np.ndarray)):
                        raise TypeError(
                            f"argument leaf {i} is {type(leaf).__name__}, not a tensor: "
                            f"the model was exported with a tensor there")
        else:   # keywords left out: only non-tensor ones may be
            leaves = self._positional_leaves(args) + pytree.tree_leaves(ordered)
        tensors = [leaf for leaf in leaves if isinstance(leaf, (torch.Tensor, np.ndarray))]
        if len(tensors) != self.num_inputs:
            left_out = ""
            if len(ordered) != len(self.keywords):
                left_out = (f"the model takes keyword arguments {self.keywords}, got "
                            f"{sorted(kwargs)} (only non-tensor ones may be left out); ")
            raise TypeError(
                f"{left_out}the call holds {len(tensors)} tensors, the model takes "
                f"{self.num_inputs} (signature {self.in_spec}); non-tensor "
                f"arguments were fixed at export and are ignored")
        return tensors

    def _positional_leaves(self, args):
        """The leaves of the positional arguments, which must be as many as at
        export: a positional tensor standing in for a left-out keyword would
        be matched to the export's keyword order, not the forward signature's
        (a tokenizer's ``input_ids, token_type_ids, attention_mask`` against
        BERT's ``forward(input_ids, attention_mask, token_type_ids)``)."""
        if not self._is_args_kwargs():
            return pytree.tree_leaves(args)
        args_spec = self.in_spec.child(0)
        try:
            return args_spec.flatten_up_to(tuple(args))
        except (ValueError, TypeError, KeyError):
            raise TypeError(
                f"the model was exported with {args_spec.num_children} positional "
                f"argument(s) and keyword arguments {self.keywords}; got {len(args)} "
                f"positional: call it as exported, giving the rest by keyword") from None

    def unflatten(self, outputs):
        """The exported module's output structure around the model's outputs."""
        self._usable()
        return pytree.tree_unflatten(outputs, self.out_spec)
