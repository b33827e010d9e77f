"""Proposition checks (docs/model.md §4) on recorded runs: every check reaches every state it can —
its premise met and the conclusion holding (a run built to meet the paper's assumptions),
its premise met and the conclusion violated (the same run with a corrupted drive), its premise
not met (a too-short phase, a loop with α > 1, a sinusoidal γ), and n/a (what it needs was not
recorded, or there is nothing to measure).

The runs use the numpy reference map (``backend="map"``), which records the same Dataset as
the Brian2 circuit (tests/test_recording.py checks the two agree), so no code is compiled.
"""

import re

import numpy as np
import pytest

from cdtp.analysis.cells import _premise, _result
from cdtp.analysis.propositions import (
    CHECKS,
    HOLDS,
    NOT_APPLICABLE,
    PREMISE_NOT_MET,
    VIOLATED,
    check_all,
    counts,
    premises_not_met,
    report,
    summary,
    violations,
)
from cdtp.brian.simulation import simulate
from cdtp.model.circuit import circuit_from_dict
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.record.dataset import RecordSpec

DT = 1e-3
TRACED = RecordSpec(variables=("a", "u"))


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


# -- runs (module scope: each is simulated once) ------------------------------------------------
@pytest.fixture(scope="module")
def good():
    return _run(record=TRACED)


@pytest.fixture(scope="module")
def good_checks(good):
    return check_all(good)


@pytest.fixture(scope="module")
def short_feedback():
    # duty 0.9: 4 feedback steps at rate ≈ 0.5 leave ~6 % of the discrepancy: u has not settled
    return _run(gamma={"duty": 0.9}, record=TRACED)


@pytest.fixture(scope="module")
def short_feedforward():
    # duty 0.1: 4 feedforward steps for a 3-layer sweep and a u-loop at rate 0.5
    return _run(gamma={"duty": 0.1}, record=TRACED)


@pytest.fixture(scope="module")
def alpha_above_one():
    # random decoders scaled ×3: the u-loop matrix has ρ ≈ 1.07 and α ≈ 1.4
    return _run(feedback__init="random", init__feedback_scale=3.0, record=TRACED)


@pytest.fixture(scope="module")
def sinusoid_papers_gate():
    # γ sweeps through the feedback window and the paper's gate spans its return: τ does not
    # start the window at a, and the loop is not the γ = 0 loop
    return _run(gamma={"shape": "sinusoid"}, gate="paper", record=TRACED)


@pytest.fixture(scope="module")
def no_error():
    return _run(plasticity__beta=0.0, n=3, record=TRACED)  # β = 0: τ = a, nothing to measure


@pytest.fixture(scope="module")
def smooth_hold():
    # a smooth hold gate never closes exactly: no snapshot's step held a (P8 has no sample)
    return _run(hold_gate__kind="smooth", n=3, record=TRACED)


@pytest.fixture(scope="module")
def untraced(good):
    return good.drop_vars(["a", "u"])  # snapshots and weights only


@pytest.fixture(scope="module")
def p7_run():
    # a slow sinusoid (10 Hz, 100 steps per cycle) keeps the u-loop at its equilibrium while γ
    # passes through intermediate values in most cycles; η_W = 0 keeps W, and so f_l⁻¹, fixed
    return _run(gamma={"shape": "sinusoid", "frequency": 10.0}, scale=0.3,
                plasticity__eta_w=0.0, time_constants__tau_u="1 ms", n=4,
                record=RecordSpec(variables=("h", "u", "target", "m", "fb")))


# -- corrupted drives: the premise still met, the conclusion broken ----------------------------
def _nodes(ds, layers):
    return np.flatnonzero(np.isin(ds.node_layer.values, layers))


def _bump_snapshot(ds, var, boundary, layers, amount):
    ds = ds.copy(deep=True)
    b = list(ds.boundary.values).index(boundary)
    ds[f"snapshot_{var}"].values[:, b, _nodes(ds, layers)] += amount
    return ds


