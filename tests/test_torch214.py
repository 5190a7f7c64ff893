"""Entry points that models of torch >= 2.14 export: a container created
over the caller's tensors (``external_constants=``, zero-copy), whether the
runtime loaded a container's weights itself (``did_call_load_constants``),
and pinned async weight uploads for CUDA models (``pinned_async_copy=``).

Each test skips when the running torch's models do not export what it needs
(torch 2.13's do not); the tests of the error a missing entry point raises
run on every torch. Outputs are compared with eager PyTorch and with torch's
own loader on the same package.
"""

import gc

import pytest
import torch

import aoti_cy
from aoti_cy.errors import MissingSymbolError
from conftest import WEIGHTS_OUTSIDE_SO, extract_library
from real_models import REAL_MODELS, UPDATABLE

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

EXTERNAL = "AOTInductorModelContainerCreateWithExternalConstants"
DID_CALL = "AOTInductorModelContainerDidCallLoadConstants"
PINNED = "AOTInductorSetUsePinnedAsyncConstantsCopy"


def exports(path, symbol):
    """Whether the model library of the package at ``path`` exports ``symbol``."""
    with aoti_cy.load(path) as model:
        return model.library.exported()[symbol]


def require(path, symbol):
    if not exports(path, symbol):
        pytest.skip(f"models built by torch {torch.__version__} do not export {symbol}")


def constants_of(path, module, extra=()):
    """The module's values for every constant of the compiled model (its
    state dict and buffers, cloned: the caller's own tensors)."""
    with aoti_cy.load(path) as model:
        fqns = set(model.constant_fqns)
    values = dict(module.state_dict(), **dict(module.named_buffers()))
    return {k: v.detach().clone() for k, v in values.items() if k in fqns}


@pytest.fixture(scope="module")
def mlp_package(example):
    ex = example("mlp")
    path = ex.package("cpu", **UPDATABLE)
    require(path, EXTERNAL)
    eager = ex.eager()
    return path, eager, constants_of(path, eager)


@pytest.fixture
def mlp(mlp_package):
    """(package path, eager module, constants) of the MLP, all its weights
    kept as constants; the constants are this test's own to change."""
    path, eager, constants = mlp_package
    return path, eager, {k: v.clone() for k, v in constants.items()}


def torch_loader_output(path, inputs, constants=None):
    """The same package through torch's own loader (with ``constants`` given
    as user-managed, i.e. used in place, when given)."""
    compiled = torch._inductor.aoti_load_package(path)
    if constants is not None:
        compiled.load_constants(constants, check_full_update=True, user_managed=True)
    return compiled.loader.run(list(inputs))


# ---- external constants: parity -------------------------------------------------

def test_external_constants_match_eager_and_torch(mlp, example):
    path, eager, constants = mlp
    x = example("mlp").inputs()
    with aoti_cy.load(path) as own:
        assert not own.uses_external_constants
    with aoti_cy.load(path, external_constants=constants) as model:
        assert model.uses_external_constants
        got = model(*x)
        torch.testing.assert_close(got, eager(*x))
        torch.testing.assert_close([got], torch_loader_output(path, x, constants))


@pytest.mark.parametrize("name", ["llama", "bert"])
def test_external_constants_on_transformers_models(name, tmp_path):
    """Weights written to a safetensors file (or torch.save where safetensors
    is not installed), memory-mapped, and two containers created over the one
    mapping: outputs as eager and as torch's loader."""
    real = REAL_MODELS[name]
    path = real.package(**UPDATABLE)
    require(path, EXTERNAL)
    eager = real.eager()
    constants = constants_of(path, eager)
    mapped = map_from_file(constants, tmp_path)
    args, kwargs = real.call(seed=5)
    with torch.no_grad():
        want = real.output(eager(*args, **kwargs))
    first = aoti_cy.load(path, external_constants=mapped)
    second = aoti_cy.load(path, external_constants=mapped)
    with first, second:
        for model in (first, second):
            got = real.output(model(*args, **kwargs))
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)]
        theirs = torch_loader_output(path, inputs, mapped)
        ours = first.run(inputs)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b)


def map_from_file(constants, directory):
    """``constants`` written to a file and read back memory-mapped."""
    try:
        import safetensors.torch
    except ImportError:
        file = directory / "weights.pt"
        torch.save(constants, file)
        return torch.load(file, mmap=True, weights_only=True)
    file = directory / "weights.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in constants.items()}, file)
    return safetensors.torch.load_file(file)


