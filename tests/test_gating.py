"""γ schedules: the numpy functions (used by the reference map and the analysis) and the Brian2
expressions (used by the circuit) give the same gates; bad parameters are rejected."""

import numpy as np
import pytest

from cdtp.brian.engine import build
from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import GammaSchedule, HoldGate, PlasticityGate, Schedule, phase

DT = 5e-4


def test_phase_never_samples_a_cycle_boundary():
    # 10 Hz at 0.5 ms: 200 steps per cycle; φ of step k is (k + ½)/200 exactly
    phi = phase(np.arange(400) * DT, DT, 10.0)
    np.testing.assert_allclose(phi, ((np.arange(400) % 200) + 0.5) / 200, atol=1e-12)


@pytest.mark.parametrize(
    "shape, window",
    [("square", (0.3, 1.0)), ("sinusoid", (0.0, 0.5)), ("raised_cosine", (0.3, 0.65)),
     ("smoothed_square", (0.3, 0.9))],
)
def test_descent_windows(shape, window):
    g = GammaSchedule(shape, frequency=10.0, duty=0.3, ramp=0.1)
    np.testing.assert_allclose(g.descent_window(), window)
    lo, hi = g.descent_window()
    phi = np.linspace(0, 1, 2001, endpoint=False)
    gamma = g.of_phase(phi)
    inside = (phi >= lo) & (phi < hi)
    # γ never rises inside the window, and comes within one grid step of its minimum: a
    # raised-cosine trough sampled 5e-4 off its centre is ≈ (π·5e-4/0.35)² ≈ 2e-5 above it
    assert np.all(np.diff(gamma[inside]) <= 1e-12)
    assert gamma[inside].min() == pytest.approx(gamma.min(), abs=1e-4)


def test_array_shape_descent_window():
    g = GammaSchedule("array", values=(1, 1, 0.5, 0.0, 0.0, 0.5))
    assert g.descent_window() == (1 / 6, 5 / 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"shape": "triangle"}, "unknown γ shape"), ({"frequency": 0}, "positive"),
     ({"duty": 1.2}, "duty"), ({"shape": "smoothed_square", "duty": 0.8, "ramp": 0.2}, "ramp"),
     ({"shape": "array", "values": (1.0, 2.0)}, "values"), ({"lag": -1e-3}, "lag")],
)
def test_bad_gamma_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GammaSchedule(**kwargs)


def test_period_must_be_whole_steps():
    with pytest.raises(ValueError, match="whole number"):
        Schedule(GammaSchedule(frequency=7.0)).steps_per_cycle(1e-3)


def test_hold_gates():
    hard, smooth = HoldGate("hard", epsilon=0.05), HoldGate("smooth", epsilon=0.05, width=0.01)
    np.testing.assert_array_equal(hard(np.array([1.0, 0.96, 0.94, 0.0])), [1, 1, 0, 0])
    c = smooth(np.array([1.0, 0.95, 0.0]))
    assert c[0] > 0.99 and c[1] == pytest.approx(0.5) and c[2] < 1e-6


@pytest.mark.brian2
@pytest.mark.parametrize("shape", ["square", "sinusoid", "raised_cosine", "smoothed_square",
                                   "array"])
@pytest.mark.parametrize("gate", ["paper", "descending"])
def test_brian2_gates_equal_numpy_gates(shape, gate):
    """Travelling wave (lag 4 ms) over two cycles: every layer's γ, γ of the layer above, c, p."""
    values = tuple(np.r_[np.ones(5), np.linspace(1, 0, 6)[1:], np.zeros(4), np.linspace(0, 1, 6)])
    gamma = GammaSchedule(shape, frequency=20.0, duty=0.25, ramp=0.1, lag=4e-3,
                          values=values if shape == "array" else ())
    plasticity = PlasticityGate(gate)
    schedule = Schedule(gamma, plasticity)
    hold = HoldGate("smooth", epsilon=0.05, width=0.02)
    circuit = CircuitConfig(sizes=(2, 2, 2, 2), nonlinearity="tanh", tau_a=DT, tau_u=DT,
                            eta_w=0.0, hold=hold)
    x = np.zeros((2, 2))
    run = build(circuit, schedule, x, x, dt=DT, device="numpy", record={"variables": ["a"],
                                                                         "gates": True})
    run.run(2)
    n = 2 * run.steps_per_cycle
    expected = schedule.sample(n, DT, 3, hold)
    for l in range(1, 4):
        mon = run.monitors[f"gates_{l}"]
        # identical formulas on the same float64 inputs; the tolerance allows the compiler's
        # or numpy's different rounding of cos/exp at the last bits
        np.testing.assert_allclose(mon.gamma_phase[0], expected["phase"][:, l], atol=1e-12)
        np.testing.assert_allclose(mon.gamma[0], expected["gamma"][:, l], atol=1e-12)
        np.testing.assert_allclose(mon.hold[0], expected["hold"][:, l], atol=1e-12)
        np.testing.assert_allclose(mon.plasticity[0], expected["plasticity"][:, l], atol=1e-12)
        above = min(l + 1, 3)
        np.testing.assert_allclose(mon.gamma_above[0], expected["gamma"][:, above], atol=1e-12)
    # the travelling wave is really there: layer 3 lags layer 1 by 8 ms = 16 steps
    g1, g3 = expected["gamma"][:, 1], expected["gamma"][:, 3]
    np.testing.assert_allclose(g3[16:], g1[:-16], atol=1e-12)


