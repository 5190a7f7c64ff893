"""Automatic CUDA graphs (``load(..., cuda_graphs=True)``): parity with eager,
with plain runs and with torch's loader; dynamic shapes and LRU eviction;
weights swapped between calls; threads; streams; fallbacks. GPU tests are
skipped without a GPU; the CPU fallback runs anywhere."""

import inspect
import sys
import threading
import warnings

import pytest
import torch
from torch.export import Dim

import aoti_cy
from aoti_cy import cuda_graphs
from aoti_cy.cuda_graphs import GraphsUnavailable
from aoti_cy.testing import EXAMPLES, MLP, compile_package, make_model
from conftest import assert_outputs_match, delayed_input, graphs_of, run_in_threads

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def as_tuple(out):
    return out if isinstance(out, (tuple, list)) else (out,)


def eager_outputs(name, inputs):
    with torch.no_grad():
        return as_tuple(EXAMPLES[name].eager(inputs[0].device.type)(*inputs))


pytestmark = pytest.mark.usefixtures("exact_cuda_math")


# ---- fallbacks that run anywhere ----------------------------------------------

def test_a_cpu_model_falls_back_once_with_a_warning(package):
    path = package("multi_io")
    inputs = EXAMPLES["multi_io"].inputs()
    with pytest.warns(GraphsUnavailable, match=r"runs on cpu; CUDA graphs need a CUDA model"):
        model = aoti_cy.load(path, cuda_graphs=True)
    with model, aoti_cy.load(path) as plain:
        assert model.cuda_graphs is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")          # no second warning
            for seed in (1, 2, 3):
                x = EXAMPLES["multi_io"].inputs(seed=seed)
                got = model.run(x)
                assert_outputs_match(got, eager_outputs("multi_io", x))
                assert_outputs_match(got, plain.run(x))
                assert_outputs_match(as_tuple(model(*x)), got)
    theirs = torch._inductor.aoti_load_package(path)
    with pytest.warns(GraphsUnavailable):
        model = aoti_cy.load(path, cuda_graphs=True)
    with model:
        assert_outputs_match(model.run(inputs), theirs.loader.run(inputs))


def test_bad_max_graphs_is_refused_and_nothing_is_left_open(package):
    with pytest.raises(ValueError, match="max_graphs must be a positive int, got 0"):
        aoti_cy.load(package("add_one"), cuda_graphs=True, max_graphs=0)


def test_graphs_are_off_unless_asked_for(package):
    with aoti_cy.load(package("add_one")) as model:
        assert model.cuda_graphs is None


# ---- the deprecated alias aoti_cy.cuda_graph ------------------------------------

def import_the_alias_afresh():
    """Import aoti_cy.cuda_graph as a first import would (the warning is
    issued once per process, at import); return the module and its warnings."""
    sys.modules.pop("aoti_cy.cuda_graph", None)
    if "cuda_graph" in vars(aoti_cy):
        delattr(aoti_cy, "cuda_graph")
    with pytest.warns(DeprecationWarning) as record:
        import aoti_cy.cuda_graph as alias
    return alias, record


def test_importing_the_alias_warns_and_names_the_module_to_use():
    _, record = import_the_alias_afresh()
    (warning,) = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert str(warning.message) == ("aoti_cy.cuda_graph is deprecated; use "
                                     "aoti_cy.cuda_graphs (same names, same defaults)")
    # Blamed on the importer, so a user's warning filters can find the line.
    assert warning.filename == __file__


def test_every_name_of_the_alias_is_the_cuda_graphs_object():
    alias, _ = import_the_alias_afresh()
    assert sorted(alias.__all__) == sorted(cuda_graphs.__all__)
    for name in ("CaptureError", "CapturedRun", "capture"):   # the names it always had
        assert name in alias.__all__
    for name in cuda_graphs.__all__:
        assert getattr(alias, name) is getattr(cuda_graphs, name), name
    assert set(dir(alias)) == set(cuda_graphs.__all__)
    star = {}
    exec("from aoti_cy.cuda_graph import *", star)
    assert {k: v for k, v in star.items() if k != "__builtins__"} == {
        name: getattr(cuda_graphs, name) for name in cuda_graphs.__all__}


