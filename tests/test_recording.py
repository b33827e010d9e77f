"""Recording into the docs/model.md §5 Dataset: Brian2 and the reference map record the same thing,
streaming equals in-memory, NetCDF round trips are identical, bad requests are refused, and a
failed run leaves no file."""

import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdtp.brian.simulation import simulate
from cdtp.model.circuit import circuit_from_dict
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.model.layers import init_network
from cdtp.model.nonlinearities import get_nonlinearity
from cdtp.record.dataset import RecordSpec, layer_traces, load, projection_matrix, save

DT = 1e-3
SCHEDULE = Schedule(GammaSchedule("square", frequency=50.0, duty=0.3), PlasticityGate())


def _circuit(sizes=(4, 5, 4, 3), **extra):
    return circuit_from_dict({
        "sizes": list(sizes), "nonlinearity": "tanh", "seed": 2,
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "1 ms", "tau_tau": "0 ms"},
        "plasticity": {"eta_w": 0.1, "eta_omega": "5 /s", "beta": 0.3}, **extra,
    })


def _stream(circuit, n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.normal(size=(n, circuit.sizes[0])),
            0.5 * rng.normal(size=(n, circuit.sizes[-1])))


@pytest.mark.brian2
def test_brian2_and_map_record_the_same_dataset():
    # the discrete limit (docs/model.md §2.2): the circuit equals the map step for step, so every
    # recorded number agrees to float64 round-off accumulated over 120 steps (< 1e-12)
    circuit = _circuit()
    x, y = _stream(circuit, 6)
    spec = RecordSpec(variables=("a", "h", "u", "target", "m", "fb"), chunk_cycles=2)
    dm = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", record=spec)
    db = simulate(circuit, SCHEDULE, x, y, dt=DT, device="numpy", record=spec)
    assert set(dm.data_vars) == set(db.data_vars)
    for name in dm.data_vars:
        assert dm[name].dims == db[name].dims, name
        np.testing.assert_allclose(db[name].values, dm[name].values, atol=1e-12, rtol=0,
                                   err_msg=name)
    xr.testing.assert_allclose(dm, db, rtol=0, atol=1e-12)  # coordinates too


def test_layout_units_and_long_names():
    circuit = _circuit()
    x, y = _stream(circuit, 3)
    ds = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map")
    for name, var in ds.variables.items():
        assert "long_name" in var.attrs, name
        if name in ds.data_vars:
            assert "units" in var.attrs, name
    assert ds.time.attrs["units"] == "s"
    assert ds.sizes["cycle"] == 3 and ds.sizes["time"] == 3 * 20
    assert ds.attrs["diverged"] == "" and ds.attrs["cycles_completed"] == 3
    # sample k is the state at the end of step k: t = (k + 1) dt
    np.testing.assert_allclose(ds.time.values, DT * np.arange(1, 61))
    # traces of one layer, and u is NaN below layer 2
    t1 = layer_traces(ds, 1)
    assert t1.sizes["unit"] == 5 and np.all(np.isnan(t1.u.values))
    # W_1 at the start of cycle 0 is the circuit's initial W_1 (same seed, numpy init)
    rng = np.random.default_rng(circuit.seed)
    net = init_network(circuit.sizes, rng, nonlinearity=get_nonlinearity("tanh"), bias=True)
    w1 = projection_matrix(ds, "feedforward_1", cycle=0)
    np.testing.assert_array_equal(w1.values, net.weights[1])


def test_streaming_to_disk_equals_memory_and_round_trips(tmp_path):
    circuit = _circuit()
    x, y = _stream(circuit, 5)
    spec = RecordSpec(chunk_cycles=2)
    mem = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", record=spec)
    disk = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", record=spec,
                    path=tmp_path / "run.nc")
    xr.testing.assert_identical(mem, disk)
    assert sorted(os.listdir(tmp_path)) == ["run.nc"]  # no chunk files left behind
    save(mem, tmp_path / "again.nc")
    xr.testing.assert_identical(load(tmp_path / "again.nc"), mem)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4))
