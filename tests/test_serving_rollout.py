"""The rollout protocol and the retry policy of aoti_cy.serving, without Ray:
replicas are threads, each running a real compiled model, polling a
``RolloutProtocol`` as a Ray replica polls its coordinator; their checks
and applies are the models' own ``check_weights`` and ``load_weights``."""

import concurrent.futures
import threading
import time

import pytest
import torch

import aoti_cy
from aoti_cy.serving import (POLL_S, CallTimeoutError, RolloutProtocol, call_with_retries)
from ray_models import scorer_call, scorer_eager, scorer_package
from real_models import REAL_MODELS, UPDATABLE, perturbed_state_dict


class Replica(threading.Thread):
    """A replica's poll loop on a real model. ``answer_after_s``: how long it
    takes to answer a validate; ``silent``: never answers; ``pause``: for how
    long it stops polling after its first poll."""

    def __init__(self, name, protocol, path, answer_after_s=0.0, silent=False, pause=None):
        super().__init__(name=name, daemon=True)
        self.protocol, self.model = protocol, aoti_cy.load(path)
        self.version, self.answer_after_s, self.silent, self.pause = 0, answer_after_s, silent, pause
        self.polled, self.stopped = threading.Event(), threading.Event()

    def run(self):
        while not self.stopped.wait(POLL_S / 2):
            action = self.protocol.poll(self.name, self.version, {"pid": 0})
            self.polled.set()
            if self.pause is not None:
                pause, self.pause = self.pause, None
                if self.stopped.wait(pause):
                    return
            if action is None or self.silent:
                continue
            phase, version, weights, strict = action
            time.sleep(self.answer_after_s if phase == "validate" else 0.0)
            try:
                if phase == "validate":
                    self.model.check_weights(weights, strict=strict)
                else:
                    self.model.load_weights(weights, strict=strict)
                    self.version = version
                ok, message = True, ""
            except Exception as e:  # noqa: BLE001 - reported, as a replica does
                ok, message = False, f"{type(e).__name__}: {e}"
            self.protocol.report(self.name, phase, version, ok, message)

    def close(self):
        self.stopped.set()
        self.join(timeout=10)
        self.model.close()


@pytest.fixture
def replicas():
    started = []

    def start(protocol, name, path, **behaviour):
        replica = Replica(name, protocol, path, **behaviour)
        replica.start()
        assert replica.polled.wait(10)
        started.append(replica)
        return replica
    yield start
    for replica in started:
        replica.close()


def _commits():
    done = []

    def commit(version, weights, strict):
        done.append(version)
        return True
    return done, commit


def _run(model, seed):
    args, kwargs = scorer_call(rows=2, seed=seed)
    with torch.no_grad():
        return model(*args, **kwargs), args, kwargs


def test_accepted_weights_are_committed_and_applied_everywhere(replicas):
    protocol, path = RolloutProtocol(), scorer_package()
    started = [replicas(protocol, f"r{i}", path) for i in range(3)]
    eager = scorer_eager()
    new = perturbed_state_dict(eager, seed=5)
    done, commit = _commits()
    report = protocol.rollout(1, new, True, time.monotonic() + 30, commit)
    assert report["ok"] and report["phase"] == "apply" and done == [1]
    assert report["replicas"] == {r.name: {"state": "ok", "reason": ""} for r in started}
    for replica in started:
        assert replica.version == 1
        got, args, kwargs = _run(replica.model, seed=6)
        with torch.no_grad():
            torch.testing.assert_close(got, eager(*args, **kwargs))
    time.sleep(3 * POLL_S)   # their next polls carry the new version
    assert {r: e["version"] for r, e in protocol.replicas().items()} == {
        r.name: 1 for r in started}


def test_a_refusal_reports_refused_not_asked_and_ok_and_changes_nothing(replicas):
    protocol, path = RolloutProtocol(), scorer_package()
    slow = replicas(protocol, "slow", path, answer_after_s=0.3)
    # a replica running another model: the scorer's weights do not fit it; it
    # answers late, so that the slow one was surely asked before the refusal
    other = replicas(protocol, "other", REAL_MODELS["llama"].package(**UPDATABLE),
                     answer_after_s=1.0)
    # live (it polled), then quiet past the refusal: never sees the weights
    quiet = replicas(protocol, "quiet", path, pause=2.0)
    before, args, kwargs = _run(slow.model, seed=7)
    done, commit = _commits()
    report = protocol.rollout(1, perturbed_state_dict(scorer_eager(), seed=8), True,
                              time.monotonic() + 30, commit)
    assert not report["ok"] and report["phase"] == "validate" and done == []
    states = report["replicas"]
    assert states["other"]["state"] == "refused" and "proj.weight" in states["other"]["reason"]
    assert states["slow"] == {"state": "ok", "reason": ""}
    assert states["quiet"]["state"] == "not asked", states
    assert report["error"] == "a replica refused the weights"
    for replica in (slow, quiet):
        assert replica.version == 0
        torch.testing.assert_close(_run(replica.model, seed=7)[0], before)
    # the refusal is over: a later poll is not asked to validate it
    time.sleep(2.5)
    assert quiet.version == 0 and protocol.poll("quiet", 0, {}) is None