def test_the_alias_has_the_defaults_of_cuda_graphs():
    alias, _ = import_the_alias_afresh()
    for name in ("capture", "make_runner", "CapturedRun"):
        ours = inspect.signature(getattr(alias, name))
        theirs = inspect.signature(getattr(cuda_graphs, name))
        assert ours == theirs, name
    assert (inspect.signature(alias.capture).parameters["warmup"].default
            == inspect.signature(cuda_graphs.capture).parameters["warmup"].default)


def test_a_name_cuda_graphs_lacks_is_an_attribute_error_naming_the_alias():
    alias, _ = import_the_alias_afresh()
    with pytest.raises(AttributeError, match=r"no attribute '_WARMUP_RUNS' \(it is a "
                                             r"deprecated alias of aoti_cy.cuda_graphs\)"):
        alias._WARMUP_RUNS
    with pytest.raises(ImportError, match="DEFAULT_MAX_GRAPHS"):
        exec("from aoti_cy.cuda_graph import DEFAULT_MAX_GRAPHS", {})


def test_capture_through_the_alias_refuses_a_cpu_model(package):
    alias, _ = import_the_alias_afresh()
    with aoti_cy.load(package("add_one")) as model:
        with pytest.raises(ValueError, match="CUDA graphs need a CUDA model; this one "
                                             "runs on cpu"):
            alias.capture(model, EXAMPLES["add_one"].inputs())


# ---- CUDA ---------------------------------------------------------------------

@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("name", ["add_one", "multi_io", "mlp", "same_twice", "four_three"])
@pytest.mark.parametrize("entry", ["run", "call"])
def test_graphed_calls_match_eager_plain_runs_and_torch(name, entry):
    example = EXAMPLES[name]
    path = example.package("cuda")
    theirs = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path, cuda_graphs=True) as model, aoti_cy.load(path) as plain:
        assert model.cuda_graphs is not None
        kept = []
        for seed in (1, 2, 3, 4):
            x = example.inputs("cuda", seed=seed)
            got = model.run(x) if entry == "run" else as_tuple(model(*x))
            want = eager_outputs(name, x)
            assert_outputs_match(got, want)
            assert_outputs_match(got, plain.run(x))
            assert_outputs_match(got, theirs.loader.run(x))
            kept.append((got, want))
        (captured,) = graphs_of(model).values()       # one signature, one graph
        static_ptrs = {t.data_ptr() for t in captured.outputs}
        for got, want in kept:                        # outputs the caller owns
            assert not static_ptrs & {t.data_ptr() for t in got}
            assert_outputs_match(got, want)           # not overwritten by later calls


@pytest.mark.cuda
@requires_gpu
def test_static_outputs_are_the_graphs_own_buffers():
    example = EXAMPLES["mlp"]
    with aoti_cy.load(example.package("cuda"), cuda_graphs=True, static_outputs=True) as model:
        x1, x2 = example.inputs("cuda", seed=1), example.inputs("cuda", seed=2)
        (first,) = model.run(x1)
        want1 = first.clone()
        (captured,) = graphs_of(model).values()
        assert first.data_ptr() == captured.outputs[0].data_ptr()
        (second,) = model.run(x2)
        assert second.data_ptr() == first.data_ptr()   # overwritten by the next call
        assert_outputs_match([second], eager_outputs("mlp", x2))
        assert_outputs_match([want1], eager_outputs("mlp", x1))


@pytest.mark.cuda
@requires_gpu
def test_passing_the_static_inputs_skips_the_copy():
    example = EXAMPLES["multi_io"]
    with aoti_cy.load(example.package("cuda"), cuda_graphs=True) as model:
        static = model.cuda_graphs.static_inputs(model, example.inputs("cuda"))
        (captured,) = graphs_of(model).values()
        assert [t.data_ptr() for t in static] == [t.data_ptr() for t in captured.inputs]
        for seed in (2, 3):
            fresh = example.inputs("cuda", seed=seed)
            for s, f in zip(static, fresh):
                s.copy_(f)
            got = as_tuple(model(*static))
            assert_outputs_match(got, eager_outputs("multi_io", fresh))
        assert len(graphs_of(model)) == 1


