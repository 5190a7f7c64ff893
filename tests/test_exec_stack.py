"""Loading a model never makes the process stack executable.

Every library torch 2.13 links asks for an executable stack (its
``PT_GNU_STACK`` header is RWE: the weights object is assembled without a
``.note.GNU-stack`` note). dlopen of such a library makes the stack of every
thread executable, for the rest of the process, so each check that reads
``/proc/self/maps`` runs in a fresh interpreter. Each also asserts its
precondition (the file asks for an executable stack, the child starts
without one), and torch's own loader is shown to make the stack executable,
so the checks cannot pass for want of anything to catch.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

import aoti_cy
from aoti_cy import _elf
from aoti_cy.cli.inspect import inspect_package
from aoti_cy.cli.inspect_text import format_report
from aoti_cy.testing import MLP, compile_package
from conftest import aoti_tempdirs, extract_library

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(aoti_cy.__file__)))

# Runs first in every child: the stack's permissions before any model loads.
PRELUDE = """
import gc, glob, json, os, sys, tempfile
import torch
import aoti_cy
from aoti_cy.testing import EXAMPLES, MLP, make_model

def stack():
    (line,) = [l for l in open("/proc/self/maps") if l.rstrip().endswith("[stack]")]
    return line.split()[1]

def private_folders():
    return sorted(glob.glob(os.path.join(tempfile.gettempdir(), "aoti_cy-*")))

result = {"before": stack()}
"""
EPILOGUE = """
result["after"] = stack()
print("RESULT " + json.dumps(result))
"""


def in_fresh_process(body, **values):
    """Run ``body`` in a new interpreter (``values`` bound as globals); the
    ``result`` dict it fills, with the stack's permissions before and after."""
    script = (PRELUDE + "".join(f"{name} = {value!r}\n" for name, value in values.items())
              + textwrap.dedent(body) + EPILOGUE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-6000:]
    (line,) = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    assert result["before"] == "rw-p", "the child started with an executable stack"
    return result


def file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def packaged_library_flags(package_path, tmp_path):
    """The PT_GNU_STACK flags of the model library inside a `.pt2`."""
    return _elf.stack_flags(extract_library(package_path, tmp_path / "peek"))


@pytest.fixture
def mlp_package(package, tmp_path):
    path = package("mlp")
    assert packaged_library_flags(path, tmp_path) == _elf.PF_R | _elf.PF_W | _elf.PF_X
    return path


@pytest.fixture
def bare_library(mlp_package, tmp_path):
    """A model `.so` of the user's (unpacked from the package, its wrapper
    source and metadata beside it), as torch linked it: RWE."""
    library = extract_library(mlp_package, tmp_path / "user")
    assert _elf.stack_text(_elf.stack_flags(library)) == "RWE"
    return library


# ---- the precondition: torch's loader does make the stack executable ------------


def test_torch_loader_makes_the_stack_executable(mlp_package):
    result = in_fresh_process("""
        model = torch._inductor.aoti_load_package(PATH)
        (x,) = EXAMPLES["mlp"].inputs()
        torch.testing.assert_close(model(x), EXAMPLES["mlp"].eager()(x))
    """, PATH=mlp_package)
    assert result["after"] == "rwxp"


# ---- aoti_cy keeps it non-executable ---------------------------------------------


def test_load_keeps_the_stack_non_executable(mlp_package):
    result = in_fresh_process("""
        model = aoti_cy.load(PATH)
        inputs = EXAMPLES["mlp"].inputs()
        with torch.no_grad():
            torch.testing.assert_close(model.run(inputs)[0], EXAMPLES["mlp"].eager()(*inputs))
        result["executable_stack"] = model.library.executable_stack
        result["same_file"] = model.library.loaded_path == model.library_path
        result["flags"] = aoti_cy._elf.stack_flags(model.library_path)
    """, PATH=mlp_package)
    assert result["after"] == "rw-p"
    assert result["executable_stack"] is False
    # Fixed in place in the private extraction folder: no second copy.
    assert result["same_file"] is True
    assert result["flags"] == _elf.PF_R | _elf.PF_W


