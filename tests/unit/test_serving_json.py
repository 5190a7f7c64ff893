"""aoti_cy.serving._json: a JSON body turned into the call an exported module
takes, following its input spec (built here from pytrees, no model), and
outputs turned back into JSON."""

import collections

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree

from aoti_cy.serving import JSONInputError
from aoti_cy.serving._json import call_from_json, leaf_dtypes, to_json


def in_spec(args, kwargs):
    return pytree.tree_flatten((args, kwargs))[1]


IDS = torch.zeros(2, 3, dtype=torch.int64)
MASK = torch.ones(2, 3, dtype=torch.bool)
X = torch.zeros(2, dtype=torch.float32)
# model(ids, pair=(x, {"scale": x}), mask=mask, return_dict=False)
EXAMPLE = ((IDS, (X, {"scale": X})), {"mask": MASK, "return_dict": False})
SPEC = in_spec(*EXAMPLE)


def test_leaf_dtypes_name_each_tensor_as_the_route_does():
    assert leaf_dtypes(SPEC, EXAMPLE) == {
        "args[0]": torch.int64, "args[1][0]": torch.float32,
        "args[1][1]['scale']": torch.float32, "kwargs['mask']": torch.bool}


def body():
    return {"args": [[[1, 2, 3], [4, 5, 6]], [[0.5, 1.5], {"scale": [2, 3]}]],
            "kwargs": {"mask": [[True, False, True], [True, True, False]],
                       "return_dict": False}}


def test_a_body_becomes_the_exported_call_with_the_example_dtypes():
    args, kwargs = call_from_json(SPEC, body(), leaf_dtypes(SPEC, EXAMPLE))
    ids, (x, scale) = args[0], args[1]
    assert ids.dtype == torch.int64 and ids.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert x.dtype == torch.float32 and x.tolist() == [0.5, 1.5]
    assert scale["scale"].dtype == torch.float32 and scale["scale"].tolist() == [2.0, 3.0]
    assert kwargs["mask"].dtype == torch.bool and kwargs["return_dict"] is False
    # the call flattens like the example
    assert pytree.tree_flatten((args, kwargs))[1] == SPEC


def test_without_dtypes_the_values_choose_and_other_leaves_pass_as_they_are():
    args, kwargs = call_from_json(SPEC, body())
    assert args[0].dtype == torch.int64 and args[1][0].dtype == torch.float32
    assert args[1][1]["scale"].dtype == torch.int64
    assert kwargs["mask"].dtype == torch.bool and kwargs["return_dict"] is False


def test_a_non_tensor_keyword_may_be_left_out_as_in_a_handle_call():
    b = body()
    del b["kwargs"]["return_dict"]
    args, kwargs = call_from_json(SPEC, b, leaf_dtypes(SPEC, EXAMPLE))
    assert set(kwargs) == {"mask"}


def test_a_bare_list_is_the_positional_arguments():
    spec = in_spec((X, X), {})
    args, kwargs = call_from_json(spec, [[1.0, 2.0], [3.0, 4.0]], {"args[0]": torch.float32,
                                                                   "args[1]": torch.float32})
    assert kwargs == {} and [a.tolist() for a in args] == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("bad, message", [
    ("text", 'the body must be a list of arguments or an object with "args" and/or "kwargs"'),
    ({"args": [], "extra": 1}, "the body must be"),
    ({"args": [[1, 2, 3]], "kwargs": {}}, r"args: expected a list of 2 items, got a list of 1"),
    ({"args": [[1], 5], "kwargs": {"mask": [True]}}, r"args\[1\]: expected a list of 2 items, "
                                                     r"got int"),
    ({"args": [[1], [[0.5], {"bias": [1.0]}]], "kwargs": {"mask": [True]}},
     r"args\[1\]\[1\]: expected an object with keys \['scale'\], got \['bias'\]"),
    ({"args": [[1], [[0.5], {"scale": [1.0]}]], "kwargs": {"mask": [True], "musk": [True]}},
     r"kwargs: the model takes no keyword 'musk'; its keywords are \['mask', 'return_dict'\]"),
    # a misspelled keyword alone names every keyword the model takes
    ({"args": [[1], [[0.5], {"scale": [1.0]}]], "kwargs": {"musk": [True]}},
     r"kwargs: the model takes no keyword 'musk'; its keywords are \['mask', 'return_dict'\]"),
    ({"args": [[1], [[0.5], {"scale": [1.0]}]], "kwargs": {"musk": [1], "task": [2]}},
     r"kwargs: the model takes no keyword 'musk' \(nor \['task'\]\)"),
])
def test_a_body_that_does_not_follow_the_spec_is_a_type_error_naming_where(bad, message):
    with pytest.raises(TypeError, match=message):
        call_from_json(SPEC, bad, leaf_dtypes(SPEC, EXAMPLE))


@pytest.mark.parametrize("where, value, message", [
    (lambda b: b["args"].__setitem__(0, [[1.5, 2, 3], [4, 5, 6]]),
     None, r"args\[0\]: element \[0\]\[0\] is 1.5"),
    (lambda b: b["kwargs"].__setitem__("mask", [[1, 0, 1], [1, 1, 0]]),
     None, r"kwargs\['mask'\]: element \[0\]\[0\] is 1"),
    (lambda b: b["args"][1][1].__setitem__("scale", [1e39, 0]),
     None, r"args\[1\]\[1\]\['scale'\]: element \[0\] is 1e\+39, beyond the range of float32"),
])
def test_a_value_its_input_cannot_hold_is_refused_naming_the_input(where, value, message):
    b = body()
    where(b)
    with pytest.raises(JSONInputError, match=message):
        call_from_json(SPEC, b, leaf_dtypes(SPEC, EXAMPLE))


def test_a_spec_that_is_not_args_and_kwargs_is_refused():
    with pytest.raises(TypeError, match=r"the model's input spec is not \(args, kwargs\)"):
        call_from_json(pytree.tree_flatten([X])[1], [[1.0]])


Point = collections.namedtuple("Point", "x y")


def test_a_type_json_cannot_build_is_refused_saying_to_use_a_handle():
    spec = in_spec((Point(X, X),), {})
    with pytest.raises(TypeError, match=r"args\[0\]: the model takes a namedtuple here, which the "
                                        r"JSON route cannot build; call through a handle"):
        call_from_json(spec, [[[1.0], [2.0]]])


def test_outputs_become_plain_json_values():
    outputs = {"logits": torch.tensor([[1.5, -2.0]]), "ids": (torch.tensor([3]), np.arange(2)),
               "n": 7}
    assert to_json(outputs) == {"logits": [[1.5, -2.0]], "ids": [[3], [0, 1]], "n": 7}
    assert to_json(torch.tensor(2.5)) == 2.5
    assert to_json((torch.ones(1, dtype=torch.bool),)) == [[True]]
    ordered = collections.OrderedDict([(1, torch.zeros(1)), ("b", [torch.ones(1)])])
    assert to_json(ordered) == {"1": [0.0], "b": [[1.0]]}


def test_outputs_that_require_grad_are_detached():
    out = torch.ones(2, requires_grad=True) * 2
    assert to_json({"y": out}) == {"y": [2.0, 2.0]}
