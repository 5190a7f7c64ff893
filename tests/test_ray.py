"""aoti_cy on Ray Serve: a local Ray cluster on this machine (no external
address, HTTP on loopback), real compiled models with 2 replicas each.

Skipped where Ray Serve is not installed (``pip install aoti_cy[ray]``).
Every request loop is bounded in count and time; the cluster is shut down
at the end of the module.
"""

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")

import aoti_cy.ray  # noqa: E402
from aoti_cy.ray import CallTimeoutError, CoordinatorTimeoutError, RolloutError  # noqa: E402
from ray_models import WIDTH, scorer_call, scorer_eager, scorer_package  # noqa: E402
from real_models import REAL_MODELS, UPDATABLE, perturbed_state_dict  # noqa: E402

REPLICA_GONE = (ray.exceptions.RayActorError, serve.exceptions.ReplicaUnavailableError,
                serve.exceptions.DeploymentUnavailableError)
LLAMA = REAL_MODELS["llama"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A fresh local Ray instance (no address: nothing outside this machine
    is contacted), 2 CPUs, a 256 MiB object store; Serve's HTTP on loopback."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             namespace="aoti_cy_tests", object_store_memory=256 << 20)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


class Served:
    """A running deployment, its handle and route, and the eager module
    that holds the weights it should be serving."""

    def __init__(self, served, handle, url, eager, path):
        self.served, self.handle, self.url, self.eager, self.path = (
            served, handle, url, eager, path)

    def expected(self, args, kwargs):
        with torch.no_grad():
            return self.eager(*args, **kwargs)


@pytest.fixture(scope="module")
def scorer(cluster):
    path = scorer_package()
    served = aoti_cy.ray.deployment(
        path, name="scorer", num_replicas=2, max_batch_size=16, max_batch_rows=64,
        batch_wait_timeout_s=0.05, example_inputs=scorer_call(),
        ray_actor_options={"num_cpus": 0.25})
    handle = serve.run(served.app, name="scorer", route_prefix="/scorer")
    yield Served(served, handle, cluster + "/scorer", scorer_eager(), path)
    serve.delete("scorer")
    served.close()


@pytest.fixture(scope="module")
def llama(cluster):
    path = LLAMA.package(**UPDATABLE)
    served = aoti_cy.ray.deployment(
        path, name="llama", num_replicas=2, max_batch_size=8, max_batch_rows=8,
        batch_wait_timeout_s=0.05, example_inputs=LLAMA.call(),
        imports=("transformers.modeling_outputs",),
        ray_actor_options={"num_cpus": 0.25})
    handle = serve.run(served.app, name="llama", route_prefix="/llama")
    yield Served(served, handle, cluster + "/llama", LLAMA.eager(), path)
    serve.delete("llama")
    served.close()


def _close(got, want):
    if isinstance(want, dict):   # dict outputs and ModelOutputs
        assert set(got) == set(want)
        for key in want:
            _close(got[key], want[key])
    else:
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got.copy())   # arrays from Ray are read-only
        torch.testing.assert_close(torch.as_tensor(got), want)


def _results(responses, timeout=60):
    return [r.result(timeout_s=timeout) for r in responses]