def test_an_asked_replica_that_never_answers_is_unreachable(replicas):
    protocol, path = RolloutProtocol(), scorer_package()
    replicas(protocol, "answers", path)
    replicas(protocol, "mute", path, silent=True)
    done, commit = _commits()
    report = protocol.rollout(1, scorer_eager().state_dict(), True, time.monotonic() + 0.8,
                              commit)
    assert not report["ok"] and done == []
    assert report["replicas"]["answers"]["state"] == "ok"
    assert report["replicas"]["mute"] == {"state": "unreachable",
                                          "reason": "asked, no answer before the deadline"}
    assert report["error"] == "timed out waiting for the replicas"


def test_a_commit_called_off_changes_no_replica(replicas):
    protocol, path = RolloutProtocol(), scorer_package()
    replica = replicas(protocol, "r", path)
    report = protocol.rollout(1, perturbed_state_dict(scorer_eager(), seed=9), True,
                              time.monotonic() + 30, lambda *_: False)
    assert not report["ok"] and "no replica changed" in report["error"]
    time.sleep(5 * POLL_S)
    assert replica.version == 0 and protocol.committed()[0] == 0


def test_a_second_rollout_while_one_runs_is_refused(replicas):
    protocol, path = RolloutProtocol(), scorer_package()
    replicas(protocol, "slow", path, answer_after_s=0.5)
    weights = scorer_eager().state_dict()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(protocol.rollout, 1, weights, True, time.monotonic() + 30,
                            lambda *_: True)
        time.sleep(0.2)
        second = protocol.rollout(2, weights, True, time.monotonic() + 30, lambda *_: True)
        assert not second["ok"] and second["error"] == "another rollout is in progress"
        assert first.result(timeout=30)["ok"]


# ---- retries ------------------------------------------------------------------------------

class ReplicaDied(Exception):
    """What a call gets when the replica holding it died."""


def _replicas_pool(path, dead):
    """submit() sending each call to the next of two replicas (real models);
    those in ``dead`` fail every call they get."""
    models = [aoti_cy.load(path) for _ in range(2)]
    pool = concurrent.futures.ThreadPoolExecutor(2)
    turn = iter(range(10 ** 6))

    def run(index, args, kwargs):
        if index in dead:
            raise ReplicaDied(f"replica {index} died")
        with torch.no_grad():
            return models[index](*args, **kwargs)

    def submitter(args, kwargs):
        return lambda: pool.submit(run, next(turn) % 2, args, kwargs)
    return models, pool, submitter


def _wait(future, remaining):
    try:
        return future.result(timeout=remaining)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError from None


def test_a_call_whose_replica_died_is_answered_once_by_another():
    models, pool, submitter = _replicas_pool(scorer_package(), dead={0})
    eager, retried = scorer_eager(), []
    try:
        for seed in range(4):
            args, kwargs = scorer_call(rows=3, seed=seed)
            got = call_with_retries(submitter(args, kwargs), _wait,
                                    lambda e: isinstance(e, ReplicaDied), 10,
                                    on_retry=retried.append)
            with torch.no_grad():
                torch.testing.assert_close(got, eager(*args, **kwargs))
        assert retried and all("replica 0 died" in why for why in retried)
        # a bad input is the model's answer, not a dead replica: raised at once
        bad_args, bad_kwargs = scorer_call(rows=2, seed=1, dtype=torch.float64)
        with pytest.raises(ValueError, match="has dtype torch."):
            call_with_retries(submitter(bad_args, bad_kwargs), _wait,
                              lambda e: isinstance(e, ReplicaDied), 10)
    finally:
        pool.shutdown()
        for model in models:
            model.close()


def test_a_call_no_replica_answers_in_time_raises_one_timeout():
    models, pool, submitter = _replicas_pool(scorer_package(), dead={0, 1})
    try:
        with pytest.raises(CallTimeoutError, match=r"deadline of 0.5 s \(\d+ attempts; "
                                                   r"the last replica error: ReplicaDied"):
            call_with_retries(submitter(*scorer_call()), _wait,
                              lambda e: isinstance(e, ReplicaDied), 0.5, describe="the call")
        assert issubclass(CallTimeoutError, TimeoutError)
    finally:
        pool.shutdown()
        for model in models:
            model.close()


def test_a_replica_started_on_the_committed_weights_counts_as_applied(replicas):
    """A replica that starts after the commit loads the committed weights
    itself: the apply phase does not wait for it to be asked."""
    protocol, path = RolloutProtocol(), scorer_package()
    replicas(protocol, "r", path)
    late = []

    def commit(version, weights, strict):
        # as a replica starting now would: it reads the committed version first
        late.append(replicas(protocol, "late", path))
        late[0].model.load_weights(weights, strict=strict)
        late[0].version = version
        return True
    report = protocol.rollout(1, perturbed_state_dict(scorer_eager(), seed=12), True,
                              time.monotonic() + 30, commit)
    assert report["ok"], report
    assert report["replicas"]["late"] == {"state": "ok", "reason": ""}
    assert report["replicas"]["r"] == {"state": "ok", "reason": ""}
