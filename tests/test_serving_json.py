"""Strict JSON decoding (aoti_cy.serving), without Ray: property tests per
input dtype. Values a dtype holds exactly are taken and equal what was sent;
every lossy one is refused with the input's name. The last test decodes a
body for a real compiled model (BERT, keyword inputs) end to end."""

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aoti_cy
from aoti_cy.serving import JSONInputError, call_from_json, leaf_dtypes, tensor_from_json
from real_models import REAL_MODELS

INTEGER = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
           torch.uint16, torch.uint32, torch.uint64]
FLOAT = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
MANTISSA = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}
NAME = "kwargs['input_ids']"
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _grid(elements, max_dims=3):
    """Rectangular nested lists (0 to 3 dims) of ``elements``, through JSON."""
    # dims past a 0 are not spelled in JSON ([] is any shape (0, ...)): cut there
    shapes = st.lists(st.integers(0, 3), min_size=0, max_size=max_dims).map(
        lambda dims: dims[:dims.index(0) + 1] if 0 in dims else dims)

    def fill(shape):
        if not shape:
            return elements
        return st.lists(fill(shape[1:]), min_size=shape[0], max_size=shape[0])
    return shapes.flatmap(lambda shape: fill(shape).map(lambda v: (tuple(shape), v)))


def _json_round_trip(value):
    return json.loads(json.dumps(value))


def _representable(dtype):
    """Finite floats ``dtype`` holds exactly (drawn wider, rounded into it)."""
    return st.floats(allow_nan=False, allow_infinity=False, width=64 if dtype is torch.float64
                     else 32).map(lambda v: float(torch.tensor(v, dtype=torch.float64).to(dtype)))


