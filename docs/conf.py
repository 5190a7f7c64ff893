"""Sphinx configuration of the aoti_cy documentation.

Build: ``sphinx-build -W -b html docs <out>`` from the repository root, with
aoti_cy built in place (autodoc imports it, so the Cython classes'
docstrings and signatures are read from the compiled modules).
"""

import importlib.util
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

project = "aoti_cy"
author = "the aoti_cy authors"
copyright = "the aoti_cy authors"

import aoti_cy  # noqa: E402  (after the path is set)

release = aoti_cy.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
# aoti_cy.ray imports Ray, an optional extra: without it, document it anyway.
autodoc_mock_imports = [] if importlib.util.find_spec("ray") else ["ray"]
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "undoc-members": False,
                           "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True

html_theme = "furo"
html_title = f"aoti_cy {release}"
html_static_path = []


def _literal_before_letter(app, what, name, obj, options, lines):
    """Let a letter follow an inline literal, as in a plural of a name in
    double backquotes: reStructuredText needs an escaped space there."""
    for i, line in enumerate(lines):
        lines[i] = _LITERAL.sub(_escape_letter_after, line)


def _escape_letter_after(match):
    literal, letter = match.group(1), match.group(2)
    return literal + "\\ " + letter if letter else literal


# Inline literals scanned left to right, with the letter that follows one.
_LITERAL = re.compile(r"(``[^`]+``)([A-Za-z])?")


def setup(app):
    app.connect("autodoc-process-docstring", _literal_before_letter)
