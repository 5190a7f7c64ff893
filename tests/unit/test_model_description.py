"""The per-library description and the constants state, without a model."""

import json

import pytest
import torch

from aoti_cy._call import OUT_LEAF, OUT_TUPLE
from aoti_cy._constants import ConstantInfo, ConstantsState
from aoti_cy._description import ModelDescription


def _spec(leaves, out_leaves):
    """Serialized (in, out) pytree specs of ``f(*leaves)`` returning a tuple of
    ``out_leaves`` tensors (1: the tensor itself), as torch writes them."""
    import torch.utils._pytree as pytree
    _, in_spec = pytree.tree_flatten(((tuple(range(leaves))), {}))
    out = tuple(range(out_leaves)) if out_leaves > 1 else 0
    _, out_spec = pytree.tree_flatten(out)
    return pytree.treespec_dumps(in_spec), pytree.treespec_dumps(out_spec)


CONSTANTS = (
    ConstantInfo("fc_weight", "fc.weight", torch.float32, False, 1, 64),
    ConstantInfo("fc_bias", "fc.bias", torch.float32, False, 1, 64),
    ConstantInfo("folded", "folded_0", torch.float32, True, 4, 64),
)


def test_description_reads_the_call_spec_once():
    description = ModelDescription(["x", "y"], ["out"], _spec(2, 1), CONSTANTS)
    assert (description.num_inputs, description.num_outputs) == (2, 1)
    assert description.flat_call and description.out_kind == OUT_LEAF
    two_out = ModelDescription(["x"], ["a", "b"], _spec(1, 2), CONSTANTS)
    assert two_out.out_kind == OUT_TUPLE
    assert two_out.shapes is None and two_out.embedded is None


def test_description_without_a_usable_spec_still_describes():
    description = ModelDescription(["x"], ["out"], ("", ""), ())
    assert not description.flat_call
    assert description.call.error
    assert description.embedded_constants() == []


def test_embedded_constants_default_to_every_constant():
    description = ModelDescription(["x"], ["out"], _spec(1, 1), CONSTANTS)
    assert description.embedded_constants() == ["fc_weight", "fc_bias", "folded"]
    description.embedded = frozenset({"fc_bias"})
    assert description.embedded_constants() == frozenset({"fc_bias"})


def test_constants_state_tracks_what_has_no_value():
    description = ModelDescription(["x"], ["out"], _spec(1, 1), CONSTANTS)
    state = ConstantsState(description, torch.device("cpu"), "with load_weights()")
    assert not state.missing and state.folds
    state.note_present({"fc_weight"})
    assert state.missing and state.unset == ("fc.bias",)   # folded ones need no value
    message = state.missing_message("ModelContainer")
    assert message.startswith("this ModelContainer has no value yet for 1 constants ('fc.bias')")
    assert message.endswith("(with load_weights())")
    state.note_present({"fc_weight", "fc_bias"})
    assert not state.missing
    assert state.fqn_to_name() == {"fc.weight": "fc_weight", "fc.bias": "fc_bias",
                                   "folded_0": "folded"}


def test_missing_message_shows_six_names_and_counts_the_rest():
    many = tuple(ConstantInfo(f"c{i}", f"layer{i}.weight", torch.float32, False, 1, 64)
                 for i in range(9))
    state = ConstantsState(ModelDescription(["x"], ["y"], _spec(1, 1), many),
                           torch.device("cpu"), "hint")
    state.note_present(set())
    assert "'layer5.weight' and 3 more" in state.missing_message("Model")


def test_shapes_are_kept_only_once_every_constant_has_one():
    description = ModelDescription(["x"], ["out"], _spec(1, 1), CONSTANTS)
    state = ConstantsState(description, torch.device("cpu"), "")
    table = state.learn_shapes({"fc_weight": (4, 4)})
    assert description.shapes is None          # fc_bias unknown: not kept
    assert table.shapes == {"fc_weight": (4, 4)}
    state.learn_shapes({"fc_weight": (4, 4), "fc_bias": (4,)})
    assert description.shapes == {"fc_weight": (4, 4), "fc_bias": (4,)}
    with pytest.raises(ValueError, match=r"'fc.weight' has shape \(16,\), expected \(4, 4\)"):
        state.table().checked_update({"fc.weight": torch.zeros(16), "fc.bias": torch.zeros(4)})
    assert json.dumps(sorted(state.table().checked_update(
        {"fc.weight": torch.zeros(4, 4), "fc.bias": torch.zeros(4)}))) == '["fc_bias", "fc_weight"]'
