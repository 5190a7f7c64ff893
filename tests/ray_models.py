"""Models for the Ray Serve tests and benchmark: exported with a dynamic
batch dim, compiled once into the aoti_cy.testing cache."""

import torch
from torch.export import Dim

from aoti_cy.testing import compile_package, make_model

WIDTH = 16


class Scorer(torch.nn.Module):
    """A keyword argument and a dict output, batch along dim 0 of all."""

    def __init__(self, width=WIDTH):
        super().__init__()
        self.proj = torch.nn.Linear(width, width)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x, *, bias):
        hidden = torch.tanh(self.proj(x) + bias)
        return {"scores": self.head(hidden), "norm": hidden.norm(dim=-1)}


def scorer_call(rows=2, seed=1, dtype=torch.float32, width=WIDTH):
    g = torch.Generator().manual_seed(seed)
    return ((torch.randn(rows, width, generator=g).to(dtype),),
            {"bias": torch.randn(rows, width, generator=g).to(dtype)})


def scorer_package(width=WIDTH):
    """A .pt2 of ``Scorer(width)`` with a dynamic batch of 1 to 64 rows."""
    args, kwargs = scorer_call(width=width)
    batch = Dim("batch", min=1, max=64)
    return compile_package(Scorer, args, kwargs=kwargs, init_args=(width,),
                           dynamic_shapes={"x": {0: batch}, "bias": {0: batch}},
                           inductor_configs={"always_keep_tensor_constants": True})


def scorer_eager(width=WIDTH):
    return make_model(Scorer, (width,))
