"""Proposition checks (docs/model.md §4) on recorded runs: they pass on a run built to satisfy the
paper's assumptions and fail, each where it should, on runs built to break them.

The runs use the numpy reference map (``backend="map"``), which records the same Dataset as
the Brian2 circuit (tests/test_recording.py checks the two agree), so no code is compiled.
"""

import numpy as np
import pytest

from cdtp.circuit import circuit_from_dict
from cdtp.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.propositions import check_all, report, summary
from cdtp.recording import RecordSpec
from cdtp.simulation import simulate

DT = 1e-3


def _run(gamma=None, gate="descending", scale=0.1, n=6, record=None, **circuit):
    """A square-sized (5, 5, 5, 5) tanh circuit, small activity (σ nearly linear, so the pinv
    decoder is a good inverse), τ_u = 2 dt (u-loop rate ≈ 0.5: slow enough to fit P4's rate,
    fast enough to converge in a 20-step feedback phase), small η_W, β = 0.1."""
    d = {
        "sizes": [5, 5, 5, 5], "nonlinearity": "tanh", "seed": 2,
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "2 ms", "tau_tau": "0 ms"},
        "feedback": {"init": "pinv", "rule": "fixed"},
        "plasticity": {"eta_w": 0.01, "beta": 0.1},
    }
    for key, value in circuit.items():
        section, _, name = key.rpartition("__")
        (d.setdefault(section, {}) if section else d)[name] = value
    g = {"shape": "square", "frequency": 25.0, "duty": 0.5, **(gamma or {})}
    schedule = Schedule(GammaSchedule(**g), PlasticityGate(gate))
    rng = np.random.default_rng(0)
    x, y = scale * rng.normal(size=(n, 5)), scale * rng.normal(size=(n, 5))
    return simulate(circuit_from_dict(d), schedule, x, y, dt=DT, backend="map",
                    record=record or RecordSpec(variables=("u",), layers=(2, 3)))


@pytest.fixture(scope="module")
def good():
    return check_all(_run())


def _failed(res):
    return int(np.nansum(res.passed.values == 0))


@pytest.mark.parametrize("name", ["P1", "P2", "P3", "P5", "P6", "P8", "GN", "INV"])
def test_checks_pass_on_a_run_that_meets_the_assumptions(good, name):
    res = good[name]
    applicable = ~np.isnan(res.passed.values)
    assert applicable.sum() >= 6, f"{name} applied to too few cells"
    assert _failed(res) == 0, f"{name}: {res.residual.values}"


def test_p4_fitted_rate_matches_the_predicted_rate_within_20_percent(good):
    res = good["P4"]
    fitted, predicted = res.fitted_rate.values, res.predicted_rate.values
    assert np.all(np.isfinite(fitted))
    # the bound: the fitted exponential rate of the u-increments is within 20 % of
    # ρ(I − k_u f′g′) from the Jacobians at the settled state
    np.testing.assert_array_less(np.abs(fitted - predicted) / predicted, 0.2)
    assert 0.3 < np.median(predicted) < 0.8  # a rate the fit can resolve, not float noise


def test_a_decoder_with_alpha_above_one_fails_p1_p2_p3_inv():
    checks = check_all(_run(feedback__init="random", init__feedback_scale=3.0))
    for name in ("P1", "P2", "P3", "INV"):
        assert _failed(checks[name]) > 0, name
    assert np.nanmax(checks["P3"].residual.values) > 1  # ρ > 1: the premise is violated
    text = "\n".join(summary(checks))
    assert "P3 fails" in text and "INV fails" in text


def test_sinusoid_with_the_papers_gate_fails_p5():
    checks = check_all(_run(gamma={"shape": "sinusoid"}, gate="paper"))
    # the weight change unwinds over the cycle: the recorded ΔW is far from the DTP update
    assert _failed(checks["P5"]) > checks["P5"].passed.size // 2
    assert np.nanmedian(checks["P5"].residual.values) > 0.5


def test_too_short_a_feedback_phase_fails_p1_p2():
    # duty 0.9: 4 feedback steps at rate ≈ 0.5 leave ~6 % of the discrepancy, > 5 %
    checks = check_all(_run(gamma={"duty": 0.9}))
    for name in ("P1", "P2"):
        assert _failed(checks[name]) == checks[name].passed.size, name
    assert _failed(checks["P5"]) == 0  # the telescoping sum itself still holds


def test_a_large_learning_rate_fails_p1_and_gn():
    # η_W = 5 (500× the good run's) drives the weights into saturation within a few cycles:
    # the loops stop settling and the targets leave the Gauss-Newton direction
    checks = check_all(_run(plasticity__eta_w=5.0))
    assert _failed(checks["P1"]) > 0
    assert _failed(checks["GN"]) > 0


def test_p6_fails_when_the_feedforward_phase_is_too_short():
    # duty 0.1: 4 feedforward steps for a 3-layer sweep and a u-loop at rate 0.5
    checks = check_all(_run(gamma={"duty": 0.1}))
    assert _failed(checks["P6"]) > 0


def test_p8_fails_on_a_corrupted_recording():
    ds = _run().copy(deep=True)
    ds["snapshot_m"] = ds.snapshot_m + 1e-3  # a drive that is not γ a + (1 − γ) g
    res = check_all(ds, ["P8"])["P8"]
    assert _failed(res) == res.passed.size


def _p7_run(**kw):
    # a slow sinusoid (10 Hz, 100 steps per cycle) keeps the u-loop at its equilibrium while γ
    # passes through intermediate values; η_W = 0 keeps W, and so f_l⁻¹, fixed
    return _run(gamma={"shape": "sinusoid", "frequency": 10.0}, scale=0.3,
                plasticity__eta_w=0.0, time_constants__tau_u="1 ms", n=4, **kw)


def test_p7_passes_with_the_loop_at_equilibrium_and_fails_on_a_wrong_drive():
    spec_vars = ("h", "u", "target", "m", "fb")
    ds = _p7_run(record=RecordSpec(variables=spec_vars))
    res = check_all(ds, ["P7"])["P7"]
    assert np.sum(res.passed.values == 1) >= 4 and _failed(res) == 0
    # measured ≤ 0.014: the one-step lag of the loop behind the moving γ, well under 5 %
    assert np.nanmax(res.residual.values) < 0.05
    bad = ds.copy(deep=True)
    bad["m"] = bad.m * 1.2  # an encoder input that is not f⁻¹(τ)
    assert _failed(check_all(bad, ["P7"])["P7"]) > 0


def test_report_and_summary_name_every_check(good):
    text = report(good)
    for name in good:
        assert name in text
    assert summary(good) == []  # nothing fails on the good run
    assert "FAIL" not in text


def test_p4_predicts_the_joint_h_u_loop_when_h_lags():
    # τ_h = 2 dt, τ_u = 4 dt: the loop carries h as well; the block Jacobian of one (h, u) step
    # predicts ρ ≈ 0.71 (complex pair), measured fitted rates 0.71–0.74: within P4's 20 %
    res = check_all(_run(time_constants__tau_h="2 ms", time_constants__tau_u="4 ms"), ["P4"])
    p4 = res["P4"]
    assert np.all(np.isfinite(p4.fitted_rate.values))
    assert _failed(p4) == 0
    assert 0.6 < float(p4.predicted_rate.median()) < 0.8
