"""Compiling small models once and reusing them: for tests, the demo and the
benchmarks.

Compiling an AOTInductor package takes tens of seconds, so each compiled
package is cached on disk under a key made of the torch version, the model's
source, its example inputs, the device and the inductor options.
``AOTI_CY_CACHE`` names the cache folder (default ``~/.cache/aoti_cy``).
"""

import hashlib
import inspect
import os
import tempfile
import warnings

import torch

__all__ = ["EXAMPLES", "Example", "cache_dir", "compile_package"]


def cache_dir():
    """The folder compiled packages are cached in."""
    return os.environ.get("AOTI_CY_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "aoti_cy")


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"T{tuple(value.shape)}{value.dtype}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_describe(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "(" + ",".join(map(_describe, value)) + ")"
    return repr(value)


def compile_package(model_cls, args, *, kwargs=None, device="cpu",
                    inductor_configs=None, init_args=()):
    """Path of a `.pt2` for ``model_cls(*init_args)`` exported with ``args``,
    compiled on first use and cached. The model's parameters come from a
    fixed seed, so the same key always means the same weights."""
    kwargs = kwargs or {}
    configs = dict(inductor_configs or {})
    key = "\n".join([
        torch.__version__, inspect.getsource(model_cls), repr(init_args),
        _describe(args), _describe(kwargs), str(device), repr(sorted(configs.items())),
    ])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    path = os.path.join(cache_dir(), f"{model_cls.__name__}-{digest}.pt2")
    if os.path.exists(path):
        _save_sample_inputs(path, args, kwargs)
        return path
    os.makedirs(cache_dir(), exist_ok=True)
    model = make_model(model_cls, init_args, device)
    # torch's export/compile path warns about its own internals.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = torch.export.export(model, tuple(args), kwargs)
        # Compile under a temporary name, then move it into place atomically.
        fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=cache_dir())
        os.close(fd)
        try:
            torch._inductor.aoti_compile_and_package(
                exported, package_path=tmp, inductor_configs=configs)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _save_sample_inputs(path, args, kwargs)
    return path


def _save_sample_inputs(path, args, kwargs):
    """Keep flat tensor inputs beside the package as ``<path>.inputs.pt``
    (what ``python -m aoti_cy bench`` runs it on)."""
    target = path + ".inputs.pt"
    flat = not kwargs and all(isinstance(a, torch.Tensor) for a in args)
    if flat and not os.path.exists(target):
        torch.save([a.detach().cpu() for a in args], target + ".tmp")
        os.replace(target + ".tmp", target)


def make_model(model_cls, init_args=(), device="cpu"):
    """``model_cls(*init_args)`` with weights from a fixed seed, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_cls(*init_args).to(device).eval()


# ---- example models ------------------------------------------------------------


class AddOne(torch.nn.Module):
    """x + 1: the smallest model there is."""

    def forward(self, x):
        return x + 1


class MultiIO(torch.nn.Module):
    """Three inputs, three outputs."""

    def forward(self, a, b, c):
        return a + b, b * c, (a - c).sum(dim=-1)


class MLP(torch.nn.Module):
    """Parameters and a buffer."""

    def __init__(self, width=64):
        super().__init__()
        self.fc1 = torch.nn.Linear(width, width)
        self.fc2 = torch.nn.Linear(width, 8)
        self.register_buffer("shift", torch.linspace(-1, 1, 8))

    def forward(self, x):
        return torch.relu(self.fc2(torch.relu(self.fc1(x)))) + self.shift


class FourThree(torch.nn.Module):
    """Four inputs, three outputs, trivial work: the cost of more tensors."""

    def forward(self, a, b, c, d):
        return a + b, c * d, a - d


class SameTwice(torch.nn.Module):
    """Returns one tensor twice."""

    def forward(self, x):
        y = x * 2
        return y, y


class Heavy(torch.nn.Module):
    """Matrix work long enough to see threads overlap."""

    def __init__(self, size=512, depth=32):
        super().__init__()
        self.depth = depth
        self.weight = torch.nn.Parameter(torch.randn(size, size) / size ** 0.5)

    def forward(self, x):
        for _ in range(self.depth):
            x = torch.tanh(x @ self.weight)
        return x


class Folding(torch.nn.Module):
    """Weights transformed before use: with runtime constant folding the
    transformed weights become folded constants."""

    def __init__(self, width=32):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(width, width))
        self.bias = torch.nn.Parameter(torch.randn(width))

    def forward(self, x):
        return x @ (torch.relu(self.weight) * 2).t() + self.bias.exp()


class Nested(torch.nn.Module):
    """Nested tuples, a dict and a keyword argument in; a dict of nested
    tuples and lists out."""

    def forward(self, pair, mapping, *, scale):
        a, (b, c) = pair
        return {"sum": a + b,
                "parts": (b * c, [mapping["x"] - a, mapping["y"] * scale])}


def nested_call_args(device="cpu", seed=1):
    """(args, kwargs) for Nested."""
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(3, 4, generator=g).to(device) for _ in range(6)]
    return ((t[0], (t[1], t[2])), {"x": t[3], "y": t[4]}), {"scale": t[5]}


class Example:
    """A model class with example inputs that fit it."""

    def __init__(self, model_cls, make_inputs, init_args=()):
        self.model_cls = model_cls
        self.make_inputs = make_inputs
        self.init_args = init_args

    def package(self, device="cpu", **inductor_configs):
        return compile_package(self.model_cls, self.inputs(device), device=device,
                               inductor_configs=inductor_configs,
                               init_args=self.init_args)

    def inputs(self, device="cpu", seed=1):
        generator = torch.Generator().manual_seed(seed)
        return [t.to(device) for t in self.make_inputs(generator)]

    def eager(self, device="cpu"):
        return make_model(self.model_cls, self.init_args, device)


EXAMPLES = {
    "add_one": Example(AddOne, lambda g: [torch.randn(8, generator=g)]),
    "multi_io": Example(MultiIO, lambda g: [torch.randn(4, 5, generator=g),
                                            torch.randn(4, 5, generator=g),
                                            torch.randn(4, 5, generator=g)]),
    "mlp": Example(MLP, lambda g: [torch.randn(16, 64, generator=g)]),
    "same_twice": Example(SameTwice, lambda g: [torch.randn(3, 3, generator=g)]),
    "four_three": Example(FourThree, lambda g: [torch.randn(8, generator=g) for _ in range(4)]),
    "matmul": Example(Heavy, lambda g: [torch.randn(128, 256, generator=g)],
                      init_args=(256, 4)),
    "folding": Example(Folding, lambda g: [torch.randn(8, 32, generator=g)]),
    "heavy": Example(Heavy, lambda g: [torch.randn(512, 512, generator=g)]),
}
