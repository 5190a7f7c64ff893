"""Lifetime, threads, fork and leaks under load: no crash, no deadlock (every
wait has a time limit), nothing left behind."""

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest
import torch

import aoti_cy
from conftest import RunGate, aoti_tempdirs, extract_library, package_folder

JOIN_TIMEOUT = 120   # seconds; a thread still alive after this is a deadlock


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Under AddressSanitizer (scripts/sanitize.sh) freed memory waits in ASan's
# quarantine (256 MB) instead of being reused, so RSS grows whether or not
# anything leaks: there the loops still run, instrumented, and fds and
# tempdirs are still counted, but RSS is not compared.
with open("/proc/self/maps") as _maps:
    UNDER_ASAN = "libasan" in _maps.read()


def _assert_rss_grew_less_than(before, limit):
    if not UNDER_ASAN:
        assert _rss_bytes() - before < limit


def _open_fds():
    """Open descriptors of files and folders: what a model, a package or its
    extracted files could leak. Sockets, pipes and event fds are left out:
    background threads of other libraries in the process (Ray's, after the
    serving tests) open and close those at any time."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue   # closed meanwhile (the listing's own fd among them)
        count += target.startswith("/")
    return count


def _join_all(threads):
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock?"


def test_close_while_four_threads_run(package, example):
    inputs = example("matmul").inputs()
    expected = example("matmul").eager()(*inputs)
    model = aoti_cy.load(package("matmul"), num_models=2)
    outputs, errors, started = [], [], threading.Barrier(5)

    def worker():
        started.wait()
        try:
            while True:
                outputs.append(model.run(inputs)[0])
        except RuntimeError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.1)
    model.close()
    _join_all(threads)
    assert len(errors) == 4 and all("closed" in str(e) for e in errors), errors
    assert outputs, "no run finished before close()"
    for out in outputs:
        torch.testing.assert_close(out, expected)


def test_last_reference_dropped_while_a_run_is_in_flight(monkeypatch):
    import proxy_models
    gate = RunGate()
    monkeypatch.setattr(proxy_models, "BARRIER", gate)
    path = proxy_models.EXAMPLES["rendezvous"].package()
    before = aoti_tempdirs()
    model = aoti_cy.load(path)
    alive = weakref.ref(model)
    x = torch.ones(5, 7)
    results = []
    thread = threading.Thread(target=lambda run=model.run: results.append(run([x])))
    thread.start()
    assert gate.entered.wait(JOIN_TIMEOUT), "the run never reached the model"
    del model            # the worker's bound method now holds the only reference
    gc.collect()
    assert alive() is not None, "the container went while its run was in flight"
    gate.release.set()
    _join_all([thread])
    torch.testing.assert_close(results[0][0], (x + 1) * 2 - 1)
    del thread
    gc.collect()
    assert alive() is None
    assert aoti_tempdirs() == before


def test_many_containers_from_one_library(package, example, tmp_path):
    library = extract_library(package("add_one"), tmp_path)
    x = example("add_one").inputs()[0]

    def cycle(n):
        for _ in range(n):
            with aoti_cy.ModelContainer(library) as model:
                torch.testing.assert_close(model.run([x])[0], x + 1)
            model = aoti_cy.ModelContainer(library)    # dropped without close()
            model.run([x])
            del model

    cycle(50)
    gc.collect()
    fds, rss = _open_fds(), _rss_bytes()
    cycle(500)
    gc.collect()
    assert _open_fds() == fds
    _assert_rss_grew_less_than(rss, 8 << 20)


def test_many_loads_of_one_package_leave_nothing_behind(package, example):
    before_fds, folders = _open_fds(), set()
    x = example("add_one").inputs()[0]
    for i in range(100):
        model = aoti_cy.load(package("add_one"))
        folders.add(package_folder(model.library_path))
        torch.testing.assert_close(model.run([x])[0], x + 1)
        if i % 2:
            model.close()
        del model
    gc.collect()
    assert len(folders) == 100 and not [f for f in folders if os.path.exists(f)]
    assert _open_fds() == before_fds


def test_concurrent_loads_of_different_packages(package, example):
    names = ["add_one", "multi_io", "mlp", "four_three", "same_twice", "folding"]
    paths = {name: package(name) for name in names}   # compiled before the race
    # Eager results first: building the eager models seeds the global RNG.
    cases = {}
    for name in names:
        inputs = example(name).inputs()
        expected = example(name).eager()(*inputs)
        cases[name] = inputs, expected if isinstance(expected, tuple) else (expected,)
    errors, checked, folders = [], [], []
    barrier = threading.Barrier(len(names) * 2)

    def worker(name):
        inputs, expected = cases[name]
        try:
            barrier.wait()
            for _ in range(5):
                with aoti_cy.load(paths[name]) as model:
                    folders.append(package_folder(model.library_path))
                    for got, want in zip(model.run(inputs), expected, strict=True):
                        torch.testing.assert_close(got, want)
            checked.append(name)
        except BaseException as e:   # reported below, with the model's name
            errors.append((name, e))

    # Two threads per package: the same file loaded concurrently too.
    threads = [threading.Thread(target=worker, args=(n,)) for n in names * 2]
    for t in threads:
        t.start()
    _join_all(threads)
    assert not errors, errors
    assert sorted(checked) == sorted(names * 2)
    gc.collect()
    assert len(set(folders)) == len(names) * 2 * 5
    assert not [f for f in folders if os.path.exists(f)]


FORK_SCRIPT = """
import os, sys, torch, aoti_cy
model = aoti_cy.load({path!r})
package_dir = os.path.dirname(model.library_path)
x = torch.randn(8)
torch.testing.assert_close(model.run([x])[0], x + 1)
pid = os.fork()
if pid == 0:
    if {child_runs}:
        torch.testing.assert_close(model.run([x])[0], x + 1)
    sys.exit(0)         # a normal exit: finalizers and atexit run in the child
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert os.path.isdir(package_dir), "the child removed the parent's package files"
torch.testing.assert_close(model.run([x])[0], x + 1)
print("ok")
"""


@pytest.mark.parametrize("child_runs", [False, True])
def test_fork_after_load(package, child_runs):
    script = FORK_SCRIPT.format(path=package("add_one"), child_runs=child_runs)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=JOIN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---- leaks ------------------------------------------------------------------


def test_no_leak_over_1e5_runs(package, example):
    inputs = example("add_one").inputs()
    with aoti_cy.load(package("add_one")) as model:
        run = model.run
        for _ in range(10_000):
            run(inputs)
        gc.collect()
        rss, fds = _rss_bytes(), _open_fds()
        for _ in range(100_000):
            run(inputs)
        gc.collect()
        _assert_rss_grew_less_than(rss, 4 << 20)
        assert _open_fds() == fds


FAILING_CALLS = {
    "wrong shape": lambda x: [x[0][:2], x[1], x[2]],
    "wrong rank": lambda x: [x[0].unsqueeze(0), x[1], x[2]],
    "wrong dtype": lambda x: [x[0].double(), x[1], x[2]],
    "wrong count": lambda x: x[:2],
    "not a tensor": lambda x: [x[0], None, x[2]],
}


def test_no_leak_over_1e4_failing_runs(package, example):
    good = example("multi_io").inputs()
    calls = [make(good) for make in FAILING_CALLS.values()]
    with aoti_cy.load(package("multi_io")) as model:
        def fail(n):
            for i in range(n):
                with pytest.raises((ValueError, TypeError)):
                    model.run(calls[i % len(calls)])
        fail(2_000)
        gc.collect()
        rss, fds, dirs = _rss_bytes(), _open_fds(), aoti_tempdirs()
        fail(10_000)
        gc.collect()
        _assert_rss_grew_less_than(rss, 4 << 20)
        assert _open_fds() == fds and aoti_tempdirs() == dirs
        assert len(model.run(good)) == 3