def _refused(value, dtype, *fragments):
    with pytest.raises(JSONInputError) as caught:
        tensor_from_json(value, dtype, NAME)
    message = str(caught.value)
    assert message.startswith(NAME + ":"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---- exact values are taken ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", INTEGER, ids=str)
@FEW
@given(data=st.data())
def test_integers_in_range_are_taken_exactly(dtype, data):
    info = torch.iinfo(dtype)
    shape, value = data.draw(_grid(st.integers(info.min, info.max)))
    got = tensor_from_json(_json_round_trip(value), dtype, NAME)
    assert got.dtype == dtype and tuple(got.shape) == shape
    assert got.tolist() == value


@pytest.mark.parametrize("dtype", FLOAT, ids=str)
@FEW
@given(data=st.data())
def test_representable_floats_and_integers_are_taken_exactly(dtype, data):
    exact_int = st.integers(-2 ** MANTISSA[dtype], 2 ** MANTISSA[dtype])
    shape, value = data.draw(_grid(st.one_of(_representable(dtype), exact_int)))
    got = tensor_from_json(_json_round_trip(value), dtype, NAME)
    assert got.dtype == dtype and tuple(got.shape) == shape
    assert got.to(torch.float64).tolist() == _json_round_trip(value)


@FEW
@given(data=st.data())
def test_bools_are_taken_for_bool_inputs(data):
    shape, value = data.draw(_grid(st.booleans()))
    got = tensor_from_json(value, torch.bool, NAME)
    assert got.dtype == torch.bool and got.tolist() == value


@pytest.mark.parametrize("dtype", FLOAT, ids=str)
def test_nan_and_infinities_are_float_values(dtype):
    got = tensor_from_json(json.loads("[NaN, Infinity, -Infinity]"), dtype, NAME)
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == -math.inf


# ---- lossy values are refused -------------------------------------------------------------

@pytest.mark.parametrize("dtype", INTEGER, ids=str)
@FEW
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_refused_for_integer_inputs(dtype, value):
    # 2.0 too: an integer input takes JSON integers only, nothing is converted
    _refused([[1, value]], dtype, "element [0][1]", str(dtype).removeprefix("torch."))


@pytest.mark.parametrize("dtype", INTEGER, ids=str)
@FEW
@given(data=st.data())
def test_integers_out_of_range_are_refused(dtype, data):
    info = torch.iinfo(dtype)
    value = data.draw(st.one_of(st.integers(info.max + 1, info.max * 4 + 10),
                                st.integers(info.min * 4 - 10, info.min - 1)))
    _refused([0, value], dtype, "element [1]", "out of the range")


@pytest.mark.parametrize("dtype", INTEGER + FLOAT, ids=str)
@FEW
@given(flag=st.booleans())
def test_bools_are_refused_for_number_inputs(dtype, flag):
    _refused([1, flag], dtype, "element [1]", "a bool")


@pytest.mark.parametrize("dtype", FLOAT, ids=str)
@FEW
@given(data=st.data())
def test_integers_a_float_dtype_cannot_hold_are_refused(dtype, data):
    # 2**p + 1 .. needs p+1 significant bits: one more than the dtype has
    bits = MANTISSA[dtype]
    value = data.draw(st.integers(2 ** bits + 1, 2 ** (bits + 8)).filter(lambda v: v % 2))
    _refused([value], dtype, "cannot hold exactly")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@FEW
@given(scale=st.floats(2.0, 1e6))
def test_finite_values_beyond_the_float_range_are_refused(dtype, scale):
    _refused([0.5, torch.finfo(dtype).max * scale], dtype, "element [1]", "beyond the range")


@FEW
@given(value=st.one_of(st.integers(), st.floats(allow_nan=False)))
def test_numbers_are_refused_for_bool_inputs(value):
    _refused([True, value], torch.bool, "element [1]", "bool")


@pytest.mark.parametrize("dtype", INTEGER + FLOAT + [torch.bool, None], ids=str)
@pytest.mark.parametrize("value", ["1", None, {"a": 1}], ids=["string", "null", "object"])
def test_non_numbers_are_refused(dtype, value):
    _refused([[0, 0], [0, value]] if dtype is not torch.bool else [[True], [value]],
             dtype if dtype is not torch.bool else torch.bool, NAME)


@pytest.mark.parametrize("dtype", INTEGER + FLOAT + [None], ids=str)
@FEW
@given(rows=st.lists(st.integers(0, 4), min_size=2, max_size=5).filter(
    lambda r: len(set(r)) > 1))
def test_ragged_lists_are_refused(dtype, rows):
    _refused([[1] * n for n in rows], dtype, "ragged")


def test_lists_mixed_with_numbers_are_refused():
    _refused([[1, 2], 3], torch.int64, "ragged", "element [1]")
    _refused([[1, [2]], [3, 4]], torch.int64, "ragged", "element [0][1]")


def test_dtypes_json_cannot_spell_are_refused():
    _refused([[1.0]], torch.complex64, "complex64", "cannot build")


def test_without_a_dtype_the_values_pick_one_and_mixtures_are_refused():
    assert tensor_from_json([1, 2], None, NAME).dtype == torch.int64
    assert tensor_from_json([1, 2.5], None, NAME).dtype == torch.get_default_dtype()
    assert tensor_from_json([True], None, NAME).dtype == torch.bool
    _refused([1, True], None, "bool among numbers")
    _refused([2 ** 24 + 1, 0.5], None, "cannot hold exactly")


# ---- a real model's body ------------------------------------------------------------------

def test_body_for_a_compiled_bert_is_decoded_exactly_or_refused_naming_the_input():
    bert = REAL_MODELS["bert"]
    with aoti_cy.load(bert.package()) as model:
        spec = torch.utils._pytree.treespec_loads(model.call_spec[0])
        dtypes = leaf_dtypes(spec, bert.call())
        args, kwargs = bert.call(seed=4)
        body = {"kwargs": {k: v.tolist() for k, v in kwargs.items()}}
        decoded_args, decoded = call_from_json(spec, _json_round_trip(body), dtypes)
        for key, value in kwargs.items():
            assert decoded[key].dtype == value.dtype and torch.equal(decoded[key], value)
        with torch.no_grad():
            got = model(*decoded_args, **decoded)
            want = bert.eager()(*args, **kwargs)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state)
    lossy = dict(body["kwargs"], attention_mask=[[1.0] * 6, [1, 1, 1, 1, 0.4, 0]])
    with pytest.raises(JSONInputError, match=r"kwargs\['attention_mask'\]: element \[0\]\[0\]"):
        call_from_json(spec, {"kwargs": lossy}, dtypes)
    ragged = dict(body["kwargs"], token_type_ids=[[0] * 6, [0] * 5])
    with pytest.raises(JSONInputError, match=r"kwargs\['token_type_ids'\]: ragged"):
        call_from_json(spec, {"kwargs": ragged}, dtypes)
