"""aoti_cy.serving without Ray: it imports and works in a process where Ray is
not installed (``without_ray`` hides it: ``import ray`` fails, ``find_spec``
finds nothing), and every serving test passes there, none skipped."""

import os
import pickle
import subprocess
import sys

import pytest

from aoti_cy.serving import CallTimeoutError, CoordinatorTimeoutError

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
SERVING_TESTS = ["test_serving_batching.py", "test_serving_json.py", "test_serving_rollout.py"]


def run_without_ray(argv, timeout):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [TESTS] + [p for p in (os.environ.get("PYTHONPATH"), ROOT) if p]))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


CHECKS = """
import importlib.util
import without_ray
assert importlib.util.find_spec("ray") is None
try:
    import ray
except ModuleNotFoundError as e:
    assert e.name == "ray", e.name
else:
    raise AssertionError("ray imported")

import torch
import aoti_cy
from aoti_cy.serving import Request, call_from_json, group_requests, merge, split, to_json
from aoti_cy.serving import RolloutProtocol, STATES

requests = [Request((torch.ones(2, 3),), {}), Request((torch.zeros(1, 3),), {}),
            Request((torch.ones(1, 3, dtype=torch.float64),), {})]
assert group_requests(requests, max_rows=8) == [[0, 1], [2]]
args, kwargs = merge(requests[:2])
assert args[0].shape == (3, 3) and kwargs == {}
parts = split((args[0] * 2,), [2, 1])
assert [tuple(p[0].shape) for p in parts] == [(2, 3), (1, 3)]
assert to_json({"y": torch.tensor([1.5, 2.0])}) == {"y": [1.5, 2.0]}
assert STATES == ("ok", "refused", "not asked", "unreachable"), STATES

try:
    import aoti_cy.ray
except ImportError as e:
    assert "aoti_cy[ray]" in str(e), str(e)
else:
    raise AssertionError("aoti_cy.ray imported without Ray")
print("serving works without ray")
"""


def test_serving_imports_and_works_where_ray_is_not_installed():
    done = run_without_ray(["-c", CHECKS], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "serving works without ray" in done.stdout


def test_importing_aoti_cy_or_serving_does_not_import_ray():
    code = ("import sys, aoti_cy, aoti_cy.serving; "
            "assert not [m for m in sys.modules if m.partition('.')[0] == 'ray'], 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_serving_errors_pickle_and_are_timeouts():
    for error in (CallTimeoutError("late"), CoordinatorTimeoutError("late")):
        copy_ = pickle.loads(pickle.dumps(error))
        assert type(copy_) is type(error) and str(copy_) == str(error)
        assert isinstance(error, TimeoutError)


@pytest.mark.slow
def test_every_serving_test_passes_without_ray_and_none_skips():
    argv = ["-m", "pytest", "-p", "without_ray", "-p", "no:cacheprovider", "-p", "no:benchmark",
            "-q", "-rs",
            *[os.path.join("tests", name) for name in SERVING_TESTS]]
    done = run_without_ray(argv, timeout=900)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " passed" in summary and "skipped" not in summary, summary
