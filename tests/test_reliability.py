"""Runs a person can trust: every bad input of a table exits 2 naming the key, writes nothing
and shows no traceback; no output path may destroy an input; Ctrl-C during a run writes the
completed cycles marked interrupted (twice: nothing); Ctrl-C during a sweep records nothing in
flight and the next run computes exactly the missing points; kill -9 keeps the old file and
the next run removes its litter; a corrupt point is set aside and computed again; divergence
in the first cycle is reported, marked, and readable by check / plot / info."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cdtp.model.units import UnitError, parse_quantity
from cdtp.record.dataset import load, remove_stale_temporaries
from cdtp.study.cli import main

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """\
name = "base"
circuit = "c.toml"
cycles = 2
dt = "1 ms"
device = "numpy"
[gamma]
frequency = "25 Hz"
duty = 0.5
[record]
variables = ["a"]
"""

NPZ_TASK = '[task]\nname = "npz"\npath = "data.npz"\n'
SWEEP = SCENARIO + '[sweep]\n"gamma.duty" = [0.3, 0.5]\n'


def _setup(tmp_path, scenario=SCENARIO, npz=None):
    shutil.copy(ROOT / "circuits" / "teacher_student.toml", tmp_path / "c.toml")
    (tmp_path / "s.toml").write_text(scenario)
    if npz is not None:
        np.savez(tmp_path / "data.npz", **npz)
    return tmp_path / "s.toml"


def _good_xy():
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(5, 6)), "y": rng.normal(size=(5, 4))}


def _listing(path: Path) -> set:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# -- the table: (id, how to prepare the folder, argv after the command, key named) -------------
# prepare(tmp) returns nothing; argv strings may use {tmp}. Every row must exit 2 with the key
# in the message, leave the folder as it was, and raise nothing.
def _scen(text=SCENARIO, npz=None):
    return lambda tmp: _setup(tmp, text, npz)


def _link(name, target, text=SCENARIO):
    def prep(tmp):
        _setup(tmp, text + (NPZ_TASK if target == "data.npz" else ""),
               npz=_good_xy() if target == "data.npz" else None)
        os.symlink(tmp / target, tmp / name)
    return prep


def _npz_rows():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 6)), rng.normal(size=(5, 4))
    nan_x = x.copy()
    nan_x[2, 3] = np.nan
    inf_y = y.copy()
    inf_y[1, 0] = np.inf
    return [
        ("npz_strings", {"x": np.array([["a"] * 6] * 5), "y": y}),
        ("npz_object", None),  # written by hand below (an object array needs pickling)
        ("npz_rank3", {"x": x[:, :, None], "y": y}),
        ("npz_width", {"x": x[:, :5], "y": y}),
        ("npz_nan", {"x": nan_x, "y": y}),
        ("npz_inf", {"x": x, "y": inf_y}),
        ("npz_labels_out_of_range", {"x": x, "y": np.array([0, 1, 2, 3, 4])}),
        ("npz_no_y", {"x": x}),
        ("npz_rows_differ", {"x": x, "y": y[:4]}),
        ("npz_complex", {"x": x + 1j, "y": y}),
    ]


def _npz_prep(arrays):
    def prep(tmp):
        _setup(tmp, SCENARIO + NPZ_TASK)
        if arrays is None:
            np.savez(tmp / "data.npz", x=np.array([object()] * 6, dtype=object),
                     y=np.zeros((1, 4)), allow_pickle=True)
        else:
            np.savez(tmp / "data.npz", **arrays)
    return prep


def _not_a_zip(tmp):
    _setup(tmp, SCENARIO + NPZ_TASK)
    (tmp / "data.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all")


def _binary_scenario(tmp):
    _setup(tmp)
    (tmp / "s.toml").write_bytes(bytes(range(256)) * 4)


def _binary_circuit(tmp):
    _setup(tmp)
    (tmp / "c.toml").write_bytes(b"\xff\xfe\x00\x81" * 64)


def _forged(attr, value):
    """A results file with one attribute replaced (for check / plot / info)."""
    def prep(tmp):
        _setup(tmp)
        ds = xr.Dataset({"loss": ("cycle", [1.0, 0.5])}, coords={"cycle": [0, 1]})
        ds.attrs = {"circuit": json.dumps({"name": "x", "sizes": [2, 2], "nonlinearity": "tanh",
                                           "hold": {"kind": "hard"}}),
                    "schedule": json.dumps({"gamma": {}, "plasticity": {}}),
                    "steps_per_cycle": 10, "dt": 0.001, "boundary_steps": "{}",
                    "diverged": "", "cycles_completed": 2}
        ds.attrs[attr] = value
        ds.to_netcdf(tmp / "r.nc", engine="h5netcdf")
    return prep


def _truncated_result(tmp):
    _setup(tmp)
    ds = xr.Dataset({"loss": ("cycle", np.arange(100.0))})
    ds.to_netcdf(tmp / "r.nc", engine="h5netcdf")
    data = (tmp / "r.nc").read_bytes()
    (tmp / "r.nc").write_bytes(data[: len(data) // 2])


def _existing_folder(tmp):
    _setup(tmp)
    (tmp / "folder.nc").mkdir()


def _parent_is_a_file(tmp):
    _setup(tmp)
    (tmp / "plain").write_text("a file, not a folder")


def _figures_is_a_file(tmp):
    _setup(tmp)
    (tmp / "figs").write_text("a file")


ROWS = [
    # output paths: never an input, a writable .nc path that is not a folder
    ("o_is_scenario_via_link", _link("s_link.nc", "s.toml"), ["run", "s.toml", "-o", "s_link.nc"],
     "-o"),
    ("o_is_circuit_via_link", _link("c_link.nc", "c.toml"), ["run", "s.toml", "-o", "c_link.nc"],
     "-o"),
    ("o_is_npz_via_link", _link("d_link.nc", "data.npz"), ["run", "s.toml", "-o", "d_link.nc"],
     "-o"),
    ("o_scenario_itself", _scen(), ["run", "s.toml", "-o", "s.toml"], "-o"),
    ("o_circuit_itself", _scen(), ["run", "s.toml", "-o", "c.toml"], "-o"),
    ("o_without_suffix", _scen(), ["run", "s.toml", "-o", "out/res"], "-o"),
    ("o_existing_folder", _existing_folder, ["run", "s.toml", "-o", "folder.nc"], "-o"),
    ("o_parent_is_a_file", _parent_is_a_file, ["run", "s.toml", "-o", "plain/r.nc"], "-o"),
    ("figures_is_a_file", _figures_is_a_file, ["run", "s.toml", "-o", "r.nc", "--figures", "figs"],
     "--figures"),
    ("sweep_o_is_scenario", _link("sw_link.nc", "s.toml", SWEEP),
     ["sweep", "s.toml", "-o", "sw_link.nc", "--workers", "0"], "-o"),
    ("sweep_workers_negative", _scen(SWEEP), ["sweep", "s.toml", "--workers", "-1"], "--workers"),
    ("name_escapes_results", _scen(SCENARIO.replace('"base"', '"../evil"')), ["run", "s.toml"],
     "name"),
    # time step and time constants
    ("dt_zero", _scen(), ["run", "s.toml", "--set", 'dt="0 ms"'], "dt"),
    ("dt_negative", _scen(), ["run", "s.toml", "--set", 'dt="-1 ms"'], "dt"),
    ("dt_wrong_dimension", _scen(), ["run", "s.toml", "--set", 'dt="1 Hz"'], "dt"),
    ("tau_shorter_than_dt", _scen(),
     ["run", "s.toml", "--set", 'circuit.time_constants.tau_a="0.1 ms"'],
     "circuit.time_constants.tau_a"),
    ("period_under_two_steps", _scen(), ["run", "s.toml", "--set", 'gamma.frequency="600 Hz"'],
     "gamma.frequency"),
    ("frequency_wrong_dimension", _scen(), ["run", "s.toml", "--set", 'gamma.frequency="8 ms"'],
     "gamma.frequency"),
    ("eta_omega_wrong_dimension", _scen(),
     ["run", "s.toml", "--set", 'circuit.plasticity.eta_omega="8 ms"'], "plasticity.eta_omega"),
    ("lag_negative", _scen(), ["run", "s.toml", "--set", 'gamma.lag="-2 ms"'], "gamma.lag"),
    # γ phases
    ("duty_never_feedforward", _scen(), ["run", "s.toml", "--set", "gamma.duty=0.001"],
     "gamma.duty"),
    ("duty_never_feedback", _scen(), ["run", "s.toml", "--set", "gamma.duty=0.999"],
     "gamma.duty"),
    ("gamma_values_not_numbers", _scen(),
     ["run", "s.toml", "--set", "gamma.shape=array", "--set", 'gamma.values=["a", "b"]'],
     "gamma.values"),
    ("window_start_out_of_range", _scen(),
     ["run", "s.toml", "--set", "plasticity_gate.kind=window", "--set",
      "plasticity_gate.start=2.0"], "plasticity_gate.start"),
    # seeds and counts
    ("seed_negative", _scen(), ["run", "s.toml", "--set", "seed=-1"], "seed"),
    ("task_seed_negative", _scen(), ["run", "s.toml", "--set", "task.seed=-3"], "task.seed"),
    ("circuit_seed_negative", _scen(), ["run", "s.toml", "--set", "circuit.seed=-1"], "seed"),
    ("cycles_negative", _scen(), ["run", "s.toml", "--set", "cycles=-5"], "cycles"),
    ("every_zero", _scen(), ["run", "s.toml", "--set", "record.every=0"], "record.every"),
    ("neurons_negative", _scen(), ["run", "s.toml", "--set", "record.neurons=-2"],
     "record.neurons"),
    ("n_test_zero", _scen(), ["run", "s.toml", "--set", "task.n_test=0"], "task.n_test"),
    ("eta_w_nan", _scen(), ["run", "s.toml", "--set", "circuit.plasticity.eta_w=nan"],
     "plasticity.eta_w"),
    # what to record
    ("layers_out_of_range", _scen(), ["run", "s.toml", "--set", "record.layers=[7]"],
     "record.layers"),
    ("layers_negative", _scen(), ["run", "s.toml", "--set", "record.layers=[-1]"],
     "record.layers"),
    ("variables_a_string", _scen(), ["run", "s.toml", "--set", 'record.variables="ahu"'],
     "record.variables"),
    ("trace_cycles_backwards", _scen(), ["run", "s.toml", "--set", "record.trace_cycles=[5, 2]"],
     "record.trace_cycles"),
    # memory estimate
    ("sizes_too_large", _scen(),
     ["run", "s.toml", "--set", "circuit.sizes=[100000, 100000]"], "circuit.sizes"),
    ("rhythm_too_slow", _scen(), ["run", "s.toml", "--set", 'gamma.frequency="1e-12 Hz"',
                                  "--set", 'dt="1 ms"'], "gamma.frequency"),
    ("cycles_too_many", _scen(), ["run", "s.toml", "--set", "cycles=100000000000000"], "cycles"),
    # kinds and names
    ("kind_unknown", _scen(), ["run", "s.toml", "--set", "kind=spiking"], "kind"),
    ("kind_rnn_on_a_circuit_file", _scen(), ["run", "s.toml", "--set", "kind=rnn"], "kind"),
    # files that are not what they claim
    ("binary_scenario", _binary_scenario, ["run", "s.toml"], "<file>"),
    ("binary_circuit", _binary_circuit, ["run", "s.toml"], "<file>"),
    ("npz_not_a_zip", _not_a_zip, ["run", "s.toml"], "task.path"),
    *[(name, _npz_prep(arrays), ["run", "s.toml"], "task.path") for name, arrays in _npz_rows()],
    # sweeps
    ("sweep_nan", _scen(SCENARIO + '[sweep]\n"gamma.duty" = [0.3, nan]\n'),
     ["sweep", "s.toml", "--workers", "0"], "sweep.gamma.duty"),
    ("sweep_nan_string", _scen(SCENARIO + '[sweep]\n"gamma.duty" = [0.3, "NaN"]\n'),
     ["sweep", "s.toml", "--workers", "0"], "sweep.gamma.duty"),
    # results files with forged or damaged contents
    ("check_forged_circuit", _forged("circuit", "{not json"), ["check", "r.nc"], "circuit"),
    ("info_forged_boundary_steps", _forged("boundary_steps", "[1, 2"), ["info", "r.nc"],
     "boundary_steps"),
    ("plot_forged_steps_per_cycle", _forged("steps_per_cycle", -3), ["plot", "r.nc"],
     "steps_per_cycle"),
    ("check_truncated_file", _truncated_result, ["check", "r.nc"], "r.nc"),
]


def test_the_table_has_at_least_40_rows():
    assert len(ROWS) >= 40
    assert len({r[0] for r in ROWS}) == len(ROWS)  # ids are unique


@pytest.mark.parametrize("prep, argv, key", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_exits_2_naming_the_key_and_writes_nothing(tmp_path, monkeypatch, capsys,
                                                            prep, argv, key):
    monkeypatch.chdir(tmp_path)  # default outputs (results/…) would appear here
    prep(tmp_path)
    before = _listing(tmp_path)
    code = main(argv)  # a traceback would be an exception raised here
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(rf"(^|[\s:]){re.escape(key)}:", err), err  # "file: key: message"
    assert "Traceback" not in err
    assert _listing(tmp_path) == before  # nothing written, nothing removed


# -- units and messages ------------------------------------------------------------------------
@pytest.mark.parametrize("text, dim, si", [
    ("1 kHz", "rate", 1e3), ("1 kHz", "frequency", 1e3), ("25 /s", "rate", 25.0),
    ("0.2 /ms", "rate", 200.0), ("100 us", "time", 1e-4), ("100 µs", "time", 1e-4),
    ("2 ms", "time", 2e-3), ("0.5 msecond", "time", 5e-4), ("8 Hz", "frequency", 8.0),
])
def test_si_prefixes_are_accepted(text, dim, si):
    # exact: prefixes are applied as a division by a power of ten
    assert parse_quantity(text, dim) == si


@pytest.mark.parametrize("text, dim", [("8 ms", "rate"), ("8 Hz", "time"), ("2 kHz", "time")])
def test_a_unit_of_another_dimension_says_wrong_dimension(text, dim):
    with pytest.raises(UnitError, match="wrong dimension"):
        parse_quantity(text, dim)


# -- divergence --------------------------------------------------------------------------------
# (the shipped circuit consolidates W once per cycle, so a huge η_W would first act in cycle 1:
# the first row changes W on every step)
# these simulations overflow on purpose: numpy's warnings about it are expected
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("overrides", [["circuit.plasticity.eta_w=1000",
                                        'circuit.plasticity.consolidation="step"'],
                                       ["circuit.plasticity.beta=1e6"],
                                       # η_Ω drives Δ1 (the shipped circuit mirrors W instead)
                                       ['circuit.feedback.rule="delta1"',
                                        'circuit.plasticity.eta_omega="1e9 /s"']])
def test_divergence_in_the_first_cycle_is_reported_and_readable(tmp_path, capsys, overrides):
    path = _setup(tmp_path)
    out = tmp_path / "d.nc"
    sets = [arg for o in overrides for arg in ("--set", o)]
    assert main(["run", str(path), "-o", str(out), *sets]) == 1
    err = capsys.readouterr().err
    assert re.search(r"the run diverged: cycle 0: ", err), err
    ds = load(out)
    assert ds.attrs["diverged"].startswith("cycle 0:") and ds.attrs["cycles_completed"] == 0
    report = out.with_suffix(".propositions.txt").read_text()
    assert "every check passed" not in report and "diverged" in report
    assert main(["check", str(out)]) == 1
    assert main(["info", str(out)]) == 0
    assert "diverged: cycle 0" in capsys.readouterr().out
    assert main(["plot", str(out), "-o", str(tmp_path / "figs")]) == 1  # nothing to draw
    assert "no cycle was completed" in capsys.readouterr().err


def test_divergence_after_some_cycles_is_plotted_and_checked(tmp_path, capsys):
    path = _setup(tmp_path, SCENARIO.replace("cycles = 2", "cycles = 20"))
    out = tmp_path / "d.nc"
    # a tight activity bound that the activity crosses once learning has started (measured:
    # |a| of layer 1 reaches 1.57 in cycle 1 with the shipped teacher-student circuit)
    # the figures of the diverged run are drawn by `cdtp plot` below (the same save_all)
    code = main(["run", str(path), "-o", str(out), "--no-figures", "--set",
                 "circuit.divergence.activity_bound=1.5"])
    assert code == 1
    ds = load(out)
    k = ds.attrs["cycles_completed"]
    assert 0 < k < 20 and ds.sizes["cycle"] == k
    assert ds.attrs["diverged"].startswith(f"cycle {k}:")
    capsys.readouterr()
    assert main(["plot", str(out), "-o", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "learning_curve.png").is_file()
    assert main(["check", str(out)]) == 1
    assert "the run diverged" in capsys.readouterr().err


# -- Ctrl-C during a run -----------------------------------------------------------------------
def _interrupted_simulation(backend, when):
    """simulate() with a StopOnInterrupt that gets a real SIGINT ``when`` ('between' chunks, or
    'within' one, from a timer thread); returns (interrupted Dataset, full Dataset)."""
    from cdtp.study.interrupts import StopOnInterrupt
    from cdtp.study.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "quickstart.toml",
                             ["cycles=12", "record.chunk_cycles=3", "record.trace_cycles=[0, 12]"])
    x, y, _ = scenario.stream()
    from cdtp.brian.simulation import simulate

    kwargs = dict(dt=scenario.dt, device="numpy", backend=backend, record=scenario.record)
    full = simulate(scenario.circuit, scenario.schedule, x, y, **kwargs)
    sent = []

    def progress(done, total):
        if done >= 3 and not sent:
            sent.append(done)
            if when == "between":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    with StopOnInterrupt() as interrupt:
        part = simulate(scenario.circuit, scenario.schedule, x, y, progress=progress,
                        interrupt=interrupt, **kwargs)
    return part, full


@pytest.mark.parametrize("backend, when", [("brian2", "between"), ("brian2", "within"),
                                           ("map", "between")])
def test_a_first_sigint_keeps_the_completed_cycles_marked_interrupted(backend, when):
    part, full = _interrupted_simulation(backend, when)
    k = part.attrs["cycles_completed"]
    assert part.attrs["interrupted"] and part.attrs["cycles_planned"] == 12
    assert 3 <= k < 12 and part.sizes["cycle"] == k
    # the completed cycles are those of an uninterrupted run, number for number (same seed,
    # same operations: equal to round-off)
    np.testing.assert_allclose(part.loss.values, full.loss.values[:k], rtol=0, atol=1e-12)
    np.testing.assert_allclose(part.weight.values, full.weight.values[:k], rtol=0, atol=1e-12)
    # no trace sample of the cycle cut short
    end = part.cycle_start_step.values[-1] + part.attrs["steps_per_cycle"]
    assert part.time.values.max() <= end * part.attrs["dt"] * (1 + 1e-12)


def test_a_second_sigint_aborts_and_brian2_does_not_swallow_the_first(tmp_path):
    import brian2  # noqa: F401  (its handler is installed on import; ours must win)

    from cdtp.study.interrupts import StopOnInterrupt

    with StopOnInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert interrupt.requested and not interrupt.aborted
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        assert interrupt.aborted


def _cdtp(*args, cwd, **kw):
    # the progress bar is drawn into the pipe (CDTP_PROGRESS=1): the tests follow it
    env = {**os.environ, "CDTP_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cdtp.study.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kw)


def _wait_for_progress(proc, pattern, at_least):
    buf = ""
    while True:
        ch = proc.stderr.read(1)
        if not ch:
            raise AssertionError(f"ended before progress {at_least}: {buf[-2000:]}")
        buf += ch
        m = re.findall(pattern, buf)
        if m and int(m[-1]) >= at_least:
            return buf


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


LONG = ["--set", "cycles=400", "--set", "record.chunk_cycles=2", "--set",
        "record.trace_cycles=[0, 2]"]


def test_a_second_sigint_writes_nothing(tmp_path):
    # both signals are real and synchronous (sent from the progress callback), so the second
    # surely comes before the result is written
    from cdtp.study.interrupts import StopOnInterrupt
    from cdtp.study.scenario import load_scenario

    scenario = load_scenario(_setup(tmp_path), ["cycles=8", "record.chunk_cycles=2"])
    out = tmp_path / "r.nc"

    def progress(done, total):
        if done >= 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    with StopOnInterrupt() as interrupt, pytest.raises(KeyboardInterrupt):
        scenario.simulate(path=out, progress=progress, interrupt=interrupt)
    assert interrupt.aborted
    assert _listing(tmp_path) == {"c.toml", "s.toml"}  # no result, no chunk files


def test_sigint_then_kill_9_on_the_command_line(tmp_path):
    path = _setup(tmp_path)
    out = tmp_path / "r.nc"
    # Ctrl-C: exit 130, the completed cycles written and marked interrupted
    proc = _cdtp("run", str(path), "-o", str(out), *LONG, cwd=tmp_path)
    _wait_for_progress(proc, r"(\d+)/400", 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    ds = load(out)
    assert ds.attrs["interrupted"] and ds.attrs["cycles_completed"] == ds.sizes["cycle"] >= 4
    assert ds.attrs["cycles_planned"] == 400
    assert "every check passed" not in out.with_suffix(".propositions.txt").read_text()
    # kill -9 while chunks are on disk: the previous file is untouched, the litter stays …
    before = _digest(out)
    proc = _cdtp("run", str(path), "-o", str(out), *LONG, cwd=tmp_path)
    _wait_for_progress(proc, r"(\d+)/400", 6)
    proc.kill()
    proc.communicate(timeout=60)
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".r.nc.")]
    assert _digest(out) == before
    # … until the next run into the same place removes it (its figures are those of any
    # finished run, drawn in tests/test_cli.py)
    assert main(["run", str(path), "-o", str(out), "--no-figures"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.nc.")]
    assert load(out).attrs["cycles_completed"] == 2


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".r.nc.cdtp-999999999.abc"  # above any pid_max
    alive = tmp_path / f".r.nc.cdtp-{os.getpid()}.abc"
    other = tmp_path / ".s.nc.cdtp-999999999.abc"
    for d in (dead, alive, other):
        d.mkdir()
    assert remove_stale_temporaries(tmp_path, "r.nc") == [dead]
    assert alive.exists() and other.exists()


# -- sweeps ------------------------------------------------------------------------------------
SWEEP4 = SCENARIO.replace("cycles = 2", "cycles = 30").replace('variables = ["a"]',
                                                               "variables = []\ngates = false")
SWEEP2 = SWEEP4 + '[sweep]\n"gamma.duty" = [0.3, 0.5]\n'
SWEEP4 += '[sweep]\n"gamma.duty" = [0.3, 0.4, 0.5, 0.6]\n'


def test_sigint_in_a_serial_sweep_records_nothing_in_flight(tmp_path):
    from cdtp.study.sweep import point_state, sweep

    path = _setup(tmp_path, SWEEP2)
    points = tmp_path / "points"

    def progress(done, total):
        if done == 1:  # a real SIGINT while the second point is being simulated
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        sweep(path, points, progress=progress)
    # the point in flight leaves nothing: no file, no failure record, no chunk folder
    assert sorted(p.name for p in points.iterdir()) == ["point_0000.nc"]
    assert point_state(points / "point_0000.nc")[0] == "complete"
    info = sweep(path, points)
    assert (info["computed"], info["skipped"]) == (1, 1)


@pytest.mark.slow  # a Dask LocalCluster of two processes: ~30-60 s on this machine
def test_sigint_in_a_parallel_sweep_shuts_the_workers_down_cleanly(tmp_path):
    path = _setup(tmp_path, SWEEP4.replace("cycles = 30", "cycles = 400"))
    proc = _cdtp("sweep", str(path), "-o", str(tmp_path / "sw.nc"), "--workers", "2",
                 cwd=tmp_path, start_new_session=True)
    points = tmp_path / "sw_points"
    deadline = time.time() + 240
    while not any(p.name.startswith(".point_") for p in points.glob(".*")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "WARNING" not in err, err
    assert not list(points.glob("*.failed.json")) and not list(points.glob("point_*.nc"))
    assert "run the same command again to compute the 4 missing" in err


def test_corrupt_incomplete_and_killed_points_are_set_aside_and_computed_again(tmp_path,
                                                                              capsys):
    from cdtp.study.sweep import combine, grid, point_state, sweep

    path = _setup(tmp_path, SWEEP2.replace("cycles = 30", "cycles = 3"))
    out = tmp_path / "sw.nc"
    assert main(["sweep", str(path), "-o", str(out), "--workers", "0"]) == 0
    points = tmp_path / "sw_points"
    # point 0 claims to be interrupted: it is not ok, and will be computed again
    with xr.open_dataset(points / "point_0000.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    ds.attrs["interrupted"] = "interrupted (SIGINT) after 2 of 3 cycles"
    ds.to_netcdf(points / "point_0000.nc", engine="h5netcdf")
    assert point_state(points / "point_0000.nc")[0] == "incomplete"
    keys, pts = grid(path)
    assert combine(keys, pts, points).status.values.ravel().tolist() == ["failed", "ok"]
    # point 1 truncated (a disk that filled up); a killed run's chunk folder lying around
    data = (points / "point_0001.nc").read_bytes()
    (points / "point_0001.nc").write_bytes(data[: len(data) // 3])
    assert point_state(points / "point_0001.nc")[0] == "corrupt"
    (points / ".point_0001.nc.cdtp-999999999.x").mkdir()
    capsys.readouterr()
    assert main(["sweep", str(path), "-o", str(out), "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "point_0000.nc.incomplete" in err and "point_0001.nc.corrupt" in err
    assert (points / "point_0000.nc.incomplete").exists()
    assert (points / "point_0001.nc.corrupt").exists()
    assert not (points / ".point_0001.nc.cdtp-999999999.x").exists()
    assert set(load(out).status.values.ravel()) == {"ok"}
    info = sweep(path, points)
    assert (info["computed"], info["skipped"]) == (0, 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_folder_is_refused_before_the_run(tmp_path, capsys):
    path = _setup(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["run", str(path), "-o", str(locked / "r.nc")]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)
