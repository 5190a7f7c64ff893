"""The constant-buffer API, load_weights hot swap, the single-instance
Model, and weights the caller owns: a container over the caller's tensors
(``external_constants=``, zero-copy), ``did_call_load_constants`` and
``pinned_async_copy=``, checked against eager PyTorch and torch's loader."""

import gc
import resource
import threading
import time

import pytest
import torch

import aoti_cy
from aoti_cy.errors import MissingSymbolError
from aoti_cy.testing import EXAMPLES, MLP, Folding, make_model
from conftest import WEIGHTS_OUTSIDE_SO, extract_library, requires_symbol
from real_models import REAL_MODELS, UPDATABLE

FOLDING_CONFIG = {"aot_inductor.use_runtime_constant_folding": True}


@pytest.fixture(scope="module")
def folding_package():
    return EXAMPLES["folding"].package(**FOLDING_CONFIG)


def random_weights(container, seed):
    g = torch.Generator().manual_seed(seed)
    current = container.extract_constants_map()
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in current.items()}


def eager_with(model_cls, weights, inputs):
    model = make_model(model_cls)
    model.load_state_dict(weights, strict=False)
    with torch.no_grad():
        return model(*inputs)


@pytest.mark.parametrize("which", ["mlp", "folding"])
def test_constants_listing_matches_torch_loader(package, folding_package, which):
    path = package("mlp") if which == "mlp" else folding_package
    reference = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as model:
        assert sorted(model.constant_fqns) == sorted(reference.get_constant_fqns())
        folded = {c.original_fqn for c in model.constants if c.from_folded}
        assert (which == "folding") == bool(folded)
        assert all(isinstance(c.dtype, torch.dtype) and c.data_size > 0 for c in model.constants)


@pytest.mark.parametrize("path_kind", ["active", "user_managed", "inactive_swap", "load_weights"])
@pytest.mark.parametrize("which", ["mlp", "folding"])
def test_new_weights_change_outputs_as_eager(package, folding_package, path_kind, which):
    model_cls, path = (MLP, package("mlp")) if which == "mlp" else (Folding, folding_package)
    inputs = EXAMPLES[which].inputs()
    with aoti_cy.load(path) as model:
        weights = random_weights(model, seed=11)
        if path_kind == "active":
            model.update_constant_buffer(weights)
            if which == "folding":
                model.run_constant_folding()
        elif path_kind == "user_managed":
            model.update_constant_buffer(weights, user_managed=True)
            if which == "folding":
                model.run_constant_folding()
        elif path_kind == "inactive_swap":
            model.update_inactive_constant_buffer(weights)
            model.run_constant_folding(use_inactive=True)
            model.swap_constant_buffer()
        else:
            model.load_weights(weights)
        torch.testing.assert_close(model.run(inputs)[0], eager_with(model_cls, weights, inputs))


def test_numpy_weights(package, example):
    inputs = example("mlp").inputs()
    with aoti_cy.load(package("mlp")) as model:
        weights = random_weights(model, seed=8)
        model.load_weights({k: v.numpy() for k, v in weights.items()})
        torch.testing.assert_close(model.run(inputs)[0], eager_with(MLP, weights, inputs))


def test_extract_constants_map_round_trips(package, example):
    inputs = example("mlp").inputs()
    with aoti_cy.load(package("mlp")) as model:
        original = model.extract_constants_map()
        before = model.run(inputs)[0]
        model.load_weights(random_weights(model, seed=5))
        assert not torch.equal(model.run(inputs)[0], before)
        model.load_weights(original)
        torch.testing.assert_close(model.run(inputs)[0], before)
        again = model.extract_constants_map()
        assert again.keys() == original.keys()
        for key in original:
            torch.testing.assert_close(again[key], original[key])
        model.free_inactive_constant_buffer()
        torch.testing.assert_close(model.run(inputs)[0], before)


@pytest.mark.parametrize("bad, message", [
    ({"nope": torch.zeros(3)}, "unknown"),
    ({"fc1.weight": torch.zeros(3, 3)}, "has shape"),
    ({"fc1.weight": torch.zeros(64, 64, dtype=torch.float64)}, "has dtype"),
    ({"fc1.weight": "weights"}, "must be a torch.Tensor"),
])
def test_bad_constants_are_rejected_and_nothing_changes(package, example, bad, message):
    inputs = example("mlp").inputs()
    with aoti_cy.load(package("mlp")) as model:
        before = model.run(inputs)[0]
        for call in (model.update_constant_buffer, model.load_weights,
                     model.update_inactive_constant_buffer):
            with pytest.raises((ValueError, TypeError), match=message):
                call(bad)
        torch.testing.assert_close(model.run(inputs)[0], before)


