"""The documentation builds and its examples run.

Every ```python block of README.md and docs/*.md is run,
in order, one namespace per file, as a user would paste them. A block may be
preceded by a marker comment:

- ``<!-- example: cuda -->``: needs a CUDA GPU (skipped without one);
- ``<!-- example: ray -->``: needs Ray Serve (skipped without it);
- ``<!-- example: skip -->``: shown, not run (a sketch that needs files the
  reader has, such as their own model); use sparingly.

The Sphinx build runs with warnings as errors, as CI runs it.
"""

import glob
import importlib.util
import linecache
import os
import re
import subprocess
import sys
import types
import warnings

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(
    glob.glob(os.path.join(ROOT, "docs", "*.md")))
BLOCK = re.compile(
    r"(?:<!-- example: (?P<marker>[a-z]+) -->\n+)?^```python\n(?P<code>.*?)^```$",
    re.S | re.M)


def examples(path):
    """[(line, marker, code)] of the python blocks of one page."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("marker"), m.group("code"))
            for m in BLOCK.finditer(text)]


def has_ray_serve():
    """Whether Ray Serve imports; imported here, once, since its own imports
    warn about pydantic (the suite turns warnings into errors)."""
    if importlib.util.find_spec("ray") is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import ray.serve  # noqa: F401
        except ImportError:
            return False
    return True


PAGES_WITH_EXAMPLES = [p for p in PAGES if examples(p)]


@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES,
                         ids=lambda p: os.path.relpath(p, ROOT))
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)        # examples write files: keep them here
    blocks = examples(page)
    # The page's code at its own line numbers, so that tracebacks point into
    # the page and inspect.getsource finds classes defined in examples.
    filename = os.path.relpath(page, ROOT) + " (examples)"
    source = [""] * (max(line + code.count("\n") for line, _, code in blocks) + 1)
    for line, _, code in blocks:
        source[line - 1:line - 1 + code.count("\n")] = code.splitlines()
    text = "\n".join(source) + "\n"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    # A module of its own, as a user's script would be (classes defined in
    # examples are found by aoti_cy.testing's compile cache through it).
    module = types.ModuleType("docs_examples_" + re.sub(r"\W", "_", filename.split(" ")[0]))
    module.__file__ = filename
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        ran = _run_blocks(blocks, filename, namespace)
    finally:
        _stop_ray()
    if ran == 0:
        pytest.skip("every example of this page needs a GPU or Ray Serve")
    for value in list(namespace.values()):   # close what the examples left open
        close = getattr(value, "close", None)
        if callable(close) and hasattr(value, "closed") and not value.closed:
            close()


def _run_blocks(blocks, filename, namespace):
    ran = 0
    for line, marker, code in blocks:
        if marker == "skip":
            continue
        if marker == "cuda" and not torch.cuda.is_available():
            continue
        if marker == "ray" and not has_ray_serve():
            continue
        assert marker in (None, "cuda", "ray"), f"unknown marker {marker!r} at line {line}"
        compiled = compile("\n" * (line - 1) + code, filename, "exec")
        exec(compiled, namespace)
        ran += 1
    return ran


def _stop_ray():
    """An example that failed half-way leaves no Ray instance to the next."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from ray import serve
        serve.shutdown()
        ray.shutdown()


def test_every_page_marker_is_known():
    for page in PAGES:
        for line, marker, _ in examples(page):
            assert marker in (None, "cuda", "ray", "skip"), f"{page}:{line}: {marker!r}"


def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs packages are not installed")
    pytest.importorskip("myst_parser", reason="the docs packages are not installed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         os.path.join(ROOT, "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert (tmp_path / "html" / "index.html").exists()


def _readme_commands():
    """The lines of the README's first ```sh block (.ci/run runs the second)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = re.search(r"^```sh\n(.*?)^```$", text, re.S | re.M)
    return block.group(1).splitlines()


def test_readme_is_short_and_its_test_command_builds_the_docs():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) < 300
    demo, test = _readme_commands()
    assert "-m aoti_cy demo" in demo and "-m pytest" in test
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        docs_extra = re.search(r"^docs = \[(.*)\]$", f.read(), re.M).group(1)
    pins = re.findall(r'"([^"]+)"', docs_extra)
    assert pins and all(pin in test.split() for pin in pins), (pins, test)
