"""Building and running a CDTP circuit as an explicit Brian2 network (docs/model.md §2, §6).

Mapping of the equations to Brian2 objects, for layers l = 0..L (layer 0 is the clamped input):

==========================  ==========================================================
quantity                    Brian2
==========================  ==========================================================
a_l, h_l, u_l, τ_l          variables ``a``, ``h``, ``u``, ``target`` of NeuronGroup
                            ``layer_l`` (n_l units, plus one bias unit whose σ is 1)
γ_l, c(γ_l), p_l            shared variables ``gamma``, ``hold``, ``plasticity``, computed
                            each step from shared constants (``gamma_freq``, ``gamma_duty``,
                            ``gamma_lag``, …): changing them never recompiles
g_l(u_l) = Ω_l σ(u_l)       Synapses ``feedback_l`` (layer_l → layer_{l−1}), summed into
                            ``fb`` of layer l−1; Ω is the synaptic variable ``Omega``
m_{l−1}, τ_{l−1} (Eq 49)    run_regularly ``targets`` of layer l−1: m assigned, then
                            ``dtarget/dt = (m - target)/tau_tau`` integrated there by the
                            circuit's Brian2 method (stage 2, see below)
W_l σ(m_{l−1}) (Eq 46)      Synapses ``feedforward_l`` (layer_{l−1} → layer_l), summed
                            into ``h_in`` (into ``h`` itself when τ_h = 0); W is ``W``
Eqs 46–48 (h, a, u)         differential equations of NeuronGroup ``layer_l``
                            (``dh/dt = (h_in - h)/tau_h``, ``da/dt = hold*(h - a)/tau_a``,
                            ``du/dt = …``), integrated by its state updater with the
                            circuit's ``integration_method``; run_regularly ``dynamics``
                            after it computes σ (and the algebraic a, u of a time constant 0)
ΔW_l (Eq 50), ΔΩ_l (51/52)  run_regularly ``plasticity`` of the synapses; with the
                            influence factor, W follows the change of the scaled
                            discrepancy ``scaled_error`` = s_l (τ_l − a_l) (see
                            :mod:`cdtp.reference.cdtp_map`)
leaky loop, difference      ``leak`` (λ) in the u update; ``fb_ref`` (ĝ_{l−1}, held with
feedback (docs/model.md      ``hold_above``) in the targets code; the ``mirror`` rule is a
§2.3)                       run_regularly of ``feedback_l`` adding ``mirror_gain`` × W's update
                            with pre and post exchanged
‖σ̃(a)‖², Σ(a − τ)², Σe^a   NeuronGroup ``norm_l`` (one normalization neuron per layer)
                            pooling through summed synapses ``pool_l``; the results come
                            back through one-to-all summed synapses ``broadcast_l``
example clamping, checks    a NetworkOperation on a clock of one γ period (one step when
                            the period is not a whole number of steps)
==========================  ==========================================================

Within each time step the objects run in the order of :mod:`cdtp.reference.cdtp_map`
(feedback sums → targets → feedback plasticity and error pools → feedforward sums →
feedforward plasticity → state updaters and σ → normalization pools), fixed by explicit ``order``
values in the ``groups`` slot (the state updaters' included), so with ``euler`` the circuit
reproduces the reference map step for step.

The equations and their integration (:mod:`cdtp.brian.equations`, docs/model.md §2.4): the
state updater runs once per step, in stage 5; the target and ĝ equations belong to stage 2
(the weight update reads their increment, u the new target), so Brian2's method is applied to
them into the ``targets`` code. A time constant of 0 is algebraic: the variable is set to its
drive, the map's k = dt/τ = 1 step, not integrated. Brian2 integrates h, a, u together
(derivatives at the start of the step) where the map updates them in sequence; the two agree
for an algebraic h and a hard hold gate (every shipped circuit and the map tests) and differ by
the discretization otherwise (measured in benchmarks/INTEGRATION.md). ``print(run)`` and
:attr:`CircuitRun.equations` show the equations as Brian2 holds them, without running.

Speed (docs/model.md §6): σ is computed once per neuron (``sm``, ``sa``, ``su``) and read by
the synapses; parameters are ``(shared, constant)`` variables, so a new value never recompiles;
the all-to-all synapses are stored presynaptic-major, so consecutive iterations of a summed
updater add into *different* postsynaptic neurons (stored postsynaptic-major, every iteration
waited for the previous one's store to the same ``h_in``: 3× slower at n = 256). Each neuron's
sum still runs over its presynaptic partners in increasing order, as before. The weight
updates can run on a slower clock (``plasticity_every``); cpp_standalone can use OpenMP
threads (``threads``).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import brian2 as b2
import numpy as np

from cdtp.brian.equations import FB_REF_DRIVE, check_method, describe, integrate, layer_dynamics
from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import Schedule
from cdtp.model.layers import Network, init_network
from cdtp.model.nonlinearities import get_nonlinearity
from cdtp.reference import cdtp_map

__all__ = ["DEVICES", "CircuitRun", "Diverged", "build", "initial_network"]

DEVICES = ("cython", "numpy", "cpp_standalone")

# Execution order within a time step (all in the 'groups' slot).
ORDER = {
    "input": 2,
    "input_pool": 3,
    "input_broadcast": 4,
    "feedback_sum": 10,
    "gates": 15,
    "targets": 20,
    "feedback_plasticity": 30,
    "error_pool": 30,
    "error_broadcast": 35,
    "feedforward_sum": 40,
    "influence": 45,
    "feedforward_plasticity": 50,
    "drive_reset": 52,
    "drive_accumulate": 55,
    "dynamics": 60,
    "norm_pool": 70,
    "norm_broadcast": 80,
}


class Diverged(RuntimeError):
    """Raised (or recorded) when activity leaves the configured bound."""


def initial_network(circuit: CircuitConfig) -> Network:
    """The initial weights of ``circuit`` from its seed (numpy; shared with the reference)."""
    rng = np.random.default_rng(circuit.seed)
    init = circuit.feedback_init
    net = init_network(
        circuit.sizes,
        rng,
        nonlinearity=get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope),
        bias=circuit.bias,
        weight_scale=circuit.weight_scale,
        feedback_scale=circuit.feedback_scale,
        feedback_init="pinv" if init == "regularized_inverse" else init,
        feedback_gain=circuit.feedback_gain,
    )
    if init == "regularized_inverse":
        from cdtp.reference.regularized import regularized_decoder

        for l in range(2, net.depth + 1):
            net.feedback[l] = regularized_decoder(net, l, circuit.regularization)
    return net


def _configure_device(device: str, directory: str | None, threads: int = 1):
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    cache = os.environ.get("CDTP_BRIAN2_CACHE")
    if cache:
        b2.prefs.codegen.runtime.cython.cache_dir = str(Path(cache) / "cython")
    if device == "cpp_standalone":
        if directory is None:
            directory = tempfile.mkdtemp(prefix="cdtp-standalone-")
        b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
        b2.get_device().reinit()
        b2.get_device().activate(directory=directory, build_on_run=False)
        # OpenMP threads of the standalone binary (0 or 1: none)
        b2.prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
        # Brian2's default is an unbounded `make -j`: one compiler per source file at once
        # (measured: 20+ compilers, load average 50 on a 2-core machine); bound it by the cores
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{os.cpu_count() or 1}"]
        return directory
    b2.set_device("runtime")
    b2.prefs.codegen.target = device
    return None


def _sigma(circuit: CircuitConfig, var: str) -> str:
    nl = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    return nl.brian2_expr.format(x=var)


# Per-circuit γ and plasticity-gate constants ((shared, constant) in a single circuit; one value
# per neuron in a batch, where each block of neurons is one circuit) with their Brian2 units.
_SCHEDULE_CONSTANTS = {
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
_GATE_VARIABLES = ("gamma", "gamma_above", "hold", "hold_above", "plasticity", "gamma_phase",
                   "gamma_phase_above")

_LAYER_EQS = """
target : 1
dtau : 1
scaled_error : 1
d_scaled_error : 1
influence_eps : 1 (shared, constant)
m : 1
fb : 1
fb_ref : 1
leak : 1 (shared, constant)
sm : 1
sa : 1
su : 1
y : 1
inv_norm : 1
err_self : 1
err_top : 1
exp_sum : 1
is_bias : 1 (constant)
hold_epsilon : 1 (shared, constant)
hold_width : 1 (shared, constant)
tau_h : second (shared, constant)
tau_a : second (shared, constant)
tau_u : second (shared, constant)
tau_tau : second (shared, constant)
beta : 1 (shared, constant)
"""

# a batch's blocks stop at their own last step: ``running`` is 1 until then, 0 after, and every
# state update is multiplied by it (dt·running), so a block's final state is the state a
# separate run of that circuit ends in
_BATCH_EQS = """
running : 1
t_last : second (constant)
"""


def _layer_equations(dynamics: str, batched: bool, slow: bool) -> str:
    """The NeuronGroup equations of a layer: its Eqs 46–48 (``dynamics``, from
    :func:`cdtp.brian.equations.layer_dynamics`) and the parameters every layer has."""
    gate_flag = "" if batched else " (shared)"
    const_flag = " (constant)" if batched else " (shared, constant)"
    lines = [dynamics, _LAYER_EQS]
    lines += [f"{v} : 1{gate_flag}" for v in _GATE_VARIABLES]
    lines += [f"{v} : {unit}{const_flag}" for v, unit in _SCHEDULE_CONSTANTS.items()]
    if batched:
        lines.append(_BATCH_EQS)
    if slow:
        lines.append("w_drive : 1")
    return "\n".join(lines) + "\n"


_NORM_EQS = """
sq_norm : 1
err : 1
exp_total : 1
"""


@dataclass
class CircuitRun:
    """A built circuit: the Brian2 network, its objects, and the example stream.

    Use :meth:`run` to simulate whole γ cycles, :meth:`weights` / :meth:`feedback_weights`
    for the current matrices, :meth:`set_schedule` to change schedule parameters without
    rebuilding or recompiling.
    """

    circuit: CircuitConfig
    schedule: Schedule
    network: b2.Network
    layers: list
    norms: list
    feedforward: list
    feedback: list
    inputs: np.ndarray
    labels: np.ndarray
    dt: float
    device: str
    monitors: dict = field(default_factory=dict)
    cycle: int = 0
    diverged: str | None = None
    plasticity_every: int = 1
    _clamp: object = None

    @property
    def steps_per_cycle(self) -> int:
        """Steps per γ cycle (a ValueError when the period is not a whole number of steps:
        then see :meth:`cycle_start_step`)."""
        return self.schedule.steps_per_cycle(self.dt)

    @property
    def equations(self) -> str:
        """The model as Brian2 holds it (:func:`cdtp.brian.equations.describe`): each layer's
        differential equations, the weight synapses' models, and one time step in execution
        order with the code Brian2 generates. Needs no simulation."""
        c = self.circuit
        head = (f"circuit {c.name}: sizes {list(c.sizes)}, σ = {c.nonlinearity}, integration"
                f" method {c.integration_method}, dt = {self.dt * 1e3:g} ms, device {self.device}")
        return head + "\n" + describe(self.network, self.layers,
                                       self.feedforward[1:] + self.feedback[2:],
                                       c.integration_method)

    def __str__(self) -> str:
        return self.equations

    def cycle_start_step(self, k: int) -> int:
        """The step at which cycle ``k`` of the example stream begins (or began)."""
        return _start_step(self._run_state, self.dt, k)

    def run(self, n_cycles: int, *, report=None, report_period: float = 10.0) -> CircuitRun:
        """Simulate ``n_cycles`` γ cycles (one example each, continuing the stream);
        ``report(elapsed, completed, start, duration)`` is Brian2's progress hook, called every
        ``report_period`` seconds of wall time."""
        if self.cycle + n_cycles > len(self.inputs):
            raise ValueError(
                f"the example stream has {len(self.inputs)} examples; cannot run to cycle"
                f" {self.cycle + n_cycles}"
            )
        if self.diverged:
            raise Diverged(f"the circuit has diverged already ({self.diverged})")
        steps = self.cycle_start_step(self.cycle + n_cycles) - self.cycle_start_step(self.cycle)
        duration = steps * self.dt * b2.second
        if self.device == "cpp_standalone":
            return self._run_standalone(n_cycles, duration)
        self.network.run(duration, report=report, report_period=report_period * b2.second,
                         namespace={})
        state = self._run_state
        if len(state["outputs"]) < state["cycle"]:
            state["outputs"].append(np.array(self.layers[-1].a[: self.circuit.sizes[-1]]))
        if not state["diverged"]:
            _check_divergence(self.layers, self.circuit.sizes, self.circuit.activity_bound,
                              state["cycle"] - 1, state)
        self.diverged = state["diverged"]
        # cycles completed: the clamp ran once per cycle started; a stop cuts the last one short
        self.cycle = state["cycle"] - (1 if self.diverged else 0)
        return self

    def _run_standalone(self, n_cycles, duration):
        if self.cycle:
            raise RuntimeError("a cpp_standalone circuit runs once: build it again to continue")
        self.network.run(duration, namespace={})
        b2.get_device().build(directory=self.standalone_directory, run=True, compile=True,
                              with_output=False)
        state = self._run_state
        # rows every cycle (every step when the period is not whole steps), row 0 = t = 0
        recorded = np.asarray(self.monitors["outputs"].a).T
        tick = self.schedule.whole_period(self.dt) or 1
        rows = self.schedule.cycle_starts(self.dt, n_cycles)[1:-1] // tick
        outputs = [*recorded[rows], self.state("a", self.circuit.depth)]
        state["outputs"] = outputs[:n_cycles]
        state["cycle"] = n_cycles
        # no Python runs during a standalone simulation: divergence is found afterwards, from
        # the per-cycle outputs and the final state
        state["diverged"], _ = _divergence_after_run(self.layers, self.circuit, state["outputs"])
        self.diverged = state["diverged"]
        self.cycle = n_cycles
        return self

    def outputs(self) -> np.ndarray:
        """a_L of every completed cycle, as held at the end of the cycle: the circuit's output
        for that cycle's example, computed before the cycle's own weight change."""
        return np.array(self._run_state["outputs"][: self.cycle])

    def weights(self, l: int) -> np.ndarray:
        """W_l as an (n_l, n_{l−1} [+1]) matrix (bias column last)."""
        return _feedforward_matrix(self, l, 0)

    def feedback_weights(self, l: int) -> np.ndarray:
        """Ω_l as an (n_{l−1}, n_l [+1]) matrix (bias column last)."""
        return _feedback_matrix(self, l, 0)

    def weight_snapshots(self, l: int, kind: str = "feedforward") -> np.ndarray:
        """W_l (``kind="feedforward"``) or Ω_l (``"feedback"``) at the start of cycles 0,
        s, 2s, … that have begun (s = ``snapshot_every`` of :func:`build`), shape
        (n_snapshots, rows, columns) as :meth:`weights` / :meth:`feedback_weights`."""
        return _snapshot_matrices(self, l, kind, 0)

    def state(self, var: str, l: int) -> np.ndarray:
        """Current values of ``var`` (``a``, ``h``, ``u``, ``target``, …) of layer l, without
        the bias unit."""
        return np.asarray(getattr(self.layers[l], var)[: self.circuit.sizes[l]])

    def set_schedule(self, schedule: Schedule) -> None:
        """Change γ / plasticity-gate *parameters* (frequency, duty cycle, ramp, lag, window)
        in place, from the current time on: the new schedule's first cycle starts now. The
        shape kinds must stay the same; nothing is rebuilt or recompiled."""
        if compiled_kind(self.schedule) != compiled_kind(schedule):
            raise ValueError(
                "set_schedule changes parameters only; rebuild to change a shape kind, the values"
                " of an 'array' γ or whether the plasticity gate is the paper's"
            )
        _validate(self.circuit, [schedule], self.dt, self.plasticity_every, 1)
        spc = schedule.whole_period(self.dt)
        state = self._run_state
        now = round(float(self.network.t / b2.second) / self.dt)
        if now != state["next_step"] and state["cycle"]:
            raise ValueError("set_schedule must be called between whole cycles")
        self.schedule = schedule
        _set_schedule_constants(self.layers, [schedule], self.circuit, t0=now, dt=self.dt)
        state.update(schedule=schedule, t0_step=now, cycle0=state["cycle"], next_step=now)
        # the clamp fires on every common divisor step of the old time and the new period (on
        # every step when the period is not a whole number of steps)
        tick = 1 if spc is None else (math.gcd(now, spc) if now else spc)
        self._clamp.clock.dt = tick * self.dt * b2.second


_UNITS = {"Hz": b2.Hz, "second": b2.second, "1": 1.0}


def _start_step(run_state: dict, dt: float, k: int) -> int:
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


def _schedule_constants(layers, schedules, circuit, block_sizes=None, t0=0, dt=None) -> dict:
    """{(layer, name): value} for ``schedules``: one shared value when ``block_sizes`` is None
    (a single circuit), else one value per neuron, repeated over each circuit's block."""
    out = {}
    for l in range(len(layers)):
        per_circuit = [_schedule_values(s, circuit, l, t0, dt) for s in schedules]
        for name, unit in _SCHEDULE_CONSTANTS.items():
            values = np.array([v[name] for v in per_circuit])
            value = values[0] if block_sizes is None else np.repeat(values, block_sizes[l])
            out[l, name] = value * _UNITS[unit]
    return out


