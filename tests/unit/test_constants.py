"""aoti_cy._constants: the one validator every constant update goes through,
on ConstantInfo tables built by hand (no model)."""

import numpy as np
import pytest
import torch

from aoti_cy._constants import (ALIGNMENT, BUFFER, PARAMETER, TENSOR_CONSTANT, ConstantInfo,
                                ConstantTable, unset_constants, weights_to_load)

CPU = torch.device("cpu")


def info(name, fqn, dtype=torch.float32, numel=1, folded=False, kind=PARAMETER,
         element_size=4):
    """A ConstantInfo as the runtime reports it: the slot is the bytes
    rounded up to 64."""
    nbytes = numel * element_size
    return ConstantInfo(name, fqn, dtype, folded, kind, -(-nbytes // ALIGNMENT) * ALIGNMENT)


def linear_table(shapes_known=True):
    """A Linear(48, 40) with a folded constant and a buffer: the bias has 160
    bytes in a 192-byte slot."""
    constants = [info("fc_weight", "fc.weight", numel=40 * 48),
                 info("fc_bias", "fc.bias", numel=40),
                 info("running", "norm.running_mean", numel=40, kind=BUFFER),
                 info("folded0", "folded0", numel=8, folded=True)]
    shapes = ({"fc_weight": (40, 48), "fc_bias": (40,), "running": (40,)}
              if shapes_known else None)
    return ConstantTable(constants, shapes, CPU)


def good_values():
    return {"fc.weight": torch.randn(40, 48), "fc.bias": torch.randn(40),
            "norm.running_mean": torch.randn(40)}


def test_constant_info_fields():
    c = info("fc_bias", "fc.bias", numel=40)
    assert (c.name, c.original_fqn, c.dtype, c.from_folded, c.type, c.data_size) == (
        "fc_bias", "fc.bias", torch.float32, False, PARAMETER, 192)


def test_lookup_by_fqn_or_internal_name():
    table = linear_table()
    assert table.lookup("fc.bias") is table.lookup("fc_bias")
    assert table.lookup("fc.bias").name == "fc_bias"
    assert table.lookup("nope") is None


def test_good_values_are_keyed_by_internal_name_and_detached():
    table = linear_table()
    given = good_values()
    given["fc.bias"].requires_grad_(True)
    values, unknown = table.check(given)
    assert unknown == []
    assert set(values) == {"fc_weight", "fc_bias", "running"}
    assert not values["fc_bias"].requires_grad
    assert torch.equal(values["fc_bias"], given["fc.bias"].detach())


def test_unknown_keys_are_returned_not_raised():
    values, unknown = linear_table().check({"fc.bias": torch.zeros(40), "other": torch.zeros(1)})
    assert list(values) == ["fc_bias"] and unknown == ["other"]


@pytest.mark.parametrize("key, value, message", [
    ("fc.bias", torch.zeros(40, dtype=torch.float64),
     "'fc.bias' has dtype torch.float64, expected torch.float32"),
    ("fc.bias", torch.zeros(41), r"'fc.bias' has shape \(41,\), expected \(40,\)"),
    ("fc.weight", torch.zeros(48, 40), r"'fc.weight' has shape \(48, 40\), expected \(40, 48\)"),
    ("fc.bias", torch.zeros(40, device="meta"), "'fc.bias' is on meta, the model on cpu"),
])
def test_a_value_that_does_not_fit_is_named(key, value, message):
    with pytest.raises(ValueError, match="constants do not match the model: " + message):
        linear_table().check({key: value})


def test_every_bad_value_is_named_in_one_message():
    with pytest.raises(ValueError) as raised:
        linear_table().check({"fc.bias": torch.zeros(3), "fc.weight": torch.zeros(2).double()})
    message = str(raised.value)
    assert "'fc.bias' has shape (3,)" in message and "'fc.weight' has dtype" in message


def test_a_value_that_is_no_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="constant 'fc.bias' must be a torch.Tensor, got list"):
        linear_table().check({"fc.bias": [0.0] * 40})


def test_constants_must_be_a_mapping():
    with pytest.raises(TypeError, match="constants must be given as a mapping, got list"):
        linear_table().check([torch.zeros(40)])


def test_numpy_values_are_taken_as_tensors():
    values, _ = linear_table().check({"fc.bias": np.arange(40, dtype=np.float32)})
    assert torch.equal(values["fc_bias"], torch.arange(40, dtype=torch.float32))


def test_unknown_shapes_are_checked_against_the_slot():
    table = linear_table(shapes_known=False)
    # 40 floats = 160 bytes round up to the 192-byte slot; so do 44
    table.check({"fc.bias": torch.zeros(40)})
    table.check({"fc.bias": torch.zeros(44)})
    with pytest.raises(ValueError, match=r"'fc.bias' has 196 bytes \(shape \(49,\)\), the "
                                         r"model's slot for it 192"):
        table.check({"fc.bias": torch.zeros(49)})
    with pytest.raises(ValueError, match=r"'fc.bias' has 128 bytes .* slot for it 192"):
        table.check({"fc.bias": torch.zeros(32)})


def test_a_copied_value_gets_storage_of_exactly_its_own_elements():
    """The runtime copies from the data pointer: a view into a larger tensor
    or a non-contiguous one is handed over as a compact copy."""
    table = linear_table()
    big = torch.arange(100, dtype=torch.float32)
    values, _ = table.check({"fc.bias": big[10:50],
                             "fc.weight": torch.randn(48, 40).t()})
    bias, weight = values["fc_bias"], values["fc_weight"]
    assert bias.untyped_storage().nbytes() == 160 and bias.storage_offset() == 0
    assert torch.equal(bias, big[10:50])
    assert weight.is_contiguous()


def test_an_uncopied_view_is_used_in_place():
    big = torch.arange(100, dtype=torch.float32)
    values, _ = linear_table().check({"fc.bias": big[10:50]}, uncopied=True)
    assert values["fc_bias"].data_ptr() == big[10:50].data_ptr()


def test_an_uncopied_value_shorter_than_its_slot_is_padded_when_the_shape_is_unknown():
    """A kernel may read the whole slot; memory the runtime reads in place
    must then be slot-sized."""
    table = linear_table(shapes_known=False)
    given = torch.arange(40, dtype=torch.float32)
    values, _ = table.check({"fc.bias": given}, uncopied=True)
    padded = values["fc_bias"]
    assert padded.shape == (40,) and torch.equal(padded, given)
    assert padded.untyped_storage().nbytes() == 192
    assert padded.data_ptr() != given.data_ptr()
    # with the shape known, nothing is padded
    values, _ = linear_table().check({"fc.bias": given}, uncopied=True)
    assert values["fc_bias"].data_ptr() == given.data_ptr()


def test_values_on_the_cpu_are_accepted_for_a_model_on_another_device():
    table = ConstantTable([info("b", "b", numel=4)], {"b": (4,)}, torch.device("cuda", 0))
    values, _ = table.check({"b": torch.zeros(4)})
    assert values["b"].device.type == "cpu"


def test_checked_update_names_unknown_keys_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown keys \['fc.bais'\] \(the model's constants "
                                         r"are \['fc.bias', 'fc.weight', 'folded0', "
                                         r"'norm.running_mean'\]\)"):
        linear_table().checked_update({"fc.bais": torch.zeros(40)})


def test_a_full_update_needs_every_constant_that_is_not_folded():
    table = linear_table()
    with pytest.raises(ValueError, match=r"missing constants \['fc.weight', "
                                         r"'norm.running_mean'\] \(a full update"):
        table.checked_update({"fc.bias": torch.zeros(40)}, full_update=True)
    assert set(table.checked_update(good_values(), full_update=True)) == {
        "fc_weight", "fc_bias", "running"}
    # a partial update is fine
    assert list(table.checked_update({"fc.bias": torch.zeros(40)})) == ["fc_bias"]


def test_unset_constants_skips_folded_ones():
    constants = linear_table().constants
    assert unset_constants(constants, {"fc_bias"}) == ["fc.weight", "norm.running_mean"]
    assert unset_constants(constants, {"fc_bias", "fc_weight", "running"}) == []
    assert unset_constants([], set()) == []


# ---- state dicts ----------------------------------------------------------------------

def tied_table():
    """An embedding tied to the output head (as in GPT-2): the model keeps one
    constant, the state dict names both."""
    return ConstantTable([info("wte", "wte.weight", numel=12),
                          info("ln", "ln.bias", numel=3),
                          info("pos", "pos_ids", dtype=torch.int64, numel=4, element_size=8,
                               kind=TENSOR_CONSTANT)],
                         {"wte": (4, 3), "ln": (3,), "pos": (4,)}, CPU)


def test_a_tied_alias_with_the_same_value_is_accepted():
    weight = torch.randn(4, 3)
    values, problems = tied_table().match_state_dict(
        {"wte.weight": weight, "lm_head.weight": weight.clone(), "ln.bias": torch.zeros(3)})
    assert problems == [] and set(values) == {"wte", "ln"}


def test_a_tied_alias_with_another_value_says_to_give_them_the_same_value():
    _, problems = tied_table().match_state_dict(
        {"wte.weight": torch.zeros(4, 3), "lm_head.weight": torch.ones(4, 3),
         "ln.bias": torch.zeros(3)})
    assert problems[0].startswith("unknown keys ['lm_head.weight']: not constants of the "
                                  "compiled model")
    assert "always_keep_tensor_constants=True" in problems[0]
    assert problems[1] == ("if 'lm_head.weight' is tied to 'wte.weight', give them the "
                           "same value")


def test_counters_and_extra_state_are_no_constants():
    _, problems = tied_table().match_state_dict(
        {"wte.weight": torch.zeros(4, 3), "ln.bias": torch.zeros(3),
         "bn.num_batches_tracked": torch.tensor(7), "block._extra_state": {"v": 1}})
    assert problems == []


def test_a_float_scalar_nobody_holds_is_unknown():
    _, problems = tied_table().match_state_dict(
        {"wte.weight": torch.zeros(4, 3), "ln.bias": torch.zeros(3),
         "logit_scale": torch.tensor(2.5)})
    assert problems and "unknown keys ['logit_scale']" in problems[0]


def test_a_missing_parameter_is_named_but_a_missing_tensor_constant_is_not():
    _, problems = tied_table().match_state_dict({"ln.bias": torch.zeros(3)})
    assert problems == ["missing constants ['wte.weight'] (weights of the model with no "
                        "value in the state dict)"]


def test_a_checkpoint_keeping_the_other_name_of_tied_weights_is_told_which_name():
    _, problems = tied_table().match_state_dict(
        {"lm_head.weight": torch.zeros(4, 3), "ln.bias": torch.zeros(3)})
    assert problems[0].startswith("missing constants ['wte.weight']")
    assert ("if 'lm_head.weight' is tied to 'wte.weight' (a checkpoint keeping one name of "
            "tied weights), give it under that name too: state_dict['wte.weight'] = "
            "state_dict['lm_head.weight']") in problems


def current_values():
    return {"wte.weight": torch.full((4, 3), 9.0), "ln.bias": torch.full((3,), 9.0),
            "pos_ids": torch.arange(4)}


def test_a_strict_load_refuses_before_anything_changes():
    asked = []
    with pytest.raises(ValueError, match=r"load_weights\(strict=True\) changed nothing: "
                                         r"missing constants \['wte.weight'\]"):
        weights_to_load(tied_table(), {"ln.bias": torch.zeros(3)}, strict=True,
                        current=lambda: asked.append(1) or current_values())
    assert asked == []


def test_a_loose_load_keeps_the_current_value_of_what_it_leaves_out():
    values = weights_to_load(tied_table(), {"ln.bias": torch.zeros(3)}, strict=False,
                             current=current_values)
    assert set(values) == {"wte", "ln", "pos"}
    assert torch.equal(values["ln"], torch.zeros(3))
    assert torch.equal(values["wte"], torch.full((4, 3), 9.0))
    assert torch.equal(values["pos"], torch.arange(4))


def test_a_constant_with_no_value_anywhere_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"load_weights: constants \['wte.weight'\] have no "
                                         r"value yet .*non-persistent buffers"):
        weights_to_load(tied_table(), {"ln.bias": torch.zeros(3)}, strict=False,
                        current=lambda: {"pos_ids": torch.arange(4)})


def test_a_full_state_dict_loads_strictly():
    given = {"wte.weight": torch.randn(4, 3), "ln.bias": torch.randn(3),
             "pos_ids": torch.arange(4) * 2}
    values = weights_to_load(tied_table(), given, strict=True, current=current_values)
    assert all(torch.equal(values[n], given[f]) for n, f in
               (("wte", "wte.weight"), ("ln", "ln.bias"), ("pos", "pos_ids")))
