"""Scenario files: what to run — a circuit, a task, a γ schedule, a plasticity gate, how long
and what to record (TOML, validated on load like circuits).

Layout (units as strings)::

    name = "quickstart"
    circuit = "../circuits/teacher_student.toml"   # a path relative to this file, or a table
    cycles = 200                                   # or: epochs = 3 (passes over the training set)
    dt = "1 ms"
    device = "numpy"                               # Brian2 target: numpy | cython | cpp_standalone
    seed = 0                                       # the task's seed (the circuit has its own)

    [task]
    name = "teacher_student"   # teacher_student | teacher_classes | digits | mnist1d | npz
    # teacher_student: seed (default: the scenario's), n_train, n_test, noise;
    # teacher_classes: seed, n_train, n_test, margin, hidden, nonlinearity;
    # digits: seed, scale, test_fraction; mnist1d: seed, n_train, n_test, scale;
    # npz: path (arrays x, y and optionally x_test, y_test), test_fraction, seed, problem
    # (see TASK_KEYS; the held-out examples are evaluated after every epoch)

    [gamma]                                        # cdtp.model.gating.GammaSchedule
    shape = "square"
    frequency = "25 Hz"
    duty = 0.5

    [plasticity_gate]                              # cdtp.model.gating.PlasticityGate
    kind = "descending"

    [record]                                       # cdtp.record.dataset.RecordSpec
    variables = ["u"]

``--set key=value`` overrides any key by dotted path (``gamma.frequency="8 Hz"``,
``circuit.plasticity.eta_w=0.05``) before validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdtp.model.circuit import (
    CircuitConfig,
    ConfigError,
    _check_keys,
    _choice,
    _typed,
    circuit_from_dict,
    read_toml,
)
from cdtp.model.gating import (
    GAMMA_SHAPES,
    PLASTICITY_GATES,
    GammaSchedule,
    PlasticityGate,
    Schedule,
)
from cdtp.model.nonlinearities import NONLINEARITIES
from cdtp.model.units import UnitError, parse_quantity
from cdtp.record.dataset import SPIKING_VARIABLES, TRACE_VARIABLES, RecordSpec

__all__ = ["TASK_KEYS", "Scenario", "apply_overrides", "load_scenario", "memory_estimate",
           "scenario_from_dict"]

TASKS = ("teacher_student", "teacher_classes", "digits", "mnist1d", "npz")
DEVICES = ("numpy", "cython", "cpp_standalone")
_TOP = {
    "name": "str",
    "circuit": None,
    "cycles": "count",
    "epochs": "count",
    "dt": "time",
    "device": "str",
    "seed": "seed",
    "task": None,
    "gamma": None,
    "plasticity_gate": None,
    "record": None,
    "sweep": None,
    "kind": "str",
}
_GAMMA = {
    "shape": "str",
    "frequency": "rate",
    "duty": "float",
    "ramp": "float",
    "lag": "time",
    "values": None,
}
_GATE = {"kind": "str", "start": "float", "end": "float"}
#: The keys each task of a ``[task]`` table accepts (besides ``name``), with their kinds.
TASK_KEYS = {
    "teacher_student": {"seed": "seed", "n_train": "count", "n_test": "count",
                        "noise": "float"},
    "teacher_classes": {"seed": "seed", "n_train": "count", "n_test": "count",
                        "margin": "float", "hidden": None, "nonlinearity": "str"},
    "digits": {"seed": "seed", "scale": "float", "test_fraction": "float"},
    "mnist1d": {"seed": "seed", "n_train": "count", "n_test": "count", "scale": "float"},
    "npz": {"path": "str", "seed": "seed", "test_fraction": "float", "problem": "str"},
}
#: Fixed input and output widths of the built-in data sets.
_TASK_WIDTHS = {"digits": (64, 10), "mnist1d": (40, 10)}
_RECORD = {
    "variables": None,
    "layers": None,
    "neurons": "count",
    "every": "count",
    "trace_cycles": None,
    "gates": "bool",
    "snapshots": "bool",
    "weights": "bool",
    "chunk_cycles": "count",
    "spikes": "seed",
}


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: everything :func:`cdtp.brian.simulation.simulate` needs.

    ``files`` are the files it was read from (the scenario, its circuit file, its ``.npz``
    examples): a results file must never be written over any of them."""

    name: str
    source: str
    circuit: CircuitConfig
    schedule: Schedule
    record: RecordSpec
    task: dict
    dt: float
    device: str
    seed: int
    cycles: int | None
    epochs: int | None
    raw: dict
    files: tuple = ()

    def simulate(self, path=None, attrs: dict | None = None, progress=None, interrupt=None,
                 tick=None):
        """Run the scenario with :func:`cdtp.brian.simulation.simulate` (the scenario and its task
        go into the Dataset's attributes); see there for ``path``, ``progress``, ``tick`` and
        ``interrupt``."""
        from cdtp.brian.simulation import simulate

        data = self.task_data()
        inputs, labels, task = self.stream(data)
        return simulate(
            self.circuit, self.schedule, inputs, labels, dt=self.dt, device=self.device,
            record=self.record, path=path, progress=progress, attrs=self.attributes(task, attrs),
            interrupt=interrupt, tick=tick, held_out=self.held_out(data),
            spike_seed=self.seed,
        )

    def attributes(self, task: dict, attrs: dict | None = None) -> dict:
        """What a results file of this scenario says about it (besides the run's own)."""
        return {"scenario": self.raw, "scenario_file": str(self.source), "task": task,
                **(attrs or {})}

    def task_data(self):
        """The task's training and held-out examples (:class:`cdtp.data.tasks.Task`).

        ``teacher_student`` and ``teacher_classes`` take the circuit's widths (their teacher
        the circuit's hidden widths and σ, unless given); ``teacher_student`` has
        ``n_train = cycles`` (512 with ``epochs``) unless given; ``digits``, ``mnist1d`` and
        ``npz`` are checked against the circuit's widths."""
        from cdtp.data import tasks

        c, t = self.circuit, self.task
        kind = t.get("name", "teacher_student")
        seed = t.get("seed", self.seed)
        if kind == "teacher_student":
            task = tasks.teacher_student(
                seed, n_in=c.sizes[0], hidden=tuple(c.sizes[1:-1]), n_out=c.sizes[-1],
                n_train=t.get("n_train", self.cycles or 512), n_test=t.get("n_test", 256),
                nonlinearity=c.nonlinearity, noise=t.get("noise", 0.0),
            )
        elif kind == "teacher_classes":
            task = tasks.teacher_classes(
                seed, n_in=c.sizes[0], hidden=tuple(t.get("hidden", c.sizes[1:-1])),
                n_classes=c.sizes[-1], n_train=t.get("n_train", 6000),
                n_test=t.get("n_test", 1000), nonlinearity=t.get("nonlinearity", c.nonlinearity),
                margin=t.get("margin", 0.0),
            )
        elif kind == "digits":
            task = tasks.digits(seed=seed, scale=t.get("scale", 1.0),
                                test_fraction=t.get("test_fraction", 0.2))
        elif kind == "mnist1d":
            task = tasks.mnist1d(seed=seed, n_train=t.get("n_train", 4000),
                                 n_test=t.get("n_test", 1000), scale=t.get("scale", 1.0))
        else:
            task = _read_npz(self.source, self.npz_path(), c, t, self.seed)
        if task.n_in != c.sizes[0] or task.n_out != c.sizes[-1]:
            raise ConfigError(
                self.source,
                "task",
                f"{kind} has {task.n_in} inputs and"
                f" {task.n_out} outputs; the circuit has sizes {list(c.sizes)}",
            )
        return task

    def held_out(self, task=None):
        """The :class:`cdtp.record.evaluation.HeldOut` evaluation of the task's test examples (None
        when the task has none): test accuracy for a classification, test loss always, after
        every epoch of ``task.n_train`` cycles."""
        from cdtp.record.evaluation import HeldOut

        task = self.task_data() if task is None else task
        if task.n_test == 0:
            return None
        source = {
            "digits": "the digits test split",
            "mnist1d": "the MNIST-1D test split",
            "npz": str(task.metadata.get("held_out", "")),
        }.get(task.name, f"the {task.name} test set")
        return HeldOut(self.circuit, task.x_test, task.y_test, task.labels_test,
                       epoch_length=task.n_train, source=source)

    def stream(self, task=None) -> tuple[np.ndarray, np.ndarray, dict]:
        """The example stream (one training example per γ cycle) and a description of the
        task."""
        task = self.task_data() if task is None else task
        info = {
            "task": task.name,
            **{k: v for k, v in task.metadata.items() if isinstance(v, str | int | float)},
            "n_train": task.n_train, "n_test": task.n_test,
            "problem": "classification" if task.is_classification else "regression",
        }
        return (*self._repeat(task.x_train, task.y_train), info)

    def npz_path(self) -> Path:
        """The ``.npz`` file of an ``npz`` task (relative paths are relative to the file)."""
        return Path(self.source).parent / self.task["path"]

    def _repeat(self, x, y):
        n_in, n_out = self.circuit.sizes[0], self.circuit.sizes[-1]
        if len(x) == 0 or x.shape[1] != n_in or y.shape != (len(x), n_out):
            raise ConfigError(
                self.source,
                "task",
                f"training examples of shape x {x.shape}, y {y.shape}"
                f" do not fit a circuit of sizes {list(self.circuit.sizes)}; allowed: x"
                f" (n ≥ 1, {n_in}) and y (n, {n_out})",
            )
        rng = np.random.default_rng(self.seed)
        if self.epochs:
            order = np.concatenate([rng.permutation(len(x)) for _ in range(self.epochs)])
        else:
            reps = -(-self.cycles // len(x))
            order = np.concatenate([rng.permutation(len(x)) for _ in range(reps)])[: self.cycles]
        return x[order], y[order]


def _set_path(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError("--set", dotted, f"{k!r} is not a table")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``key=value`` strings (value in TOML syntax, bare words taken as strings) → data."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError("--set", item, "expected key=value")
        key, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        _set_path(data, key.strip(), value)
    return data


def _table(source, key, value):
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"must be a table ([{key}]), got {value!r}")
    return value


def _values(source, section, table, spec):
    _check_keys(source, section, table, list(spec))
    out = {}
    for key, kind in spec.items():
        if key not in table:
            continue
        where, value = (f"{section}.{key}" if section else key), table[key]
        if kind in ("time", "rate"):
            try:
                value = parse_quantity(value, kind)
            except UnitError as exc:
                raise ConfigError(source, where, str(exc)) from None
        elif kind is not None:
            value = _typed(source, where, value, kind)
        out[key] = value
    return out


def _name(source, value) -> str:
    """A scenario name is used as a file name (``results/<name>.nc``): one plain name."""
    if (not value or value in (".", "..") or any(c in value for c in '/\\:\0')
            or value.startswith(".")):
        raise ConfigError(source, "name", f"{value!r} is not allowed: the name becomes a file"
                          " name (results/<name>.nc); allowed: a plain name without '/', '\\',"
                          " ':' or a leading '.'")
    return value


def _number_list(source, key, value, *, lo=None, hi=None) -> tuple:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) for v in value
    ):
        raise ConfigError(source, key, f"{value!r} is not allowed; allowed: a list of finite"
                          " numbers")
    bad = [v for v in value if (lo is not None and v < lo) or (hi is not None and v > hi)]
    if bad:
        raise ConfigError(source, key, f"{bad[0]!r} is out of range; allowed: numbers in"
                          f" [{lo}, {hi}]")
    return tuple(value)


