"""aoti_cy as a drop-in for torch's loader: torch-style code run through
``aoti_cy.aoti_load_package`` / ``aoti_cy.load_package`` and through torch's
own names under ``aoti_cy.patch_torch()``, each result compared with torch's
loader on the same package and with eager PyTorch."""

import copy
import glob
import io
import os
import shutil
import zipfile

import pytest
import torch
import torch._inductor.package

import aoti_cy
from aoti_cy import _cpp_build
from aoti_cy.testing import MLP, compile_package, make_model
from aoti_cy.testing import Nested, nested_call_args
from conftest import assert_same_tree, run_in_threads
from real_models import REAL_MODELS, UPDATABLE, gpt2_and_vit_package, perturbed_state_dict

TORCH_AOTI_LOAD_PACKAGE = torch._inductor.aoti_load_package


def torch_load(path, model_name="model", run_single_threaded=False, num_runners=1,
               device_index=-1):
    """torch's own loader, built as its load_package builds it, but not
    through the names a patch replaces (torch's functions look those up when
    called)."""
    from torch.export.pt2_archive._package import AOTICompiledModel
    return AOTICompiledModel(torch._C._aoti.AOTIModelPackageLoader(
        os.fspath(path), model_name, run_single_threaded, num_runners, device_index))


class _Api:
    """The two ways in: aoti_cy's functions, or torch's names while patched."""

    def __init__(self, patched):
        self.patched = patched

    def aoti_load_package(self, *args, **kwargs):
        loader = torch._inductor.aoti_load_package if self.patched else aoti_cy.aoti_load_package
        return self._checked(loader(*args, **kwargs))

    def load_package(self, *args, **kwargs):
        loader = torch._inductor.package.load_package if self.patched else aoti_cy.load_package
        return self._checked(loader(*args, **kwargs))

    def _checked(self, model):
        assert isinstance(model, aoti_cy.AOTICompiledModel)
        assert isinstance(model.loader.container, aoti_cy.ModelContainer)
        if self.patched:   # code that checks torch's type still accepts it
            from torch.export.pt2_archive._package import AOTICompiledModel
            assert isinstance(model, AOTICompiledModel)
        return model


@pytest.fixture(params=["aoti_cy", "patched"])
def api(request):
    if request.param == "aoti_cy":
        yield _Api(False)
        return
    with aoti_cy.patch_torch():
        yield _Api(True)
    assert torch._inductor.aoti_load_package is TORCH_AOTI_LOAD_PACKAGE


def mlp_package():
    return compile_package(MLP, [torch.randn(16, 64)])


# ---- calls ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "bert"])
def test_transformers_model_called_as_exported(api, name):
    # GPT-2 takes a positional tensor and a non-tensor keyword
    # (return_dict=False); BERT takes keyword tensors only.
    real = REAL_MODELS[name]
    path = real.package()
    ours = api.aoti_load_package(path)
    theirs = torch_load(path)
    eager = real.eager()
    for seed in (1, 2):
        args, kwargs = real.call(seed=seed)
        got = ours(*args, **kwargs)
        assert_same_tree(got, theirs(*args, **kwargs))
        with torch.no_grad():
            torch.testing.assert_close(real.output(got), real.output(eager(*args, **kwargs)))
    if name == "gpt2":
        # The non-tensor keyword, fixed at export, may be left out (torch's
        # loader insists on it: a ValueError).
        args, kwargs = real.call(seed=3)
        assert_same_tree(ours(*args), theirs(*args, **kwargs))
        with pytest.raises(ValueError, match="return_dict"):
            theirs(*args)


def test_nested_arguments_and_outputs(api):
    args, kwargs = nested_call_args()
    path = compile_package(Nested, args, kwargs=kwargs)
    ours = api.aoti_load_package(path)
    args, kwargs = nested_call_args(seed=4)
    want = make_model(Nested)(*args, **kwargs)
    assert_same_tree(ours(*args, **kwargs), want)
    assert_same_tree(torch_load(path)(*args, **kwargs), want)
    flat = torch.utils._pytree.tree_leaves((args, kwargs))
    assert_same_tree(ours.loader.run(flat), torch_load(path).loader.run(flat))