def test_round_trip_is_identical_for_any_layer_sizes(tmp_path, sizes):
    circuit = circuit_from_dict({
        "sizes": sizes, "nonlinearity": "tanh", "seed": 0,
        "feedback": {"init": "random"},
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "1 ms", "tau_tau": "0 ms"},
    })
    x, y = _stream(circuit, 2)
    ds = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map",
                  record=RecordSpec(variables=("a", "m"), every=3))
    path = tmp_path / f"r{'_'.join(map(str, sizes))}.nc"
    save(ds, path)
    xr.testing.assert_identical(load(path), ds)


def test_a_failing_run_writes_nothing(tmp_path):
    circuit = _circuit()
    x, y = _stream(circuit, 4)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", path=tmp_path / "r.nc",
                 record=RecordSpec(chunk_cycles=1), progress=stop)
    assert os.listdir(tmp_path) == []


def test_a_diverged_run_is_written_and_marked(tmp_path):
    circuit = _circuit(divergence={"activity_bound": 0.2})
    x, y = _stream(circuit, 4)
    ds = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", path=tmp_path / "r.nc")
    assert ds.attrs["diverged"].startswith("cycle 0: layer")
    assert load(tmp_path / "r.nc").attrs["diverged"] == ds.attrs["diverged"]


@pytest.mark.parametrize("kwargs, key", [
    ({"variables": ("a", "voltage")}, "record.variables"),
    ({"every": 0}, "record.every"),
    ({"trace_cycles": (3, 1)}, "record.trace_cycles"),
])
def test_bad_record_requests_are_refused(kwargs, key):
    with pytest.raises(ValueError, match=key):
        RecordSpec(**kwargs)


def test_per_cycle_summaries_alone_are_a_recording(tmp_path):
    """With no traces, gates, snapshots or weights, the per-cycle output, label and loss are
    still recorded (what a batched sweep point holds) and match a full recording's."""
    circuit = _circuit()
    x, y = _stream(circuit, 3)
    bare = RecordSpec(variables=(), gates=False, snapshots=False, weights=False)
    ds = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", record=bare,
                  path=tmp_path / "r.nc")
    full = simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map")
    assert {"output", "label", "loss"} <= set(ds.data_vars)
    assert "time" not in ds.dims and "weight" not in ds
    assert not any(v.startswith("snapshot_") for v in ds.data_vars)
    xr.testing.assert_identical(ds.loss, full.loss)


def test_recording_into_a_missing_folder_is_refused(tmp_path):
    circuit = _circuit()
    x, y = _stream(circuit, 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        simulate(circuit, SCHEDULE, x, y, dt=DT, backend="map", path=tmp_path / "no" / "r.nc")


def test_analysis_modules_never_import_brian2():
    code = ("import sys, cdtp.record.dataset, cdtp.analysis.propositions, cdtp.analysis.plots;"
            " assert 'brian2' not in sys.modules, 'brian2 imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.brian2
def test_brian2_and_map_agree_when_the_period_is_not_whole_steps():
    # 16 Hz at 1 ms: cycles of 62 and 63 steps. The circuit clamps each example at the step the
    # schedule says and the map steps through the same cycles, so the discrete limit still
    # holds step for step: float64 round-off over 187 steps (< 1e-12)
    schedule = Schedule(GammaSchedule("square", frequency=16.0, duty=0.3), PlasticityGate())
    circuit = _circuit()
    x, y = _stream(circuit, 3)
    spec = RecordSpec(variables=("a", "u"), chunk_cycles=2)
    dm = simulate(circuit, schedule, x, y, dt=DT, backend="map", record=spec)
    db = simulate(circuit, schedule, x, y, dt=DT, device="numpy", record=spec)
    xr.testing.assert_allclose(dm, db, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(db.cycle_start_step.values, [0, 62, 125])
    assert "steps_per_cycle" not in db.attrs and db.attrs["period_steps"] == pytest.approx(62.5)
    np.testing.assert_array_equal(db.boundary_time.values, db.boundary_step.values * DT)
