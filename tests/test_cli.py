"""python -m aoti_cy on real packages: inspect, bench, demo, exit codes.

inspect's claims (names, dtypes, shapes, dynamic ranges, weights, what a
package needs) are checked against eager PyTorch and torch's own loader on
the same package; bench's against its own structure and wording (no timed
assertions), including a package torch's loader segfaults on.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch
import torch.utils._pytree as pytree
from torch.export import Dim

from aoti_cy.cli.bench import compare_line
from aoti_cy.testing import Nested, compile_package, nested_call_args
from conftest import WEIGHTS_OUTSIDE_SO

TESTS = os.path.dirname(os.path.abspath(__file__))


def cli(*args, env=None):
    # The tests folder on the path so that --import proxy_models works.
    path = os.pathsep.join([TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "aoti_cy", *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=path, **(env or {})))


def inspect_json(path, *extra):
    done = cli("inspect", path, "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def concrete(shape, values):
    """A reported shape with its size symbols replaced by ``values``."""
    return [d if isinstance(d, int) else values[d["symbol"]] for d in shape]


# ---- inspect: toy models ---------------------------------------------------------


def test_inspect_json_matches_the_container(package, example):
    path = package("mlp")
    report = inspect_json(path)
    assert report["models_in_package"] == ["model"]
    model, = report["models"]
    assert model["runs_as_is"] is True and model["needs"] == []
    assert model["device"] == "cpu" and model["metadata"]["AOTI_DEVICE_KEY"] == "cpu"
    x, = example("mlp").inputs()
    assert model["inputs"] == [{"index": 0, "name": "args[0]", "dtype": "float32",
                                "shape": list(x.shape), "device": "cpu"}]
    want = example("mlp").eager()(x)
    out, = model["outputs"]
    assert (out["name"], out["dtype"], out["shape"]) == ("output", "float32", list(want.shape))
    weights = model["weights"]
    assert weights["stored"] == "in the .so" and weights["missing"] == []
    reference = torch._inductor.aoti_load_package(path)
    assert sorted(c["fqn"] for c in weights["constants"]) == sorted(reference.get_constant_fqns())
    assert {c["fqn"]: c["bytes"] for c in weights["constants"]}["fc1.weight"] == 64 * 64 * 4
    from aoti_cy._library import OPTIONAL_SYMBOLS
    assert list(model["exports"]) == list(OPTIONAL_SYMBOLS)


def test_inspect_names_no_temporary_folder(package):
    path = package("mlp")
    done = cli("inspect", path)
    assert done.returncode == 0, done.stderr
    shown = done.stdout.replace(str(path), "<the package>")   # the user's own path
    assert "aoti_cy-" not in shown and tempfile.gettempdir() not in shown
    assert "/tmp" not in shown
    files = inspect_json(path)["models"][0]["files"]
    assert files and all(f["path"].startswith("data/aotinductor/model/") for f in files)
    assert {"model library", "C++ source (wrapper)"} <= {f["role"] for f in files}


def test_inspect_text(package):
    done = cli("inspect", package("multi_io"), "--constants")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "runs as is: yes" in lines
    for name in ("args[0]", "args[1]", "args[2]"):
        assert any(line.split()[:3] == [name, "float32", "[4,"] for line in lines), name
    # the third output is (a - c).sum(dim=-1)
    assert any(line.split()[:3] == ["[2]", "float32", "[4]"] for line in lines)
    assert any(line.startswith("optional ABI entry points:") for line in lines)


class SharedBatch(torch.nn.Module):
    """Two inputs sharing a dynamic batch, one with a dynamic length too."""

    def forward(self, tokens, scale):
        return tokens * scale[:, :1], tokens.sum(dim=1)


def dynamic_package():
    batch, length = Dim("batch", min=1, max=16), Dim("length", min=3, max=40)
    args = (torch.randn(4, 9), torch.randn(4, 2))
    return compile_package(SharedBatch, args, dynamic_shapes=({0: batch, 1: length},
                                                               {0: batch}))


def test_inspect_dynamic_shapes_show_their_ranges():
    path = dynamic_package()
    model, = inspect_json(path)["models"]
    tokens, scale = model["inputs"]
    batch, length = tokens["shape"]
    assert batch["symbol"] and length["symbol"] and batch["symbol"] != length["symbol"]
    assert (batch["min"], batch["max"]) == (1, 16)      # Dim(min=1) is runnable at 1
    assert (length["min"], length["max"]) == (3, 40)
    assert scale["shape"] == [batch, 2]                 # the same symbol: a shared dim
    # the output shapes, at sizes the trial runs did not use, as eager gives them
    values = {batch["symbol"]: 5, length["symbol"]: 11}
    args = (torch.randn(5, 11), torch.randn(5, 2))
    want = SharedBatch()(*args)
    assert [concrete(o["shape"], values) for o in model["outputs"]] == [
        list(t.shape) for t in want]
    theirs = torch._inductor.aoti_load_package(path)(*args)
    assert [list(t.shape) for t in theirs] == [list(t.shape) for t in want]
    text = cli("inspect", path).stdout
    assert f"{batch['symbol']} in 1..16" in text and f"{length['symbol']} in 3..40" in text


def test_inspect_pytree_kwargs_and_dict_outputs():
    args, kwargs = nested_call_args()
    path = compile_package(Nested, args, kwargs=kwargs)
    model, = inspect_json(path)["models"]
    flat, _ = pytree.tree_flatten_with_path((args, kwargs))
    assert [i["name"] for i in model["inputs"]] == [
        "args[0][0]", "args[0][1][0]", "args[0][1][1]", "args[1]['x']", "args[1]['y']",
        "scale"]
    assert [i["shape"] for i in model["inputs"]] == [list(t.shape) for _, t in flat]
    want = Nested()(*args, **kwargs)
    leaves = pytree.tree_leaves(want)
    assert [o["name"] for o in model["outputs"]] == [
        "sum", "parts[0]", "parts[1][0]", "parts[1][1]"]
    assert [o["shape"] for o in model["outputs"]] == [list(t.shape) for t in leaves]
    assert model["output_tree"]["type"] == "dict"
    text = cli("inspect", path).stdout
    assert "├─ [0]" in text and "└─ [1]" in text and "scale" in text


def test_inspect_weightless_package_says_weights_are_missing(package):
    path = package("mlp", **{"aot_inductor.package_constants_in_so": False})
    model, = inspect_json(path)["models"]
    assert model["runs_as_is"] is False
    fqns = set(torch._inductor.aoti_load_package(path).get_constant_fqns())
    assert set(model["weights"]["missing"]) == fqns
    assert model["weights"]["stored"].startswith("nowhere")
    assert any(need.startswith(f"weights: {len(fqns)} constants have no value")
               for need in model["needs"])
    done = cli("inspect", path)
    assert "runs as is: no, it needs" in done.stdout


def test_inspect_pickled_weights_lists_their_files(package):
    path = package("mlp", **WEIGHTS_OUTSIDE_SO["pickle_weights"])
    model, = inspect_json(path)["models"]
    assert model["runs_as_is"] is True and model["weights"]["missing"] == []
    assert model["weights"]["stored"] == "in pickled files (pickle_weights)"
    assert model["weights"]["files"] and all(
        f.startswith("data/weights/") for f in model["weights"]["files"])


def test_inspect_proxy_executor_package_names_its_ops(example):
    import proxy_models
    path = proxy_models.EXAMPLES["custom_ops"].package()
    # a fresh process without the ops: reported, not raised
    model, = inspect_json(path)["models"]
    assert model["runs_as_is"] is False
    ops = {op["op"]: op for op in model["fallback_ops"]}
    assert set(ops) == {"aoti_cy_test::mix", "aoti_cy_test::pick", "aoti_cy_test::accumulate_"}
    assert not any(op["registered"] for op in ops.values())
    assert any("aoti_cy_test::mix" in need and "--import" in need for need in model["needs"])
    # with the module imported it runs, and its outputs are eager's shapes
    model, = inspect_json(path, "--import", "proxy_models")["models"]
    assert model["runs_as_is"] is True
    assert all(op["registered"] and op["custom_op"] for op in model["fallback_ops"])
    inputs = proxy_models.EXAMPLES["custom_ops"].inputs()
    want = proxy_models.EXAMPLES["custom_ops"].eager()(*inputs)
    assert [(o["dtype"], o["shape"]) for o in model["outputs"]] == [
        (str(t.dtype).replace("torch.", ""), list(t.shape)) for t in want]


def test_inspect_failed_load_prints_the_error_without_traceback(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    done = cli("inspect", junk)
    assert done.returncode == 1
    assert "error:" in done.stderr and "not a zip" in done.stderr
    assert "Traceback" not in done.stderr
    done = cli("--debug", "inspect", junk)
    assert done.returncode == 1
    assert "Traceback" in done.stderr


# ---- inspect: transformers -------------------------------------------------------


def test_inspect_llama_shows_dynamic_batch_and_sequence():
    from real_models import REAL_MODELS, UPDATABLE, DYNAMIC_SEQ
    real = REAL_MODELS["llama"]
    path = real.package(**UPDATABLE)
    model, = inspect_json(path)["models"]
    ids, = model["inputs"]
    assert (ids["name"], ids["dtype"]) == ("args[0]", "int64")
    batch, seq = ids["shape"]
    assert (batch["min"], batch["max"]) == (1, 8)
    if DYNAMIC_SEQ:
        assert (seq["min"], seq["max"]) == (1, 32)
    logits, = model["outputs"]
    assert logits["name"] == "logits" and model["output_tree"]["type"] == "CausalLMOutputWithPast"
    args, kwargs = real.call(seed=3, batch=3, seq=5 if DYNAMIC_SEQ else 7)
    want = real.output(real.eager()(*args, **kwargs))[0]
    values = {batch["symbol"]: 3}
    if DYNAMIC_SEQ:
        values[seq["symbol"]] = 5
    assert concrete(logits["shape"], values) == list(want.shape)
    assert model["weights"]["count"] == len(torch._inductor.aoti_load_package(path)
                                            .get_constant_fqns())
    text = cli("inspect", path).stdout
    assert "CausalLMOutputWithPast" in text and "logits" in text and "in 1..8" in text


def test_inspect_multi_model_package_shows_every_model():
    from real_models import REAL_MODELS, UPDATABLE
    from aoti_cy.testing import ModelSpec, compile_multi_package
    gpt2, vit = REAL_MODELS["gpt2"], REAL_MODELS["vit"]
    specs = {name: ModelSpec(real.model_cls, *real.call(), init_args=(real.config,))
             for name, real in (("gpt2", gpt2), ("vit", vit))}
    path = compile_multi_package(specs, inductor_configs=UPDATABLE)
    report = inspect_json(path)
    assert report["models_in_package"] == ["gpt2", "vit"]
    by_name = {m["name"]: m for m in report["models"]}
    assert set(by_name) == {"gpt2", "vit"}
    for name, real in (("gpt2", gpt2), ("vit", vit)):
        args, kwargs = real.call()
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        assert [i["shape"] for i in by_name[name]["inputs"]] == [list(t.shape) for t in tensors]
        want = real.output(real.eager()(*args, **kwargs))
        assert [o["shape"] for o in by_name[name]["outputs"]] == [list(t.shape) for t in want]
    # GPT-2 was exported with return_dict=False: a leaf with no tensor, said so
    assert any("return_dict" in note for note in by_name["gpt2"]["notes"])
    only, = inspect_json(path, "--model-name", "vit")["models"]
    assert only["name"] == "vit"
    done = cli("inspect", path, "--model-name", "bert")
    assert done.returncode == 1 and "'gpt2', 'vit'" in done.stderr


# ---- bench ---------------------------------------------------------------------


def test_bench_compare_torch_json(package):
    done = cli("bench", package("add_one"), "--iters", 200, "--repeats", 4, "--warmup", 5,
               "--compare-torch", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["measured_in"].startswith("a child process")
    assert list(report["results"]) == ["aoti_cy run", "aoti_cy model(...)",
                                       "torch loader.run", "torch model(...)"]
    for r in report["results"].values():
        assert r["calls"] == 200 and len(r["block_medians_us"]) == 4
        assert 0 < r["p50_us"] <= r["p99_us"] and r["calls_per_s"] > 0
    pairs = {(c["aoti_cy"], c["torch"]): c for c in report["comparisons"]}
    assert set(pairs) == {("aoti_cy run", "torch loader.run"),
                          ("aoti_cy model(...)", "torch model(...)")}
    for (ours, theirs), c in pairs.items():
        ratio = report["results"][theirs]["p50_us"] / report["results"][ours]["p50_us"]
        assert c["torch_over_aoti_cy"] == pytest.approx(ratio)
        low, high = c["repeats_quartiles"]
        if low <= 1 <= high:
            assert "no clear difference" in c["text"]
        elif ratio > 1:
            assert f"is {ratio:.2f}x faster" in c["text"]
        else:
            assert f"is {1 / ratio:.2f}x slower" in c["text"]


def test_comparison_wording_follows_the_ratio():
    assert "1.25x faster" in compare_line("a", "t", 1.25, 1.1, 1.4)
    slower = compare_line("a", "t", 0.8, 0.7, 0.9)
    assert "1.25x slower" in slower and "faster" not in slower
    assert "no clear difference" in compare_line("a", "t", 1.05, 0.9, 1.2)


def test_bench_survives_torch_crashing(package):
    # torch 2.13's loader segfaults at the first run of a pickle_weights
    # package; aoti_cy reads those weights itself.
    path = package("mlp", **WEIGHTS_OUTSIDE_SO["pickle_weights"])
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, torch; x = torch.load(sys.argv[2]); "
         "torch._inductor.aoti_load_package(sys.argv[1])(*x)", path, path + ".inputs.pt"],
        capture_output=True, timeout=300)
    if probe.returncode >= 0:
        pytest.skip(f"torch's loader no longer crashes on this package (exit {probe.returncode})")
    done = cli("bench", path, "--iters", 40, "--repeats", 2, "--warmup", 2, "--compare-torch")
    assert done.returncode == 0, done.stderr
    assert "torch crashed: the process timing torch's loader died of SIGSEGV" in done.stdout
    assert "measured in this process (aoti_cy alone)" in done.stdout
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:]
            for line in done.stdout.splitlines() if line.startswith("  aoti_cy")}
    assert set(rows) == {"aoti_cy run", "aoti_cy model(...)"}
    assert all(float(cells[0]) > 0 for cells in rows.values())
    assert "faster" not in done.stdout and "slower" not in done.stdout


def test_bench_model_name_and_pytree_inputs(tmp_path):
    from real_models import REAL_MODELS, UPDATABLE
    from aoti_cy.testing import ModelSpec, compile_multi_package
    gpt2, vit = REAL_MODELS["gpt2"], REAL_MODELS["vit"]
    specs = {name: ModelSpec(real.model_cls, *real.call(), init_args=(real.config,))
             for name, real in (("gpt2", gpt2), ("vit", vit))}
    path = compile_multi_package(specs, inductor_configs=UPDATABLE)
    inputs = tmp_path / "gpt2.pt"
    torch.save(gpt2.call(), inputs)      # (args, kwargs) with return_dict=False
    done = cli("bench", path, "--model-name", "gpt2", "--inputs", inputs, "--iters", 20,
               "--repeats", 2, "--warmup", 1, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model_name"] == "gpt2" and report["comparisons"] == []
    assert list(report["results"]) == ["aoti_cy run", "aoti_cy model(...)"]


def test_bench_threads_text(package):
    done = cli("bench", package("add_one"), "--iters", 100, "--repeats", 2,
               "--threads", 2, "--num-models", 2)
    assert done.returncode == 0, done.stderr
    assert "aoti_cy run" in done.stdout and "p50 us" in done.stdout
    assert "2 thread(s), num_models=2" in done.stdout


def test_bench_cuda_graphs_needs_a_cuda_model(package):
    done = cli("bench", package("add_one"), "--iters", 10, "--repeats", 2, "--cuda-graphs")
    assert done.returncode == 2
    assert "--cuda-graphs needs a CUDA model; this one runs on cpu" in done.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_cuda_graphs_column():
    from aoti_cy.testing import EXAMPLES
    done = cli("bench", EXAMPLES["mlp"].package("cuda"), "--iters", 200, "--repeats", 4,
               "--warmup", 5, "--cuda-graphs", "--compare-torch", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["device"] == "cuda:0"
    assert list(report["results"]) == ["aoti_cy run", "aoti_cy model(...)",
                                       "aoti_cy graphs model(...)", "torch loader.run",
                                       "torch model(...)"]
    assert all(r["calls"] == 200 for r in report["results"].values())
    pairs = {(c["aoti_cy"], c["torch"]) for c in report["comparisons"]}
    assert ("aoti_cy graphs model(...)", "torch model(...)") in pairs


def test_demo():
    done = cli("demo", "--calls", 10)
    assert done.returncode == 0, done.stderr
    assert "OK: aoti_cy output matches eager PyTorch" in done.stdout


@pytest.mark.parametrize("args", [(), ("inspect",), ("frobnicate",),
                                  ("bench", "x.pt2", "--iters", "many"),
                                  ("bench", "x.pt2", "--iters", "4", "--repeats", "5")])
def test_usage_errors_exit_2(args):
    done = cli(*args)
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_bench_without_inputs_is_a_usage_error(package, tmp_path):
    copy = tmp_path / "copy.pt2"
    shutil.copy(package("add_one"), copy)
    done = cli("bench", copy)
    assert done.returncode == 2
    assert "--inputs" in done.stderr


# ---- where the command line lives ------------------------------------------------

def test_help_names_every_command_and_the_exit_codes():
    done = cli("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m aoti_cy [-h] [--debug] "
                                  "{inspect,bench,demo} ...")
    assert "Exit codes: 0 success, 1 a failure" in done.stdout


def test_main_is_the_same_command_line_in_process(capsys):
    from aoti_cy.cli import main
    with pytest.raises(SystemExit) as raised:
        main(["bench", "x.pt2", "--iters", "4", "--repeats", "5"])
    assert raised.value.code == 2
    assert "--repeats cannot exceed --iters" in capsys.readouterr().err
    assert main(["inspect", os.path.join(TESTS, "no-such.pt2"), "--no-run"]) == 1
    assert "error: " in capsys.readouterr().err


def test_the_library_never_imports_the_command_line():
    code = ("import sys, aoti_cy, aoti_cy.torch_compat, aoti_cy.cuda_graphs, "
            "aoti_cy.serving, aoti_cy.testing\n"
            "loaded = [m for m in sys.modules if m.startswith('aoti_cy.cli')]\n"
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
