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
from dataclasses import dataclass, field

import brian2 as b2
import numpy as np

from cdtp.brian.assembly import assemble, check_stream, plasticity_every_of, validate_build
from cdtp.brian.devices import DEVICES, configure_device
from cdtp.brian.equations import describe
from cdtp.brian.gates import compiled_kind, set_schedule_constants, start_step
from cdtp.brian.readout import (
    check_divergence,
    divergence_after_run,
    feedback_matrix,
    feedforward_matrix,
    snapshot_matrices,
    snapshot_monitors,
)
from cdtp.brian.spiking import Populations, attach
from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import Schedule
from cdtp.model.layers import Network, init_network
from cdtp.model.nonlinearities import get_nonlinearity

__all__ = ["DEVICES", "CircuitRun", "Diverged", "build", "initial_network"]


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
    if circuit.normalize_feedback:
        from cdtp.reference import cdtp_map

        net.meta[cdtp_map.FEEDBACK_NORM_REFERENCE] = cdtp_map.feedback_norm_reference(net)
    return net


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
    populations: Populations | None = None

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
        return start_step(self._run_state, self.dt, k)

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
            check_divergence(self.layers, self.circuit.sizes, self.circuit.activity_bound,
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
        state["diverged"], _ = divergence_after_run(self.layers, self.circuit, state["outputs"])
        self.diverged = state["diverged"]
        self.cycle = n_cycles
        return self

    def outputs(self) -> np.ndarray:
        """a_L of every completed cycle, as held at the end of the cycle: the circuit's output
        for that cycle's example, computed before the cycle's own weight change."""
        return np.array(self._run_state["outputs"][: self.cycle])

    def weights(self, l: int) -> np.ndarray:
        """W_l as an (n_l, n_{l−1} [+1]) matrix (bias column last)."""
        return feedforward_matrix(self, l, 0)

    def feedback_weights(self, l: int) -> np.ndarray:
        """Ω_l as an (n_{l−1}, n_l [+1]) matrix (bias column last)."""
        return feedback_matrix(self, l, 0)

    def weight_snapshots(self, l: int, kind: str = "feedforward") -> np.ndarray:
        """W_l (``kind="feedforward"``) or Ω_l (``"feedback"``) at the start of cycles 0,
        s, 2s, … that have begun (s = ``snapshot_every`` of :func:`build`), shape
        (n_snapshots, rows, columns) as :meth:`weights` / :meth:`feedback_weights`."""
        return snapshot_matrices(self, l, kind, 0)

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
        validate_build(self.circuit, [schedule], self.dt, self.plasticity_every, 1)
        spc = schedule.whole_period(self.dt)
        state = self._run_state
        now = round(float(self.network.t / b2.second) / self.dt)
        if now != state["next_step"] and state["cycle"]:
            raise ValueError("set_schedule must be called between whole cycles")
        self.schedule = schedule
        set_schedule_constants(self.layers, [schedule], self.circuit, t0=now, dt=self.dt)
        state.update(schedule=schedule, t0_step=now, cycle0=state["cycle"], next_step=now)
        # the clamp fires on every common divisor step of the old time and the new period (on
        # every step when the period is not a whole number of steps)
        tick = 1 if spc is None else (math.gcd(now, spc) if now else spc)
        self._clamp.clock.dt = tick * self.dt * b2.second


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
    spike_seed: int | None = None,
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

    spike_seed : int, optional
        A spiking circuit (``neurons = "spiking"``, docs/model.md §2.5): the seed of its
        spikes (Brian2's ``seed``, which seeds ``rand()`` of the runtime and standalone
        code); default the circuit's ``seed``. The same seed gives the same spikes on one
        device. Ignored by a rate circuit, which draws no random numbers.

    Several circuits that differ in their schedules (and initial weights) are simulated
    together by :func:`cdtp.brian.batch.build_batch` (rate circuits only).
    """
    inputs, labels = check_stream(circuit, inputs, labels)
    sizes, L = circuit.sizes, circuit.depth
    plasticity_every = plasticity_every_of(circuit, [schedule], dt, plasticity_every)
    (spc,) = validate_build(circuit, [schedule], dt, plasticity_every, threads)
    net0 = initial_network(circuit) if network is None else network
    standalone = device == "cpp_standalone"
    standalone_directory = configure_device(device, standalone_directory, threads)
    spiking = circuit.neurons == "spiking"
    if spiking:
        b2.seed(circuit.seed if spike_seed is None else spike_seed)
    parts = assemble(circuit, [schedule], [net0], dt=dt, plasticity_every=plasticity_every,
                      batched=False, timed_stream=standalone, inputs=[inputs], labels=[labels])
    layers, clock = parts.layers, parts.clock
    populations = attach(layers, sizes, circuit.spiking, clock, dt) if spiking else None

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
        run_state["next_step"] = start_step(run_state, dt, k + 1)
        if 0 < k and len(run_state["outputs"]) < k:
            run_state["outputs"].append(np.array(layers[L].a[:nL]))
            check_divergence(layers, sizes, bound, k - 1, run_state)
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
        monitors.update(snapshot_monitors(parts, snapshot_every, spc, dt))
    network = b2.Network(
        *layers, *parts.norms, *parts.pools, *parts.broadcasts, *parts.feedforward[1:],
        *parts.feedback[2:], *([clamp] if clamp is not None else []),
        *(populations.objects if populations else []), *monitors.values(),
        name="cdtp_network",
    )
    result = CircuitRun(
        circuit=circuit, schedule=schedule, network=network, layers=layers, norms=parts.norms,
        feedforward=parts.feedforward, feedback=parts.feedback, inputs=inputs, labels=labels,
        dt=dt, device=device, monitors=monitors, plasticity_every=plasticity_every,
        _clamp=clamp, populations=populations,
    )
    result.standalone_directory = standalone_directory
    result._run_state = run_state
    return result


