"""Models on a second GPU (``load(path, device="cuda:1")``, a package compiled
on cuda:0): parity with eager and with torch's loader, outputs, streams,
constants and CUDA graphs on cuda:1, nothing on cuda:0, one container per GPU
from two threads.

Most tests need two GPUs and are skipped with fewer; cuda:0 is the current
device while they run cuda:1's model (as it is in a fresh thread), which is
the case where a missing device guard puts work or memory on the wrong GPU.
Memory on a device is measured twice: torch's allocator
(``memory_allocated``) and the driver's count of bytes in use
(``mem_get_info``), which also sees the runtime's own ``cudaMalloc``s such as
a constants buffer.
"""

import threading

import pytest
import torch

import aoti_cy
from aoti_cy.cuda_graphs import capture
from aoti_cy.testing import EXAMPLES, Example, Heavy
from conftest import aoti_tempdirs, assert_outputs_match, delayed_input, graphs_of, run_in_threads

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("exact_cuda_math")]
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

GPUS = torch.cuda.device_count()
needs_two_gpus = pytest.mark.skipif(
    GPUS < 2, reason=f"needs 2 CUDA GPUs, found {GPUS}")
CUDA0, CUDA1 = torch.device("cuda", 0), torch.device("cuda", 1)

# One 4096 x 4096 float32 weight: 64 MiB, plain to see on the wrong device.
WIDE = Example(Heavy, lambda g: [torch.randn(64, 4096, generator=g)], init_args=(4096, 1))
WIDE_BYTES = 4096 * 4096 * 4
# What the driver may count on a device the model never touches (its own
# bookkeeping); a misplaced constants buffer is WIDE_BYTES.
SLACK = WIDE_BYTES // 4


@pytest.fixture(autouse=True)
def cuda0_is_current():
    """Each test starts (and ends) with cuda:0 current, and with a context on
    every GPU already, so that measuring memory creates none."""
    if GPUS >= 2:
        for index in (0, 1):
            torch.zeros(1, device=torch.device("cuda", index))
    torch.cuda.set_device(0)
    yield
    torch.cuda.set_device(0)


def device_memory(index):
    """(bytes of tensors in torch's allocator, bytes in use as the driver
    counts them) on cuda:index, once its queued work is done."""
    torch.cuda.synchronize(index)
    free, total = torch.cuda.mem_get_info(index)
    return torch.cuda.memory_allocated(index), total - free


def assert_untouched(index, before):
    allocated, used = device_memory(index)
    assert allocated == before[0], (
        f"torch's allocator holds {allocated - before[0]} more bytes on cuda:{index}")
    assert used - before[1] < SLACK, (
        f"{used - before[1]} more bytes in use on cuda:{index}")


def assert_grew(index, before, nbytes):
    """cuda:index holds ``nbytes`` more, in torch's allocator or outside it:
    the check that the memory measured at all."""
    allocated, used = device_memory(index)
    assert max(allocated - before[0], used - before[1]) >= nbytes


def wide_eager(device, state_dict=None):
    eager = WIDE.eager(device)
    if state_dict is not None:
        eager.load_state_dict(state_dict)
    return lambda inputs: [eager(*inputs).detach()]


# ---- one GPU is enough --------------------------------------------------------

def test_a_device_that_does_not_exist_is_refused():
    path = EXAMPLES["add_one"].package("cuda")
    folders = aoti_tempdirs()
    message = rf"^device cuda:{GPUS} does not exist \({GPUS} CUDA devices\)$"
    for device in (f"cuda:{GPUS}", torch.device("cuda", GPUS)):
        with pytest.raises(ValueError, match=message):
            aoti_cy.load(path, device=device)
    assert aoti_tempdirs() == folders                  # the extracted package went
    assert torch.cuda.current_device() == 0


# ---- two GPUs -----------------------------------------------------------------

