"""Dynamic batching: several requests concatenated along dim 0, one run,
the outputs split back.

Requests are grouped by what has to match for concatenation to make sense:
the call structure, each tensor's dtype and sizes past dim 0, and the values
of non-tensor arguments. A request that fits no other (or cannot be batched
at all: a 0-d tensor, tensors whose dim 0 sizes differ or are 0) runs alone, so a bad
request meets the model's own input checks alone and never poisons a batch.
No Ray here: a replica calls these on plain tensors.
"""

import numpy as np
import torch
import torch.utils._pytree as pytree

__all__ = ["Request", "group_requests", "merge", "split"]


class Request:
    """One call's arguments, flattened. ``key`` is None when it cannot be
    batched with others; ``rows`` is its size along dim 0; ``numpy`` whether
    it gave numpy arrays (and so gets numpy arrays back)."""

    __slots__ = ("args", "kwargs", "leaves", "spec", "key", "rows", "numpy")

    def __init__(self, args, kwargs):
        leaves, self.spec = pytree.tree_flatten((args, kwargs))
        self.numpy = any(isinstance(leaf, np.ndarray) for leaf in leaves)
        self.leaves = [torch.from_numpy(leaf) if isinstance(leaf, np.ndarray) else leaf
                       for leaf in leaves]
        # numpy arrays as tensors sharing their memory
        self.args, self.kwargs = pytree.tree_unflatten(self.leaves, self.spec)
        tensors = [leaf for leaf in self.leaves if isinstance(leaf, torch.Tensor)]
        rows = {t.shape[0] for t in tensors if t.dim() > 0}
        # Empty requests too run alone: the model's checks refuse a size of 0.
        batchable = (tensors and all(t.dim() > 0 for t in tensors) and len(rows) == 1
                     and 0 not in rows)
        self.rows = rows.pop() if batchable else None
        self.key = (str(self.spec), tuple(_leaf_key(leaf) for leaf in self.leaves)) \
            if batchable else None


def _leaf_key(leaf):
    if isinstance(leaf, torch.Tensor):
        return ("tensor", leaf.dtype, leaf.device, tuple(leaf.shape[1:]))
    return ("value", type(leaf).__name__, repr(leaf))


def group_requests(requests, max_rows=None, max_calls=None):
    """Lists of indices into ``requests``: those that can run as one batch
    together (at most ``max_rows`` rows and ``max_calls`` requests each), in
    arrival order."""
    groups, open_group = [], {}
    for i, request in enumerate(requests):
        if request.key is None:
            groups.append([i])
            continue
        group = open_group.get(request.key)
        if group is not None and (max_rows is None or group[1] + request.rows <= max_rows) \
                and (max_calls is None or len(group[0]) < max_calls):
            group[0].append(i)
            group[1] += request.rows
        else:
            group = open_group[request.key] = [[i], request.rows]
            groups.append(group[0])
    return groups


def merge(requests):
    """(args, kwargs) of one call holding every request's rows, in order."""
    first = requests[0]
    leaves = [torch.cat([r.leaves[i] for r in requests])
              if isinstance(leaf, torch.Tensor) else leaf
              for i, leaf in enumerate(first.leaves)]
    return pytree.tree_unflatten(leaves, first.spec)


def split(outputs, rows):
    """Each request's share of a batched call's ``outputs`` (sizes ``rows``
    along dim 0), or None when an output tensor has no such batch dim (the
    requests must then run one by one). Each share is a copy: a view would
    carry the whole batch's storage when pickled."""
    leaves, spec = pytree.tree_flatten(outputs)
    total = sum(rows)
    if any(isinstance(leaf, torch.Tensor) and (leaf.dim() == 0 or leaf.shape[0] != total)
           for leaf in leaves):
        return None
    shares, start = [], 0
    for count in rows:
        part = [leaf[start:start + count].clone() if isinstance(leaf, torch.Tensor) else leaf
                for leaf in leaves]
        shares.append(pytree.tree_unflatten(part, spec))
        start += count
    return shares
