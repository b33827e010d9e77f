"""The documentation: the Sphinx site builds without a warning, and its Python code runs.

``test_docs_build`` builds ``docs/`` with warnings as errors (``-W --keep-going``), as ``make
docs`` does, from a copy of ``docs/`` in a temporary folder (the build generates pages and runs
the notebooks into its source folder; nothing is written into the repository). It is skipped only
when Sphinx is not installed (``pip install -e '.[docs]'``; ``make test`` installs it).

``test_python_blocks_run`` runs every Python block of ``docs/*.md`` (fenced ````` ```python `````)
and ``docs/*.rst`` (``.. code-block:: python``) as written, one file at a time, its blocks in
order in one namespace, in a temporary folder holding copies of ``circuits/`` and
``scenarios/`` and a short quickstart run in ``results/quick.nc``. A TOML block with a caption
(MyST ```` ```{code-block} toml ```` with ``:caption: my_circuit.toml``) is written to that file
before the blocks after it run, so a tutorial's own files are the ones used. A block preceded by
the marker ``<!-- docs-test: skip (reason) -->`` (Markdown) or ``.. docs-test: skip (reason)``
(reStructuredText) is skipped with that reason: blocks that need the top-level ``import cdtp``
API carry it until that API is merged.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([*DOCS.glob("*.md"), *DOCS.glob("*.rst")])

SKIP = re.compile(r"^\s*(?:<!--|\.\.)\s*docs-test:\s*skip\s*\((?P<reason>.*)\)\s*(?:-->)?\s*$")
MD_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})\s*(?P<info>.*)$")
RST_CODE = re.compile(r"^(?P<indent>\s*)\.\. code-block::\s*(?P<lang>\w+)\s*$")


def blocks(path: Path) -> list[dict]:
    """The code blocks of a page, in order: ``{"lang", "code", "line", "file", "skip"}``;
    ``file`` is the caption of a captioned block, ``skip`` the reason of a skip marker."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i, skip = [], 0, None
    while i < len(lines):
        line = lines[i]
        m = SKIP.match(line)
        if m:
            skip = m["reason"]
            i += 1
            continue
        if path.suffix == ".md" and (m := MD_FENCE.match(line)):
            info = m["info"].strip()
            lang = info.strip("{}").split()[0] if info else ""
            if info.startswith("{code-block}"):
                lang = info.split("}", 1)[1].strip()
            j, body, caption = i + 1, [], None
            while j < len(lines) and not lines[j].strip().startswith(m["fence"]):
                opt = re.match(r"^:caption:\s*(.+)$", lines[j].strip())
                if info.startswith("{") and opt and not body:
                    caption = opt[1]
                elif not (info.startswith("{") and not body and lines[j].strip().startswith(":")):
                    body.append(lines[j])
                j += 1
            while body and not body[0].strip():
                body.pop(0)
            out.append({"lang": lang, "code": "\n".join(body), "line": i + 1, "file": caption,
                        "skip": skip})
            skip, i = None, j + 1
            continue
        if path.suffix == ".rst" and (m := RST_CODE.match(line)):
            j, caption = i + 1, None
            while j < len(lines) and lines[j].strip().startswith(":"):
                opt = re.match(r"^:caption:\s*(.+)$", lines[j].strip())
                caption = opt[1] if opt else caption
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip() or
                                      len(lines[j]) - len(lines[j].lstrip()) > len(m["indent"])):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():
                body.pop()
            while body and not body[0].strip():
                body.pop(0)
            width = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
            out.append({"lang": m["lang"], "code": "\n".join(b[width:] for b in body),
                        "line": i + 1, "file": caption, "skip": skip})
            skip, i = None, j
            continue
        if line.strip():
            skip = None  # a marker applies to the block right after it
        i += 1
    return out


