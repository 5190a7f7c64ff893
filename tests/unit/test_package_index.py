"""The package index on synthetic `.pt2` zips, no compiled model: every
metadata form torch writes, several models, unsafe member paths, truncated
and corrupt archives, archives given as bytes, a package that names no
device, member size checks; and, where torch's own metadata reader takes the
same zip, the same answers as ``load_metadata_from_package``."""

import io
import json
import os
import shutil
import stat
import zipfile

import pytest
import torch

import aoti_cy
from aoti_cy import torch_compat
from aoti_cy._package import list_models, open_artifact
from aoti_cy._package_index import METADATA_LIMIT, NotAZipError, PackageIndex
from aoti_cy.errors import ModelNotFoundError, PackageError

TORCH_READER = torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package
ISA = {"AOTI_PLATFORM": "linux", "AOTI_MACHINE": "x86_64"}


def meta(device="cpu", **extra):
    fields = {**ISA, **extra}
    if device is not None:
        fields["AOTI_DEVICE_KEY"] = device
    return json.dumps(fields)


def pt2(models, *, weights=None, root="pkg", members=()):
    """The bytes of a package: ``models`` maps a model name to its files
    (name -> str or bytes); ``members`` are extra (ZipInfo or name, data)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{root}/archive_format", "pt2")
        archive.writestr(f"{root}/archive_version", "0")
        for name, files in models.items():
            for filename, data in files.items():
                archive.writestr(f"{root}/data/aotinductor/{name}/{filename}", data)
        for filename, data in (weights or {}).items():
            archive.writestr(f"{root}/data/weights/{filename}", data)
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def wrapper_model(device="cpu", stem="cwrap", **extra):
    """A model folder as torch 2.13 writes it: wrapper and kernel."""
    return {f"{stem}.wrapper.cpp": "// wrapper", f"{stem}.wrapper.so": b"\x7fELF",
            f"{stem}.wrapper_metadata.json": meta(device, **extra),
            "ckern.kernel.cpp": "// kernel", "ckern.kernel_metadata.json": meta("kernel-device")}


def written(tmp_path, data, name="package.pt2"):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# ---- metadata forms ------------------------------------------------------------------


def test_the_wrapper_metadata_is_the_models_never_the_kernels(tmp_path):
    path = written(tmp_path, pt2({"model": wrapper_model(dummy="moo")}))
    index = PackageIndex.read(path)
    assert index.metadata("model") == json.loads(meta("cpu", dummy="moo"))
    assert index.metadata("model") == TORCH_READER(path, "model")
    assert index.device("model") == "cpu"
    assert index.model("model").metadata_file == "cwrap.wrapper_metadata.json"


@pytest.mark.parametrize("files, chosen", [
    # torch 2.13: wrapper and kernel split, library and sources shipped
    ({"a.wrapper.so": b"", "a.wrapper_metadata.json": "M", "k.kernel.so": b"",
      "k.kernel_metadata.json": "K"}, "a.wrapper_metadata.json"),
    # aot_inductor.package_cpp_only: sources only
    ({"a.wrapper.cpp": "", "a.wrapper_metadata.json": "M", "k.kernel.cpp": "",
      "k.kernel_metadata.json": "K"}, "a.wrapper_metadata.json"),
    # older packages: one library, metadata under its stem
    ({"a.so": b"", "a_metadata.json": "M"}, "a_metadata.json"),
    ({"a.cpp": "", "a.o": b"", "a_metadata.json": "M"}, "a_metadata.json"),
    # several metadata files: the one beside the library
    ({"a.so": b"", "a_metadata.json": "M", "b_metadata.json": "K"}, "a_metadata.json"),
])
def test_every_metadata_form(tmp_path, files, chosen):
    contents = {"M": meta("cpu", which="model"), "K": meta("cuda", which="other")}
    files = {f: contents.get(d, d) if isinstance(d, str) else d for f, d in files.items()}
    index = PackageIndex.read(pt2({"model": files}))
    assert index.model("model").metadata_file == chosen
    assert index.metadata("model")["which"] == "model"
    assert index.device("model") == "cpu"


def test_several_metadata_files_and_no_library_to_choose_is_an_error():
    index = PackageIndex.read(pt2({"model": {"a_metadata.json": meta(), "b_metadata.json":
                                             meta(), "x.so": b"", "y.so": b""}}))
    with pytest.raises(PackageError, match="several metadata files"):
        index.metadata("model")


def test_a_model_without_metadata_has_none_and_names_no_device(tmp_path):
    path = written(tmp_path, pt2({"model": {"a.wrapper.so": b"\x7fELF"}}))
    index = PackageIndex.read(path)
    assert index.metadata("model") == {}
    assert index.device("model") is None
    # torch_compat's load_metadata_from_package fails as torch's reader does
    with pytest.raises(RuntimeError) as theirs:
        TORCH_READER(path, "model")
    with pytest.raises(RuntimeError) as ours:
        torch_compat.AOTIModelPackageLoader.load_metadata_from_package(path, "model")
    if "metadata" in str(theirs.value):
        assert str(ours.value).startswith(str(theirs.value).splitlines()[0].rstrip())
    else:   # torch 2.11's reader looks for the model's source file first
        assert "metadata" in str(ours.value)


@pytest.mark.parametrize("device_value", [None, ""])
def test_a_package_without_a_device_names_none(tmp_path, device_value):
    path = written(tmp_path, pt2({"model": wrapper_model(device_value)}))
    index = PackageIndex.read(path)
    assert index.device("model") is None
    assert index.metadata("model") == TORCH_READER(path, "model")
    # loading it needs a device: torch's loader refuses it too
    artifact = open_artifact(path, allow_executable_stack=True)   # nothing is loaded here
    try:
        assert artifact.declared_device is None
        with pytest.raises(PackageError, match="names no device.*pass the device"):
            artifact.device
    finally:
        artifact.cleanup()
    with pytest.raises(RuntimeError, match="^No device information found"):
        torch_compat.AOTIModelPackageLoader(path)


@pytest.mark.parametrize("data, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"AOTI_DEVICE_KEY": "cpu", "n": 3}', "holds a int for 'n'"),
    ('{"AOTI_DEVICE_KEY": ["cpu"]}', "holds a list for 'AOTI_DEVICE_KEY'"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_bad_metadata_is_an_error_of_that_model_only(tmp_path, data, message):
    files = {"a.wrapper.so": b"", "a.wrapper_metadata.json": data}
    path = written(tmp_path, pt2({"bad": files, "good": wrapper_model()}))
    index = PackageIndex.read(path)
    assert index.model_names == ("bad", "good")
    assert index.device("good") == "cpu"
    with pytest.raises(PackageError, match=message):
        index.metadata("bad")
    with pytest.raises((RuntimeError, UnicodeDecodeError)):
        TORCH_READER(path, "bad")   # torch's reader refuses it too
    with pytest.raises(RuntimeError, match=message):
        torch_compat.AOTIModelPackageLoader.load_metadata_from_package(path, "bad")


def test_metadata_larger_than_metadata_is_refused_unread():
    padding = "x" * METADATA_LIMIT
    index = PackageIndex.read(pt2({"model": {"a.so": b"", "a_metadata.json": meta(pad=padding)}}))
    with pytest.raises(PackageError, match="too large to be model metadata"):
        index.metadata("model")


# ---- models and members -----------------------------------------------------------------


def test_several_models_each_with_its_files_metadata_and_device(tmp_path):
    data = pt2({"encoder": wrapper_model("cpu", stem="cenc"),
                "decoder": wrapper_model("cuda", stem="cdec"),
                "plain": {"p.so": b"", "p_metadata.json": meta(None)}},
               weights={"weight_0": b"w0", "weight_1": b"w1"})
    path = written(tmp_path, data)
    index = PackageIndex.read(path)
    assert index.model_names == ("decoder", "encoder", "plain") == list_models(path)
    assert [index.device(n) for n in index.model_names] == ["cuda", "cpu", None]
    for name in ("decoder", "encoder"):
        assert index.metadata(name) == TORCH_READER(path, name)
    # torch 2.13's reader knows only the wrapper form; older packages' is read too
    assert index.metadata("plain") == json.loads(meta(None))
    members = index.members("encoder")
    assert {m.rsplit("/", 1)[1] for m in members} == set(wrapper_model(stem="cenc")) | {
        "weight_0", "weight_1"}
    assert not any("/decoder/" in m or "/plain/" in m for m in members)
    with pytest.raises(ModelNotFoundError, match="no model named 'model'.*'decoder', "
                                                 "'encoder', 'plain'"):
        index.model("model")


def test_files_in_subfolders_belong_to_their_model():
    index = PackageIndex.read(pt2({"model": {**wrapper_model(), "cubins/k.cubin": b"c"}}))
    assert "cubins/k.cubin" in index.model("model").files
    assert "cubins/k.cubin" not in index.model("model").top_files


def test_a_package_without_models(tmp_path):
    index = PackageIndex.read(pt2({}))
    assert index.model_names == ()
    with pytest.raises(ModelNotFoundError, match="holds no models"):
        index.metadata("model")


def test_models_under_several_top_level_folders_are_refused():
    data = pt2({"a": wrapper_model()},
               members=[("other/data/aotinductor/b/x.so", b"")])
    with pytest.raises(PackageError, match="several top-level folders"):
        PackageIndex.read(data)


def test_bytes_path_and_extracted_directory_give_the_same_answers(tmp_path):
    data = pt2({"a": wrapper_model("cpu", stem="ca"), "b": wrapper_model("cuda", stem="cb")},
               weights={"weight_0": b"w"})
    path = written(tmp_path, data)
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    indexes = [PackageIndex.read(data), PackageIndex.read(path),
               PackageIndex.read(bytearray(data)), PackageIndex.read(memoryview(data)),
               PackageIndex.read(str(folder)), PackageIndex.read(folder / "pkg")]
    for index in indexes:
        assert index.model_names == ("a", "b")
        for name in index.model_names:
            assert index.metadata(name) == indexes[0].metadata(name)
            assert index.device(name) == indexes[0].device(name)
            assert index.model(name).files == indexes[0].model(name).files
    on_disk = {os.path.relpath(m, folder) for m in indexes[-1].members("a")}
    assert on_disk == set(indexes[0].members("a"))


# ---- unsafe and corrupt archives -----------------------------------------------------------


def symlink(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("member, message", [
    ("../x", "outside the package"),
    ("pkg/data/aotinductor/model/../../../../evil.so", "outside the package"),
    ("pkg/data/weights/..\\..\\..\\evil", "outside the package"),
    ("/etc/evil", "absolute path"),
    ("\\evil", "absolute path"),
    ("C:/evil", "absolute path"),
    (symlink("pkg/data/aotinductor/model/link.so"), "symbolic link"),
    ("pkg/data/aotinductor/model/cwrap.wrapper.so", "appears twice"),
    ("pkg/./data/aotinductor/model/cwrap.wrapper.so", "appears twice"),
])
def test_unsafe_members_are_refused_before_anything_is_read(tmp_path, member, message):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns of the duplicate we want
        data = pt2({"model": wrapper_model()}, members=[(member, b"/etc/passwd")])
    path = written(tmp_path, data)
    before = sorted(os.listdir(tmp_path))
    for source in (data, path):
        with pytest.raises(PackageError, match=message):
            PackageIndex.read(source)
        with pytest.raises(PackageError, match=message):
            list_models(source)
    with pytest.raises(PackageError, match=message):
        open_artifact(path)       # aoti_cy.load's first step
    with pytest.raises(RuntimeError, match=message):
        torch_compat.AOTIModelPackageLoader.load_metadata_from_package(path, "model")
    assert sorted(os.listdir(tmp_path)) == before


def test_truncated_archives_and_other_files_are_not_packages(tmp_path):
    data = pt2({"model": wrapper_model()})
    for cut in (0, 10, len(data) // 2, len(data) - 10):
        with pytest.raises(NotAZipError, match="not a zip file"):
            PackageIndex.read(data[:cut])
        with pytest.raises(RuntimeError, match="^Failed to initialize zip archive"):
            torch_compat.AOTIModelPackageLoader.load_metadata_from_package(
                written(tmp_path, data[:cut], f"cut{cut}.pt2"), "model")
    with pytest.raises(FileNotFoundError):
        PackageIndex.read(tmp_path / "missing.pt2")
    with pytest.raises(PackageError, match="holds no AOTInductor package"):
        PackageIndex.read(tmp_path)


def test_a_corrupt_metadata_member_is_an_error_of_its_model():
    data = bytearray(pt2({"model": wrapper_model(pad="y" * 4000)}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("wrapper_metadata.json"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 4, start + 40):
        data[i] ^= 0x5A   # the deflated bytes, not the headers
    index = PackageIndex.read(bytes(data))
    with pytest.raises(PackageError, match="is corrupt"):
        index.metadata("model")


# ---- sizes and extraction --------------------------------------------------------------------


def test_a_zip_bomb_is_refused_when_read():
    bomb = pt2({"model": {**wrapper_model(), "huge.blob": bytes(80 << 20)}})
    assert len(bomb) < 1 << 20
    with pytest.raises(PackageError, match="refused as a zip bomb"):
        PackageIndex.read(bomb)


def test_extraction_writes_only_the_models_members(tmp_path):
    index = PackageIndex.read(pt2({"a": wrapper_model(stem="ca"), "b": wrapper_model(stem="cb")},
                                  weights={"weight_0": b"w"}))
    into = str(tmp_path / "out")
    os.mkdir(into)
    index.extract("a", into)
    found = {os.path.relpath(os.path.join(d, f), into).replace(os.sep, "/")
             for d, _, files in os.walk(into) for f in files}
    assert found == set(index.members("a"))
    assert os.path.isdir(index.model_dir("a", into))
    assert not os.path.exists(index.model_dir("b", into))


def test_extraction_checks_the_free_space_before_writing(tmp_path, monkeypatch):
    index = PackageIndex.read(pt2({"model": wrapper_model()}, weights={"w": bytes(4096)}))
    into = str(tmp_path / "out")
    os.mkdir(into)
    usage = shutil.disk_usage(into)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=100))
    with pytest.raises(PackageError, match=r"needs \d+ bytes .* only 100 are free"):
        index.extract("model", into)
    assert os.listdir(into) == []


def test_a_package_changed_after_it_was_read_is_not_extracted(tmp_path):
    path = written(tmp_path, pt2({"model": wrapper_model()}))
    index = PackageIndex.read(path)
    written(tmp_path, pt2({"model": {**wrapper_model(), "cwrap.wrapper.so": b"\x7fELF other"}}))
    into = str(tmp_path / "out")
    os.mkdir(into)
    with pytest.raises(PackageError, match="changed while it was being read"):
        index.extract("model", into)


# ---- what the package hands out ----------------------------------------------------------------


def test_weights_are_handed_out_not_loaded(tmp_path):
    stored = torch.arange(12, dtype=torch.float32)
    saved = io.BytesIO()
    torch.save(stored, saved)
    config = {"fc.weight": ["weight_0", [3, 2], [2, 1], 0],
              "fc.bias": ["weight_0", [2], [1], 10]}
    files = {**wrapper_model(), "cwrap.wrapper_weights.blob": b"0123456789",
             "weights_config.json": json.dumps(config)}
    path = written(tmp_path, pt2({"model": files}, weights={"weight_0": saved.getvalue()}))
    artifact = open_artifact(path, allow_executable_stack=True)
    try:
        weights = artifact.weights()
        with weights.blob as buffer:
            assert bytes(buffer) == b"0123456789"
            with pytest.raises(TypeError):
                buffer[0] = 1   # read-only
        state = weights.state_dict()
        assert set(state) == set(config)
        torch.testing.assert_close(state["fc.weight"], stored[:6].view(3, 2))
        torch.testing.assert_close(state["fc.bias"], stored[10:12])
    finally:
        artifact.cleanup()

    bare = open_artifact(written(tmp_path, pt2({"model": wrapper_model()}), "bare.pt2"),
                         allow_executable_stack=True)
    try:
        assert bare.weights().blob is None and bare.weights().state_dict() is None
    finally:
        bare.cleanup()


def test_a_bad_weights_index_is_a_package_error(tmp_path):
    files = {**wrapper_model(), "weights_config.json": '{"w": ["weight_0", [2], [1], 0]}'}
    artifact = open_artifact(written(tmp_path, pt2({"model": files})),
                             allow_executable_stack=True)
    try:
        with pytest.raises(PackageError, match="cannot read the package's weights"):
            artifact.weights().state_dict()
    finally:
        artifact.cleanup()
