"""Batched studies: K circuits with different γ schedules simulated as independent
sub-circuits of one Brian2 network (issue 6).

A parameter study of the γ rhythm runs the same circuit under many schedules. Run one at a
time, every Brian2 step pays the fixed cost of ~35 code objects per circuit; batched, the K
circuits are K blocks of neurons in the same groups, so one step runs each code object once over
K times as many neurons and synapses::

    layer_l:       [ circuit 0: n_l units + bias | circuit 1: n_l units + bias | … ]
    feedforward_l: block-diagonal (all-to-all inside each circuit's block, nothing across)
    norm_l:        one normalization neuron per circuit, pooling and broadcasting its own block

γ, the hold and plasticity gates and their constants (frequency, duty cycle, ramp, per-layer
lag, plasticity window) are per-neuron variables, so each block follows its own schedule; the
examples come from TimedArrays indexed by each block's own cycle number. Blocks share the
circuit's structure, time constants, learning rates and nonlinearity, and the compiled kind of
schedule (:func:`cdtp.brian.engine.compiled_kind`: γ shape, the values of an ``array`` γ, whether
the
plasticity gate is the paper's). Their initial weights and example streams may differ.

Each circuit runs its own ``n_cycles`` cycles of its own period: the network runs until the
longest is done, and a block that is done stops changing (every state update is multiplied by
the block's ``running`` flag; its input holds the last example). Within a block every sum runs
over the same partners in the same order as in a separate run, so a batch reproduces K separate
:func:`cdtp.brian.engine.build` runs exactly (tested to 1e-12; measured identical).

On cpp_standalone a batch compiles once; :meth:`BatchRun.rerun` runs the same binary again with
other schedule parameters, weights or example streams through Brian2's ``run_args``, without
generating or compiling anything.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import brian2 as b2
import numpy as np
from brian2.devices.device import all_devices

from cdtp.brian.assembly import (
    assemble,
    block_synapses,
    check_stream,
    plasticity_every_of,
    stream_arrays,
    validate_build,
)
from cdtp.brian.devices import configure_device
from cdtp.brian.engine import initial_network
from cdtp.brian.gates import compiled_kind, schedule_constants
from cdtp.brian.readout import (
    divergence_after_run,
    feedback_matrix,
    feedforward_matrix,
    snapshot_matrices,
    snapshot_monitors,
)
from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import Schedule
from cdtp.model.layers import Network

__all__ = ["BatchRun", "build_batch"]


@dataclass
class BatchRun:
    """K built circuits in one network. :meth:`run` simulates every circuit's ``n_cycles``;
    :meth:`outputs`, :meth:`weights`, :meth:`feedback_weights`, :meth:`state`,
    :attr:`diverged` (None or why) and :attr:`cycles_completed` then answer per circuit k."""

    circuit: CircuitConfig
    schedules: list
    n_cycles: list
    network: b2.Network
    layers: list
    norms: list
    feedforward: list
    feedback: list
    inputs: list
    labels: list
    dt: float
    device: str
    plasticity_every: int
    total_steps: int
    output_every: int
    namespace: dict
    standalone_directory: str | None = None
    diverged: list = field(default_factory=list)
    cycles_completed: list = field(default_factory=list)
    runs: int = 0

    @property
    def size(self) -> int:
        """K, the number of circuits."""
        return len(self.schedules)

    def run(self) -> BatchRun:
        """Simulate every circuit for its ``n_cycles`` γ cycles (once: build again, or
        :meth:`rerun` a cpp_standalone batch, to simulate more)."""
        if self.runs:
            raise RuntimeError("a batch runs once: use rerun() (cpp_standalone) or build again")
        duration = self.total_steps * self.dt * b2.second
        self.network.run(duration, namespace={})
        if self.device == "cpp_standalone":
            b2.get_device().build(directory=self.standalone_directory, run=True, compile=True,
                                  with_output=False)
        self._finish()
        return self

    def rerun(self, schedules: list[Schedule] | None = None, *,
              networks: list[Network] | None = None, inputs=None, labels=None,
              n_cycles: int | list[int] | None = None) -> BatchRun:
        """Run a cpp_standalone batch again, from the initial state, with new schedule
        parameters, initial weights, example streams or cycle counts, without generating or
        compiling code (Brian2 ``run_args``). What stays fixed: K, the compiled kind of schedule,
        the total number of steps (every circuit must finish within it), the output grid (each
        γ period a multiple of ``output_every`` steps) and the length of the example streams.
        What is not given is as built (not as in the previous rerun)."""
        if self.device != "cpp_standalone":
            raise RuntimeError("rerun needs a cpp_standalone batch; build a runtime batch again")
        # the standalone device object keeps this build until another standalone network is
        # built (runtime builds in between switch the active device, not its state)
        device = all_devices["cpp_standalone"]
        built = os.path.realpath(device.project_dir or "")
        if built != os.path.realpath(self.standalone_directory):
            raise RuntimeError(
                "another cpp_standalone network was built since this batch: build it again"
            )
        schedules = self.schedules if schedules is None else list(schedules)
        if len(schedules) != self.size:
            raise ValueError(f"{len(schedules)} schedules for a batch of {self.size} circuits")
        if any(compiled_kind(s) != compiled_kind(self.schedules[0]) for s in schedules):
            raise ValueError("rerun changes schedule parameters only; the compiled kind"
                             " (γ shape, array values, paper gate) must stay")
        spcs = validate_build(self.circuit, schedules, self.dt, self.plasticity_every, 1)
        n_cycles = self.n_cycles if n_cycles is None else _per_circuit(n_cycles, self.size)
        steps = _steps(schedules, self.dt, n_cycles)
        if max(steps) > self.total_steps:
            raise ValueError(
                f"the batch was compiled for {self.total_steps} steps; the longest circuit now"
                f" needs {max(steps)}: build it again"
            )
        if any((spc or 1) % self.output_every for spc in spcs) or (
                None in spcs and self.output_every != 1):
            raise ValueError(
                f"outputs are recorded every {self.output_every} steps; every γ period must be a"
                " multiple of that: build it again"
            )
        run_args = {}
        for (l, name), value in schedule_constants(
            self.layers, schedules, self.circuit, _block_sizes(self.circuit), dt=self.dt
        ).items():
            run_args[getattr(self.layers[l], name)] = value
        run_args.update(self._t_last_args(steps))
        if networks is not None:
            for l in range(1, self.circuit.depth + 1):
                run_args[self.feedforward[l].W] = _stacked(self, networks, l, "weights")
            for l in range(2, self.circuit.depth + 1):
                run_args[self.feedback[l].Omega] = _stacked(self, networks, l, "feedback")
        # checks every stream is long enough for the new cycle counts, given or not
        ins, labs = _streams(self.circuit, self.inputs if inputs is None else inputs,
                             self.labels if labels is None else labels, self.size, n_cycles)
        if inputs is not None or labels is not None:
            stim, lab = stream_arrays(self.circuit, ins, labs)
            if stim.shape != self.namespace["stimulus"].values.shape:
                compiled = len(self.namespace["stimulus"].values)
                raise ValueError(f"the example streams were compiled with {compiled} rows;"
                                 f" got {len(stim)}: build it again")
            run_args[self.namespace["stimulus"]] = stim
            run_args[self.namespace["label_stream"]] = lab
            self.inputs, self.labels = ins, labs
        device.run(self.standalone_directory, with_output=False, run_args=run_args)
        self.schedules, self.n_cycles = schedules, n_cycles
        self._finish()
        return self

    def _t_last_args(self, steps):
        nb = _block_sizes(self.circuit)
        return {
            group.t_last: np.repeat((np.asarray(steps) - 1) * self.dt, nb[l]) * b2.second
            for l, group in enumerate(self.layers)
        }

    def _finish(self):
        self.runs += 1
        self._outputs = None
        self.diverged, self.cycles_completed = [], []
        for k in range(self.size):
            why, bad = divergence_after_run(self.layers, self.circuit, self.outputs(k), k)
            self.diverged.append(why)
            # cycles up to and including the one whose output left the bound (as a separate
            # run, which stops there); a block whose final state left it completed them all
            self.cycles_completed.append(self.n_cycles[k] if bad is None else bad + 1)

    def outputs(self, k: int) -> np.ndarray:
        """a_L of circuit k at the end of each of its cycles (n_cycles_k, n_L): its output for
        that cycle's example, before the cycle's weight change (as :meth:`CircuitRun.outputs`)."""
        if not self.runs:
            raise RuntimeError("run the batch first")
        if self._outputs is None:
            # rows at every output_every steps, in the 'start' slot: row r = the state after
            # step r·output_every − 1
            self._outputs = np.asarray(self.network["output_monitor"].a).T
        starts = self.schedules[k].cycle_starts(self.dt, self.n_cycles[k])
        nL, nb = self.circuit.sizes[-1], _block_sizes(self.circuit)[-1]
        cols = slice(k * nL, (k + 1) * nL)
        rows = starts[1:-1] // self.output_every
        out = [self._outputs[r, cols] for r in rows]
        # the last cycle's output is the final state (the block stopped after its last step)
        out.append(np.asarray(self.layers[-1].a[k * nb: k * nb + nL]))
        return np.array(out)

    def weights(self, l: int, k: int) -> np.ndarray:
        """W_l of circuit k as an (n_l, n_{l−1} [+1]) matrix (bias column last)."""
        return feedforward_matrix(self, l, k)

    def feedback_weights(self, l: int, k: int) -> np.ndarray:
        """Ω_l of circuit k as an (n_{l−1}, n_l [+1]) matrix (bias column last)."""
        return feedback_matrix(self, l, k)

    def weight_snapshots(self, l: int, k: int, kind: str = "feedforward") -> np.ndarray:
        """W_l or Ω_l of circuit k at the start of every s-th cycle (s = ``snapshot_every``
        of :func:`build_batch`), as :meth:`cdtp.brian.engine.CircuitRun.weight_snapshots`."""
        return snapshot_matrices(self, l, kind, k)

    def state(self, var: str, l: int, k: int) -> np.ndarray:
        """Current values of ``var`` of layer l of circuit k, without the bias unit."""
        nb = _block_sizes(self.circuit)[l]
        return np.asarray(getattr(self.layers[l], var)[k * nb: k * nb + self.circuit.sizes[l]])


def _block_sizes(circuit: CircuitConfig) -> list[int]:
    return [n + int(circuit.bias) for n in circuit.sizes]


def _per_circuit(value, K: int, name: str = "n_cycles") -> list:
    values = [value] * K if np.isscalar(value) else list(value)
    if len(values) != K:
        raise ValueError(f"{name}: one value or {K} (one per circuit), got {len(values)}")
    return values


def _steps(schedules, dt, n_cycles) -> list[int]:
    """Steps each circuit runs: to the start of its cycle ``n_cycles``."""
    for n in n_cycles:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n_cycles = {n!r}: a positive whole number of γ cycles")
    return [int(s.cycle_starts(dt, int(n))[-1]) for n, s in zip(n_cycles, schedules)]


def _streams(circuit, inputs, labels, K, n_cycles):
    """One example stream per circuit (a single stream is shared), each long enough."""
    shared = np.ndim(inputs) == 2
    ins = [inputs] * K if shared else list(inputs)
    labs = [labels] * K if shared else list(labels)
    if len(ins) != K or len(labs) != K:
        raise ValueError(f"inputs and labels: one stream or {K} (one per circuit)")
    ins, labs = zip(*(check_stream(circuit, x, y) for x, y in zip(ins, labs)))
    for k, (x, n) in enumerate(zip(ins, n_cycles)):
        if len(x) < n:
            raise ValueError(f"circuit {k}: the example stream has {len(x)} examples;"
                             f" {n} cycles need {n}")
    return list(ins), list(labs)


def _stacked(batch, networks, l, which):
    """W_l (``which`` = "weights") or Ω_l ("feedback") of ``networks``, in the order the
    batch's synapses were connected."""
    if len(networks) != batch.size:
        raise ValueError(f"{len(networks)} networks for a batch of {batch.size} circuits")
    nb, sizes = _block_sizes(batch.circuit), batch.circuit.sizes
    pre, post = (l - 1, l) if which == "weights" else (l, l - 1)
    *_, values = block_synapses([getattr(net, which)[l] for net in networks], nb[pre],
                                 nb[post], sizes[post])
    return values