def test_transformers_model_keeps_the_stack_non_executable(tmp_path):
    from real_models import REAL_MODELS, UPDATABLE
    real = REAL_MODELS["bert"]
    path = real.package("cpu", **UPDATABLE)
    assert _elf.stack_text(packaged_library_flags(path, tmp_path)) == "RWE"
    result = in_fresh_process("""
        from real_models import REAL_MODELS
        real = REAL_MODELS["bert"]
        eager = real.eager()
        with aoti_cy.load(PATH) as model:
            for seed in (1, 2):
                args, kwargs = real.call(seed=seed)
                with torch.no_grad():
                    want = real.output(eager(*args, **kwargs))
                got = real.output(model(*args, **kwargs))
                for a, b in zip(got, want, strict=True):
                    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    """, PATH=path)
    assert result["after"] == "rw-p"


def test_bare_library_is_copied_never_written(bare_library):
    before = file_hash(bare_library)
    result = in_fresh_process("""
        first = aoti_cy.load(SO)
        second = aoti_cy.ModelContainer(SO)
        result["shared"] = first.library is second.library
        result["path"] = first.library_path
        result["loaded"] = first.library.loaded_path
        result["folders_while_loaded"] = private_folders()
        inputs = EXAMPLES["mlp"].inputs()
        with torch.no_grad():
            want = EXAMPLES["mlp"].eager()(*inputs)
        for model in (first, second):
            torch.testing.assert_close(model.run(inputs)[0], want)
        result["stack_while_loaded"] = stack()
        first.close()
        second.close()
        del first, second, model
        gc.collect()
        result["folders_after_release"] = private_folders()
    """, SO=bare_library)
    assert result["stack_while_loaded"] == result["after"] == "rw-p"
    assert result["shared"] is True                 # one library, one copy
    assert result["path"] == os.path.realpath(bare_library)
    copy_folder = os.path.dirname(result["loaded"])
    assert result["loaded"] != result["path"]
    assert result["folders_while_loaded"] == [copy_folder]
    assert os.path.basename(copy_folder).startswith("aoti_cy-")
    # The copy stays for the process (a later load maps the same library
    # again instead of one more) and goes when it exits.
    assert result["folders_after_release"] == [copy_folder]
    assert not os.path.exists(copy_folder)
    assert file_hash(bare_library) == before
    assert aoti_tempdirs() == set()


def test_unpacked_package_folder_is_copied_never_written(bare_library, example):
    # File facts only (no maps line): this process may have loaded an RWE
    # library through torch's loader in another test already.
    import gc
    import json
    folder = os.path.dirname(bare_library)
    before = file_hash(bare_library)
    with open(bare_library[:-len(".so")] + "_metadata.json") as f:
        metadata = json.load(f)
    model = aoti_cy.load(os.path.dirname(os.path.dirname(os.path.dirname(folder))))
    assert model.library_path == os.path.realpath(bare_library)
    assert model.library.loaded_path != model.library_path
    assert model.library.executable_stack is False
    assert _elf.stack_text(_elf.stack_flags(model.library.loaded_path)) == "RW"
    assert model.metadata == metadata          # read beside the user's file
    inputs = example("mlp").inputs()
    with torch.no_grad():
        torch.testing.assert_close(model.run(inputs)[0], example("mlp").eager()(*inputs))
    # The model's own input checks, found in the copy's symbol table.
    with pytest.raises(ValueError, match="does not fit the model"):
        model.run([torch.randn(16, 32)])
    assert len(aoti_tempdirs()) == 1
    model.close()
    del model
    gc.collect()
    again = aoti_cy.load(os.path.dirname(os.path.dirname(os.path.dirname(folder))))
    assert len(aoti_tempdirs()) == 1           # the same copy, kept for the process
    again.close()
    assert file_hash(bare_library) == before


