"""The GIL is released while the model runs; close() waits for runs in
flight. That num_models=2 runs two at once is shown without timing in
test_proxy_executor.py (two runs meet inside a model's op); how much faster
that is, is benchmarks/bench_threads.py's job (figures in docs/performance.md)."""

import threading
import time

import pytest
import torch

import aoti_cy


def test_python_thread_runs_while_model_computes(package, example):
    inputs = example("heavy").inputs()
    with aoti_cy.load(package("heavy")) as model:
        model.run(inputs)  # warm up
        ticks = 0
        stop = threading.Event()

        def count():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1

        counter = threading.Thread(target=count)
        counter.start()
        time.sleep(0.01)
        before = ticks
        start = time.perf_counter()
        model.run(inputs)
        elapsed = time.perf_counter() - start
        during = ticks - before
        stop.set()
        counter.join()
    # A held GIL would allow only a few switch-interval slices (5 ms each).
    assert during > 1000, (during, elapsed)


def test_close_waits_for_runs_in_flight(monkeypatch):
    import proxy_models
    from conftest import RunGate
    gate = RunGate()
    monkeypatch.setattr(proxy_models, "BARRIER", gate)
    model = aoti_cy.load(proxy_models.EXAMPLES["rendezvous"].package())
    x = torch.ones(5, 7)
    results = []
    runner = threading.Thread(target=lambda: results.append(model.run([x])))
    closer = threading.Thread(target=model.close)
    runner.start()
    assert gate.entered.wait(60), "the run never reached the model"
    closer.start()
    closer.join(timeout=0.5)
    # A close() that did not wait would have freed the container under the run.
    assert closer.is_alive(), "close() returned while a run was in flight"
    assert model.closed   # ...but later calls are already refused
    with pytest.raises(RuntimeError, match="closed"):
        model.run([x])
    gate.release.set()
    for t in (runner, closer):
        t.join(timeout=60)
    assert not runner.is_alive() and not closer.is_alive()
    torch.testing.assert_close(results[0][0], (x + 1) * 2 - 1)
