"""aoti_cy.serving without Ray: dynamic batching and the JSON route's
structure, on real compiled models (the Scorer of ray_models and a
random-initialised transformers Llama)."""

import numpy as np
import pytest
import torch

import aoti_cy
from aoti_cy.serving import _batching, _json
from ray_models import WIDTH, scorer_call, scorer_eager, scorer_package
from real_models import REAL_MODELS, UPDATABLE

LLAMA = REAL_MODELS["llama"]


def _close(got, want):
    if isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            _close(got[key], want[key])
    else:
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got.copy())
        torch.testing.assert_close(torch.as_tensor(got), want)


def test_batching_groups_only_requests_that_fit_together():
    calls = [scorer_call(rows=2, seed=1), scorer_call(rows=3, seed=2),
             scorer_call(rows=1, seed=3, dtype=torch.float64), scorer_call(rows=2, seed=4),
             scorer_call(rows=0, seed=5)]
    requests_ = [_batching.Request(args, kwargs) for args, kwargs in calls]
    # float64 and the empty request each run alone; the cap splits 2+3+2
    assert _batching.group_requests(requests_, max_rows=5) == [[0, 1], [2], [3], [4]]
    args, kwargs = _batching.merge([requests_[0], requests_[1]])
    assert args[0].shape == (5, WIDTH)
    eager = scorer_eager()
    with torch.no_grad():
        shares = _batching.split(eager(*args, **kwargs), [2, 3])
        for share, (a, k) in zip(shares, calls[:2]):
            _close(share, eager(*a, **k))
    assert _batching.split({"scores": torch.zeros(4, 3)}, [2, 3]) is None


def test_json_follows_the_input_spec_and_example_dtypes():
    with aoti_cy.load(LLAMA.package(**UPDATABLE)) as model:
        spec = torch.utils._pytree.treespec_loads(model.call_spec[0])
    dtypes = _json.leaf_dtypes(spec, LLAMA.call())
    args, kwargs = _json.call_from_json(spec, [[[1, 2, 3]]], dtypes)
    assert args[0].dtype == torch.int64 and args[0].shape == (1, 3) and kwargs == {}
    with pytest.raises(TypeError, match=r"args: expected a list of 1 items"):
        _json.call_from_json(spec, {"args": [[1], [2]]}, dtypes)




def test_merged_batch_through_the_compiled_model_matches_each_call():
    """The merge/split round trip on the compiled Scorer, against eager
    PyTorch and torch's own loader, call by call."""
    calls = [scorer_call(rows=1 + i % 3, seed=40 + i) for i in range(5)]
    requests_ = [_batching.Request(a, k) for a, k in calls]
    assert _batching.group_requests(requests_) == [[0, 1, 2, 3, 4]]
    args, kwargs = _batching.merge(requests_)
    path = scorer_package()
    eager, loaded = scorer_eager(), torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as model, torch.no_grad():
        shares = _batching.split(model(*args, **kwargs), [r.rows for r in requests_])
        for share, (a, k) in zip(shares, calls):
            _close(share, eager(*a, **k))
            _close(share, loaded(*a, **k))
    # numpy in: the request holds tensors sharing the arrays' memory
    array = np.ones((2, WIDTH), dtype=np.float32)
    request = _batching.Request((array,), {"bias": array})
    assert request.numpy and request.args[0].data_ptr() == array.ctypes.data


def test_json_body_runs_the_compiled_llama_like_eager():
    with aoti_cy.load(LLAMA.package(**UPDATABLE)) as model:
        spec = torch.utils._pytree.treespec_loads(model.call_spec[0])
        dtypes = _json.leaf_dtypes(spec, LLAMA.call())
        args, kwargs = LLAMA.call(seed=3, batch=2, seq=5)
        decoded = _json.call_from_json(spec, {"args": [args[0].tolist()]}, dtypes)
        with torch.no_grad():
            got = model(*decoded[0], **decoded[1])
        want = LLAMA.eager()(*args, **kwargs)
        torch.testing.assert_close(torch.tensor(_json.to_json(got)["logits"]), want.logits)
    with pytest.raises(_json.JSONInputError, match=r"args\[0\]: element \[0\]\[1\] is 2\.5"):
        _json.call_from_json(spec, [[[1, 2.5, 3]]], dtypes)