def _replace_u_decay(ds, rate, size=1e-5):
    """u of layers 2, 3 over each feedback window replaced by u_end + d·rateᵗ along one unit:
    increments with an exact geometric rate, far below the settling tolerance at the end."""
    import json

    ds = ds.copy(deep=True)
    spc, bsteps = int(ds.attrs["steps_per_cycle"]), json.loads(ds.attrs["boundary_steps"])
    steps = np.rint(ds.time.values / DT).astype(int) - 1
    u = ds.u.values.copy()
    for l in (2, 3):
        cols = np.flatnonzero(ds.layer.values == l)
        unit = np.eye(len(cols))[0]
        for c in ds.cycle.values:
            lo = c * spc + bsteps["feedback_start"] - 1
            hi = c * spc + bsteps["plasticity_end"] - 1
            idx = np.flatnonzero((steps >= lo) & (steps <= hi))
            decay = size * rate ** (steps[idx] - hi).astype(float)
            u[np.ix_(idx, cols)] = u[idx[-1], cols] + decay[:, None] * unit
    ds["u"] = (ds.u.dims, u, ds.u.attrs)
    return ds


def corrupt_h(ds):  # the recorded h is not what the u-loop settled against
    return _bump_snapshot(ds, "h", "plasticity_end", [2, 3], 0.01)


def corrupt_m(ds):  # the encoder input does not invert the target
    return _bump_snapshot(ds, "m", "plasticity_end", [1, 2], 0.01)


def corrupt_fb(ds):  # the decoder output of the feedforward phase is not g(u)
    return _bump_snapshot(ds, "fb", "feedback_start", [1, 2], 0.01)


def corrupt_m_everywhere(ds):  # m is not γ a + (1 − γ) g(u)
    ds = ds.copy(deep=True)
    ds["snapshot_m"] = ds.snapshot_m + 1e-3
    return ds


def corrupt_weights(ds):  # W moved by something other than the DTP update
    ds = ds.copy(deep=True)
    b = list(ds.boundary.values).index("plasticity_end")
    ff = np.char.startswith(ds.projection.values.astype(str), "feedforward")
    ds.weight.values[:, b, ff] += 1e-3 * np.random.default_rng(1).normal(size=ff.sum())
    return ds


def reverse_target(ds):  # τ_1 − a_1 reflected: the target change points away from GN
    ds = ds.copy(deep=True)
    b = list(ds.boundary.values).index("plasticity_end")
    n = _nodes(ds, [1])
    a = ds.snapshot_a.values[:, b, n]
    ds.snapshot_target.values[:, b, n] = 2 * a - ds.snapshot_target.values[:, b, n]
    return ds


def growing_u(ds):  # increments that grow at 1.1 per step although ρ < 1
    return _replace_u_decay(ds, 1.1, size=1e-9)


def slow_u(ds):  # a decay at 0.9 per step although ρ ≈ 0.5 and α ≈ 0.6
    return _replace_u_decay(ds, 0.9)


def scaled_m_trace(ds):  # an encoder input that is not f⁻¹(τ)
    ds = ds.copy(deep=True)
    ds["m"] = ds.m * 1.2
    return ds


# check → state → (run fixture, corruption or None)
CASES = {
    "P1": {HOLDS: ("good", None), VIOLATED: ("good", corrupt_h),
           PREMISE_NOT_MET: ("short_feedback", None), NOT_APPLICABLE: ("untraced", None)},
    "P2": {HOLDS: ("good", None), VIOLATED: ("good", corrupt_m),
           PREMISE_NOT_MET: ("short_feedback", None), NOT_APPLICABLE: ("untraced", None)},
    "P3": {HOLDS: ("good", None), VIOLATED: ("good", growing_u),
           PREMISE_NOT_MET: ("alpha_above_one", None), NOT_APPLICABLE: ("untraced", None)},
    "P4": {HOLDS: ("good", None), VIOLATED: ("good", slow_u),
           PREMISE_NOT_MET: ("short_feedback", None), NOT_APPLICABLE: ("untraced", None)},
    "P5": {HOLDS: ("good", None), VIOLATED: ("good", corrupt_weights),
           PREMISE_NOT_MET: ("sinusoid_papers_gate", None), NOT_APPLICABLE: ("no_error", None)},
    "P6": {HOLDS: ("good", None), VIOLATED: ("good", corrupt_fb),
           PREMISE_NOT_MET: ("short_feedforward", None), NOT_APPLICABLE: ("untraced", None)},
    "P7": {HOLDS: ("p7_run", None), VIOLATED: ("p7_run", scaled_m_trace),
           PREMISE_NOT_MET: ("p7_run", None), NOT_APPLICABLE: ("good", None)},
    # P8 is an identity of the update with no premise: it cannot be "premise not met"
    "P8": {HOLDS: ("good", None), VIOLATED: ("good", corrupt_m_everywhere),
           NOT_APPLICABLE: ("smooth_hold", None)},
    "GN": {HOLDS: ("good", None), VIOLATED: ("good", reverse_target),
           PREMISE_NOT_MET: ("short_feedback", None), NOT_APPLICABLE: ("untraced", None)},
    "INV": {HOLDS: ("good", None), VIOLATED: ("good", slow_u),
            PREMISE_NOT_MET: ("alpha_above_one", None), NOT_APPLICABLE: ("untraced", None)},
}
STATE_IDS = {HOLDS: "holds", VIOLATED: "violated", PREMISE_NOT_MET: "premise_not_met",
             NOT_APPLICABLE: "na"}


