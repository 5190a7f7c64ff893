"""The ``requires_symbol`` marker of conftest.py: its table is what a model
library compiled by the installed torch exports, it skips exactly where an
entry point is missing, and it refuses names that are no entry point."""

import pytest

from aoti_cy._library import OPTIONAL_SYMBOLS, open_library
from conftest import exported_symbols, extract_library, require_symbol, requires_symbol


def test_the_table_is_the_libraries_own(package, tmp_path):
    library = extract_library(package("add_one"), tmp_path)
    assert exported_symbols() == open_library(library).exported()
    assert set(exported_symbols()) == set(OPTIONAL_SYMBOLS)


@pytest.mark.parametrize("symbol", OPTIONAL_SYMBOLS)
def test_a_test_skips_exactly_when_the_models_lack_the_symbol(symbol):
    if exported_symbols()[symbol]:
        require_symbol(symbol)      # returns: the test runs
    else:
        with pytest.raises(pytest.skip.Exception, match=f"do not export {symbol}"):
            require_symbol(symbol)


def test_one_missing_symbol_among_several_skips_naming_only_it():
    missing = [name for name, present in exported_symbols().items() if not present]
    present = [name for name, there in exported_symbols().items() if there]
    if not missing or not present:
        pytest.skip("needs models that export some optional entry points and lack others")
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_symbol(present[0], missing[0])
    assert missing[0] in str(skipped.value) and present[0] not in str(skipped.value)


def test_a_name_that_is_no_entry_point_fails_the_test():
    with pytest.raises(pytest.fail.Exception, match="not an optional AOTInductor entry "
                                                    "point: AOTInductorNoSuchThing"):
        require_symbol("AOTInductorNoSuchThing")


@requires_symbol("AOTInductorModelContainerRunSingleThreaded")
def test_the_marker_lets_a_test_run_where_the_symbol_is_exported():
    # Models of every torch this project supports export it: no skip here.
    assert exported_symbols()["AOTInductorModelContainerRunSingleThreaded"]
