"""aoti_cy._elf on tiny libraries built here with g++ (no model): the checks
before dlopen, the input-check symbols, and the PT_GNU_STACK flags."""

import os
import platform
import shutil
import struct
import subprocess

import pytest

from aoti_cy import _elf
from aoti_cy.errors import PackageError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")

# Two input checks as inductor declares them (static, in a namespace, taking
# AtenTensorHandle*), and one whose signature differs: it must not be taken.
SOURCE = """
struct AtenTensorOpaque;
namespace torch::aot_inductor {
__attribute__((noinline)) static void check_input_0(AtenTensorOpaque** handles) {
    asm volatile("" : : "r"(handles) : "memory");
}
__attribute__((noinline)) static void check_input_1(AtenTensorOpaque** handles) {
    asm volatile("" : : "r"(handles) : "memory");
}
__attribute__((noinline)) static void check_input_2(int value) {
    asm volatile("" : : "r"(value) : "memory");
}
}
extern "C" void run(AtenTensorOpaque** handles, int value) {
    torch::aot_inductor::check_input_0(handles);
    torch::aot_inductor::check_input_1(handles);
    torch::aot_inductor::check_input_2(value);
}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> path: the library with a non-executable stack, one that asks
    for an executable stack, and a stripped copy."""
    folder = tmp_path_factory.mktemp("elf")
    source = folder / "lib.cpp"
    source.write_text(SOURCE)
    paths = {}
    for name, flags in (("plain", ["-Wl,-z,noexecstack"]), ("execstack", ["-Wl,-z,execstack"])):
        paths[name] = str(folder / f"{name}.so")
        subprocess.run(["g++", "-shared", "-fPIC", "-O1", *flags, "-o", paths[name],
                        str(source)], check=True, capture_output=True, timeout=120)
    paths["stripped"] = str(folder / "stripped.so")
    shutil.copy(paths["plain"], paths["stripped"])
    subprocess.run(["strip", "--strip-all", paths["stripped"]], check=True, timeout=60)
    return paths


def copy_of(path, tmp_path, name="copy.so"):
    target = tmp_path / name
    shutil.copy(path, target)
    return str(target)


def patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def nm_offsets(path):
    """{name: value} of the local functions, as nm reads them."""
    out = subprocess.run(["nm", "--defined-only", path], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return {line.split()[2]: int(line.split()[0], 16) for line in out.splitlines()
            if len(line.split()) == 3}


# ---- before dlopen -------------------------------------------------------------------------

def test_a_good_library_passes(built):
    _elf.check_elf(built["plain"])


def test_a_file_that_is_not_elf_is_refused(tmp_path):
    path = tmp_path / "model.so"
    path.write_bytes(b"#!/bin/sh\n" + bytes(100))
    with pytest.raises(PackageError, match="is not an ELF shared library"):
        _elf.check_elf(str(path))
    (tmp_path / "short.so").write_bytes(b"\x7fELF")
    with pytest.raises(PackageError, match="is not an ELF shared library"):
        _elf.check_elf(str(tmp_path / "short.so"))


def test_a_32_bit_or_big_endian_library_is_refused(built, tmp_path):
    for offset, value in ((4, 1), (5, 2)):
        path = copy_of(built["plain"], tmp_path, f"class{offset}.so")
        patch(path, offset, bytes([value]))
        with pytest.raises(PackageError, match="is not a 64-bit little-endian ELF library"):
            _elf.check_elf(path)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"), reason="x86_64 or aarch64")
def test_a_library_for_another_architecture_is_refused(built, tmp_path):
    other = 183 if platform.machine() == "x86_64" else 62
    path = copy_of(built["plain"], tmp_path)
    patch(path, 18, struct.pack("<H", other))
    with pytest.raises(PackageError, match=f"is built for another architecture \\(ELF machine "
                                           f"{other}, this is {platform.machine()}\\)"):
        _elf.check_elf(path)


def test_a_truncated_library_is_refused_before_it_can_crash_the_process(built, tmp_path):
    size = os.path.getsize(built["plain"])
    path = copy_of(built["plain"], tmp_path)
    os.truncate(path, size - 1)
    with pytest.raises(PackageError, match=f"is truncated: {size - 1} bytes, its headers "
                                           f"need {size}"):
        _elf.check_elf(path)
    os.truncate(path, 80)         # program headers cut off
    with pytest.raises(PackageError, match=r"is truncated \(80 bytes\)"):
        _elf.check_elf(path)


# ---- input checks in the symbol table ----------------------------------------------------

def test_input_checks_are_found_where_nm_sees_them(built):
    found = _elf.input_check_offsets(built["plain"], 3)
    symbols = nm_offsets(built["plain"])
    by_index = {}
    for name, value in symbols.items():
        for i in range(3):
            if f"L13check_input_{i}" in name:
                by_index[i] = (name, value)
    assert set(by_index) == {0, 1, 2}
    # the one with another signature is not taken
    assert found == {0: by_index[0][1], 1: by_index[1][1]}
    assert all(value > 0 for value in found.values())


def test_only_inputs_the_model_has_are_looked_up(built):
    assert set(_elf.input_check_offsets(built["plain"], 1)) == {0}
    assert _elf.input_check_offsets(built["plain"], 0) == {}


def test_a_stripped_library_has_none(built):
    assert _elf.input_check_offsets(built["stripped"], 3) == {}


def test_lying_section_headers_are_a_package_error(built, tmp_path):
    path = copy_of(built["plain"], tmp_path)
    patch(path, 40, struct.pack("<Q", os.path.getsize(path) - 8))    # e_shoff near the end
    with pytest.raises(PackageError, match="has a malformed symbol table"):
        _elf.input_check_offsets(path, 3)


# ---- PT_GNU_STACK --------------------------------------------------------------------------

def test_stack_flags_as_readelf_shows_them(built):
    plain, wants = _elf.stack_flags(built["plain"]), _elf.stack_flags(built["execstack"])
    assert _elf.stack_text(plain) == "RW" and _elf.stack_text(wants) == "RWE"
    assert not _elf.asks_for_executable_stack(plain)
    assert _elf.asks_for_executable_stack(wants)
    readelf = subprocess.run(["readelf", "-lW", built["execstack"]], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    (line,) = [row for row in readelf.splitlines() if "GNU_STACK" in row]
    assert line.split()[-2] == "RWE"


def test_no_header_counts_as_asking_for_an_executable_stack():
    assert _elf.stack_text(None) == "none"
    assert _elf.asks_for_executable_stack(None)


def test_clearing_the_executable_stack_changes_only_that_bit(built, tmp_path):
    path = copy_of(built["execstack"], tmp_path)
    before = read_bytes(path)
    assert _elf.clear_executable_stack(path) is True
    after = read_bytes(path)
    assert _elf.stack_text(_elf.stack_flags(path)) == "RW"
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    assert before[changed[0]] ^ after[changed[0]] == _elf.PF_X
    assert _elf.clear_executable_stack(path) is False         # nothing left to clear
    _elf.check_elf(path)


def test_a_library_without_the_header_cannot_be_cleared(built, tmp_path):
    path = copy_of(built["execstack"], tmp_path)
    with open(path, "rb") as f:
        offset, _ = _elf._stack_header_offset(f, path)
    patch(path, offset - 4, struct.pack("<I", 1))     # p_type: PT_GNU_STACK -> PT_LOAD
    assert _elf.stack_flags(path) is None
    with pytest.raises(PackageError, match="has no PT_GNU_STACK program header.*"
                                           "-Wl,-z,noexecstack"):
        _elf.clear_executable_stack(path)


def test_malformed_program_headers_are_named(built, tmp_path):
    path = copy_of(built["plain"], tmp_path)
    patch(path, 54, struct.pack("<H", 4))             # e_phentsize 4
    with pytest.raises(PackageError, match=r"malformed program headers \(entry size 4\)"):
        _elf.stack_flags(path)
    path = copy_of(built["plain"], tmp_path, "far.so")
    patch(path, 32, struct.pack("<Q", os.path.getsize(path) - 16))   # e_phoff near the end
    with pytest.raises(PackageError, match="program headers end past the file"):
        _elf.stack_flags(path)