def test_every_check_has_cases():
    assert set(CASES) == set(CHECKS)


@pytest.mark.parametrize("name, state, fixture, corrupt", [
    pytest.param(name, state, fixture, corrupt, id=f"{name}-{STATE_IDS[state]}")
    for name, cases in CASES.items() for state, (fixture, corrupt) in cases.items()
])
def test_every_check_reaches_every_state(request, name, state, fixture, corrupt):
    ds = request.getfixturevalue(fixture)
    if corrupt is not None:
        ds = corrupt(ds)
    res = check_all(ds, [name])[name]
    states = res.state.values
    assert np.sum(states == state) > 0, f"{name}: {STATE_IDS[state]} not reached: {states}"
    if state == VIOLATED:
        # the corruption leaves the premise met in those cells: it is the conclusion that fails
        cells = states == VIOLATED
        assert np.all(res.premise_ratio.values[cells] <= 1)
        assert np.all(res.residual.values[cells] > float(res.tolerance))
    if state == PREMISE_NOT_MET:
        cells = states == PREMISE_NOT_MET
        assert np.all(res.premise_ratio.values[cells] > 1)
        assert all(res.unmet_premise.values[cells] != "")
    if state == NOT_APPLICABLE:
        assert all(r for r in res.reason.values[states == NOT_APPLICABLE]), "n/a without reason"


@pytest.mark.parametrize("name", list(CHECKS))
def test_nothing_is_violated_on_a_run_that_meets_the_assumptions(good_checks, name):
    res = good_checks[name]
    assert counts(res)["violated"] == 0, f"{name}: {res.residual.values}"
    if name != "P7":  # P7 needs an intermediate γ; the square wave has none
        assert counts(res)["holds"] == res.state.size, f"{name}: {res.reason.values}"


@pytest.mark.parametrize("fixture", ["short_feedback", "short_feedforward", "alpha_above_one",
                                     "sinusoid_papers_gate", "smooth_hold", "untraced"])
def test_runs_outside_the_theorems_are_not_called_violations(request, fixture):
    # none of these breaks the implementation: they only leave the premises; nothing the
    # theory claims is contradicted, so no cell may be "violated"
    checks = check_all(request.getfixturevalue(fixture))
    assert violations(checks) == []


def test_p4_fitted_rate_matches_the_predicted_rate_within_20_percent(good_checks):
    res = good_checks["P4"]
    fitted, predicted = res.fitted_rate.values, res.predicted_rate.values
    assert np.all(np.isfinite(fitted))
    # the bound: the fitted exponential rate of the u-increments is within 20 % of
    # ρ(I − k_u f′g′) from the Jacobians at the settled state
    np.testing.assert_array_less(np.abs(fitted - predicted) / predicted, 0.2)
    assert 0.3 < np.median(predicted) < 0.8  # a rate the fit can resolve, not float noise


def test_the_premises_are_measured_values(short_feedback, alpha_above_one):
    p1 = check_all(short_feedback, ["P1"])["P1"]
    # 4 feedback steps at rate ≈ 0.5: the last increments are a sizeable fraction of the
    # error, hundreds of times the 1e-3 tolerance
    assert np.all(p1.premise_u_settled.values > 0.1)
    assert set(p1.unmet_premise.values.ravel()) == {"u_settled"}
    p3 = check_all(alpha_above_one, ["P3"])["P3"]
    assert np.all(p3.premise_rho_below_1.values > 1)  # the measured ρ of the ×3 decoders
    assert "rho_below_1" in set(p3.unmet_premise.values.ravel())