class Scale(torch.nn.Module):
    """A dynamic batch through two linear layers."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(32, 16)

    def forward(self, x):
        return torch.relu(self.linear(x)) * 2


def dynamic_package():
    return compile_package(Scale, [torch.randn(4, 32, device="cuda")], device="cuda",
                           dynamic_shapes=({0: Dim("batch", min=1, max=64)},))


@pytest.mark.cuda
@requires_gpu
def test_dynamic_shapes_get_a_graph_each_and_the_oldest_is_evicted():
    path = dynamic_package()
    eager = make_model(Scale, device="cuda")
    theirs = torch._inductor.aoti_load_package(path)
    g = torch.Generator().manual_seed(3)
    batches = [3, 17, 40]
    xs = {b: torch.randn(b, 32, generator=g).cuda() for b in batches}
    with aoti_cy.load(path, cuda_graphs=True, max_graphs=2) as model, \
            aoti_cy.load(path) as plain:
        def check(b):
            (got,) = model.run([xs[b]])
            with torch.no_grad():
                torch.testing.assert_close(got, eager(xs[b]))
            torch.testing.assert_close(got, plain.run([xs[b]])[0])
            torch.testing.assert_close(got, theirs.loader.run([xs[b]])[0])
        for b in batches:
            check(b)
        sizes = [key[0][1][0] for key in graphs_of(model)]
        assert sizes == [17, 40]                      # 3 was least recently used
        check(17)                                      # a hit moves it to the end
        check(3)                                       # captured again, evicts 40
        assert [key[0][1][0] for key in graphs_of(model)] == [17, 3]
        with pytest.raises(ValueError, match="input 0"):
            model.run([torch.randn(65, 32, device="cuda")])   # above the compiled max
        check(40)


@pytest.mark.cuda
@requires_gpu
def test_new_weights_are_seen_by_the_graphs():
    example = EXAMPLES["mlp"]
    x = example.inputs("cuda")
    with aoti_cy.load(example.package("cuda"), cuda_graphs=True) as model:
        original = model.extract_constants_map()
        before = model.run(x)
        assert_outputs_match(before, eager_outputs("mlp", x))
        g = torch.Generator().manual_seed(5)
        weights = {k: torch.randn(v.shape, generator=g).cuda() for k, v in original.items()}
        eager = make_model(MLP, device="cuda")
        eager.load_state_dict(weights, strict=False)
        first_graph = next(iter(graphs_of(model).values()))
        model.load_weights(weights)                    # swaps active and inactive
        with torch.no_grad():
            want = eager(*x)
        torch.testing.assert_close(model.run(x)[0], want)
        assert next(iter(graphs_of(model).values())) is not first_graph   # captured anew
        assert model.cuda_graphs.graphs()[0][0].copies_in_graph   # copies inside again
        torch.testing.assert_close(model(*x), want)
        model.swap_constant_buffer()                   # back to the original weights
        assert_outputs_match(model.run(x), before)
        model.update_constant_buffer(weights)          # in place, active buffer
        torch.testing.assert_close(model.run(x)[0], want)


@pytest.mark.cuda
@requires_gpu
def test_two_threads_with_two_model_instances():
    example = EXAMPLES["mlp"]
    with aoti_cy.load(example.package("cuda"), num_models=2, cuda_graphs=True) as model:
        inputs = [example.inputs("cuda", seed=s) for s in range(2)]
        expected = [eager_outputs("mlp", i) for i in inputs]
        start = threading.Barrier(2)

        def work(k):
            start.wait()
            stream = torch.cuda.Stream()              # each thread on its own stream
            with torch.cuda.stream(stream):
                for _ in range(200):
                    got = model.run(inputs[k])
                    stream.synchronize()
                    assert_outputs_match(got, expected[k])
        assert not run_in_threads(work, 2, timeout=120)
        assert len(model.cuda_graphs.captured()) == 2
        assert 1 <= len(graphs_of(model)) <= 2


@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("how", ["current", "stream", "int", "call_on_stream"])
def test_graphed_calls_are_ordered_on_the_callers_stream(how):
    (x,) = EXAMPLES["add_one"].inputs("cuda")
    stream = torch.cuda.Stream()
    with aoti_cy.load(EXAMPLES["add_one"].package("cuda"), cuda_graphs=True) as model:
        model.run([x])                                 # captured on the default stream
        for _ in range(2):
            y = delayed_input(stream, x)
            if how == "current":
                with torch.cuda.stream(stream):
                    (out,) = model.run([y])
            elif how == "call_on_stream":
                out = model.call_on_stream(stream, y)
            else:
                (out,) = model.run([y], stream=stream if how == "stream" else stream.cuda_stream)
            stream.synchronize()
            torch.testing.assert_close(out, x * 3 + 1)
        # Back on the default stream: ordered after the side stream's replay.
        (out,) = model.run([x + 1])
        torch.testing.assert_close(out, x + 2)


@pytest.mark.cuda
@requires_gpu
def test_bad_inputs_are_still_refused():
    example = EXAMPLES["multi_io"]
    with aoti_cy.load(example.package("cuda"), cuda_graphs=True) as model:
        good = example.inputs("cuda")
        model.run(good)
        with pytest.raises(ValueError, match="dim 0 is 2, the model expects 4"):
            model.run([good[0], good[1][:2], good[2]])
        with pytest.raises(ValueError, match="dtype"):
            model.run([good[0], good[1].double(), good[2]])
        with pytest.raises(ValueError, match=r"is on cpu"):
            model.run([good[0], good[1].cpu(), good[2]])
        with pytest.raises(ValueError, match="takes 3 inputs"):
            model.run(good[:2])
        with pytest.raises(TypeError):
            model.run([good[0], 1.0, good[2]])
        assert_outputs_match(model.run(good), eager_outputs("multi_io", good))
        assert len(graphs_of(model)) == 1


@pytest.mark.cuda
@requires_gpu
def test_close_frees_the_graphs_first():
    example = EXAMPLES["mlp"]
    model = aoti_cy.load(example.package("cuda"), cuda_graphs=True)
    runner = model.cuda_graphs
    model.run(example.inputs("cuda"))
    assert len(graphs_of(model)) == 1
    model.close()
    assert model.cuda_graphs is None and runner.captured() == [{}]
    with pytest.raises(RuntimeError, match="closed"):
        model.run(example.inputs("cuda"))


class DataDependent(torch.nn.Module):
    """Its output's size depends on the values: the model syncs with the CPU."""

    def forward(self, x):
        return x[x > 0] * 2


