"""Sphinx configuration of the aoti_cy documentation.

Build: ``sphinx-build -W -b html docs <out>`` from the repository root, with
aoti_cy built in place (autodoc imports it, so the Cython classes'
docstrings and signatures are read from the compiled modules).
"""

import os
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
exclude_patterns = ["_build", "_drafts", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "undoc-members": False,
                           "show-inheritance": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True

html_theme = "furo"
html_title = f"aoti_cy {release}"
html_static_path = []


def _literal_before_letter(app, what, name, obj, options, lines):
    """Let a plural or possessive follow an inline literal (````Model``s``):
    reStructuredText needs an escaped space between them."""
    for i, line in enumerate(lines):
        lines[i] = _LITERAL_THEN_LETTER.sub(r"``\1``\\ ", line)


import re  # noqa: E402

_LITERAL_THEN_LETTER = re.compile(r"``([^`]+)``(?=[A-Za-z])")


def setup(app):
    app.connect("autodoc-process-docstring", _literal_before_letter)
