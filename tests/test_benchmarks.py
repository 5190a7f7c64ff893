"""The benchmark scripts run (on tiny counts; timings are never asserted)."""

import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args, tmp_path=None):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name),
                           *map(str, args)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_bench_run_measures_every_variant(tmp_path, package):
    package("four_three")
    out = tmp_path / "run.json"
    text = script("bench_run.py", "--models", "four_three", "--calls", 20,
                  "--repeats", 1, "--json", out)
    report = json.loads(out.read_text())
    row = report["results"]["four_three"]
    assert (row["inputs"], row["outputs"]) == (4, 3)
    assert set(row["us_per_call"]) == {
        "C floor", "aoti_cy nogil loop", "aoti_cy run", "aoti_cy model(*args)",
        "aoti_cy run, check_inputs=False",
        "torch loader.run", "torch AOTICompiledModel()", "eager (no_grad)"}
    assert all(v > 0 for v in row["us_per_call"].values())
    assert "Targets (overhead over the C floor)" in text


def test_bench_memory_reports(tmp_path):
    report = json.loads(script("bench_memory.py", "--calls", 1000, "--width", 64,
                               "--loads", 2, "--failing-calls", 100))
    assert report["rss_over_calls"]["calls"] == 1000
    assert report["rss_over_failing_calls"]["calls"] == 100
    assert report["load_footprint"]["weights_bytes"] > 64 * 64 * 4
    assert report["load_time"]["aoti_cy_median_ms"] > 0


def test_bench_threads_reports(package):
    package("heavy")   # compiled into the shared cache before the subprocess
    report = json.loads(script("bench_threads.py", "--model", "heavy", "--iters", 4,
                               "--repeats", 1).strip().splitlines()[-1])
    for key in ("aoti_cy_num_models_1", "aoti_cy_num_models_2"):
        assert report[key]["speedup"] > 0, report


def test_bench_input_checks_reports(tmp_path, package):
    package("add_one")
    out = tmp_path / "checks.json"
    script("bench_input_checks.py", "--models", "add_one,tied_pair", "--calls", 20,
           "--repeats", 1, "--json", out)
    report = json.loads(out.read_text())
    for name in ("add_one", "tied_pair"):
        row = report["results"][name]
        assert row["checked_us"] > 0 and row["unchecked_us"] > 0
    assert report["meta"]["torch"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_memory_reports_the_copy_graphs_device_memory():
    report = json.loads(script("bench_memory.py", "--cuda-graph-execs", 2))
    found = report["cuda_graph_exec_memory"]
    assert found["containers"] == 2
    assert found["bytes_per_container_copies_around"] > 0
