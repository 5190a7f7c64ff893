"""Calling a model the way the exported module was called.

The package's call spec is a pair of serialized pytree specs: the inputs, as
``(args, kwargs)``, and the outputs. ``CallSpec`` parses them once; the
container uses its fast path (no pytree) when the inputs are a flat tuple of
tensors and the outputs a flat tuple or a single tensor.
"""

import numpy as np
import torch
import torch.utils._pytree as pytree

__all__ = ["CallSpec", "OUT_GENERAL", "OUT_LEAF", "OUT_TUPLE"]

OUT_GENERAL, OUT_TUPLE, OUT_LEAF = 0, 1, 2


class CallSpec:
    """The parsed input and output specs of one model."""

    def __init__(self, in_spec_text, out_spec_text, num_inputs):
        self.in_spec = self.out_spec = None
        self.error = None
        try:
            self.in_spec = pytree.treespec_loads(in_spec_text)
            self.out_spec = pytree.treespec_loads(out_spec_text)
        except Exception as e:  # an empty or foreign spec: only run() works
            self.error = f"the model has no usable call spec ({e}); use run()"
            return
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

    def _is_args_kwargs(self):
        spec = self.in_spec
        return (spec.type is tuple and spec.num_children == 2
                and spec.child(1).type is dict)

    def flatten(self, args, kwargs):
        """The model's inputs, in order, from a call's arguments."""
        if self.error:
            raise TypeError(self.error)
        if set(kwargs) != set(self.keywords):
            raise TypeError(
                f"the model takes keyword arguments {self.keywords}, got {sorted(kwargs)}")
        try:
            leaves = self.in_spec.flatten_up_to((args, kwargs))
        except (ValueError, TypeError, KeyError) as e:
            raise TypeError(
                f"the arguments do not match the exported signature {self.in_spec}: {e}"
            ) from None
        for i, leaf in enumerate(leaves):
            if not isinstance(leaf, (torch.Tensor, np.ndarray)):
                raise TypeError(
                    f"argument leaf {i} is {type(leaf).__name__}, not a tensor: the "
                    f"compiled model takes only tensors (non-tensor arguments were "
                    f"fixed at export and cannot be passed or checked)")
        return leaves

    def unflatten(self, outputs):
        """The exported module's output structure around the model's outputs."""
        return pytree.tree_unflatten(outputs, self.out_spec)
