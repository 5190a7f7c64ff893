"""Model calls with a deadline, retried on another replica when theirs died.

Serve's own handle raises ``ActorDiedError`` (or ``ReplicaUnavailableError``,
``DeploymentUnavailableError`` while no replica is up) for every call a
dying replica held. A model call is idempotent, so ``ModelClient`` sends it
again, through the same handle (Serve routes it to a live replica), until
it is answered or its deadline passes; the caller gets one answer or one
:class:`~aoti_cy.serving.CallTimeoutError`. Errors the model raises (bad
inputs) are not retried.
"""

import threading
import time

import ray
from ray import serve

from aoti_cy.serving._deadline import call_with_retries

__all__ = ["ModelClient", "ModelResponse", "REPLICA_GONE"]

# What a call gets when the replica holding it died, or none is up yet.
REPLICA_GONE = (ray.exceptions.RayActorError, serve.exceptions.ReplicaUnavailableError,
                serve.exceptions.DeploymentUnavailableError)


def _replica_gone(error):
    return isinstance(error, REPLICA_GONE)


class ModelClient:
    """Calls of one deployment, each with a deadline and retried while its
    replica is gone. Thread-safe; built by ``ServedModel.client``."""

    def __init__(self, handle, timeout_s, _counter=None):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.handle = handle
        self.timeout_s = float(timeout_s)
        self._counter = _counter or _RetryCounter()

    def options(self, *, timeout_s):
        """This client with another deadline (seconds per call, retries
        included); the retry count is shared."""
        return ModelClient(self.handle, timeout_s, self._counter)

    def remote(self, *args, **kwargs):
        """Send one call now; its :class:`ModelResponse`. The deadline runs
        from here."""
        return ModelResponse(self, args, kwargs)

    def call(self, *args, **kwargs):
        """The model's outputs for one call (``remote(...).result()``)."""
        return self.remote(*args, **kwargs).result()

    @property
    def retries(self):
        """How many calls of this client (and its ``options`` copies) were
        sent again because their replica was gone."""
        return self._counter.value


class ModelResponse:
    """One call in flight; ``result()`` waits for it, retrying it while its
    replica is gone, until the client's deadline."""

    def __init__(self, client, args, kwargs):
        self._client, self._args, self._kwargs = client, args, kwargs
        self._started = time.monotonic()
        self._first = self._submit()
        self._lock = threading.Lock()
        self._outcome = None

    def _submit(self):
        return self._client.handle.remote(*self._args, **self._kwargs)

    def result(self):
        """The call's outputs; raises :class:`~aoti_cy.serving.CallTimeoutError` when no
        replica answered before the deadline, or the model's own error.
        Asked again, it returns (or raises) the same."""
        with self._lock:
            if self._outcome is None:
                try:
                    self._outcome = (True, call_with_retries(
                        self._submit, _wait, _replica_gone, self._client.timeout_s,
                        describe="the model call", on_retry=self._client._counter.add,
                        first=self._first, started=self._started))
                except Exception as e:  # noqa: BLE001 - kept, raised to every asker
                    self._outcome = (False, e)
                self._first = None
            ok, value = self._outcome
        if not ok:
            raise value
        return value


def _wait(response, remaining_s):
    try:
        return response.result(timeout_s=remaining_s)
    except TimeoutError:
        response.cancel()   # so no replica runs it after its caller gave up
        raise


class _RetryCounter:
    def __init__(self):
        self._lock = threading.Lock()
        self.value = 0

    def add(self, _error=None):
        with self._lock:
            self.value += 1
