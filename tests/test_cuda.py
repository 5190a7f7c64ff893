"""CUDA on a real GPU (skipped without one): parity, streams, threads, CUDA
graphs, constant updates from CPU tensors, device checks."""

import threading

import pytest
import torch

import aoti_cy
from aoti_cy.cuda_graphs import capture
from aoti_cy.testing import EXAMPLES, MLP, make_model
from conftest import assert_outputs_match, delayed_input

pytestmark = pytest.mark.cuda
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


@pytest.fixture(scope="module")
def cuda_package():
    return lambda name: EXAMPLES[name].package("cuda")


@pytest.mark.parametrize("name", ["add_one", "multi_io", "mlp", "same_twice"])
def test_cuda_outputs_match_eager(cuda_package, name):
    example = EXAMPLES[name]
    inputs = example.inputs("cuda")
    with aoti_cy.load(cuda_package(name)) as model:
        assert model.device == torch.device("cuda", 0)
        outputs = model.run(inputs)
        assert all(t.is_cuda for t in outputs)
        called = model(*inputs)
    with torch.no_grad():
        expected = example.eager("cuda")(*inputs)
    assert_outputs_match(outputs, expected)
    assert_outputs_match(called if isinstance(called, tuple) else (called,), expected)


@pytest.mark.parametrize("device", ["cuda:0", torch.device("cuda", 0), "cuda"])
def test_device_spellings(cuda_package, device):
    with aoti_cy.load(cuda_package("add_one"), device=device) as model:
        assert model.device == torch.device("cuda", 0)


def test_device_mismatch_is_refused_before_the_call(cuda_package, package):
    with aoti_cy.load(cuda_package("add_one")) as model:
        with pytest.raises(ValueError, match=r"input 0 .* is on cpu but the model runs on cuda:0"):
            model.run([torch.randn(8)])
        with pytest.raises(ValueError, match="is on cpu"):
            model.run([torch.randn(8).numpy()])
    with aoti_cy.load(package("add_one")) as model:
        with pytest.raises(ValueError, match=r"is on cuda:0 but the model runs on cpu"):
            model.run([torch.randn(8, device="cuda")])


def test_cuda_inputs_are_checked(cuda_package):
    with aoti_cy.load(cuda_package("multi_io")) as model:
        assert model.check_inputs
        good = EXAMPLES["multi_io"].inputs("cuda")
        for bad, message in [
                (good[1][:2], "dim 0 is 2, the model expects 4"),
                (good[1].double(), "dtype"),
                # the first call learns the rank: "fewer" until then
                (good[1].unsqueeze(-1), "has 3 dimensions, the model expects (fewer|2)"),
                # A view is not copied on CUDA (the copy would be ordered on
                # torch's current stream, not necessarily the run's): refused.
                (torch.randn(5, 4, device="cuda").t(), r"stride.*x\.contiguous\(\)")]:
            with pytest.raises(ValueError, match=message):
                model.run([good[0], bad, good[2]])
        torch.testing.assert_close(model.run(good)[0], good[0] + good[1])


def test_run_on_the_current_side_stream_is_ordered(cuda_package):
    (x,) = EXAMPLES["add_one"].inputs("cuda")
    stream = torch.cuda.Stream()
    with aoti_cy.load(cuda_package("add_one")) as model:
        y = delayed_input(stream, x)
        with torch.cuda.stream(stream):
            (out,) = model.run([y])          # the current stream: the side stream
        stream.synchronize()
    torch.testing.assert_close(out, x * 3 + 1)


@pytest.mark.parametrize("as_int", [False, True])
def test_run_on_an_explicit_stream_is_ordered(cuda_package, as_int):
    (x,) = EXAMPLES["add_one"].inputs("cuda")
    stream = torch.cuda.Stream()
    with aoti_cy.load(cuda_package("add_one")) as model:
        y = delayed_input(stream, x)
        handle = stream.cuda_stream if as_int else stream
        (out,) = model.run([y], stream=handle)   # current stream stays the default
        called = model.call_on_stream(handle, y)
        stream.synchronize()
    torch.testing.assert_close(out, x * 3 + 1)
    torch.testing.assert_close(called, x * 3 + 1)


def test_two_threads_on_two_models(cuda_package):
    example = EXAMPLES["mlp"]
    with aoti_cy.load(cuda_package("mlp"), num_models=2) as model:
        inputs = [example.inputs("cuda", seed=s) for s in range(2)]
        with torch.no_grad():
            eager = example.eager("cuda")
            expected = [eager(*i) for i in inputs]
        errors = []

        def worker(k):
            try:
                for _ in range(200):
                    (out,) = model.run(inputs[k])
                    torch.cuda.current_stream().synchronize()
                    torch.testing.assert_close(out, expected[k])
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors


def test_cuda_graph_replay_matches_a_normal_run(cuda_package):
    example = EXAMPLES["mlp"]
    with aoti_cy.load(cuda_package("mlp")) as model:
        captured = capture(model, example.inputs("cuda", seed=1))
        for seed in (2, 3):
            x = example.inputs("cuda", seed=seed)
            (replayed,) = captured.replay(*x)
            replayed = replayed.clone()
            (normal,) = model.run(x)
            torch.testing.assert_close(replayed, normal)
        with pytest.raises(ValueError, match="shape"):
            captured.replay(torch.zeros(3, 64, device="cuda"))


def test_constant_updates_from_cpu_tensors(cuda_package):
    example = EXAMPLES["mlp"]
    inputs = example.inputs("cuda")
    with aoti_cy.load(cuda_package("mlp")) as model:
        g = torch.Generator().manual_seed(4)
        weights = {k: torch.randn(v.shape, generator=g)
                   for k, v in model.extract_constants_map().items()}
        eager = make_model(MLP)
        eager.load_state_dict(weights, strict=False)
        with torch.no_grad():
            expected = eager.cuda()(*inputs)
        model.update_constant_buffer(weights)               # CPU -> the GPU buffer
        torch.testing.assert_close(model.run(inputs)[0], expected)
        model.load_weights({k: v.cuda() * 0 for k, v in weights.items()})
        model.load_weights(weights)                         # CPU, via the inactive buffer
        torch.testing.assert_close(model.run(inputs)[0], expected)
        with pytest.raises(ValueError, match="user_managed constants must be on"):
            model.update_constant_buffer(weights, user_managed=True)