@pytest.mark.cuda
@requires_gpu
def test_a_model_that_cannot_be_captured_falls_back_once():
    x = torch.randn(64, device="cuda")
    path = compile_package(DataDependent, [x], device="cuda")
    with aoti_cy.load(path, cuda_graphs=True) as model:
        with pytest.warns(GraphsUnavailable, match="capturing a run of the model failed"):
            (first,) = model.run([x])
        torch.testing.assert_close(first, x[x > 0] * 2)
        assert not model.cuda_graphs.enabled
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = torch.randn(64, device="cuda")
            torch.testing.assert_close(model.run([y])[0], y[y > 0] * 2)


@pytest.mark.cuda
@requires_gpu
def test_a_model_with_custom_ops_falls_back():
    real_models = pytest.importorskip("real_models")
    real = real_models.REAL_MODELS["gpt2_custom_op"]
    path = real.package("cuda", **real_models.UPDATABLE)
    with pytest.warns(GraphsUnavailable, match="proxy executor"):
        model = aoti_cy.load(path, cuda_graphs=True)
    with model:
        assert model.cuda_graphs is None
        args, kwargs = real.call(device="cuda")
        with torch.no_grad():
            want = real.eager("cuda")(*args, **kwargs)
        torch.testing.assert_close(model(*args, **kwargs), want, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_transformers_models_through_graphs(name):
    real_models = pytest.importorskip("real_models")
    real = real_models.REAL_MODELS[name]
    path = real.package("cuda", **real_models.UPDATABLE)
    eager = real.eager("cuda")
    theirs = torch._inductor.aoti_load_package(path)
    shapes = set()
    with aoti_cy.load(path, cuda_graphs=True) as model, aoti_cy.load(path) as plain:
        for shape in real.calls * 2:                   # captures, then replays
            args, kwargs = real.call(device="cuda", **shape)
            flat = [a for a in args if isinstance(a, torch.Tensor)] + [
                v for v in kwargs.values() if isinstance(v, torch.Tensor)]
            shapes.add(tuple(tuple(t.shape) for t in flat))
            with torch.no_grad():
                want = real.output(eager(*args, **kwargs))
            got = real.output(model(*args, **kwargs))
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
            for a, b in zip(model.run(flat), plain.run(flat)):
                torch.testing.assert_close(a, b)
            for a, b in zip(model.run(flat), theirs.loader.run(flat)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert len(graphs_of(model)) == len(shapes)    # one graph per signature
        assert all(g.copies_in_graph for g in model.cuda_graphs.graphs()[0]), \
            model.cuda_graphs.copies_note


# ---- the C call path: layouts, streams, threads, "auto" -------------------------

class Bump(torch.nn.Module):
    """One elementwise kernel; ``layout`` only names the example inputs'
    layout the package is compiled for (compiled packages are cached by
    model source, init arguments and shapes, not strides)."""

    def __init__(self, layout="contiguous"):
        super().__init__()
        self.layout = layout

    def forward(self, x):
        return x * 2 + 1


def layout_of(kind, base):
    """A (16, 8) view of ``base`` (a (16, 32) tensor) in the layout ``kind``."""
    if kind == "transposed":
        return base[:8, :16].t()                      # strides (1, 32), not contiguous
    if kind == "every_other_column":
        return base[:, ::4]                           # strides (32, 4): gaps between
    return base[:, 8:16]                              # strides (32, 1), offset 8


@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("kind", ["offset_rows", "transposed", "every_other_column"])
def test_strided_and_offset_inputs_are_copied_correctly(kind):
    g = torch.Generator().manual_seed(4)
    example = layout_of(kind, torch.randn(16, 32, generator=g).cuda())
    path = compile_package(Bump, [example], device="cuda", init_args=(kind,))
    theirs = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path, cuda_graphs=True) as model:
        for seed in range(3):
            base = torch.randn(16, 32, generator=g).cuda()
            x = layout_of(kind, base)
            assert x.stride() == example.stride()
            (got,) = model.run([x])
            torch.testing.assert_close(got, x * 2 + 1)
            torch.testing.assert_close(got, theirs.loader.run([x])[0])
        (graph,) = model.cuda_graphs.graphs()[0]
        assert graph.launched_directly                # replays launched from C
        (static,) = graph.captured.inputs
        assert static.stride() == example.stride()


@pytest.mark.cuda
@requires_gpu
def test_an_input_of_another_layout_is_refused_before_a_capture():
    example = torch.randn(16, 8, device="cuda")
    path = compile_package(Bump, [example], device="cuda")
    with aoti_cy.load(path, cuda_graphs=True) as model, aoti_cy.load(path) as plain:
        gapped = torch.randn(16, 16, device="cuda")[:, ::2]
        with pytest.raises(ValueError) as graphed_error:
            model.run([gapped])
        with pytest.raises(ValueError) as plain_error:
            plain.run([gapped])
        assert str(graphed_error.value) == str(plain_error.value)
        assert graphs_of(model) == {}
        offset = torch.randn(200, device="cuda")[72:].view(16, 8)
        assert offset.storage_offset() == 72
        torch.testing.assert_close(model.run([offset])[0], offset * 2 + 1)
        fresh = torch.randn(16, 8, device="cuda")   # same signature, offset 0
        torch.testing.assert_close(model.run([fresh])[0], fresh * 2 + 1)
        assert len(graphs_of(model)) == 1


@pytest.mark.cuda
@requires_gpu
def test_a_stream_switch_orders_the_new_stream_after_the_old():
    (x,) = EXAMPLES["add_one"].inputs("cuda")
    first, second = torch.cuda.Stream(), torch.cuda.Stream()
    with aoti_cy.load(EXAMPLES["add_one"].package("cuda"), cuda_graphs=True) as model:
        (out,) = model.run([delayed_input(first, x)], stream=first)   # captured on `first`
        results = [(out, first, x * 3 + 1)]
        # Made here and kept: delayed_input reads them later on its stream.
        bases = [x + k for k in range(4)]
        for k, base in enumerate(bases):
            stream = second if k % 2 == 0 else first
            y = delayed_input(stream, base)
            with torch.cuda.stream(stream):
                (out,) = model.run([y])
            results.append((out, stream, base * 3 + 1))
        torch.cuda.synchronize()
        for out, stream, want in results:
            torch.testing.assert_close(out, want)
        # Each output is the caller's own: none was overwritten by a later call.
        assert len({out.data_ptr() for out, _, _ in results}) == len(results)


@pytest.mark.cuda
@requires_gpu
def test_four_threads_share_two_graph_sets():
    example = EXAMPLES["mlp"]
    path = example.package("cuda")
    theirs = torch._inductor.aoti_load_package(path)
    inputs = [example.inputs("cuda", seed=s) for s in range(4)]
    expected = [eager_outputs("mlp", i) for i in inputs]
    for i, want in zip(inputs, expected):
        assert_outputs_match(theirs.loader.run(i), want)
    with aoti_cy.load(path, num_models=2, cuda_graphs=True) as model:
        start = threading.Barrier(4)

        def work(k):
            start.wait()
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                for _ in range(100):
                    got = model.run(inputs[k])
                    stream.synchronize()
                    assert_outputs_match(got, expected[k])
        assert not run_in_threads(work, 4, timeout=180)
        assert len(model.cuda_graphs.captured()) == 2


@pytest.mark.cuda
@requires_gpu
def test_auto_keeps_graphs_for_a_launch_bound_model_and_plain_runs_for_a_copy_bound_one():
    from aoti_cy.testing import Heavy
    small_x = torch.randn(8, 64, device="cuda")
    small = compile_package(Heavy, [small_x], device="cuda", init_args=(64, 16))
    big_x = torch.randn(1 << 25, device="cuda")       # 128 MiB: copies cost more than launches
    big = compile_package(Bump, [big_x], device="cuda", init_args=("large",))
    eager_small = make_model(Heavy, init_args=(64, 16), device="cuda")
    theirs = torch._inductor.aoti_load_package(small)
    with aoti_cy.load(small, cuda_graphs="auto") as model:
        assert model.cuda_graphs.mode == "auto"
        for _ in range(3):
            got = model(small_x)                      # one output: the tensor itself
            with torch.no_grad():
                torch.testing.assert_close(got, eager_small(small_x))
            torch.testing.assert_close(got, theirs.loader.run([small_x])[0])
        (decision,) = model.cuda_graphs.decisions.values()
        assert decision.choice == "graph", decision
        assert decision.graph_us < decision.plain_us
        assert len(model.cuda_graphs.captured()[0]) == 1
    with aoti_cy.load(big, cuda_graphs="auto") as model:
        for _ in range(3):
            got = model(big_x)
            torch.testing.assert_close(got, big_x * 2 + 1)
        (decision,) = model.cuda_graphs.decisions.values()
        assert decision.choice == "plain", decision
        assert model.cuda_graphs.captured() == [{}]   # the graph and its buffers are gone
        (graph,) = model.cuda_graphs.graphs()[0]
        assert graph.plain
        assert model.cuda_graphs.run(model, [big_x], None) is None   # plain from now on


def test_a_bad_cuda_graphs_mode_is_refused(package):
    from aoti_cy.cuda_graphs import make_runner
    with aoti_cy.load(package("add_one")) as model:
        with pytest.raises(ValueError, match='cuda_graphs must be False, True or "auto"'):
            make_runner(model, mode="always")
    for bad in ("always", "AUTO", 2):
        with pytest.raises(ValueError, match='cuda_graphs must be False, True or "auto"'):
            aoti_cy.load(package("add_one"), cuda_graphs=bad)


# ---- copies as nodes of the one graph a call launches ---------------------------


def graph_of(model):
    (graph,) = model.cuda_graphs.graphs()[0]
    return graph


@pytest.mark.cuda
@requires_gpu
@pytest.mark.parametrize("static_outputs", [False, True])
def test_a_call_is_one_launch_with_its_copies_inside(static_outputs):
    example = EXAMPLES["multi_io"]
    path = example.package("cuda")
    theirs = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path, cuda_graphs=True, static_outputs=static_outputs) as model:
        first = example.inputs("cuda", seed=0)
        as_tuple(model(*first))
        graph = graph_of(model)
        assert graph.copies_in_graph, model.cuda_graphs.copies_note
        assert graph.launched_directly
        static = list(graph.captured.inputs)
        kept = []
        # New tensors each call, the static inputs themselves (their copy
        # nodes turned off), the same tensors twice (nodes left as they are),
        # then new tensors again (nodes back on).
        plans = ["new", "static", "static", "new", "same", "same", "static", "new"]
        held = None
        for seed, plan in enumerate(plans, start=1):
            fresh = example.inputs("cuda", seed=seed)
            if plan == "static":
                for s_, f in zip(static, fresh):
                    s_.copy_(f)
                given = static
            elif plan == "same" and held is not None:
                for h, f in zip(held, fresh):
                    h.copy_(f)
                given = held
            else:
                given = held = [t.clone() for t in fresh]
            got = [t.clone() if static_outputs else t for t in as_tuple(model(*given))]
            want = eager_outputs("multi_io", fresh)
            assert_outputs_match(got, want)
            assert_outputs_match(got, theirs.loader.run(fresh))
            kept.append((got, want))
        # Fresh outputs are the caller's: no later call wrote into them.
        torch.cuda.synchronize()
        for got, want in kept:
            assert_outputs_match(got, want)
        if not static_outputs:
            pointers = {t.data_ptr() for got, _ in kept for t in got}
            assert len(pointers) == len(kept) * len(kept[0][0])
        assert len(graphs_of(model)) == 1