def test_boxed_run_takes_over_the_list(api):
    path = mlp_package()
    x = torch.randn(16, 64)
    ours, theirs = api.aoti_load_package(path), torch_load(path)
    mine, torchs = [x], [x]
    assert_same_tree(ours.loader.boxed_run(mine), theirs.loader.boxed_run(torchs))
    assert mine == [] and torchs == []
    with pytest.raises(TypeError):
        ours.loader.boxed_run((x,))
    with pytest.raises(TypeError):
        theirs.loader.boxed_run((x,))


# ---- description ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "gpt2"])
def test_metadata_call_spec_and_constant_fqns(api, name):
    path = mlp_package() if name == "mlp" else REAL_MODELS[name].package()
    ours, theirs = api.aoti_load_package(path), torch_load(path)
    assert ours.get_metadata() == theirs.get_metadata()
    assert ours.get_metadata()["AOTI_DEVICE_KEY"] == "cpu"
    assert ours.loader.get_call_spec() == theirs.loader.get_call_spec()
    fqns = ours.get_constant_fqns()
    assert isinstance(fqns, list) and sorted(fqns) == sorted(theirs.get_constant_fqns())
    if hasattr(theirs.loader, "get_custom_objs"):   # torch >= 2.13
        assert ours.loader.get_custom_objs() == theirs.loader.get_custom_objs() == {}
    metadata = aoti_cy.torch_compat.AOTIModelPackageLoader.load_metadata_from_package(
        path, "model")
    assert metadata == torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(
        path, "model")


# ---- constants --------------------------------------------------------------------


def _perturbed_mlp(fqns):
    """An eager MLP with new weights, and those weights for the given FQNs."""
    eager = make_model(MLP)
    state = perturbed_state_dict(eager)
    return eager, {k: state[k].clone() for k in fqns}


def test_load_constants_full_update(api):
    path = mlp_package()
    ours, theirs = api.aoti_load_package(path), torch_load(path)
    fqns = theirs.get_constant_fqns()
    x = torch.randn(16, 64)
    # Constants inductor inlined (fc2.bias, the buffer) keep their values:
    # compare against an eager module changed only where the package can be.
    eager = make_model(MLP)
    _, new = _perturbed_mlp(fqns)
    eager.load_state_dict(new, strict=False)
    for model in (ours, theirs):
        model.load_constants(new, check_full_update=True)
    with torch.no_grad():
        want = eager(x)
    assert_same_tree(ours(x), want)
    assert_same_tree(theirs(x), want)
    partial = {fqns[0]: new[fqns[0]]}
    for model in (ours, theirs):   # a full update that is not one
        with pytest.raises(RuntimeError):
            model.load_constants(partial, check_full_update=True)
        model.load_constants(partial, check_full_update=False)
    assert_same_tree(ours(x), want)
    with pytest.raises(RuntimeError, match="Constant not found: nope"):
        ours.load_constants({"nope": x}, check_full_update=False)
    with pytest.raises(RuntimeError, match="Constant not found: nope"):
        theirs.load_constants({"nope": x}, check_full_update=False)
    with pytest.raises(ValueError, match=r"fc1.weight.*shape"):   # aoti_cy checks shapes
        ours.load_constants({"fc1.weight": torch.zeros(3)}, check_full_update=False)
    assert_same_tree(ours(x), want)


def test_load_constants_user_managed_uses_the_tensors_in_place(api):
    path = mlp_package()
    ours, theirs = api.aoti_load_package(path), torch_load(path)
    fqns = theirs.get_constant_fqns()
    _, mine = _perturbed_mlp(fqns)
    torchs = {k: v.clone() for k, v in mine.items()}
    ours.load_constants(mine, check_full_update=True, user_managed=True)
    theirs.load_constants(torchs, check_full_update=True, user_managed=True)
    x = torch.randn(16, 64)
    before = ours(x)
    assert_same_tree(before, theirs(x))
    for weights in (mine, torchs):   # the models read these tensors
        weights["fc1.bias"].add_(1.0)
    after = ours(x)
    assert not torch.allclose(after, before)
    assert_same_tree(after, theirs(x))
    with pytest.raises(RuntimeError, match="allow_h2d_copy"):
        ours.load_constants(mine, check_full_update=True, user_managed=True,
                            allow_h2d_copy=True)


