"""aoti_cy._shape_contract: the contract read from a wrapper source (written
here as inductor writes it), with the assertions torch 2.13 emits and
without them (older torch), its ranges, encoding and descriptions."""

import re
from fractions import Fraction

import pytest
import torch

from aoti_cy import _shape_contract
from aoti_cy._shape_contract import (FROM_SIZE, FROM_SYMBOL, OP_CONST, OP_SYMBOL,
                                     UnsupportedExpression, contract_for, parse_expression)

from .wrapper_sources import check_input, run_impl, write_library

# ---- expressions -------------------------------------------------------------------------


@pytest.mark.parametrize("text, tree", [
    ("s0", ("name", "s0")),
    ("8L", ("num", 8)),
    ("1L + 2L*s0", ("+", ("num", 1), ("*", ("num", 2), ("name", "s0")))),
    ("(1L + s0)*s1", ("*", ("+", ("num", 1), ("name", "s0")), ("name", "s1"))),
    ("s0 - s1 - 1", ("-", ("-", ("name", "s0"), ("name", "s1")), ("num", 1))),
    ("-s0", ("neg", ("name", "s0"))),
    ("s0 % 4", ("%", ("name", "s0"), ("num", 4))),
    ("c10::div_floor_integer(s0, 2L)",
     ("c10::div_floor_integer", ("name", "s0"), ("num", 2))),
    ("std::max(s0, 1L)", ("std::max", ("name", "s0"), ("num", 1))),
    ("static_cast<int64_t>(s0)", ("name", "s0")),
    ("(1.0/8.0)*arg0_1_size_1",
     ("*", ("/", ("num", Fraction(1)), ("num", Fraction(8))), ("name", "arg0_1_size_1"))),
])
def test_expressions_parse_with_c_precedence(text, tree):
    assert parse_expression(text) == tree


@pytest.mark.parametrize("text, message", [
    ("", "cannot read ''"),
    ("s0 +", r"cannot read 's0 \+'"),
    ("s0 s1", "cannot read 's0 s1'"),
    ("(s0", r"cannot read '\(s0'"),
    ("sqrt(s0, 2)", r"sqrt\(\) in 'sqrt\(s0, 2\)'"),
    ("std::max(s0)", "cannot read"),
    ("s0 ? 1 : 2", "cannot read"),
])
def test_expressions_it_cannot_read_are_refused_by_name(text, message):
    with pytest.raises(UnsupportedExpression, match=message):
        parse_expression(text)
    assert issubclass(UnsupportedExpression, ValueError)


# ---- a source like inductor's for x [s, 8k], y [s, k, 8], z [s, 1 + k] --------------------

CHECKS = (check_input(0, bounds={0: (2, 64), 1: (16, 256)}, strides={1: 1})
          + check_input(1, sizes={2: 8}, bounds={0: (2, 64), 1: (2, 32)},
                        strides={1: 8, 2: 1})
          + check_input(2, bounds={0: (2, 64), 1: (3, 33)}, strides={1: 1}))
BINDINGS = ["int64_t s17 = arg0_1_size[0];", "int64_t s77 = s17;",
            "int64_t arg0_1_size_1 = arg0_1_size[1];",
            "int64_t s94 = (1.0/8.0)*arg0_1_size_1;"]
ASSERTS = [(0, "s17, 8L*s94", "8L*s94, 1L"), (1, "s17, s94, 8L", "8L*s94, 8L, 1L"),
           (2, "s17, 1L + s94", "1L + s94, 1L")]


def contract(tmp_path, checks=CHECKS, bindings=BINDINGS, asserts=ASSERTS, num_inputs=3):
    library = write_library(tmp_path, checks + run_impl(num_inputs, bindings, asserts))
    return contract_for(library, num_inputs)


def sizes_text(c):
    return " | ".join(", ".join(c.formula(t) for t in spec["sizes"]) if spec else "-"
                      for spec in c.inputs)


def test_an_asserted_source_gives_every_size_and_stride(tmp_path):
    c = contract(tmp_path)
    assert c.asserted and c.covered == [0, 1, 2] and c.unchecked == []
    assert c.symbols == ["s17", "s77", "s94"]
    assert sizes_text(c) == "s17, 8*s94 | s17, s94, 8 | s17, 1 + s94"
    assert [c.formula(t) for t in c.inputs[1]["strides"]] == ["8*s94", "8", "1"]
    assert c.inputs[0]["dtype"] == torch.float32 and c.inputs[0]["device_type"] == "CPU"


