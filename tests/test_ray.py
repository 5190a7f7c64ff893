"""aoti_cy on Ray Serve: a local Ray cluster on this machine (no external
address, HTTP on loopback), real compiled models with 2 replicas each.

Skipped where Ray Serve is not installed (``pip install aoti_cy[ray]``).
Every request loop is bounded in count and time; the cluster is shut down
at the end of the module.
"""

import concurrent.futures
import copy
import importlib.machinery
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")

import aoti_cy.ray  # noqa: E402
import aoti_cy.serving  # noqa: E402
from aoti_cy.ray import CallTimeoutError, CoordinatorTimeoutError, RolloutError  # noqa: E402
from aoti_cy.ray._entry import ShadowedPackageError, check_installed_aoti_cy  # noqa: E402
from ray_models import WIDTH, scorer_call, scorer_eager, scorer_package  # noqa: E402
from real_models import REAL_MODELS, UPDATABLE, perturbed_state_dict  # noqa: E402

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

def test_errors_pickle_with_their_details():
    # The serving errors aoti_cy.ray re-exports are tested without Ray in
    # test_serving_without_ray.py; here, that they are the same classes.
    report = {"ok": False, "phase": "validate", "version": 3,
              "replicas": {"r": {"state": "refused", "reason": "shape"}}}
    for error in (RolloutError("refused", report), ShadowedPackageError("shadowed")):
        copy_ = pickle.loads(pickle.dumps(error))
        assert type(copy_) is type(error) and str(copy_) == str(error)
    assert pickle.loads(pickle.dumps(RolloutError("refused", report))).report == report
    assert CallTimeoutError is aoti_cy.serving.CallTimeoutError
    assert CoordinatorTimeoutError is aoti_cy.serving.CoordinatorTimeoutError


SHADOWED_DRIVER = """
import socket, sys
import ray
from ray import serve
import aoti_cy.ray
from ray_models import scorer_package

path = scorer_package()
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
         object_store_memory=128 << 20)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
serve.start(http_options={"host": "127.0.0.1", "port": port})
served = None
try:
    try:
        served = aoti_cy.ray.deployment(path, name="shadowed", max_constructor_retry_count=1,
                                        ray_actor_options={"num_cpus": 0.1})
        print("DEPLOYED")
    except Exception as e:
        print("DRIVER GOT:", type(e).__name__, e)
    # The replicas' own check, as when Serve runs under another job: Serve
    # keeps its message in the deployment's status.
    aoti_cy.ray._check_workers_import_aoti_cy = lambda *args: None
    served = aoti_cy.ray.deployment(path, name="shadowed", max_constructor_retry_count=1,
                                    ray_actor_options={"num_cpus": 0.1})
    try:
        serve.run(served.app, name="shadowed", route_prefix=None)
    except Exception as e:
        print("SERVE.RUN GOT:", type(e).__name__, e)
    status = serve.status().applications["shadowed"].deployments["shadowed"]
    print("STATUS:", status.message.replace("\\n", " "))
finally:
    serve.shutdown()
    if served is not None:
        served.close()
    ray.shutdown()
"""


@pytest.mark.parametrize("shadow", ["checkout parent", "unbuilt package"])
def test_a_shadowing_aoti_cy_folder_is_named_in_the_error(tmp_path, shadow):
    """The check each replica makes first, on what a folder in the driver's
    working directory makes ``aoti_cy`` resolve to."""
    folder = tmp_path / "aoti_cy"
    folder.mkdir()
    if shadow == "unbuilt package":
        (folder / "__init__.py").write_text("")
    spec = importlib.machinery.PathFinder.find_spec("aoti_cy", [str(tmp_path)])
    with pytest.raises(ShadowedPackageError) as caught:
        check_installed_aoti_cy(spec)
    message = str(caught.value)
    assert repr(str(folder)) in message and "driver's working directory" in message
    assert ("namespace package" if shadow == "checkout parent"
            else "without the compiled module aoti_cy.interface") in message
    check_installed_aoti_cy()   # the package these tests run