def _gamma(source, g: dict) -> dict:
    """Check the γ keys one by one, so that an error names the key at fault."""
    if "shape" in g:
        _choice(source, "gamma.shape", g["shape"], GAMMA_SHAPES)
    if "frequency" in g and not g["frequency"] > 0:
        raise ConfigError(source, "gamma.frequency", f"{g['frequency']!r} Hz; allowed: a"
                          " frequency > 0, e.g. '8 Hz'")
    if "duty" in g and not 0 < g["duty"] < 1:
        raise ConfigError(source, "gamma.duty", f"{g['duty']!r}; allowed: a fraction of the"
                          " cycle in (0, 1)")
    if "ramp" in g and not 0 < g["ramp"] < 0.5:
        raise ConfigError(source, "gamma.ramp", f"{g['ramp']!r}; allowed: a fraction of the"
                          " cycle in (0, 0.5)")
    if "lag" in g and g["lag"] < 0:
        raise ConfigError(source, "gamma.lag", f"{g['lag']!r} s; allowed: a time ≥ 0")
    if "values" in g:
        g["values"] = _number_list(source, "gamma.values", g["values"], lo=0, hi=1)
    return g


def _plasticity_gate(source, p: dict) -> dict:
    if "kind" in p:
        _choice(source, "plasticity_gate.kind", p["kind"], PLASTICITY_GATES)
    for key in ("start", "end"):
        if key in p and not 0 <= p[key] <= 1:
            raise ConfigError(source, f"plasticity_gate.{key}", f"{p[key]!r}; allowed: a phase"
                              " in [0, 1]")
    return p


