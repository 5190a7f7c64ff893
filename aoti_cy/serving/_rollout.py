"""The weight-rollout protocol between one coordinator and its replicas,
without any transport: the Ray coordinator wraps it (``aoti_cy.ray``), and
the tests drive it from threads.

Replicas poll (``poll``) every ``POLL_S`` with the weights version they run
and their stats; the answer tells them what to do next. A rollout is
two-phase: every live replica checks the new weights (``validate``); only
when all accepted are they committed (the ``commit`` callback persists
them), and every replica then applies them (``apply``), replicas that start
later included. A replica is live while it polls: silent for ``STALE_S`` it
is taken for dead.

The report of a rollout names, per replica, one state:

- ``"ok"``: it accepted (validate) or applied (apply) the weights;
- ``"refused"``: it answered no; ``reason`` says why;
- ``"not asked"``: it was live, but the rollout stopped (another replica
  refused) before it polled, so it never saw the weights;
- ``"unreachable"``: it was asked, or was live, but gave no answer before
  the deadline or stopped polling; ``reason`` says which.
"""

import threading
import time

__all__ = ["POLL_S", "STALE_S", "RolloutProtocol", "STATES"]

POLL_S = 0.1    # how often a replica polls
STALE_S = 3.0   # a replica silent for this long is taken for dead
STATES = ("ok", "refused", "not asked", "unreachable")


class RolloutProtocol:
    """Replica registry and rollouts of one deployment; thread-safe.

    ``weights`` are opaque here (an object-store reference on Ray)."""

    def __init__(self, committed=(0, None, True)):
        self._lock = threading.Condition()
        self._replicas = {}        # replica -> {"seen", "version", "stats"}
        self._committed = committed   # (version, weights, strict) applied everywhere
        self._pending = None       # (version, weights, strict) being validated
        self._asked = {}           # replica -> (phase, version) last handed to it
        self._reports = {}         # replica -> (phase, version, ok, message)
        self._running = False

    # ---- replicas' side ---------------------------------------------------

    def poll(self, replica, version, stats):
        """A replica's heartbeat. Returns ``("validate" | "apply", version,
        weights, strict)`` for it to act on, or None."""
        with self._lock:
            entry = self._replicas.setdefault(replica, {})
            entry.update(seen=time.monotonic(), version=version, stats=stats)
            self._lock.notify_all()
            committed = self._committed
            if committed[1] is not None and version < committed[0]:
                self._asked[replica] = ("apply", committed[0])
                return ("apply",) + tuple(committed)
            pending = self._pending
            if pending is not None and self._asked.get(replica) != ("validate", pending[0]):
                self._asked[replica] = ("validate", pending[0])
                return ("validate",) + tuple(pending)
            return None

    def report(self, replica, phase, version, ok, message=""):
        """A replica's outcome of ``phase`` for ``version``."""
        with self._lock:
            self._reports[replica] = (phase, version, ok, message)
            self._lock.notify_all()

    # ---- the driver's side ------------------------------------------------

    def committed(self):
        """(version, weights, strict) of the weights committed last."""
        with self._lock:
            return self._committed

    def replicas(self):
        """{replica: {"version", "stats", "age_s"}} of the live replicas;
        ``age_s``: seconds since the replica last reported."""
        with self._lock:
            now = time.monotonic()
            return {r: {"version": e["version"], "stats": e["stats"], "age_s": now - e["seen"]}
                    for r, e in self._replicas.items() if now - e["seen"] < STALE_S}

    def rollout(self, version, weights, strict, deadline, commit):
        """Validate ``weights`` on every live replica, ``commit(version,
        weights, strict)`` them (it returns False to call the rollout off),
        then wait until every live replica applied them; ``deadline`` is a
        ``time.monotonic()`` time, past which nothing is committed.

        Returns {"ok", "version", "phase", "error", "replicas": {replica:
        {"state", "reason"}}}."""
        with self._lock:
            if self._running:
                return _result(False, "validate", version, {}, "another rollout is in progress")
            self._running = True
        try:
            with self._lock:
                self._pending = (version, weights, strict)
                try:
                    outcome = self._wait_for("validate", version, deadline)
                finally:
                    self._pending = None
            if not outcome["ok"]:
                return outcome
            if time.monotonic() >= deadline or not commit(version, weights, strict):
                outcome.update(ok=False, error="the deadline passed before the commit; "
                                               "no replica changed")
                return outcome
            with self._lock:
                self._committed = (version, weights, strict)
                self._lock.notify_all()
                return self._wait_for("apply", version, deadline)
        finally:
            with self._lock:
                self._running = False

    def _wait_for(self, phase, version, deadline):
        """Wait (holding the lock's condition) until every live replica
        reported ``phase`` of ``version``, or until a refusal and then every
        replica already asked answered, or the deadline; the report."""
        involved = set()
        while True:
            now = time.monotonic()
            live = {r for r, e in self._replicas.items() if now - e["seen"] < STALE_S}
            involved |= live
            reports = {r: rep for r, rep in self._reports.items() if rep[:2] == (phase, version)}
            if phase == "apply":   # started after the commit: loaded these weights at start
                reports.update({r: (phase, version, True, "") for r in live
                                if r not in reports and self._replicas[r]["version"] >= version})
            involved |= set(reports)
            asked = {r for r, a in self._asked.items() if a == (phase, version)}
            refused = any(not rep[2] for rep in reports.values())
            if refused and phase == "validate":
                self._pending = None    # ask no one else
            waiting_for = (asked if refused else live) - set(reports)
            waiting_for &= live
            timed_out = now >= deadline
            if not waiting_for or timed_out:
                break
            self._lock.wait(timeout=POLL_S)
        states = {}
        for r in sorted(involved):
            if r in reports:
                ok, message = reports[r][2:]
                states[r] = {"state": "ok" if ok else "refused", "reason": message}
            elif r not in live:
                states[r] = {"state": "unreachable", "reason": "stopped polling"}
            elif r in asked:
                states[r] = {"state": "unreachable",
                             "reason": "asked, no answer before the deadline"}
            elif refused:
                states[r] = {"state": "not asked",
                             "reason": "the rollout stopped after a refusal before it polled"}
            else:
                states[r] = {"state": "unreachable", "reason": "did not poll before the deadline"}
        if not live and not reports:
            return _result(False, phase, version, states, "no live replica")
        ok = not refused and all(live_r in reports for live_r in live)
        error = None
        if refused:
            error = ("a replica refused the weights" if phase == "validate"
                     else "a replica failed to apply the weights")
        elif not ok:
            error = "timed out waiting for the replicas"
        return _result(ok, phase, version, states, error)


def _result(ok, phase, version, replicas, error=None):
    result = {"ok": ok, "phase": phase, "version": version, "replicas": replicas}
    if error is not None:
        result["error"] = error
    return result
