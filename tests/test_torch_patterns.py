"""torch's own AOTInductor test patterns, run through ``aoti_cy.patch_torch()``.

Each test is a pattern of torch's `test_aot_inductor.py` /
`test_aot_inductor_package.py` (the runner-level constants API,
``torch._export.aot_load``, package metadata, wrong model names, ...),
written as torch's tests write it: through torch's own names. Under the
patch every one must be run by aoti_cy (``containers_built()`` counts the
containers it builds) and give what eager PyTorch and torch's unpatched
loader give.
"""

import hashlib
import inspect
import json
import os
import shutil
import zipfile

import pytest
import torch
import torch._export
import torch._inductor.package
import torch.export.pt2_archive._package as pt2_package
import torch.utils._pytree as pytree
from torch.export import Dim

import aoti_cy
from aoti_cy import torch_compat
from aoti_cy.testing import MLP, cache_dir, compile_package, make_model
from conftest import assert_same_tree, extract_library
from real_models import REAL_MODELS, UPDATABLE, perturbed_state_dict

# Bound before any patch: torch's own loaders, for the reference results.
TORCH_CPU_RUNNER = torch._C._aoti.AOTIModelContainerRunnerCpu
TORCH_PACKAGE_LOADER = torch._C._aoti.AOTIModelPackageLoader
TORCH_AOT_LOAD = torch._export.aot_load
# Imported before any patch, as code that imports at module level does.
from torch._C._aoti import AOTIModelPackageLoader as PreImportedLoaderClass  # noqa: E402
from torch._export import aot_load as pre_imported_aot_load  # noqa: E402
from torch._inductor import aoti_load_package as pre_imported_aoti_load_package  # noqa: E402
from torch._inductor.package import load_package as pre_imported_load_package  # noqa: E402


class FoldedWeights(torch.nn.Module):
    """torch's constant-folding test model: a weight derived from two
    constants, folded at load time (``use_runtime_constant_folding``)."""

    def __init__(self):
        super().__init__()
        self.w_pre = torch.randn(4, 4)
        self.b = torch.randn(4)

    def forward(self, x):
        w = torch.nn.functional.relu(torch.transpose(self.w_pre, 0, 1)) + self.b
        return torch.matmul(x, w)


class UnbackedEquals(torch.nn.Module):
    """torch's unbacked-size test model: the nonzero count of ``a`` must
    equal ``c.size(0)``, which only the model's own runtime assertion
    checks; ``b`` contributes only its (static) size."""

    def forward(self, a, b, c):
        nz = torch.nonzero(a)
        ones = a.new_ones([nz.size(0), b.size(0)])
        torch._check(ones.size(0) >= 1)
        return torch.add(ones, c)


class LinearAdd(torch.nn.Module):
    """torch's package-test model: ``x + linear(y)``."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(10, 10)

    def forward(self, x, y):
        return x + self.linear(y)


class Linear(torch.nn.Module):
    """torch's weights-test model: one linear layer."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 32)

    def forward(self, a):
        return self.linear(a)


class BoolInput(torch.nn.Module):
    """A non-tensor input, specialised at export."""

    def forward(self, x, b):
        return x * x if b else x + x


FOLDING = {"always_keep_tensor_constants": True,
           "aot_inductor.use_runtime_constant_folding": True}


def legacy_so(model_cls, args, configs=None):
    """A model `.so` from ``torch._export.aot_compile`` (what torch's
    ``legacy_compile`` builds for its runner tests), cached like the
    packages of aoti_cy.testing: the library and the metadata beside it."""
    configs = dict(configs or {})
    key = "\n".join([torch.__version__, inspect.getsource(model_cls), repr(sorted(configs.items())),
                     repr([tuple(a.shape) for a in args])])
    folder = os.path.join(cache_dir(), "legacy-" + hashlib.sha256(key.encode()).hexdigest()[:20])
    library = os.path.join(folder, "model.so")
    if not os.path.exists(library):
        torch.manual_seed(0)
        with torch.no_grad(), torch._inductor.config.patch(configs):
            built = torch._export.aot_compile(model_cls(), args)
        staging = folder + f".{os.getpid()}.tmp"
        os.makedirs(staging, exist_ok=True)
        shutil.copy(built, os.path.join(staging, "model.so"))
        metadata = built[:-len(".so")] + "_metadata.json"
        if os.path.exists(metadata):
            shutil.copy(metadata, os.path.join(staging, "model_metadata.json"))
        try:
            os.rename(staging, folder)
        except OSError:   # another process cached it first
            shutil.rmtree(staging, ignore_errors=True)
    return library