def _record(source, r: dict) -> dict:
    if "variables" in r:
        v = r["variables"]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(source, "record.variables", f"{v!r} is not allowed; allowed: a"
                              " list of names from " + ", ".join(TRACE_VARIABLES))
        for x in v:
            _choice(source, "record.variables", x, TRACE_VARIABLES)
        if len(set(v)) != len(v):
            raise ConfigError(source, "record.variables", f"{v!r} names a variable twice")
    if "layers" in r:
        v = r["layers"]
        if not isinstance(v, list) or not v or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in v
        ):
            raise ConfigError(source, "record.layers", f"{v!r} is not allowed; allowed: a"
                              " non-empty list of layer indices")
        if any(x < 0 for x in v):
            raise ConfigError(source, "record.layers", f"layer {min(v)} does not exist;"
                              " allowed: layer indices 0 … L")
    if "trace_cycles" in r:
        v = r["trace_cycles"]
        if not (isinstance(v, list) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                and 0 <= v[0] < v[1]):
            raise ConfigError(source, "record.trace_cycles", f"{v!r} is not allowed; allowed:"
                              " [start, stop] with 0 ≤ start < stop (cycles)")
    return r


def _read_npz(source, path: Path, circuit: CircuitConfig, task: dict, seed: int = 0):
    """The ``.npz`` task, its errors naming the scenario file and the key at fault."""
    from cdtp.data.tasks import read_npz_task

    if not path.is_file():
        raise ConfigError(source, "task.path", f"no such file {path}")
    try:
        return read_npz_task(path, circuit.sizes[0], circuit.sizes[-1], circuit.loss,
                             test_fraction=task.get("test_fraction"),
                             seed=task.get("seed", seed), problem=task.get("problem"))
    except ValueError as exc:
        key = "task.test_fraction" if "test_fraction" in str(exc) else "task.path"
        raise ConfigError(source, key, str(exc)) from None


