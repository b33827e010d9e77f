"""The spiking variant (docs/model.md §2.5): its circuit-file keys, the Poisson read-out's
error against the binomial prediction, and the spiking circuit's convergence to the rate
circuit as N grows."""

from __future__ import annotations

import numpy as np
import pytest

from cdtp.model.circuit import ConfigError, circuit_from_dict


@pytest.mark.parametrize("table, key, allowed", [
    ({"neurons": "spikes"}, "neurons", "allowed: rate, spiking"),
    ({"spiking": {"neurons_per_unit": 0}}, "spiking.neurons_per_unit", "an integer ≥ 1"),
    ({"spiking": {"neurons_per_unit": 2.5}}, "spiking.neurons_per_unit", "expected int"),
    ({"spiking": {"rate_gain": "0 Hz"}}, "spiking.rate_gain", "> 0 Hz"),
    ({"spiking": {"rate_offset": "-1 Hz"}}, "spiking.rate_offset", "≥ 0 Hz"),
    ({"spiking": {"synapse_tau": "2 Hz"}}, "spiking.synapse_tau", "expected a time"),
    ({"spiking": {"tau": "2 ms"}}, "spiking.tau", "allowed: neurons_per_unit"),
])
def test_bad_spiking_keys_name_file_key_and_allowed(table, key, allowed):
    with pytest.raises(ConfigError) as err:
        circuit_from_dict({"sizes": [3, 3], **table}, source="c.toml")
    assert str(err.value).startswith(f"c.toml: {key}: ")
    assert allowed in str(err.value)


def test_spiking_keys_load_in_si_units():
    c = circuit_from_dict({"sizes": [3, 3], "neurons": "spiking", "spiking": {
        "neurons_per_unit": 40, "rate_offset": "0.2 kHz", "rate_gain": "150 Hz",
        "synapse_tau": "3 ms"}})
    assert (c.neurons, c.spiking.neurons_per_unit) == ("spiking", 40)
    assert (c.spiking.rate_offset, c.spiking.rate_gain, c.spiking.synapse_tau) == (200.0, 150.0,
                                                                                    3e-3)
    # a rate circuit records no spiking parameters (its results file is unchanged)
    assert "spiking" not in circuit_from_dict({"sizes": [3, 3]}).to_dict()


def test_readout_error_matches_the_binomial_prediction_and_falls_like_sqrt_n():
    """One layer of units holding fixed σ: the filtered population read-out's relative RMS
    error against the prediction √(k/(2−k) r(1 − r dt)/(N dt))/r_1 of a binomial count through
    the filter (docs/model.md §2.5)."""
    from cdtp.brian.spiking import readout_error

    neurons = [10, 40, 160, 640]
    res = readout_error(np.linspace(-0.9, 0.9, 6), neurons, duration=0.15, settle=0.01)
    measured = np.array([res["measured"][n] for n in neurons])
    predicted = np.array([res["predicted"][n] for n in neurons])
    # 6 units × 0.14 s / τ_s (2 ms) ≈ 420 independent samples per N: the RMS has a relative
    # standard error of ≈ 1/√(2·420) ≈ 3.5 %; 15 % is four of them
    np.testing.assert_allclose(measured, predicted, rtol=0.15)
    slope = np.polyfit(np.log(neurons), np.log(measured), 1)[0]
    # the four errors are each within ~4 %, so the slope is within ±0.04 of −0.5
    assert -0.58 < slope < -0.42


# -- the spiking circuit against the rate circuit ---------------------------------------------
# the benchmark circuit (circuits/spiking_teacher_student.toml) at its dt and γ, on the numpy
# target (nothing to compile); one γ cycle is 500 steps, ~5–10 s per run here
@pytest.fixture(scope="module")
def cycle_runs():
    from benchmarks import spiking as bench

    circuit = bench.load()
    data = bench.task(sizes=circuit.sizes)
    sched = bench.schedule()

    def run(neurons, n=None, seed=0):
        return bench.cycle_states(bench.with_neurons(circuit, neurons, n), sched, data.x_train,
                                  data.y_train, cycles=1, device="numpy", spike_seed=seed)

    runs = {"rate": run("rate")}
    for n in (40, 640):
        for seed in (0, 1):
            runs[n, seed] = run("spiking", n, seed)
    runs["repeat"] = run("spiking", 40, 0)
    return bench, runs


def test_same_spike_seed_gives_the_same_cycle_and_another_seed_does_not(cycle_runs):
    _, runs = cycle_runs
    for a, b in zip(runs[40, 0][0]["dw"], runs["repeat"][0]["dw"]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[40, 0][0]["dw"][-1], runs[40, 1][0]["dw"][-1])


