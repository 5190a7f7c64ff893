"""The package index on real compiled packages (aoti_cy.testing examples, a
random-initialised `transformers` model, a package of two models): loading,
the drop-in's ``load_metadata_from_package`` and Ray's device lookup give
the answers torch's own readers give on the same package, and the weights
the package hands out, given to a container by its caller, compute what
torch's loader computes."""

import json
import warnings
import zipfile

import pytest
import torch
from torch.export.pt2_archive import _package as pt2_package
from torch.export.pt2_archive.constants import AOTINDUCTOR_DIR, WEIGHTS_DIR

import aoti_cy
from aoti_cy import torch_compat
from aoti_cy._package import PackageIndex, open_artifact
from aoti_cy.interface import ModelContainer, load_package_weights
from aoti_cy.testing import EXAMPLES
from conftest import WEIGHTS_OUTSIDE_SO, aoti_tempdirs, assert_same_tree

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Ray's dependencies warn as they import
        from aoti_cy import ray           # its device lookup, where Ray Serve is installed
except ImportError:
    ray = None
real_models = pytest.importorskip("real_models")

TORCH_LOADER = torch._C._aoti.AOTIModelPackageLoader
UPDATABLE_PICKLED = {**real_models.UPDATABLE, **WEIGHTS_OUTSIDE_SO["pickle_weights"]}


class Case:
    """A compiled package, one of its models, and a call of that model."""

    def __init__(self, path, name, call, output=lambda out: out):
        self.path, self.name, self.call, self.output = path, name, call, output


def mlp_case(weights=None):
    configs = WEIGHTS_OUTSIDE_SO[weights] if weights else {}
    return Case(EXAMPLES["mlp"].package(**configs), "model",
                lambda: (tuple(EXAMPLES["mlp"].inputs()), {}))


def real_case(real, path, name="model"):
    return Case(path, name, real.call, real.output)


CASES = {
    "mlp": lambda: mlp_case(),
    "mlp-blob": lambda: mlp_case("binary_blob"),
    "mlp-pickled": lambda: mlp_case("pickle_weights"),
    "vit-pickled": lambda: real_case(real_models.REAL_MODELS["vit"],
                                     real_models.REAL_MODELS["vit"].package(**UPDATABLE_PICKLED)),
    "gpt2-of-two": lambda: real_case(real_models.REAL_MODELS["gpt2"],
                                     real_models.gpt2_and_vit_package(), "gpt2"),
    "vit-of-two": lambda: real_case(real_models.REAL_MODELS["vit"],
                                    real_models.gpt2_and_vit_package(), "vit"),
}
WEIGHTS_CASES = ["mlp", "mlp-blob", "mlp-pickled", "vit-pickled"]


def torch_reference(path, name):
    """torch's own loader of the package, pickled weights included (its
    ``load_package`` leaves those out)."""
    return pt2_package.load_pt2(path, load_weights_from_disk=True).aoti_runners[name]


def torch_model_names(path):
    """The models of a package, by torch's own rule (its ``load_pt2``)."""
    with pt2_package.PT2ArchiveReader(path) as reader:
        names = reader.get_file_names()
    return names, {n[len(AOTINDUCTOR_DIR):].split("/")[0]
                   for n in names if n.startswith(AOTINDUCTOR_DIR)}


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_gives_torchs_answers(case):
    case = CASES[case]()
    theirs = TORCH_LOADER.load_metadata_from_package(case.path, case.name)
    index = PackageIndex.read(case.path)
    with open(case.path, "rb") as f:
        package_bytes = f.read()

    assert index.metadata(case.name) == theirs
    assert PackageIndex.read(package_bytes).metadata(case.name) == theirs
    assert torch_compat.AOTIModelPackageLoader.load_metadata_from_package(
        case.path, case.name) == theirs
    assert index.device(case.name) == theirs["AOTI_DEVICE_KEY"] == "cpu"
    if ray is not None:
        assert ray._package_device(package_bytes, case.name) == theirs["AOTI_DEVICE_KEY"]

    names, models = torch_model_names(case.path)
    assert set(index.model_names) == models
    ours = {m.split("/", 1)[1] for m in index.members(case.name)}
    assert ours == {n for n in names if n.startswith(f"{AOTINDUCTOR_DIR}{case.name}/")
                    or n.startswith(WEIGHTS_DIR)}

    args, kwargs = case.call()
    reference = torch_reference(case.path, case.name)
    with aoti_cy.load(case.path, model_name=case.name) as model:
        assert model.metadata == theirs == reference.get_metadata()
        assert model.device.type == theirs["AOTI_DEVICE_KEY"]
        assert_same_tree(case.output(model(*args, **kwargs)),
                         case.output(reference(*args, **kwargs)))