def test_a_driver_started_beside_an_aoti_cy_folder_gets_the_error_at_deployment(tmp_path):
    """End to end, on a cluster of its own: Ray puts the driver's working
    directory on every worker's path, a worker of the driver's job finds the
    unbuilt ``aoti_cy`` there, and the error naming the folder reaches the
    driver from ``deployment()`` (Serve would say only "Failed to update the
    deployments")."""
    root, scripts = tmp_path / "work", tmp_path / "scripts"
    (root / "aoti_cy").mkdir(parents=True)
    (root / "aoti_cy" / "__init__.py").write_text("")
    scripts.mkdir()
    (scripts / "driver.py").write_text(SHADOWED_DRIVER)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(here), here, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(scripts / "driver.py")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert "DRIVER GOT:" in done.stdout, out[-3000:]
    got, status = done.stdout.split("STATUS:") if "STATUS:" in done.stdout else (done.stdout, "")
    folder = repr(str(root / "aoti_cy"))
    assert "DRIVER GOT: ShadowedPackageError" in got and folder in got, out[-3000:]
    assert "DEPLOYED" not in got, out[-3000:]
    assert "ShadowedPackageError" in status and folder in status, out[-3000:]


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

    # Strict values: nothing converted, the input and the element named.
    for body, fragments in [
            ([[[1.7, 2.2]]], ["args[0]", "element [0][0] is 1.7", "int64"]),
            ([[[1, True]]], ["args[0]", "element [0][1] is true"]),
            ([[[1, 2], [3]]], ["args[0]", "ragged"]),
            ([[[2 ** 63]]], ["args[0]", "out of the range of int64"])]:
        reply = requests.post(llama.url, json=body, timeout=60)
        assert reply.status_code == 400, (body, reply.text)
        for fragment in fragments:
            assert fragment in reply.json()["error"], (fragment, reply.json())
    body = {"args": [[[0.0] * WIDTH]], "kwargs": {"bias": [[0.0] * (WIDTH - 1) + [1e39]]}}
    reply = requests.post(scorer.url, json=body, timeout=60)
    assert reply.status_code == 400 and "kwargs['bias']" in reply.json()["error"] \
        and "beyond the range of float32" in reply.json()["error"]
    reply = requests.post(llama.url, json=[args[0].tolist()], timeout=60)   # still serving
    assert reply.status_code == 200, reply.text


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
           "empty": scorer_call(rows=0, seed=3),
           # x and bias share the exported batch dim: 2 rows against 3
           "rows disagree": ((torch.randn(2, WIDTH),), {"bias": torch.randn(3, WIDTH)})}
    _, runs_before, sizes_before = _totals(_settled(scorer.served))
    calls = good[:4] + list(bad.values()) + good[4:]
    responses = [scorer.handle.remote(*a, **k) for a, k in calls]
    outcomes = []
    for response in responses:
        try:
            outcomes.append(response.result(timeout_s=60))
        except ValueError as e:
            outcomes.append(e)
    first_good = 4 + len(bad)
    for result, (args, kwargs) in zip(outcomes[:4] + outcomes[first_good:], good):
        assert not isinstance(result, Exception), result
        _close(result, scorer.expected(args, kwargs))
    for reason, error in zip(bad, outcomes[4:first_good]):
        assert isinstance(error, ValueError), (reason, error)
        assert "does not fit the model" in str(error), (reason, error)
    assert "has dtype torch." in str(outcomes[4])
    assert re.search(r"\('bias'\) does not fit the model: dim 0 is 3, but input 0 "
                     r"\('args\[0\]'\) dim 0 is 2: both are", str(outcomes[first_good - 1]))
    # Through a client: the model's refusal is raised at once, never retried.
    client = scorer.served.client(scorer.handle, timeout_s=60)
    with pytest.raises(ValueError, match="has dtype torch."):
        client.call(*bad["dtype"][0], **bad["dtype"][1])
    assert client.retries == 0
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
    states = caught.value.report["replicas"]
    assert set(states) == set(_replicas(scorer.served))
    # The first refusal stops the rollout: the others refused too, or were not asked.
    assert {s["state"] for s in states.values()} <= {"refused", "not asked"}
    assert all("'proj.weight' has shape (17, 16)" in s["reason"]
               for s in states.values() if s["state"] == "refused")
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


