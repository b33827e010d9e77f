"""γ, the hold gate and the plasticity gate in Brian2: per-layer constants and the gate code.

Each layer computes its gates every step from constants (``gamma_freq``, ``gamma_duty``,
``gamma_lag``, the plasticity window, …) in the ``gates`` operation (:func:`gate_code`). The
constants are ``(shared, constant)`` variables of a single circuit, or one value per neuron in
a batch (each block of neurons one circuit), so a new schedule never recompiles: only the γ
shape, an ``array`` γ's values and the kind of plasticity gate are compiled in
(:func:`compiled_kind`). The cycle position is computed from whole steps, in the order of
float operations of :func:`cdtp.model.gating.cycle_position`, so numpy and the generated code
agree bit for bit.
"""

from __future__ import annotations

import brian2 as b2
import numpy as np

from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import Schedule

__all__ = ["GATE_VARIABLES", "SCHEDULE_CONSTANTS", "compiled_kind", "gate_code",
           "schedule_constants", "set_schedule_constants", "start_step"]

# Per-circuit γ and plasticity-gate constants ((shared, constant) in a single circuit; one value
# per neuron in a batch, where each block of neurons is one circuit) with their Brian2 units.
SCHEDULE_CONSTANTS = {
    "gamma_freq": "Hz",
    "gamma_freq_dt": "1",
    "gamma_duty": "1",
    "gamma_ramp": "1",
    "gamma_lag": "second",
    "gamma_t0_step": "1",
    "gamma_lag_above": "second",
    "plasticity_start": "1",
    "plasticity_end": "1",
}


GATE_VARIABLES = ("gamma", "gamma_above", "hold", "hold_above", "plasticity", "gamma_phase",
                   "gamma_phase_above")


_UNITS = {"Hz": b2.Hz, "second": b2.second, "1": 1.0}


def start_step(run_state: dict, dt: float, k: int) -> int:
    """The step at which cycle k of the stream begins under the current schedule, which took
    over at step ``t0_step`` as cycle ``cycle0`` (:meth:`CircuitRun.set_schedule`)."""
    first = k - run_state["cycle0"]
    return run_state["t0_step"] + int(run_state["schedule"].cycle_starts(dt, 0, first)[0])


def _schedule_values(schedule: Schedule, circuit: CircuitConfig, l: int, t0: int,
                     dt: float) -> dict:
    """The γ and plasticity-gate constants of layer l under ``schedule``, in SI units
    (``gamma_t0_step``: the step at which the schedule's cycle 0 began)."""
    g, L = schedule.gamma, circuit.depth
    lo, hi = schedule.plasticity.window(g)
    return {
        "gamma_freq": g.frequency, "gamma_freq_dt": g.frequency * dt, "gamma_duty": g.duty,
        "gamma_ramp": g.ramp, "gamma_t0_step": t0,
        "gamma_lag": g.layer_lag(max(l, 1)), "gamma_lag_above": g.layer_lag(min(l + 1, L)),
        "plasticity_start": lo, "plasticity_end": hi,
    }


def schedule_constants(layers, schedules, circuit, block_sizes=None, t0=0, dt=None) -> dict:
    """{(layer, name): value} for ``schedules``: one shared value when ``block_sizes`` is None
    (a single circuit), else one value per neuron, repeated over each circuit's block."""
    out = {}
    for l in range(len(layers)):
        per_circuit = [_schedule_values(s, circuit, l, t0, dt) for s in schedules]
        for name, unit in SCHEDULE_CONSTANTS.items():
            values = np.array([v[name] for v in per_circuit])
            value = values[0] if block_sizes is None else np.repeat(values, block_sizes[l])
            out[l, name] = value * _UNITS[unit]
    return out


def set_schedule_constants(layers, schedules, circuit, block_sizes=None, t0=0, dt=None):
    dt = float(layers[0].clock.dt / b2.second) if dt is None else dt
    for (l, name), value in schedule_constants(layers, schedules, circuit, block_sizes,
                                                t0, dt).items():
        setattr(layers[l], name, value)
    for group in layers:
        group.hold_epsilon = circuit.hold.epsilon
        group.hold_width = circuit.hold.width


def compiled_kind(schedule: Schedule) -> tuple:
    """What of a schedule is compiled into the generated code: the γ shape (and an ``array``
    γ's values) and whether the plasticity gate is the paper's 1_{γ<1}. Schedules that agree on
    this share one build (:meth:`CircuitRun.set_schedule`, :func:`cdtp.brian.batch.build_batch`)."""
    return (schedule.gamma.shape, tuple(schedule.gamma.values or ()),
            schedule.plasticity.kind == "paper")


def gate_code(schedule: Schedule, circuit: CircuitConfig, batched: bool = False) -> str:
    g_expr = schedule.gamma.brian2_expression()
    above = g_expr.replace("gamma_phase", "gamma_phase_above")
    # the cycle position of cdtp.model.gating.cycle_position, in the same order of float operations
    # (whole steps first, exactly), so that numpy and the generated code agree bit for bit
    phase = (
        "(t_in_timesteps - gamma_t0_step + 0.5)*gamma_freq_dt - {lag}*gamma_freq"
        " - floor((t_in_timesteps - gamma_t0_step + 0.5)*gamma_freq_dt - {lag}*gamma_freq)"
    )
    plasticity = schedule.plasticity.brian2_expression()
    lines = [
        "gamma_phase = " + phase.format(lag="gamma_lag"),
        "gamma_phase_above = " + phase.format(lag="gamma_lag_above"),
        "gamma = " + g_expr,
        "gamma_above = " + above,
        "hold = " + circuit.hold.brian2_expression(),
        "hold_above = " + circuit.hold.brian2_expression().replace("gamma", "gamma_above"),
    ]
    if batched:
        lines.append("running = 1.0*int(t < t_last + 0.5*dt)")
        plasticity = f"running*({plasticity})"
    lines.append("plasticity = " + plasticity)
    return "\n".join(lines)
