"""aoti_cy._wrapper_source: what a generated wrapper source says about the
inputs, on sources written in the form inductor emits."""

import pytest
import torch

from aoti_cy._wrapper_source import read_inputs, wrapper_source_for

from .wrapper_sources import check_input, run_impl, write_library


def read(tmp_path, source, num_inputs):
    library = write_library(tmp_path, source)
    return read_inputs(wrapper_source_for(library), num_inputs)


def test_the_source_is_found_beside_the_library_or_not_at_all(tmp_path):
    library = write_library(tmp_path, "// source\n")
    assert wrapper_source_for(library) == str(tmp_path / "model.wrapper.cpp")
    assert wrapper_source_for(str(tmp_path / "other.wrapper.so")) is None


def test_dtypes_devices_static_and_dynamic_dims(tmp_path):
    source = (check_input(0, "float32", "cpu", sizes={1: 64}, bounds={0: (2, 64)},
                          strides={1: 1})
              + check_input(1, "int64", "cuda", bounds={0: (2, 64), 1: (1, None)})
              + run_impl(2, bindings=["int64_t s17 = arg0_1_size[0];",
                                      "int64_t s3 = arg1_1_size[1];"]))
    x, ids = read(tmp_path, source, 2)
    assert (x.dtype, x.device_type, x.rank) == (torch.float32, "cpu", 2)
    assert x.dims == {0: {"min": 2, "max": 64, "symbol": "s17"}, 1: {"size": 64}}
    assert x.strides == {1: 1}
    assert (ids.dtype, ids.device_type) == (torch.int64, "cuda")
    # dim 0 has no symbol of its own: it is the one read dim with its bounds
    assert ids.dims == {0: {"min": 2, "max": 64, "symbol": "s17"},
                        1: {"min": 1, "max": None, "symbol": "s3"}}


def test_a_dim_several_symbols_could_be_keeps_them_as_candidates(tmp_path):
    source = (check_input(0, bounds={0: (2, 8)}) + check_input(1, bounds={0: (2, 8)})
              + check_input(2, bounds={0: (2, 8)})
              + run_impl(3, bindings=["int64_t s1 = arg0_1_size[0];",
                                      "int64_t s2 = arg1_1_size[0];"]))
    _, _, third = read(tmp_path, source, 3)
    assert third.dims[0]["symbol"] is None
    assert sorted(third.dims[0]["candidates"]) == ["s1", "s2"]


def test_a_dim_no_read_symbol_matches_has_no_candidates(tmp_path):
    source = check_input(0, bounds={0: (2, 8)}) + run_impl(1)
    (only,) = read(tmp_path, source, 1)
    assert only.dims[0] == {"min": 2, "max": 8, "symbol": None, "candidates": []}


def test_a_dim_below_a_checked_one_is_dynamic_without_bounds(tmp_path):
    # a check that names dim 2 only: dims 0 and 1 are there, unbounded
    (x,) = read(tmp_path, check_input(0, sizes={2: 3}) + run_impl(1), 1)
    assert x.rank == 3
    assert x.dims[0] == {"symbol": None, "min": 0, "max": None, "candidates": []}
    assert x.dims[2] == {"size": 3}


@pytest.mark.parametrize("dtype, expected", [("bfloat16", torch.bfloat16), ("bool", torch.bool)])
def test_dtype_names(tmp_path, dtype, expected):
    (x,) = read(tmp_path, check_input(0, dtype) + run_impl(1), 1)
    assert x.dtype == expected


def test_what_the_source_does_not_say_stays_unknown(tmp_path):
    (x, y) = read(tmp_path, check_input(0, dtype=None, device=None) + run_impl(2), 2)
    assert (x.dtype, x.device_type, x.rank, x.dims) == (None, None, 0, {})
    assert (y.dtype, y.device_type, y.rank) == (None, None, 0)


def test_checks_of_inputs_past_the_count_are_ignored(tmp_path):
    source = check_input(0) + check_input(5, "int64", sizes={0: 4}) + run_impl(1)
    (x,) = read(tmp_path, source, 1)
    assert x.dtype == torch.float32


def test_a_source_that_is_not_a_wrapper_gives_empty_inputs(tmp_path):
    (x,) = read(tmp_path, "int main() { return 0; }\n\xff garbage", 1)
    assert (x.dtype, x.device_type, x.dims, x.strides) == (None, None, {}, {})