def test_bindings_read_a_dim_alias_a_symbol_or_solve_a_derived_dim(tmp_path):
    c = contract(tmp_path)
    s17, s77, s94 = c.bindings
    assert (s17.kind, s17.input, s17.dim, s17.p, s17.q, s17.d) == (FROM_SIZE, 0, 0, 1, 0, 1)
    assert (s77.kind, s77.input) == (FROM_SYMBOL, 0)          # a copy of slot 0
    # s94 = size / 8: (1 * size + 0) / 8
    assert (s94.kind, s94.input, s94.dim, s94.p, s94.q, s94.d) == (FROM_SIZE, 0, 1, 1, 0, 8)
    assert c.origin == [(0, 0), (0, 0), (0, 1)]


def test_symbol_ranges_come_from_the_checks_with_the_0_1_rule(tmp_path):
    c = contract(tmp_path)
    ranges = dict(zip(c.symbols, c.ranges))
    # s17: dim bounds 2..64 (2 is inductor's specialisation: 1 runs too);
    # s94: 16..256 over 8, and 2..32 from y, the same
    assert ranges["s17"] == (1, 64) and ranges["s94"] == (1, 32)


def test_describe_and_json(tmp_path):
    c = contract(tmp_path)
    labels = ["x", "y", "z"]
    assert c.describe(labels) == ["x [s17, 8*s94]", "y [s17, s94, 8]", "z [s17, 1 + s94]",
                                  "s17 in [1, 64] (from x dim 0)",
                                  "s94 in [1, 32] (from x dim 1)"]
    data = c.to_json(labels)
    assert data["source"] == "model.wrapper.cpp" and data["unchecked"] == []
    assert data["inputs"][2] == {"name": "z", "sizes": ["s17", "1 + s94"],
                                 "strides": ["1 + s94", "1"]}
    assert data["symbols"] == [{"name": "s17", "min": 1, "max": 64,
                                "from": {"input": "x", "dim": 0}},
                               {"name": "s94", "min": 1, "max": 32,
                                "from": {"input": "x", "dim": 1}}]


def test_trial_values_are_distinct_and_in_range_and_size_every_input(tmp_path):
    c = contract(tmp_path)
    first, second = c.trial_values(0), c.trial_values(1)
    assert set(first) == {"s17", "s94"} and first["s17"] != first["s94"]
    assert all(2 <= v <= 32 for v in first.values())
    assert first != second
    x, y, z = c.trial_sizes(first)
    k, s = first["s94"], first["s17"]
    assert x == [s, 8 * k] and y == [s, k, 8] and z == [s, 1 + k]


def test_a_source_without_assertions_is_read_from_bindings_and_bounds(tmp_path):
    c = contract(tmp_path, asserts=())
    assert not c.asserted and c.covered == [0, 1, 2]
    assert sizes_text(c) == "s17, 8*s94 | s17, s94, 8 | s17, 1 + s94"
    # strides: only those the checks hold
    assert [c.formula(t) for t in c.inputs[1]["strides"]] == ["?", "8", "1"]
    assert (0, "the strides of dims [0] are not checked: the source holds no assertion of "
               "them (pass contiguous tensors)") in c.unchecked
    assert dict(zip(c.symbols, c.ranges))["s94"] == (1, 32)


def test_a_dim_two_symbols_could_be_is_checked_on_its_bounds_only(tmp_path):
    checks = (check_input(0, bounds={0: (2, 8)}) + check_input(1, bounds={0: (2, 8)})
              + check_input(2, bounds={0: (2, 8)}))
    c = contract(tmp_path, checks, ["int64_t s1 = arg0_1_size[0];",
                                    "int64_t s2 = arg1_1_size[0];"], (), 3)
    assert sizes_text(c) == "s1 | s2 | ?"
    assert (2, "dims [0] are checked against their bounds only: the source does not say "
               "which symbol they share") in c.unchecked
    # its own bounds stay, with the 0/1 rule
    assert c.inputs[2]["dim_bounds"] == [(1, 8)]


