"""γ schedules: the numpy functions (used by the reference map and the analysis) and the Brian2
expressions (used by the circuit) give the same gates; bad parameters are rejected."""

import numpy as np
import pytest

from cdtp.circuit import CircuitConfig
from cdtp.engine import build
from cdtp.gating import GammaSchedule, HoldGate, PlasticityGate, Schedule, phase

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
