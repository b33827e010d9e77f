"""Scenario files: what to run — a circuit, a task, a γ schedule, a plasticity gate, how long
and what to record (TOML, validated on load like circuits).

Layout (units as strings)::

    name = "quickstart"
    circuit = "../circuits/teacher_student.toml"   # a path relative to this file, or a table
    cycles = 200                                   # or: epochs = 3 (passes over the training set)
    dt = "1 ms"
    device = "numpy"                               # Brian2 target: numpy | cython
    seed = 0                                       # the task's seed (the circuit has its own)

    [task]
    name = "teacher_student"                       # teacher_student | digits | npz
    # teacher_student: seed (default: the scenario's), n_test; digits: scale;
    # npz: path (arrays x and y)

    [gamma]                                        # cdtp.gating.GammaSchedule
    shape = "square"
    frequency = "25 Hz"
    duty = 0.5

    [plasticity_gate]                              # cdtp.gating.PlasticityGate
    kind = "descending"

    [record]                                       # cdtp.recording.RecordSpec
    variables = ["u"]

``--set key=value`` overrides any key by dotted path (``gamma.frequency="8 Hz"``,
``circuit.plasticity.eta_w=0.05``) before validation.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cdtp.circuit import (
    CircuitConfig,
    ConfigError,
    _check_keys,
    _choice,
    _typed,
    circuit_from_dict,
    read_toml,
)
from cdtp.gating import GAMMA_SHAPES, PLASTICITY_GATES, GammaSchedule, PlasticityGate, Schedule
from cdtp.recording import RecordSpec
from cdtp.units import UnitError, parse_quantity

__all__ = ["Scenario", "apply_overrides", "load_scenario", "scenario_from_dict"]

TASKS = ("teacher_student", "digits", "npz")
DEVICES = ("numpy", "cython")
_TOP = {
    "name": "str",
    "circuit": None,
    "cycles": "int",
    "epochs": "int",
    "dt": "time",
    "device": "str",
    "seed": "int",
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
_TASK = {"name": "str", "seed": "int", "n_test": "int", "scale": "float", "path": "str"}
_RECORD = {
    "variables": None,
    "layers": None,
    "neurons": "int",
    "every": "int",
    "trace_cycles": None,
    "gates": "bool",
    "snapshots": "bool",
    "weights": "bool",
    "chunk_cycles": "int",
}


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: everything :func:`cdtp.simulation.simulate` needs."""

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

    def simulate(self, path=None, attrs: dict | None = None, progress=None):
        """Run the scenario with :func:`cdtp.simulation.simulate` (the scenario and its task
        go into the Dataset's attributes); see there for ``path`` and ``progress``."""
        from cdtp.simulation import simulate

        inputs, labels, task = self.stream()
        return simulate(
            self.circuit, self.schedule, inputs, labels, dt=self.dt, device=self.device,
            record=self.record, path=path, progress=progress, attrs=self.attributes(task, attrs),
        )

    def attributes(self, task: dict, attrs: dict | None = None) -> dict:
        """What a results file of this scenario says about it (besides the run's own)."""
        return {"scenario": self.raw, "scenario_file": str(self.source), "task": task,
                **(attrs or {})}

    def stream(self) -> tuple[np.ndarray, np.ndarray, dict]:
        """The example stream (one example per γ cycle) and a description of the task."""
        from cdtp import tasks

        c, t = self.circuit, self.task
        kind = t.get("name", "teacher_student")
        if kind == "teacher_student":
            n = self.cycles or 512
            task = tasks.teacher_student(
                t.get("seed", self.seed),
                n_in=c.sizes[0],
                hidden=tuple(c.sizes[1:-1]),
                n_out=c.sizes[-1],
                n_train=n,
                n_test=t.get("n_test", 256),
                nonlinearity=c.nonlinearity,
            )
        elif kind == "digits":
            task = tasks.digits(seed=t.get("seed", self.seed), scale=t.get("scale", 1.0))
        else:
            path = Path(self.source).parent / t["path"]
            if not path.is_file():
                raise ConfigError(self.source, "task.path", f"no such file {path}")
            with np.load(path) as data:
                missing = {"x", "y"} - set(data.files)
                if missing:
                    raise ConfigError(
                        self.source,
                        "task.path",
                        f"{path} lacks arrays {sorted(missing)} (needs x and y)",
                    )
                x, y = np.asarray(data["x"], float), np.asarray(data["y"], float)
            return (*self._repeat(x, y), {"task": "npz", "path": str(path)})
        if task.n_in != c.sizes[0] or task.n_out != c.sizes[-1]:
            raise ConfigError(
                self.source,
                "task",
                f"{kind} has {task.n_in} inputs and"
                f" {task.n_out} outputs; the circuit has sizes {list(c.sizes)}",
            )
        info = {
            "task": kind,
            **{k: v for k, v in task.metadata.items() if isinstance(v, str | int | float)},
        }
        return (*self._repeat(task.x_train, task.y_train), info)

    def _repeat(self, x, y):
        if (
            len(x) == 0
            or x.shape[1] != self.circuit.sizes[0]
            or y.shape != (len(x), self.circuit.sizes[-1])
        ):
            raise ConfigError(
                self.source,
                "task",
                f"examples of shape {x.shape} → {y.shape}"
                f" do not fit a circuit of sizes {list(self.circuit.sizes)}",
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


def scenario_from_dict(data: dict, source: str = "<dict>") -> Scenario:
    """Validate a scenario table (the TOML layout) into a :class:`Scenario`."""
    _check_keys(source, "", data, list(_TOP))
    top = _values(
        source, "", {k: v for k, v in data.items() if _TOP[k]}, {k: v for k, v in _TOP.items() if v}
    )
    if top.get("kind", "circuit") != "circuit":
        raise ConfigError(
            source,
            "kind",
            f"{top['kind']!r}: allowed: circuit, rnn (rnn files"
            " are run by cdtp run through cdtp.reference.rnn_experiment)",
        )
    if "circuit" not in data:
        raise ConfigError(source, "circuit", "missing: a circuit file path or a [circuit] table")
    circ = data["circuit"]
    if isinstance(circ, str):
        path = Path(source).parent / circ if source != "<dict>" else Path(circ)
        if not path.is_file():
            raise ConfigError(source, "circuit", f"no such circuit file: {path}")
        circ = read_toml(path, "circuit")
        circuit_source = str(path)
    else:
        circ = _table(source, "circuit", circ)
        circuit_source = f"{source} [circuit]"
    circuit = circuit_from_dict(circ, source=circuit_source)
    if ("cycles" in top) == ("epochs" in top):
        raise ConfigError(source, "cycles", "give exactly one of cycles and epochs")
    for key in ("cycles", "epochs"):
        if key in top and top[key] < 1:
            raise ConfigError(source, key, f"{top[key]!r} must be ≥ 1")
    device = top.get("device", "numpy")
    _choice(source, "device", device, DEVICES)
    g = _values(source, "gamma", _table(source, "gamma", data.get("gamma", {})), _GAMMA)
    if "shape" in g:
        _choice(source, "gamma.shape", g["shape"], GAMMA_SHAPES)
    if "values" in g:
        g["values"] = tuple(g["values"])
    p = _values(
        source,
        "plasticity_gate",
        _table(source, "plasticity_gate", data.get("plasticity_gate", {})),
        _GATE,
    )
    if "kind" in p:
        _choice(source, "plasticity_gate.kind", p["kind"], PLASTICITY_GATES)
    try:
        schedule = Schedule(GammaSchedule(**g), PlasticityGate(**p))
    except ValueError as exc:
        raise ConfigError(source, "gamma", str(exc)) from None
    r = _values(source, "record", _table(source, "record", data.get("record", {})), _RECORD)
    try:
        record = RecordSpec(**r)
    except (ValueError, TypeError) as exc:
        raise ConfigError(source, "record", str(exc)) from None
    task = _values(source, "task", _table(source, "task", data.get("task", {})), _TASK)
    _choice(source, "task.name", task.get("name", "teacher_student"), TASKS)
    if task.get("name") == "npz" and "path" not in task:
        raise ConfigError(source, "task.path", "missing: the .npz file with arrays x and y")
    dt = top.get("dt", 1e-3)
    try:
        schedule.steps_per_cycle(dt)
    except ValueError as exc:
        raise ConfigError(source, "gamma.frequency", str(exc)) from None
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
    return scenario_from_dict(data, source=str(path))
