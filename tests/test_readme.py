"""Every ```python block of README.md runs as written, and ``import cdtp`` gives the API.

The blocks run in the order of the README, as one session (one namespace, like a reader
pasting them into one interpreter), in a scratch folder that holds the repository's
``circuits/`` and ``scenarios/``: whatever they write lands there. A block preceded by the line
``<!-- readme-test: skip -->`` (invisible on a rendered page) is not run; every other block is
— keep them fast (the numpy device, few cycles).
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_MARKER = "<!-- readme-test: skip -->"


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) of every ```python block of a Markdown text."""
    out = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S):
        line = text.count("\n", 0, m.start()) + 1
        previous = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((line, m.group(1), previous == SKIP_MARKER))
    return out


def test_the_block_extractor_honours_the_skip_marker():
    text = ("a\n```python\nx = 1\n```\n\n" + SKIP_MARKER + "\n```python\nraise\n```\n"
            "```toml\nk = 1\n```\n")
    assert python_blocks(text) == [(2, "x = 1\n", False), (7, "raise\n", True)]


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    run = [(line, code) for line, code, skipped in blocks if not skipped]
    assert len(run) >= 4  # the API, own data, simulate, batch and Dataset examples
    for name in ("circuits", "scenarios"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    try:
        for line, code in run:
            try:
                exec(compile(code, f"README.md:{line}", "exec"), namespace)
            except Exception as exc:  # say which block failed, with its line
                raise AssertionError(f"the README's python block at line {line} failed:"
                                     f" {type(exc).__name__}: {exc}") from exc
    finally:
        plt.close("all")
    # what the blocks say they produce
    assert (tmp_path / "results" / "quick.nc").is_file() and (tmp_path / "run.nc").is_file()
    ds = namespace["cdtp"].open_result(tmp_path / "results" / "quick.nc")
    assert ds.sizes["cycle"] == 10 and list(ds.epoch.values) == [0.0, 1.0]


def test_import_cdtp_is_cheap_and_gives_the_api():
    """``import cdtp`` imports neither Brian2 nor xarray nor matplotlib; each name of
    ``cdtp.__all__`` resolves, with a numpydoc docstring for the functions."""
    code = ("import sys, cdtp; heavy = [m for m in ('brian2', 'xarray', 'matplotlib', 'numpy')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
    import cdtp

    for name in cdtp.__all__:
        obj = getattr(cdtp, name)
        if callable(obj):
            assert "Parameters\n    ----------" in obj.__doc__, name
    assert cdtp.plots.__name__ == "cdtp.analysis.plots"
    assert cdtp.sweep.__name__ == "cdtp.study.sweep"
    assert cdtp.simulate is __import__("cdtp.brian.simulation").brian.simulation.simulate
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cdtp.nope  # noqa: B018


def test_open_result_and_run_refuse_bad_paths(tmp_path):
    import cdtp
    from cdtp.model.circuit import ConfigError

    with pytest.raises(ValueError, match="no such results file"):
        cdtp.open_result(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    with pytest.raises(ValueError, match="not a NetCDF results file"):
        cdtp.open_result(tmp_path / "junk.nc")
    scenario = ROOT / "scenarios" / "quickstart.toml"
    with pytest.raises(ValueError, match=r"^output: .*out.txt: a results file must end in"):
        cdtp.run(scenario, tmp_path / "out.txt", overrides=["cycles=1"])
    (tmp_path / "d.nc").mkdir()
    with pytest.raises(ValueError, match=r"d\.nc is a folder"):
        cdtp.run(scenario, tmp_path / "d.nc", overrides=["cycles=1"])
    with pytest.raises(ConfigError, match="cycles: 0 is out of range"):
        cdtp.run(scenario, tmp_path / "o.nc", overrides=["cycles=0"])
    assert not list(tmp_path.glob("out*")) and not (tmp_path / "o.nc").exists()


def test_check_and_report_of_a_result_match_the_propositions_module():
    """``cdtp.check`` / ``cdtp.report`` are ``cdtp check``: the same checks, the same table."""
    import cdtp
    from cdtp.analysis import propositions
    from cdtp.data.tasks import teacher_student
    from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule

    circuit = cdtp.load_circuit(ROOT / "circuits" / "teacher_student.toml")
    task = teacher_student(3, n_in=6, hidden=(6, 6), n_out=4, n_train=3, nonlinearity="tanh")
    schedule = Schedule(GammaSchedule("square", frequency=25.0, duty=0.25),
                        PlasticityGate("descending"))
    ds = cdtp.simulate(circuit, schedule, task.x_train, task.y_train, dt=1e-3, backend="map")
    checks = cdtp.check(ds)
    assert set(checks) == set(propositions.check_all(ds))
    for name, res in checks.items():
        np.testing.assert_array_equal(res.residual.values,
                                      propositions.check_all(ds)[name].residual.values)
    text = cdtp.report(ds)
    assert text.startswith(propositions.report(checks))
    assert "no violation" in text or "is violated" in text


def test_run_takes_rnn_files_as_the_command_does(tmp_path):
    import cdtp

    path = tmp_path / "r.toml"
    path.write_text('kind = "rnn"\ntask = "temporal_order"\nhiden = 10\n')
    with pytest.raises(ValueError, match=r"kind: 'rnn' .*hiden"):
        cdtp.run(path, tmp_path / "o.nc")
    assert not (tmp_path / "o.nc").exists()