def _phases(source, schedule: Schedule, circuit: CircuitConfig, dt: float) -> None:
    """Every layer's hold gate must open (feedforward phase) and close (feedback phase) for at
    least one step of every cycle, or the circuit never reads its input or never learns.
    With a period that is not a whole number of steps cycles differ by one step, so 64 cycles
    are checked (their phase offsets cover the extremes)."""
    n = 64
    starts = schedule.cycle_starts(dt, n)
    g = schedule.sample(int(starts[-1]), dt, circuit.depth, circuit.hold)
    hold = g["hold"][:, 1:] >= 0.5
    opened = np.logical_or.reduceat(hold, starts[:-1], axis=0)
    closed = np.logical_or.reduceat(~hold, starts[:-1], axis=0)
    period = schedule.gamma.period / dt
    key = "gamma.duty" if schedule.gamma.shape != "sinusoid" else "gamma.frequency"
    if schedule.gamma.shape == "array":
        key = "gamma.values"
    if not np.all(opened):
        raise ConfigError(
            source, key, f"with {period:g} steps per cycle (dt = {dt * 1e3:g} ms) γ does not"
            f" reach the hold gate's 1 − ε = {1 - circuit.hold.epsilon:g} in every cycle: a"
            " cycle has no feedforward phase; allowed: a schedule whose feedforward phase lasts"
            " at least one step"
            + (f" (duty ≥ {1 / np.floor(period):.3g})" if key == "gamma.duty" else "")
        )
    if not np.all(closed):
        raise ConfigError(source, key, f"with {period:g} steps per cycle γ does not leave the"
                          " feedforward phase in every cycle: a cycle has no feedback phase;"
                          " allowed: a schedule whose feedback phase lasts at least one step")


def _time_constants(source, circuit: CircuitConfig, dt: float) -> None:
    """With ``euler`` or ``rk4`` a time constant must be 0 (algebraic) or at least dt: both
    overshoot beyond that. ``exact`` and ``exponential_euler`` solve the linear relaxation
    exactly over a step and take any dt (docs/model.md §2.4)."""
    method = circuit.integration_method
    if method not in ("euler", "rk4"):
        return
    for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
        tau = getattr(circuit, name)
        if 0 < tau < dt * (1 - 1e-9):
            raise ConfigError(
                source, f"circuit.time_constants.{name}",
                f"{tau * 1e3:g} ms is shorter than the time step dt = {dt * 1e3:g} ms, which"
                f" integration.method = {method!r} overshoots; allowed: '0 ms' (algebraic),"
                " ≥ dt, a smaller dt, or integration.method = 'exact' / 'exponential_euler'",
            )