# ---- external constants: shared, not copied, kept alive ---------------------------

def test_containers_share_the_callers_memory(mlp, example):
    """An in-place change to the caller's tensors shows in every container
    made over them: the runtime reads that memory, no copy of it."""
    path, eager, constants = mlp
    x = example("mlp").inputs()
    first = aoti_cy.load(path, external_constants=constants)
    second = aoti_cy.load(path, external_constants=constants)
    copied = aoti_cy.load(path)      # weights of its own, for contrast
    with first, second, copied:
        before = first(*x)
        with torch.no_grad():
            for value in constants.values():
                value.mul_(0.5)
            changed = make_module_with(eager, constants)
        want = changed(*x)
        assert not torch.allclose(want, before)
        torch.testing.assert_close(first(*x), want)
        torch.testing.assert_close(second(*x), want)
        torch.testing.assert_close(copied(*x), eager(*x))


def make_module_with(module, constants):
    """A copy of ``module`` holding ``constants`` where it has those names."""
    import copy
    clone = copy.deepcopy(module)
    clone.load_state_dict(constants, strict=False)
    return clone


def test_container_keeps_the_tensors_alive(mlp, example):
    path, eager, constants = mlp
    x = example("mlp").inputs()
    model = aoti_cy.load(path, external_constants={k: v.clone() for k, v in constants.items()})
    gc.collect()   # nothing else refers to the clones
    with model:
        for _ in range(3):
            torch.testing.assert_close(model(*x), eager(*x))


def test_load_weights_over_external_constants_leaves_them_alone(mlp, example):
    """load_weights copies new weights into the container's own buffer and
    swaps: the caller's tensors keep their values."""
    path, eager, constants = mlp
    x = example("mlp").inputs()
    kept = {k: v.clone() for k, v in constants.items()}
    new = {k: torch.randn_like(v) for k, v in constants.items()}
    with aoti_cy.load(path, external_constants=constants) as model:
        model.load_weights(new)
        torch.testing.assert_close(model(*x), make_module_with(eager, new)(*x))
    for k, v in constants.items():
        assert torch.equal(v, kept[k])


def test_non_contiguous_values_are_copied_and_still_right(mlp, example):
    path, eager, constants = mlp
    x = example("mlp").inputs()
    given = dict(constants)
    given["fc1.weight"] = constants["fc1.weight"].t().contiguous().t()
    assert not given["fc1.weight"].is_contiguous()
    with aoti_cy.load(path, external_constants=given) as model:
        torch.testing.assert_close(model(*x), eager(*x))


# ---- external constants: bad values ---------------------------------------------------

@pytest.mark.parametrize("change, error, words", [
    (lambda c: c.pop("fc1.bias"), ValueError, ["missing constants", "fc1.bias"]),
    (lambda c: c.update(nonsense=torch.zeros(3)), ValueError, ["unknown keys", "nonsense"]),
    (lambda c: c.update({"fc1.weight": c["fc1.weight"].double()}), ValueError,
     ["'fc1.weight'", "dtype torch.float64"]),
    (lambda c: c.update({"fc1.bias": torch.zeros(63)}), ValueError, ["'fc1.bias'", "shape (63,)"]),
    (lambda c: c.update({"fc1.bias": [0.0] * 64}), TypeError, ["'fc1.bias'", "torch.Tensor"]),
])
def test_bad_external_constants_are_refused_naming_them(mlp, example, change, error, words):
    path, eager, constants = mlp
    given = dict(constants)
    change(given)
    with pytest.raises(error) as raised:
        aoti_cy.load(path, external_constants=given)
    for word in words:
        assert word in str(raised.value)
    # Nothing half-made is left behind: a good load still works.
    x = example("mlp").inputs()
    with aoti_cy.load(path, external_constants=constants) as model:
        torch.testing.assert_close(model(*x), eager(*x))


def test_external_constants_must_be_a_mapping(mlp):
    path, _, constants = mlp
    with pytest.raises(TypeError, match="mapping"):
        aoti_cy.load(path, external_constants=list(constants.values()))