def test_partial_updates(package, example):
    inputs = example("mlp").inputs()
    with aoti_cy.load(package("mlp")) as model:
        weights = random_weights(model, seed=3)
        partial = {"fc1.bias": weights["fc1.bias"]}
        with pytest.raises(ValueError, match="missing constants"):
            model.update_constant_buffer(partial, validate_full_update=True)
        with pytest.raises(ValueError, match="missing constants"):
            model.load_weights(partial)
        with pytest.raises(ValueError, match="unknown keys"):
            model.load_weights(dict(weights, shift=torch.zeros(8)))
        # strict=False: missing ones keep their values, extra keys are ignored.
        current = model.extract_constants_map()
        model.load_weights(dict(partial, shift=torch.zeros(8)), strict=False)
        expected = dict(current, **partial)
        torch.testing.assert_close(model.run(inputs)[0], eager_with(MLP, expected, inputs))


def test_feature_whose_symbol_is_missing(package, tmp_path, example):
    import zipfile
    with zipfile.ZipFile(package("mlp")) as archive:
        archive.extractall(tmp_path)   # a private copy: its own ModelLibrary
    with aoti_cy.load(tmp_path) as model:
        before = model.run(example("mlp").inputs())[0]
        model.library._forget("AOTInductorModelContainerFreeInactiveConstantBuffer")
        with pytest.raises(aoti_cy.MissingSymbolError,
                           match="AOTInductorModelContainerFreeInactiveConstantBuffer"):
            model.free_inactive_constant_buffer()
        model.library._forget("AOTInductorModelContainerGetConstantDataSize")
        with pytest.raises(aoti_cy.MissingSymbolError, match="GetConstantDataSize"):
            model.update_constant_buffer({"fc1.bias": torch.zeros(64)})
        torch.testing.assert_close(model.run(example("mlp").inputs())[0], before)


def test_constants_blob_loads_once(package):
    with aoti_cy.load(package("mlp", **WEIGHTS_OUTSIDE_SO["binary_blob"])) as model:
        assert model.constants_blob_size >= sum(c.data_size for c in model.constants)
        with pytest.raises(RuntimeError, match="already loaded a constants blob"):
            model.update_constants_from_blob(bytes(model.constants_blob_size))


def test_load_weights_while_two_threads_run(package, example):
    """50 swaps between two weight sets under load: every output is exactly
    one set's eager result, never a mix."""
    inputs = example("mlp").inputs()
    with aoti_cy.load(package("mlp"), num_models=2) as model:
        sets = [model.extract_constants_map(), random_weights(model, seed=99)]
        expected = [eager_with(MLP, w, inputs) for w in sets]
        stop = threading.Event()
        bad, counts, errors = [], [0, 0], []

        def runner(slot):
            try:
                while not stop.is_set():
                    out = model.run(inputs)[0]
                    if not any(torch.allclose(out, e, rtol=1e-5, atol=1e-6) for e in expected):
                        bad.append(out)
                    counts[slot] += 1
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=runner, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        deadline = time.monotonic() + 120
        for i in range(50):
            model.load_weights(sets[(i + 1) % 2])
            # Let both runners make progress between swaps.
            target = [c + 1 for c in counts]
            while (counts[0] < target[0] or counts[1] < target[1]) and \
                    time.monotonic() < deadline and not errors:
                time.sleep(0.0005)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        rss_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert not errors and not bad, (errors, len(bad))
    assert min(counts) >= 50, counts
    assert rss_growth_kb < 50_000, rss_growth_kb


def test_single_instance_model(package, example):
    inputs = example("mlp").inputs()
    path = package("mlp")
    with aoti_cy.load(path) as container:
        library = container.library_path
        expected = container.run(inputs)[0]
        weights = random_weights(container, seed=21)
        with aoti_cy.Model(library) as model:
            assert model.num_outputs == 1
            torch.testing.assert_close(model.run(inputs)[0], expected)
            model.update_constants_map(weights)
            torch.testing.assert_close(model.run(inputs)[0], eager_with(MLP, weights, inputs))
            with pytest.raises(ValueError, match="missing"):
                model.update_constants_map({"fc1.bias": weights["fc1.bias"]})
            with pytest.raises(ValueError, match="takes 1 inputs"):
                model.run([])
        with aoti_cy.Model(library, constants=weights) as model:
            torch.testing.assert_close(model.run(inputs)[0], eager_with(MLP, weights, inputs))
    assert model.closed
    with pytest.raises(RuntimeError, match="closed"):
        model.run(inputs)


