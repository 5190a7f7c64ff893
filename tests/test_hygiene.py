"""The sources build without warnings and pass the Cython linter.

CI runs these with the rest of the suite, so a new warning fails the build:
Cython's own warnings (-Werror -Wextra: unused entries, variables maybe used
before assignment), cython-lint, and the C++ helpers in csrc/ at -Wall -Wextra
-Werror (torch's headers are system headers here: their warnings are torch's).
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CYTHON_SOURCES = sorted(
    glob.glob(os.path.join(ROOT, "aoti_cy", "*.pyx"))
    + [os.path.join(ROOT, "tests", "cython_consumer", "consumer.pyx"),
       os.path.join(ROOT, "benchmarks", "floor", "nogil_loop.pyx")])
CPP_SOURCES = sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")))


@pytest.mark.parametrize("source", CYTHON_SOURCES, ids=os.path.basename)
def test_cython_source_has_no_warnings(source, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cython", "-3", "--cplus", "-Werror", "-Wextra",
         "-I", ROOT, source, "-o", str(tmp_path / "out.cpp")],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_cython_lint_is_clean():
    pytest.importorskip("cython_lint", reason="cython-lint is not installed")
    bindir = os.path.dirname(sys.executable)   # it runs pycodestyle from PATH
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    files = CYTHON_SOURCES + sorted(glob.glob(os.path.join(ROOT, "aoti_cy", "*.pxd"))
                                    + glob.glob(os.path.join(ROOT, "aoti_cy", "includes", "*.pxd")))
    done = subprocess.run([os.path.join(bindir, "cython-lint"), *files], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("source", CPP_SOURCES, ids=os.path.basename)
def test_cpp_helper_has_no_warnings(source):
    cxx = shutil.which("g++") or pytest.skip("no g++")
    system = [*cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    done = subprocess.run(
        [cxx, "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
         "-Wno-unused-parameter", "-DTORCH_API_INCLUDE_EXTENSION_H",
         "-I", os.path.join(ROOT, "csrc"), *[f"-isystem{d}" for d in system], source],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
