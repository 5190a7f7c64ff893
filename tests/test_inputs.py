"""Every public entry point, given every kind of wrong or unusual input: a
clear exception or the eager result, never a wrong number or a crash.

The model is multi_io: three float32 (4, 5) inputs, outputs a + b, b * c and
(a - c).sum(-1). Each case swaps input 1 (b) for something else.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import aoti_cy
from aoti_cy.testing import compile_package
from conftest import extract_library


def _base():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(4, 5, generator=g) for _ in range(3)]


def _wide():
    return torch.randn(4, 10)


def _readonly(array):
    array.setflags(write=False)
    return array


# name -> (input 1, None for "same result as eager" or (exception, message regex))
CASES = {
    # wrong values
    "none": (None, (TypeError, r"input 1 \('.*'\) must be a torch.Tensor")),
    "int": (3, (TypeError, "must be a torch.Tensor")),
    "list": ([[1.0] * 5] * 4, (TypeError, "must be a torch.Tensor")),
    "float64": (torch.randn(4, 5, dtype=torch.float64), (ValueError, r"input 1 .*has dtype torch\.float64, the model expects torch\.float32")),
    "int32": (torch.ones(4, 5, dtype=torch.int32), (ValueError, r"dtype torch\.int32, the model expects torch\.float32")),
    "bool": (torch.ones(4, 5, dtype=torch.bool), (ValueError, r"dtype torch\.bool, the model")),
    "float16": (torch.ones(4, 5, dtype=torch.float16), (ValueError, r"dtype torch\.float16, the model")),
    "meta": (torch.empty(4, 5, device="meta"), (ValueError, r"input 1 .*is on meta but the model runs on cpu")),
    "rank3": (torch.randn(1, 4, 5), (ValueError, "has 3 dimensions, the model expects 2")),
    "rank3_trailing": (torch.randn(4, 5, 1), (ValueError, "has 3 dimensions, the model expects 2")),
    "rank1": (torch.randn(20), (ValueError, "has 1 dimensions, the model expects 2")),
    "rank0": (torch.tensor(1.0), (ValueError, "has 0 dimensions, the model expects 2")),
    "short_rows": (torch.randn(3, 5), (ValueError, r"input 1 .* dim 0 is 3, the model expects 4")),
    "long_cols": (torch.randn(4, 6), (ValueError, "dim 1 is 6, the model expects 5")),
    "broadcastable": (torch.randn(1, 5), (ValueError, "dim 0 is 1, the model expects 4")),
    "zero_rows": (torch.randn(0, 5), (ValueError, "dim 0 is 0, the model expects 4")),
    "zero_both": (torch.randn(0, 0), (ValueError, "dim 0 is 0, the model expects 4")),
    "sparse": (torch.randn(4, 5).to_sparse(), (ValueError, "input 1")),
    # right values, memory the model was not compiled for: refused, not copied
    "transposed": (torch.randn(5, 4).t(), (ValueError, r"stride.*x\.contiguous\(\)")),
    "column_slice": (_wide()[:, ::2], (ValueError, "stride 10 at dim 0, the model expects 5")),
    "expanded": (torch.randn(1, 5).expand(4, 5), (ValueError, "stride 0 at dim 0")),
    "stride0_both": (torch.randn(1, 1).expand(4, 5), (ValueError, "stride")),
    "size1_odd_stride": (torch.randn(5, 1).t().expand(4, 5), (ValueError, "stride")),
    "numpy_transposed": (torch.randn(5, 4).numpy().T, (ValueError, "stride")),
    "numpy_reversed": (torch.randn(4, 5).numpy()[::-1], (ValueError, "input 1")),
    "nested": (torch.nested.nested_tensor([torch.randn(5)] * 4), (ValueError, "input 1")),
    # right values, right layout
    "offset_slice": (torch.randn(6, 5)[2:], None),
    "flipped": (torch.randn(4, 5).flip(0), None),
    "requires_grad": (torch.randn(4, 5, requires_grad=True), None),
    "numpy": (torch.randn(4, 5).numpy(), None),
    "numpy_readonly": (_readonly(torch.randn(4, 5).numpy()), None),
}


def _eager(inputs):
    a, b, c = [torch.as_tensor(t.copy() if hasattr(t, "setflags") else t) for t in inputs]
    with torch.no_grad():
        return [a + b, b * c, (a - c).sum(dim=-1)]


@pytest.fixture(scope="module")
def multi_io_library(package, tmp_path_factory):
    return extract_library(package("multi_io"), tmp_path_factory.mktemp("multi_io"))


@pytest.fixture(scope="module", params=["run", "run_single_threaded", "call", "model_run"])
def entry(request, package, multi_io_library):
    """(name, function taking a list of inputs and returning a list of outputs)."""
    if request.param == "model_run":
        model = aoti_cy.Model(multi_io_library)
        run = model.run
    else:
        model = aoti_cy.load(package("multi_io"))
        run = {"run": model.run, "run_single_threaded": model.run_single_threaded,
               "call": lambda inputs: list(model(*inputs))}[request.param]
    # The matrix checks a model that already learned its ranks, whichever
    # case runs first (first calls are tested on their own below).
    run(_base())
    yield request.param, run
    model.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_input_matrix(entry, case):
    _, run = entry
    bad, expected = CASES[case]
    inputs = _base()
    inputs[1] = bad
    if expected is None:
        outputs = run(inputs)
        for got, want in zip(outputs, _eager(inputs), strict=True):
            assert not got.requires_grad
            torch.testing.assert_close(got, want)
        return
    error, message = expected
    with pytest.raises(error, match=message):
        run(inputs)
    # The model is unharmed and the caller's tensor untouched.
    good = _base()
    torch.testing.assert_close(run(good)[0], good[0] + good[1])


@pytest.mark.parametrize("count", [0, 2, 4])
def test_wrong_count_on_every_entry_point(entry, count):
    _, run = entry
    inputs = (_base() * 2)[:count]
    with pytest.raises(ValueError, match=f"takes 3 inputs .* got {count}"):
        run(inputs)


def test_views_are_refused_and_left_alone(package):
    with aoti_cy.load(package("multi_io")) as model:
        inputs = _base()
        view = torch.randn(5, 4).t()
        inputs[1] = view
        before = view.clone()
        with pytest.raises(ValueError, match="contiguous"):
            model.run(inputs)
        assert view.stride() == (1, 4)
        torch.testing.assert_close(view, before, rtol=0, atol=0)
        inputs[1] = view.contiguous()
        torch.testing.assert_close(model.run(inputs)[0], inputs[0] + view)


def _without_source(library, folder):
    """A copy of a model library with no wrapper source beside it: only the
    model's own per-input checks are known for it."""
    copy = os.path.join(folder, "bare.so")
    shutil.copy(library, copy)
    return copy


