"""A consumer extension built against the installed aoti_cy cimports it and
runs a model inside `with nogil:`; one built against an older C API fails to
import, clearly."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import aoti_cy
from aoti_cy import capi

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = """
from setuptools import setup
from Cython.Build import cythonize
setup(ext_modules=cythonize({source!r}, include_path=[{include!r}],
                            compiler_directives={{"language_level": 3}}))
"""


def _build(folder, source, include):
    """Build ``source`` (a .pyx in tests/cython_consumer) in ``folder`` with
    ``include`` as its cimport path; return the folder."""
    shutil.copy(os.path.join(HERE, "cython_consumer", source), folder)
    (folder / "setup.py").write_text(
        SETUP.format(source=os.path.basename(source), include=include))
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def consumer(tmp_path_factory):
    build = _build(tmp_path_factory.mktemp("consumer"), "consumer.pyx", aoti_cy.get_include())
    # Plain C: the public API needs no C++ (no libcpp, no C++ bool).
    assert not list(build.glob("consumer.cpp")) and list(build.glob("consumer.c"))
    sys.path.insert(0, str(build))
    try:
        import consumer
        yield consumer
    finally:
        sys.path.remove(str(build))


def test_consumer_of_an_older_c_api_fails_to_import_clearly(tmp_path):
    # Built against the .pxd files of C API version 2 (which declared the
    # classes' fields), imported beside this aoti_cy: a clear ImportError,
    # not a call into a layout that no longer exists.
    build = _build(tmp_path, os.path.join("capi_v2", "old_consumer.pyx"),
                   os.path.join(HERE, "cython_consumer", "capi_v2"))
    done = subprocess.run(
        [sys.executable, "-c", "import old_consumer"], cwd=build,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [aoti_cy.get_include(), os.environ.get("PYTHONPATH", "")])))
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert re.search(r"(ImportError|ValueError): .*aoti_cy\.interface", done.stderr), \
        done.stderr[-2000:]
    assert re.search(r"does not export expected C function|size changed", done.stderr), \
        done.stderr[-2000:]
    assert "Segmentation" not in done.stderr and "Traceback" in done.stderr


def test_container_of_refuses_what_is_not_a_container(consumer, package):
    for wrong in (None, 3, torch.zeros(2)):
        with pytest.raises(TypeError, match="expected an aoti_cy.ModelContainer"):
            consumer.run_nogil(wrong, [torch.zeros(8)], 1)
    with aoti_cy.load(package("add_one")) as model:
        assert consumer.counts(model) == (model.num_inputs, model.num_outputs) == (1, 1)


def test_consumer_runs_model_without_the_gil(consumer, package):
    inputs = [torch.full((8,), float(i)) for i in range(50)]
    with aoti_cy.load(package("add_one")) as model:
        outputs = consumer.run_nogil(model, inputs, len(inputs))
    for x, y in zip(inputs, outputs):
        torch.testing.assert_close(y, x + 1)


def test_consumer_gets_an_exception_from_nogil_code(consumer, package):
    with aoti_cy.load(package("add_one")) as model:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        consumer.run_nogil(model, [torch.zeros(8)], 1)


def test_consumer_inputs_are_checked_without_the_gil(consumer, package):
    with aoti_cy.load(package("add_one")) as model:
        for bad, message in [(torch.zeros(4), "dim 0 is 4, the model expects 8"),
                             (torch.zeros(8, dtype=torch.float64), "dtype torch.float64"),
                             (torch.zeros(8, 1), "dimensions")]:
            with pytest.raises(ValueError, match=f"input 0 .*{message}"):
                consumer.run_nogil(model, [bad], 1)
        x = torch.randn(8)
        torch.testing.assert_close(consumer.run_nogil(model, [x], 1)[0], x + 1)


def test_consumer_sees_the_c_api_version_it_was_built_for(consumer):
    compiled_against, loaded = consumer.versions()
    assert compiled_against == loaded == capi.CAPI_VERSION == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_consumer_inputs_on_the_wrong_device_are_refused(consumer):
    from aoti_cy.testing import EXAMPLES
    with aoti_cy.load(EXAMPLES["add_one"].package("cuda")) as model:
        with pytest.raises(ValueError, match="input 0 .*is on cpu, the model expects a CUDA"):
            consumer.run_nogil(model, [torch.zeros(8)], 1)
        x = torch.randn(8, device="cuda")
        torch.testing.assert_close(consumer.run_nogil(model, [x], 1)[0], x + 1)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_consumer_inputs_on_another_gpu_are_refused(consumer):
    # The model's own checks compare the device type only; aoti_cy's guards
    # add the GPU, so run_handles refuses what run refuses.
    from aoti_cy.testing import EXAMPLES
    with aoti_cy.load(EXAMPLES["add_one"].package("cuda"), device="cuda:1") as model:
        with pytest.raises(ValueError, match="input 0 .*does not fit the model: it is on cuda:0 but the model "
                                             "runs on cuda:1"):
            consumer.run_nogil(model, [torch.zeros(8, device="cuda:0")], 1)
        x = torch.randn(8, device="cuda:1")
        torch.testing.assert_close(consumer.run_nogil(model, [x], 1)[0], x + 1)