def test_p4_predicts_the_joint_h_u_loop_when_h_lags():
    # τ_h = 2 dt, τ_u = 4 dt: the loop carries h as well; the block Jacobian of one (h, u) step
    # predicts ρ ≈ 0.71 (complex pair), measured fitted rates 0.71–0.74: within P4's 20 %
    res = check_all(_run(time_constants__tau_h="2 ms", time_constants__tau_u="4 ms"), ["P4"])
    p4 = res["P4"]
    assert np.all(np.isfinite(p4.fitted_rate.values))
    np.testing.assert_array_less(p4.residual.values, 0.2)
    assert 0.6 < float(p4.predicted_rate.median()) < 0.8
    # but 20 feedback steps at 0.71 leave increments of ~0.71^17 ≈ 3e-3 of the error: the
    # premise "u settled" is measured as not met, so the cells are outside the theorem
    assert counts(p4)["violated"] == 0
    assert set(p4.unmet_premise.values.ravel()) == {"u_settled"}


def test_classification_from_the_numbers_alone():
    # 1 cycle × 5 layers: holds, violated, premise missed, premise unmeasured, conclusion n/a
    residual = np.array([[0.01, 0.5, 0.01, 0.01, np.nan]])
    premise = _premise("settled", "u settled: x", np.array([[1e-4, 1e-4, 0.3, np.nan, 1e-4]]),
                       1e-3, "why", np.array([["", "", "", "not traced", ""]], dtype=object))
    na = np.array([["", "", "", "", "nothing to measure"]], dtype=object)
    res = _result("X", "p ⇒ q", residual, 0.05, "doc", [1, 2, 3, 4, 5], [0], [premise], na)
    assert res.state.values.tolist() == [[HOLDS, VIOLATED, PREMISE_NOT_MET, NOT_APPLICABLE,
                                          NOT_APPLICABLE]]
    assert res.reason.values[0, 2] == "u settled: 0.3 > tolerance 0.001"
    assert res.reason.values[0, 3] == "not traced"
    assert res.reason.values[0, 4] == "nothing to measure"
    np.testing.assert_array_equal(res.passed.values, [[1, 0, np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(res.premise_ratio.values[0, :3], [0.1, 0.1, 300])


@pytest.mark.parametrize("fixture", ["good", "short_feedback", "alpha_above_one",
                                     "sinusoid_papers_gate", "untraced"])
def test_summary_sentences_cannot_contradict_their_numbers(request, fixture):
    checks = check_all(request.getfixturevalue(fixture))
    for name, sentence in zip(checks, summary(checks)):
        s = counts(checks[name])
        met = s["holds"] + s["violated"]
        assert sentence.startswith(name)
        assert f" {met} of {s['cells']} cell" in sentence
        if met and s["violated"] == 0:
            assert "violated" not in sentence
            assert f"≤ tolerance {float(checks[name].tolerance):.3g}" in sentence
        if s["violated"]:
            assert f"> tolerance {float(checks[name].tolerance):.3g}" in sentence
        unmet = sum(int(n) for n in re.findall(r"Premise not met in (\d+) cell", sentence))
        assert unmet == s["premise_not_met"]
        na = re.search(r"n/a\) in (\d+) cell", sentence)
        assert (int(na.group(1)) if na else 0) == s["na"]
        assert s["holds"] + s["violated"] + s["premise_not_met"] + s["na"] == s["cells"]


def test_report_lists_every_check_with_the_counts(good_checks, short_feedback):
    text = report(good_checks)
    for name in CHECKS:
        assert re.search(rf"^{name}\s", text, re.M), name  # P7 included
    assert "premise not met" in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.startswith("P1 "))
    assert row.split()[1:5] == ["12", "0", "0", "0"]  # 6 cycles × layers 2, 3: all hold
    assert violations(good_checks) == [] and premises_not_met(good_checks) == []
    lines = premises_not_met(check_all(short_feedback))
    assert any(line.startswith("P1: Premise not met in 12 cells") for line in lines)