def build_batch(
    circuit: CircuitConfig,
    schedules: list[Schedule],
    inputs,
    labels,
    n_cycles: int | list[int],
    *,
    dt: float = 1e-4,
    device: str = "cython",
    networks: list[Network] | None = None,
    standalone_directory: str | None = None,
    threads: int = 1,
    plasticity_every: int = 1,
    output_every: int | None = None,
    snapshot_every: int = 0,
) -> BatchRun:
    """Build K = ``len(schedules)`` copies of ``circuit`` as blocks of one Brian2 network.

    Parameters
    ----------
    circuit : CircuitConfig
        The structure shared by every circuit of the batch.
    schedules : list of Schedule
        One per circuit; they must agree on :func:`cdtp.brian.engine.compiled_kind`.
    inputs, labels : ndarray or list of ndarray
        One example stream shared by all circuits, (n_examples, n_0) / (n_examples, n_L), or
        one per circuit. Example c is clamped at the start of the circuit's own γ cycle c.
    n_cycles : int or list of int
        γ cycles per circuit (one value for all, or one each).
    networks : list of Network, optional
        Initial weights per circuit (default: the circuit's seed, the same for all).
    dt, device, standalone_directory, threads, plasticity_every
        As for :func:`cdtp.brian.engine.build`.
    output_every : int, optional
        Steps between samples of a_L, from which each circuit's per-cycle outputs are read:
        every γ period must be a multiple of it. Default: the greatest common divisor of the
        periods (in steps). A cpp_standalone batch to be rerun with other frequencies needs a
        grid that fits those too.
    snapshot_every : int
        Record every circuit's W_l and Ω_l every this many γ cycles
        (:meth:`BatchRun.weight_snapshots`; as :func:`cdtp.brian.engine.build`). Needs one γ period
        for the whole batch.
    """
    schedules = list(schedules)
    K = len(schedules)
    if K < 1:
        raise ValueError("a batch needs at least one schedule")
    kinds = {compiled_kind(s) for s in schedules}
    if len(kinds) > 1:
        raise ValueError(
            "the schedules of a batch must agree on γ shape, array values and whether the"
            f" plasticity gate is the paper's; got {sorted(map(str, kinds))}"
        )
    plasticity_every = plasticity_every_of(circuit, schedules, dt, plasticity_every)
    spcs = validate_build(circuit, schedules, dt, plasticity_every, threads)
    n_cycles = _per_circuit(n_cycles, K)
    steps = _steps(schedules, dt, n_cycles)
    ins, labs = _streams(circuit, inputs, labels, K, n_cycles)
    if networks is None:
        networks = [initial_network(circuit)] * K
    elif len(networks) != K:
        raise ValueError(f"{len(networks)} networks for a batch of {K} circuits")
    standalone_directory = configure_device(device, standalone_directory, threads)
    parts = assemble(circuit, schedules, networks, dt=dt, plasticity_every=plasticity_every,
                      batched=True, timed_stream=True, inputs=ins, labels=labs)
    nb = parts.block_sizes
    for l, group in enumerate(parts.layers):
        group.t_last = np.repeat((np.asarray(steps) - 1) * dt, nb[l]) * b2.second
    # outputs: a_L at the start of every output_every-th step (each cycle's end lies on it)
    # (every step when a period is not a whole number of steps)
    whole = None not in spcs
    if output_every is None:
        output_every = math.gcd(*spcs) if whole else 1
    if not isinstance(output_every, int) or output_every < 1 or any(
        (spc or 1) % output_every for spc in spcs
    ) or (not whole and output_every != 1):
        periods = ", ".join(f"{s.gamma.period / dt:g}" for s in schedules)
        raise ValueError(f"output_every = {output_every!r}: a positive integer dividing every"
                         f" γ period ({periods} steps; 1 when one is not a whole number)")
    nL = circuit.sizes[-1]
    out_cols = (np.arange(K)[:, None] * nb[-1] + np.arange(nL)[None, :]).ravel()
    monitor = b2.StateMonitor(
        parts.layers[-1], "a", record=out_cols, when="start",
        clock=b2.Clock(dt=output_every * dt * b2.second, name="output_clock"),
        name="output_monitor",
    )
    snapshots = {}
    if snapshot_every:
        if len(set(spcs)) > 1 or spcs[0] is None:
            raise ValueError("snapshot_every needs one γ period, a whole number of steps, for"
                             f" the whole batch; got {', '.join(map(str, spcs))} steps")
        snapshots = snapshot_monitors(parts, snapshot_every, spcs[0], dt)
    network = b2.Network(
        *parts.layers, *parts.norms, *parts.pools, *parts.broadcasts, *parts.feedforward[1:],
        *parts.feedback[2:], monitor, *snapshots.values(), name="cdtp_batch",
    )
    return BatchRun(
        circuit=circuit, schedules=schedules, n_cycles=n_cycles, network=network,
        layers=parts.layers, norms=parts.norms, feedforward=parts.feedforward,
        feedback=parts.feedback, inputs=ins, labels=labs, dt=dt, device=device,
        plasticity_every=plasticity_every, total_steps=max(steps), output_every=output_every,
        namespace=parts.namespace, standalone_directory=standalone_directory,
    )