@needs_two_gpus
def test_a_package_compiled_on_cuda0_runs_on_cuda1():
    path = WIDE.package("cuda")
    x = WIDE.inputs(CUDA1)
    want = wide_eager(CUDA1)(x)
    theirs = torch._inductor.aoti_load_package(path, device_index=1)
    with torch.cuda.device(1):          # torch's runner takes the current device's stream
        theirs_out = theirs.loader.run(x)
    before = [device_memory(0), device_memory(1)]
    with aoti_cy.load(path, device="cuda:1") as model:
        assert model.device == CUDA1
        assert_grew(1, before[1], WIDE_BYTES)          # the weights are on cuda:1
        with torch.cuda.device(0):
            got = model.run(x)
            called = model(*x)
        assert got[0].device == CUDA1 and called.device == CUDA1
        assert_outputs_match(got, want)
        torch.testing.assert_close(called, want[0])
        assert_outputs_match(got, theirs_out)
        assert_untouched(0, before[0])


@needs_two_gpus
def test_the_callers_current_device_is_left_alone():
    path = WIDE.package("cuda")
    x = WIDE.inputs(CUDA1)
    model = aoti_cy.load(path, device="cuda:1")
    with model:
        assert torch.cuda.current_device() == 0        # creating it set cuda:1 inside
        model.run(x)
        assert torch.cuda.current_device() == 0
        model.load_weights({"weight": torch.zeros(4096, 4096)})
        assert torch.cuda.current_device() == 0
    assert torch.cuda.current_device() == 0
    with torch.cuda.device(1):
        with aoti_cy.load(path, device="cuda:0") as model:
            assert torch.cuda.current_device() == 1
            model.run(WIDE.inputs(CUDA0))
            assert torch.cuda.current_device() == 1


@needs_two_gpus
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_runs_go_on_cuda1s_current_stream_while_cuda0_is_current(graphs):
    example = EXAMPLES["add_one"]
    (x,) = example.inputs(CUDA1)
    side = torch.cuda.Stream(CUDA1)
    with aoti_cy.load(example.package("cuda"), device="cuda:1", cuda_graphs=graphs) as model:
        for _ in range(3):                   # the model's first run, a capture, replays
            y = delayed_input(side, x)       # a run not ordered after it reads zeros
            with torch.cuda.stream(side), torch.cuda.device(0):
                assert torch.cuda.current_device() == 0
                assert torch.cuda.current_stream(CUDA1) == side
                (out,) = model.run([y])
                called = model(y)
            side.synchronize()
            torch.testing.assert_close(out, x * 3 + 1)
            torch.testing.assert_close(called, x * 3 + 1)
        if graphs:
            assert len(graphs_of(model)) == 1


@needs_two_gpus
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
@pytest.mark.parametrize("how", ["stream", "int", "call_on_stream"])
def test_an_explicit_cuda1_stream_is_used_while_cuda0_is_current(how, graphs):
    example = EXAMPLES["add_one"]
    (x,) = example.inputs(CUDA1)
    side = torch.cuda.Stream(CUDA1)
    with aoti_cy.load(example.package("cuda"), device="cuda:1", cuda_graphs=graphs) as model:
        for _ in range(3):
            y = delayed_input(side, x)
            with torch.cuda.device(0):
                if how == "call_on_stream":
                    out = model.call_on_stream(side, y)
                else:
                    (out,) = model.run([y], stream=side if how == "stream" else side.cuda_stream)
            side.synchronize()
            torch.testing.assert_close(out, x * 3 + 1)


@needs_two_gpus
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_a_stream_of_another_gpu_is_refused(graphs):
    example = EXAMPLES["add_one"]
    (x,) = example.inputs(CUDA1)
    with aoti_cy.load(example.package("cuda"), device="cuda:1", cuda_graphs=graphs) as model:
        with pytest.raises(ValueError,
                           match="the stream is on cuda:0 but the model runs on cuda:1"):
            model.run([x], stream=torch.cuda.Stream(CUDA0))
        torch.testing.assert_close(model.run([x])[0], x + 1)


