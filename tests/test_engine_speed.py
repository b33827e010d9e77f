"""Speed options of the engine (issue 6): they must keep the circuit's numbers.

The slower plasticity clock is checked against the DTP1 update computed independently of the
circuit (Prop 5) and against the every-step engine; batched sub-circuits against separate runs.
"""

import dataclasses

import numpy as np
import pytest
from test_engine import (
    DT,
    SQUARE,
    _continuous_circuit,
    _converged_dtp1,
    _discrete_circuit,
    _stream,
)

from cdtp.brian.engine import build, initial_network
from cdtp.model.gating import GammaSchedule, HoldGate, PlasticityGate, Schedule

pytestmark = pytest.mark.brian2

PROP5 = Schedule(GammaSchedule("square", frequency=10.0, duty=0.3), PlasticityGate("paper"))


def _second_cycle_change(circuit, schedule, **options):
    """Weights after one cycle, ΔW and ΔΩ over a second cycle on the same example."""
    x, y = _stream(circuit, 1)
    run = build(circuit, schedule, np.repeat(x, 2, 0), np.repeat(y, 2, 0), dt=1e-4,
                device="numpy", **options)
    run.run(1)
    start = [None] + [run.weights(l) for l in range(1, 4)]
    omega = [None, None] + [run.feedback_weights(l) for l in range(2, 4)]
    run.run(1)
    dw = [None] + [run.weights(l) - start[l] for l in range(1, 4)]
    domega = [None, None] + [run.feedback_weights(l) - omega[l] for l in range(2, 4)]
    return x[0], y[0], start, dw, domega


def test_plasticity_clock_keeps_prop5():
    """With the weights updated every 10 steps, ΔW per cycle is still η_W × DTP1 (Prop 5)."""
    circuit = _continuous_circuit(HoldGate())
    x, y, start, dw, _ = _second_cycle_change(circuit, PROP5, plasticity_every=10)
    net = initial_network(circuit)
    for l in range(1, 4):
        net.weights[l] = start[l]
    predicted = _converged_dtp1(net, x, y, circuit.beta)
    for l in range(1, 4):
        target = circuit.eta_w * predicted[l]
        rel = np.linalg.norm(dw[l] - target) / np.linalg.norm(target)
        # the every-step engine measures ≈ 1e-3 here (test_engine); the summed drive is the
        # same telescoping sum, so the 1 % bound applies unchanged
        assert rel < 0.01, (l, rel)


def test_plasticity_clock_matches_every_step_updates():
    """ΔW and ΔΩ per cycle with W updated every 10 steps against every step (Δ1 on)."""
    circuit = dataclasses.replace(_continuous_circuit(HoldGate()), feedback_rule="delta1",
                                  eta_omega=0.5)
    _, _, _, dw1, do1 = _second_cycle_change(circuit, PROP5)
    _, _, _, dw10, do10 = _second_cycle_change(circuit, PROP5, plasticity_every=10)
    for l in range(1, 4):
        rel = np.linalg.norm(dw10[l] - dw1[l]) / np.linalg.norm(dw1[l])
        # the summed drive is exact while a is held (square γ, hard hold); what differs is
        # that the feedforward sums see W up to 9 steps late, an O(η_W) effect on h during
        # the feedback phase: measured 8e-8 on layer 1, 1e-9 above; a wrong drive (a step
        # lost or counted twice per window) would give ≥ 1e-2
        assert rel < 1e-5, (l, rel)
    for l in range(2, 4):
        rel = np.linalg.norm(do10[l] - do1[l]) / np.linalg.norm(do1[l])
        # Ω is still updated every step; it differs only through the slightly lagging h:
        # measured 1.3e-5 (layer 2), 3e-9 (layer 3)
        assert rel < 1e-3, (l, rel)
    # and the comparison is not vacuous: the per-cycle changes are far above those bounds
    assert min(np.linalg.norm(dw1[l]) for l in range(1, 4)) > 1e-5


def test_plasticity_clock_discrete_limit_differs():
    """The option is not the reference order: in the discrete limit (a changes every step
    while plasticity is on in the smooth-gate phases) it moves W, so it stays off by default."""
    circuit = _discrete_circuit("delta1")
    x, y = _stream(circuit, 2)
    runs = []
    for every in (1, 5):
        run = build(circuit, SQUARE, x, y, dt=DT, device="numpy", plasticity_every=every)
        run.run(2)
        runs.append(run.weights(1))
    assert np.max(np.abs(runs[0] - runs[1])) > 1e-9


@pytest.mark.parametrize("every", [0, 7, 2.0])
def test_plasticity_every_must_divide_the_cycle(every):
    circuit = _discrete_circuit("delta1")
    x, y = _stream(circuit, 1)
    with pytest.raises(ValueError, match="plasticity_every"):
        build(circuit, SQUARE, x, y, dt=DT, device="numpy", plasticity_every=every)