def test_drop_in_loader_keeps_the_stack_non_executable(mlp_package):
    result = in_fresh_process("""
        model = aoti_cy.aoti_load_package(PATH)
        (x,) = EXAMPLES["mlp"].inputs()
        with torch.no_grad():
            torch.testing.assert_close(model(x), EXAMPLES["mlp"].eager()(x))
    """, PATH=mlp_package)
    assert result["after"] == "rw-p"


def test_single_instance_model_keeps_the_stack_non_executable(mlp_package, bare_library):
    result = in_fresh_process("""
        inputs = EXAMPLES["mlp"].inputs()
        with torch.no_grad():
            want = EXAMPLES["mlp"].eager()(*inputs)
        for path in (PATH, SO):
            with aoti_cy.Model(path) as model:
                torch.testing.assert_close(model.run(inputs)[0], want)
    """, PATH=mlp_package, SO=bare_library)
    assert result["after"] == "rw-p"


def test_cpp_only_package_is_built_without_an_executable_stack(tmp_path, monkeypatch):
    monkeypatch.setenv("AOTI_CY_BUILD_CACHE", str(tmp_path / "builds"))
    path = compile_package(MLP, [torch.randn(16, 64)],
                           inductor_configs={"aot_inductor.package_cpp_only": True})
    # The precondition: the package's weights object has no .note.GNU-stack,
    # which makes a plain link ask for an executable stack.
    with zipfile.ZipFile(path) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".o")]
        archive.extract(member, tmp_path)
    sections = subprocess.run(["readelf", "-SW", str(tmp_path / member)], capture_output=True,
                              text=True, check=True).stdout
    assert ".lrodata" in sections and ".note.GNU-stack" not in sections
    result = in_fresh_process("""
        model = aoti_cy.load(PATH)
        x = torch.randn(16, 64)
        with torch.no_grad():
            torch.testing.assert_close(model.run([x])[0], make_model(MLP)(x))
        result["flags"] = aoti_cy._elf.stack_flags(model.library_path)
        result["copied"] = model.library.loaded_path != model.library_path
        result["in_cache"] = model.library_path.startswith(os.environ["AOTI_CY_BUILD_CACHE"])
    """, PATH=path)
    assert result["after"] == "rw-p"
    assert result["in_cache"] is True
    assert result["flags"] == _elf.PF_R | _elf.PF_W   # clean as built: nothing to copy
    assert result["copied"] is False


# ---- the opt-out -----------------------------------------------------------------


def test_opt_out_keeps_the_executable_stack(mlp_package, bare_library):
    before = file_hash(bare_library)
    result = in_fresh_process("""
        inputs = EXAMPLES["mlp"].inputs()
        with torch.no_grad():
            want = EXAMPLES["mlp"].eager()(*inputs)
        with aoti_cy.load(PATH, allow_executable_stack=True) as model:
            torch.testing.assert_close(model.run(inputs)[0], want)
            result["flags"] = aoti_cy._elf.stack_flags(model.library.loaded_path)
            result["executable_stack"] = model.library.executable_stack
        bare = aoti_cy.ModelContainer(SO, allow_executable_stack=True)
        result["bare_same_file"] = bare.library.loaded_path == bare.library_path
        torch.testing.assert_close(bare.run(inputs)[0], want)
    """, PATH=mlp_package, SO=bare_library)
    assert result["after"] == "rwxp"
    assert result["flags"] == _elf.PF_R | _elf.PF_W | _elf.PF_X
    assert result["executable_stack"] is True
    assert result["bare_same_file"] is True
    assert file_hash(bare_library) == before


# ---- the ELF edit and what cannot be fixed ---------------------------------------


