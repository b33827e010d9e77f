"""Sweeps: grid expansion and validation, serial == parallel, failures recorded, and an
interrupted sweep resumes without recomputing finished points."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cdtp.circuit import ConfigError
from cdtp.cli import main
from cdtp.sweep import combine, grid, sweep

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """
name = "tiny_sweep"
circuit = "c.toml"
cycles = 3
dt = "1 ms"
device = "numpy"
[task]
name = "teacher_student"
seed = 20
[gamma]
frequency = "25 Hz"
duty = 0.5
[record]
variables = []
gates = false
[sweep]
"gamma.duty" = [0.3, 0.5]
{extra}
"""


def _write(tmp_path, extra="", text=None):
    shutil.copy(ROOT / "circuits" / "teacher_student.toml", tmp_path / "c.toml")
    path = tmp_path / "s.toml"
    path.write_text(text if text is not None else SCENARIO.format(extra=extra))
    return path


def test_grid_is_the_product_of_the_swept_values_in_si_units(tmp_path):
    keys, points = grid(_write(tmp_path, '"gamma.frequency" = ["25 Hz", "50 Hz"]'))
    assert keys == ["gamma.duty", "gamma.frequency"]
    assert [p["coords"] for p in points] == [
        {"gamma.duty": d, "gamma.frequency": f} for d in (0.3, 0.5) for f in (25.0, 50.0)
    ]


@pytest.mark.parametrize("extra, key", [
    ('"gamma.frequency" = []', "sweep.gamma.frequency"),
    ('"gamma.shape" = ["square", "sinusoid"]', "sweep.gamma.shape"),
    ('"gamma.frequency" = ["33 Hz"]', "sweep.gamma.frequency"),  # not a whole number of steps
])
def test_bad_grids_are_refused(tmp_path, extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        grid(_write(tmp_path, extra))


def test_bad_sweep_files_exit_2_and_write_nothing(tmp_path, capsys):
    path = _write(tmp_path, '"gamma.frequency" = []')
    out = tmp_path / "out" / "sweep.nc"
    assert main(["sweep", str(path), "-o", str(out), "--workers", "0"]) == 2
    assert "empty grid" in capsys.readouterr().err and not out.parent.exists()


def test_interrupted_sweep_resumes_without_recomputing(tmp_path):
    path = _write(tmp_path, '"gamma.frequency" = ["25 Hz", "50 Hz"]')
    points_dir = tmp_path / "points"

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(path, points_dir, progress=stop_after_two)
    finished = sorted(p.name for p in points_dir.glob("point_*.nc"))
    assert len(finished) == 2
    mtimes = {p: (points_dir / p).stat().st_mtime_ns for p in finished}
    info = sweep(path, points_dir)
    assert (info["computed"], info["skipped"]) == (2, 2)
    assert all((points_dir / p).stat().st_mtime_ns == t for p, t in mtimes.items())
    ds = combine(info["keys"], info["points"], points_dir)
    assert dict(ds.sizes)["gamma.duty"] == 2 and dict(ds.sizes)["gamma.frequency"] == 2
    assert np.all(ds.status.values == "ok")


def test_a_failing_point_is_recorded_and_the_others_run(tmp_path):
    # β so large that the circuit leaves the activity bound at one grid point only
    path = _write(tmp_path, '"circuit.divergence.activity_bound" = [1000.0, 0.05]')
    info = sweep(path, tmp_path / "points")
    ds = combine(info["keys"], info["points"], tmp_path / "points")
    status = ds.status.sel({"circuit.divergence.activity_bound": 0.05}).values
    assert set(status.ravel()) == {"diverged"}
    ok = ds.status.sel({"circuit.divergence.activity_bound": 1000.0}).values
    assert set(ok.ravel()) == {"ok"}


@pytest.mark.slow
def test_serial_and_parallel_sweeps_are_identical(tmp_path):
    # each point is an independent deterministic simulation: the same numbers bit for bit
    path = _write(tmp_path)
    serial = sweep(path, tmp_path / "serial", workers=0)
    parallel = sweep(path, tmp_path / "parallel", workers=2)
    a = combine(serial["keys"], serial["points"], tmp_path / "serial")
    b = combine(parallel["keys"], parallel["points"], tmp_path / "parallel")
    xr.testing.assert_identical(a.drop_vars("point_file"), b.drop_vars("point_file"))
