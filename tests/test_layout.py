"""The package layout is the pipeline (docs/model.md §1): each package imports only those before
it, the packages that read and check results never import Brian2, and modules and functions
stay readable in size.

These read the source with :mod:`ast` (function-level imports included); nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "cdtp"

# package → the cdtp packages it may import (the pipeline order of cdtp/__init__.py)
ALLOWED = {
    "model": set(),
    "data": {"model"},
    "reference": {"model", "data"},
    "record": {"model"},
    "brian": {"model", "reference", "record"},
    "analysis": {"model", "reference", "record"},
    "study": {"model", "data", "reference", "record", "brian", "analysis", "rnn", "api"},
    "rnn": {"model"},
}
# the façade may import every package
TOP_LEVEL = {"__init__", "api"}
# Brian2 is imported by cdtp.brian, and by cdtp.study only for the side effect of its import
# (Brian2 installs a Ctrl-C handler on import, which cdtp.study.interrupts puts in order)
BRIAN2 = {"brian", "study"}

# Modules over about 500 lines, and functions over about 80 lines of code (docstring excluded),
# that are kept whole, each with its reason. A new entry needs a reason; an entry that no longer
# applies must be removed (the tests fail both ways).
LONG_MODULES = {
    "reference/cdtp_map.py": "the circuit's numpy oracle: the parameters, state and the one"
                             " step function whose stages mirror the Brian2 objects' order;"
                             " its helpers (mirror gains, normalization, pending weights)"
                             " read that state",
    "reference/trainer.py": "one training loop per method of the reference table; split with"
                            " the learning work in flight on it",
    "reference/targets.py": "the target rules of seed 000 side by side, each next to its"
                            " equation, so they can be compared line by line",
    "study/sweep.py": "grid, run (local or Dask) and combine of one file format; they share its"
                      " private layout",
    "record/dataset.py": "the results file's schema: the table of variables in the docstring"
                         " and the code that writes each of them",
    "brian/simulation.py": "simulate and the per-cycle collectors it drives, and the numpy"
                           " device that stands in for Brian2 with the same interface",
    "rnn/experiment.py": "seed 002's experiment: the config schema (every key's check beside"
                         " its default, as in study/scenario.py) and the run loop it drives",
    "rnn/network.py": "seed 002's RNN: forward, BPTT and the regularized-inversion targets"
                      " through time, which share the recurrence's conventions",
    "study/scenario.py": "the scenario file's schema: every key's check next to its default",
    "data/tasks.py": "one generator per task, each small; the task catalogue reads as one page",
    "study/cli.py": "the subcommands of `cdtp`, each small, sharing the parser and the error"
                    " handling",
}
LONG_FUNCTIONS = {
    "brian/engine.py:build": "the network in the order Brian2 runs it: clamp, monitors, objects",
    "brian/simulation.py:simulate": "one loop over chunks of cycles with recording,"
                                    " interruption and divergence handled in the loop",
    "reference/cdtp_map.py:step": "one time step of the map in the circuit's stage order; its"
                                  " stages are read against Eqs 46–52",
    "reference/trainer.py:train": "the training loop of every reference method; under change by"
                                  " the learning work",
    "rnn/experiment.py:run": "the experiment loop of seed 002 (evaluation, stop rule, logging)",
    "study/scenario.py:scenario_from_dict": "validates the scenario table key by key, in the"
                                            " file's order",
    "study/sweep.py:sweep": "local and Dask execution of one grid, with the same failure"
                            " handling",
    "study/sweep.py:combine": "stacks point files along the swept dimensions, checking each",
}
MODULE_LINES = 500
FUNCTION_LINES = 80


def _modules():
    return sorted(p for p in ROOT.rglob("*.py"))


def _key(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path) -> set[str]:
    """Top-level names imported from ``cdtp.*`` and third-party packages, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "cdtp":
                out |= {f"cdtp.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("path", _modules(), ids=_key)
def test_each_package_imports_only_those_before_it(path):
    parts = path.relative_to(ROOT).parts
    if len(parts) == 1:
        assert parts[0][:-3] in TOP_LEVEL, \
            f"{parts[0]}: a new top-level module; put it in a package"
        return
    package = parts[0]
    assert package in ALLOWED, f"{package}: a package not in the layout (tests/test_layout.py)"
    used = {name.split(".")[1] for name in _imports(path)
            if name.startswith("cdtp.") and name != "cdtp.__version__"}
    wrong = used - ALLOWED[package] - {package}
    assert not wrong, f"cdtp/{_key(path)} imports cdtp.{', cdtp.'.join(sorted(wrong))}"
    if package not in BRIAN2:
        brian2 = {n for n in _imports(path) if n.split(".")[0] == "brian2"}
        assert not brian2, f"cdtp/{_key(path)} imports brian2 outside cdtp.brian"


def test_every_package_says_what_it_holds_and_may_import():
    for package in ALLOWED:
        doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text())) or ""
        assert ":mod:" in doc, f"cdtp/{package}/__init__.py: say which modules it holds"
        assert "May import" in doc, f"cdtp/{package}/__init__.py: say what it may import"


def _function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = 0
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                doc = first.end_lineno - first.lineno + 1
            yield node.name, node.end_lineno - node.lineno + 1 - doc


def test_long_modules_and_functions_have_a_reason():
    long_modules = {_key(p) for p in _modules()
                    if len(p.read_text().splitlines()) > MODULE_LINES * 1.05}
    long_functions = {f"{_key(p)}:{name}" for p in _modules()
                      for name, n in _function_lengths(p) if n > FUNCTION_LINES * 1.05}
    assert long_modules <= set(LONG_MODULES), \
        f"modules over {MODULE_LINES} lines without a reason: " \
        f"{sorted(long_modules - set(LONG_MODULES))}"
    assert long_functions <= set(LONG_FUNCTIONS), \
        f"functions over {FUNCTION_LINES} lines without a reason: " \
        f"{sorted(long_functions - set(LONG_FUNCTIONS))}"
    # a reason for something that is no longer long is stale
    assert set(LONG_MODULES) <= long_modules, sorted(set(LONG_MODULES) - long_modules)
    assert set(LONG_FUNCTIONS) <= long_functions, sorted(set(LONG_FUNCTIONS) - long_functions)