def _cycles_of(top: dict, task: dict) -> int:
    """How many γ cycles the run will have (for the memory estimate)."""
    if "cycles" in top:
        return top["cycles"]
    kind = task.get("name", "teacher_student")
    n = {"teacher_student": 512, "teacher_classes": 6000, "mnist1d": 4000}.get(kind, 0)
    if kind == "digits":
        n = round(1797 * (1 - task.get("test_fraction", 0.2)))
    n = task.get("n_train", n)  # npz: read below, once the file is checked
    return top["epochs"] * n


def _task(source, table: dict) -> dict:
    """The ``[task]`` table checked key by key against the keys of its task."""
    name = table.get("name", "teacher_student")
    _typed(source, "task.name", name, "str")
    _choice(source, "task.name", name, TASKS)
    spec = {"name": "str", **TASK_KEYS[name]}
    for key in table:
        if key not in spec:
            hint = difflib.get_close_matches(key, list(spec), n=1)
            raise ConfigError(source, f"task.{key}", f"unknown key for task {name!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + "; allowed: " + ", ".join(sorted(spec)))
    task = _values(source, "task", table, spec)
    for key in ("scale",):
        if key in task and not task[key] > 0:
            raise ConfigError(source, f"task.{key}", f"{task[key]!r}; allowed: a number > 0")
    for key in ("noise", "margin"):
        if key in task and task[key] < 0:
            raise ConfigError(source, f"task.{key}", f"{task[key]!r}; allowed: a number ≥ 0")
    if "test_fraction" in task and not 0 < task["test_fraction"] < 1:
        raise ConfigError(source, "task.test_fraction", f"{task['test_fraction']!r}; allowed:"
                          " a fraction of the examples in (0, 1), e.g. 0.2")
    if "problem" in task:
        _choice(source, "task.problem", task["problem"], ("classification", "regression"))
    if "nonlinearity" in task:
        _choice(source, "task.nonlinearity", task["nonlinearity"], sorted(NONLINEARITIES))
    if "hidden" in task:
        h = task["hidden"]
        if not isinstance(h, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in h):
            raise ConfigError(source, "task.hidden", f"{h!r} is not allowed; allowed: a list of"
                              " layer widths ≥ 1 (the teacher's hidden layers), e.g. [32]")
    if name == "npz" and "path" not in task:
        raise ConfigError(source, "task.path", "missing: the .npz file with arrays x and y")
    return task


def memory_estimate(circuit: CircuitConfig, schedule: Schedule, record: RecordSpec, dt: float,
                    cycles: int) -> dict[str, float]:
    """Bytes a run needs, roughly and on the high side, per part: ``network`` (Brian2 neurons
    and synapses, initial weights), ``schedule`` (one γ cycle sampled per step and layer),
    ``stream`` (the examples of every cycle), ``recordings`` (one chunk of traces, snapshots
    and weights being converted, and the whole per-cycle record read back by ``cdtp run``)."""
    sizes = [float(n) for n in circuit.sizes]
    L = len(sizes) - 1
    b = int(circuit.bias)
    syn_ff = sum(sizes[l] * (sizes[l - 1] + b) for l in range(1, L + 1))
    syn_fb = sum(sizes[l - 1] * (sizes[l] + b) for l in range(2, L + 1))
    neurons = sum(sizes) + (L + 1) * b
    spc = schedule.gamma.period / dt
    n_syn = syn_ff + syn_fb
    # Brian2 keeps ~12 arrays per synapse (weight, indices, summed-variable helpers), ~60 per
    # neuron; building the initial weights takes a few dense copies of each matrix
    network = 8.0 * (12 * n_syn + 60 * neurons) + 8.0 * 4 * n_syn
    sched = 8.0 * 5 * spc * (L + 1)
    # (and the phase-boundary steps of every cycle)
    stream = 8.0 * 3 * cycles * (sizes[0] + sizes[-1]) + 8.0 * 6 * cycles
    traced = 0.0
    if record.variables:
        layers = range(L + 1) if record.layers is None else record.layers
        traced = sum(min(sizes[l], record.neurons or sizes[l]) for l in layers if l <= L)
    chunk = min(record.chunk_cycles, cycles)
    samples = chunk * spc / record.every
    trace_bytes = 8.0 * samples * (traced * len(record.variables) + 3 * L * record.gates)
    per_cycle = 8.0 * (4 * 6 * sum(sizes) * record.snapshots + 4 * n_syn * record.weights
                       + 3 * sizes[-1] + 8)
    n_traced_cycles = cycles if record.trace_cycles is None else max(
        0, min(record.trace_cycles[1], cycles) - record.trace_cycles[0])
    recordings = (3 * trace_bytes + 3 * chunk * per_cycle + cycles * per_cycle
                  + trace_bytes / max(chunk, 1) * n_traced_cycles)
    return {"network": network, "schedule": sched, "stream": stream, "recordings": recordings}


def _available_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with dask.distributed
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g}"  # pragma: no cover


