"""Models whose compiled graph calls back into the dispatcher through the
proxy executor: Python ``torch.library.custom_op`` ops and aten ops that have
no C shim.

Importing this module registers the ``aoti_cy_test`` ops; a package that uses
them loads only in a process that imported it (as with any custom op).
"""

from typing import Optional

import torch
from torch import Tensor

from aoti_cy.testing import Example

__all__ = ["EXAMPLES"]


# ---- custom ops: between them, every argument kind the executor decodes ------

@torch.library.custom_op("aoti_cy_test::mix", mutates_args=())
def mix(x: Tensor, others: list[Tensor], bias: Optional[Tensor], gate: Optional[Tensor],
        alpha: float, k: int, sizes: list[int], flag: bool, mode: str,
        dtype: torch.dtype, beta: float = 0.5) -> tuple[Tensor, Tensor]:
    """Tensor, Tensor[], Tensor? (given and None), float, SymInt, SymInt[],
    bool, str, ScalarType and a default left out by the caller."""
    y = x * alpha
    for other in others:
        y = y + other
    if bias is not None:
        y = y + bias
    if gate is not None:
        y = y * gate
    if flag:
        y = y.roll(k, dims=-1)
    y = torch.tanh(y) if mode == "tanh" else torch.relu(y)
    return y.clone(), (y.reshape(sizes) * beta).to(dtype)


@mix.register_fake
def _(x, others, bias, gate, alpha, k, sizes, flag, mode, dtype, beta=0.5):
    return torch.empty_like(x), x.new_empty(sizes, dtype=dtype)


@torch.library.custom_op("aoti_cy_test::pick", mutates_args=())
def pick(items: list[Optional[Tensor]], device: torch.device, weights: list[float],
         mask: list[bool]) -> list[Tensor]:
    """Tensor?[] with a None in it, Device, float[], bool[]; returns Tensor[]."""
    present = [t for t in items if t is not None]
    return [(t * w if m else t - w).to(device)
            for t, w, m in zip(present, weights, mask)]


@pick.register_fake
def _(items, device, weights, mask):
    return [torch.empty_like(t, device=device) for t in items if t is not None]


@torch.library.custom_op("aoti_cy_test::accumulate_", mutates_args=("acc",))
def accumulate_(acc: Tensor, x: Tensor, scale: float) -> None:
    """Writes into its first argument and returns nothing (a None output)."""
    acc.add_(x * scale)


@accumulate_.register_fake
def _(acc, x, scale):
    return None


@torch.library.custom_op("aoti_cy_test::fail_if_negative", mutates_args=())
def fail_if_negative(x: Tensor) -> Tensor:
    """Raises at run time for a negative first element: how an op's failure
    reaches the caller."""
    if x.reshape(-1)[0] < 0:
        raise ValueError("aoti_cy_test::fail_if_negative got a negative input")
    return x + 1


@fail_if_negative.register_fake
def _(x):
    return torch.empty_like(x)


# Set by a test to make every call of rendezvous wait for its other party.
BARRIER = None


@torch.library.custom_op("aoti_cy_test::rendezvous", mutates_args=())
def rendezvous(x: Tensor) -> Tensor:
    """x * 2, once BARRIER (when set) has as many callers as it waits for:
    proof that runs on several threads are inside the op at once."""
    if BARRIER is not None:
        BARRIER.wait(timeout=30)
    return x * 2


@rendezvous.register_fake
def _(x):
    return torch.empty_like(x)


# ---- models ------------------------------------------------------------------

class CustomOps(torch.nn.Module):
    """Inductor kernels around three Python custom ops."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, 6))

    def forward(self, x, a, b):
        h = x @ self.weight
        y, z = torch.ops.aoti_cy_test.mix(
            h, [a, b.sin()], b, None, 0.75, 2, [6, 4], True, "tanh", torch.float64)
        p, q = torch.ops.aoti_cy_test.pick(
            [y, None, a + 1], torch.device("cpu"), [2.0, -0.5], [True, False])
        acc = torch.zeros_like(x)
        torch.ops.aoti_cy_test.accumulate_(acc, p, 3.0)
        return acc + 1, z.sum(dim=0), q * y


class Failing(torch.nn.Module):
    """A custom op that raises for some inputs."""

    def forward(self, x):
        return torch.ops.aoti_cy_test.fail_if_negative(x * 2) - 3


class Rendezvous(torch.nn.Module):
    """A Python op between two inductor kernels."""

    def forward(self, x):
        return torch.ops.aoti_cy_test.rendezvous(x + 1) - 1


class Unique(torch.nn.Module):
    """aten._unique2 has no C shim: inductor falls back to the proxy executor
    (ints/bools static, a data-dependent output size)."""

    def forward(self, x):
        values, inverse, counts = torch.unique(
            x.round(), sorted=True, return_inverse=True, return_counts=True)
        return values * 2, inverse, counts


def _custom_ops_inputs(g):
    return [torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g),
            torch.randn(4, 6, generator=g)]


EXAMPLES = {
    "custom_ops": Example(CustomOps, _custom_ops_inputs),
    "failing": Example(Failing, lambda g: [torch.rand(3, 4, generator=g) + 0.5]),
    "unique": Example(Unique, lambda g: [torch.randn(64, generator=g) * 3]),
    "rendezvous": Example(Rendezvous, lambda g: [torch.randn(5, 7, generator=g)]),
}
