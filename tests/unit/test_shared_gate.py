"""The gate between a graphed container's plain runs (shared) and its
captures (alone), without a model: threads that record what overlapped."""

import threading
import time

from aoti_cy.cuda_graphs import _SharedGate


def test_plain_runs_share_the_gate():
    gate = _SharedGate()
    inside, most = [0], [0]
    lock = threading.Lock()
    start = threading.Barrier(4)

    def plain():
        start.wait()
        with gate:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=plain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] > 1              # they overlapped
    assert inside[0] == 0


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
    inside, most = [0], [0]
    lock = threading.Lock()

    def capture():
        with gate.alone():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=capture) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1