def folded_so():
    return legacy_so(FoldedWeights, (torch.randn(4, 4),), FOLDING)


def eager_folded():
    torch.manual_seed(0)
    return FoldedWeights()


def runner_call(runner, *args, **kwargs):
    """How torch's runner tests call a runner: flatten by its call spec."""
    import torch.fx._pytree as fx_pytree
    in_spec, out_spec = (pytree.treespec_loads(s) for s in runner.get_call_spec())
    flat = [x for x in fx_pytree.tree_flatten_spec((args, kwargs), in_spec)
            if isinstance(x, torch.Tensor)]
    return pytree.tree_unflatten(runner.run(flat), out_spec)


class Built:
    """How many containers aoti_cy built in the block."""

    def __enter__(self):
        self.start = torch_compat.containers_built()
        return self

    def __exit__(self, *exc_info):
        self.count = torch_compat.containers_built() - self.start


# ---- runners: torch._C._aoti.AOTIModelContainerRunnerCpu ---------------------------------


def test_constant_folding_with_update_through_the_runner():
    so_path = folded_so()
    model = eager_folded()
    x = torch.randn(4, 4)
    with aoti_cy.patch_torch() as patch, Built() as built:
        assert "torch._C._aoti.AOTIModelContainerRunnerCpu" in patch.patched
        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1)
        theirs = TORCH_CPU_RUNNER(so_path, 1)
        assert isinstance(runner.container, aoti_cy.ModelContainer)
        assert_same_tree(runner_call(runner, x), model(x))
        # New weights into the active buffer: the folded weight follows.
        generator = torch.Generator().manual_seed(3)
        new = {"L__self___b": torch.randn(4, generator=generator),
               "L__self___w_pre": torch.randn(4, 4, generator=generator)}
        model.w_pre, model.b = new["L__self___w_pre"], new["L__self___b"]
        for r in (runner, theirs):
            r.update_constant_buffer(new, False, False)
        assert_same_tree(runner_call(runner, x), model(x))
        assert_same_tree(runner_call(runner, x), runner_call(theirs, x))
        # Into the inactive buffer: nothing changes until the swap.
        before = runner_call(runner, x)
        newer = {k: v + 1 for k, v in new.items()}
        model.w_pre, model.b = newer["L__self___w_pre"], newer["L__self___b"]
        for r in (runner, theirs):
            r.update_constant_buffer(newer, True, False)
        assert_same_tree(runner_call(runner, x), before)
        for r in (runner, theirs):
            r.swap_constant_buffer()
        assert_same_tree(runner_call(runner, x), model(x))
        assert_same_tree(runner_call(runner, x), runner_call(theirs, x))
        # The old weights, now inactive, can go.
        runner.free_inactive_constant_buffer()
        assert_same_tree(runner_call(runner, x), model(x))
    assert built.count == 1


def test_runner_describes_its_constants_as_torch_does():
    so_path = folded_so()
    with aoti_cy.patch_torch():
        ours = torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1)
    theirs = TORCH_CPU_RUNNER(so_path, 1)
    assert type(ours) is not TORCH_CPU_RUNNER
    names = ours.get_constant_names_to_original_fqns()
    assert names == theirs.get_constant_names_to_original_fqns()
    assert any(name.startswith("_FOLDED_CONST_") for name in names)
    assert ours.get_constant_names_to_dtypes() == theirs.get_constant_names_to_dtypes()
    assert ours.get_call_spec() == theirs.get_call_spec()
    mine, torchs = ours.extract_constants_map(False), theirs.extract_constants_map(False)
    assert sorted(mine) == sorted(torchs) and mine   # folded constants are left out
    for name in mine:
        torch.testing.assert_close(mine[name], torchs[name])
    x = torch.randn(4, 4)
    assert_same_tree(ours.run([x]), theirs.run([x]))