def _check_memory(source, parts: dict[str, float]) -> None:
    total = sum(parts.values())
    available = _available_memory()
    if total > available:
        # the key at fault: a cause that alone does not fit (the recordings grow with the
        # sizes, the steps per cycle and the cycles), else what is recorded
        keys = {"network": "circuit.sizes", "schedule": "gamma.frequency", "stream": "cycles",
                "recordings": "record"}
        worst = next((k for k in ("network", "schedule", "stream") if parts[k] > available),
                     "recordings")
        key = keys[worst]
        detail = ", ".join(f"{k} {_size(v)}" for k, v in parts.items())
        raise ConfigError(
            source, key, f"the run would need about {_size(total)} of memory ({detail}) but"
            f" {_size(available)} are available; allowed: a run that fits (smaller sizes, a"
            " higher γ frequency or larger dt, fewer cycles, or recording less)")


def scenario_from_dict(data: dict, source: str = "<dict>") -> Scenario:
    """Validate a scenario table (the TOML layout) into a :class:`Scenario`.

    Everything that can be checked before a simulation is checked here, with the file, the
    key, the value and what is allowed: types and ranges of every key, the circuit, dt against
    the time constants and the γ period, both γ phases lasting at least a step, the recorded
    layers, the ``.npz`` examples, and a memory estimate against the available memory."""
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", "a scenario must be a table of keys")
    if data.get("kind") == "rnn":
        raise ConfigError(source, "kind", "'rnn' files are run by `cdtp run` (through"
                          " cdtp.rnn.experiment); they have no circuit, γ schedule or"
                          " sweep; allowed here: circuit")
    _check_keys(source, "", data, list(_TOP))
    top = _values(
        source, "", {k: v for k, v in data.items() if _TOP[k]}, {k: v for k, v in _TOP.items() if v}
    )
    _choice(source, "kind", top.get("kind", "circuit"), ("circuit", "rnn"))
    if "name" in top:
        _name(source, top["name"])
    if "circuit" not in data:
        raise ConfigError(source, "circuit", "missing: a circuit file path or a [circuit] table")
    circ = data["circuit"]
    files = [Path(source)] if source not in ("<dict>",) else []
    if isinstance(circ, str):
        path = Path(source).parent / circ if source != "<dict>" else Path(circ)
        if not path.is_file():
            raise ConfigError(source, "circuit", f"no such circuit file: {path}")
        circ = read_toml(path, "circuit")
        circuit_source = str(path)
        files.append(path)
    else:
        circ = _table(source, "circuit", circ)
        circuit_source = f"{source} [circuit]"
    circuit = circuit_from_dict(circ, source=circuit_source)
    if ("cycles" in top) == ("epochs" in top):
        raise ConfigError(source, "cycles", "give exactly one of cycles and epochs")
    device = top.get("device", "numpy")
    _choice(source, "device", device, DEVICES)
    dt = top.get("dt", 1e-3)
    if not dt > 0:
        raise ConfigError(source, "dt", f"{dt * 1e3:g} ms; allowed: a time step > 0, e.g."
                          " '1 ms'")
    _time_constants(source, circuit, dt)
    g = _gamma(source, _values(source, "gamma", _table(source, "gamma", data.get("gamma", {})),
                               _GAMMA))
    p = _plasticity_gate(source, _values(
        source, "plasticity_gate",
        _table(source, "plasticity_gate", data.get("plasticity_gate", {})), _GATE,
    ))
    try:
        schedule = Schedule(GammaSchedule(**g), PlasticityGate(**p))
    except ValueError as exc:
        key = "plasticity_gate" if "plasticity" in str(exc) else "gamma"
        raise ConfigError(source, key, str(exc)) from None
    r = _record(source, _values(source, "record", _table(source, "record",
                                                         data.get("record", {})), _RECORD))
    try:
        record = RecordSpec(**r)
    except (ValueError, TypeError) as exc:
        raise ConfigError(source, "record", str(exc)) from None
    if circuit.neurons != "spiking":
        spiking_only = [v for v in record.variables if v in SPIKING_VARIABLES]
        if spiking_only:
            raise ConfigError(source, "record.variables", f"{spiking_only[0]!r} is a population"
                              " rate: it needs a circuit with neurons = 'spiking'; allowed: "
                              + ", ".join(v for v in TRACE_VARIABLES if v not in SPIKING_VARIABLES))
        if record.spikes:
            raise ConfigError(source, "record.spikes", f"{record.spikes}: spikes need a circuit"
                              " with neurons = 'spiking'; allowed: 0")
    if record.layers is not None:
        bad = [l for l in record.layers if not 0 <= l <= circuit.depth]
        if bad:
            raise ConfigError(source, "record.layers", f"layer {bad[0]} does not exist; allowed:"
                              f" 0 … {circuit.depth} (the circuit has sizes {list(circuit.sizes)})")
    task = _task(source, _table(source, "task", data.get("task", {})))
    if schedule.gamma.period / dt < 2 - 1e-9:
        raise ConfigError(source, "gamma.frequency", f"the γ period"
                          f" ({schedule.gamma.period * 1e3:g} ms) is shorter than 2 time steps"
                          f" (dt = {dt * 1e3:g} ms); allowed: f ≤ 1/(2 dt) ="
                          f" {0.5 / dt:g} Hz")
    cycles = _cycles_of(top, task)
    widths = _TASK_WIDTHS.get(task.get("name"))
    if widths and (circuit.sizes[0], circuit.sizes[-1]) != widths:
        raise ConfigError(source, "task.name", f"{task['name']} has {widths[0]} inputs and"
                          f" {widths[1]} outputs; the circuit has sizes {list(circuit.sizes)};"
                          f" allowed: a circuit with sizes [{widths[0]}, …, {widths[1]}]")
    if task.get("name") == "npz":
        npz = (Path(source).parent if source != "<dict>" else Path()) / task["path"]
        data_npz = _read_npz(source, npz, circuit, task, top.get("seed", 0))
        files.append(npz)
        if "epochs" in top:
            cycles = top["epochs"] * data_npz.n_train
    from cdtp.brian.simulation import STANDALONE_RECORD, standalone_unrecordable

    if device == "cpp_standalone" and standalone_unrecordable(record):

        raise ConfigError(source, "device", "cpp_standalone records the per-cycle output, label"
                          " and loss and the held-out evaluation only; set"
                          f" {STANDALONE_RECORD}, or use device = \"cython\" to record traces"
                          " and snapshots")
    _check_memory(source, memory_estimate(circuit, schedule, record, dt, cycles))
    _phases(source, schedule, circuit, dt)
    return Scenario(
        name=top.get("name", Path(source).stem),
        source=source,
        circuit=circuit,
        schedule=schedule,
        record=record,
        task=task,
        dt=dt,
        device=device,
        seed=top.get("seed", 0),
        cycles=top.get("cycles"),
        epochs=top.get("epochs"),
        raw=data,
        files=tuple(files),
    )


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file; errors name the file and the key."""
    path = Path(path)
    data = read_toml(path, "scenario")
    if isinstance(data.get("circuit"), str) and any(
        o.startswith("circuit.") for o in overrides or []
    ):
        # overriding circuit keys: take the referenced file's table in, then override it
        cpath = path.parent / data["circuit"]
        if not cpath.is_file():
            raise ConfigError(str(path), "circuit", f"no such circuit file: {cpath}")
        data["circuit"] = read_toml(cpath, "circuit")
        apply_overrides(data, overrides or [])
        scenario = scenario_from_dict(data, source=str(path))
        return dataclasses.replace(scenario, files=(*scenario.files, cpath))
    apply_overrides(data, overrides or [])
    return scenario_from_dict(data, source=str(path))
