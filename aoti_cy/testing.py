"""Compiling small models once and reusing them: for tests, the demo and the
benchmarks.

Compiling an AOTInductor package takes tens of seconds, so each compiled
package is cached on disk under a key made of the torch version, the model's
source, its example inputs, the device and the inductor options.
``AOTI_CY_CACHE`` names the cache folder (default ``~/.cache/aoti_cy``).
"""

import collections
import hashlib
import inspect
import os
import tempfile
import warnings

import torch

__all__ = ["EXAMPLES", "Example", "ModelSpec", "cache_dir", "compile_multi_package",
           "compile_package"]

ModelSpec = collections.namedtuple(
    "ModelSpec", "model_cls args kwargs init_args dynamic_shapes strict",
    defaults=(None, (), None, False))
ModelSpec.__doc__ = """What to export: ``model_cls(*init_args)`` called with
``args`` and ``kwargs``, with ``dynamic_shapes``, by strict or non-strict
``torch.export.export``."""


def cache_dir():
    """The folder compiled packages are cached in.

    Returns
    -------
    str
        ``$AOTI_CY_CACHE`` if set, else ``~/.cache/aoti_cy``.
    """
    return os.environ.get("AOTI_CY_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "aoti_cy")


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"T{tuple(value.shape)}{value.dtype}"
    if isinstance(value, dict):   # in order: the export's keyword order follows it
        return "{" + ",".join(f"{k}:{_describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "(" + ",".join(map(_describe, value)) + ")"
    return repr(value)


def _source_key(model_cls):
    """The model's source, and the version of the library it comes from
    (a class from ``transformers`` changes with its release)."""
    top = model_cls.__module__.partition(".")[0]
    version = getattr(__import__(top), "__version__", "") if top != "__main__" else ""
    return f"{model_cls.__module__}:{version}\n{_class_source(model_cls)}"


def _class_source(model_cls, tries=5):
    """``inspect.getsource``, tried again on CPython 3.11's spurious "AST
    constructor recursion depth mismatch" (its parser's depth counter is not
    thread-safe: another thread parsing at the same time, as Ray's do,
    trips it)."""
    for attempt in range(tries):
        try:
            return inspect.getsource(model_cls)
        except SystemError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


def compile_package(model_cls, args, *, kwargs=None, device="cpu",
                    inductor_configs=None, init_args=(), dynamic_shapes=None, strict=False):
    """Export and compile a model once; the path of its cached `.pt2`.

    The model's parameters come from a fixed seed, so the same key always
    means the same weights. The flat tensor inputs are saved beside the
    package as ``<path>.inputs.pt`` (what ``python -m aoti_cy bench`` reads).

    Parameters
    ----------
    model_cls : type
        A ``torch.nn.Module`` subclass; its source is part of the cache key.
    args : tuple
        Positional arguments of the export call.
    kwargs : dict, optional
        Keyword arguments of the export call.
    device : str
        ``"cpu"`` or ``"cuda"``.
    inductor_configs : dict, optional
        Options for ``torch._inductor.aoti_compile_and_package``, such as
        ``{"always_keep_tensor_constants": True}``.
    init_args : tuple
        Arguments of ``model_cls``.
    dynamic_shapes : optional
        As ``torch.export.export`` takes them.
    strict : bool
        Strict export.

    Returns
    -------
    str
        The path of the package in :func:`cache_dir`.
    """
    return compile_multi_package(
        {"model": ModelSpec(model_cls, args, kwargs, init_args, dynamic_shapes, strict)},
        device=device, inductor_configs=inductor_configs)


def compile_multi_package(models, *, device="cpu", inductor_configs=None):
    """Export and compile several models into one `.pt2`, once.

    Parameters
    ----------
    models : dict
        Model name to :class:`ModelSpec` (or a tuple of its fields).
    device : str
        ``"cpu"`` or ``"cuda"``.
    inductor_configs : dict, optional
        As for :func:`compile_package`.

    Returns
    -------
    str
        The path of the package in :func:`cache_dir`; load one of its
        models with ``aoti_cy.load(path, model_name=name)``.
    """
    configs = dict(inductor_configs or {})
    models = {name: ModelSpec(*spec) for name, spec in models.items()}
    parts = [torch.__version__, str(device), repr(sorted(configs.items()))]
    for name, spec in sorted(models.items()):
        parts += [name, _source_key(spec.model_cls), repr(spec.init_args),
                  _describe(spec.args), _describe(spec.kwargs or {}),
                  repr(spec.dynamic_shapes), repr(spec.strict)]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
    label = "+".join(spec[0].__name__ for _, spec in sorted(models.items()))
    path = os.path.join(cache_dir(), f"{label}-{digest}.pt2")
    if not os.path.exists(path):
        os.makedirs(cache_dir(), exist_ok=True)
        _write_in_place(path, lambda tmp: _compile_to(tmp, models, device, configs), ".pt2")
    if len(models) == 1:
        spec, = models.values()
        _save_sample_inputs(path, spec.args, spec.kwargs or {})
    return path


def _write_in_place(target, write, suffix):
    """``write(tmp)`` to a temporary file of its own beside ``target``, then
    moved into place atomically: test workers may write one cache entry at
    once, and a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=os.path.dirname(target))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compile_to(tmp, models, device, configs):
    """Export ``models`` and compile them into the package file ``tmp``."""
    # torch's export/compile path warns about its own internals.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        exported = {
            name: torch.export.export(
                make_model(spec.model_cls, spec.init_args, device), tuple(spec.args),
                spec.kwargs or {}, dynamic_shapes=spec.dynamic_shapes,
                strict=spec.strict)
            for name, spec in models.items()}
        if list(exported) == ["model"]:
            torch._inductor.aoti_compile_and_package(
                exported["model"], package_path=tmp, inductor_configs=configs)
        else:
            files = {name: torch._inductor.aot_compile(
                         program.module(), *_example_inputs(program),
                         options=dict(configs, **{"aot_inductor.package": True}))
                     for name, program in exported.items()}
            torch._inductor.package.package_aoti(tmp, files)


def _example_inputs(program):
    args, kwargs = program.example_inputs
    return tuple(args), dict(kwargs)


def _save_sample_inputs(path, args, kwargs):
    """Keep flat tensor inputs beside the package as ``<path>.inputs.pt``
    (what ``python -m aoti_cy bench`` runs it on)."""
    target = path + ".inputs.pt"
    flat = not kwargs and all(isinstance(a, torch.Tensor) for a in args)
    if flat and not os.path.exists(target):
        flat_inputs = [a.detach().cpu() for a in args]
        _write_in_place(target, lambda tmp: torch.save(flat_inputs, tmp), ".inputs.tmp")


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


class OddConstants(torch.nn.Module):
    """Constants whose sizes are not multiples of the runtime's 64-byte
    alignment, in several dtypes; each output shows one constant whole."""

    def __init__(self):
        super().__init__()
        self.one = torch.nn.Parameter(torch.randn(1))
        self.three = torch.nn.Parameter(torch.randn(3, dtype=torch.float16))
        self.forty = torch.nn.Parameter(torch.randn(40, dtype=torch.bfloat16))
        self.odd = torch.nn.Parameter(torch.randn(5, 7))
        self.register_buffer("counts", torch.arange(3, dtype=torch.int64))

    def forward(self, x):
        # Exact in every dtype: inductor computes half and bfloat16 in float32.
        return (x + self.one, self.three * 2, self.forty * -2, self.odd * x[0],
                self.counts * 3 + x[:3].long())


def nested_call_args(device="cpu", seed=1):
    """(args, kwargs) for Nested."""
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(3, 4, generator=g).to(device) for _ in range(6)]
    return ((t[0], (t[1], t[2])), {"x": t[3], "y": t[4]}), {"scale": t[5]}


class Example:
    """A model class with example inputs that fit it.

    Parameters
    ----------
    model_cls : type
        A ``torch.nn.Module`` subclass.
    make_inputs : callable
        Takes a ``torch.Generator``, returns a list of input tensors.
    init_args : tuple
        Arguments of ``model_cls``.
    """

    def __init__(self, model_cls, make_inputs, init_args=()):
        self.model_cls = model_cls
        self.make_inputs = make_inputs
        self.init_args = init_args

    def package(self, device="cpu", **inductor_configs):
        """The path of the compiled `.pt2` (see :func:`compile_package`).

        Parameters
        ----------
        device : str
            ``"cpu"`` or ``"cuda"``.
        **inductor_configs
            Inductor options, e.g. ``always_keep_tensor_constants=True``.

        Returns
        -------
        str
        """
        return compile_package(self.model_cls, self.inputs(device), device=device,
                               inductor_configs=inductor_configs,
                               init_args=self.init_args)

    def inputs(self, device="cpu", seed=1):
        """Inputs that fit the model.

        Parameters
        ----------
        device : str
            Where to put them.
        seed : int
            Seed of their random values.

        Returns
        -------
        list of torch.Tensor
        """
        generator = torch.Generator().manual_seed(seed)
        return [t.to(device) for t in self.make_inputs(generator)]

    def eager(self, device="cpu"):
        """The eager module, with the weights its package was compiled with.

        Parameters
        ----------
        device : str
            Where to put it.

        Returns
        -------
        torch.nn.Module
            In eval mode.
        """
        return make_model(self.model_cls, self.init_args, device)


#: Small example models by name, each an :class:`Example`:
#: ``EXAMPLES["mlp"].package()`` is the path of its compiled `.pt2`,
#: ``EXAMPLES["mlp"].inputs()`` inputs that fit it, and
#: ``EXAMPLES["mlp"].eager()`` the eager module with the same weights.
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
    "odd_constants": Example(OddConstants, lambda g: [torch.randn(3, generator=g)]),
}
