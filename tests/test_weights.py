"""The constant-buffer API, load_weights hot swap, and the single-instance Model."""

import resource
import threading
import time

import pytest
import torch

import aoti_cy
from aoti_cy.testing import EXAMPLES, MLP, Folding, make_model

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
    from conftest import WEIGHTS_OUTSIDE_SO
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
