"""CallSpec (aoti_cy._call): flattening a call into the model's inputs and
rebuilding its outputs, on specs serialized from real pytrees."""

import collections
import json

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree

from aoti_cy._call import OUT_GENERAL, OUT_LEAF, OUT_TUPLE, CallSpec


def spec_text(tree):
    return pytree.treespec_dumps(pytree.tree_flatten(tree)[1])


def call_spec(args, kwargs, outputs, num_inputs=None):
    """The CallSpec of a model exported with ``(args, kwargs)``: ``num_inputs``
    defaults to the tensors among them (non-tensor arguments are fixed)."""
    leaves = pytree.tree_leaves((args, kwargs))
    count = sum(isinstance(leaf, torch.Tensor) for leaf in leaves)
    return CallSpec(spec_text((args, kwargs)), spec_text(outputs),
                    count if num_inputs is None else num_inputs)


T = torch.zeros(1)


def test_flat_positional_tensors_take_the_fast_path():
    spec = call_spec((T, T), {}, (T, T))
    assert spec.error is None and spec.flat_inputs and spec.keywords == []
    assert spec.out_kind == OUT_TUPLE
    a, b = torch.ones(2), torch.zeros(3)
    got = spec.flatten((a, b), {})
    assert len(got) == 2 and got[0] is a and got[1] is b


@pytest.mark.parametrize("outputs, kind", [(T, OUT_LEAF), ((T, T), OUT_TUPLE),
                                           ({"y": T}, OUT_GENERAL), ((T, (T, T)), OUT_GENERAL),
                                           ([T, T], OUT_GENERAL)])
def test_output_kind_follows_the_output_spec(outputs, kind):
    assert call_spec((T,), {}, outputs).out_kind == kind


def test_keywords_are_ordered_as_exported_whatever_the_call_order():
    spec = call_spec((T,), {"mask": T, "bias": T}, T)
    assert spec.keywords == ["mask", "bias"] and not spec.flat_inputs
    x, mask, bias = torch.ones(1), torch.ones(2), torch.ones(3)
    got = spec.flatten((x,), {"bias": bias, "mask": mask})
    assert [t.shape[0] for t in got] == [1, 2, 3]


def test_an_unknown_keyword_is_named():
    spec = call_spec((T,), {"mask": T}, T)
    with pytest.raises(TypeError, match=r"takes keyword arguments \['mask'\], got "
                                        r"unexpected \['masks'\]"):
        spec.flatten((T,), {"masks": T})


def test_a_non_tensor_where_the_export_had_a_tensor_is_named_by_leaf():
    spec = call_spec((T, T), {}, T)
    with pytest.raises(TypeError, match="argument leaf 1 is int, not a tensor"):
        spec.flatten((T, 3), {})


def test_too_few_arguments_for_the_signature():
    spec = call_spec((T, T), {}, T)
    with pytest.raises(TypeError, match="do not match the exported signature"):
        spec.flatten((T,), {})


def test_numpy_arrays_count_as_tensors():
    spec = call_spec((T,), {"w": T}, T)
    array = np.ones(4, dtype=np.float32)
    got = spec.flatten((array,), {"w": T})
    assert got[0] is array and got[1] is T


def test_non_tensor_arguments_fixed_at_export_are_dropped_or_may_be_left_out():
    # exported as model(x, return_dict=False): only x reaches the model
    spec = call_spec((T,), {"return_dict": False}, T)
    assert spec.keywords == ["return_dict"]
    x = torch.ones(2)
    assert spec.flatten((x,), {"return_dict": False}) == [x]
    assert spec.flatten((x,), {}) == [x]


def test_a_tensor_keyword_left_out_is_refused_saying_only_non_tensors_may_be():
    spec = call_spec((T,), {"mask": T, "return_dict": False}, T)
    with pytest.raises(TypeError, match=r"got \[\] \(only non-tensor ones may be left out\); "
                                        r"the call holds 1 tensors, the model takes 2"):
        spec.flatten((T,), {})


def test_a_positional_tensor_cannot_stand_in_for_a_left_out_keyword():
    spec = call_spec((T,), {"mask": T, "return_dict": False}, T)
    with pytest.raises(TypeError, match=r"exported with 1 positional argument\(s\) and "
                                        r"keyword arguments \['mask', 'return_dict'\]; got 2 "
                                        r"positional"):
        spec.flatten((T, T), {})


def test_nested_inputs_flatten_in_spec_order():
    spec = call_spec(((T, {"b": T, "a": T}),), {}, T)
    x, b, a = torch.ones(1), torch.ones(2), torch.ones(3)
    got = spec.flatten(((x, {"a": a, "b": b}),), {})
    # dict leaves follow the exported key order, not the call's
    assert [t.shape[0] for t in got] == [1, 2, 3]


def test_unflatten_rebuilds_the_exported_output_structure():
    spec = call_spec((T,), {}, {"logits": T, "extra": (T, T)})
    a, b, c = torch.ones(1), torch.ones(2), torch.ones(3)
    out = spec.unflatten([a, b, c])
    assert set(out) == {"logits", "extra"}
    assert out["logits"] is a and out["extra"][0] is b and out["extra"][1] is c


def test_an_empty_spec_is_unusable_and_says_to_use_run():
    spec = CallSpec("", "", 1)
    assert spec.error.startswith("the model has no usable call spec")
    with pytest.raises(TypeError, match=r"no usable call spec .*; use run\(\)"):
        spec.flatten((T,), {})
    with pytest.raises(TypeError, match="use run"):
        spec.unflatten([T])


def _with_type(text, old, new):
    document = json.loads(text)

    def walk(node):
        if node.get("type") == old:
            node["type"] = new
        for child in node.get("children_spec") or ():
            walk(child)
    walk(document[1])
    return json.dumps(document)


Pair = collections.namedtuple("Pair", "first second")


def test_an_unregistered_output_type_names_the_module_to_import_and_is_retried():
    name = "aoti_cy_unit_tests.outputs.Pair"
    out_text = _with_type(spec_text((T, T)), "builtins.tuple", name)
    spec = CallSpec(spec_text(((T,), {})), out_text, 1)
    assert spec.error == (f"the model's call spec uses {name}, not registered with pytree "
                          f"in this process: import aoti_cy_unit_tests.outputs (the module "
                          f"that registers it) before calling the model, or use run()")
    with pytest.raises(TypeError, match="import aoti_cy_unit_tests.outputs"):
        spec.unflatten([T, T])
    # Registered later (the module imported after loading): the next call parses.
    pytree.register_pytree_node(Pair, lambda p: (list(p), None),
                                lambda values, _: Pair(*values), serialized_type_name=name)
    try:
        out = spec.unflatten([torch.ones(1), torch.zeros(1)])
        assert isinstance(out, Pair) and out.first.item() == 1 and out.second.item() == 0
        assert spec.error is None
    finally:
        pytree._deregister_pytree_node(Pair)