def test_run_const_fold_on_the_inactive_buffer():
    so_path = folded_so()
    runner = torch_compat.AOTIModelContainerRunnerCpu(so_path, 1)
    model = eager_folded()
    x = torch.randn(4, 4)
    new = {name: value * 2 for name, value in runner.extract_constants_map(False).items()}
    model.w_pre, model.b = new["L__self___w_pre"], new["L__self___b"]
    runner.update_constant_buffer(new, True, True)
    runner.run_const_fold(True)      # fold the new weights before they go live
    runner.swap_constant_buffer()
    assert_same_tree(runner.run([x])[0], model(x))
    # A partial update that claims to be full is refused, before anything
    # changes (torch's runner prints a warning on stderr and goes on).
    with pytest.raises(RuntimeError, match="L__self___w_pre"):
        runner.update_constant_buffer({"L__self___b": new["L__self___b"] + 1}, False, True)
    assert_same_tree(runner.run([x])[0], model(x))


def test_weights_from_a_blob_file(tmp_path):
    # A library whose weights ship beside it, as a raw blob.
    path = compile_package(MLP, [torch.randn(16, 64)], inductor_configs={
        "aot_inductor.package_constants_on_disk_format": "binary_blob"})
    so_path = extract_library(path, tmp_path)
    blob = so_path[:-len(".so")] + "_weights.blob"
    x = torch.randn(16, 64)
    with aoti_cy.patch_torch(), Built() as built:
        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1)
    assert built.count == 1
    with pytest.raises(RuntimeError, match="no value yet for 3 constants"):
        runner.run([x])      # no weights yet: refused, not run on garbage
    runner.update_constant_buffer_from_blob(blob)
    theirs = TORCH_CPU_RUNNER(so_path, 1)
    theirs.update_constant_buffer_from_blob(blob)
    assert_same_tree(runner.run([x]), theirs.run([x]))
    assert_same_tree(runner.run([x])[0], make_model(MLP)(x).detach())
    with pytest.raises(RuntimeError, match="no_such.blob"):
        runner.update_constant_buffer_from_blob(str(tmp_path / "no_such.blob"))