@pytest.mark.parametrize("index", [0, 2])
@pytest.mark.parametrize("shape, reason", [
    ((4,), "it has 1 dimensions, the model expects more"),
    ((), "it has 0 dimensions, the model expects more"),
    ((20,), "unmatched dim value at 0, expected: 4, but got: 20"),   # an earlier mismatch
    ((4, 5, 1), "it has 3 dimensions, the model expects fewer"),
    ((4, 5, 1, 1, 1, 1, 1), "it has 7 dimensions, the model expects fewer")])
def test_wrong_rank_on_first_call_is_caught_by_the_models_checks(
        multi_io_library, tmp_path, index, shape, reason):
    # A library without its source: the first call of a fresh container
    # learns the rank from probes before the caller's tensor is checked, so
    # a 1-d tensor of the right leading size never has sizes[1] read.
    with aoti_cy.ModelContainer(_without_source(multi_io_library, tmp_path)) as model:
        inputs = _base()
        inputs[index] = torch.randn(shape)
        with pytest.raises(ValueError, match=rf"input {index} .*does not fit the model: "
                                             rf"{reason} \(got"):
            model.run(inputs)
        model.run(_base())   # and the container is fine afterwards


@pytest.mark.parametrize("index", [0, 2])
@pytest.mark.parametrize("shape", [(4,), (), (20,), (4, 5, 1), (4, 5, 1, 1, 1, 1, 1)])
def test_wrong_rank_on_first_call_is_caught_by_the_contract(package, index, shape):
    with aoti_cy.load(package("multi_io")) as model:
        inputs = _base()
        inputs[index] = torch.randn(shape)
        with pytest.raises(ValueError, match=rf"input {index} .*has {len(shape)} dimensions, "
                                             rf"the model expects 2 \(got"):
            model.run(inputs)
        model.run(_base())


