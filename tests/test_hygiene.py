"""The sources build without warnings and pass the Cython linter.

CI runs these with the rest of the suite, so a new warning fails the build:
Cython's own warnings (-Werror -Wextra: unused entries, variables maybe used
before assignment), cython-lint, and the C++ helpers in csrc/ at -Wall -Wextra
-Werror (torch's headers are system headers here: their warnings are torch's).
"""

import glob
import os
import re
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


# The project's text speaks of the project and its users, not of how it was
# built. These are the words such history uses; each pattern is checked
# against history it must find and legitimate uses it must spare below.
HISTORY_PATTERNS = {
    "a work session": re.compile(
        r"\bsession\s*\d+|\b(?:first|second|third|fourth|fifth|sixth|seventh|this|that|last"
        r"|next|previous|earlier|later|the)\s+session\b", re.I),
    "a ticket number": re.compile(r"\b(?:issue|ticket|bug|PR)\s*#?\d+|\bissue's\b|\bthe issue\b",
                                  re.I),
    "a machine on loan": re.compile(r"\blent\b|\bborrowed\s+(?:machine|gpu|host|h100|h200)\b",
                                    re.I),
    "a round of work": re.compile(r"\bround\s+\d+\b|\brounds of (?:work|review)\b|\bwork round\b",
                                  re.I),
    "a review": re.compile(r"\breview(?:s|ed|er|ers)?\b", re.I),
}

# The whole tree: the project's text, code, comments and tests.
HISTORY_CHECKED = ["README.md", "docs", "aoti_cy", "csrc", "tests", "scripts", "benchmarks",
                   ".ci", "pyproject.toml", "setup.py"]
# Build output, and this file, which holds the patterns and the phrases that
# test them.
HISTORY_SKIPPED = {os.path.join("docs", "_build"), os.path.join("tests", "test_hygiene.py")}
TEXT_SUFFIXES = (".md", ".py", ".pyx", ".pxd", ".pyi", ".cpp", ".h", ".sh", ".json", ".txt",
                 ".toml", ".rst", ".supp", "")


def _is_build_output(relative):
    """Cython's C++ beside its .pyx, and the build's generated module: written
    by the build, not by the project."""
    stem, suffix = os.path.splitext(relative)
    return ((suffix == ".cpp" and os.path.exists(os.path.join(ROOT, stem + ".pyx")))
            or relative == os.path.join("aoti_cy", "_build_info.py"))


def _history_files():
    for entry in HISTORY_CHECKED:
        path = os.path.join(ROOT, entry)
        if os.path.isfile(path):
            if entry not in HISTORY_SKIPPED:
                yield entry
            continue
        for folder, dirs, names in os.walk(path):
            rel_folder = os.path.relpath(folder, ROOT)
            dirs[:] = [d for d in dirs if os.path.join(rel_folder, d) not in HISTORY_SKIPPED
                       and not d.startswith(".") and d != "__pycache__"]
            for name in sorted(names):
                relative = os.path.join(rel_folder, name)
                if (name.endswith(TEXT_SUFFIXES) and not name.endswith(".so")
                        and relative not in HISTORY_SKIPPED and not _is_build_output(relative)):
                    yield relative


def history_hits(text):
    """[(line number, what, line)] of the lines that read as history."""
    return [(number, what, line.strip())
            for number, line in enumerate(text.splitlines(), 1)
            for what, pattern in HISTORY_PATTERNS.items() if pattern.search(line)]


def test_history_patterns_find_history_and_spare_legitimate_words():
    history = ["Fifth session, after the device guards:", "measured in session 4",
               "(issue 15)", "Against the issue's targets:", "on the lent H200",
               "a borrowed GPU", "round 3 of the fixes", "after the review fixes",
               "A code review found two crashes", "reviewed by"]
    legitimate = ['@pytest.fixture(scope="session")', "compiled once per session into",
                  "a borrowed reference to the tensor", "rounded up to 64 bytes",
                  "Ray Serve's HTTP proxy", "a data-dependent issue of kernels",
                  "one round trip per call"]
    assert [line for line in history if not history_hits(line)] == []
    assert [hit for line in legitimate for hit in history_hits(line)] == []


def test_text_tells_no_history_of_its_making():
    files = list(_history_files())
    assert "README.md" in files and any(f.startswith("docs") for f in files)
    found = []
    for relative in files:
        with open(os.path.join(ROOT, relative), encoding="utf-8", errors="replace") as f:
            found += [f"{relative}:{number}: {what}: {line[:120]}"
                      for number, what, line in history_hits(f.read())]
    assert found == [], "\n".join(found)