@pytest.mark.cuda
@requires_gpu
def test_copies_around_the_launch_when_asked_for():
    example = EXAMPLES["mlp"]
    with aoti_cy.load(example.package("cuda"), cuda_graphs=True) as model:
        model.cuda_graphs.copies_in_graph = False        # before the first capture
        for seed in range(3):
            x = example.inputs("cuda", seed=seed)
            assert_outputs_match([model(*x)], eager_outputs("mlp", x))
        graph = graph_of(model)
        assert graph.launched_directly and not graph.copies_in_graph


@pytest.mark.cuda
@requires_gpu
def test_evicting_graphs_while_their_replays_are_in_flight_keeps_outputs_right():
    path = dynamic_package()
    eager = make_model(Scale, device="cuda")
    side = torch.cuda.Stream()
    g = torch.Generator().manual_seed(5)
    with aoti_cy.load(path, cuda_graphs=True, max_graphs=1) as model:
        results = []
        for round_ in range(3):
            for batch in (5, 9):                          # each capture evicts the other
                x = torch.randn(batch, 32, generator=g).cuda()
                with torch.cuda.stream(side):
                    (out,) = model.run([delayed_input(side, x)])
                results.append((out, x * 3))
        torch.cuda.synchronize()
        with torch.no_grad():
            for out, x in results:
                torch.testing.assert_close(out, eager(x))
        assert len(graphs_of(model)) == 1



