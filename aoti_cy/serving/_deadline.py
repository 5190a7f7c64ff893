"""Deadlines and retries of idempotent calls, without any transport.

A model call is idempotent: run twice on the same inputs it gives the same
outputs. So a call whose replica died before answering can be sent again,
to another replica, as long as its caller's deadline allows; the caller
gets exactly one answer (the first that arrives), or one timeout error.
"""

import time

__all__ = ["CallTimeoutError", "CoordinatorTimeoutError", "DEFAULT_CALL_TIMEOUT_S",
           "DEFAULT_CONTROL_TIMEOUT_S", "call_with_retries"]

DEFAULT_CALL_TIMEOUT_S = 60.0      # a model call, retries included
DEFAULT_CONTROL_TIMEOUT_S = 30.0   # stats, versions: calls to the coordinator
RETRY_PAUSE_S = (0.05, 0.1, 0.2, 0.5)   # between attempts, then 0.5 s each


class CallTimeoutError(TimeoutError):
    """A model call not answered within its deadline (retries included)."""


class CoordinatorTimeoutError(TimeoutError):
    """A call to a deployment's coordinator (stats, rollout) not answered
    within its deadline."""


def call_with_retries(submit, wait, replica_gone, timeout_s, describe="the call",
                      on_retry=None, first=None, started=None):
    """The result of ``wait(submit(), remaining_s)``, submitted again while
    the attempt fails with an exception ``replica_gone(e)`` accepts, until
    ``timeout_s`` has passed.

    - ``submit()``: sends the call, returns an attempt (``first``: one already sent);
    - ``wait(attempt, remaining_s)``: its result; raises ``TimeoutError``
      when ``remaining_s`` passed (the attempt is then abandoned: ``wait``
      should cancel it);
    - ``on_retry(error)``: called before each new attempt;
    - ``started``: the ``time.monotonic()`` the deadline runs from (default: now).

    Raises :class:`CallTimeoutError` once the deadline passed, naming the
    attempts and the last replica error; other errors propagate at once."""
    deadline = (time.monotonic() if started is None else started) + timeout_s
    attempt = first if first is not None else submit()
    attempts, last_error = 1, None

    def timed_out():
        after = f"; the last replica error: {last_error}" if last_error else ""
        return CallTimeoutError(
            f"{describe} was not answered within its deadline of {timeout_s:g} s "
            f"({attempts} attempt{'s' if attempts > 1 else ''}{after})")
    while True:
        try:
            # at 0 s left, an answer already there still counts
            return wait(attempt, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise timed_out() from None
        except Exception as e:  # noqa: BLE001 - retried only when the replica is gone
            if not replica_gone(e):
                raise
            last_error = f"{type(e).__name__}: {_first_line(e)}"
        pause = RETRY_PAUSE_S[min(attempts - 1, len(RETRY_PAUSE_S) - 1)]
        time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            raise timed_out()
        if on_retry is not None:
            on_retry(last_error)
        attempt = submit()
        attempts += 1


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ""