def test_update_constant_buffer_inactive_and_swap(api):
    path = mlp_package()
    ours = api.aoti_load_package(path)
    fqns = ours.get_constant_fqns()
    eager, new = _perturbed_mlp(fqns)
    names = ours.loader.container.constant_fqns   # FQN -> internal name
    x = torch.randn(16, 64)
    old = ours(x)
    ours.loader.update_constant_buffer({names[k]: v for k, v in new.items()}, True, True)
    assert_same_tree(ours(x), old)    # the inactive buffer is not used yet
    ours.loader.swap_constant_buffer()
    reference = make_model(MLP)
    reference.load_state_dict(new, strict=False)
    with torch.no_grad():
        assert_same_tree(ours(x), reference(x))
    extracted = ours.loader.extract_constants_map()
    assert sorted(extracted) == sorted(new)
    for fqn, value in new.items():
        torch.testing.assert_close(extracted[fqn], value)


# ---- models, runners, copies, files ------------------------------------------------


def test_several_models_in_one_package(api):
    gpt2, vit = REAL_MODELS["gpt2"], REAL_MODELS["vit"]
    path = gpt2_and_vit_package()
    for name, real in (("gpt2", gpt2), ("vit", vit)):
        args, kwargs = real.call(seed=5)
        ours = api.load_package(path, name)
        theirs = torch_load(path, name)
        got = ours(*args, **kwargs)
        assert_same_tree(got, theirs(*args, **kwargs))
        with torch.no_grad():
            torch.testing.assert_close(real.output(got),
                                       real.output(real.eager()(*args, **kwargs)))
    # A missing name: torch's RuntimeError and message first, then the models there.
    torchs = "Failed to find a generated cpp file or so file for model 'bert' in the zip archive."
    with pytest.raises(RuntimeError, match=torchs):
        torch_load(path, "bert")
    with pytest.raises(RuntimeError, match=torchs + " .*no model named 'bert'.*'gpt2', 'vit'") \
            as caught:
        api.load_package(path, "bert")
    assert isinstance(caught.value, aoti_cy.ModelNotFoundError)
    assert isinstance(caught.value, aoti_cy.PackageError)
    # The package has no model called "model", which aoti_load_package loads.
    with pytest.raises(RuntimeError, match="no model named 'model'"):
        api.aoti_load_package(path)


def test_run_single_threaded(api):
    real = REAL_MODELS["gpt2"]
    path = real.package()
    ours = api.aoti_load_package(path, run_single_threaded=True)
    theirs = torch_load(path, run_single_threaded=True)
    args, kwargs = real.call(seed=2)
    assert_same_tree(ours(*args, **kwargs), theirs(*args, **kwargs))
    flat = [a for a in args if isinstance(a, torch.Tensor)]
    assert_same_tree(ours.loader.run(flat), theirs.loader.run(flat))
    with pytest.raises(RuntimeError, match="num_runners must be 1"):
        api.load_package(path, "model", True, 2)
    with pytest.raises(RuntimeError, match="num_runners must be 1"):
        torch_load(path, "model", True, 2)


def test_num_runners_run_at_once(api):
    path = mlp_package()
    ours = api.load_package(path, num_runners=2)
    theirs = torch_load(path, num_runners=2)
    inputs = [torch.randn(16, 64, generator=torch.Generator().manual_seed(i))
              for i in range(4)]
    wants = [theirs(x) for x in inputs]

    def work(i):
        for _ in range(50):
            assert_same_tree(ours(inputs[i]), wants[i])
    assert run_in_threads(work, 4, timeout=120) == []
    for bad in (0, -1):
        with pytest.raises(RuntimeError, match="num_runners must be >=1"):
            api.load_package(path, num_runners=bad)


def test_deepcopy_shares_the_loader_as_torch_does(api):
    path = mlp_package()
    ours, theirs = api.aoti_load_package(path), torch_load(path)
    ours_copy, theirs_copy = copy.deepcopy(ours), copy.deepcopy(theirs)
    assert ours_copy.loader is ours.loader and theirs_copy.loader is theirs.loader
    assert type(ours_copy) is type(ours)
    x = torch.randn(16, 64)
    assert_same_tree(ours_copy(x), theirs_copy(x))
    # Inside a module that is deep-copied, as serving code does.
    holder = torch.nn.Module()
    holder.compiled = ours
    assert copy.deepcopy(holder).compiled.loader is ours.loader


