"""Recording a run into one self-describing xarray Dataset (docs/model.md §5).

This module is analysis-side: numpy and xarray only, never brian2. The engine side
(:mod:`cdtp.brian.simulation`) runs a circuit and hands the recorded arrays to a :class:`Recorder`
chunk by chunk; the recorder turns them into the Dataset layout below and, given a path,
streams the chunks to disk so that memory stays bounded whatever the duration.

Layout
------
========================  ===========================  ===========================================
variable                  dims                         what
========================  ===========================  ===========================================
``a h u target m fb``     (time, neuron)               traces of the requested neurons, sampled
                                                       at the end of every ``every``-th step
``gamma hold plasticity`` (time, gate_layer)           γ_l, c(γ_l), p_l of layers 1..L
``snapshot_<var>``        (cycle, boundary, node)      every neuron's a, h, u, τ, m, fb at each
                                                       phase boundary of each cycle
``weight``                (cycle, boundary, synapse)   W_l and Ω_l at the phase boundaries
``output``, ``label``     (cycle, output_unit)         a_L held at the end of each cycle, and y
``loss``                  (cycle)                      ℓ(output, label) of each cycle's example
``boundary_time``         (cycle, boundary)            when each boundary was snapshotted (s)
``boundary_step``         (cycle, boundary)            the step it was snapshotted at (the
                                                       state after the step before)
``cycle_start_step``      (cycle)                      the first step of each cycle
``weight_change``         (cycle, pathway)             ‖ΔW‖_F of each projection over the cycle
``rate_m rate_u``         (time, neuron)               spiking circuits: the filtered population
                                                       rates r̂ (Hz) of each unit's forward
                                                       (σ(m)) and feedback (σ(u)) populations
``spike_time``            (spike)                      spiking circuits, ``spikes`` > 0: the time
                                                       (s) of every recorded spike, in order
``spike_neuron``          (spike)                      which recorded neuron fired it (an index
                                                       on ``spiking_neuron``)
``test_accuracy``         (epoch)                      held-out accuracy after each epoch
``test_loss``             (epoch)                      held-out loss after each epoch
                                                       (:mod:`cdtp.record.evaluation`; when the
                                                       task has a held-out set)
========================  ===========================  ===========================================

Coordinates: ``time`` (s); ``neuron`` with ``layer`` and ``unit``; ``node`` (all neurons of
all layers, no bias units) with ``node_layer`` and ``node_unit``; ``synapse`` with
``projection`` (``feedforward_l`` for W_l, ``feedback_l`` for Ω_l), ``post`` and ``pre`` (the
bias unit of the presynaptic layer is ``pre = n_pre``); ``boundary`` = ``cycle_start``
(after the example is clamped: the state the cycle starts from), ``feedback_start`` (the
first step with c(γ) < ½ — the end of the feedforward phase), ``plasticity_start`` and
``plasticity_end`` (the first and one past the last step with p > 0); ``pathway`` names the
projections.

Global attributes: ``circuit``, ``schedule``, ``record`` and ``scenario`` as JSON,
``cdtp_version``, ``seed``, ``dt`` (s), ``period_steps`` (1/(f dt), the γ period in steps, a
float), ``steps_per_cycle`` and ``boundary_steps`` (JSON: the boundaries' offsets within a
cycle) — these two only when they are the same in every cycle, i.e. when the period is a whole
number of steps; otherwise cycles are ⌊1/(f dt)⌋ or ⌈1/(f dt)⌉ steps long and
``cycle_start_step`` / ``boundary_step`` say where each begins (:func:`boundary_steps_of` reads
either form), ``device``, ``diverged`` ("" or the divergence message), ``interrupted``
("" or how the run was cut short by Ctrl-C), ``cycles_completed`` and ``cycles_planned`` (a
run is complete when they are equal; a diverged or interrupted run records the cycles it completed),
``held_out`` (JSON: where the test examples of ``test_accuracy`` / ``test_loss`` came from, how
many, the problem kind and the epoch length; only when they are recorded).

Spikes are ragged, so they are stored as one pair of variables on a ``spike`` dimension
(:func:`spike_trains` groups them per neuron): ``spiking_neuron`` has the coordinates
``population`` (``forward`` or ``feedback``), ``spiking_layer``, ``spiking_unit`` and
``member`` (the neuron's index within its population of N). ``[record] spikes = k`` records the
first k members of every population, in the traced cycles.

Values of a variable that a layer does not have (u below layer 2, h and τ of the input) are
NaN.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "BOUNDARIES",
    "ENGINE",
    "GATE_VARIABLES",
    "SPIKING_VARIABLES",
    "TRACE_VARIABLES",
    "RecordSpec",
    "Recorder",
    "boundary_steps_of",
    "circuit_of",
    "cycle_end_steps",
    "layer_traces",
    "load",
    "phase_boundaries",
    "projection_matrix",
    "remove_stale_temporaries",
    "save",
    "schedule_of",
    "spike_trains",
    "spikes_dataset",
    "sweep_dims",
]

ENGINE = "h5netcdf"
TRACE_VARIABLES = ("a", "h", "u", "target", "m", "fb", "rate_m", "rate_u")
#: trace variables that only a spiking circuit has (docs/model.md §2.5)
SPIKING_VARIABLES = ("rate_m", "rate_u")
UNITS = {"rate_m": "Hz", "rate_u": "Hz"}
GATE_VARIABLES = ("gamma", "hold", "plasticity")
BOUNDARIES = ("cycle_start", "feedback_start", "plasticity_start", "plasticity_end")

LONG_NAMES = {
    "a": "held activity a",
    "h": "feedforward drive h",
    "u": "decoder input u",
    "target": "target τ",
    "m": "encoder input m (γ a + (1 − γ) g(u))",
    "fb": "feedback g(u) from the layer above",
    "rate_m": "forward population rate r̂ (sends σ(m))",
    "rate_u": "feedback population rate r̂ (sends σ(u))",
    "gamma": "γ (1 = feedforward, 0 = feedback)",
    "hold": "hold gate c(γ)",
    "plasticity": "plasticity gate p",
}


@dataclass(frozen=True)
class RecordSpec:
    """What to record, declared separately from the circuit.

    Parameters
    ----------
    variables : tuple of str
        Traced variables, from :data:`TRACE_VARIABLES`; empty for no traces.
    layers : tuple of int or None
        Layers whose neurons are traced (None: all).
    neurons : int or None
        At most this many neurons per traced layer (the first ones; None: all).
    every : int
        Sample traces every this many steps.
    trace_cycles : tuple of int or None
        ``(start, stop)``: trace only cycles start ≤ k < stop (None: all cycles). Snapshots and
        per-cycle summaries are always recorded for every cycle.
    gates : bool
        Record γ, c(γ) and p of every layer alongside the traces.
    snapshots : bool
        Snapshot every neuron at the phase boundaries of each cycle (what the proposition
        checks read).
    weights : bool
        Snapshot W and Ω at the phase boundaries (needed by P5 and P6).
    chunk_cycles : int
        Cycles simulated, converted and (with a path) written per chunk; bounds memory.
    spikes : int
        Spiking circuits: record the spikes of the first this many neurons of every
        population, in the traced cycles (0: none). They are kept in memory until the run ends.

    The per-cycle output, label and loss are always recorded; with no variables, gates,
    snapshots or weights they are all there is (what a batched sweep point holds).
    """

    variables: tuple = ("a", "h", "u", "target")
    layers: tuple | None = None
    neurons: int | None = None
    every: int = 1
    trace_cycles: tuple | None = None
    gates: bool = True
    snapshots: bool = True
    weights: bool = True
    chunk_cycles: int = 200
    spikes: int = 0

    def __post_init__(self):
        object.__setattr__(self, "variables", tuple(self.variables))
        unknown = [v for v in self.variables if v not in TRACE_VARIABLES]
        if unknown:
            raise ValueError(
                f"record.variables: unknown {unknown}; allowed: {', '.join(TRACE_VARIABLES)}"
            )
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if not all(isinstance(l, int) and l >= 0 for l in self.layers) or not self.layers:
                raise ValueError(f"record.layers: {self.layers!r} is not a list of layer indices")
        for name in ("every", "chunk_cycles"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"record.{name}: {v!r} must be an integer ≥ 1")
        if isinstance(self.spikes, bool) or not isinstance(self.spikes, int) or self.spikes < 0:
            raise ValueError(f"record.spikes: {self.spikes!r} must be an integer ≥ 0")
        if self.neurons is not None and (not isinstance(self.neurons, int) or self.neurons < 1):
            raise ValueError(f"record.neurons: {self.neurons!r} must be an integer ≥ 1 or None")
        if self.trace_cycles is not None:
            tc = tuple(self.trace_cycles)
            if len(tc) != 2 or not all(isinstance(x, int) for x in tc) or not 0 <= tc[0] < tc[1]:
                raise ValueError(
                    f"record.trace_cycles: {self.trace_cycles!r} must be [start, stop) with"
                    " 0 ≤ start < stop"
                )
            object.__setattr__(self, "trace_cycles", tc)

    def traced(self, sizes) -> list[tuple[int, int]]:
        """(layer, unit) of every traced neuron, in order."""
        layers = range(len(sizes)) if self.layers is None else self.layers
        out = []
        for l in layers:
            if l >= len(sizes):
                raise ValueError(f"record.layers: layer {l} does not exist (L = {len(sizes) - 1})")
            n = sizes[l] if self.neurons is None else min(self.neurons, sizes[l])
            out += [(l, j) for j in range(n)]
        return out

    def traces_cycle(self, k: int) -> bool:
        """True when cycle k is traced."""
        return self.trace_cycles is None or self.trace_cycles[0] <= k < self.trace_cycles[1]

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def spikes_dataset(times, neurons, population, layer, unit, member) -> xr.Dataset:
    """The recorded spikes in the layout of this module: ``spike_time`` and ``spike_neuron``
    on the ``spike`` dimension (sorted by time, then neuron), and the recorded neurons on
    ``spiking_neuron`` with their population, layer, unit and member index."""
    times = np.asarray(times, dtype=float)
    neurons = np.asarray(neurons, dtype=np.int64)
    order = np.lexsort((neurons, times))
    return xr.Dataset(
        {"spike_time": ("spike", times[order], {"units": "s", "long_name": "spike time"}),
         "spike_neuron": ("spike", neurons[order],
                          {"long_name": "recorded neuron that spiked (index on spiking_neuron)"})},
        coords={
            "spiking_neuron": ("spiking_neuron", np.arange(len(population)),
                               {"long_name": "recorded spiking neuron"}),
            "population": ("spiking_neuron", np.asarray(population, dtype=object),
                           {"long_name": "population (forward: σ(m), feedback: σ(u))"}),
            "spiking_layer": ("spiking_neuron", np.asarray(layer, dtype=np.int64),
                              {"long_name": "layer l"}),
            "spiking_unit": ("spiking_neuron", np.asarray(unit, dtype=np.int64),
                             {"long_name": "unit within its layer"}),
            "member": ("spiking_neuron", np.asarray(member, dtype=np.int64),
                       {"long_name": "neuron within its population"}),
        })


def spike_trains(ds: xr.Dataset) -> list[np.ndarray]:
    """The spike times (s) of each recorded neuron, in the order of ``spiking_neuron``."""
    neurons = np.asarray(ds.spike_neuron)
    times = np.asarray(ds.spike_time)
    return [times[neurons == k] for k in range(ds.sizes["spiking_neuron"])]


def synapse_table(sizes, bias: bool) -> dict[str, np.ndarray]:
    """Coordinates of the ``synapse`` dimension: W_1..W_L then Ω_2..Ω_L, row-major (post, pre)."""
    proj, post, pre = [], [], []
    L = len(sizes) - 1
    for kind, ls in (("feedforward", range(1, L + 1)), ("feedback", range(2, L + 1))):
        for l in ls:
            n_post, n_pre = (sizes[l], sizes[l - 1]) if kind == "feedforward" else (
                sizes[l - 1], sizes[l]
            )
            n_pre_b = n_pre + int(bias)
            j, i = np.meshgrid(np.arange(n_post), np.arange(n_pre_b), indexing="ij")
            proj += [f"{kind}_{l}"] * (n_post * n_pre_b)
            post.append(j.ravel())
            pre.append(i.ravel())
    return {
        "projection": np.array(proj, dtype=object),
        "post": np.concatenate(post).astype(np.int64),
        "pre": np.concatenate(pre).astype(np.int64),
    }


def pathways(sizes) -> list[str]:
    L = len(sizes) - 1
    return [f"feedforward_{l}" for l in range(1, L + 1)] + [
        f"feedback_{l}" for l in range(2, L + 1)
    ]


@dataclass
class Recorder:
    """Collects a run chunk by chunk and produces the Dataset (in memory or streamed to disk).

    Parameters
    ----------
    spec : RecordSpec
    sizes : sequence of int
        Layer sizes n_0..n_L.
    bias : bool
    attrs : dict
        Global attributes (JSON-able values are stored as JSON strings).
    path : path-like, optional
        Stream to this NetCDF file; it appears (atomically) only when :meth:`finish` runs.
    """

    spec: RecordSpec
    sizes: tuple
    bias: bool
    attrs: dict
    path: Path | None = None
    _time_parts: list = field(default_factory=list)
    _cycle_parts: list = field(default_factory=list)
    _tmpdir: str | None = None
    _n_parts: int = 0
    _extra: list = field(default_factory=list)

    def __post_init__(self):
        self.sizes = tuple(self.sizes)
        self.traced = self.spec.traced(self.sizes)
        self.syn = synapse_table(self.sizes, self.bias)
        if self.path is not None:
            self.path = Path(self.path)
            if not self.path.parent.is_dir():
                raise FileNotFoundError(f"output directory {self.path.parent} does not exist")
            self._tmpdir = tempfile.mkdtemp(prefix=temporary_prefix(self.path),
                                            dir=self.path.parent)

    # -- building pieces ------------------------------------------------------------------------
    def _static_coords(self) -> dict:
        layer = np.array([l for l, _ in self.traced], dtype=np.int64)
        unit = np.array([j for _, j in self.traced], dtype=np.int64)
        node_layer = np.concatenate([np.full(n, l) for l, n in enumerate(self.sizes)])
        node_unit = np.concatenate([np.arange(n) for n in self.sizes])
        return {
            "neuron": ("neuron", np.arange(len(self.traced)), {"long_name": "traced neuron"}),
            "layer": ("neuron", layer, {"long_name": "layer l"}),
            "unit": ("neuron", unit, {"long_name": "unit within its layer"}),
            "node": ("node", np.arange(len(node_layer)), {"long_name": "neuron (all layers)"}),
            "node_layer": ("node", node_layer.astype(np.int64), {"long_name": "layer l"}),
            "node_unit": ("node", node_unit.astype(np.int64), {"long_name": "unit"}),
            "synapse": ("synapse", np.arange(len(self.syn["post"])), {"long_name": "synapse"}),
            "projection": ("synapse", self.syn["projection"], {"long_name": "projection"}),
            "post": ("synapse", self.syn["post"], {"long_name": "postsynaptic unit"}),
            "pre": ("synapse", self.syn["pre"],
                    {"long_name": "presynaptic unit (n_pre = bias unit)"}),
            "boundary": ("boundary", np.array(BOUNDARIES, dtype=object),
                         {"long_name": "phase boundary"}),
            "gate_layer": ("gate_layer", np.arange(1, len(self.sizes), dtype=np.int64),
                           {"long_name": "layer l of the gate"}),
            "pathway": ("pathway", np.array(pathways(self.sizes), dtype=object),
                        {"long_name": "projection"}),
            "output_unit": ("output_unit", np.arange(self.sizes[-1]),
                            {"long_name": "output unit"}),
        }

    def add_traces(self, times: np.ndarray, values: dict, gates: dict | None) -> None:
        """One chunk of traces.

        ``values[var]`` is (n_times, n_traced) in the order of :meth:`RecordSpec.traced`
        (NaN where a layer lacks the variable); ``gates[name]`` is (n_times, L).
        """
        if len(times) == 0:
            return
        data = {}
        for var, v in values.items():
            data[var] = (("time", "neuron"), np.asarray(v, dtype=float),
                         {"units": UNITS.get(var, "1"), "long_name": LONG_NAMES[var]})
        for name, v in (gates or {}).items():
            data[name] = (("time", "gate_layer"), np.asarray(v, dtype=float),
                          {"units": "1", "long_name": LONG_NAMES[name]})
        coords = {"time": ("time", np.asarray(times, dtype=float),
                           {"units": "s", "long_name": "time"})}
        self._add(xr.Dataset(data, coords=coords), self._time_parts, "time")

    def add_cycles(self, cycles: np.ndarray, summaries: dict) -> None:
        """One chunk of per-cycle data: ``summaries`` maps names to arrays whose first axis is
        the cycle: ``output``, ``label`` (n, n_L), ``loss`` (n,), ``boundary_time`` (n, 4),
        ``snapshot_<var>`` (n, 4, n_nodes), ``weight`` (n, 4, n_synapses),
        ``weight_change`` (n, n_pathways)."""
        if len(cycles) == 0:
            return
        dims = {
            "output": ("cycle", "output_unit"), "label": ("cycle", "output_unit"),
            "loss": ("cycle",), "boundary_time": ("cycle", "boundary"),
            "boundary_step": ("cycle", "boundary"), "cycle_start_step": ("cycle",),
            "weight": ("cycle", "boundary", "synapse"),
            "weight_change": ("cycle", "pathway"),
        }
        meta = {
            "output": ("1", "output a_L held at the end of the cycle"),
            "label": ("1", "label y of the cycle's example"),
            "loss": ("1", "loss ℓ(a_L, y) of the cycle's example"),
            "boundary_time": ("s", "time of the phase boundary"),
            "boundary_step": ("1", "step at whose start the phase boundary falls"),
            "cycle_start_step": ("1", "first step of the cycle"),
            "weight": ("1", "synaptic weight (W or Ω)"),
            "weight_change": ("1", "‖ΔW‖_F over the cycle"),
        }
        data = {}
        for name, v in summaries.items():
            if name.startswith("snapshot_"):
                var = name[len("snapshot_"):]
                data[name] = (("cycle", "boundary", "node"), np.asarray(v, dtype=float),
                              {"units": "1", "long_name": f"{LONG_NAMES[var]} at the boundary"})
            else:
                units, long_name = meta[name]
                kind = np.int64 if name.endswith("_step") else float
                data[name] = (dims[name], np.asarray(v, dtype=kind),
                              {"units": units, "long_name": long_name})
        coords = {"cycle": ("cycle", np.asarray(cycles, dtype=np.int64),
                            {"long_name": "γ cycle (one example each)"})}
        self._add(xr.Dataset(data, coords=coords), self._cycle_parts, "cycle")

    def add_dataset(self, ds: xr.Dataset) -> None:
        """Variables on dimensions of their own (e.g. the held-out evaluation on ``epoch``,
        :mod:`cdtp.record.evaluation`), merged into the result as they are (small: kept in
        memory)."""
        self._extra.append(ds)

    def _add(self, ds: xr.Dataset, parts: list, kind: str) -> None:
        if self._tmpdir is None:
            parts.append(ds)
            return
        part = Path(self._tmpdir) / f"{kind}_{self._n_parts:06d}.nc"
        self._n_parts += 1
        ds.to_netcdf(part, engine=ENGINE)
        # keep only the layout; the values are read back one variable at a time when the
        # result is written
        parts.append((part, xr.Dataset(
            {k: (v.dims, np.empty((0,) * v.ndim), v.attrs) for k, v in ds.data_vars.items()},
        ), {k: (v.shape, v.dtype) for k, v in ds.data_vars.items()}, ds[kind].copy()))

    # -- finishing --------------------------------------------------------------------------------
    def finish(self, attrs: dict | None = None) -> xr.Dataset:
        """The Dataset; with a path, written atomically and returned opened lazily from the
        file (close it, or use it in a ``with`` block, when done)."""
        all_attrs = _encode_attrs({**self.attrs, **(attrs or {})})
        static = xr.Dataset(coords=self._static_coords())
        try:
            if self._tmpdir is None:
                pieces = [static]
                if self._time_parts:
                    pieces.append(xr.concat(self._time_parts, dim="time"))
                if self._cycle_parts:
                    pieces.append(xr.concat(self._cycle_parts, dim="cycle"))
                ds = xr.merge([*pieces, *self._extra], combine_attrs="override")
                ds.attrs = all_attrs
                return ds
            pieces = [static]
            for parts, dim in ((self._time_parts, "time"), (self._cycle_parts, "cycle")):
                if parts:
                    pieces.append(_lazy_concat(parts, dim))
            ds = xr.merge([*pieces, *self._extra], compat="override", join="outer",
                          combine_attrs="override")
            ds.attrs = all_attrs
            tmp = Path(self._tmpdir) / "result.nc"
            import dask

            # one variable of one part file in memory at a time, in this thread: also inside a
            # Dask worker, where the default scheduler would be the cluster's (and a sweep's
            # shutdown would fail the write half-way)
            with dask.config.set(scheduler="synchronous"):
                ds.to_netcdf(tmp, engine=ENGINE, compute=False).compute(scheduler="synchronous")
            os.replace(tmp, self.path)
            # opened lazily: reading a long run back whole would undo the bounded memory
            return xr.open_dataset(self.path, engine=ENGINE)
        finally:
            self.discard()

    def discard(self) -> None:
        """Remove the chunk files (a failed run leaves no result behind)."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _read_variable(path: Path, name: str) -> np.ndarray:
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds[name].values


