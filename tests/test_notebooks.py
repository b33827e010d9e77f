"""The notebooks in analysis/ are stored without outputs and run end to end on small data."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "analysis").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch, executed_notebooks):
    """Each notebook runs end to end. When this session's docs build (tests/test_docs.py, which
    runs first) executed it the same way, its stored result is read instead of running the
    notebook a second time; otherwise (this file alone, no Sphinx) it runs here."""
    executed = executed_notebooks.get("folder", path.parent / "-") / path.name
    if executed.is_file():
        nb = nbformat.read(executed, as_version=4)
    else:
        monkeypatch.setenv("CDTP_NOTEBOOK_SMALL", "1")
        monkeypatch.setenv("MPLBACKEND", "Agg")
        nb = nbformat.read(path, as_version=4)
        # runs in analysis/ (relative paths such as ../circuits/ resolve); writes nothing there
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    # every code cell of the notebook as stored in analysis/ ran, in order
    assert len(code) == len([c for c in nbformat.read(path, as_version=4).cells
                             if c.cell_type == "code" and c.source.strip()])
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
