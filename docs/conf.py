"""Sphinx configuration of the cdtp documentation (``make docs``)."""

import os
import sys
from pathlib import Path

import cdtp

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

project = "cdtp"
author = "the cdtp developers"
copyright = "the cdtp developers"
version = release = cdtp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
    "cdtp_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
root_doc = "index"

# notebooks are executed by cdtp_docs.execute_notebooks (in analysis/, so that their relative
# paths resolve) before Sphinx reads them; MyST-NB only renders the stored outputs
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"cdtp {release}"
html_static_path = []