def _set_schedule_constants(layers, schedules, circuit, block_sizes=None, t0=0, dt=None):
    dt = float(layers[0].clock.dt / b2.second) if dt is None else dt
    for (l, name), value in _schedule_constants(layers, schedules, circuit, block_sizes,
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


def _gate_code(schedule: Schedule, circuit: CircuitConfig, batched: bool = False) -> str:
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


def _validate(circuit: CircuitConfig, schedules, dt: float, plasticity_every: int,
              threads: int) -> list[int]:
    """Checks shared by :func:`build` and :func:`cdtp.brian.batch.build_batch`; the steps per γ
    cycle
    of each schedule (None where the period is not a whole number of steps)."""
    check_method(circuit)
    for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
        v = getattr(circuit, name)
        # Euler and RK4 overshoot when dt exceeds a time constant; the exponential methods do not
        if circuit.integration_method in ("euler", "rk4") and 0 < v < dt * (1 - 1e-9):
            raise ValueError(f"{name} = {v} s is shorter than dt = {dt} s: use 0 or ≥ dt (or"
                             " integration.method = 'exact' / 'exponential_euler')")
    for s in schedules:
        if s.gamma.period / dt < 2 - 1e-9:
            raise ValueError(f"the γ period ({s.gamma.period * 1e3:g} ms) must be at least 2"
                             f" time steps (dt = {dt * 1e3:g} ms)")
    spcs = [s.whole_period(dt) for s in schedules]
    if not isinstance(plasticity_every, int) or plasticity_every < 1 or any(
        (1 if spc is None else spc) % plasticity_every for spc in spcs
    ):
        periods = " / ".join(str(s.gamma.period / dt) for s in schedules)
        raise ValueError(
            f"plasticity_every = {plasticity_every!r}: a positive integer dividing the"
            f" steps per γ cycle ({periods}; 1 when that is not a whole number)"
        )
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads = {threads!r}: a positive integer")
    return spcs


def _target_code(drive: str, tau_tau: float, group, method: str, batched: bool) -> str:
    """Stage 2's dτ/dt = drive/τ_τ (Eq 49, or the top layer's nudged target), leaving the
    step's increment in ``dtau`` for the weight update (Eq 50). Algebraic (τ_τ = 0): the
    map's k = 1 step, ``dtau = drive``, so the increment is not recomputed from the sum."""
    if tau_tau == 0:
        run = "running*" if batched else ""
        return f"dtau = {run}({drive})\ntarget += dtau"
    update = integrate("target", drive, "tau_tau", tau_tau, group, method, batched)
    return f"_target_start = target\n{update}\ndtau = target - _target_start"


def _check_stream(circuit: CircuitConfig, inputs, labels):
    sizes = circuit.sizes
    inputs = np.asarray(inputs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if inputs.ndim != 2 or inputs.shape[1] != sizes[0]:
        raise ValueError(f"inputs must have shape (n_examples, {sizes[0]}), got {inputs.shape}")
    if labels.shape != (len(inputs), sizes[-1]):
        raise ValueError(f"labels must have shape ({len(inputs)}, {sizes[-1]}), got {labels.shape}")
    return inputs, labels


@dataclass
class _Assembly:
    """The Brian2 objects of K ≥ 1 circuits (K blocks of neurons per group)."""

    clock: object
    layers: list
    norms: list
    pools: list
    broadcasts: list
    feedforward: list
    feedback: list
    namespace: dict
    block_sizes: list


def _stream_arrays(circuit: CircuitConfig, inputs: list, labels: list):
    """Inputs and labels of K circuits as the rows of the ``stimulus`` / ``label_stream``
    TimedArrays: row k holds example k of every circuit, each in its own block."""
    sizes, bias = circuit.sizes, int(circuit.bias)
    n_rows = max(len(x) for x in inputs)
    blocks = []
    for stream, n in ((inputs, sizes[0]), (labels, sizes[-1])):
        arr = np.zeros((n_rows, len(stream), n + bias))
        for k, s in enumerate(stream):
            arr[: len(s), k, :n] = s
            arr[len(s):, k, :n] = s[-1]  # past its end a stream repeats its last example
        blocks.append(arr.reshape(n_rows, -1))
    return blocks


def _assemble(circuit, schedules, nets, *, dt, plasticity_every, batched, timed_stream,
              inputs=None, labels=None) -> _Assembly:
    """Create the groups and synapses of ``len(schedules)`` circuits of the structure
    ``circuit``. ``batched``: per-neuron gate constants and block-diagonal connectivity (each
    circuit one block of every group, one normalization neuron per block); otherwise one
    circuit with shared constants. ``timed_stream``: examples come from TimedArrays indexed by
    the cycle number (cpp_standalone, batches) instead of a per-cycle NetworkOperation."""
    sizes, L, bias = circuit.sizes, circuit.depth, int(circuit.bias)
    K = len(schedules)
    slow = plasticity_every > 1
    nb = [n + bias for n in sizes]  # neurons per block, bias unit last
    clock = b2.Clock(dt=dt * b2.second, name="cdtp_clock")
    sig = lambda v: _sigma(circuit, v)  # noqa: E731
    omega_dt = "dt*running_post" if batched else "dt"
    run_factor = "running*" if batched else ""
    namespace = {}
    if schedules[0].gamma.shape == "array":
        n = len(schedules[0].gamma.values)
        namespace["gamma_values"] = b2.TimedArray(
            np.asarray(schedules[0].gamma.values, dtype=float), dt=b2.second / n,
            name="gamma_values"
        )
    label_code = cycle_time = ""
    if timed_stream:
        # dt = 1 s per row, so the γ period is not compiled in; a batch's block holds its
        # last example after its own last step
        now = "clip(t_in_timesteps, 0, floor(t_last/dt + 0.5))" if batched else "t_in_timesteps"
        cycle_time = f"(floor(({now} - gamma_t0_step + 0.5)*gamma_freq_dt) + 0.5)*second"
        stim, lab = _stream_arrays(circuit, inputs, labels)
        namespace["stimulus"] = b2.TimedArray(stim, dt=b2.second, name="stimulus")
        namespace["label_stream"] = b2.TimedArray(lab, dt=b2.second, name="label_stream")
        label_code = f"y = label_stream({cycle_time}, i)\n"

    layers, norms = [], []
    method = circuit.integration_method
    if batched and method in ("exact", "exponential_euler") and L >= 2 and circuit.tau_u > 0:
        # Brian2 does not cancel ``running`` between u's rate and drive: a stopped block
        # (running = 0) would divide 0 by 0
        raise ValueError(
            f"{circuit.source}: integration.method = {method!r}: a batch multiplies every rate"
            " by its block's running flag, and Brian2's solution of u divides by u's rate, 0"
            " once a block has stopped; allowed in a batch: euler, rk4")

    def keep_bias(expr):
        return f"({expr})*(1 - is_bias) + is_bias"

    dynamics = [layer_dynamics(circuit, l, batched, lambda v: keep_bias(sig(v)))
                for l in range(L + 1)]
    for l in range(L + 1):
        is_bias = np.tile(np.r_[np.zeros(sizes[l]), np.ones(bias)], K)
        group = b2.NeuronGroup(K * nb[l], _layer_equations(dynamics[l].equations, batched, slow),
                               method=method, clock=clock, name=f"layer_{l}",
                               namespace=namespace)
        # Eqs 46–48 advance in stage 5 of the reference map's step
        group.state_updater.order = ORDER["dynamics"]
        group.is_bias = is_bias
        for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
            # an algebraic variable (τ = 0) reads no time constant; dt keeps the value finite
            setattr(group, name, (getattr(circuit, name) or dt) * b2.second)
        group.beta = circuit.beta
        group.leak = circuit.leak
        group.influence_eps = circuit.influence_eps
        # σ of the bias unit is 1 in every phase
        group.sm = is_bias
        group.sa = is_bias
        group.su = is_bias
        group.inv_norm = 1.0 / (bias + 1e-12)
        group.exp_sum = float(sizes[l])
        if batched:
            group.running = 1.0
        layers.append(group)
        norms.append(b2.NeuronGroup(K, _NORM_EQS, clock=clock, name=f"norm_{l}"))
    _set_schedule_constants(layers, schedules, circuit, nb if batched else None, dt=dt)
    gate_code = _gate_code(schedules[0], circuit, batched)

    # -- layer code --------------------------------------------------------------------------
    inp = layers[0]
    input_code = f"m = a\nsm = {keep_bias(sig('a'))}\nsa = sm"
    if timed_stream:
        input_code = f"a = stimulus({cycle_time}, i)\n" + input_code
    inp.run_regularly(input_code, when="groups", order=ORDER["input"], name="layer_0_input")
    for l in range(1, L + 1):
        group = layers[l]
        group.run_regularly(gate_code, when="groups", order=ORDER["gates"],
                            name=f"layer_{l}_gates")
        if l < L:
            m_code = "m = (gamma_above*a + (1 - gamma_above)*fb)*(1 - is_bias)\n"
            if circuit.difference:
                # the feedback input held at the end of the feedforward phase; its change is fed
                # back (cdtp.reference.cdtp_map, ``difference``)
                m_code = (integrate("fb_ref", FB_REF_DRIVE, "tau_a", circuit.tau_a, group,
                                    method, batched) + "\n"
                          "m = (a + (1 - gamma_above)*(fb - fb_ref))*(1 - is_bias)\n")
            code = m_code + _target_code("m - target", circuit.tau_tau, group, method,
                                         batched) + f"\nsm = {keep_bias(sig('m'))}"
        else:
            grad = "(a - y)" if circuit.loss == "squared_error" else "(exp(a)/exp_sum - y)"
            code = label_code + _target_code(
                # the bias unit's target relaxes to (and stays at) 0; a factor (1 − is_bias)
                # on the whole rate would make its linear coefficient 0, which the exponential
                # methods divide by
                f"(a - (1 - gamma)*beta*{grad})*(1 - is_bias) - target", circuit.tau_tau,
                group, method, batched)
        group.run_regularly(code, when="groups", order=ORDER["targets"],
                            name=f"layer_{l}_targets")
        if circuit.influence:
            group.run_regularly(
                "d_scaled_error = err_top/(err_self + influence_eps)*(target - a)"
                f" - scaled_error\nscaled_error += {run_factor}d_scaled_error",
                when="groups", order=ORDER["influence"], name=f"layer_{l}_influence",
            )
        # Eqs 46–48: the state updater (order "dynamics"); algebraic variables and σ around it
        if dynamics[l].before:
            group.run_regularly(dynamics[l].before, when="groups",
                                order=ORDER["dynamics"] - 1, name=f"layer_{l}_algebraic")
        group.run_regularly(dynamics[l].after, when="groups", order=ORDER["dynamics"] + 1,
                            name=f"layer_{l}_dynamics")
    # layer 0's gates are needed for nothing but γ_1 on layer 0 (m_0 = x is not gated)

    # -- normalization neurons: one per circuit and layer, pooling its own block -------------
    pools, broadcasts = [], []
    for l in range(L + 1):
        members = np.arange(K * nb[l])
        block_of = members // nb[l]
        pool_model = ["sq_norm_post = sa_pre**2 : 1 (summed)"]
        if circuit.influence and l >= 1:
            pool_model.append("err_post = (a_pre - target_pre)**2 : 1 (summed)")
        if l == L and circuit.loss == "softmax_cross_entropy":
            pool_model.append("exp_total_post = exp(a_pre)*(1 - is_bias_pre) : 1 (summed)")
        pool = b2.Synapses(layers[l], norms[l], model="\n".join(pool_model), clock=clock,
                           name=f"pool_{l}")
        pool.connect(i=members, j=block_of)
        back_model = ["inv_norm_post = 1/(sq_norm_pre + 1e-12) : 1 (summed)"]
        if circuit.influence and l >= 1:
            back_model.append("err_self_post = err_pre : 1 (summed)")
        if l == L and circuit.loss == "softmax_cross_entropy":
            back_model.append("exp_sum_post = exp_total_pre : 1 (summed)")
        back = b2.Synapses(norms[l], layers[l], model="\n".join(back_model), clock=clock,
                           name=f"broadcast_{l}")
        back.connect(i=block_of, j=members)
        first = l == 0
        pool.summed_updaters["sq_norm_post"].order = ORDER["input_pool" if first else "norm_pool"]
        back.summed_updaters["inv_norm_post"].order = ORDER[
            "input_broadcast" if first else "norm_broadcast"
        ]
        if "err_post" in pool.summed_updaters:
            pool.summed_updaters["err_post"].order = ORDER["error_pool"]
            back.summed_updaters["err_self_post"].order = ORDER["error_broadcast"]
        if "exp_total_post" in pool.summed_updaters:
            pool.summed_updaters["exp_total_post"].order = ORDER["norm_pool"]
            back.summed_updaters["exp_sum_post"].order = ORDER["norm_broadcast"]
        pools.append(pool)
        broadcasts.append(back)
    if circuit.influence:
        for l in range(1, L + 1):
            members = np.arange(K * nb[l])
            top = b2.Synapses(norms[L], layers[l], model="err_top_post = err_pre : 1 (summed)",
                              clock=clock, name=f"broadcast_top_{l}")
            top.connect(i=members // nb[l], j=members)
            top.summed_updaters["err_top_post"].order = ORDER["error_broadcast"]
            broadcasts.append(top)

    # -- feedforward and feedback synapses: all-to-all within each circuit's block -----------
    def connect_blocks(syn, l_pre, l_post, n_post, matrices):
        i, j, values = _block_synapses(matrices, nb[l_pre], nb[l_post], n_post)
        syn.connect(i=i, j=j)
        return values

    feedforward, feedback = [None], [None, None]
    drive = "d_scaled_error" if circuit.influence else "dtau"
    for l in range(1, L + 1):
        ff = b2.Synapses(
            layers[l - 1], layers[l],
            model=f"W : 1\n{dynamics[l].h_sum}_post = W*sm_pre : 1 (summed)\n"
                  "eta_w : 1 (shared, constant)",
            clock=clock, name=f"feedforward_{l}",
        )
        ff.W = connect_blocks(ff, l - 1, l, sizes[l], [net.weights[l] for net in nets])
        ff.eta_w = circuit.eta_w
        ff.summed_updaters[f"{dynamics[l].h_sum}_post"].order = ORDER["feedforward_sum"]
        if circuit.eta_w != 0 and slow:
            every = plasticity_every * dt * b2.second
            post = layers[l]
            ff.run_regularly("W += eta_w*w_drive_post*sa_pre*inv_norm_pre", dt=every,
                             when="groups", order=ORDER["feedforward_plasticity"],
                             name=f"feedforward_{l}_plasticity")
            post.run_regularly("w_drive = 0", dt=every, when="groups",
                               order=ORDER["drive_reset"], name=f"layer_{l}_drive_reset")
            post.run_regularly(f"w_drive += plasticity*{drive}", when="groups",
                               order=ORDER["drive_accumulate"],
                               name=f"layer_{l}_drive_accumulate")
        elif circuit.eta_w != 0:
            ff.run_regularly(f"W += eta_w*plasticity_post*{drive}_post*sa_pre*inv_norm_pre",
                             when="groups", order=ORDER["feedforward_plasticity"],
                             name=f"feedforward_{l}_plasticity")
        feedforward.append(ff)
    for l in range(2, L + 1):
        fbs = b2.Synapses(
            layers[l], layers[l - 1],
            model="Omega : 1\nfb_post = Omega*su_pre : 1 (summed)\n"
                  "eta_omega : Hz (shared, constant)\nmirror_gain : 1 (constant)\n"
                  "eta_w_fb : 1 (shared, constant)",
            clock=clock, name=f"feedback_{l}",
        )
        fbs.Omega = connect_blocks(fbs, l, l - 1, sizes[l - 1], [net.feedback[l] for net in nets])
        fbs.eta_omega = circuit.eta_omega * b2.Hz
        fbs.eta_w_fb = circuit.eta_w
        fbs.summed_updaters["fb_post"].order = ORDER["feedback_sum"]
        if circuit.feedback_rule in ("delta1", "delta2") and circuit.eta_omega != 0:
            err = {"delta1": "(m_post - fb_post)", "delta2": "(a_post - fb_post)"}[
                circuit.feedback_rule]
            if circuit.difference and circuit.feedback_rule == "delta1":
                err = "gamma_above_post*(a_post - fb_post)"  # Δ1 = γ Δ2 (Prop 8)
            fbs.run_regularly(
                f"Omega += eta_omega*{omega_dt}*{err}*su_pre",
                when="groups", order=ORDER["feedback_plasticity"], name=f"feedback_{l}_plasticity",
            )
        elif circuit.feedback_rule == "mirror" and circuit.eta_w != 0:
            # Ω_l follows the transpose of W_l's update (cdtp_map, ``mirror``): the same local
            # factors, with pre and post exchanged
            gains = [cdtp_map.mirror_gains(net.weights, sizes, circuit.feedback_gain)[l].item()
                     for net in nets]
            fbs.mirror_gain = np.repeat(gains, len(fbs) // K)
            drive_pre = "w_drive_pre" if slow else f"plasticity_pre*{drive}_pre"
            fbs.run_regularly(
                f"Omega += mirror_gain*eta_w_fb*{drive_pre}*sa_post*inv_norm_post",
                dt=(plasticity_every * dt * b2.second) if slow else None,
                when="groups", order=ORDER["feedforward_plasticity"],
                name=f"feedback_{l}_plasticity",
            )
        feedback.append(fbs)
    # run_regularly operations are contained in their groups and join the network with them
    return _Assembly(clock=clock, layers=layers, norms=norms, pools=pools,
                     broadcasts=broadcasts, feedforward=feedforward, feedback=feedback,
                     namespace=namespace, block_sizes=nb)


def _block_synapses(matrices, nb_pre: int, nb_post: int, n_post: int):
    """Presynaptic indices, postsynaptic indices and values of the all-to-all synapses inside
    each block, one (n_post, nb_pre) matrix per circuit: presynaptic-major (see the module
    docstring), the postsynaptic units running over each block's first ``n_post`` (not the
    bias unit)."""
    mats = np.stack(matrices)
    k, pre, post = (a.ravel() for a in np.meshgrid(
        np.arange(len(mats)), np.arange(nb_pre), np.arange(n_post), indexing="ij"))
    return k * nb_pre + pre, k * nb_post + post, mats[k, post, pre]


def _block_matrix(syn, var, n_post_block, n_pre_block, n_rows, n_cols, k=0, values=None):
    """Synaptic variable ``var`` of circuit k (block k) of an all-to-all-per-block Synapses
    object as an (n_rows, n_cols) matrix; ``values`` (one per synapse, e.g. a monitored
    snapshot) replace the variable's current values."""
    i, j = np.asarray(syn.i[:]), np.asarray(syn.j[:])
    mine = i // n_pre_block == k
    w = np.zeros((n_rows, n_cols))
    values = np.asarray(getattr(syn, var)[:] if values is None else values)
    w[j[mine] - k * n_post_block, i[mine] - k * n_pre_block] = values[mine]
    return w


def build(
    circuit: CircuitConfig,
    schedule: Schedule,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    dt: float = 1e-4,
    device: str = "cython",
    network: Network | None = None,
    record: dict | None = None,
    standalone_directory: str | None = None,
    threads: int = 1,
    plasticity_every: int = 1,
    snapshot_every: int = 0,
) -> CircuitRun:
    """Build the Brian2 network of ``circuit`` driven by ``schedule``.

    Parameters
    ----------
    circuit : CircuitConfig
    schedule : Schedule
        γ rhythm and plasticity gate (the hold gate is the circuit's).
    inputs, labels : ndarray
        The example stream, (n_examples, n_0) and (n_examples, n_L): example k is clamped at
        the start of γ cycle k.
    dt : float
        Integration step in s. Nonzero time constants must be ≥ dt; the γ period at least
        2 steps. When it is not a whole number of steps, cycles are one step apart in length
        (:meth:`cdtp.model.gating.Schedule.cycle_starts`) and ``plasticity_every`` must be 1.
    device : {"cython", "numpy", "cpp_standalone"}
        Brian2 code-generation target; a run option, not part of the circuit.
    network : Network, optional
        Initial weights (default: :func:`initial_network` from the circuit's seed).
    record : dict, optional
        ``{"variables": [...], "every": n_steps, "gates": bool}``: StateMonitors of layer
        variables (recorded in the ``end`` slot, i.e. after each step's updates) and, with
        ``gates``, of γ_l, γ_{l+1}, c_l, p_l and φ_l.
    standalone_directory : str, optional
        Project directory of a cpp_standalone build (default: a new temporary directory).
    threads : int
        OpenMP threads of a cpp_standalone build (ignored by the runtime devices).
    plasticity_every : int
        Run the O(n²) weight updates every this many steps instead of every step (a run
        option; 1, the default, is the reference map's order). Each neuron sums its own drive
        p_l·Δτ_l (or p_l·Δe_l with the influence factor) every step, and the synapses add
        η_W · (that sum) · σ(a_pre)/‖σ(a_pre)‖² when their slower clock fires: the sum of the
        per-step updates, exactly, whenever σ(a_pre) is constant within each window (a held
        phase), so Prop 5's telescoping is kept. W seen by the feedforward sums lags by fewer
        than ``plasticity_every`` steps. The feedback rules (Eqs 51/52) do not telescope
        (both factors change as u converges) and stay on every step. Must divide the steps
        per γ cycle.
    snapshot_every : int
        Record every W_l and Ω_l every this many γ cycles, at the start of a cycle (after the
        previous cycles' weight changes; with ``plasticity_every`` > 1, without the drive not
        yet applied): :meth:`CircuitRun.weight_snapshots`. 0 (default): none. A
        cpp_standalone circuit runs once, so this is how it reports learning curves.

    Several circuits that differ in their schedules (and initial weights) are simulated
    together by :func:`cdtp.brian.batch.build_batch`.
    """
    inputs, labels = _check_stream(circuit, inputs, labels)
    sizes, L = circuit.sizes, circuit.depth
    (spc,) = _validate(circuit, [schedule], dt, plasticity_every, threads)
    net0 = initial_network(circuit) if network is None else network
    standalone = device == "cpp_standalone"
    standalone_directory = _configure_device(device, standalone_directory, threads)
    parts = _assemble(circuit, [schedule], [net0], dt=dt, plasticity_every=plasticity_every,
                      batched=False, timed_stream=standalone, inputs=[inputs], labels=[labels])
    layers, clock = parts.layers, parts.clock

    # -- example clamping and divergence checks, once per γ cycle -----------------------------
    # per-cycle summaries, taken when the next cycle starts: a_L then still holds the output
    # computed in the feedforward phase, before that cycle's weight change
    run_state: dict = {"cycle": 0, "diverged": None, "outputs": [], "next_step": 0,
                       "schedule": schedule, "t0_step": 0, "cycle0": 0}
    n0, nL = sizes[0], sizes[-1]
    bound = circuit.activity_bound

    def clamp_examples():
        step = round(float(clock.t / b2.second) / dt)
        if step != run_state["next_step"]:
            return
        k = run_state["cycle"]
        run_state["next_step"] = _start_step(run_state, dt, k + 1)
        if 0 < k and len(run_state["outputs"]) < k:
            run_state["outputs"].append(np.array(layers[L].a[:nL]))
            _check_divergence(layers, sizes, bound, k - 1, run_state)
            if run_state["diverged"]:
                network.stop()
                return
        if k < len(inputs):
            layers[0].a[:n0] = inputs[k]
            layers[L].y[:nL] = labels[k]
        run_state["cycle"] = k + 1

    clamp = None
    if not standalone:
        # on the first step of every cycle: each step when the period is not whole steps
        clamp = b2.network_operation(dt=(spc or 1) * dt * b2.second, when="start", name="clamp")(
            clamp_examples
        )

    monitors = {}
    if record:
        variables = list(record.get("variables", ("a", "h", "u", "target")))
        every = int(record.get("every", 1))
        mclock = clock if every == 1 else b2.Clock(dt=every * dt * b2.second, name="record_clock")
        for l in range(L + 1):
            vs = [v for v in variables if not (l == 0 and v != "a") and not (l < 2 and v == "u")]
            if vs:
                monitors[l] = b2.StateMonitor(layers[l], vs, record=np.arange(sizes[l]),
                                              when="end", clock=mclock, name=f"monitor_{l}")
            if record.get("gates") and l >= 1:
                monitors[f"gates_{l}"] = b2.StateMonitor(
                    layers[l], ["gamma", "gamma_above", "hold", "plasticity", "gamma_phase"],
                    record=[0], when="end", clock=mclock, name=f"gate_monitor_{l}",
                )
    if standalone:
        # a_L at the start of each cycle = the output held from the cycle before
        cycle_clock = b2.Clock(dt=(spc or 1) * dt * b2.second, name="cycle_clock")
        monitors["outputs"] = b2.StateMonitor(layers[L], "a", record=np.arange(nL),
                                              when="start", clock=cycle_clock,
                                              name="output_monitor")
    if snapshot_every:
        monitors.update(_snapshot_monitors(parts, snapshot_every, spc, dt))
    network = b2.Network(
        *layers, *parts.norms, *parts.pools, *parts.broadcasts, *parts.feedforward[1:],
        *parts.feedback[2:], *([clamp] if clamp is not None else []),
        *monitors.values(), name="cdtp_network",
    )
    result = CircuitRun(
        circuit=circuit, schedule=schedule, network=network, layers=layers, norms=parts.norms,
        feedforward=parts.feedforward, feedback=parts.feedback, inputs=inputs, labels=labels,
        dt=dt, device=device, monitors=monitors, plasticity_every=plasticity_every,
        _clamp=clamp,
    )
    result.standalone_directory = standalone_directory
    result._run_state = run_state
    return result


def _feedforward_matrix(run, l: int, k: int) -> np.ndarray:
    """W_l of circuit k of a built run (a :class:`CircuitRun` or a batch), with the drive a
    slow plasticity clock has summed but not yet applied added as that update will apply it
    (σ(a_pre) and its norm as they are now, which the next update reads)."""
    sizes, bias = run.circuit.sizes, int(run.circuit.bias)
    nb_pre, nb_post = sizes[l - 1] + bias, sizes[l] + bias
    w = _block_matrix(run.feedforward[l], "W", nb_post, nb_pre, sizes[l], nb_pre, k)
    if run.plasticity_every > 1 and run.circuit.eta_w != 0:
        pre, post = run.layers[l - 1], run.layers[l]
        sl_pre = slice(k * nb_pre, (k + 1) * nb_pre)
        sa = np.asarray(pre.sa[sl_pre]) * np.asarray(pre.inv_norm[sl_pre])
        drive = np.asarray(post.w_drive[k * nb_post: k * nb_post + sizes[l]])
        w += run.circuit.eta_w * np.outer(drive, sa)
    return w


def _feedback_matrix(run, l: int, k: int) -> np.ndarray:
    """Ω_l of circuit k of a built run; with the ``mirror`` rule on a slow plasticity clock, the
    pending mirrored update is added as for W (:func:`_feedforward_matrix`)."""
    circuit = run.circuit
    sizes, bias = circuit.sizes, int(circuit.bias)
    nb_pre, nb_post = sizes[l] + bias, sizes[l - 1] + bias
    om = _block_matrix(run.feedback[l], "Omega", nb_post, nb_pre, sizes[l - 1], nb_pre, k)
    if run.plasticity_every > 1 and circuit.feedback_rule == "mirror" and circuit.eta_w != 0:
        below, above = run.layers[l - 1], run.layers[l]
        sl = slice(k * nb_post, k * nb_post + sizes[l - 1])
        sa = np.asarray(below.sa[sl]) * np.asarray(below.inv_norm[sl])
        drive = np.asarray(above.w_drive[k * nb_pre: k * nb_pre + sizes[l]])
        gain = float(np.asarray(run.feedback[l].mirror_gain[:])[k * nb_pre * sizes[l - 1]])
        om[:, : sizes[l]] += gain * circuit.eta_w * np.outer(sa, drive)
    return om


def _snapshot_monitors(parts, snapshot_every, spc: int, dt: float) -> dict:
    """StateMonitors of every W_l and Ω_l at the start of every ``snapshot_every``-th cycle
    (cycles of ``spc`` steps)."""
    if isinstance(snapshot_every, bool) or int(snapshot_every) != snapshot_every \
            or snapshot_every < 0:
        raise ValueError(f"snapshot_every must be a whole number of cycles ≥ 0, got"
                         f" {snapshot_every!r}")
    if spc is None:
        raise ValueError("snapshot_every needs a γ period that is a whole number of steps")
    clock = b2.Clock(dt=int(snapshot_every) * spc * dt * b2.second, name="snapshot_clock")
    monitors = {}
    for l in range(1, len(parts.layers)):
        for kind, syn, var in (("feedforward", parts.feedforward[l], "W"),
                               ("feedback", parts.feedback[l] if l >= 2 else None, "Omega")):
            if syn is not None:
                monitors[f"{kind}_snapshots_{l}"] = b2.StateMonitor(
                    syn, var, record=True, when="start", clock=clock,
                    name=f"{kind}_snapshots_{l}")
    return monitors


def _snapshot_matrices(run, l: int, kind: str, k: int) -> np.ndarray:
    """The snapshots of W_l or Ω_l of circuit k of a run built with ``snapshot_every``."""
    name = f"{kind}_snapshots_{l}"
    if kind not in ("feedforward", "feedback") or name not in {o.name for o in run.network.objects}:
        raise ValueError(f"no {kind} snapshots of layer {l}: build with snapshot_every > 0"
                         " (feedback weights exist for layers ≥ 2)")
    sizes, bias = run.circuit.sizes, int(run.circuit.bias)
    if kind == "feedforward":
        syn, var = run.feedforward[l], "W"
        shape = (sizes[l] + bias, sizes[l - 1] + bias, sizes[l], sizes[l - 1] + bias)
    else:
        syn, var = run.feedback[l], "Omega"
        shape = (sizes[l - 1] + bias, sizes[l] + bias, sizes[l - 1], sizes[l] + bias)
    values = np.asarray(getattr(run.network[name], var))  # (n_synapses, n_snapshots)
    return np.array([_block_matrix(syn, var, *shape, k=k, values=v) for v in values.T])


def _divergence_after_run(layers, circuit: CircuitConfig, outputs, block: int = 0):
    """Why circuit ``block`` diverged (or None), found after a run without Python in the loop:
    the first per-cycle output that is not finite or leaves the activity bound, else the final
    state; and the index of that output (None when the outputs stayed bounded)."""
    bound = circuit.activity_bound
    bad = [c for c, out in enumerate(outputs)
           if not np.all(np.isfinite(out)) or np.max(np.abs(out)) > bound]
    if bad:
        return f"cycle {bad[0]}: layer {circuit.depth}: a left the bound", bad[0]
    state = {"diverged": None}
    _check_divergence(layers, circuit.sizes, bound, len(outputs) - 1, state, block=block,
                      bias=int(circuit.bias))
    return state["diverged"], None


def _check_divergence(layers, sizes, bound, cycle, run_state, block=0, bias=0):
    """Record in ``run_state["diverged"]`` why circuit ``block`` has left the bound (a batch's
    blocks are ``sizes[l] + bias`` neurons long)."""
    for l, group in enumerate(layers):
        if l == 0:
            continue
        start = block * (sizes[l] + bias)
        for var in ("a", "u", "target"):
            v = np.asarray(getattr(group, var)[start:start + sizes[l]])
            if not np.all(np.isfinite(v)):
                run_state["diverged"] = f"cycle {cycle}: layer {l}: {var} is not finite"
                return
            peak = float(np.max(np.abs(v)))
            if peak > bound:
                run_state["diverged"] = (
                    f"cycle {cycle}: layer {l}: |{var}| reached {peak:.3g} > bound {bound:g}"
                )
                return