def _lazy_concat(parts: list, dim: str) -> xr.Dataset:
    """Concatenate part files along ``dim`` as dask arrays that open, read and close one part
    file per variable when computed (HDF5 caches of open files would otherwise keep every
    part's data in memory)."""
    import dask
    import dask.array as dska

    _, layout, shapes, _ = parts[0]
    coord = xr.concat([c for *_, c in parts], dim=dim)
    data = {}
    for name, var in layout.data_vars.items():
        blocks = [
            dska.from_delayed(dask.delayed(_read_variable)(path, name), shape=sh[name][0],
                              dtype=sh[name][1])
            for path, _, sh, _ in parts
        ]
        data[name] = (var.dims, dska.concatenate(blocks, axis=var.dims.index(dim)), var.attrs)
    del shapes
    return xr.Dataset(data, coords={dim: coord})


def _encode_attrs(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, str | int | float | np.integer | np.floating):
            out[k] = v
        else:
            out[k] = json.dumps(v, default=_json_default)
    return out


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a Dataset attribute")


# -- files ---------------------------------------------------------------------------------
def save(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to ``path`` atomically (a temporary file in the same folder, then renamed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine=ENGINE)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path


def temporary_prefix(path: str | Path) -> str:
    """Name prefix of the temporary files and folders a write of ``path`` makes next to it:
    hidden, and carrying the writer's process id, so that a later run can tell the litter of
    a killed run (:func:`remove_stale_temporaries`) from a write still under way."""
    return f".{Path(path).name}.cdtp-{os.getpid()}."


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.cdtp-(?P<pid>\d+)\.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders (:func:`temporary_prefix`) that killed runs left
    in ``directory`` (those of ``name`` only, if given); returns what was removed. Those of a
    process still alive are kept."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        m = _TEMPORARY.match(entry.name)
        if not m or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def load(path: str | Path) -> xr.Dataset:
    """Read a recorded Dataset fully into memory (the file is closed afterwards)."""
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds.load()


# -- helpers -------------------------------------------------------------------------------
def circuit_of(ds: xr.Dataset):
    """The :class:`cdtp.model.circuit.CircuitConfig` stored in the Dataset's attributes."""
    from cdtp.model.circuit import CircuitConfig, SpikingParameters
    from cdtp.model.gating import HoldGate

    d = json.loads(ds.attrs["circuit"])
    d["hold"] = HoldGate(**d["hold"])
    if "spiking" in d:
        d["spiking"] = SpikingParameters(**d["spiking"])
    d["sizes"] = tuple(d["sizes"])
    return CircuitConfig(**d)


def schedule_of(ds: xr.Dataset):
    """The :class:`cdtp.model.gating.Schedule` stored in the Dataset's attributes."""
    from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule

    d = json.loads(ds.attrs["schedule"])
    g = dict(d["gamma"])
    g["values"] = tuple(g.get("values", ()))
    return Schedule(gamma=GammaSchedule(**g), plasticity=PlasticityGate(**d["plasticity"]))


def layer_traces(ds: xr.Dataset, l: int, variables=None) -> xr.Dataset:
    """The traces of layer l, with ``unit`` as the neuron dimension."""
    names = [v for v in (variables or TRACE_VARIABLES) if v in ds and "neuron" in ds[v].dims]
    sel = ds[names].where(ds.layer == l, drop=True)
    return sel.swap_dims({"neuron": "unit"}).drop_vars(["neuron", "layer"])


def layer_snapshot(ds: xr.Dataset, var: str, l: int) -> xr.DataArray:
    """``snapshot_<var>`` of layer l with dims (cycle, boundary, unit)."""
    da = ds[f"snapshot_{var}"].where(ds.node_layer == l, drop=True)
    return da.swap_dims({"node": "node_unit"}).rename(node_unit="unit").drop_vars(
        ["node", "node_layer"]
    )


def projection_matrix(ds: xr.Dataset, projection: str, cycle: int | None = None,
                      boundary: str = "cycle_start") -> xr.DataArray:
    """One projection's weights as a (post, pre) matrix (with cycle, if not chosen)."""
    if projection not in set(ds.projection.values.tolist()):
        raise KeyError(
            f"no projection {projection!r}; recorded: {sorted(set(ds.projection.values))}"
        )
    w = ds.weight.sel(boundary=boundary).where(ds.projection == projection, drop=True)
    if cycle is not None:
        w = w.sel(cycle=cycle)
    post = w.post.values.astype(int)
    pre = w.pre.values.astype(int)
    shape = (post.max() + 1, pre.max() + 1)
    lead = w.shape[:-1]
    mat = np.full(lead + shape, np.nan)
    mat[..., post, pre] = w.values
    dims = (*tuple(d for d in w.dims if d != "synapse"), "post", "pre")
    coords = {d: w[d] for d in w.dims if d != "synapse"}
    return xr.DataArray(mat, dims=dims, coords=coords, name=projection,
                        attrs={"long_name": f"{projection} weights", "units": "1"})


def boundary_steps_of(ds: xr.Dataset) -> np.ndarray:
    """The step of each phase boundary of each recorded cycle, shape (n_cycles, 4), columns as
    :data:`BOUNDARIES` (absolute steps: a snapshot at step s shows the state after step s − 1).

    Read from ``boundary_step`` when the file has it; else (files of earlier versions, batched
    sweep points) from the ``steps_per_cycle`` / ``boundary_steps`` attributes, or computed
    from the schedule (:meth:`cdtp.model.gating.Schedule.boundary_table`).
    """
    cycles = np.asarray(ds.cycle.values, dtype=np.int64) if "cycle" in ds.dims else np.zeros(0, int)
    if "boundary_step" in ds:
        return np.asarray(ds.boundary_step.values, dtype=np.int64).reshape(len(cycles), 4)
    if "steps_per_cycle" in ds.attrs and "boundary_steps" in ds.attrs:
        spc = int(ds.attrs["steps_per_cycle"])
        offsets = json.loads(ds.attrs["boundary_steps"])
        return cycles[:, None] * spc + np.array([int(offsets[b]) for b in BOUNDARIES])[None, :]
    circuit = circuit_of(ds)
    n = int(cycles.max()) + 1 if len(cycles) else 0
    table = schedule_of(ds).boundary_table(float(ds.attrs["dt"]), n, circuit.depth,
                                           circuit.hold)
    return table[cycles]


def cycle_end_steps(ds: xr.Dataset) -> np.ndarray:
    """One past the last step of each recorded cycle (the next cycle's first step)."""
    cycles = np.asarray(ds.cycle.values, dtype=np.int64)
    if "steps_per_cycle" in ds.attrs:
        return (cycles + 1) * int(ds.attrs["steps_per_cycle"])
    n = int(cycles.max()) + 1 if len(cycles) else 0
    starts = schedule_of(ds).cycle_starts(float(ds.attrs["dt"]), n)
    return starts[cycles + 1]


def sweep_dims(ds: xr.Dataset) -> list[str]:
    """The dimensions of a combined sweep file, one per swept key, in the order swept (files
    written before dimensions were renamed use the dotted keys themselves)."""
    return json.loads(ds.attrs.get("swept_dims", ds.attrs["swept_keys"]))


def phase_boundaries(ds: xr.Dataset) -> xr.DataArray:
    """Start time of each phase boundary of each cycle (s), dims (cycle, boundary)."""
    return ds.boundary_time
