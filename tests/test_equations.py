"""The layer dynamics as Brian2 equations (cdtp.brian.equations, docs/model.md §2.4): what the
NeuronGroups declare, the integration methods against analytic solutions, their validation,
and the equation display."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cdtp.brian.engine import build
from cdtp.model.circuit import CircuitConfig, ConfigError, circuit_from_dict, load_circuit
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.study.cli import main

pytestmark = pytest.mark.brian2

ROOT = Path(__file__).resolve().parents[1]
DT = 1e-4
SQUARE = Schedule(GammaSchedule("square", frequency=50.0, duty=0.3), PlasticityGate("paper"))


def _circuit(**changes):
    base = CircuitConfig(sizes=(3, 3, 3), nonlinearity="tanh", tau_h=0.0, tau_a=1e-3,
                         tau_u=2e-3, tau_tau=0.0, eta_w=0.0, leak=0.5, feedback_rule="fixed",
                         feedback_init="pinv", seed=2)
    return dataclasses.replace(base, **changes)


def _build(circuit, n=1, **options):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, circuit.sizes[0]))
    y = rng.normal(size=(n, circuit.sizes[-1]))
    return build(circuit, SQUARE, x, y, dt=DT, device="numpy", **options)


def test_layer_groups_declare_the_odes():
    """Finite time constants are differential equations of the NeuronGroup; a time constant of
    0 is not (the variable is a parameter set by its algebraic update)."""
    run = _build(_circuit(tau_h=5e-4, tau_tau=0.0))
    assert set(run.layers[2].equations.diff_eq_names) == {"h", "a", "u"}
    assert set(run.layers[1].equations.diff_eq_names) == {"h", "a"}  # no decoder on layer 1
    assert str(run.layers[2].equations["a"]) == "da/dt = hold*(h - a)/tau_a : 1"
    algebraic = _build(_circuit(tau_h=0.0, tau_a=0.0))
    assert set(algebraic.layers[2].equations.diff_eq_names) == {"u"}
    # algebraic h: the feedforward synapses sum into h itself
    assert "feedforward_2_summed_variable_h_post" in algebraic.equations


@pytest.mark.parametrize("method,tau_a", [("exact", 1e-3), ("exponential_euler", 1e-3),
                                          ("euler", 1e-3), ("exponential_euler", 5e-5)])
def test_held_activity_follows_the_solution_of_its_method(method, tau_a):
    """With the input clamped, h = W σ(x) is constant from the first step, and in the
    feedforward phase (c = 1) a relaxes as da/dt = (h − a)/τ_a from a = 0: exactly
    h (1 − e^{−t/τ_a}) on the grid for the exponential methods, h (1 − (1 − dt/τ_a)^k) for
    Euler. The exponential methods keep this for τ_a < dt (here 0.5 dt)."""
    run = _build(_circuit(tau_a=tau_a, integration_method=method),
                 record={"variables": ["a", "h"]})
    run.run(1)
    k = np.arange(1, 31)  # the first 3 ms, inside the 6 ms feedforward phase
    h = np.asarray(run.monitors[1].h).T[:30]
    a = np.asarray(run.monitors[1].a).T[:30]
    np.testing.assert_array_equal(h, np.repeat(h[:1], 30, axis=0))  # h is constant
    decay = np.exp(-k * DT / tau_a) if method != "euler" else (1 - DT / tau_a) ** k
    # one linear update per step with exactly representable inputs: rounding only, O(1e-16)
    # per step over 30 steps; 1e-12 is far below the O(1e-3) gap between the two solutions
    np.testing.assert_allclose(a, h * (1 - decay[:, None]), rtol=0, atol=1e-12)


def test_unknown_method_names_the_key():
    with pytest.raises(ConfigError, match=r"integration\.method.*'rk5'.*allowed: euler"):
        circuit_from_dict({"sizes": [2, 2], "integration": {"method": "rk5"}}, "c.toml")


def test_method_that_divides_by_a_zero_rate_is_refused():
    """Brian2's exponential Euler divides by u's rate, which is 0 in the feedback phase of the
    paper's exact loop (λ = 0); the exact solution needs distinct rates."""
    with pytest.raises(ValueError, match=r"integration\.method = 'exponential_euler' needs"
                                         r" feedback\.leak > 0"):
        _build(_circuit(leak=0.0, integration_method="exponential_euler"))
    with pytest.raises(ValueError, match="tau_a ≠ tau_u"):
        _build(_circuit(tau_u=1e-3, integration_method="exact"))
    with pytest.raises(ValueError, match="needs tau_h = 0"):
        _build(_circuit(tau_h=5e-4, integration_method="exact"))
    # explicit methods overshoot for dt > τ; the exponential ones are stable there
    with pytest.raises(ValueError, match="shorter than dt"):
        _build(_circuit(tau_a=5e-5))
    _build(_circuit(tau_a=5e-5, integration_method="exponential_euler"))


def test_circuit_file_sets_the_method():
    data = {"sizes": [2, 2], "integration": {"method": "exponential_euler"}}
    assert circuit_from_dict(data).integration_method == "exponential_euler"
    assert load_circuit(ROOT / "circuits" / "small.toml").integration_method == "euler"


def test_equations_are_shown_without_running(capsys):
    """``cdtp info`` on a circuit file and ``print`` of a built circuit show the ODEs, the code
    Brian2 generates for them and the order of one step; nothing is simulated."""
    assert main(["info", str(ROOT / "circuits" / "small.toml")]) == 0
    text = capsys.readouterr().out
    assert "dh/dt = (h_in - h)/tau_h : 1" in text
    assert "du/dt = (target - u + (1 - hold)*(u - h - leak*(u - a)))/tau_u : 1" in text
    assert "layer_2_stateupdater (euler):" in text
    assert "_a = a + dt*hold*(-a + h)/tau_a" in text  # Brian2's Euler step of Eq 47
    lines = text.splitlines()
    step = [line.split()[2] for line in lines if line.startswith("  groups")]
    # stage order of the reference map: targets, feedforward sums, plasticity, state update
    assert step.index("layer_1_targets:") < step.index("feedforward_1_summed_variable_h_in_post:")
    assert step.index("feedforward_1_plasticity:") < step.index("layer_1_stateupdater")
    run = _build(_circuit())
    assert str(run) == run.equations and "da/dt = hold*(h - a)/tau_a : 1" in str(run)
    assert float(run.network.t) == 0.0


def test_info_rejects_a_bad_circuit_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('sizes = [2, 2]\n[integration]\nmethod = "leapfrog"\n')
    assert main(["info", str(bad)]) == 2
    assert "integration.method" in capsys.readouterr().err


def test_batch_refuses_a_method_that_divides_by_its_running_flag():
    """A batch multiplies every rate by ``running``, 0 after a block's last step; Brian2's
    exponential Euler of u divides by u's rate without cancelling it (measured: nan)."""
    from cdtp.brian.batch import build_batch

    circuit = _circuit(integration_method="exponential_euler")
    x, y = np.zeros((2, 3)), np.zeros((2, 3))
    with pytest.raises(ValueError, match="allowed in a batch: euler, rk4"):
        build_batch(circuit, [SQUARE, SQUARE], x, y, [1, 2], dt=DT, device="numpy")
