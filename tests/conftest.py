"""Shared fixtures: real packages compiled once per torch version and model
source (see aoti_cy.testing), shared by every test; and the
``requires_symbol`` marker, which skips a test unless the models the
installed torch compiles export the entry points it names."""

import glob
import os
import tempfile
import threading

import pytest
import torch

from aoti_cy.testing import EXAMPLES

WEIGHTS_OUTSIDE_SO = {
    "pickle_weights": {"aot_inductor.package_constants_in_so": False,
                       "aot_inductor.package_constants_on_disk_format": "pickle_weights"},
    "binary_blob": {"aot_inductor.package_constants_in_so": False,
                    "aot_inductor.package_constants_on_disk_format": "binary_blob"},
}


# torch's own compile cache stays where it is when tests move the temp folder.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "torchinductor_" + os.environ.get("USER", "root")))


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path_factory, monkeypatch):
    """Each test extracts packages into a temp folder of its own (child
    processes too), so that its checks for left-behind folders see only its
    own: pytest-xdist workers and other processes make and remove theirs."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    monkeypatch.setattr(tempfile, "tempdir", folder)
    monkeypatch.setenv("TMPDIR", folder)
    return folder


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_symbol(*names): skip unless models compiled by the installed "
                   "torch export every named optional AOTInductor entry point")


_exported_by_this_torch = {}


def exported_symbols():
    """Optional entry point -> whether models compiled by the installed torch
    export it, read from the library of a compiled MLP (compiled once per
    torch version, then cached; read once per test process)."""
    if not _exported_by_this_torch:
        from aoti_cy._library import open_library
        with tempfile.TemporaryDirectory(prefix="symbol-probe-") as folder:
            library = extract_library(EXAMPLES["mlp"].package("cpu"), folder)
            _exported_by_this_torch.update(open_library(library).exported())
    return _exported_by_this_torch


def require_symbol(*names):
    """Skip the calling test (or fixture) unless models compiled by the
    installed torch export every one of ``names``; a name aoti_cy does not
    know as an optional entry point fails the test instead."""
    exported = exported_symbols()
    unknown = [name for name in names if name not in exported]
    if unknown:
        pytest.fail(f"requires_symbol: not an optional AOTInductor entry point: "
                    f"{', '.join(unknown)}", pytrace=False)
    missing = [name for name in names if not exported[name]]
    if missing:
        pytest.skip(f"models compiled by torch {torch.__version__} do not export "
                    f"{', '.join(missing)}")


requires_symbol = pytest.mark.requires_symbol


def pytest_runtest_setup(item):
    # Before any fixture: a skipped test compiles nothing for its fixtures.
    for marker in item.iter_markers("requires_symbol"):
        if not marker.args:
            pytest.fail("requires_symbol needs at least one entry point name", pytrace=False)
        require_symbol(*marker.args)


@pytest.fixture(scope="session")
def package():
    """package(name, **inductor_configs) -> path of a compiled CPU .pt2."""
    def get(name, **configs):
        return EXAMPLES[name].package("cpu", **configs)
    return get


@pytest.fixture(scope="session")
def example():
    return EXAMPLES.__getitem__


def aoti_tempdirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "aoti_cy-*")))


def package_folder(library_path):
    """The private aoti_cy-* folder a loaded package was extracted into.
    Tests check that *their* folders go: other processes (pytest-xdist
    workers, other suites) may make and remove folders of their own."""
    folders = [f for f in aoti_tempdirs()
               if os.path.realpath(library_path).startswith(os.path.realpath(f) + os.sep)]
    assert len(folders) == 1, (library_path, folders)
    return folders[0]


def extract_library(package_path, into):
    """Unpack a .pt2 into ``into``; return the path of its model .so."""
    import zipfile
    with zipfile.ZipFile(package_path) as archive:
        archive.extractall(into)
    (library,) = [os.path.join(root, f) for root, _, files in os.walk(into)
                  for f in files if f.endswith(".wrapper.so")]
    return library


def assert_outputs_match(outputs, expected):
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(got, want)


def run_in_threads(work, count, timeout):
    """Run ``work(i)`` on ``count`` threads at once; the exceptions they
    raised (a thread still running after ``timeout`` s fails the test)."""
    errors = []

    def guarded(i):
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 - returned to the test
            errors.append(e)
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return errors


class RunGate:
    """Stands in for ``proxy_models.BARRIER``: a run of the ``rendezvous``
    model stops inside its custom op until the test releases it, so a test
    knows for certain that a run is in flight (no sleeping, no guessing how
    long a model takes on this machine)."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def wait(self, timeout):
        self.entered.set()
        if not self.release.wait(timeout):
            raise TimeoutError("the test never released the run")


def delayed_input(stream, x):
    """On CUDA ``stream``: a long spin, then x * 3 into a fresh tensor. A run
    that is not ordered after this work on ``stream`` reads zeros."""
    with torch.cuda.stream(stream):
        y = torch.zeros_like(x)
        torch.cuda._sleep(200_000_000)
        y.copy_(x * 3)
    return y


@pytest.fixture
def exact_cuda_math():
    """Eager and compiled CUDA runs compared in full float32, not TF32 (use
    with ``pytest.mark.usefixtures``)."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def graphs_of(model):
    """Signature -> captured run, over every graph set of a model loaded with
    ``cuda_graphs=True``."""
    found = {}
    for graph_set in model.cuda_graphs.captured():
        found.update(graph_set)
    return found


def assert_same_tree(got, want):
    """Same pytree structure, and close values leaf by leaf."""
    got_leaves, got_spec = torch.utils._pytree.tree_flatten(got)
    want_leaves, want_spec = torch.utils._pytree.tree_flatten(want)
    assert got_spec == want_spec
    for a, b in zip(got_leaves, want_leaves):
        torch.testing.assert_close(a, b)