def test_an_input_without_dtype_or_device_is_left_to_the_model(tmp_path):
    checks = check_input(0, bounds={0: (2, 8)}) + check_input(1, device=None)
    c = contract(tmp_path, checks, ["int64_t s1 = arg0_1_size[0];"],
                 [(0, "s1", "1L"), (1, "s1", "1L")], 2)
    assert c.covered == [0] and c.inputs[1] is None
    assert c.unchecked == [(1, "its dtype or device is not in the source: only the model's "
                               "own per-input check applies")]


@pytest.mark.parametrize("size, reason", [
    ("sqrt(s1)", r"dim 0 \(sqrt\(s1\)\) is not checked: sqrt\(\) in"),
    ("s1/2L", r"dim 0 \(s1/2L\) is not checked: operator /"),
    ("s9", r"dim 0 \(s9\) is not checked: s9 is never bound"),
])
def test_an_assertion_it_cannot_evaluate_leaves_that_dim_unchecked(tmp_path, size, reason):
    c = contract(tmp_path, check_input(0, bounds={0: (2, 8)}),
                 ["int64_t s1 = arg0_1_size[0];"], [(0, size, "1L")], 1)
    assert c.formula(c.inputs[0]["sizes"][0]) == "?"
    ((index, text),) = c.unchecked
    assert index == 0 and re.match(reason, text), text


def test_encode_is_the_program_the_c_side_reads(tmp_path):
    checks = check_input(0, sizes={1: 4}, bounds={0: (2, 10)}, strides={0: 4, 1: 1})
    c = contract(tmp_path, checks, ["int64_t s0 = arg0_1_size[0];"],
                 [(0, "s0, 4L", "4L, 1L")], 1)
    words, strings = c.encode(["x"])
    assert words == [
        1, 1, 1,                       # symbols, inputs, bindings
        1, 10,                         # s0's range (2 -> 1 by the 0/1 rule)
        0, FROM_SIZE, 0, 0, 1, 0, 1,   # s0 = (1 * x.size(0) + 0) / 1
        2, 6, 0,                       # rank, ScalarType Float, device CPU
        1, OP_SYMBOL, 0, 1, OP_CONST, 4, 0, -1,    # dim 0: s0, stride 4, checked on s0
        1, OP_CONST, 4, 1, OP_CONST, 1, 0, -1,     # dim 1: 4, stride 1
    ]
    assert strings == ["x", "s0", "s0", "4", "4", "1"]


def test_an_assertion_that_does_not_parse_leaves_the_input_to_the_model(tmp_path):
    c = contract(tmp_path, check_input(0, bounds={0: (2, 8)}),
                 ["int64_t s1 = arg0_1_size[0];"], [(0, "s1, 4L", "1L")], 1)
    assert c.covered == [] and c.unchecked == [(0, "its assertion does not parse")]


def test_no_source_no_contract(tmp_path):
    assert contract_for(str(tmp_path / "model.wrapper.so"), 1) is None


def test_a_changed_source_is_read_again(tmp_path):
    first = contract(tmp_path, check_input(0, bounds={0: (2, 8)}),
                     ["int64_t s1 = arg0_1_size[0];"], [(0, "s1", "1L")], 1)
    library = str(tmp_path / "model.wrapper.so")
    assert contract_for(library, 1) is first      # cached while the file is unchanged
    assert first.ranges == [(1, 8)]
    changed = contract(tmp_path, check_input(0, bounds={0: (2, 16)}),
                       ["int64_t s1 = arg0_1_size[0];"], [(0, "s1", "1L")], 1)
    assert changed is not first and changed.ranges == [(1, 16)]


def test_a_source_that_is_not_a_wrapper_leaves_everything_to_the_model(tmp_path):
    library = write_library(tmp_path, "int main() { return 0; }\n")
    c = contract_for(library, 2)
    assert c.covered == [] and not c.asserted and c.symbols == []
    assert [i for i, _ in c.unchecked] == [0, 1]
    assert _shape_contract.ShapeContract.formula(None) == "?"


def test_an_assertion_with_a_two_argument_function_is_read_whole(tmp_path):
    # The comma inside std::max(...) separates its arguments, not two dims.
    c = contract(tmp_path, check_input(0, sizes={1: 4}, bounds={0: (2, 8)}),
                 ["int64_t s1 = arg0_1_size[0];"],
                 [(0, "s1, 4L", "std::max(4L, s1), 1L")], 1)
    assert c.covered == [0] and c.unchecked == []
    assert len(c.inputs[0]["strides"]) == 2
    assert "max" in c.formula(c.inputs[0]["strides"][0])
