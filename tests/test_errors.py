"""Bad input gives a clear Python exception, never a crash or a leak."""

import io
import os
import pickle
import zipfile

import pytest
import torch

import aoti_cy
from conftest import aoti_tempdirs, extract_library, package_folder


@pytest.fixture
def multi_io(package):
    with aoti_cy.load(package("multi_io")) as model:
        yield model


def test_wrong_input_count_is_value_error(multi_io, example):
    inputs = example("multi_io").inputs()
    with pytest.raises(ValueError, match=r"takes 3 inputs .* got 2"):
        multi_io.run(inputs[:2])
    with pytest.raises(ValueError, match=r"got 4"):
        multi_io.run(inputs + inputs[:1])
    assert len(multi_io.run(inputs)) == 3   # still healthy


@pytest.mark.parametrize("bad", [None, 3, "x", [1.0], torch.randn(2).numpy().tolist()])
def test_non_tensor_input_is_type_error(multi_io, example, bad):
    inputs = example("multi_io").inputs()
    inputs[1] = bad
    with pytest.raises(TypeError, match=r"input 1 \('.*'\) must be a torch.Tensor \(or numpy array\)"):
        multi_io.run(inputs)


def test_inputs_must_be_a_sequence(multi_io, example):
    with pytest.raises(TypeError, match="list or tuple"):
        multi_io.run(example("multi_io").inputs()[0])
    with pytest.raises(TypeError, match="list or tuple"):
        multi_io.run(42)


def test_aoti_error_pickles():
    error = aoti_cy.AOTIError("AOTInductorModelContainerRun", "boom")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, RuntimeError)
    assert (copy.function, copy.detail, str(copy)) == (error.function, error.detail, str(error))
    missing = aoti_cy.MissingSymbolError("AOTInductorX", "/m.so")
    copy = pickle.loads(pickle.dumps(missing))
    assert isinstance(copy, NotImplementedError) and copy.symbol == "AOTInductorX"


def test_use_after_close(package, example):
    model = aoti_cy.load(package("add_one"))
    model.close()
    model.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        model.run(example("add_one").inputs())
    with pytest.raises(RuntimeError, match="closed"):
        model.constants
    with pytest.raises(RuntimeError, match="closed"):
        with model:
            pass
    assert "closed" in repr(model)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such model artifact"):
        aoti_cy.load("/nonexistent/model.pt2")
    with pytest.raises(FileNotFoundError):
        aoti_cy.ModelContainer("/nonexistent/model.so")


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.pt2"
    path.write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(aoti_cy.PackageError, match="not a zip"):
        aoti_cy.load(path)


def test_not_a_library(tmp_path):
    path = tmp_path / "fake.so"
    path.write_bytes(b"\x7fELF garbage" * 10)
    with pytest.raises(aoti_cy.PackageError, match="not a 64-bit|cannot load model library"):
        aoti_cy.load(path)


def test_library_without_the_abi():
    import aoti_cy._library as library_module
    with pytest.raises(aoti_cy.PackageError, match="does not export AOTInductorModelContainer"):
        aoti_cy.ModelContainer(library_module.__file__)


def rewrite_zip(source, target, extra):
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for name, data in extra:
            dst.writestr(name, data)


@pytest.mark.parametrize("member", [
    "../escaped.txt",
    "pkg/data/aotinductor/model/../../../../escaped.txt",
    "/tmp/escaped-absolute.txt",
])
def test_package_member_outside_is_refused(package, tmp_path, member):
    crafted = tmp_path / "crafted.pt2"
    rewrite_zip(package("add_one"), crafted, [(member, b"owned")])
    before = aoti_tempdirs()
    with pytest.raises(aoti_cy.PackageError, match="absolute path|outside the package"):
        aoti_cy.load(crafted)
    assert aoti_tempdirs() == before
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not os.path.exists("/tmp/escaped-absolute.txt")


