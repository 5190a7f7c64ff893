"""The gate between a graphed container's plain runs (shared) and its
captures (alone), without a model: threads that record what overlapped."""

import threading
import time

from aoti_cy.cuda_graphs import _SharedGate


def most_at_once(enter, threads):
    """How many of ``threads`` threads were inside ``enter()`` at once."""
    inside, most = [0], [0]
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work():
        start.wait()
        with enter():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    assert inside[0] == 0
    return most[0]


def test_plain_runs_share_the_gate():
    gate = _SharedGate()
    assert most_at_once(lambda: gate, 4) > 1


def test_a_capture_waits_for_plain_runs_and_holds_new_ones_back():
    gate = _SharedGate()
    events = []
    plain_in = threading.Event()
    capture_waiting = threading.Event()

    def first_plain():
        with gate:
            events.append("plain 1 in")
            plain_in.set()
            capture_waiting.wait(5)
            time.sleep(0.05)
            events.append("plain 1 out")

    def capture():
        plain_in.wait(5)
        capture_waiting.set()
        with gate.alone():
            events.append("capture in")
            time.sleep(0.05)
            events.append("capture out")

    def second_plain():
        capture_waiting.wait(5)
        time.sleep(0.02)             # the capture is waiting by now
        with gate:
            events.append("plain 2 in")

    threads = [threading.Thread(target=f) for f in (first_plain, capture, second_plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert events.index("capture in") > events.index("plain 1 out")
    # Asked for while the capture waited: it goes in after the capture.
    assert events.index("plain 2 in") > events.index("capture out")
    assert set(events) == {"plain 1 in", "plain 1 out", "capture in", "capture out",
                           "plain 2 in"}


def test_captures_take_turns():
    gate = _SharedGate()
    assert most_at_once(gate.alone, 3) == 1