def test_the_block_parser_finds_the_tutorials_blocks(tmp_path):
    """The parser sees the tutorial's Python blocks, its captioned TOML files and its marker."""
    found = blocks(DOCS / "tutorial.md")
    python = [b for b in found if b["lang"] == "python"]
    files = [b["file"] for b in found if b["file"]]
    assert len(python) >= 6
    assert files[:3] == ["my_circuit.toml", "my_scenario.toml", "my_sweep.toml"]
    assert all(b["code"].strip() for b in python)
    page = tmp_path / "page.md"
    page.write_text("<!-- docs-test: skip (why) -->\n```python\nx = 1\n```\n\n"
                    "```python\ny = 2\n```\n")
    marked = blocks(page)
    assert [b["skip"] for b in marked] == ["why", None]  # a marker applies to the next block


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """circuits/, scenarios/ and a 5-cycle quickstart run in results/quick.nc, made once."""
    from cdtp.study.scenario import load_scenario

    base = tmp_path_factory.mktemp("docs-workspace")
    for folder in ("circuits", "scenarios"):
        shutil.copytree(ROOT / folder, base / folder)
    (base / "results").mkdir()
    load_scenario(base / "scenarios" / "quickstart.toml", ["cycles=5"]).simulate(
        path=base / "results" / "quick.nc").close()
    return base


@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


PAGES_WITH_PYTHON = [p for p in PAGES if any(b["lang"] == "python" for b in blocks(p))]


def test_there_are_python_blocks_to_run():
    assert DOCS / "tutorial.md" in PAGES_WITH_PYTHON


@pytest.mark.brian2
@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=lambda p: p.name)
def test_python_blocks_run(page, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    work = tmp_path / "work"
    shutil.copytree(workspace, work)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    with _cwd(work):
        for block in blocks(page):
            if block["file"]:
                Path(block["file"]).write_text(block["code"] + "\n", encoding="utf-8")
            if block["lang"] != "python":
                continue
            if block["skip"]:
                continue  # reported by test_marked_blocks
            code = compile(block["code"], f"{page.name}:{block['line']}", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                raise AssertionError(f"{page.name}, the Python block at line {block['line']}"
                                     f" raised {type(exc).__name__}: {exc}") from exc
            ran += 1
    import matplotlib.pyplot as plt

    plt.close("all")
    assert ran >= 1


MARKED = [(p, b) for p in PAGES for b in blocks(p) if b["lang"] == "python" and b["skip"]]


@pytest.mark.parametrize("page, block", MARKED or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="no block is marked"))], ids=lambda x: getattr(x, "name", None) or
    (f"line{x['line']}" if isinstance(x, dict) else str(x)))
def test_marked_blocks(page, block):
    """Each block marked ``docs-test: skip (reason)``, reported as skipped with its reason."""
    pytest.skip(f"{page.name} line {block['line']}: {block['skip']}")


def test_docs_build(tmp_path, executed_notebooks):
    pytest.importorskip("sphinx", reason="Sphinx is not installed: pip install -e '.[docs]'"
                        " (make test installs it)")
    for module in ("numpydoc", "myst_nb", "furo"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install -e"
                            " '.[docs]' (make test installs it)")
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "_generated",
                                                                 "generated"))
    env = {**os.environ, "CDTP_DOCS_REPO": str(ROOT), "MPLBACKEND": "Agg"}
    env.pop("CDTP_DOCS_REUSE_EXAMPLES", None)
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(source), str(tmp_path / "html")],
        env=env, capture_output=True, text=True, timeout=900,
    )
    # the notebooks it ran, for tests/test_notebooks.py (which would run them again otherwise)
    executed_notebooks["folder"] = source / "_generated" / "analysis"
    assert done.returncode == 0, done.stderr[-5000:] + done.stdout[-2000:]
    html = tmp_path / "html"
    # the generated pages are there, with what the code defines
    cli = (html / "cli.html").read_text(encoding="utf-8")
    from cdtp.study.cli import build_parser

    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    for command in sub.choices:
        assert f"cdtp {command}" in cli
    toml = (html / "toml.html").read_text(encoding="utf-8")
    from cdtp.study.scenario import _GAMMA

    for key in _GAMMA:
        assert f"gamma.{key}" in toml
    data = (html / "datamodel.html").read_text(encoding="utf-8")
    for name in ("snapshot_a", "boundary_time", "steps_per_cycle", "weight_change"):
        assert name in data
    for nb in (ROOT / "analysis").glob("*.ipynb"):
        page = html / "_generated" / "analysis" / f"{nb.stem}.html"
        assert page.is_file()
        assert "cell_output" in page.read_text(encoding="utf-8")  # rendered with its outputs
    # the figures of the notebooks are there (drawn inline by the kernel, not lost to Agg)
    anatomy = html / "_generated" / "analysis" / "anatomy_of_a_gamma_cycle.html"
    assert anatomy.read_text(encoding="utf-8").count("<img") >= 2
    assert (source / "_generated" / "example.nc").is_file()