def test_package_symlink_member_is_refused(package, tmp_path):
    crafted = tmp_path / "link.pt2"
    info = zipfile.ZipInfo("pkg/data/aotinductor/model/evil")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(package("add_one")) as src, zipfile.ZipFile(crafted, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr(info, "/etc/passwd")
    with pytest.raises(aoti_cy.PackageError, match="symbolic link"):
        aoti_cy.load(crafted)


def test_missing_model_name_lists_the_models(package):
    with pytest.raises(aoti_cy.PackageError, match=r"no model named 'nope'.*'model'"):
        aoti_cy.load(package("add_one"), model_name="nope")


def test_tempdir_removed_on_close_and_on_failed_load(package):
    before = aoti_tempdirs()
    model = aoti_cy.load(package("add_one"))
    assert len(aoti_tempdirs() - before) == 1
    model.close()
    assert aoti_tempdirs() == before
    with pytest.raises(ValueError, match="num_models"):
        aoti_cy.load(package("add_one"), num_models=0)
    assert aoti_tempdirs() == before


def test_tempdir_is_private(package):
    before = aoti_tempdirs()
    with aoti_cy.load(package("add_one")):
        (created,) = aoti_tempdirs() - before
        assert os.stat(created).st_mode & 0o777 == 0o700


def test_bad_device_arguments(package):
    with pytest.raises(ValueError, match="invalid device"):
        aoti_cy.load(package("add_one"), device="banana")
    with pytest.raises(ValueError, match="unsupported device"):
        aoti_cy.load(package("add_one"), device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            aoti_cy.load(package("add_one"), device="cuda")


def test_cpu_model_rejects_stream(package, example):
    with aoti_cy.load(package("add_one")) as model:
        with pytest.raises(ValueError, match="stream"):
            model.run(example("add_one").inputs(), stream=1234)
        with pytest.raises(TypeError, match="stream must be"):
            model.run(example("add_one").inputs(), stream="s")


def test_optional_symbol_missing_names_it(package, tmp_path):
    # A real model whose RunSingleThreaded entry point is renamed in its
    # dynamic symbol table (same length), so dlsym cannot find it.
    library = extract_library(package("add_one"), tmp_path)
    name = b"AOTInductorModelContainerRunSingleThreaded\x00"
    with open(library, "rb") as f:
        data = f.read()
    assert name in data
    with open(library, "wb") as f:
        f.write(data.replace(name, b"X" + name[1:]))
    x = torch.randn(8)
    with aoti_cy.ModelContainer(library) as model:
        exported = model.library.exported()
        assert exported["AOTInductorModelContainerRunSingleThreaded"] is False
        assert exported["AOTInductorModelContainerCreateWithDevice"] is True
        torch.testing.assert_close(model.run([x])[0], x + 1)   # the rest still works
        with pytest.raises(aoti_cy.MissingSymbolError,
                           match="AOTInductorModelContainerRunSingleThreaded"):
            model.run_single_threaded([x])


def test_tempdir_removed_at_exit_without_close(package):
    import subprocess
    import sys
    script = ("import aoti_cy\n"
              f"model = aoti_cy.load({str(package('add_one'))!r})\n"
              "print(model.library_path)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    library = done.stdout.strip()
    # The child's private folder held the library, and is gone after its exit
    # (other test processes may have folders of their own meanwhile).
    assert os.path.basename(os.path.dirname(library)) and "aoti_cy-" in library
    assert not os.path.exists(library)
    assert not [f for f in aoti_tempdirs() if library.startswith(f + os.sep)]


def test_half_built_container_never_crashes(example):
    bare = aoti_cy.ModelContainer.__new__(aoti_cy.ModelContainer)
    assert bare.closed
    with pytest.raises(RuntimeError, match="closed"):
        bare.run(example("add_one").inputs())
    with pytest.raises(RuntimeError, match="closed"):
        bare.constants
    bare.close()
    with pytest.raises(FileNotFoundError):
        bare.__init__("/nonexistent.so")
    assert bare.closed
    del bare


def test_container_in_a_reference_cycle_is_collected_safely(package, example):
    import gc

    class Holder:
        pass

    holder = Holder()
    holder.model = aoti_cy.load(package("add_one"))
    folder = package_folder(holder.model.library_path)
    holder.self = holder
    holder.model.run(example("add_one").inputs())
    del holder
    gc.collect()
    assert not os.path.exists(folder)


def test_library_replaced_on_disk_while_loaded_is_refused(package, tmp_path):
    import shutil
    import zipfile
    so = extract_library(package("add_one"), tmp_path / "a")
    with aoti_cy.ModelContainer(so):
        replacement = so + ".new"
        shutil.copy(so, replacement)
        os.replace(replacement, so)
        with pytest.raises(aoti_cy.PackageError, match="changed on disk"):
            aoti_cy.ModelContainer(so)


def test_zip_bomb_is_refused_before_writing(package, tmp_path):
    bomb = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(package("add_one")) as src, \
            zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        prefix = src.namelist()[0].split("/")[0]
        dst.writestr(f"{prefix}/data/aotinductor/model/zeros.bin", bytes(100 << 20))
    before = aoti_tempdirs()
    with pytest.raises(aoti_cy.PackageError, match="zip bomb"):
        aoti_cy.load(bomb)
    assert aoti_tempdirs() == before


def test_model_with_its_own_libstdcxx_is_refused(tmp_path):
    import subprocess
    source = tmp_path / "private.cpp"
    source.write_text(
        "#include <locale>\n#include <sstream>\n"
        'extern "C" int touch() { std::ostringstream s; s.imbue(std::locale::classic());'
        " s << 1; return (int)s.str().size(); }\n")
    library = tmp_path / "private.so"
    subprocess.run(["g++", "-shared", "-fPIC", "-static-libstdc++", str(source), "-o",
                    str(library)], check=True, timeout=300)
    with pytest.raises(aoti_cy.PackageError, match="static copy of libstdc\\+\\+.*CXX=/usr/bin/g\\+\\+"):
        aoti_cy.ModelContainer(library)


def test_truncated_package(package, tmp_path):
    with open(package("add_one"), "rb") as f:
        data = f.read()
    for cut in (len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"cut{cut}.pt2"
        truncated.write_bytes(data[:cut])
        before = aoti_tempdirs()
        with pytest.raises(aoti_cy.PackageError):
            aoti_cy.load(truncated)
        assert aoti_tempdirs() == before


def test_package_without_a_model(tmp_path):
    empty = tmp_path / "empty.pt2"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("empty/archive_format", "pt2")
    with pytest.raises(aoti_cy.PackageError, match="holds no models"):
        aoti_cy.load(empty)


def test_metadata_that_is_not_json(package, tmp_path):
    metadata = extract_library(package("add_one"), tmp_path)[:-len(".so")] + "_metadata.json"
    with open(metadata, "w") as f:
        f.write("{not json")
    with pytest.raises(aoti_cy.PackageError, match="not valid JSON"):
        aoti_cy.load(tmp_path)


def test_truncated_library(package, tmp_path):
    library = extract_library(package("add_one"), tmp_path)
    with open(library, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.so"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(aoti_cy.PackageError, match="truncated"):
        aoti_cy.ModelContainer(cut)


def test_library_of_another_architecture(package, tmp_path):
    import struct
    library = extract_library(package("add_one"), tmp_path)
    with open(library, "r+b") as f:
        f.seek(18)
        f.write(struct.pack("<H", 183 if os.uname().machine != "aarch64" else 62))
    with pytest.raises(aoti_cy.PackageError, match="another architecture"):
        aoti_cy.ModelContainer(library)


def test_symbol_table_matches_what_the_library_exports(package, tmp_path):
    import ctypes
    from aoti_cy._library import SYMBOLS
    library = extract_library(package("add_one"), tmp_path)
    loaded = ctypes.CDLL(library)
    with aoti_cy.ModelContainer(library) as model:
        exported = model.library.exported()
        for name, required, _ in SYMBOLS:
            assert required or exported[name] == hasattr(loaded, name), name
    assert len({slot for _, _, slot in SYMBOLS}) == len(SYMBOLS)
