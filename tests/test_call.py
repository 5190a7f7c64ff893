"""Calling a container like the exported module: pytree specs, fast path, numpy."""

import numpy as np
import pytest
import torch

import aoti_cy
from aoti_cy.testing import Nested, compile_package, make_model, nested_call_args
from conftest import assert_same_tree


@pytest.fixture(scope="module")
def nested_package():
    args, kwargs = nested_call_args()
    return compile_package(Nested, args, kwargs=kwargs)


def test_nested_call_matches_torch_loader_and_eager(nested_package):
    args, kwargs = nested_call_args(seed=7)
    reference = torch._inductor.aoti_load_package(nested_package)
    with aoti_cy.load(nested_package) as model:
        assert not model._is_flat_call()
        got = model(*args, **kwargs)
    assert_same_tree(got, reference(*args, **kwargs))
    with torch.no_grad():
        assert_same_tree(got, make_model(Nested)(*args, **kwargs))


def test_nested_dict_key_order_does_not_matter(nested_package):
    (pair, mapping), kwargs = nested_call_args(seed=3)
    with aoti_cy.load(nested_package) as model:
        forward = model(pair, mapping, **kwargs)
        backward = model(pair, dict(reversed(list(mapping.items()))), **kwargs)
    assert_same_tree(forward, backward)


def test_nested_call_errors(nested_package):
    (pair, mapping), kwargs = nested_call_args()
    with aoti_cy.load(nested_package) as model:
        with pytest.raises(TypeError, match=r"keyword arguments \['scale'\], got \[\]"):
            model(pair, mapping)
        with pytest.raises(TypeError, match="do not match the exported signature"):
            model(pair, {"x": mapping["x"]}, **kwargs)
        with pytest.raises(TypeError, match="leaf 5 is float, not a tensor"):
            model(pair, mapping, scale=2.0)


def test_flat_model_takes_the_fast_path(package, example):
    inputs = example("multi_io").inputs()
    with aoti_cy.load(package("multi_io")) as model:
        assert model._is_flat_call()
        got = model(*inputs)
    reference = torch._inductor.aoti_load_package(package("multi_io"))
    assert isinstance(got, tuple)
    assert_same_tree(got, reference(*inputs))


def test_single_output_is_returned_bare(package, example):
    (x,) = example("add_one").inputs()
    with aoti_cy.load(package("add_one")) as model:
        y = model(x)
    assert isinstance(y, torch.Tensor)
    torch.testing.assert_close(y, x + 1)


def test_numpy_inputs_are_taken_without_copy(package, example):
    inputs = [t.numpy() for t in example("multi_io").inputs()]
    with aoti_cy.load(package("multi_io")) as model:
        from_call = model(*inputs)
        from_run = model.run(inputs)
        readonly = [a.copy() for a in inputs]
        for a in readonly:
            a.setflags(write=False)
        from_readonly = model.run(readonly)
    expected = (torch.from_numpy(inputs[0]) + torch.from_numpy(inputs[1]))
    for outputs in (from_call, from_run, from_readonly):
        torch.testing.assert_close(outputs[0], expected)


def test_call_after_close_and_wrong_count(package, example):
    inputs = example("multi_io").inputs()
    model = aoti_cy.load(package("multi_io"))
    with pytest.raises(ValueError, match="takes 3 inputs"):
        model(*inputs[:2])
    model.close()
    with pytest.raises(RuntimeError, match="closed"):
        model(*inputs)
