"""aoti_cy._spec_tree: serialized pytree specs as trees of named leaves,
including specs whose types are not registered in this process."""

import json

import pytest
import torch
import torch.utils._pytree as pytree

from aoti_cy import _spec_tree

T = torch.zeros(1)


def spec_text(tree):
    return pytree.treespec_dumps(pytree.tree_flatten(tree)[1])


def test_inputs_are_named_by_position_keyword_and_path():
    node = _spec_tree.parse_spec(spec_text(((T, {"x": T, "y": (T, T)}), {"mask": T})))
    roots = _spec_tree.input_roots(node)
    assert [name for name, _ in roots] == ["args[0]", "args[1]", "mask"]
    assert _spec_tree.leaves(roots) == [
        ("args[0]", 0), ("args[1]['x']", 1), ("args[1]['y'][0]", 2),
        ("args[1]['y'][1]", 3), ("mask", 4)]


def test_a_spec_that_is_not_args_and_kwargs_is_one_root_named_inputs():
    node = _spec_tree.parse_spec(spec_text([T, T]))
    assert node.kind == "list"
    roots = _spec_tree.input_roots(node)
    assert [name for name, _ in roots] == ["inputs"]
    assert _spec_tree.leaves(roots) == [("inputs[0]", 0), ("inputs[1]", 1)]


@pytest.mark.parametrize("outputs, names", [
    (T, ["output"]),
    ((T, T), ["[0]", "[1]"]),
    ({"logits": T, "hidden": (T, T)}, ["logits", "hidden"]),
])
def test_output_roots(outputs, names):
    roots = _spec_tree.output_roots(_spec_tree.parse_spec(spec_text(outputs)))
    assert [name for name, _ in roots] == names


def test_leaf_indices_follow_flattening_order():
    outputs = {"b": (T, T), "a": T}
    roots = _spec_tree.output_roots(_spec_tree.parse_spec(spec_text(outputs)))
    found = _spec_tree.leaves(roots)
    assert found == [("b[0]", 0), ("b[1]", 1), ("a", 2)]
    # the same order as pytree's own flattening
    marked = {"b": ("b0", "b1"), "a": "a"}
    assert pytree.tree_leaves(marked) == ["b0", "b1", "a"]


def unregistered_output_spec():
    """A transformers ModelOutput as torch serializes it (a registered
    dataclass-like type with its field names in the context), for a
    process that has not imported transformers."""
    return json.dumps([1, {
        "type": "transformers.modeling_outputs.CausalLMOutputWithPast",
        "context": json.dumps(["logits", "past_key_values"]),
        "children_spec": [
            {"type": None, "context": None, "children_spec": []},
            {"type": "builtins.tuple", "context": "null", "children_spec": [
                {"type": None, "context": None, "children_spec": []},
                {"type": None, "context": None, "children_spec": []}]}]}])


def test_an_unregistered_type_still_shows_its_fields():
    node = _spec_tree.parse_spec(unregistered_output_spec())
    assert node.kind == "CausalLMOutputWithPast"
    roots = _spec_tree.output_roots(node)
    assert _spec_tree.leaves(roots) == [("logits", 0), ("past_key_values[0]", 1),
                                        ("past_key_values[1]", 2)]


def test_a_context_that_does_not_name_every_child_falls_back_to_positions():
    document = json.loads(unregistered_output_spec())
    document[1]["context"] = json.dumps(["logits"])        # one name, two children
    node = _spec_tree.parse_spec(json.dumps(document))
    assert [key for key, _ in node.children] == [0, 1]
    document[1]["context"] = "not json"
    node = _spec_tree.parse_spec(json.dumps(document))
    assert [key for key, _ in node.children] == [0, 1]


def test_child_paths():
    assert _spec_tree.child_path("", "tuple", 0) == "[0]"
    assert _spec_tree.child_path("", "dict", "x") == "x"
    assert _spec_tree.child_path("a", "dict", "x") == "a['x']"
    assert _spec_tree.child_path("a", "OrderedDict", "x") == "a['x']"
    assert _spec_tree.child_path("out", "CausalLMOutputWithPast", "logits") == "out.logits"
    assert _spec_tree.child_path("a", "list", 3) == "a[3]"


@pytest.mark.parametrize("text", ["", "not json", "[1, 2, 3]", "42", '"text"', "[1, 5]",
                                  '[1, {"type": "builtins.tuple", "children_spec": [7]}]'])
def test_text_that_is_not_a_spec_gives_none(text):
    assert _spec_tree.parse_spec(text) is None
    assert _spec_tree.input_roots(None) == [] and _spec_tree.output_roots(None) == []


def test_to_json():
    node = _spec_tree.parse_spec(spec_text({"y": (T, T)}))
    assert node.to_json() == {"type": "dict", "children": [
        {"key": "y", "type": "tuple", "children": [{"key": 0, "leaf": 0},
                                                   {"key": 1, "leaf": 1}]}]}
