"""The shape contract: inputs whose tied dims disagree never run, on any
entry point; derived dims and the 0/1 rule on symbols; everything the export
allows runs and matches eager and torch's loader."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

import aoti_cy
from aoti_cy import _shape_contract
from conftest import extract_library

import contract_models
from test_cython_api import consumer  # noqa: F401 - the compiled consumer fixture


def _entry_points(path, tmp_path):
    """name -> (call taking positional tensors and returning a list, closer)."""
    container = aoti_cy.load(path)
    dropin = aoti_cy.aoti_load_package(path)
    model = aoti_cy.Model(path)
    calls = {
        "call": lambda *xs: _as_list(container(*xs)),
        "run": lambda *xs: container.run(list(xs)),
        "run_single_threaded": lambda *xs: container.run_single_threaded(list(xs)),
        "model_run": lambda *xs: model.run(list(xs)),
        "drop_in": lambda *xs: _as_list(dropin(*xs)),
        "drop_in_loader_run": lambda *xs: dropin.loader.run(list(xs)),
    }
    return calls, [container, model]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    calls, owners = _entry_points(contract_models.tied_pair(), tmp_path_factory.mktemp("t"))
    yield calls
    for owner in owners:
        owner.close()


@pytest.mark.parametrize("entry", ["call", "run", "run_single_threaded", "model_run",
                                   "drop_in", "drop_in_loader_run"])
@pytest.mark.parametrize("a, b, message", [
    ((2, 9), (2, 10), r"input 1 \('args\[1\]'\) does not fit the model: dim 1 is 10, but input 0 \('args\[0\]'\) "
                      r"dim 1 is 9: both are 's\d+'"),
    ((2, 64), (2, 3), r"input 1 .* dim 1 is 3, but input 0 .* dim 1 is 64"),
    ((2, 1), (2, 9), r"input 1 .* dim 1 is 9, but input 0 .* dim 1 is 1"),
    ((3, 9), (2, 9), r"input 1 .* dim 0 is 2, but input 0 .* dim 0 is 3"),
    ((2, 600), (2, 600), r"input 0 .* dim 1 is 600, above the model's maximum of 512"),
])
def test_tied_dims_that_disagree_never_run(tied, entry, a, b, message):
    with pytest.raises(ValueError, match=message):
        tied[entry](torch.randn(*a), torch.randn(*b))


@pytest.mark.parametrize("entry", ["call", "run", "run_single_threaded", "model_run",
                                   "drop_in", "drop_in_loader_run"])
@pytest.mark.parametrize("shape", [(2, 9), (1, 1), (2, 1), (1, 512), (64, 3)])
def test_tied_dims_that_agree_run_as_eager(tied, entry, shape):
    a, b = torch.randn(*shape), torch.randn(*shape)
    torch.testing.assert_close(tied[entry](a, b)[0], a * 2 + b)


def test_drop_in_refuses_with_a_runtime_error_too(tied):
    # torch's callers catch RuntimeError; aoti_cy's refusal is a ValueError
    # that the drop-in's error type also derives from where torch raises one.
    with pytest.raises((ValueError, RuntimeError), match="both are"):
        tied["drop_in"](torch.randn(2, 9), torch.randn(2, 10))


def test_a_refused_call_leaves_the_container_usable(tied):
    for _ in range(3):
        with pytest.raises(ValueError):
            tied["run"](torch.randn(2, 9), torch.randn(2, 10))
        a, b = torch.randn(2, 9), torch.randn(2, 9)
        torch.testing.assert_close(tied["run"](a, b)[0], a * 2 + b)


def test_strides_are_checked_as_expressions(tied, tmp_path):
    library = extract_library(contract_models.tied_pair(), tmp_path)
    if not _shape_contract.contract_for(library, 2).asserted:
        pytest.skip("this torch writes no shape assertions: dynamic strides are unknown")
    wide = torch.randn(2, 20)
    with pytest.raises(ValueError, match=r"input 0 .* has stride 20 at dim 0, the model "
                                         r"expects s\d+ = 9 .*contiguous"):
        tied["run"](wide[:, :9], torch.randn(2, 9))
    # A row slice keeps the layout the model was compiled for.
    a = torch.randn(5, 9)[1:3]
    b = torch.randn(2, 9)
    torch.testing.assert_close(tied["run"](a, b)[0], a * 2 + b)


def test_run_handles_checks_the_contract_without_the_gil(consumer):
    with aoti_cy.load(contract_models.tied_pair()) as model:
        with pytest.raises(ValueError, match=r"input 1 .* dim 1 is 10, but input 0 .* dim 1 "
                                             r"is 9: both are"):
            consumer.run_once_nogil(model, [torch.randn(2, 9), torch.randn(2, 10)])
        a, b = torch.randn(3, 4), torch.randn(3, 4)
        torch.testing.assert_close(consumer.run_once_nogil(model, [a, b])[0], a * 2 + b)


# ---- derived dims -------------------------------------------------------------

@pytest.fixture(scope="module")
def derived():
    path = contract_models.derived_dims()
    with aoti_cy.load(path) as model:
        yield model


def _derived_eager(x, y, z):
    return [x.reshape(x.shape[0], -1, 8) + y, z[:, 1:] * 2]


@pytest.mark.parametrize("k, batch", [(3, 2), (1, 2), (1, 1), (32, 3), (2, 64)])
def test_derived_dims_run_where_the_export_allows(derived, k, batch):
    # k = 1 is below inductor's specialised minimum of 2 (8*k >= 16): the
    # 0/1 rule on the symbol runs it, as torch's runner does.
    x, y, z = torch.randn(batch, 8 * k), torch.randn(batch, k, 8), torch.randn(batch, k + 1)
    for got, want in zip(derived.run([x, y, z]), _derived_eager(x, y, z)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("x, y, z, message", [
    ((2, 12), (2, 3, 8), (2, 4), r"input 0 .* dim 1 is 12, which is not 8\*s\d+ for any whole"),
    ((2, 24), (2, 3, 8), (2, 5), r"input 2 .* dim 1 is 5, but the model expects 1 \+ s\d+ = 4 "
                                 r"\(s\d+ = 3 from input 0 .* dim 1, which is 8\*s\d+\)"),
    ((2, 24), (2, 4, 8), (2, 5), r"input 1 .* dim 1 is 4, but the model expects s\d+ = 3"),
    ((2, 264), (2, 33, 8), (2, 34), r"input 0 .* dim 1 is 264, so 's\d+' is 33, above the "
                                    r"model's maximum of 32"),
    ((2, 0), (2, 0, 8), (2, 1), r"input 0 .* dim 1 is 0, so 's\d+' is 0, below the model's "
                                r"minimum of 1"),
    ((2, 24), (2, 3, 7), (2, 4), r"input 1 .* dim 2 is 7, the model expects 8"),
])
def test_derived_dims_that_disagree_never_run(derived, x, y, z, message):
    with pytest.raises(ValueError, match=message):
        derived.run([torch.randn(*x), torch.randn(*y), torch.randn(*z)])


def test_a_symbol_only_derived_dims_hold(tmp_path):
    with aoti_cy.load(contract_models.only_derived()) as model:
        for k in (1, 2, 5):
            x = torch.randn(8 * k)
            torch.testing.assert_close(model.run([x])[0], x.reshape(-1, 8).sum(dim=1))
        with pytest.raises(ValueError, match="is 12, which is not 8"):
            model.run([torch.randn(12)])


# ---- what is and is not known ---------------------------------------------------

def test_the_contract_is_read_from_the_source(tmp_path):
    library = extract_library(contract_models.derived_dims(), tmp_path)
    contract = _shape_contract.contract_for(library, 3)
    assert contract.covered == [0, 1, 2]
    assert contract.unchecked == [] or not contract.asserted
    text = "\n".join(contract.describe(["x", "y", "z"]))
    assert "x [s" in text and "8*s" in text and "1 + s" in text
    ranges = sorted(r for r in contract.ranges if r != (0, None))
    assert ranges == [(1, 32), (1, 64)]


def _without_assertions(library):
    """Drop the shape assertions from the wrapper source beside ``library``,
    as torch before 2.13 writes it."""
    source = os.path.splitext(library)[0] + ".cpp"
    with open(source) as f:
        lines = [line for line in f if "assert_size_stride" not in line]
    with open(source, "w") as f:
        f.writelines(lines)


def test_a_source_without_assertions_is_read_from_bindings_and_bounds(tmp_path):
    library = extract_library(contract_models.derived_dims(), tmp_path)
    _without_assertions(library)
    contract = _shape_contract.contract_for(library, 3)
    assert not contract.asserted and contract.covered == [0, 1, 2]
    sizes = " | ".join(", ".join(contract.formula(t) for t in spec["sizes"])
                       for spec in contract.inputs)
    assert re.fullmatch(r"(s\d+), 8\*(s\d+) \| \1, \2, 8 \| \1, 1 \+ \2", sizes), sizes
    text = "\n".join(contract.describe(["x", "y", "z"]))
    assert "strides of dims [0] are not checked" in text
    with aoti_cy.ModelContainer(library) as model:
        for k in (1, 3):
            x, y, z = torch.randn(2, 8 * k), torch.randn(2, k, 8), torch.randn(2, k + 1)
            for got, want in zip(model.run([x, y, z]), _derived_eager(x, y, z)):
                torch.testing.assert_close(got, want)
        with pytest.raises(ValueError, match=r"input 2 .* dim 1 is 5, but the model expects "
                                             r"1 \+ s\d+ = 4"):
            model.run([torch.randn(2, 24), torch.randn(2, 3, 8), torch.randn(2, 5)])
        with pytest.raises(ValueError, match=r"input 1 .* dim 0 is 3, but input 0 .* dim 0 is 2"):
            model.run([torch.randn(2, 24), torch.randn(3, 3, 8), torch.randn(2, 4)])


def test_a_cpp_only_package_built_at_load_keeps_its_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("AOTI_CY_BUILD_CACHE", str(tmp_path / "builds"))
    with aoti_cy.load(contract_models.tied_pair(**{"aot_inductor.package_cpp_only": True})) \
            as model:
        assert _shape_contract.contract_for(model.library_path, 2).covered == [0, 1]
        with pytest.raises(ValueError, match=r"input 1 .* dim 1 is 10, but input 0 .* dim 1 is 9"):
            model(torch.randn(2, 9), torch.randn(2, 10))
        a, b = torch.randn(3, 4), torch.randn(3, 4)
        torch.testing.assert_close(model(a, b), a * 2 + b)


def test_a_library_without_source_keeps_the_models_own_checks(tmp_path):
    library = extract_library(contract_models.tied_pair(), tmp_path / "pkg")
    bare = tmp_path / "bare.so"
    with open(library, "rb") as f:
        bare.write_bytes(f.read())
    assert _shape_contract.contract_for(str(bare), 2) is None
    with aoti_cy.ModelContainer(str(bare)) as model:
        a = torch.randn(2, 9)
        torch.testing.assert_close(model.run([a, a])[0], a * 3)
        with pytest.raises(ValueError, match="dtype torch.float64, the model expects"):
            model.run([a.double(), a])


def test_inspect_shows_the_contract(tmp_path):
    done = subprocess.run([sys.executable, "-m", "aoti_cy", "inspect", "--json",
                           contract_models.derived_dims()],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    contract = report["models"][0]["shape_contract"]
    assert [i["sizes"][1] for i in contract["inputs"]][0].startswith("8*s")
    assert {s["max"] for s in contract["symbols"]} == {64, 32}
    text = subprocess.run([sys.executable, "-m", "aoti_cy", "inspect",
                           contract_models.derived_dims()],
                          capture_output=True, text=True, timeout=300).stdout
    assert "shape contract" in text and "in [1, 32]" in text


# ---- architectures nobody here wrote --------------------------------------------

def _torch_loader(path):
    return torch._inductor.aoti_load_package(path)


@pytest.fixture(scope="module")
def gpt2():
    spec = contract_models.gpt2_with_mask()
    path = spec.package()
    with aoti_cy.load(path) as model:
        yield spec, path, model


@pytest.mark.parametrize("ids, mask", [((2, 1), (2, 9)), ((2, 9), (2, 12)),
                                       ((2, 12), (2, 9)), ((2, 9), (3, 9))])
def test_gpt2_mismatched_mask_is_refused(gpt2, ids, mask):
    spec, _, model = gpt2
    kwargs = {"input_ids": torch.randint(3, 99, ids), "attention_mask": torch.ones(*mask,
                                                                                  dtype=torch.long)}
    with pytest.raises(ValueError, match=r"input 1 \('attention_mask'\) does not fit the model: dim \d is \d+, but "
                                         r"input 0 \('input_ids'\) dim \d is \d+: both are"):
        model(**kwargs)
    with pytest.raises(ValueError, match="'attention_mask'.*'input_ids'"):
        model.run([kwargs["input_ids"], kwargs["attention_mask"]])


@pytest.mark.parametrize("batch, seq", [(1, 1), (2, 9), (3, 5), (8, 32)])
def test_gpt2_matching_calls_match_eager_and_torch(gpt2, batch, seq):
    spec, path, model = gpt2
    kwargs = spec.call(seed=batch + seq, batch=batch, seq=seq)
    eager = spec.eager()
    with torch.no_grad():
        want = spec.output(eager(**kwargs))[0]
    got = model(**kwargs)
    got = got.logits if hasattr(got, "logits") else (got[0] if isinstance(got, (tuple, list))
                                                     else got)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    theirs = _torch_loader(path)(**kwargs)
    theirs = theirs.logits if hasattr(theirs, "logits") else (
        theirs[0] if isinstance(theirs, (tuple, list)) else theirs)
    torch.testing.assert_close(got, theirs)


def test_gpt2_dtype_error_names_the_input(gpt2):
    _, _, model = gpt2
    with pytest.raises(ValueError, match=r"input 0 \('input_ids'\) does not fit the model: it has dtype torch.int32, "
                                         r"the model expects torch.int64"):
        model(input_ids=torch.ones(2, 9, dtype=torch.int32),
              attention_mask=torch.ones(2, 9, dtype=torch.long))


def test_bert_token_types_are_tied_too():
    spec = contract_models.bert_with_token_types()
    with aoti_cy.load(spec.package()) as model:
        kwargs = spec.call(seed=3, batch=2, seq=7)
        with torch.no_grad():
            want = spec.output(spec.eager()(**kwargs))
        got = model(**kwargs)
        torch.testing.assert_close(got.last_hidden_state, want[0], rtol=1e-4, atol=1e-4)
        bad = dict(kwargs, token_type_ids=torch.zeros(2, 8, dtype=torch.long))
        with pytest.raises(ValueError, match=r"\('token_type_ids'\) does not fit the model: dim 1 is 8, but input \d "
                                             r"\('input_ids'\) dim 1 is 7: both are"):
            model(**bad)


def test_encoder_and_decoder_lengths_are_not_tied():
    spec = contract_models.bart_encoder_decoder()
    path = spec.package()
    with aoti_cy.load(path) as model:
        for seq, dec in [(9, 5), (4, 11), (7, 7), (1, 3)]:
            kwargs = spec.call(seed=seq * dec, batch=2, seq=seq, dec=dec)
            with torch.no_grad():
                want = spec.output(spec.eager()(**kwargs))[0]
            got = model(**kwargs)
            torch.testing.assert_close(got.logits if hasattr(got, "logits") else got[0],
                                       want, rtol=1e-4, atol=1e-4)
        bad = spec.call(seed=1, batch=2, seq=9, dec=5)
        bad["decoder_input_ids"] = bad["decoder_input_ids"][:1]
        with pytest.raises(ValueError, match=r"\('decoder_input_ids'\) does not fit the model: dim 0 is 1, but input "
                                             r"\d \('input_ids'\) dim 0 is 2"):
            model(**bad)


# ---- CUDA -------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("graphs", [False, True])
def test_gpt2_on_cuda_refuses_mismatches_and_survives_fuzzing(graphs):
    spec = contract_models.gpt2_with_mask()
    path = spec.package("cuda")
    eager = spec.eager("cuda")
    generator = torch.Generator().manual_seed(0)
    with aoti_cy.load(path, cuda_graphs=graphs) as model:
        for step in range(60):
            batch = int(torch.randint(1, 4, (), generator=generator))
            seq = int(torch.randint(1, 13, (), generator=generator))
            kwargs = {k: v.cuda() for k, v in spec.call(seed=step, batch=batch,
                                                        seq=seq).items()}
            if step % 2:
                other = max(1, seq + int(torch.randint(-3, 4, (), generator=generator)))
                if other == seq:
                    other = seq + 1
                kwargs["attention_mask"] = torch.ones(batch, other, dtype=torch.long,
                                                      device="cuda")
                with pytest.raises(ValueError, match="both are"):
                    model(**kwargs)
                continue
            with torch.no_grad():
                want = spec.output(eager(**kwargs))[0]
            got = model(**kwargs)
            got = got.logits if hasattr(got, "logits") else got[0]
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
        torch.cuda.synchronize()


@pytest.mark.cuda
@cuda
def test_tied_pair_on_cuda_with_graphs_captures_nothing_for_a_refused_call():
    path = contract_models.tied_pair()
    from aoti_cy.testing import compile_package
    from torch.export import Dim
    batch, seq = Dim("batch", min=1, max=64), Dim("seq", min=1, max=512)
    path = compile_package(contract_models.TiedPair,
                           (torch.randn(2, 9, device="cuda"), torch.randn(2, 9, device="cuda")),
                           device="cuda",
                           dynamic_shapes={"a": {0: batch, 1: seq}, "b": {0: batch, 1: seq}})
    with aoti_cy.load(path, cuda_graphs=True) as model:
        with pytest.raises(ValueError, match="both are"):
            model(torch.randn(2, 9, device="cuda"), torch.randn(2, 10, device="cuda"))
        assert all(not graphs for graphs in model.cuda_graphs.captured())
        a, b = torch.randn(2, 9, device="cuda"), torch.randn(2, 9, device="cuda")
        torch.testing.assert_close(model(a, b), a * 2 + b)
        torch.cuda.synchronize()
