"""python -m aoti_cy on real packages: inspect, bench, demo, exit codes."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "aoti_cy", *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **(env or {})))


def test_inspect_json_matches_the_container(package):
    path = package("mlp")
    done = cli("inspect", path, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    reference = torch._inductor.aoti_load_package(path)
    assert report["models"] == ["model"]
    assert report["device"] == "cpu"
    assert report["metadata"]["AOTI_DEVICE_KEY"] == "cpu"
    assert len(report["inputs"]) == 1 and len(report["outputs"]) == 1
    assert sorted(c["fqn"] for c in report["constants"]) == sorted(reference.get_constant_fqns())
    assert {c["fqn"]: c["bytes"] for c in report["constants"]}["fc1.weight"] == 64 * 64 * 4
    from aoti_cy._library import OPTIONAL_SYMBOLS
    assert list(report["exports"]) == list(OPTIONAL_SYMBOLS)
    assert all(isinstance(v, bool) for v in report["exports"].values())
    assert report["exports"]["AOTInductorModelContainerRunSingleThreaded"] is True
    assert "TreeSpec" in report["in_spec"]


def test_inspect_text(package):
    done = cli("inspect", package("multi_io"))
    assert done.returncode == 0, done.stderr
    assert "inputs    3:" in done.stdout
    assert "outputs   3:" in done.stdout
    assert "optional ABI entry points" in done.stdout
    assert "AOTInductorModelContainerRunSingleThreaded" in done.stdout


def test_bench_compare_torch_json(package):
    path = package("add_one")
    done = cli("bench", path, "--iters", 200, "--warmup", 5, "--compare-torch", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for runner in ("aoti_cy run", "torch loader.run"):
        r = report["results"][runner]
        assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"]
        assert r["calls_per_s"] > 0
    assert report["torch_over_aoti_cy"]["p50"] > 0


def test_bench_threads_text(package):
    done = cli("bench", package("add_one"), "--iters", 100, "--threads", 2,
               "--num-models", 2)
    assert done.returncode == 0, done.stderr
    assert "aoti_cy run" in done.stdout and "p50 us" in done.stdout


def test_demo():
    done = cli("demo", "--calls", 10)
    assert done.returncode == 0, done.stderr
    assert "OK: aoti_cy output matches eager PyTorch" in done.stdout


def test_failed_load_prints_the_error_without_traceback(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    done = cli("inspect", junk)
    assert done.returncode == 1
    assert "error:" in done.stderr and "not a zip" in done.stderr
    assert "Traceback" not in done.stderr
    done = cli("--debug", "inspect", junk)
    assert done.returncode == 1
    assert "Traceback" in done.stderr


@pytest.mark.parametrize("args", [(), ("inspect",), ("frobnicate",),
                                  ("bench", "x.pt2", "--iters", "many")])
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