@pytest.mark.parametrize("kind", ["file", "bytes"])
def test_load_from_a_file_object(api, kind):
    path = mlp_package()
    x = torch.randn(16, 64)
    with open(path, "rb") as f:
        source = f if kind == "file" else io.BytesIO(f.read())
        ours = api.aoti_load_package(source)
        assert source.tell() == 0
    theirs = torch_load(path)
    assert_same_tree(ours(x), theirs(x))   # the file is closed: the model runs without it


# ---- errors -------------------------------------------------------------------------


def test_errors_torch_callers_catch_are_runtime_errors(api):
    path = mlp_package()
    ours, theirs = api.aoti_load_package(path), torch_load(path)
    x = torch.randn(16, 64)
    cases = [
        (lambda m: m.loader.run([x, x]), "takes 1 inputs"),
        (lambda m: m(x, x), "takes 1 inputs"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError):
            call(theirs)
        with pytest.raises(RuntimeError, match=message) as caught:
            call(ours)
        assert isinstance(caught.value, ValueError)   # and aoti_cy's type still
    for load in (lambda: torch_load("/no/such.pt2"),
                 lambda: api.aoti_load_package("/no/such.pt2")):
        with pytest.raises(RuntimeError):
            load()
    # What torch does not check: aoti_cy refuses, naming the input.
    with pytest.raises(RuntimeError, match=r"input 0 .* dim 1 is 32, the model expects 64"):
        ours(torch.randn(16, 32))
    with pytest.raises(RuntimeError, match="contiguous"):
        ours(torch.randn(64, 16).t())
    assert_same_tree(ours(x), theirs(x))   # still usable


def test_a_missing_model_name_is_a_runtime_error_for_load_too():
    path = mlp_package()
    with pytest.raises(RuntimeError, match="no model named 'other'.*'model'") as caught:
        aoti_cy.load(path, model_name="other")
    assert isinstance(caught.value, aoti_cy.PackageError)


# ---- patching -------------------------------------------------------------------------


def test_patch_is_undone_exactly():
    import torch._inductor.package.package as package_module
    import torch.export.pt2_archive._package as pt2_module
    names = [(torch._inductor, "aoti_load_package"),
             (torch._inductor.package, "load_package"),
             (package_module, "load_package"), (pt2_module, "_load_aoti")]
    before = [getattr(module, name) for module, name in names]
    path = mlp_package()
    outer = aoti_cy.patch_torch()
    try:
        patched = [getattr(module, name) for module, name in names]
        assert all(p is not b for p, b in zip(patched, before))
        # torch.export's .pt2 loader builds its models with aoti_cy too.
        contents = pt2_module.load_pt2(path)
        assert isinstance(contents.aoti_runners["model"], aoti_cy.AOTICompiledModel)
        with aoti_cy.patch_torch() as inner:
            assert inner.active
            with pytest.raises(RuntimeError, match="reverse order"):
                outer.undo()
        assert [getattr(module, name) for module, name in names] == patched
    finally:
        outer.undo()
    outer.undo()   # idempotent
    assert [getattr(module, name) for module, name in names] == before
    assert not isinstance(TORCH_AOTI_LOAD_PACKAGE(path), aoti_cy.AOTICompiledModel)


# ---- packages that ship C++ sources only ---------------------------------------------------


@pytest.fixture
def build_cache(tmp_path, monkeypatch):
    folder = tmp_path / "builds"
    monkeypatch.setenv("AOTI_CY_BUILD_CACHE", str(folder))
    return folder


def cpp_only_package(device="cpu"):
    return compile_package(MLP, [torch.randn(16, 64, device=device)], device=device,
                           inductor_configs={"aot_inductor.package_cpp_only": True})


def test_cpp_only_package_is_built_once_and_cached(build_cache):
    path = cpp_only_package()
    with zipfile.ZipFile(path) as archive:   # what such a package holds
        names = archive.namelist()
    assert not any(n.endswith(".so") for n in names)
    assert any(n.endswith(".wrapper.cpp") for n in names)
    x = torch.randn(16, 64)
    with torch.no_grad():
        want = make_model(MLP)(x)
    # Two loads at once into an empty cache: one builds, the other waits for it.
    models = [None, None]

    def load(i):
        models[i] = aoti_cy.aoti_load_package(path)
    assert run_in_threads(load, 2, timeout=600) == []
    entries = [p for p in os.listdir(build_cache) if not p.endswith((".lock", ".log"))]
    assert len(entries) == 1 and not entries[0].startswith(".")   # no build folder left
    library = models[0].loader.container.library_path
    assert library == models[1].loader.container.library_path
    assert library.startswith(str(build_cache))
    built_at = os.stat(library).st_mtime_ns
    # The next load takes the cached library: nothing rebuilt.
    again = aoti_cy.aoti_load_package(path)
    assert again.loader.container.library_path == library
    assert os.stat(library).st_mtime_ns == built_at
    theirs = torch_load(path)   # torch builds it too, every time
    for model in (*models, again):
        assert_same_tree(model(x), want)
        assert_same_tree(model(x), theirs(x))
        assert model.get_metadata() == theirs.get_metadata()
    assert sorted(again.get_constant_fqns()) == sorted(theirs.get_constant_fqns())
    # aoti_cy's input checks work on the built library (the model's own checks).
    with pytest.raises(RuntimeError, match="does not fit the model"):
        again(torch.randn(16, 32))
    with aoti_cy.patch_torch():
        patched = torch._inductor.aoti_load_package(path)
    assert patched.loader.container.library_path == library


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpp_only_cuda_package(build_cache):
    path = cpp_only_package("cuda")
    x = torch.randn(16, 64, device="cuda")
    with torch.no_grad():
        want = make_model(MLP, device="cuda")(x)
    ours = aoti_cy.aoti_load_package(path)
    library = ours.loader.container.library_path
    assert library.startswith(str(build_cache))
    assert ours.loader.container.device == torch.device("cuda", 0)
    theirs = torch_load(path)
    got = ours(x)
    assert got.is_cuda
    assert_same_tree(got, want)
    assert_same_tree(got, theirs(x))
    again = aoti_cy.aoti_load_package(path)   # cached: same library, nothing rebuilt
    assert again.loader.container.library_path == library
    assert_same_tree(again(x), want)


def test_cpp_only_build_failure_names_the_compiler_output(build_cache, tmp_path):
    folder = tmp_path / "package"
    with zipfile.ZipFile(cpp_only_package()) as archive:
        archive.extractall(folder)
    flags, = glob.glob(str(folder / "*" / "data" / "aotinductor" / "model" /
                           "*_compile_flags.json"))
    import json
    with open(flags) as f:
        recorded = json.load(f)
    recorded["cflags"].append("fno-such-option-anywhere")
    with open(flags, "w") as f:
        json.dump(recorded, f)
    with pytest.raises(aoti_cy.PackageError, match=r"(?s)compiling the C\+\+ sources.*"
                       "full compiler output in .*Compiler output:.*"
                       "unrecognized command-line option.*fno-such-option-anywhere") as caught:
        aoti_cy.load(folder)
    log = str(caught.value).split("full compiler output in ")[1].split(".log")[0] + ".log"
    with open(log) as f:
        assert "fno-such-option-anywhere" in f.read()
    assert [p for p in os.listdir(build_cache) if p.startswith(".")] == []   # cleaned up
    # Through the torch-compatible API it is a RuntimeError as well.
    with pytest.raises(RuntimeError, match=r"compiling the C\+\+ sources"):
        aoti_cy.load_package(str(folder))


def test_cpp_only_package_without_its_flags(build_cache, tmp_path):
    folder = tmp_path / "package"
    with zipfile.ZipFile(cpp_only_package()) as archive:
        archive.extractall(folder)
    for flags in glob.glob(str(folder / "*" / "data" / "aotinductor" / "model" /
                               "*_linker_flags.json")):
        os.unlink(flags)
    with pytest.raises(aoti_cy.PackageError, match="_linker_flags.json"):
        aoti_cy.load(folder)
    assert not os.path.exists(build_cache) or os.listdir(build_cache) == []
    shutil.rmtree(folder)
    assert _cpp_build.build_cache_dir() == str(build_cache)