def test_single_instance_model_rejects_bad_constants(package):
    with aoti_cy.load(package("mlp")) as container:   # keeps the extracted .so
        library = container.library_path
        weights = container.extract_constants_map()
        with aoti_cy.Model(library) as model:
            with pytest.raises(ValueError, match=r"'fc1.weight' has shape \(4096,\), expected \(64, 64\)"):
                model.update_constants_map(dict(weights, **{"fc1.weight": torch.zeros(64 * 64)}))
        with pytest.raises(ValueError, match="unknown keys"):
            aoti_cy.Model(library, constants=dict(weights, nope=torch.zeros(1)))


def test_single_instance_model_closed_while_its_methods_run(package):
    # close() waits for calls in flight: every call finishes or says closed.
    from conftest import run_in_threads
    path = package("mlp")
    with aoti_cy.load(path) as container:
        weights = container.extract_constants_map()
    for _ in range(5):
        model = aoti_cy.Model(path)
        calls = [lambda: model.num_outputs, lambda: model.update_constants_map(weights),
                 lambda: model.run(EXAMPLES["mlp"].inputs())]

        def work(i):
            for _ in range(200):
                try:
                    calls[i]()
                except RuntimeError as e:
                    assert "closed" in str(e)
                    return
        started = threading.Timer(0.01, model.close)
        started.start()
        errors = run_in_threads(work, len(calls), timeout=60)
        started.join()
        assert not errors, errors
        assert model.closed


# ---- entry points of newer models: weights the caller owns ------------------------
#
# Newer models export entry points that older ones lack: a container over the
# caller's tensors (external_constants=, zero-copy), whether the runtime
# loaded the weights itself (did_call_load_constants), pinned async weight
# uploads (pinned_async_copy=). Their tests are marked requires_symbol; the
# tests of the error a missing entry point raises run on every torch.

EXTERNAL = "AOTInductorModelContainerCreateWithExternalConstants"
DID_CALL = "AOTInductorModelContainerDidCallLoadConstants"
PINNED = "AOTInductorSetUsePinnedAsyncConstantsCopy"
# torch's loader and safetensors warn about their own internals.
TORCH_LOADER_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning",
                                                   "ignore::DeprecationWarning")


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

@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
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


@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
@pytest.mark.parametrize("name", ["llama", "bert"])
def test_external_constants_on_transformers_models(name, tmp_path):
    """Weights written to a safetensors file (or torch.save where safetensors
    is not installed), memory-mapped, and two containers created over the one
    mapping: outputs as eager and as torch's loader."""
    real = REAL_MODELS[name]
    path = real.package(**UPDATABLE)
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

@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
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


@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
def test_container_keeps_the_tensors_alive(mlp, example):
    path, eager, constants = mlp
    x = example("mlp").inputs()
    model = aoti_cy.load(path, external_constants={k: v.clone() for k, v in constants.items()})
    gc.collect()   # nothing else refers to the clones
    with model:
        for _ in range(3):
            torch.testing.assert_close(model(*x), eager(*x))


@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
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


@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
def test_non_contiguous_values_are_copied_and_still_right(mlp, example):
    path, eager, constants = mlp
    x = example("mlp").inputs()
    given = dict(constants)
    given["fc1.weight"] = constants["fc1.weight"].t().contiguous().t()
    assert not given["fc1.weight"].is_contiguous()
    with aoti_cy.load(path, external_constants=given) as model:
        torch.testing.assert_close(model(*x), eager(*x))


# ---- external constants: bad values ---------------------------------------------------

@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
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


@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
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

@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL, DID_CALL)
def test_did_call_load_constants(mlp, package):
    """True when the runtime loaded the weights (even a package that keeps
    them outside the .so, before they are given), False over external
    constants."""
    path, _, constants = mlp
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


@requires_symbol(PINNED)
def test_pinned_async_copy_off_is_accepted_on_cpu(package, example):
    path = package("mlp")
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
@TORCH_LOADER_WARNINGS
@requires_symbol(PINNED)
@pytest.mark.parametrize("pinned", [True, False])
def test_pinned_async_copy_on_cuda(example, pinned):
    """Weights uploaded with and without pinned staging give the same
    outputs as eager and torch's loader, at load and through load_weights
    from CPU tensors."""
    ex = example("mlp")
    path = ex.package("cuda", **UPDATABLE)
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
@TORCH_LOADER_WARNINGS
@requires_symbol(EXTERNAL)
def test_external_constants_on_cuda(example):
    ex = example("mlp")
    path = ex.package("cuda", **UPDATABLE)
    eager = ex.eager("cuda")
    constants = constants_of(path, eager)
    x = ex.inputs("cuda")
    with aoti_cy.load(path, external_constants=constants) as model:
        torch.testing.assert_close(model(*x), eager(*x))
    with pytest.raises(ValueError, match="on the model's device"):
        aoti_cy.load(path, external_constants={k: v.cpu() for k, v in constants.items()})