def test_rank_is_checked_after_it_is_learned(package):
    # The first call learns the rank; later calls compare it before running
    # the model's check (which would read sizes past a smaller tensor's end).
    with aoti_cy.load(package("multi_io")) as model:
        model.run(_base())
        for shape in [(20,), (), (4, 5, 1), (1, 1, 4, 5)]:
            inputs = _base()
            inputs[0] = torch.randn(shape)
            with pytest.raises(ValueError, match=rf"has {len(shape)} dimensions, the model expects 2"):
                model.run(inputs)


def test_check_inputs_false_runs_right_inputs(package):
    with aoti_cy.load(package("multi_io"), check_inputs=False) as model:
        assert model.check_inputs is False
        inputs = _base()
        for got, want in zip(model.run(inputs), _eager(inputs)):
            torch.testing.assert_close(got, want)
        with pytest.raises(TypeError):
            model.run([inputs[0], None, inputs[2]])   # types and counts are still checked


def test_checks_are_on_by_default(package):
    with aoti_cy.load(package("multi_io")) as model:
        assert model.check_inputs is True


def test_stripped_library_needs_an_explicit_choice(package, tmp_path):
    library = extract_library(package("add_one"), tmp_path)
    stripped = str(tmp_path / "stripped.so")
    strip = subprocess.run(["strip", "-o", stripped, library], capture_output=True)
    if strip.returncode != 0:
        pytest.skip(f"strip failed: {strip.stderr.decode()}")
    with pytest.raises(aoti_cy.PackageError, match="no input-check functions.*check_inputs=False"):
        aoti_cy.ModelContainer(stripped)
    with aoti_cy.ModelContainer(stripped, check_inputs=False) as model:
        x = torch.randn(8)
        torch.testing.assert_close(model.run([x])[0], x + 1)


def test_library_checks_under_env_raise_aoti_error(package, tmp_path):
    # With AOTI_RUNTIME_CHECK_INPUTS=1 the model checks its own inputs inside
    # the C call: a failed run comes back as AOTIError with the model's
    # message, and the container keeps working. (In a child process: each
    # library reads the variable once.)
    library = extract_library(package("add_one"), tmp_path)
    script = textwrap.dedent(f"""
        import torch, aoti_cy
        model = aoti_cy.ModelContainer({library!r}, check_inputs=False)
        try:
            model.run([torch.randn(3)])
        except aoti_cy.AOTIError as e:
            assert e.function == "AOTInductorModelContainerRun", e.function
            if model.library.exported()["AOTInductorGetLastError"]:
                assert "expected: 8" in e.detail, e.detail
            else:   # older models print the reason to stderr
                assert "stderr" in e.detail, e.detail
            print("raised")
        x = torch.randn(8)
        torch.testing.assert_close(model.run([x])[0], x + 1)
        print("healthy")
    """)
    env = dict(os.environ, AOTI_RUNTIME_CHECK_INPUTS="1")
    result = subprocess.run([sys.executable, "-c", script], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["raised", "healthy"]


class EmptyDims(torch.nn.Module):
    """Inputs with an empty dim in each position."""

    def forward(self, first, last, middle):
        return first + 1, last * 2, middle - 1


EMPTY_SHAPES = [(0, 3), (4, 0), (2, 0, 3)]


def test_empty_dims_in_every_position_run_on_the_first_call():
    args = [torch.randn(shape) for shape in EMPTY_SHAPES]
    path = compile_package(EmptyDims, args)
    with aoti_cy.load(path) as model:
        for _ in range(2):
            outputs = model.run(args)
            assert [tuple(t.shape) for t in outputs] == EMPTY_SHAPES
    for i, shape in enumerate(EMPTY_SHAPES):
        for bad in (torch.randn(*shape, 1), torch.randn(shape[:-1]),
                    torch.randn([s + 1 for s in shape])):
            # first call with a wrong input: the rank is learned on it
            with aoti_cy.load(path) as model:
                wrong = list(args)
                wrong[i] = bad
                with pytest.raises(ValueError, match=f"input {i} "):
                    model.run(wrong)
                assert [tuple(t.shape) for t in model.run(args)] == EMPTY_SHAPES
