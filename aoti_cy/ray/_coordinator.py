"""The actor that every replica of one deployment reports to.

It owns what must outlive any replica (and the driver): the package bytes
and the weights last rolled out, both in Ray's object store, so a replica
started later, on any host, loads the same model with the same weights.
Replicas poll it (``poll``), which is also how a rollout reaches all of
them: Serve routes a request to one replica, never to all.

A rollout is two-phase: every live replica checks the new state dict
(``validate``), and only when all accepted does the coordinator commit it
(``apply``); replicas that appear later apply the committed weights before
they serve. A replica is live while it polls (every ``POLL_S``).
"""

import threading
import time

import ray

__all__ = ["Coordinator", "POLL_S", "STALE_S"]

POLL_S = 0.1    # how often a replica polls
STALE_S = 3.0   # a replica silent for this long is taken for dead


class Coordinator:
    """Package, weights and rollouts of one deployment (a Ray actor)."""

    def __init__(self, package):
        # Put here, so this actor owns the objects (the driver may exit).
        self._package = ray.put(package)
        del package
        self._lock = threading.Condition()
        self._replicas = {}        # replica -> {"seen": t, "version": v, "stats": {}}
        self._committed = (0, None, True)   # version, state dict ref, strict
        self._pending = None       # (version, ref, strict) being validated
        self._reports = {}         # replica -> (phase, version, ok, message)
        self._next_version = 1

    def package(self):
        """[ref] of the package bytes (a list, so the caller gets the ref)."""
        return [self._package]

    def committed(self):
        """(version, [ref] or None, strict) of the weights rolled out last."""
        version, ref, strict = self._committed
        return version, None if ref is None else [ref], strict

    def poll(self, replica, version, stats):
        """A replica's heartbeat: what it runs on (``version``) and its
        stats. Returns what it must do next: ``("validate", v, [ref],
        strict)``, ``("apply", v, [ref], strict)`` or None."""
        with self._lock:
            entry = self._replicas.setdefault(replica, {})
            entry.update(seen=time.monotonic(), version=version, stats=stats)
            self._lock.notify_all()
            committed = self._committed
            if committed[1] is not None and version < committed[0]:
                return ("apply", committed[0], [committed[1]], committed[2])
            pending = self._pending
            if pending is not None and self._reports.get(replica, (None, -1))[1] != pending[0]:
                return ("validate", pending[0], [pending[1]], pending[2])
            return None

    def report(self, replica, phase, version, ok, message=""):
        """A replica's outcome of ``phase`` ("validate"/"apply") for ``version``."""
        with self._lock:
            self._reports[replica] = (phase, version, ok, message)
            self._lock.notify_all()

    def _live(self):
        now = time.monotonic()
        return {r for r, e in self._replicas.items() if now - e["seen"] < STALE_S}

    def replicas(self):
        """{replica: {"version", "stats", "seen_s_ago"}} of the live replicas."""
        with self._lock:
            now = time.monotonic()
            return {r: {"version": e["version"], "stats": e["stats"],
                        "seen_s_ago": now - e["seen"]}
                    for r, e in self._replicas.items() if r in self._live()}

    def rollout(self, state_dict, strict, timeout_s):
        """Validate ``state_dict`` on every live replica, then apply it on all.
        Returns {"ok", "version", "phase", "replicas": {replica: outcome}}."""
        with self._lock:
            if self._pending is not None:
                return {"ok": False, "phase": "validate", "version": None,
                        "replicas": {}, "error": "another rollout is in progress"}
            version = self._next_version
            self._next_version += 1
            ref = ray.put(state_dict)
            del state_dict
            self._pending = (version, ref, strict)
            deadline = time.monotonic() + timeout_s
            try:
                outcome = self._wait_for("validate", version, deadline)
            finally:
                self._pending = None
            if not outcome["ok"]:
                return outcome
            self._committed = (version, ref, strict)
            return self._wait_for("apply", version, deadline)

    def _wait_for(self, phase, version, deadline):
        """Wait until every live replica reported ``phase`` of ``version``
        (or one failed, or the deadline passed); the per-replica report."""
        while True:
            live = self._live()
            done = {r: self._reports[r] for r in live
                    if r in self._reports and self._reports[r][:2] == (phase, version)}
            failed = {r: rep for r, rep in done.items() if not rep[2]}
            replicas = {r: ("ok" if r in done and done[r][2] else
                            done[r][3] if r in done else "no answer") for r in live}
            if not live:
                return {"ok": False, "phase": phase, "version": version, "replicas": {},
                        "error": "no live replica"}
            if failed or len(done) == len(live) or time.monotonic() > deadline:
                ok = not failed and len(done) == len(live)
                result = {"ok": ok, "phase": phase, "version": version, "replicas": replicas}
                if not ok:
                    result["error"] = ("a replica refused the weights" if failed
                                       else "timed out waiting for the replicas")
                return result
            self._lock.wait(timeout=POLL_S)
