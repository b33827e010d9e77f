"""Run a circuit and record it into a Dataset (engine side of :mod:`cdtp.record.dataset`).

:func:`simulate` builds the circuit (:func:`cdtp.brian.engine.build`), runs it in chunks of whole γ
cycles and hands each chunk's recordings to a :class:`cdtp.record.dataset.Recorder`:

- traces: Brian2 ``StateMonitor`` objects on a clock of ``every`` steps, in the ``end`` slot
  (a sample at step k is the state at the end of that step, time (k + 1) dt); emptied after each
  chunk (``resize(0)``), so memory is bounded by the chunk;
- phase-boundary snapshots (every neuron's a, h, u, τ, m, fb and every W and Ω): a network
  operation in the ``start`` slot, before the example clamp, on a clock that ticks on every
  boundary step; a snapshot at boundary step s (an absolute step, from
  :meth:`cdtp.model.gating.Schedule.boundary_table`; c·T + b with T whole steps per cycle) is the
  state after step s − 1. The ``cycle_start`` snapshot shows the new example on layer 0;
- per cycle: the output a_L held at the end of the cycle, the label, the loss, ‖ΔW‖ per
  projection.

``backend="map"`` runs the numpy reference map (:mod:`cdtp.reference.cdtp_map`) instead and
records the same Dataset: in the discrete limit the two agree to float precision, so analysis
code can be tested without Brian2. Recording needs a runtime device (``cython`` or ``numpy``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import xarray as xr

from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import Schedule
from cdtp.model.losses import get_loss
from cdtp.record.dataset import BOUNDARIES, GATE_VARIABLES, Recorder, RecordSpec, pathways

__all__ = ["boundary_steps", "simulate"]


def boundary_steps(schedule: Schedule, circuit: CircuitConfig, dt: float) -> dict[str, int]:
    """Step offsets within a cycle of the phase boundaries of :data:`BOUNDARIES` (layer 1's
    gates; with a travelling wave the upper layers' phases are shifted by their lag), when
    they are the same in every cycle (a period of whole steps).

    ``feedback_start`` is the first step with c(γ) < ½, ``plasticity_start`` the first with
    p > 0 and ``plasticity_end`` one past the last with p > 0 (T, the cycle length, when the
    window reaches the end of the cycle or never opens). When the period is not a whole
    number of steps the offsets vary from cycle to cycle by one step: see
    :meth:`cdtp.model.gating.Schedule.boundary_table`.

    Raises
    ------
    ValueError
        If the period is not a whole number of steps.
    """
    schedule.steps_per_cycle(dt)
    table = schedule.boundary_table(dt, 1, circuit.depth, circuit.hold)
    return dict(zip(BOUNDARIES, (int(v) for v in table[0] - table[0, 0])))


def _constant_offsets(table: np.ndarray, starts: np.ndarray) -> tuple[int | None, dict | None]:
    """(steps per cycle, {boundary: offset}) when every cycle of ``table`` has the same, else
    (None, None)."""
    lengths = np.diff(starts)
    if len(lengths) == 0 or np.any(lengths != lengths[0]):
        return None, None
    offsets = table - table[:, :1]
    if np.any(offsets != offsets[0]):
        return int(lengths[0]), None
    return int(lengths[0]), dict(zip(BOUNDARIES, (int(v) for v in offsets[0])))


class _Snapshots:
    """Collects phase-boundary snapshots from a state reader, cycle by cycle."""

    def __init__(self, circuit, spec, table, starts, inputs, labels, loss):
        self.circuit, self.spec, self.table, self.starts = circuit, spec, table, starts
        # step → [(cycle, boundary)] snapshotted at its start; step → cycle index it starts
        self.at: dict[int, list] = {}
        for c, row in enumerate(table):
            for b, step in zip(BOUNDARIES, row):
                self.at.setdefault(int(step), []).append((c, b))
        self.cycle_at = {int(step): i for i, step in enumerate(starts)}
        self.inputs, self.labels, self.loss = inputs, labels, loss
        self.sizes = circuit.sizes
        self.n_nodes = sum(self.sizes)
        self.pending: dict[int, dict] = {}
        self.done: list[int] = []
        self.last_weights: dict[str, np.ndarray] | None = None
        self.valid = self._valid_mask()
        self.held_out = None  # a cdtp.record.evaluation.HeldOut, shown the weights at cycle ends

    def _valid_mask(self) -> dict[str, np.ndarray]:
        L = len(self.sizes) - 1
        spiking = self.circuit.neurons == "spiking"
        has = {
            "a": lambda l: True, "h": lambda l: l >= 1, "target": lambda l: l >= 1,
            "u": lambda l: l >= 2, "m": lambda l: l < L, "fb": lambda l: 1 <= l < L,
            "rate_m": lambda l: spiking and l < L, "rate_u": lambda l: spiking and l >= 2,
        }
        return {v: np.concatenate([np.full(n, has[v](l)) for l, n in enumerate(self.sizes)])
                for v in has}

    def _read_state(self, reader) -> dict[str, np.ndarray]:
        out = {}
        for var in ("a", "h", "u", "target", "m", "fb"):
            vec = np.concatenate([reader.state(var, l) for l in range(len(self.sizes))])
            out[var] = np.where(self.valid[var], vec, np.nan)
        return out

    def _read_weights(self, reader) -> dict[str, np.ndarray]:
        L = len(self.sizes) - 1
        w = {f"feedforward_{l}": reader.weights(l).ravel() for l in range(1, L + 1)}
        w.update({f"feedback_{l}": reader.feedback_weights(l).ravel() for l in range(2, L + 1)})
        return w

    def take(self, reader, step: int, t: float) -> None:
        """Record the boundaries that fall at the start of global step ``step``."""
        hits = self.at.get(step, [])
        c = self.cycle_at.get(step)  # the cycle that starts here (None within a cycle)
        if not hits and not (c is not None and c >= 1):
            # (at a cycle's end the weights are read even without a boundary there: the
            # cycle's ‖ΔW‖ needs them, e.g. for the last cycle of a run whose plasticity
            # window closes before the cycle ends)
            return
        state = self._read_state(reader) if self.spec.snapshots else None
        weights = self._read_weights(reader) if (self.spec.weights or self.last_weights is None
                                                 or c is not None) else None
        for cycle, b in hits:
            entry = self.pending.setdefault(cycle, {"time": {}, "state": {}, "weights": {}})
            entry["time"][b] = t
            if state is not None:
                s = {k: v.copy() for k, v in state.items()}
                if b == "cycle_start":
                    # the clamp runs right after this snapshot: show the cycle's own example
                    x = self.inputs[cycle]
                    s["a"][: self.sizes[0]] = x
                    s["m"][: self.sizes[0]] = x
                entry["state"][b] = s
            if weights is not None:
                entry["weights"][b] = weights
        if c is not None and weights is not None and self.held_out is not None:
            self.held_out.observe(c, weights)  # the weights at the end of cycle c − 1
        if c is not None and weights is not None:
            # ‖ΔW‖ of the cycle that just ended
            if c >= 1 and (c - 1) in self.pending and self.last_weights is not None:
                self.pending[c - 1]["change"] = np.array([
                    np.linalg.norm(weights[p] - self.last_weights[p]) for p in pathways(self.sizes)
                ])
            self.last_weights = weights

    def collect(self, outputs: np.ndarray) -> tuple[np.ndarray, dict] | None:
        """Per-cycle arrays of all completed cycles not collected yet."""
        ready = sorted(c for c, e in self.pending.items()
                       if len(e["time"]) == len(BOUNDARIES) and "change" in e
                       and c < len(outputs))  # a cycle cut short by divergence is not kept
        if not ready:
            return None
        n_out = self.sizes[-1]
        out = np.array([outputs[c] for c in ready]).reshape(len(ready), n_out)
        lab = self.labels[ready]
        summaries = {
            "output": out, "label": lab,
            "loss": self.loss.value(out, lab).reshape(len(ready)),
            "boundary_time": np.array([[self.pending[c]["time"][b] for b in BOUNDARIES]
                                       for c in ready]),
            "boundary_step": self.table[ready],
            "cycle_start_step": self.table[ready, 0],
            "weight_change": np.array([self.pending[c]["change"] for c in ready]),
        }
        if self.spec.snapshots:
            for var in ("a", "h", "u", "target", "m", "fb"):
                summaries[f"snapshot_{var}"] = np.array([
                    [self.pending[c]["state"][b][var] for b in BOUNDARIES] for c in ready
                ])
        if self.spec.weights:
            names = pathways(self.sizes)
            summaries["weight"] = np.array([
                [np.concatenate([self.pending[c]["weights"][b][p] for p in names])
                 for b in BOUNDARIES] for c in ready
            ])
        for c in ready:
            del self.pending[c]
        return np.array(ready), summaries


def _trace_segments(n_cycles: int, spec: RecordSpec) -> list[tuple[int, int, bool]]:
    """Split [0, n_cycles) into chunks of at most spec.chunk_cycles, cut at the trace window."""
    cuts = {0, n_cycles}
    if spec.trace_cycles is not None:
        cuts |= {min(max(c, 0), n_cycles) for c in spec.trace_cycles}
    edges = sorted(cuts)
    out = []
    for lo, hi in itertools.pairwise(edges):
        for s in range(lo, hi, spec.chunk_cycles):
            e = min(s + spec.chunk_cycles, hi)
            out.append((s, e, spec.traces_cycle(s)))
    return out


def simulate(
    circuit: CircuitConfig,
    schedule: Schedule,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    n_cycles: int | None = None,
    record: RecordSpec | None = None,
    dt: float = 1e-4,
    device: str = "cython",
    backend: str = "brian2",
    path: str | Path | None = None,
    attrs: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    interrupt=None,
    held_out=None,
    tick: Callable[[int, int], None] | None = None,
    spike_seed: int = 0,
    network=None,
) -> xr.Dataset:
    """Simulate ``n_cycles`` γ cycles (one example each) and record them.

    Parameters
    ----------
    circuit, schedule, inputs, labels, dt, device
        As for :func:`cdtp.brian.engine.build`.
    n_cycles : int, optional
        Default: one cycle per example.
    record : RecordSpec, optional
        What to record (default :class:`RecordSpec()`).
    backend : {"brian2", "map"}
        The Brian2 circuit, or the numpy reference map (discrete limit: τ_h = τ_τ = 0 …
        any time constants the map supports).
    path : path-like, optional
        Stream the recording to this NetCDF file; it is written atomically at the end (also
        for a diverged run, marked in ``attrs["diverged"]``). Nothing is written if the run
        raises.
    attrs : dict, optional
        Extra global attributes (e.g. the scenario).
    progress : callable, optional
        ``progress(cycles_done, n_cycles)`` after each chunk.
    tick : callable, optional
        ``tick(cycles_done, n_cycles)`` within a chunk, for a progress bar: from Brian2's
        ``report`` hook about twice a second, or after every cycle of the reference map.
    interrupt : cdtp.study.interrupts.StopOnInterrupt, optional
        When it is requested (the first Ctrl-C), the run stops after the current time step,
        drops the cycle in progress and records the cycles completed, with
        ``attrs["interrupted"]`` saying so; if no cycle was completed, or the interrupt is
        ``aborted`` (a second Ctrl-C; any Ctrl-C during a sweep), it raises
        :class:`KeyboardInterrupt` and writes nothing.
    held_out : cdtp.record.evaluation.HeldOut, optional
        Evaluate the forward weights on held-out examples at the end of every epoch and of
        the run; recorded as ``test_accuracy`` / ``test_loss`` on the ``epoch`` dimension.
    spike_seed : int
        Seed of the spikes of a spiking circuit (:func:`cdtp.brian.engine.build`; a scenario
        passes its ``seed``).
    network : cdtp.model.layers.Network, optional
        Start from these weights W_l and feedback weights Ω_l (e.g. those of a circuit after
        some training) instead of the circuit's seeded initial network; its sizes must be the
        circuit's. The state starts from rest as in any run, and the ``mirror`` rule's gains
        c_l = gain / ‖W_l‖₂² are taken from these weights.

    Returns
    -------
    xarray.Dataset
        The layout of :mod:`cdtp.record.dataset`.
    """
    record = RecordSpec() if record is None else record
    inputs = np.asarray(inputs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    n_cycles = len(inputs) if n_cycles is None else int(n_cycles)
    if not 1 <= n_cycles <= len(inputs):
        raise ValueError(f"n_cycles = {n_cycles}: the example stream has {len(inputs)} examples")
    if backend not in ("brian2", "map"):
        raise ValueError(f"backend {backend!r}; allowed: brian2, map")
    if network is not None and tuple(network.sizes) != tuple(circuit.sizes):
        raise ValueError(f"network: sizes {list(network.sizes)} are not the circuit's"
                         f" {list(circuit.sizes)} ({circuit.source})")
    if backend == "map" and circuit.neurons == "spiking":
        raise ValueError(f"{circuit.source}: neurons = 'spiking': the numpy reference map"
                         " simulates rate units only; allowed with spikes: backend = 'brian2'")
    base_attrs = run_attributes(circuit, schedule, record, dt,
                                device if backend == "brian2" else "numpy reference map",
                                backend, attrs, n_cycles=n_cycles)
    if backend == "brian2" and device == "cpp_standalone":
        return _simulate_standalone(circuit, schedule, inputs[:n_cycles], labels[:n_cycles],
                                    dt, record, path, base_attrs, held_out, spike_seed, network)
    starts = schedule.cycle_starts(dt, n_cycles)
    table = schedule.boundary_table(dt, n_cycles, circuit.depth, circuit.hold)
    recorder = Recorder(record, circuit.sizes, circuit.bias, base_attrs, path=path)
    snaps = _Snapshots(circuit, record, table, starts, inputs, labels, get_loss(circuit.loss))
    snaps.held_out = held_out

    def stop_requested() -> bool:
        return interrupt is not None and interrupt.requested

    stop_callback = None
    try:
        args = (circuit, schedule, inputs, labels, dt, device, record, snaps, stop_requested)
        runner = (_Brian2Runner(*args, spike_seed=spike_seed, network=network)
                  if backend == "brian2" else _MapRunner(*args, network=network))
        runner.tick = None if tick is None else (lambda done: tick(done, n_cycles))
        if interrupt is not None:
            interrupt.on_stop(runner.stop)
            stop_callback = runner.stop
        diverged = ""
        done = recorded = 0
        stopping = final_taken = False
        for start, stop, traced in _trace_segments(n_cycles, record):
            stopping = stop_requested()
            if stopping:
                break
            times, values, gates = runner.run(stop - start, traced)
            stopping = stop_requested()
            if stopping:
                # stopped, perhaps within a cycle: the snapshot that ends the last completed
                # cycle, then only what the completed cycles recorded
                runner.final_snapshot()
                final_taken = True
            got = snaps.collect(runner.outputs())
            if got is not None:
                recorded = int(got[0][-1]) + 1
            if stopping:
                keep = times <= starts[recorded] * dt * (1 + 1e-12)
                times = times[keep]
                values = {k: v[keep] for k, v in values.items()}
                gates = {k: v[keep] for k, v in gates.items()}
            recorder.add_traces(times, values, gates)
            if got is not None:
                recorder.add_cycles(*got)
            done = recorded if stopping else runner.cycles_done
            if progress is not None:
                progress(done, n_cycles)
            if runner.diverged:
                diverged = runner.diverged
                break
            if stopping:
                break
        interrupted = ""
        if not diverged and not final_taken:
            # at a cycle boundary: the snapshot that completes the last cycle
            runner.final_snapshot()
            got = snaps.collect(runner.outputs())
            if got is not None:
                recorder.add_cycles(*got)
                recorded = int(got[0][-1]) + 1
        if stopping and not diverged:
            if recorded == 0:
                raise KeyboardInterrupt  # nothing completed: write nothing
            done = recorded
            interrupted = f"interrupted (SIGINT) after {done} of {n_cycles} cycles"
        if interrupt is not None and interrupt.aborted:
            raise KeyboardInterrupt  # a second Ctrl-C whose exception was swallowed
        extra = {}
        spikes = getattr(runner, "spikes", lambda: None)()
        if spikes is not None:
            recorder.add_dataset(spikes)
        if held_out is not None:
            held_out.finish(recorded)
            recorder.add_dataset(held_out.dataset())
            extra["held_out"] = held_out.attributes()
        return recorder.finish({"diverged": diverged, "interrupted": interrupted,
                                "cycles_completed": done, "cycles_planned": n_cycles, **extra})
    except BaseException:
        recorder.discard()
        raise
    finally:
        if interrupt is not None and stop_callback is not None:
            interrupt.remove_stop(stop_callback)


#: What a cpp_standalone run can record (it runs as one compiled binary, without Python).
STANDALONE_RECORD = ("[record] variables = [], gates = false, snapshots = false, weights = false,"
                     " spikes = 0")


def standalone_unrecordable(record) -> list[str]:
    """The parts of ``record`` a cpp_standalone run cannot record (empty: it can run)."""
    return [name for name, on in (("variables", bool(record.variables)),
                                  ("gates", record.gates), ("snapshots", record.snapshots),
                                  ("weights", record.weights),
                                  ("spikes", bool(getattr(record, "spikes", 0)))) if on]


def _simulate_standalone(circuit, schedule, inputs, labels, dt, record, path, attrs,
                         held_out=None, spike_seed=0, network=None) -> xr.Dataset:
    """A run on cpp_standalone: one compiled binary runs every cycle; the per-cycle output,
    label and loss come from its output monitor and the held-out evaluation from weight
    snapshots at the start of every epoch (:func:`cdtp.brian.engine.build`'s ``snapshot_every``).
    Traces, phase-boundary snapshots and weights need a runtime device (cython or numpy)."""
    from cdtp.brian.engine import build

    wanted = standalone_unrecordable(record)
    if wanted:
        raise ValueError(
            f"device cpp_standalone records the per-cycle output, label and loss (and the"
            f" held-out evaluation), not record.{', record.'.join(wanted)}: set"
            f" {STANDALONE_RECORD}, or use device = \"cython\" to record traces and snapshots")
    n = len(inputs)
    epoch = held_out.epoch_length if held_out is not None else 0
    recorder = Recorder(record, circuit.sizes, circuit.bias, attrs, path=path)
    try:
        run = build(circuit, schedule, inputs, labels, dt=dt, device="cpp_standalone",
                    snapshot_every=epoch if 0 < epoch < n else 0, network=network,
                    **_spike_seed(circuit, spike_seed)).run(n)
        outputs = run.outputs()
        bad = [c for c, out in enumerate(outputs)
               if not np.all(np.isfinite(out)) or np.max(np.abs(out)) > circuit.activity_bound]
        done = bad[0] + 1 if bad else n  # as a runtime run, which stops after that cycle
        out, lab = outputs[:done], labels[:done]
        loss = get_loss(circuit.loss).value(out, lab).reshape(done)
        recorder.add_cycles(np.arange(done), {"output": out, "label": lab, "loss": loss})
        extra = {}
        if held_out is not None:
            L = circuit.depth
            if 0 < epoch < n:
                snaps = [run.weight_snapshots(l) for l in range(1, L + 1)]
                for e in range(len(snaps[0])):
                    if e * epoch <= done:
                        held_out.observe(e * epoch, {f"feedforward_{l}": snaps[l - 1][e]
                                                     for l in range(1, L + 1)})
            else:
                held_out.observe(0, {f"feedforward_{l}": w for l, w in
                                     enumerate(_initial_weights(circuit, network), start=1)})
            held_out.observe(done, {f"feedforward_{l}": run.weights(l) for l in range(1, L + 1)})
            held_out.finish(done)
            recorder.add_dataset(held_out.dataset())
            extra["held_out"] = held_out.attributes()
        return recorder.finish({"diverged": run.diverged or "", "interrupted": "",
                                "cycles_completed": done, "cycles_planned": n, **extra})
    except BaseException:
        recorder.discard()
        raise


def _initial_weights(circuit, network=None) -> list:
    """W_1..W_L the circuit starts from (``network``, or its seed's initial network)."""
    from cdtp.brian.engine import initial_network

    net = initial_network(circuit) if network is None else network
    return [net.weights[l] for l in range(1, circuit.depth + 1)]


def run_attributes(circuit, schedule, record, dt, device, backend, attrs=None,
                   n_cycles: int = 1) -> dict:
    """The global attributes of a recorded run of ``n_cycles`` cycles (see
    :mod:`cdtp.record.dataset`): ``steps_per_cycle`` and ``boundary_steps`` only when they are the
    same in every cycle (a period of whole steps); ``period_steps`` (1/(f dt), a float) always.
    """
    from cdtp import __version__

    per_cycle = {}
    if schedule.whole_period(dt) is not None:
        n = max(int(n_cycles), 2)
        spc, offsets = _constant_offsets(
            schedule.boundary_table(dt, n, circuit.depth, circuit.hold),
            schedule.cycle_starts(dt, n))
        if spc is not None:
            per_cycle["steps_per_cycle"] = spc
        if offsets is not None:
            per_cycle["boundary_steps"] = offsets
    return {
        "title": f"CDTP run of circuit {circuit.name!r}",
        "circuit": circuit.to_dict(),
        "schedule": {"gamma": asdict(schedule.gamma), "plasticity": asdict(schedule.plasticity)},
        "record": record.to_dict(),
        "cdtp_version": __version__,
        "seed": circuit.seed,
        "dt": dt,
        "period_steps": schedule.gamma.period / dt,
        **per_cycle,
        "device": device,
        "backend": backend,
        **(attrs or {}),
    }


def _spike_seed(circuit, seed: int) -> dict:
    """The build option of a spiking circuit's spike seed (none for a rate circuit)."""
    return {"spike_seed": seed} if circuit.neurons == "spiking" else {}


class _Brian2Runner:
    def __init__(self, circuit, schedule, inputs, labels, dt, device, spec, snaps,
                 stop_requested=lambda: False, spike_seed=0, network=None):
        import brian2 as b2

        from cdtp.brian.engine import build

        self.b2, self.dt, self.spec, self.snaps = b2, dt, spec, snaps
        self.circuit = circuit
        self.run_ = build(circuit, schedule, inputs, labels, dt=dt, device=device,
                          network=network, **_spike_seed(circuit, spike_seed))
        layers = self.run_.layers
        clock = b2.Clock(dt=spec.every * dt * b2.second, name="record_clock")
        self.traced = spec.traced(circuit.sizes)
        self.monitors = {}
        for l in sorted({l for l, _ in self.traced}):
            units = [j for ll, j in self.traced if ll == l]
            if spec.variables:
                self.monitors[l] = b2.StateMonitor(
                    layers[l], list(spec.variables), record=units, when="end", clock=clock,
                    name=f"trace_{l}",
                )
        self.gate_monitors = {}
        if spec.gates and spec.variables:
            for l in range(1, circuit.depth + 1):
                self.gate_monitors[l] = b2.StateMonitor(
                    layers[l], list(GATE_VARIABLES), record=[0], when="end", clock=clock,
                    name=f"gate_trace_{l}",
                )
        self.spike_monitors, self.spiking_table = [], None
        populations = getattr(self.run_, "populations", None)
        if spec.spikes and populations is not None:
            self._monitor_spikes(populations, spec.spikes)
        # a clock that ticks on every boundary step (each step when they are irregular)
        tick = int(np.gcd.reduce(np.concatenate([snaps.table.ravel(), snaps.starts])))
        snap_clock = b2.Clock(dt=tick * dt * b2.second, name="snapshot_clock")
        reader = self.run_

        def snapshot():
            if stop_requested():  # an interrupt that came while the network was not running
                reader.network.stop()
            step = round(float(snap_clock.t / b2.second) / dt)
            snaps.take(reader, step, step * dt)

        op = b2.NetworkOperation(snapshot, clock=snap_clock, when="start", order=-1,
                                 name="snapshots")
        self.run_.network.add(*self.monitors.values(), *self.gate_monitors.values(), op,
                              *self.spike_monitors)
        self.cycles_done = 0
        self.diverged = ""

    def _monitor_spikes(self, populations, k: int) -> None:
        """SpikeMonitors of the first ``k`` members of every population (a contiguous
        subgroup: populations are member-major), and the table of the recorded neurons."""
        b2 = self.b2
        n = min(k, self.circuit.spiking.neurons_per_unit)
        table = {"population": [], "layer": [], "unit": [], "member": []}
        self.spike_offsets = []
        for kind, l, group in populations.groups:
            units = self.circuit.sizes[l]
            self.spike_offsets.append(len(table["unit"]))
            self.spike_monitors.append(b2.SpikeMonitor(group[: n * units],
                                                       name=f"{group.name}_monitor"))
            table["population"] += [kind] * (n * units)
            table["layer"] += [l] * (n * units)
            table["unit"] += list(np.tile(np.arange(units), n))
            table["member"] += list(np.repeat(np.arange(n), units))
        self.spiking_table = table

    def spikes(self):
        """The recorded spikes as a Dataset (:func:`cdtp.record.dataset.spikes_dataset`), or
        None when none were requested."""
        if self.spiking_table is None:
            return None
        from cdtp.record.dataset import spikes_dataset

        # the step in which a neuron fired, timed at its end like the traces
        times = [np.asarray(m.t / self.b2.second) + self.dt for m in self.spike_monitors]
        ids = [np.asarray(m.i) + off for m, off in zip(self.spike_monitors, self.spike_offsets)]
        t = self.spiking_table
        return spikes_dataset(np.concatenate(times), np.concatenate(ids), t["population"],
                              t["layer"], t["unit"], t["member"])

    def run(self, n, traced):
        for m in (*self.monitors.values(), *self.gate_monitors.values(), *self.spike_monitors):
            m.active = traced
        if self.tick is None:
            self.run_.run(n)
        else:
            first = self.cycles_done
            lo, hi = int(self.snaps.starts[first]), int(self.snaps.starts[first + n])
            starts, tick = self.snaps.starts, self.tick

            def report(elapsed, completed, start, duration):
                step = lo + completed * (hi - lo)
                tick(int(np.searchsorted(starts, step + 1e-9, side="right")) - 1)

            self.run_.run(n, report=report, report_period=0.5)
        self.cycles_done = self.run_.cycle
        self.diverged = self.run_.diverged or ""
        return self._drain()

    def _drain(self):
        mons = list(self.monitors.items())
        if not mons or len(mons[0][1].t) == 0:
            for m in (*self.monitors.values(), *self.gate_monitors.values()):
                m.resize(0)
            return np.zeros(0), {}, {}
        times = np.asarray(mons[0][1].t / self.b2.second) + self.dt
        n_t = len(times)
        mask = self.snaps.valid
        offsets = np.cumsum((0, *self.circuit.sizes))
        values = {}
        for var in self.spec.variables:
            cols = []
            for l, mon in mons:
                v = np.asarray(getattr(mon, var)).T  # (n_t, units)
                units = [j for ll, j in self.traced if ll == l]
                valid = mask[var][offsets[l] + np.array(units)]
                cols.append(np.where(valid[None, :], v, np.nan))
            values[var] = np.concatenate(cols, axis=1)
        gates = {}
        if self.gate_monitors:
            for name in GATE_VARIABLES:
                gates[name] = np.stack(
                    [np.asarray(getattr(self.gate_monitors[l], name))[0]
                     for l in sorted(self.gate_monitors)], axis=1,
                )[:n_t]
        for m in (*self.monitors.values(), *self.gate_monitors.values()):
            m.resize(0)
        return times, values, gates

    def outputs(self):
        return self.run_.outputs()

    def stop(self):
        """Stop the network after the current time step (from a signal handler)."""
        self.run_.network.stop()

    def final_snapshot(self):
        step = round(float(self.run_.network.t / self.b2.second) / self.dt)
        self.snaps.take(self.run_, step, step * self.dt)


class _MapReader:
    """The reference map's state with the accessor names of
    :class:`cdtp.brian.engine.CircuitRun`."""

    def __init__(self, state, params):
        from cdtp.reference import cdtp_map

        self.s, self.params, self.map = state, params, cdtp_map

    def state(self, var, l):
        s = self.s
        if var == "target":
            v = s.tau[l]
        elif var in ("m", "fb"):
            seq = getattr(s, var)
            v = seq[l] if seq and l < len(seq) else None
        else:
            v = getattr(s, var)[l]
        n = s.net.sizes[l]
        return np.zeros(n) if v is None else np.asarray(v[0], dtype=float)

    def weights(self, l):
        # a slower plasticity clock's drive not yet applied is added, as the Brian2 read-out
        # adds it (not with consolidation "cycle", where the drive is the neurons' state)
        return self.map.pending_weights(self.s, self.params, l)[0]

    def feedback_weights(self, l):
        return self.map.pending_weights(self.s, self.params, l)[1]


class _MapRunner:
    def __init__(self, circuit, schedule, inputs, labels, dt, device, spec, snaps,
                 stop_requested=lambda: False, network=None):
        from cdtp.brian.engine import initial_network
        from cdtp.reference import cdtp_map

        self.map = cdtp_map
        self.circuit, self.dt, self.spec, self.snaps = circuit, dt, spec, snaps
        self.schedule = schedule
        self.inputs, self.labels = inputs, labels
        self.params = cdtp_map.resolve_consolidation(cdtp_map.parameters_of(circuit, dt),
                                                     schedule)
        self.state = cdtp_map.CDTPState.initial(
            initial_network(circuit) if network is None else network)
        self.reader = _MapReader(self.state, self.params)
        self.traced = spec.traced(circuit.sizes)
        self.step_index = 0
        self.cycles_done = 0
        self.diverged = ""
        self._outputs = []
        self.stop_requested = stop_requested

    def run(self, n, traced):
        times, rows, gate_rows = [], {v: [] for v in self.spec.variables}, []
        mask = self.snaps.valid
        offsets = np.cumsum((0, *self.circuit.sizes))
        idx = np.array([offsets[l] + j for l, j in self.traced], dtype=int)
        for _ in range(n):
            if self.stop_requested():
                break
            c = self.cycles_done
            lo, hi = self.snaps.starts[c], self.snaps.starts[c + 1]
            gates = self.schedule.sample_steps(np.arange(lo, hi), self.dt, self.circuit.depth,
                                               self.circuit.hold)
            for r in range(hi - lo):
                k = self.step_index
                self.snaps.take(self.reader, k, k * self.dt)
                g = {key: gates[key][r] for key in ("gamma", "hold", "plasticity")}
                self.map.step(self.state, self.params, g, self.inputs[c][None],
                              self.labels[c][None])
                self.step_index += 1
                if traced and self.spec.variables and k % self.spec.every == 0:
                    times.append((k + 1) * self.dt)
                    for var in self.spec.variables:
                        vec = np.concatenate([self.reader.state(var, l)
                                              for l in range(len(self.circuit.sizes))])
                        rows[var].append(np.where(mask[var], vec, np.nan)[idx])
                    gate_rows.append(g)
            out = self.state.a[-1][0].copy()
            self._outputs.append(out)
            self.cycles_done = c + 1
            if self.tick is not None:
                self.tick(self.cycles_done)
            bad = [
                (l, v) for l in range(1, self.circuit.depth + 1) for v in ("a", "u", "target")
                if not np.all(np.abs(self.reader.state(v, l)) <= self.circuit.activity_bound)
            ]
            if bad:
                l, v = bad[0]
                self.diverged = f"cycle {c}: layer {l}: |{v}| left the bound"
                break
        values = {v: np.array(rows[v]).reshape(len(times), len(idx)) for v in rows}
        gates = {}
        if self.spec.gates and times:
            for name in GATE_VARIABLES:
                gates[name] = np.array([row[name][1:] for row in gate_rows])
        return np.array(times), values, gates

    def outputs(self):
        return np.array(self._outputs)

    def stop(self):
        """Nothing to do: :meth:`run` checks for a stop before each cycle."""

    def final_snapshot(self):
        k = self.step_index
        self.snaps.take(self.reader, k, k * self.dt)