def test_spiking_cycle_converges_to_the_rate_cycle_like_inverse_sqrt_n(cycle_runs):
    """Per-cycle ΔW and settled hidden targets against the rate circuit at N = 40 and 640
    (2 spike seeds each). The read-out noise predicts errors ∝ N^(−1/2), a factor 4 over this
    range; benchmarks/SPIKING.md measures ≈ 1.5/√N for ΔW (0.06 at N = 640)."""
    bench, runs = cycle_runs
    err = {}
    for n in (40, 640):
        pairs = [bench.relative_errors(runs[n, s], runs["rate"], 2) for s in (0, 1)]
        err[n] = np.sqrt(np.mean([[p[0][0], p[1][0]] for p in pairs], axis=0) ** 2)
    dw_ratio, target_ratio = err[40] / err[640]
    # with 2 seeds the RMS of each is within ~±50 % (a χ distribution with 2 degrees of
    # freedom), so a true ratio of 4 is measured above 4·(0.5/1.5) ≈ 1.3: 1.5 is the bar
    assert dw_ratio > 1.5 and target_ratio > 1.5
    # ΔW at N = 640: 0.06 measured over 16 runs; 3× that for seed variation
    assert err[640][0] < 0.2


@pytest.fixture(scope="module")
def recorded():
    """One γ cycle of the spiking benchmark circuit (N = 100) recorded with spikes of the
    first 2 members of every population and the population rates."""
    from benchmarks import spiking as bench
    from cdtp.brian.simulation import simulate
    from cdtp.record.dataset import RecordSpec

    circuit = bench.with_neurons(bench.load(), "spiking", 100)
    data = bench.task(sizes=circuit.sizes)
    spec = RecordSpec(variables=("a", "rate_m", "rate_u"), every=1, gates=True, snapshots=False,
                      weights=False, spikes=2)
    ds = simulate(circuit, bench.schedule(), data.x_train[:1], data.y_train[:1], record=spec,
                  dt=bench.DT, device="numpy", spike_seed=3)
    return circuit, data, ds


def test_recorded_spikes_have_the_documented_layout_and_the_input_rates(recorded):
    from cdtp.record.dataset import spike_trains

    circuit, data, ds = recorded
    sizes, k = circuit.sizes, 2
    # forward populations of layers 0..L−1, feedback populations of layers 2..L
    n_units = sum(sizes[:-1]) + sum(sizes[2:])
    assert ds.sizes["spiking_neuron"] == k * n_units
    assert set(ds.population.values) == {"forward", "feedback"}
    assert np.all(np.diff(ds.spike_time.values) >= 0)
    assert ds.spike_time.attrs["units"] == "s" and ds.rate_m.attrs["units"] == "Hz"
    trains = spike_trains(ds)
    assert sum(len(t) for t in trains) == ds.sizes["spike"]
    # layer 0 is clamped to x for the whole cycle: its forward neurons fire at
    # r_j = r_0 + r_1 tanh(x_j), so the recorded count is Poisson with mean k·T·Σ_j r_j
    sp = circuit.spiking
    T = len(ds.time) * float(ds.attrs["dt"])
    rates = sp.rate_offset + sp.rate_gain * np.tanh(data.x_train[0])
    mine = (ds.population.values == "forward") & (ds.spiking_layer.values == 0)
    count = sum(len(t) for t, m in zip(trains, mine) if m)
    expected = k * T * rates.sum()
    assert abs(count - expected) < 4 * np.sqrt(expected)  # 4 Poisson standard deviations
    # the layer-0 read-out r̂ (all N = 100 neurons, τ_s = 2 ms) after it has settled: its
    # per-step sd is √(k_s/(2−k_s) r/(N dt)) ≈ 25 Hz, and the mean over the last 400 steps
    # (~40 filter times) ≈ 4 Hz; 20 Hz is five of those
    layer0 = ds.rate_m.where(ds.layer == 0, drop=True).isel(time=slice(100, None))
    np.testing.assert_allclose(layer0.mean("time").values, rates, atol=20)
    # rate_u exists only where a feedback population does (layers ≥ 2)
    assert np.all(np.isnan(ds.rate_u.where(ds.layer < 2, drop=True)))


def test_raster_plots_every_recorded_spike_of_the_cycle(recorded):
    from cdtp.analysis.plots import plot_raster

    _, _, ds = recorded
    fig = plot_raster(ds, (0, 1))
    raster = fig.axes[1]
    plotted = sum(len(c.get_offsets()) for c in raster.collections if hasattr(c, "get_offsets")
                  and c.get_label() != "feedback phase")
    assert plotted == ds.sizes["spike"]
    assert [line.get_label() for line in fig.axes[0].lines][:3] == ["γ_1", "γ_2", "γ_3"]


@pytest.mark.slow
def test_convergence_slope_is_minus_one_half():
    """The benchmark of benchmarks/SPIKING.md: per-cycle ΔW and settled hidden targets
    against the rate circuit for N = 10, 40, 160, 640 (4 spike seeds × 2 cycles each); the
    fitted log-log slope must lie within ±0.15 of the Poisson read-out's −0.5 (the issue's
    bar: −0.35 to −0.65; each point's RMS over 8 runs is within ~±25 %, which moves a slope
    fitted over a factor 64 in N by ≲ 0.1)."""
    from benchmarks import spiking as bench

    res = bench.convergence(seeds=4, cycles=2, device="cython")
    assert -0.65 < res["dw_slope"] < -0.35, res
    assert -0.65 < res["target_slope"] < -0.35, res