def _wait_for_replacement(served, gone_pid, version, timeout=120):
    """The stats once two replicas report, none of them ``gone_pid``, all on
    weights ``version`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = served.replica_stats()
        if (len(stats) == 2 and gone_pid not in {s["pid"] for s in stats.values()}
                and {s["version"] for s in stats.values()} == {version}):
            return stats
        time.sleep(0.5)
    raise AssertionError(f"no replacement replica on version {version}: "
                         f"{served.replica_stats()}")


KILLS = 5


def test_killed_replicas_under_load_lose_no_call(scorer):
    """SIGKILL of a replica in the middle of 200 concurrent calls, 5 times:
    every call is answered, once, with its own result (the client sends the
    calls a dying replica held to the other one)."""
    report = scorer.served.load_weights(perturbed_state_dict(scorer.eager, seed=21))
    client = scorer.served.client(scorer.handle, timeout_s=120)
    for kill in range(KILLS):
        before = _replicas(scorer.served)
        victim = before[sorted(before)[kill % 2]]
        calls = [scorer_call(rows=1 + i % 4, seed=1000 * kill + i) for i in range(200)]
        answered, lock = [0], threading.Lock()

        def call(i):
            result = client.call(*calls[i][0], **calls[i][1])
            with lock:
                answered[0] += 1
            return result
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(call, i) for i in range(len(calls))]
            deadline = time.monotonic() + 60
            while answered[0] < 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(victim["pid"], signal.SIGKILL)
            answered_at_kill = answered[0]
            outcomes = [f.result(timeout=300) for f in futures]   # any error fails here
        assert answered_at_kill < len(calls) - 20, "the calls were over before the kill"
        for result, (args, kwargs) in zip(outcomes, calls):
            _close(result, scorer.expected(args, kwargs))
        print(f"kill {kill}: after {answered_at_kill} answers; {client.retries} retries so far")
        _wait_for_replacement(scorer.served, victim["pid"], report["version"])
    assert client.retries > 0, "no call was in flight on a killed replica"


def test_a_tiny_deadline_gives_only_timeout_errors(llama):
    """Calls with a deadline too short to be met, while a replica dies: each
    is answered correctly or raises CallTimeoutError, nothing else."""
    version = llama.served.committed_version()
    client = llama.served.client(llama.handle).options(timeout_s=0.02)
    calls = [LLAMA.call(seed=500 + i, batch=1 + i % 2, seq=4) for i in range(60)]
    victim = _replicas(llama.served)[sorted(_replicas(llama.served))[0]]
    responses = [client.remote(*a, **k) for a, k in calls[:30]]
    os.kill(victim["pid"], signal.SIGKILL)
    responses += [client.remote(*a, **k) for a, k in calls[30:]]
    answered = timeouts = 0
    for response, (args, kwargs) in zip(responses, calls):
        try:
            result = response.result()
        except CallTimeoutError as e:
            assert "deadline of 0.02 s" in str(e)
            timeouts += 1
            continue
        torch.testing.assert_close(result.logits, llama.expected(args, kwargs).logits)
        answered += 1
    assert timeouts > 0 and answered + timeouts == len(calls)
    print(f"{answered} answered, {timeouts} timed out")
    _wait_for_replacement(llama.served, victim["pid"], version)


def test_a_killed_coordinator_mid_rollout_leaves_one_version_everywhere(scorer):
    """SIGKILL of the coordinator at different points of a rollout: Ray
    restarts it, and every replica ends on the committed version: the new
    weights when the commit happened, the old ones otherwise."""
    client = scorer.served.client(scorer.handle, timeout_s=60)
    for delay in (0.0, 0.15, 0.3):
        old = {k: v.clone() for k, v in scorer.eager.state_dict().items()}
        new = perturbed_state_dict(scorer.eager, seed=int(delay * 100) + 31)
        new = {k: v.clone() for k, v in new.items()}
        pid = scorer.served.coordinator_pid()
        outcome = []

        def roll():
            try:
                outcome.append(scorer.served.load_weights(new, timeout_s=60))
            except RolloutError as e:
                outcome.append(e)
        thread = threading.Thread(target=roll)
        thread.start()
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=90)
        assert not thread.is_alive() and outcome, "load_weights did not return"
        committed = scorer.served.committed_version()
        if isinstance(outcome[0], RolloutError):
            report = outcome[0].report
            if "committed" in report:   # the coordinator died under this call
                assert report["committed"] == (committed == report["version"])
            landed = committed == report["version"]
        else:
            landed = committed == outcome[0]["version"]
        stats = _wait_for_replacement(scorer.served, None, committed)
        assert scorer.served.coordinator_pid() != pid
        with torch.no_grad():
            scorer.eager.load_state_dict(new if landed else old)
        args, kwargs = scorer_call(rows=3, seed=40)
        for _ in range(2 * len(stats)):
            _close(client.call(*args, **kwargs), scorer.expected(args, kwargs))
        print(f"killed {delay} s into the rollout: "
              f"{'committed' if landed else 'not committed'}, every replica on {committed}")


def test_driver_calls_against_a_hung_coordinator_return_by_their_deadline(scorer):
    """A stopped (SIGSTOP) coordinator: stats and rollouts raise
    CoordinatorTimeoutError by their deadline; model calls do not need it;
    the timed-out rollout never commits."""
    client = scorer.served.client(scorer.handle, timeout_s=60)
    version = scorer.served.committed_version()
    pid = scorer.served.coordinator_pid()
    outcomes = {}

    def attempt(name, call):
        try:
            outcomes[name] = call()
        except Exception as e:  # noqa: BLE001 - checked below
            outcomes[name] = e
    calls = {"stats": lambda: scorer.served.replica_stats(timeout_s=1.0),
             "rollout": lambda: scorer.served.load_weights(
                 perturbed_state_dict(copy.deepcopy(scorer.eager), seed=51), timeout_s=2.0)}
    os.kill(pid, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=attempt, args=item) for item in calls.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)   # a hang fails here, not forever
        assert not any(thread.is_alive() for thread in threads), "a call did not return"
        args, kwargs = scorer_call(rows=2, seed=52)
        got = client.call(*args, **kwargs)
    finally:
        os.kill(pid, signal.SIGCONT)
    for name in calls:
        assert isinstance(outcomes[name], CoordinatorTimeoutError), (name, outcomes[name])
        assert isinstance(outcomes[name], TimeoutError)
    assert "within 1 s" in str(outcomes["stats"])
    # the timed-out rollout was not committed once the coordinator woke up
    time.sleep(3)
    assert scorer.served.committed_version() == version
    stats = _replicas(scorer.served)
    assert {s["version"] for s in stats.values()} == {version}
    assert all(0 <= s["age_s"] < 3 for s in stats.values())
    _close(got, scorer.expected(args, kwargs))
