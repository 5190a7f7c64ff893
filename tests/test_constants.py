"""Property tests of the constants path: constants of 1, 3, 5x7 and 40
elements in float32, float16, bfloat16 and int64 (sizes that are not
multiples of the runtime's 64-byte slots), set through every update entry
point and aoti_cy.Model, then checked against eager under the same values."""

import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

import aoti_cy
from aoti_cy._constants import ALIGNMENT, ConstantTable
from aoti_cy.testing import EXAMPLES, make_model
from conftest import assert_outputs_match

EXAMPLE = EXAMPLES["odd_constants"]
# Keep even the one-element parameter a constant rather than inlined.
CONFIGS = {"always_keep_tensor_constants": True}
EXAMPLES_PER_TEST = int(os.environ.get("AOTI_CY_FUZZ_EXAMPLES", "12"))

ENTRY_POINTS = ["update_constant_buffer", "use_inactive+swap",
                "update_inactive_constant_buffer", "load_weights", "user_managed",
                "Model.update_constants_map", "Model(constants=)"]


@pytest.fixture(scope="module")
def odd_package():
    return EXAMPLE.package("cpu", **CONFIGS)


def random_values(seed):
    g = torch.Generator().manual_seed(seed)
    state = make_model(EXAMPLE.model_cls).state_dict()
    return {k: (torch.randint(-50, 50, v.shape, generator=g) if v.dtype == torch.int64
                else torch.randn(v.shape, generator=g).to(v.dtype))
            for k, v in state.items()}


def eager_outputs(values, inputs):
    module = make_model(EXAMPLE.model_cls)
    module.load_state_dict(values)
    with torch.no_grad():
        return module(*inputs)


def test_every_constant_is_kept_with_its_unaligned_size(odd_package):
    with aoti_cy.load(odd_package) as model:
        sizes = {c.original_fqn: c.data_size for c in model.constants}
    state = make_model(EXAMPLE.model_cls).state_dict()
    assert set(sizes) == set(state)
    for fqn, tensor in state.items():
        # the slot is the tensor's bytes rounded up to the alignment
        assert sizes[fqn] == -(-tensor.nbytes // ALIGNMENT) * ALIGNMENT
    assert any(t.nbytes % ALIGNMENT for t in state.values())


@settings(max_examples=EXAMPLES_PER_TEST, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), entry=st.sampled_from(ENTRY_POINTS))
def test_values_set_through_any_entry_point_reach_the_model(odd_package, seed, entry):
    values = random_values(seed)
    inputs = EXAMPLE.inputs(seed=seed % 97)
    if entry.startswith("Model"):
        given_values = values if entry == "Model(constants=)" else None
        with aoti_cy.Model(odd_package, constants=given_values) as model:
            if given_values is None:
                model.update_constants_map(values)
            outputs = model.run(inputs)
    else:
        with aoti_cy.load(odd_package) as model:
            if entry == "update_constant_buffer":
                model.update_constant_buffer(values)
            elif entry == "use_inactive+swap":
                model.update_constant_buffer(values, use_inactive=True)
                model.swap_constant_buffer()
            elif entry == "update_inactive_constant_buffer":
                model.update_inactive_constant_buffer(values)
                model.swap_constant_buffer()
            elif entry == "load_weights":
                model.load_weights(values)
            elif entry == "user_managed":
                values = {k: v.clone() for k, v in values.items()}
                model.update_constant_buffer(values, user_managed=True)
            outputs = model.run(inputs)
            extracted = model.extract_constants_map()
            for fqn, value in values.items():
                assert torch.equal(extracted[fqn], value), fqn
    assert_outputs_match(outputs, eager_outputs(values, inputs))


@pytest.mark.parametrize("fqn, bad, message", [
    ("three", torch.zeros(4, dtype=torch.float16), r"'three' has shape \(4,\), expected \(3,\)"),
    ("three", torch.zeros(3), "'three' has dtype torch.float32, expected torch.float16"),
    ("forty", torch.zeros(41, dtype=torch.bfloat16), "expected"),
    ("counts", torch.zeros(3, dtype=torch.int32), "dtype torch.int32"),
    ("odd", torch.zeros(7, 5), r"has shape \(7, 5\), expected \(5, 7\)"),
])
def test_wrong_values_are_named_and_change_nothing(odd_package, fqn, bad, message):
    inputs = EXAMPLE.inputs()
    with aoti_cy.load(odd_package) as model:
        before = model.run(inputs)
        for call in (model.update_constant_buffer, model.load_weights):
            values = dict(random_values(3), **{fqn: bad})
            with pytest.raises(ValueError, match=message):
                call(values)
        assert_outputs_match(model.run(inputs), before)
    with pytest.raises(ValueError, match=message):
        aoti_cy.Model(odd_package, constants=dict(random_values(3), **{fqn: bad}))


def test_sizes_are_checked_against_slots_when_shapes_are_unknown():
    # A container without weights cannot say shapes: bytes must round up to
    # the constant's slot.
    from aoti_cy.interface import ConstantInfo
    info = ConstantInfo("b", "lin.bias", torch.float32, False, 1, 192)
    table = ConstantTable([info], None, torch.device("cpu"))
    values, unknown = table.check({"lin.bias": torch.zeros(40)})   # 160 bytes
    assert list(values) == ["b"] and unknown == []
    for bad in (torch.zeros(49), torch.zeros(8)):   # 196 and 32 bytes
        with pytest.raises(ValueError, match="the model's slot for it 192"):
            table.check({"lin.bias": bad})


def test_values_of_unknown_shape_never_leave_a_kernel_reading_past_them():
    # Without weights the model cannot say shapes: a value that only fits the
    # slot is accepted, and where the runtime keeps the caller's memory
    # (Model, user-managed constants) it is first copied into a full slot.
    path = EXAMPLE.package("cpu", **CONFIGS, **{"aot_inductor.package_constants_in_so": False})
    values = random_values(5)
    values["forty"] = values["forty"][:33]          # 66 bytes in a 128-byte slot
    inputs = EXAMPLE.inputs()
    with aoti_cy.Model(path) as model:
        model.update_constants_map(values)
        forty = model.run(inputs)[2]
    torch.testing.assert_close(forty[:33], values["forty"] * -2)
    assert torch.all(forty[33:] == 0)
    with aoti_cy.load(path) as container:
        container.update_constant_buffer(values, user_managed=True)
        torch.testing.assert_close(container.run(inputs)[2], forty)


def test_extra_state_in_a_state_dict_is_no_constant(odd_package):
    values = dict(random_values(9), _extra_state={"version": 3})
    inputs = EXAMPLE.inputs()
    with aoti_cy.load(odd_package) as model:
        model.load_weights(values)
        assert_outputs_match(model.run(inputs), eager_outputs(random_values(9), inputs))
