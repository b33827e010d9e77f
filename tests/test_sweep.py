"""Sweeps: grid expansion and validation, serial == parallel, failures recorded, and an
interrupted sweep resumes without recomputing finished points."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cdtp.model.circuit import ConfigError
from cdtp.study.cli import main
from cdtp.study.sweep import _point_file, combine, dimension_name, grid, sweep

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


def test_names_are_swept_for_categorical_keys(tmp_path):
    keys, points = grid(_write(tmp_path, '"gamma.shape" = ["square", "sinusoid"]'))
    assert keys == ["gamma.duty", "gamma.shape"]
    assert [p["coords"]["gamma.shape"] for p in points] == ["square", "sinusoid"] * 2


@pytest.mark.parametrize(
    "extra, key, says",
    [
        ('"gamma.frequency" = []', "sweep.gamma.frequency", "empty grid"),
        ('"gamma.frequency" = ["fast", "slow"]', "sweep.gamma.frequency", "is not numeric"),
        ('"gamma.frequency" = [true]', "sweep.gamma.frequency", "is not a number"),
        ('"gamma.shape" = ["square", "squarish"]', "sweep.gamma.shape", "did you mean 'square'"),
        ('"gamma.shape" = [1, 2]', "sweep.gamma.shape", "is not a name"),
        ('"gamma.frequency" = ["25 Hz", "25 Hz"]', "sweep.gamma.frequency", "appears twice"),
        ('"gamma.frequency" = ["700 Hz"]', "sweep.gamma.frequency", "2 time steps"),  # < 2 steps
        ('"gamma.frequncy" = ["25 Hz"]', "sweep.gamma.frequncy", "did you mean 'frequency'"),
    ],
)
def test_bad_grids_exit_2_naming_file_and_key_and_write_nothing(tmp_path, capsys, extra, key, says):
    path = _write(tmp_path, extra)
    out = tmp_path / "out" / "sweep.nc"
    assert main(["sweep", str(path), "-o", str(out), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {key}" in err and says in err, err
    assert not out.parent.exists()
    with pytest.raises(ConfigError):
        grid(path)


def test_a_scenario_without_a_sweep_table_is_refused(tmp_path, capsys):
    path = _write(
        tmp_path, text=SCENARIO.format(extra="").replace('[sweep]\n"gamma.duty" = [0.3, 0.5]', "")
    )
    assert main(["sweep", str(path), "-o", str(tmp_path / "o" / "s.nc"), "--workers", "0"]) == 2
    assert f"{path}: sweep" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def resumed_sweep(tmp_path_factory):
    """The 2 × 2 sweep of γ frequency and duty cycle, point by point, stopped by a
    KeyboardInterrupt after 2 points and run again. What each step left is kept for the test
    below; the 4 finished points are also the point-by-point reference of the batched sweep
    (computing them a second time would cost ~4 × 4 s)."""
    tmp_path = tmp_path_factory.mktemp("resumed")
    path = _write(tmp_path, '"gamma.frequency" = ["25 Hz", "50 Hz"]')
    points_dir = tmp_path / "points"

    def stop_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(path, points_dir, progress=stop_after_two)
    finished = sorted(p.name for p in points_dir.glob("point_*.nc"))
    mtimes = {p: (points_dir / p).stat().st_mtime_ns for p in finished}
    info = sweep(path, points_dir)
    return {"path": path, "points_dir": points_dir, "finished": finished, "mtimes": mtimes,
            "info": info}


def test_interrupted_sweep_resumes_without_recomputing(resumed_sweep):
    points_dir, info = resumed_sweep["points_dir"], resumed_sweep["info"]
    finished, mtimes = resumed_sweep["finished"], resumed_sweep["mtimes"]
    assert len(finished) == 2
    assert (info["computed"], info["skipped"]) == (2, 2)
    assert all((points_dir / p).stat().st_mtime_ns == t for p, t in mtimes.items())
    ds = combine(info["keys"], info["points"], points_dir)
    assert dict(ds.sizes)["gamma_duty"] == 2 and dict(ds.sizes)["gamma_frequency"] == 2
    # dimensions usable as keywords, the dotted key kept in their attributes
    assert ds.sel(gamma_frequency=50.0, gamma_duty=0.3).status.item() == "ok"
    assert ds.gamma_frequency.attrs["key"] == "gamma.frequency"
    assert ds.gamma_frequency.attrs["units"] == "Hz"
    assert np.all(ds.status.values == "ok")
    # the held-out evaluation of every point (teacher-student has 256 test examples), as the
    # point file holds it
    from cdtp.record.dataset import load

    first = info["points"][0]
    point = load(_point_file(points_dir, first["index"]))
    coords = {dimension_name(k): first["coords"][k] for k in info["keys"]}
    assert set(ds.test_loss.dims) == {"gamma_frequency", "gamma_duty", "epoch"}
    np.testing.assert_array_equal(ds.test_loss.sel(coords).values, point.test_loss.values)


def test_a_failing_point_is_recorded_and_the_others_run(tmp_path):
    # β so large that the circuit leaves the activity bound at one grid point only
    path = _write(tmp_path, '"circuit.divergence.activity_bound" = [1000.0, 0.05]')
    info = sweep(path, tmp_path / "points")
    ds = combine(info["keys"], info["points"], tmp_path / "points")
    status = ds.status.sel(circuit_divergence_activity_bound=0.05).values
    assert set(status.ravel()) == {"diverged"}
    ok = ds.status.sel(circuit_divergence_activity_bound=1000.0).values
    assert set(ok.ravel()) == {"ok"}


def test_a_point_that_raises_is_recorded_with_its_error_and_rerun_later(tmp_path, monkeypatch):
    import cdtp.brian.simulation

    real = cdtp.brian.simulation.simulate

    def flaky(circuit, schedule, *args, **kwargs):
        if schedule.gamma.duty == 0.3:
            raise RuntimeError("injected failure at duty 0.3")
        return real(circuit, schedule, *args, **kwargs)

    path = _write(tmp_path)
    monkeypatch.setattr(cdtp.brian.simulation, "simulate", flaky)
    info = sweep(path, tmp_path / "points")
    ds = combine(info["keys"], info["points"], tmp_path / "points")
    assert ds.status.sel(gamma_duty=0.3).item() == "failed"
    assert "injected failure" in ds.error.sel(gamma_duty=0.3).item()
    assert np.all(np.isnan(ds.loss.sel(gamma_duty=0.3).values))
    assert ds.status.sel(gamma_duty=0.5).item() == "ok"
    assert np.all(np.isfinite(ds.loss.sel(gamma_duty=0.5).values))
    # a failed point is not finished: the next run computes it (and only it)
    monkeypatch.setattr(cdtp.brian.simulation, "simulate", real)
    again = sweep(path, tmp_path / "points")
    assert (again["computed"], again["skipped"]) == (1, 1)
    ds = combine(again["keys"], again["points"], tmp_path / "points")
    assert set(ds.status.values.ravel()) == {"ok"}
    assert not list((tmp_path / "points").glob("*.failed.json"))


@pytest.fixture(scope="module")
def gate_sweep(tmp_path_factory):
    """The cdtp command on a sweep of names: the paper's vs the descending gate, sinusoid γ."""
    tmp_path = tmp_path_factory.mktemp("gates")
    text = SCENARIO.format(extra="").replace(
        '"gamma.duty" = [0.3, 0.5]', '"plasticity_gate.kind" = ["paper", "descending"]'
    )
    path = _write(tmp_path, text=text.replace("duty = 0.5", 'shape = "sinusoid"'))
    out = tmp_path / "out" / "gates.nc"
    code = main(["sweep", str(path), "-o", str(out), "--workers", "0"])
    return code, out