def _replicas(served, count=2, timeout=60):
    """The live replicas' stats, once ``count`` of them report (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = served.replica_stats()
        if len(stats) == count:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"expected {count} live replicas, have {served.replica_stats()}")


def _settled(served, count=2, timeout=10):
    """The replicas' stats once their counts stop changing (polls are 0.1 s apart)."""
    before = _replicas(served, count, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = _replicas(served, count, timeout)
        if all(after[r]["requests"] == before.get(r, {}).get("requests") for r in after):
            return after
        before = after
    return before


def _totals(stats):
    batch_sizes = {}
    for s in stats.values():
        for size, runs in s["batch_sizes"].items():
            batch_sizes[size] = batch_sizes.get(size, 0) + runs
    return (sum(s["requests"] for s in stats.values()),
            sum(s["runs"] for s in stats.values()), batch_sizes)


# ---- without a cluster ------------------------------------------------------------------

def test_importing_aoti_cy_does_not_import_ray():
    code = "import sys, aoti_cy; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- on the cluster -----------------------------------------------------------------------

def test_handle_matches_eager_and_torch_loader(scorer, llama):
    torch_scorer = torch._inductor.aoti_load_package(scorer.path)
    for rows, seed in [(1, 1), (3, 2), (5, 3)]:
        args, kwargs = scorer_call(rows=rows, seed=seed)
        got = scorer.handle.remote(*args, **kwargs).result(timeout_s=60)
        _close(got, scorer.expected(args, kwargs))
        _close(got, torch_scorer(*args, **kwargs))
    # numpy in, numpy out
    args, kwargs = scorer_call(rows=2, seed=9)
    got = scorer.handle.remote(args[0].numpy(), bias=kwargs["bias"].numpy()).result(timeout_s=60)
    assert all(isinstance(v, np.ndarray) for v in got.values())
    _close(got, scorer.expected(args, kwargs))

    torch_llama = torch._inductor.aoti_load_package(llama.path)
    for shape in LLAMA.calls:
        args, kwargs = LLAMA.call(**shape)
        got = llama.handle.remote(*args, **kwargs).result(timeout_s=60)
        torch.testing.assert_close(got.logits, llama.expected(args, kwargs).logits)
        torch.testing.assert_close(got.logits, torch_llama(*args, **kwargs).logits)


def test_http_json_route_on_loopback(scorer, llama):
    args, kwargs = scorer_call(rows=3, seed=4)
    body = {"args": [args[0].tolist()], "kwargs": {"bias": kwargs["bias"].tolist()}}
    reply = requests.post(scorer.url, json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    _close({k: torch.tensor(v) for k, v in reply.json().items()}, scorer.expected(args, kwargs))

    args, kwargs = LLAMA.call(seed=5, batch=2, seq=6)
    reply = requests.post(llama.url, json=[args[0].tolist()], timeout=60)
    assert reply.status_code == 200, reply.text
    torch.testing.assert_close(torch.tensor(reply.json()["logits"]),
                               llama.expected(args, kwargs).logits)

    # Bad inputs: a 400 naming the problem, the route keeps serving.
    wrong_width = {"args": [[[0.0] * (WIDTH - 1)]], "kwargs": {"bias": [[0.0] * (WIDTH - 1)]}}
    reply = requests.post(scorer.url, json=wrong_width, timeout=60)
    assert reply.status_code == 400 and "does not fit the model" in reply.json()["error"]
    reply = requests.post(scorer.url, json={"args": [[[0.0] * WIDTH]]}, timeout=60)
    assert reply.status_code == 400 and "'bias'" in reply.json()["error"]
    reply = requests.post(scorer.url, data=b"{not json", timeout=60)
    assert reply.status_code == 400 and "not JSON" in reply.json()["error"]


def test_concurrent_calls_are_batched_each_answered_with_its_own_result(scorer, llama):
    for served, calls in [
            (scorer, [scorer_call(rows=1 + i % 3, seed=100 + i) for i in range(24)]),
            # two sequence lengths: batched by length, never mixed
            (llama, [LLAMA.call(seed=200 + i, batch=1 + i % 2, seq=5 + 2 * (i % 2))
                     for i in range(12)])]:
        requests_before, runs_before, sizes_before = _totals(_settled(served.served))
        got = _results([served.handle.remote(*a, **k) for a, k in calls])
        for result, (args, kwargs) in zip(got, calls):
            _close(result, served.expected(args, kwargs))
        requests_after, runs_after, sizes_after = _totals(_settled(served.served))
        assert requests_after - requests_before == len(calls)
        runs = runs_after - runs_before
        assert runs < len(calls), f"{len(calls)} calls took {runs} runs"
        assert any(size > 1 and sizes_after[size] > sizes_before.get(size, 0)
                   for size in sizes_after)


def test_bad_requests_are_rejected_alone_in_a_batch(scorer):
    good = [scorer_call(rows=2, seed=300 + i) for i in range(8)]
    bad = {"dtype": scorer_call(rows=2, seed=1, dtype=torch.float64),
           "width": ((torch.randn(2, WIDTH + 1),), {"bias": torch.randn(2, WIDTH + 1)}),
           "too many rows": scorer_call(rows=65, seed=2),
           "empty": scorer_call(rows=0, seed=3)}
    _, runs_before, sizes_before = _totals(_settled(scorer.served))
    calls = good[:4] + list(bad.values()) + good[4:]
    responses = [scorer.handle.remote(*a, **k) for a, k in calls]
    outcomes = []
    for response in responses:
        try:
            outcomes.append(response.result(timeout_s=60))
        except ValueError as e:
            outcomes.append(e)
    for result, (args, kwargs) in zip(outcomes[:4] + outcomes[8:], good):
        assert not isinstance(result, Exception), result
        _close(result, scorer.expected(args, kwargs))
    for reason, error in zip(bad, outcomes[4:8]):
        assert isinstance(error, ValueError), (reason, error)
        assert "does not fit the model" in str(error), (reason, error)
    assert "unmatched dtype" in str(outcomes[4])
    _, _, sizes_after = _totals(_settled(scorer.served))
    assert any(size > 1 and sizes_after[size] > sizes_before.get(size, 0)
               for size in sizes_after), "the good calls were not batched"


def test_weight_rollout_reaches_every_replica_and_a_bad_one_changes_none(scorer, llama):
    for served in (scorer, llama):
        new = perturbed_state_dict(served.eager, seed=11)
        report = served.served.load_weights(new)
        assert report["ok"] and report["phase"] == "apply"
        assert set(report["replicas"]) == set(_replicas(served.served))
        assert all(outcome == {"state": "ok", "reason": ""}
                   for outcome in report["replicas"].values())
        stats = _settled(served.served)
        assert {s["version"] for s in stats.values()} == {report["version"]}

    args, kwargs = scorer_call(rows=2, seed=12)
    for result in _results([scorer.handle.remote(*args, **kwargs) for _ in range(6)]):
        _close(result, scorer.expected(args, kwargs))
    args, kwargs = LLAMA.call(seed=13, batch=2, seq=4)
    for result in _results([llama.handle.remote(*args, **kwargs) for _ in range(4)]):
        torch.testing.assert_close(result.logits, llama.expected(args, kwargs).logits)

    version = report["version"]
    # Every value moved (so a partial apply would show), one of them misshapen.
    bad = {k: v + 1 for k, v in scorer.eager.state_dict().items()}
    bad["proj.weight"] = torch.zeros(WIDTH + 1, WIDTH)
    with pytest.raises(RolloutError, match=r"validate phase \(no replica changed\).*"
                                           r"'proj.weight' has shape \(17, 16\)") as caught:
        scorer.served.load_weights(bad)
    assert set(caught.value.report["replicas"]) == set(_replicas(scorer.served))
    missing = {k: v + 1 for k, v in scorer.eager.state_dict().items() if k != "head.bias"}
    with pytest.raises(RolloutError, match=r"missing constants \['head.bias'\]"):
        scorer.served.load_weights(missing)
    assert {s["version"] for s in _settled(scorer.served).values()} == {version}
    args, kwargs = scorer_call(rows=3, seed=14)
    for result in _results([scorer.handle.remote(*args, **kwargs) for _ in range(6)]):
        _close(result, scorer.expected(args, kwargs))


def test_health_check_runs_the_model_on_the_example_inputs(scorer):
    def counts():
        stats = _settled(scorer.served)
        return _totals(stats)[1], sum(s["health_checks"] for s in stats.values())
    runs_before, checks_before = counts()
    for _ in range(4):   # the method Serve calls periodically, through the handle
        assert scorer.handle.check_health.remote().result(timeout_s=60) is None
    runs_after, checks_after = counts()
    assert checks_after - checks_before >= 4   # Serve's own checks may add some
    assert runs_after == runs_before           # health runs are not counted as calls


def _call_with_retries(handle, args, kwargs, deadline, attempts=10):
    """A call retried while its replica is gone (as a client of Serve
    retries); (result, retries)."""
    for attempt in range(attempts):
        try:
            return handle.remote(*args, **kwargs).result(timeout_s=60), attempt
        except REPLICA_GONE:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    raise AssertionError(f"no answer after {attempts} attempts")


def test_killed_replica_is_restarted_and_no_call_is_lost(scorer):
    report = scorer.served.load_weights(perturbed_state_dict(scorer.eager, seed=21))
    before = _settled(scorer.served)
    victim = max(before.values(), key=lambda s: s["pid"])
    calls = [scorer_call(rows=1 + i % 4, seed=400 + i) for i in range(150)]
    answered = []
    deadline = time.monotonic() + 90

    def call(i):
        answered.append(i)
        return _call_with_retries(scorer.handle, *calls[i], deadline)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, i) for i in range(len(calls))]
        while len(answered) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)   # calls in flight on both replicas
        serving = scorer.served.replica_stats()[victim["replica"]]["requests"]
        os.kill(victim["pid"], signal.SIGKILL)
        killed_after = len(answered)
        outcomes = [f.result(timeout=120) for f in futures]
    assert killed_after < len(calls) - 20, "the calls were over before the kill"
    assert serving > victim["requests"], "the killed replica was not serving"
    for (result, _), (args, kwargs) in zip(outcomes, calls):
        _close(result, scorer.expected(args, kwargs))
    print(f"killed after {killed_after} calls started; "
          f"{sum(retries for _, retries in outcomes)} retries")

    # Serve starts a replacement, which loads the weights rolled out last.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        after = scorer.served.replica_stats()
        pids = {s["pid"] for s in after.values()}
        if len(after) == 2 and victim["pid"] not in pids:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no replacement replica: {scorer.served.replica_stats()}")
    assert {s["version"] for s in after.values()} == {report["version"]}
    args, kwargs = scorer_call(rows=2, seed=22)
    for result in _results([scorer.handle.remote(*args, **kwargs) for _ in range(8)]):
        _close(result, scorer.expected(args, kwargs))