# -- any frequency at any dt: cycles begin where the phase wraps ----------------------------
@pytest.mark.parametrize("frequency", [6.0, 16.0, 7.0, 25.0, 33.3])
def test_cycle_starts_lie_within_half_a_step_of_continuous_time(frequency):
    """Cycle c begins at the step whose middle first reaches c/f: within half a step of the
    continuous-time instant, for every c (no drift over 10 000 cycles), and cycles are
    ⌊1/(f dt)⌋ or ⌈1/(f dt)⌉ steps long — the at-most-one-step-per-cycle error of a period that
    is not a whole number of steps."""
    dt, n = 1e-3, 10_000
    starts = Schedule(GammaSchedule(frequency=frequency)).cycle_starts(dt, n)
    exact = np.arange(n + 1) / frequency / dt  # continuous-time starts, in steps
    # ½ step by construction; 1e-6 of a step allows the float rounding of c/(f dt) itself
    assert np.max(np.abs(starts - exact)) <= 0.5 + 1e-6
    lengths = np.diff(starts)
    period = 1 / (frequency * dt)
    assert set(lengths.tolist()) <= {int(np.floor(period)), int(np.ceil(period))}
    assert np.max(np.abs(lengths - period)) < 1.0


def test_whole_periods_keep_whole_cycles():
    # 25 Hz at 1 ms: every cycle 40 steps, cycle c starting at exactly 40 c (the discrete limit)
    schedule = Schedule(GammaSchedule(frequency=25.0, duty=0.25))
    np.testing.assert_array_equal(schedule.cycle_starts(1e-3, 500), 40 * np.arange(501))
    table = schedule.boundary_table(1e-3, 500, 3)
    np.testing.assert_array_equal(table - table[:, :1], np.tile([0, 10, 10, 40], (500, 1)))
    assert schedule.steps_per_cycle(1e-3) == 40 and schedule.whole_period(1e-3) == 40


@pytest.mark.parametrize("frequency, duty", [(6.0, 0.25), (16.0, 0.5), (16.0, 0.3), (7.0, 0.1)])
def test_phase_boundaries_err_by_at_most_half_a_step(frequency, duty):
    """The end of the feedforward phase of a square γ lies within half a step of its
    continuous-time instant (c + duty)/f, so each phase's duration is off by less than one
    step; the table agrees with the sampled gates step by step."""
    dt, n = 1e-3, 2000
    schedule = Schedule(GammaSchedule("square", frequency=frequency, duty=duty))
    table = schedule.boundary_table(dt, n, 3)
    c = np.arange(n)
    exact_fb = (c + duty) / frequency / dt
    assert np.max(np.abs(table[:, 1] - exact_fb)) <= 0.5 + 1e-6
    ff_steps = table[:, 1] - table[:, 0]
    assert np.max(np.abs(ff_steps - duty / frequency / dt)) < 1.0
    # the table is what the gates say: hold ≥ ½ exactly on [start, feedback_start)
    starts = schedule.cycle_starts(dt, n)
    hold = schedule.sample(int(starts[-1]), dt, 3)["hold"][:, 1]
    cycle_of = np.searchsorted(starts, np.arange(int(starts[-1])), side="right") - 1
    in_ff = np.arange(int(starts[-1])) < table[cycle_of, 1]
    np.testing.assert_array_equal(hold >= 0.5, in_ff)


def test_too_short_a_period_is_refused():
    with pytest.raises(ValueError, match="at least 2 time steps"):
        Schedule(GammaSchedule(frequency=700.0)).check_steps(1e-3, 3)
    with pytest.raises(ValueError, match="no feedforward step"):
        Schedule(GammaSchedule(frequency=300.0, duty=0.1)).check_steps(1e-3, 3)


@pytest.mark.brian2
def test_brian2_phase_equals_numpy_bit_for_bit_at_16_hz():
    """16 Hz at 1 ms: 62.5 steps per period, and the middle of step 62 falls exactly on the end
    of cycle 0. The generated code computes the phase in the order of
    :func:`cdtp.model.gating.cycle_position`, so both see the same wrap (exact equality), and the
    circuit clamps each example at the step the schedule says."""
    dt = 1e-3
    schedule = Schedule(GammaSchedule("square", frequency=16.0, duty=0.5), PlasticityGate())
    circuit = CircuitConfig(sizes=(2, 2, 2), nonlinearity="tanh", tau_a=dt, tau_u=dt,
                            eta_w=0.0)
    x = np.arange(8.0).reshape(4, 2)
    run = build(circuit, schedule, x, np.zeros((4, 2)), dt=dt, device="numpy",
                record={"variables": ["a"], "gates": True})
    run.run(3)
    starts = schedule.cycle_starts(dt, 3)
    np.testing.assert_array_equal(starts, [0, 62, 125, 187])
    n = int(starts[-1])
    expected = schedule.sample(n, dt, 2)
    mon = run.monitors["gates_1"]
    assert len(mon.gamma_phase[0]) == n
    np.testing.assert_array_equal(mon.gamma_phase[0], expected["phase"][:, 1])
    assert mon.gamma_phase[0][62] == 0.0
    # the input layer holds example c exactly on the steps of cycle c
    a0 = np.asarray(run.monitors[0].a).T  # (steps, 2)
    cycle_of = np.searchsorted(starts, np.arange(n), side="right") - 1
    np.testing.assert_array_equal(a0, x[cycle_of])
    assert run.cycle == 3 and [run.cycle_start_step(k) for k in range(4)] == starts.tolist()