def test_without_the_entry_point_external_constants_raise(package, tmp_path, example):
    """A model without CreateWithExternalConstants (torch < 2.14, or told to
    forget it) raises MissingSymbolError naming it, before anything is made."""
    library = extract_library(package("mlp"), tmp_path)
    with aoti_cy.ModelContainer(library) as holder:
        if holder.library.exported()[EXTERNAL]:
            holder.library._forget(EXTERNAL)
        constants = holder.extract_constants_map()
        with pytest.raises(MissingSymbolError, match=EXTERNAL):
            aoti_cy.ModelContainer(library, external_constants=constants)
        with pytest.raises(MissingSymbolError, match=EXTERNAL):
            aoti_cy.load(library, external_constants=constants)
        x = example("mlp").inputs()
        torch.testing.assert_close(holder(*x), example("mlp").eager()(*x))


# ---- did_call_load_constants ----------------------------------------------------------

def test_did_call_load_constants(mlp, package):
    """True when the runtime loaded the weights (even a package that keeps
    them outside the .so, before they are given), False over external
    constants."""
    path, _, constants = mlp
    require(path, DID_CALL)
    with aoti_cy.load(path) as model:
        assert model.did_call_load_constants is True
    with aoti_cy.load(path, external_constants=constants) as model:
        assert model.did_call_load_constants is False
    outside = package("mlp", **WEIGHTS_OUTSIDE_SO["pickle_weights"])
    bare = aoti_cy._package.open_artifact(outside)
    try:
        with aoti_cy.ModelContainer(bare.library_path) as model:
            with pytest.raises(RuntimeError, match="no value yet"):
                model(torch.zeros(16, 64))
            assert model.did_call_load_constants is True
    finally:
        bare.cleanup()


def test_did_call_load_constants_without_the_entry_point(package, tmp_path):
    library = extract_library(package("mlp"), tmp_path)
    with aoti_cy.ModelContainer(library) as model:
        if model.library.exported()[DID_CALL]:
            model.library._forget(DID_CALL)
        with pytest.raises(MissingSymbolError, match=DID_CALL):
            model.did_call_load_constants


# ---- pinned async weight uploads --------------------------------------------------------

def test_pinned_async_copy_is_refused_for_cpu_models(package):
    path = package("mlp")
    with pytest.raises(ValueError, match="for CUDA models"):
        aoti_cy.load(path, pinned_async_copy=True)
    with pytest.raises(TypeError, match="None, True or False"):
        aoti_cy.load(path, pinned_async_copy="yes")


def test_pinned_async_copy_off_is_accepted_on_cpu(package, example):
    path = package("mlp")
    require(path, PINNED)
    x = example("mlp").inputs()
    with aoti_cy.load(path, pinned_async_copy=False) as model:
        torch.testing.assert_close(model(*x), example("mlp").eager()(*x))


def test_pinned_async_copy_without_the_entry_point(package, tmp_path):
    library = extract_library(package("mlp"), tmp_path)
    with aoti_cy.ModelContainer(library) as holder:
        if holder.library.exported()[PINNED]:
            holder.library._forget(PINNED)
        with pytest.raises(MissingSymbolError, match=PINNED):
            aoti_cy.ModelContainer(library, pinned_async_copy=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("pinned", [True, False])
def test_pinned_async_copy_on_cuda(example, pinned):
    """Weights uploaded with and without pinned staging give the same
    outputs as eager and torch's loader, at load and through load_weights
    from CPU tensors."""
    ex = example("mlp")
    path = ex.package("cuda", **UPDATABLE)
    require(path, PINNED)
    x = ex.inputs("cuda")
    eager = ex.eager("cuda")
    with aoti_cy.load(path, pinned_async_copy=pinned) as model:
        torch.testing.assert_close(model(*x), eager(*x))
        torch.testing.assert_close([model(*x)], torch_loader_output(path, x))
        new = {k: torch.randn_like(v).cpu() for k, v in constants_of(path, eager).items()}
        model.load_weights(new)
        torch.testing.assert_close(model(*x), make_module_with(eager, new).to("cuda")(*x))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_external_constants_on_cuda(example):
    ex = example("mlp")
    path = ex.package("cuda", **UPDATABLE)
    require(path, EXTERNAL)
    eager = ex.eager("cuda")
    constants = constants_of(path, eager)
    x = ex.inputs("cuda")
    with aoti_cy.load(path, external_constants=constants) as model:
        torch.testing.assert_close(model(*x), eager(*x))
    with pytest.raises(ValueError, match="on the model's device"):
        aoti_cy.load(path, external_constants={k: v.cpu() for k, v in constants.items()})