@pytest.mark.cuda
@requires_gpu
def test_the_manual_helper_copies_in_c_and_through_copy_for_other_strides():
    example = torch.randn(16, 8, device="cuda")
    path = compile_package(Bump, [example], device="cuda")
    with aoti_cy.load(path) as model:
        captured = cuda_graphs.capture(model, [example])
        offset = torch.randn(200, device="cuda")[72:].view(16, 8)   # captured strides
        (out,) = captured.replay(offset)
        torch.testing.assert_close(out, offset * 2 + 1)
        table, graph = captured._replays                 # the C path took it
        assert graph.captured is captured
        transposed = torch.randn(8, 16, device="cuda").t()          # other strides
        (out,) = captured.replay(transposed)
        torch.testing.assert_close(out, transposed * 2 + 1)
        (static,) = captured.inputs
        static.copy_(example * 5)
        (out,) = captured.replay(static)                 # the static input itself
        torch.testing.assert_close(out, example * 10 + 1)
        side = torch.cuda.Stream()
        x = torch.randn(16, 8, device="cuda")
        y = delayed_input(side, x)
        with torch.cuda.stream(side):                    # replays on the current stream
            (out,) = captured.replay(y)
            kept = out.clone()
        torch.cuda.synchronize()
        torch.testing.assert_close(kept, x * 6 + 1)
        with pytest.raises(ValueError, match="takes 1 inputs, got 2"):
            captured.replay(x, x)
        with pytest.raises(ValueError, match="dtype"):
            captured.replay(x.double())
        with pytest.raises(ValueError, match="on cpu"):
            captured.replay(x.cpu())
        with pytest.raises(ValueError, match="shape"):
            captured.replay(x[:8])