@needs_two_gpus
@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "graphs"])
def test_inputs_on_another_device_are_refused(graphs):
    example = EXAMPLES["multi_io"]
    good = example.inputs(CUDA1)
    with torch.no_grad():
        want = example.eager(CUDA1)(*good)
    with aoti_cy.load(example.package("cuda"), device="cuda:1", cuda_graphs=graphs) as model:
        before = device_memory(0)
        for where in ("cuda:0", "cpu"):
            bad = [good[0], good[1].to(where), good[2]]
            with pytest.raises(ValueError,
                               match=rf"^input 1 .*is on {where} but the model runs on cuda:1$"):
                model.run(bad)
            with pytest.raises(ValueError, match=f"is on {where} but the model runs on cuda:1"):
                model(*bad)
        del bad
        assert_untouched(0, before)                     # refused before any copy
        assert_outputs_match(model.run(good), want)


@needs_two_gpus
@pytest.mark.parametrize("source", ["cpu", "cuda:1"])
def test_load_weights_on_cuda1(source):
    path = WIDE.package("cuda")
    x = WIDE.inputs(CUDA1)
    g = torch.Generator().manual_seed(3)
    weights = {"weight": (torch.randn(4096, 4096, generator=g) / 64).to(source)}
    want = wide_eager(CUDA1, weights)(x)
    theirs = torch._inductor.aoti_load_package(path, device_index=1)
    with torch.cuda.device(1):
        theirs.load_constants({k: v.to(CUDA1) for k, v in weights.items()},
                              check_full_update=True)
        theirs_out = theirs.loader.run(x)
    with aoti_cy.load(path, device="cuda:1") as model:
        old = model.run(x)
        before = [device_memory(0), device_memory(1)]
        with torch.cuda.device(0):
            model.load_weights(weights)
        # The new (inactive, now active) buffer is on cuda:1: checked before a
        # run could read cuda:0 memory from cuda:1.
        assert_untouched(0, before[0])
        assert_grew(1, before[1], WIDE_BYTES)
        with torch.cuda.device(0):
            got = model.run(x)
        assert got[0].device == CUDA1
        assert_outputs_match(got, want)
        assert_outputs_match(got, theirs_out)
        assert not torch.allclose(got[0], old[0])


@needs_two_gpus
def test_weights_on_another_gpu_are_refused():
    """``_constants.ConstantTable`` takes CPU tensors (copied over) and
    tensors on the model's device, and refuses any other GPU's, naming the
    constant, before anything changes."""
    path = WIDE.package("cuda")
    x = WIDE.inputs(CUDA1)
    elsewhere = {"weight": torch.zeros(4096, 4096, device=CUDA0)}
    with aoti_cy.load(path, device="cuda:1") as model:
        want = model.run(x)
        message = r"'weight' is on cuda:0, the model on cuda:1"
        with pytest.raises(ValueError, match=message):
            model.load_weights(elsewhere)
        with pytest.raises(ValueError, match=message):
            model.update_constant_buffer(elsewhere)
        with pytest.raises(ValueError, match=message):
            model.check_weights(elsewhere)
        assert_outputs_match(model.run(x), want)
        assert_outputs_match(model.run(x), wide_eager(CUDA1)(x))


@needs_two_gpus
def test_cuda_graphs_on_cuda1_while_cuda0_is_current():
    path = WIDE.package("cuda")
    eager = wide_eager(CUDA1)
    theirs = torch._inductor.aoti_load_package(path, device_index=1)
    with aoti_cy.load(path, device="cuda:1", cuda_graphs=True) as model:
        assert model.cuda_graphs is not None
        before = device_memory(0)
        kept = []
        for seed in (1, 2, 3, 4):
            x = WIDE.inputs(CUDA1, seed=seed)
            with torch.cuda.device(0):
                got = model.run(x)
            assert got[0].device == CUDA1
            assert_outputs_match(got, eager(x))
            with torch.cuda.device(1):
                assert_outputs_match(got, theirs.loader.run(x))
            kept.append((got, eager(x)))
        (captured,) = graphs_of(model).values()        # captured once, replayed
        assert {t.device for t in captured.inputs + list(captured.outputs)} == {CUDA1}
        for got, want in kept:                         # copies the caller owns
            assert_outputs_match(got, want)
        assert_untouched(0, before)