@pytest.mark.parametrize("case", WEIGHTS_CASES)
def test_handed_out_weights_compute_what_torchs_loader_computes(case):
    case = CASES[case]()
    artifact = open_artifact(case.path, case.name)
    args, kwargs = case.call()
    reference = torch_reference(case.path, case.name)
    try:
        weights = artifact.weights()
        with zipfile.ZipFile(case.path) as archive:
            stored = archive.namelist()
        assert (weights.blob is not None) == any(n.endswith(".blob") for n in stored)
        assert (weights.state_dict() is not None) == any(
            n.endswith("weights_config.json") for n in stored)
        with ModelContainer(artifact.library_path, device=artifact.device,
                            cubin_dir=artifact.cubin_dir) as handed, \
                aoti_cy.load(case.path, model_name=case.name) as loaded:
            load_package_weights(handed, artifact)
            want = case.output(reference(*args, **kwargs))
            assert_same_tree(case.output(handed(*args, **kwargs)), want)
            assert_same_tree(case.output(loaded(*args, **kwargs)), want)
            ours, theirs = handed.extract_constants_map(), loaded.extract_constants_map()
            assert ours.keys() == theirs.keys()
            for fqn in ours:
                torch.testing.assert_close(ours[fqn], theirs[fqn])
    finally:
        artifact.cleanup()


def without_device_key(source, target):
    """``source`` with ``AOTI_DEVICE_KEY`` taken out of every metadata file."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("_metadata.json"):
                metadata = json.loads(data)
                del metadata["AOTI_DEVICE_KEY"]
                data = json.dumps(metadata).encode()
            dst.writestr(info, data)
    return str(target)


def test_a_package_that_names_no_device_needs_one_everywhere(tmp_path):
    path = without_device_key(EXAMPLES["mlp"].package(), tmp_path / "no-device.pt2")
    before = aoti_tempdirs()
    theirs = TORCH_LOADER.load_metadata_from_package(path, "model")
    assert "AOTI_DEVICE_KEY" not in theirs
    index = PackageIndex.read(path)
    assert index.metadata("model") == theirs and index.device("model") is None

    # torch's loaders refuse it; so do aoti_cy's, saying what to do
    with pytest.raises(RuntimeError, match="No device information found") as torch_error:
        TORCH_LOADER(path, "model", False, 1, -1)
    with pytest.raises((KeyError, RuntimeError)):
        torch._inductor.aoti_load_package(path)
    with pytest.raises(RuntimeError) as ours:
        torch_compat.AOTIModelPackageLoader(path)
    assert str(ours.value).startswith(str(torch_error.value).splitlines()[0])
    with pytest.raises(aoti_cy.PackageError, match="names no device.*device='cpu'"):
        aoti_cy.load(path)
    if ray is not None:
        with pytest.raises(aoti_cy.PackageError, match="names no device.*device='cpu'"):
            ray._package_device(open(path, "rb").read(), "model")
    assert aoti_tempdirs() == before

    x, = EXAMPLES["mlp"].inputs()
    with aoti_cy.load(path, device="cpu") as model:
        torch.testing.assert_close(model.run([x])[0], EXAMPLES["mlp"].eager()(x).detach())
    assert aoti_tempdirs() == before