def test_clearing_rewrites_only_the_stack_header_flags(bare_library, tmp_path):
    copy = str(tmp_path / "copy.so")
    shutil.copyfile(bare_library, copy)
    assert _elf.clear_executable_stack(copy) is True
    assert _elf.stack_text(_elf.stack_flags(copy)) == "RW"
    assert _elf.clear_executable_stack(copy) is False   # nothing left to clear
    with open(bare_library, "rb") as f:
        original = f.read()
    with open(copy, "rb") as f:
        cleared = f.read()
    changed = [i for i, (a, b) in enumerate(zip(original, cleared)) if a != b]
    assert len(original) == len(cleared) and len(changed) == 1   # one byte: RWE -> RW
    phoff, = struct.unpack_from("<Q", original, 32)
    phentsize, phnum = struct.unpack_from("<HH", original, 54)
    index = (changed[0] - phoff) // phentsize
    assert 0 <= index < phnum
    assert struct.unpack_from("<I", original, phoff + index * phentsize)[0] == 0x6474E551
    assert changed[0] - (phoff + index * phentsize) == 4   # inside that header's p_flags


def without_stack_header(library, target):
    """A copy of ``library`` whose PT_GNU_STACK header is a PT_NULL: the
    loader then assumes an executable stack and there is nothing to clear."""
    shutil.copyfile(library, target)
    with open(target, "r+b") as f:
        data = f.read()
        phoff, = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
        for i in range(phnum):
            if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 0x6474E551:
                f.seek(phoff + i * phentsize)
                f.write(struct.pack("<I", 0))
    return target


def test_library_without_a_stack_header_is_refused(bare_library, tmp_path):
    library = without_stack_header(bare_library, str(tmp_path / "headless.so"))
    assert _elf.stack_flags(library) is None
    before = file_hash(library)
    for load in (aoti_cy.load, aoti_cy.ModelContainer, aoti_cy.Model):
        with pytest.raises(aoti_cy.PackageError, match="no PT_GNU_STACK program header"):
            load(library)
    report = inspect_package(library, run=False)
    (model,) = report["models"]
    assert model["stack"] == {"in_file": "none", "executable_in_file": True,
                              "loaded_executable": None}
    assert "no PT_GNU_STACK program header" in model["load_error"]
    assert ("stack     executable (no PT_GNU_STACK header) in the file; not loaded"
            in format_report(report))
    assert file_hash(library) == before
    assert aoti_tempdirs() == set()


def test_truncated_program_headers_are_a_package_error(bare_library, tmp_path):
    with open(bare_library, "rb") as f:
        head = f.read(80)   # the ELF header and a sliver of the program headers
    cut = tmp_path / "cut.so"
    cut.write_bytes(head)
    with pytest.raises(aoti_cy.PackageError, match="truncated"):
        _elf.stack_flags(str(cut))
    with pytest.raises(aoti_cy.PackageError, match="truncated"):
        aoti_cy.load(cut)


def test_glibc_refusal_names_the_reason_and_the_fix():
    # What glibc 2.41+ reports (this machine's glibc cannot: see
    # scripts/check_glibc_execstack.sh for the real dlopen).
    from aoti_cy._library import _dlopen_failure
    message = ("/m.so: cannot enable executable stack as shared object requires: "
               "Invalid argument")
    error = _dlopen_failure("/m.so", message, _elf.PF_R | _elf.PF_W | _elf.PF_X)
    assert isinstance(error, aoti_cy.PackageError)
    text = str(error)
    for part in (message, "PT_GNU_STACK", "RWE", "2.41", "allow_executable_stack",
                 "GLIBC_TUNABLES=glibc.rtld.execstack=2"):
        assert part in text
    other = str(_dlopen_failure("/m.so", "/m.so: undefined symbol: f", _elf.PF_R))
    assert "executable stack" not in other and "undefined symbol: f" in other


# ---- inspect ---------------------------------------------------------------------


def test_inspect_reports_the_stack_request(mlp_package, bare_library):
    for path in (mlp_package, bare_library):
        report = inspect_package(path, run=False)
        (model,) = report["models"]
        assert model["stack"] == {"in_file": "RWE", "executable_in_file": True,
                                  "loaded_executable": False}
        assert model["inputs"][0]["dtype"] == "float32"   # wrapper source still found
        assert ("stack     executable (RWE) in the file; loaded with a non-executable stack"
                in format_report(report))
    # Only the private copy of the bare library, kept for the process.
    assert len(aoti_tempdirs()) <= 1
