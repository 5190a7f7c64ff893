"""The two actors every replica of one deployment talks to.

- ``WeightStore`` owns what must outlive any replica, the driver and the
  coordinator: the package bytes and the weights committed last, in Ray's
  object store (an object is lost with the process that owns it). It only
  stores; nothing in it waits, so it is never killed for being stuck.
- ``Coordinator`` runs the rollout protocol (``aoti_cy.serving._rollout``):
  replicas poll it, which is also how a rollout reaches all of them (Serve
  routes a request to one replica, never to all). Ray restarts it when it
  dies; it then reads the committed weights back from the store, so a
  rollout interrupted after its commit still reaches every replica, and
  one interrupted before it changed none.
"""

import os
import time

import ray

from aoti_cy.serving._rollout import RolloutProtocol

__all__ = ["Coordinator", "WeightStore"]


class WeightStore:
    """Package bytes, staged and committed weights (a Ray actor)."""

    def __init__(self, package):
        # Put here, so this actor owns the objects (the driver may exit).
        self._package = ray.put(package)
        del package
        self._staged = None          # (version, ref) of the weights being rolled out
        self._committed = (0, None, True)
        self._next_version = 1

    def package(self):
        """[ref] of the package bytes (a list, so the caller gets the ref)."""
        return [self._package]

    def stage(self, state_dict):
        """Store ``state_dict`` for a rollout: (version, [ref])."""
        version = self._next_version
        self._next_version += 1
        self._staged = (version, ray.put(state_dict))   # replaces an abandoned one
        return version, [self._staged[1]]

    def commit(self, version, strict):
        """Make staged ``version`` the weights every replica must run; False
        when it is no longer the staged one."""
        if self._staged is None or self._staged[0] != version:
            return False
        self._committed = (version, self._staged[1], strict)
        self._staged = None
        return True

    def committed(self):
        """(version, [ref] or None, strict) of the weights committed last."""
        version, ref, strict = self._committed
        return version, None if ref is None else [ref], strict


class Coordinator:
    """Rollouts and the replica registry of one deployment (a Ray actor,
    restarted by Ray when it dies)."""

    def __init__(self, store):
        self._store = store
        version, refs, strict = ray.get(store.committed.remote())
        self._protocol = RolloutProtocol((version, refs, strict))

    def pid(self):
        """This actor's process id."""
        return os.getpid()

    def poll(self, replica, version, stats):
        """A replica's heartbeat (see ``RolloutProtocol.poll``)."""
        return self._protocol.poll(replica, version, stats)

    def report(self, replica, phase, version, ok, message=""):
        """A replica's outcome of ``phase`` for ``version``."""
        self._protocol.report(replica, phase, version, ok, message)

    def replicas(self):
        """{replica: {"version", "stats", "age_s"}} of the live replicas."""
        return self._protocol.replicas()

    def rollout(self, version, refs, strict, deadline_unix):
        """Roll staged ``version`` out (see ``RolloutProtocol.rollout``);
        ``deadline_unix`` is a ``time.time()``: nothing is committed after it."""
        deadline = time.monotonic() + (deadline_unix - time.time())

        def commit(version, refs, strict):
            # No timeout: the store never waits, and a commit it made must
            # not be taken for one it did not.
            return ray.get(self._store.commit.remote(version, strict))
        return self._protocol.rollout(version, refs, strict, deadline, commit)