def test_sweep_of_names_runs_and_combines(gate_sweep):
    code, out = gate_sweep
    from cdtp.record.dataset import load

    ds = load(out)
    assert code == 0  # every point ran without diverging
    assert list(ds["plasticity_gate_kind"].values) == ["descending", "paper"]
    assert set(ds.status.values) == {"ok"}
    assert ds.loss.shape == (2, 3) and np.all(np.isfinite(ds.loss.values))
    for kind in ("descending", "paper"):  # each slice is that point's own file, unchanged
        f = ds.point_file.sel(plasticity_gate_kind=kind).item()
        np.testing.assert_array_equal(
            ds.loss.sel(plasticity_gate_kind=kind).values, load(f).loss.values
        )
        assert load(f).attrs["schedule"].count(f'"kind": "{kind}"') == 1


def test_info_check_and_plot_read_a_sweep_file(gate_sweep, tmp_path, capsys):
    import json

    _, out = gate_sweep
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "plasticity_gate.kind = descending, paper" in text and "2 ok" in text
    code = main(["check", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert [p["coords"]["plasticity_gate.kind"] for p in report["points"]] == [
        "descending",
        "paper",
    ]
    fractions = [c["passed_fraction"] for p in report["points"] for c in p["checks"].values()]
    # exit 1 iff some check fails somewhere (or a point did not run)
    assert code == (1 if report["failures"] else 0)
    assert bool(report["failures"]) == any(f is not None and f < 1 for f in fractions)
    assert main(["plot", str(out), "-o", str(tmp_path / "figs")]) == 0
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"learning_curves.png", "final_loss.png", "P5_median_residual.png"} <= names


@pytest.mark.slow
def test_serial_and_parallel_sweeps_are_identical(tmp_path):
    # each point is an independent deterministic simulation: the same numbers bit for bit
    path = _write(tmp_path)
    serial = sweep(path, tmp_path / "serial", workers=0)
    parallel = sweep(path, tmp_path / "parallel", workers=2)
    a = combine(serial["keys"], serial["points"], tmp_path / "serial")
    b = combine(parallel["keys"], parallel["points"], tmp_path / "parallel")
    xr.testing.assert_identical(a.drop_vars("point_file"), b.drop_vars("point_file"))


@pytest.mark.slow
def test_a_sweep_runs_on_an_existing_scheduler(tmp_path):
    # --scheduler ADDRESS: the same points and numbers as a serial sweep
    from distributed import LocalCluster

    path = _write(tmp_path)
    serial = sweep(path, tmp_path / "serial", workers=0)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        remote = sweep(path, tmp_path / "remote", scheduler=cluster.scheduler_address)
    assert remote["computed"] == 2
    a = combine(serial["keys"], serial["points"], tmp_path / "serial")
    b = combine(remote["keys"], remote["points"], tmp_path / "remote")
    xr.testing.assert_identical(a.drop_vars("point_file"), b.drop_vars("point_file"))


def test_batched_sweep_equals_point_by_point(resumed_sweep, tmp_path):
    """--batch runs the points that differ only in γ parameters as one network: the same
    per-cycle outputs and losses as separate points, and it resumes like any sweep."""
    # the same scenario computed point by point (and resumed: each point is its own run)
    path, single = resumed_sweep["path"], resumed_sweep["info"]
    batched = sweep(path, tmp_path / "batched", batch=True)
    assert batched["computed"] == 4 and all(r["status"] == "done" for r in batched["results"])
    a = combine(single["keys"], single["points"], resumed_sweep["points_dir"])
    b = combine(batched["keys"], batched["points"], tmp_path / "batched")
    # as tests/test_batch.py: the same operations per block, measured ≤ 1e-15
    np.testing.assert_allclose(b.output.values, a.output.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.loss.values, a.loss.values, rtol=0, atol=1e-12)
    assert (b.status.values == "ok").all()
    # the points really differ (else equality above would be vacuous)
    assert np.ptp(a.loss.values[..., -1]) > 1e-6
    # batched points carry no traces or snapshots, so no check is evaluated (none failed)
    assert "P1_passed_fraction" in a and not any(v.endswith("_passed_fraction") for v in b)
    assert "batched" in xr.open_dataset(
        tmp_path / "batched" / "point_0000.nc", engine="h5netcdf"
    ).attrs
    again = sweep(path, tmp_path / "batched", batch=True)
    assert again["computed"] == 0 and again["skipped"] == 4


def test_batch_groups_split_by_compiled_kind_and_other_keys(tmp_path):
    from cdtp.study.sweep import batch_groups

    path = _write(tmp_path, '"gamma.shape" = ["square", "sinusoid"]\n"cycles" = [3, 4]')
    _, points = grid(path)
    groups = batch_groups(path, points)
    # shape is compiled in and cycles is not a schedule key: every (shape, cycles) alone,
    # the two duties of each together
    assert sorted(len(g) for g in groups) == [2, 2, 2, 2]
    for g in groups:
        assert len({(p["coords"]["gamma.shape"], p["coords"]["cycles"]) for p in g}) == 1
    assert [len(g) for g in batch_groups(path, points, max_size=1)] == [1] * 8


def test_batched_sweep_from_the_command_line(tmp_path, capsys):
    path = _write(tmp_path, '"gamma.frequency" = ["25 Hz", "50 Hz"]')
    out = tmp_path / "out" / "sweep.nc"
    assert main(["sweep", str(path), "-o", str(out), "--workers", "0", "--batch"]) == 0
    assert "4 points computed" in capsys.readouterr().out
    # nothing a check needs was recorded: `check` says so and does not pass the file
    assert main(["check", str(out)]) == 1
    assert "no check could be evaluated" in capsys.readouterr().err
    assert main(["plot", str(out), "-o", str(tmp_path / "figs")]) == 0
    assert list((tmp_path / "figs").glob("*.png"))


def test_combined_file_carries_scenario_and_circuit_and_a_csv_table(gate_sweep, tmp_path):
    import csv
    import json

    from cdtp.record.dataset import load

    _, out = gate_sweep
    ds = load(out)
    scenario = json.loads(ds.attrs["scenario"])
    assert scenario["name"] == "tiny_sweep" and "sweep" in scenario
    assert json.loads(ds.attrs["circuit"])["sizes"] == [6, 6, 6, 4]
    assert json.loads(ds.attrs["swept_dims"]) == ["plasticity_gate_kind"]
    table = tmp_path / "points.csv"
    assert main(["info", str(out), "--table", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [r["plasticity_gate_kind"] for r in rows] == ["descending", "paper"]
    for r in rows:
        point = ds.sel(plasticity_gate_kind=r["plasticity_gate_kind"])
        # the CSV holds the file's numbers (written with Python's repr: exact)
        assert float(r["loss_final"]) == float(point.loss.values[-1])
        assert float(r["loss_mean"]) == pytest.approx(float(point.loss.mean()), rel=1e-12)
        assert r["status"] == "ok" and r["diverged"] == "0"
    # a table of a single run, or into something that is not a .csv, is refused
    assert main(["info", str(out), "--table", str(tmp_path / "points.txt")]) == 2


def test_a_sweep_file_written_before_the_dimension_rename_is_still_read(gate_sweep, tmp_path,
                                                                        capsys):
    """Files from before dimensions were named for ``.sel`` carry the dotted keys as dimensions
    and no ``swept_dims``: info and plot read them through the keys."""
    from cdtp.record.dataset import load, save

    _, out = gate_sweep
    old = load(out).rename({"plasticity_gate_kind": "plasticity_gate.kind"})
    del old.attrs["swept_dims"]
    path = tmp_path / "old.nc"
    save(old, path)
    assert main(["info", str(path)]) == 0
    assert "plasticity_gate.kind = descending, paper" in capsys.readouterr().out
    assert main(["plot", str(path), "-o", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "learning_curves.png").stat().st_size > 0