def test_transformers_model_through_the_runner(tmp_path):
    # torch's runners load a model .so: the one in a GPT-2 package.
    real = REAL_MODELS["gpt2"]
    so_path = extract_library(real.package(**UPDATABLE), tmp_path)
    eager = real.eager()
    with aoti_cy.patch_torch(), Built() as built:
        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1)
    assert built.count == 1
    theirs = TORCH_CPU_RUNNER(so_path, 1)
    args, kwargs = real.call(seed=4)
    got = runner_call(runner, *args, **kwargs)
    assert_same_tree(got, runner_call(theirs, *args, **kwargs))
    with torch.no_grad():
        torch.testing.assert_close(real.output(got), real.output(eager(*args, **kwargs)))
    # Fine-tuned weights, by internal name, into the inactive buffer, then swapped.
    fqns = runner.get_constant_names_to_original_fqns()
    state = perturbed_state_dict(eager)
    new = {name: state[fqn].clone() for name, fqn in fqns.items() if fqn in state}
    for r in (runner, theirs):
        r.update_constant_buffer(new, True, False)
        r.swap_constant_buffer()
    got = runner_call(runner, *args, **kwargs)
    assert_same_tree(got, runner_call(theirs, *args, **kwargs))
    with torch.no_grad():
        torch.testing.assert_close(real.output(got), real.output(eager(*args, **kwargs)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runner(tmp_path):
    x = torch.randn(16, 64, device="cuda")
    path = compile_package(MLP, [x], device="cuda", inductor_configs=UPDATABLE)
    so_path = extract_library(path, tmp_path)
    cubin_dir = os.path.dirname(so_path)    # the package's kernels are beside its .so
    torch_cuda_runner = torch._C._aoti.AOTIModelContainerRunnerCuda
    with aoti_cy.patch_torch() as patch, Built() as built:
        assert "torch._C._aoti.AOTIModelContainerRunnerCuda" in patch.patched
        runner = torch._C._aoti.AOTIModelContainerRunnerCuda(so_path, 1, "cuda", cubin_dir)
    assert built.count == 1
    assert runner.container.device == torch.device("cuda", 0)
    theirs = torch_cuda_runner(so_path, 1, "cuda", cubin_dir)
    eager = make_model(MLP, device="cuda")
    with torch.no_grad():
        assert_same_tree(runner.run([x]), theirs.run([x]))
        assert_same_tree(runner.run([x])[0], eager(x))
        # Fine-tuned weights from CPU tensors, copied to the GPU by the runner.
        fqns = runner.get_constant_names_to_original_fqns()
        state = perturbed_state_dict(eager)
        runner.update_constant_buffer_from_cpu(
            {name: state[fqn].cpu() for name, fqn in fqns.items() if fqn in state}, False, False)
        assert_same_tree(runner.run([x])[0], eager(x))


# ---- torch._export.aot_load ----------------------------------------------------------------


def test_aot_load_runs_on_aoti_cy():
    so_path = folded_so()
    x = torch.randn(4, 4)
    want = eager_folded()(x)
    with aoti_cy.patch_torch() as patch, Built() as built:
        assert "torch._export.aot_load" in patch.patched
        optimized = torch._export.aot_load(so_path, "cpu")
        got = optimized(x)
    assert built.count == 1
    assert isinstance(optimized.runner, torch_compat.AOTIModelContainerRunnerCpu)
    assert_same_tree(got, want)
    assert_same_tree(got, TORCH_AOT_LOAD(so_path, "cpu")(x))
    with aoti_cy.patch_torch(), pytest.raises(RuntimeError, match="Unsupported device tpu"):
        torch._export.aot_load(so_path, "tpu")


# ---- packages: torch._C._aoti.AOTIModelPackageLoader, metadata, wrong names -------------


def test_package_loader_class_and_metadata():
    path = compile_package(MLP, [torch.randn(16, 64)])
    x = torch.randn(16, 64)
    with aoti_cy.patch_torch(), Built() as built:
        loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)
        metadata = torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(
            path, "model")
        # torch's load_pt2 reads the metadata, then builds its own model class
        # around the (patched) loader class.
        contents = pt2_package.load_pt2(path)
    assert built.count == 2
    assert isinstance(loader.container, aoti_cy.ModelContainer)
    assert metadata == TORCH_PACKAGE_LOADER.load_metadata_from_package(path, "model")
    theirs = TORCH_PACKAGE_LOADER(path, "model", False, 1, -1)
    assert loader.get_metadata() == theirs.get_metadata()
    assert_same_tree(loader.run([x]), theirs.run([x]))
    assert_same_tree(contents.aoti_runners["model"](x), make_model(MLP)(x).detach())


def test_loading_wrong_model_name():
    # torch's test_loading_wrong_model, through its load_package.
    path = compile_package(MLP, [torch.randn(16, 64)])
    message = ("Failed to find a generated cpp file or so file for model 'forward' in the "
               "zip archive.")
    with pytest.raises(RuntimeError, match=message):
        torch._inductor.package.load_package(path, model_name="forward")
    with aoti_cy.patch_torch():
        with pytest.raises(RuntimeError, match=message) as caught:
            torch._inductor.package.load_package(path, model_name="forward")
        assert isinstance(caught.value, aoti_cy.ModelNotFoundError)
        assert "it holds 'model'" in str(caught.value)
        with pytest.raises(RuntimeError, match=message):
            torch._C._aoti.AOTIModelPackageLoader(path, "forward", False, 1, -1)
        with pytest.raises(RuntimeError, match="Failed to find wrapper metadata for model "
                                               "'forward' in the zip archive."):
            torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(path, "forward")


def test_metadata_given_at_compile_time():
    # torch's test_metadata: aot_inductor.metadata reaches get_metadata().
    args = (torch.randn(10, 10), torch.randn(10, 10))
    path = compile_package(LinearAdd, args,
                           inductor_configs={"aot_inductor.metadata": {"dummy": "moo"}})
    with aoti_cy.patch_torch(), Built() as built:
        compiled = torch._inductor.package.load_package(path)
    assert built.count == 1
    assert compiled.get_metadata().get("dummy") == "moo"
    assert compiled.get_metadata() == TORCH_PACKAGE_LOADER(path, "model", False, 1,
                                                           -1).get_metadata()
    assert_same_tree(compiled(*args), make_model(LinearAdd)(*args).detach())


def test_non_tensor_input_and_deepcopy():
    # torch's test_bool_input and test_deepcopy_compiled_model.
    import copy
    x = torch.randn(3, 3)
    path = compile_package(BoolInput, (x, True))
    with aoti_cy.patch_torch(), Built() as built:
        compiled = torch._inductor.package.load_package(path)
    assert built.count == 1
    copied = copy.deepcopy(compiled)
    assert copied.loader is compiled.loader
    for model in (compiled, copied):
        assert_same_tree(model(x, True), x * x)


def test_load_from_a_buffer_twice():
    # torch's test_save_buffer: the package is a BytesIO, loaded twice.
    import io
    path = compile_package(MLP, [torch.randn(16, 64)])
    with open(path, "rb") as f:
        buffer = io.BytesIO(f.read())
    x = torch.randn(16, 64)
    with aoti_cy.patch_torch(), Built() as built:
        for _ in range(2):
            loaded = torch._inductor.package.load_package(buffer)
            assert_same_tree(loaded(x), make_model(MLP)(x).detach())
    assert built.count == 2


def test_package_without_weights_then_user_managed_weights():
    # torch's test_package_without_weight and test_package_user_managed_weight.
    configs = {"always_keep_tensor_constants": True,
               "aot_inductor.package_constants_in_so": False}
    path = compile_package(Linear, (torch.randn(8, 64),), inductor_configs=configs)
    model = make_model(Linear)
    x = torch.randn(8, 64)
    with aoti_cy.patch_torch(), Built() as built:
        copied = torch._inductor.package.load_package(path)
        in_place = torch._inductor.package.load_package(path)
    assert built.count == 2
    assert set(copied.get_constant_fqns()) == set(model.state_dict())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    copied.load_constants(state, check_full_update=True, user_managed=False)
    in_place.load_constants(state, check_full_update=True, user_managed=True)
    with torch.no_grad():
        want = model(x)
    for compiled in (copied, in_place):
        assert_same_tree(compiled(x), want)
    state["linear.weight"].mul_(3.7)     # a copy does not see it; user-managed does
    model.load_state_dict(state)
    with torch.no_grad():
        assert_same_tree(in_place(x), model(x))
    assert_same_tree(copied(x), want)
    theirs = torchs_own_model(path)
    theirs.load_constants(state, check_full_update=True)
    assert_same_tree(in_place(x), theirs(x))


def torchs_own_model(path):
    """torch's own model over torch's own loader (not through any patch)."""
    return pt2_package.AOTICompiledModel(TORCH_PACKAGE_LOADER(path, "model", False, 1, -1))


def _first_line(error):
    return str(error).splitlines()[0]


def _error(call):
    with pytest.raises(RuntimeError) as caught:
        call()
    return caught.value


def test_every_load_error_leads_with_torchs_message(tmp_path):
    path = compile_package(MLP, [torch.randn(16, 64)])
    not_zip = tmp_path / "garbage.pt2"
    not_zip.write_bytes(b"not a zip archive" * 8)
    so_path = folded_so()
    cases = {
        "missing package": lambda L, R: L("/no/such/model.pt2", "model", False, 1, -1),
        "missing package metadata": lambda L, R: L.load_metadata_from_package(
            "/no/such/model.pt2", "model"),
        "not a zip": lambda L, R: L(str(not_zip), "model", False, 1, -1),
        "not a zip metadata": lambda L, R: L.load_metadata_from_package(str(not_zip), "model"),
        "wrong model name": lambda L, R: L(path, "forward", False, 1, -1),
        "cpu device index": lambda L, R: L(path, "model", False, 1, 1),
        "num_runners 0": lambda L, R: L(path, "model", False, 0, -1),
        "single-threaded with runners": lambda L, R: L(path, "model", True, 2, -1),
        "missing library": lambda L, R: R("/no/such/model.so", 1),
        "runner without models": lambda L, R: R(so_path, 0),
        "not a library": lambda L, R: R(str(not_zip), 1),
        "a library, not a model": lambda L, R: R(aoti_cy.interface.__file__, 1),
        "wrong input count": lambda L, R: R(so_path, 1).run([torch.randn(4, 4)] * 2),
    }
    for situation, call in cases.items():
        theirs = _error(lambda: call(TORCH_PACKAGE_LOADER, TORCH_CPU_RUNNER))
        with aoti_cy.patch_torch():
            ours = _error(lambda: call(torch._C._aoti.AOTIModelPackageLoader,
                                       torch._C._aoti.AOTIModelContainerRunnerCpu))
        torch_text = _first_line(theirs)
        assert str(ours).startswith(torch_text), (situation, str(ours), torch_text)
        assert len(str(ours)) > len(torch_text), situation   # aoti_cy's detail follows


def test_runner_refuses_bad_arguments():
    so_path = folded_so()
    for bad in (True, "1", 1.0, None):
        with pytest.raises(TypeError, match="num_models must be an int"):
            torch_compat.AOTIModelContainerRunnerCpu(so_path, bad)
    with pytest.raises(RuntimeError, match="runs CUDA models, got device 'cpu'"):
        torch_compat.AOTIModelContainerRunnerCuda(so_path, 1, "cpu")
    runner = torch_compat.AOTIModelContainerRunnerCpu(so_path, 1)
    with pytest.raises(TypeError, match="stream_handle"):
        runner.run([torch.randn(4, 4)], stream_handle="default")
    assert_same_tree(runner.run([torch.ones(4, 4)]),
                     TORCH_CPU_RUNNER(so_path, 1).run([torch.ones(4, 4)]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a process without CUDA")
def test_a_cuda_package_without_cuda_is_torchs_error(tmp_path):
    # A package whose metadata says cuda, as a GPU machine would write it.
    source = compile_package(MLP, [torch.randn(16, 64)])
    path = tmp_path / "cuda.pt2"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("wrapper_metadata.json"):
                data = json.dumps({**json.loads(data), "AOTI_DEVICE_KEY": "cuda"}).encode()
            dst.writestr(info, data)
    message = "Cannot load AOTInductor package for device 'cuda' because CUDA is not available"
    with aoti_cy.patch_torch(), Built() as built:
        with pytest.raises(RuntimeError, match=message):
            torch._inductor.aoti_load_package(path)
        with pytest.raises(RuntimeError, match=message):
            pt2_package.load_pt2(path)
    assert built.count == 0
    with pytest.raises(RuntimeError, match=message):
        torch_compat.AOTIModelContainerRunnerCuda(folded_so(), 1, "cuda")


# ---- names imported before the patch ------------------------------------------------------


def test_functions_imported_before_the_patch_reach_aoti_cy():
    path = compile_package(MLP, [torch.randn(16, 64)])
    so_path = folded_so()
    x = torch.randn(16, 64)
    with aoti_cy.patch_torch(), Built() as built:
        models = [pre_imported_aoti_load_package(path),
                  pre_imported_load_package(path, "model")]
        optimized = pre_imported_aot_load(so_path, "cpu")
    # torch's functions look the patched names up when called.
    assert built.count == 3
    for model in models:
        assert isinstance(model.loader, torch_compat.AOTIModelPackageLoader)
        assert_same_tree(model(x), make_model(MLP)(x).detach())
    # torch's own aot_load closure, over the runner class it looked up: aoti_cy's.
    assert optimized.__module__ == "torch._export"
    y = torch.randn(4, 4)
    assert_same_tree(optimized(y), eager_folded()(y))
    # A class imported before the patch is torch's class itself: not patched.
    with aoti_cy.patch_torch(), Built() as built:
        loader = PreImportedLoaderClass(path, "model", False, 1, -1)
    assert built.count == 0 and type(loader) is TORCH_PACKAGE_LOADER


# ---- input checks --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unbacked_package():
    # As torch's test exports it: only ``c`` dynamic (mark_dynamic(c, 0)).
    a, b, c = torch.ones(6), torch.ones(4), torch.ones(6, 4)
    return compile_package(UnbackedEquals, (a, b, c), dynamic_shapes=(None, None, {0: Dim.AUTO}))


def test_check_inputs_false_runs_what_torch_runs_unchecked(unbacked_package):
    # torch's test_unbacked_equals_input_size_runtime_assertion pattern: inputs
    # whose static sizes differ from the exported ones reach the model's own
    # runtime assertions on torch, which the test expects; aoti_cy's input
    # checks refuse them first unless check_inputs=False.
    theirs = TORCH_PACKAGE_LOADER(unbacked_package, "model", False, 1, -1)
    a, b, c = torch.ones(6), torch.ones(4), torch.ones(6, 4)
    longer_a, other_b = torch.ones(8), torch.ones(3)
    fewer_nonzero = torch.tensor([1.0, 1, 1, 1, 1, 0])
    # Before torch 2.13 the model's message reaches stderr only.
    newer = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 13)
    too_many = r"Expected u\d+ <= 6 but received 8" if newer else None
    unequal = r"Expected Eq\(u\d+, s\d+\)" if newer else None
    with pytest.raises(RuntimeError, match=too_many):
        theirs.run([longer_a, b, c])
    with pytest.raises(RuntimeError, match=unequal):
        theirs.run([fewer_nonzero, b, c])
    runs_unchecked, = theirs.run([a, other_b, c])   # b's size was only read at export
    with aoti_cy.patch_torch(check_inputs=False) as patch, Built() as built:
        assert patch.check_inputs is False
        model = torch._inductor.aoti_load_package(unbacked_package)
        assert model.loader.container.check_inputs is False
        with pytest.raises(RuntimeError, match=too_many):
            model(longer_a, b, c)
        with pytest.raises(RuntimeError, match=unequal):
            model(fewer_nonzero, b, c)
        assert_same_tree(model(a, other_b, c), runs_unchecked)
        assert_same_tree(model(a, b, c), UnbackedEquals()(a, b, c))
    assert built.count == 1
    # Checked (the default), aoti_cy names the input that does not fit.
    with aoti_cy.patch_torch():
        model = torch._inductor.aoti_load_package(unbacked_package)
        with pytest.raises(RuntimeError, match=r"input 0 .* does not fit the model"):
            model(longer_a, b, c)
        with pytest.raises(RuntimeError, match=r"input 1 .* does not fit the model"):
            model(a, other_b, c)
        with pytest.raises(RuntimeError, match=unequal):   # the model's own, still
            model(fewer_nonzero, b, c)


def test_check_inputs_for_every_entry_point(unbacked_package, monkeypatch):
    so_path = folded_so()
    entry_points = {
        "aoti_load_package": lambda **kw: aoti_cy.aoti_load_package(unbacked_package, **kw),
        "load_package": lambda **kw: aoti_cy.load_package(unbacked_package, **kw),
        "package loader": lambda **kw: torch_compat.AOTIModelPackageLoader(
            unbacked_package, **kw),
        "cpu runner": lambda **kw: torch_compat.AOTIModelContainerRunnerCpu(so_path, 1, **kw),
        "aot_load": lambda **kw: torch_compat.aot_load(so_path, "cpu", **kw).runner,
    }

    def checks(made):
        return (made.loader if hasattr(made, "loader") else made).container.check_inputs

    monkeypatch.delenv(torch_compat.CHECK_INPUTS_ENV, raising=False)
    for name, make in entry_points.items():
        assert checks(make()) is True, name
        assert checks(make(check_inputs=False)) is False, name
    monkeypatch.setenv(torch_compat.CHECK_INPUTS_ENV, "0")
    for name, make in entry_points.items():
        assert checks(make()) is False, name
        assert checks(make(check_inputs=True)) is True, name   # the argument wins
    with aoti_cy.patch_torch():
        assert torch._inductor.aoti_load_package(unbacked_package).loader.container \
            .check_inputs is False
    with aoti_cy.patch_torch(check_inputs=True):
        assert torch._C._aoti.AOTIModelContainerRunnerCpu(so_path, 1).container.check_inputs
    monkeypatch.setenv(torch_compat.CHECK_INPUTS_ENV, "sometimes")
    with pytest.raises(ValueError, match="AOTI_CY_CHECK_INPUTS='sometimes'"):
        aoti_cy.aoti_load_package(unbacked_package)
    with pytest.raises(TypeError, match="check_inputs"):
        aoti_cy.patch_torch(check_inputs="no")


# ---- the patch itself ----------------------------------------------------------------------


def _resolve(dotted):
    import importlib
    module, _, attribute = dotted.rpartition(".")
    return importlib.import_module(module), attribute


def test_patch_reports_and_undoes_every_name_exactly():
    assert torch_compat.patched_names() == ()
    outer = aoti_cy.patch_torch()
    try:
        names = outer.patched
        assert torch_compat.patched_names() == names
        for expected in ("torch._inductor.aoti_load_package",
                         "torch._inductor.package.load_package",
                         "torch.export.pt2_archive._package._load_aoti",
                         "torch._export.aot_load", "torch._C._aoti.AOTIModelPackageLoader",
                         "torch._C._aoti.AOTIModelContainerRunnerCpu"):
            assert expected in names
        # The CUDA runner where torch has one (a CUDA build); nothing is added.
        cuda_runner = "torch._C._aoti.AOTIModelContainerRunnerCuda"
        assert (cuda_runner in names) == hasattr(torch._C._aoti, "AOTIModelContainerRunnerCuda")
        assert (cuda_runner in outer.absent) == (cuda_runner not in names)
    finally:
        outer.undo()
    originals = {}
    for name in names:
        module, attribute = _resolve(name)
        originals[name] = module.__dict__[attribute]
    with aoti_cy.patch_torch(check_inputs=False) as first:
        with aoti_cy.patch_torch() as second:
            assert torch_compat.patched_names() == second.patched
            for name in names:
                module, attribute = _resolve(name)
                assert module.__dict__[attribute] is not originals[name], name
        assert first.active and not second.active
    assert torch_compat.patched_names() == ()
    for name in names:
        module, attribute = _resolve(name)
        assert module.__dict__[attribute] is originals[name], name
    # An exception leaving the block undoes the patch too.
    with pytest.raises(KeyError):
        with aoti_cy.patch_torch():
            raise KeyError("leaving")
    assert torch_compat.patched_names() == ()
    for name in names:
        module, attribute = _resolve(name)
        assert module.__dict__[attribute] is originals[name], name
    # torch's loader is torch's again.
    path = compile_package(MLP, [torch.randn(16, 64)])
    with Built() as built:
        model = torch._inductor.aoti_load_package(path)
    assert built.count == 0 and type(model.loader) is TORCH_PACKAGE_LOADER