@needs_two_gpus
def test_a_run_captured_by_hand_on_cuda1():
    path = WIDE.package("cuda")
    eager = wide_eager(CUDA1)
    with aoti_cy.load(path, device="cuda:1") as model:
        before = device_memory(0)
        with torch.cuda.device(0):
            captured = capture(model, WIDE.inputs(CUDA1, seed=1))
            for seed in (2, 3):
                x = WIDE.inputs(CUDA1, seed=seed)
                (out,) = captured.replay(*x)
                assert out.device == CUDA1
                assert_outputs_match([out.clone()], eager(x))
        assert_untouched(0, before)
        with pytest.raises(ValueError, match="is on cuda:0 but the model runs on cuda:1"):
            captured.replay(WIDE.inputs(CUDA0)[0])


@needs_two_gpus
def test_two_containers_on_two_gpus_from_two_threads():
    path = WIDE.package("cuda")
    devices = (CUDA0, CUDA1)
    inputs = [[WIDE.inputs(d, seed=s) for s in (1, 2)] for d in devices]
    expected = [[wide_eager(d)(x) for x in xs] for d, xs in zip(devices, inputs)]
    before = device_memory(1)
    with aoti_cy.load(path, device="cuda:0") as m0:
        assert_untouched(1, before)                 # loading one leaves the other GPU
        before = device_memory(0)
        with aoti_cy.load(path, device="cuda:1") as m1:
            assert_untouched(0, before)
            models = (m0, m1)

            def work(k, calls):
                # A fresh thread: cuda:0 is its current device, whatever the model's.
                for i in range(calls):
                    (out,) = models[k].run(inputs[k][i % 2])
                    assert out.device == devices[k]
                    torch.cuda.synchronize(devices[k])
                    torch.testing.assert_close(out, expected[k][i % 2][0])

            # Each alone first: its thread leaves the other GPU as it was.
            for k in (0, 1):
                other = device_memory(1 - k)
                errors = run_in_threads(lambda _: work(k, 5), 1, timeout=120)
                assert not errors, errors
                assert_untouched(1 - k, other)
            # Then both at once.
            start = threading.Barrier(2)

            def both(k):
                start.wait()
                work(k, 50)
            errors = run_in_threads(both, 2, timeout=300)
            assert not errors, errors


@needs_two_gpus
@pytest.mark.parametrize("name", ["llama", "gpt2", "gpt2_custom_op"])
def test_transformers_models_on_cuda1(name):
    real_models = pytest.importorskip("real_models")
    real = real_models.REAL_MODELS[name]
    path = real.package("cuda", **real_models.UPDATABLE)
    eager = real.eager(CUDA1)
    theirs = torch._inductor.aoti_load_package(path, device_index=1)
    before = device_memory(0)
    with aoti_cy.load(path, device="cuda:1") as model:
        for shape in real.calls:
            args, kwargs = real.call(device=CUDA1, **shape)
            flat = [a for a in args if isinstance(a, torch.Tensor)] + [
                v for v in kwargs.values() if isinstance(v, torch.Tensor)]
            with torch.no_grad():
                want = real.output(eager(*args, **kwargs))
            with torch.cuda.device(0):
                got = real.output(model(*args, **kwargs))
                mine = model.run(flat)
            with torch.cuda.device(1):
                torchs = theirs.loader.run(flat)
            for a, b in zip(got, want):
                assert a.device == CUDA1
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
            for a, b in zip(mine, torchs):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert_untouched(0, before)
