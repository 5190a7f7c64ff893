"""Sphinx configuration of the aoti_cy documentation.

Build: ``sphinx-build -W -b html docs <out>`` from the repository root, with
aoti_cy built in place (autodoc imports it, so the Cython classes'
docstrings and signatures are read from the compiled modules).
"""

import importlib.util
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

