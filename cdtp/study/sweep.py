"""Parameter sweeps: a scenario's ``[sweep]`` grid, one independent simulation per point,
serially or on Dask distributed (docs/model.md §7).

A sweep is declared in the scenario file by dotted paths and lists of values (numbers, or
strings with units; names only for the keys of :data:`CATEGORICAL_KEYS`)::

    [sweep]
    "gamma.frequency" = ["4 Hz", "8 Hz", "16 Hz"]
    "gamma.duty" = [0.25, 0.5]
    "gamma.shape" = ["square", "sinusoid"]

Each grid point is the scenario with those keys set, validated like any scenario, simulated and
written atomically to its own file ``<points>/point_<i>.nc``; a point that fails writes
``point_<i>.failed.json`` with its error instead and the others go on. Running a sweep again
skips the points whose file exists (an interrupted sweep resumes). The combined Dataset has one
dimension per swept key (values in SI units), named so that ``.sel`` takes it as a keyword
(``gamma.frequency`` → ``gamma_frequency``: :func:`dimension_name`; the dotted key is the
dimension's ``key`` attribute) and holds the per-cycle records of every point
(``loss``, ``output``, ``weight_change``, ``boundary_time``), the held-out evaluation of every
point when the task has test examples (``test_loss``, ``test_accuracy`` on ``epoch``, the
union of the points' epochs, NaN where a point has none), each check's median residual and
fraction of passing cells, a ``status`` (ok / diverged / failed) and the point file's path;
the traces stay in the point files.

With ``batch=True`` (``cdtp sweep --batch``), points that differ only in γ and plasticity-gate
parameters are simulated together as blocks of one Brian2 network (:mod:`cdtp.brian.batch`: the same
numbers as separate runs, several times faster for small circuits); their point files hold the
per-cycle output, label and loss, without traces, snapshots or weights, so the proposition
checks are left empty (NaN) for them.

On Dask, workers are processes with one thread each; brian2 is imported in a worker plugin's
``setup`` (it installs a signal handler, which fails outside a process's main thread).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from cdtp.model.circuit import ConfigError, _choice
from cdtp.model.gating import GAMMA_SHAPES, PLASTICITY_GATES
from cdtp.model.units import UnitError, parse_quantity

__all__ = ["CATEGORICAL_KEYS", "SweepPoint", "batch_groups", "combine", "dimension_name", "grid",
           "point_state", "run_batch", "run_point", "sweep"]

SUMMARY_VARIABLES = ("loss", "output", "label", "weight_change", "boundary_time")
HELD_OUT_VARIABLES = ("test_loss", "test_accuracy")


class SweepPoint(dict):
    """One grid point: ``index`` (int), ``coords`` ({key: SI value or name}), ``overrides``
    (``key=value`` strings), ``units`` ({key: "s", "Hz" or "" for plain numbers and names})."""


#: Keys whose swept values are names (the coordinate is then a string), with the names allowed.
CATEGORICAL_KEYS = {
    "gamma.shape": tuple(s for s in GAMMA_SHAPES if s != "array"),
    "plasticity_gate.kind": PLASTICITY_GATES,
}


def _coordinate(source, key, value) -> float | str:
    """The coordinate of one swept value: SI number, or the name for a categorical key."""
    where = f"sweep.{key}"
    if key in CATEGORICAL_KEYS:
        if not isinstance(value, str):
            raise ConfigError(
                source,
                where,
                f"{value!r} is not a name; allowed: " + ", ".join(CATEGORICAL_KEYS[key]),
            )
        _choice(source, where, value, CATEGORICAL_KEYS[key])
        return value
    if isinstance(value, bool):
        raise ConfigError(source, where, f"{value!r} is not a number")
    if isinstance(value, int | float):
        if not np.isfinite(value):
            raise ConfigError(source, where, f"{value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        for dim in ("time", "rate"):
            try:
                return parse_quantity(value, dim)
            except UnitError:
                continue
    raise ConfigError(
        source,
        where,
        f"{value!r} is not numeric: sweep numbers or quantities"
        " like '8 Hz' (names only for " + ", ".join(CATEGORICAL_KEYS) + ")",
    )


_SI = {"time": "s", "rate": "Hz"}


def _parses(value, dim: str) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_quantity(value, dim)
    except UnitError:
        return False
    return True


def grid(path: str | Path, overrides: list[str] | None = None) -> tuple[list[str], list]:
    """The swept keys and the grid points of a scenario file (each point validated)."""
    from cdtp.study.scenario import load_scenario

    path = Path(path)
    base = load_scenario(path, overrides)  # validates the scenario without the grid
    table = base.raw.get("sweep")
    source = str(path)
    if not isinstance(table, dict) or not table:
        raise ConfigError(source, "sweep", "no [sweep] table: list values for at least one key")
    keys = list(table)
    values = []
    units = {}
    for key in keys:
        v = table[key]
        if not isinstance(v, list) or not v:
            raise ConfigError(source, f"sweep.{key}", "empty grid: give a list of values")
        coords = [_coordinate(source, key, x) for x in v]
        units[key] = next((_SI[d] for x in v for d in _SI if _parses(x, d)), "")
        repeated = sorted({c for c in coords if coords.count(c) > 1}, key=str)
        if repeated:
            raise ConfigError(
                source, f"sweep.{key}", f"{repeated[0]!r} appears twice; each value once"
            )
        values.append(list(zip(coords, v)))
    points = []
    for i, combo in enumerate(itertools.product(*values)):
        sets = []
        for key, (_, raw) in zip(keys, combo):
            sets.append(f"{key}={json.dumps(raw)}")
        point = SweepPoint(
            index=i,
            coords={k: c for k, (c, _) in zip(keys, combo)},
            overrides=[*(overrides or []), *sets],
            units=units,
        )
        try:
            scenario = load_scenario(path, point["overrides"])
        except ConfigError as exc:
            raise ConfigError(source, f"sweep.{exc.key}", str(exc)) from None
        point["files"] = [str(f) for f in scenario.files]
        points.append(point)
    return keys, points


def _point_file(directory: Path, index: int) -> Path:
    return directory / f"point_{index:04d}.nc"


def _failure(point: dict, exc: BaseException) -> dict:
    return {"index": point["index"], "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def _record_failure(directory: Path, point: dict, error: str) -> None:
    """Write ``point_<i>.failed.json`` (atomically). Only the sweep's own process does this,
    for results it received: a point cut short by an interrupt leaves no record."""
    from cdtp.record.dataset import temporary_prefix

    failed = _point_file(directory, point["index"]).with_suffix(".failed.json")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=temporary_prefix(failed), suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump({"index": point["index"], "coords": point["coords"], "error": error}, fh)
    os.replace(tmp, failed)


def _clear_failure(directory: Path, point: dict) -> None:
    failed = _point_file(directory, point["index"]).with_suffix(".failed.json")
    if failed.exists():
        failed.unlink()


def run_point(scenario_path: str, point: dict, directory: str, interrupt=None) -> dict:
    """Simulate one grid point into its own file. Never raises an :class:`Exception`: returns
    ``{"index", "status": "done"}`` or ``{"index", "status": "failed", "error"}`` (which
    :func:`sweep` records); an interrupt (:class:`KeyboardInterrupt`, or ``interrupt``
    aborting, see :func:`cdtp.brian.simulation.simulate`) writes nothing."""
    from cdtp.study.scenario import load_scenario

    directory = Path(directory)
    target = _point_file(directory, point["index"])
    try:
        scenario = load_scenario(scenario_path, point["overrides"])
        ds = scenario.simulate(path=target, attrs={"sweep_point": point["coords"]},
                               interrupt=interrupt)
        ds.close()
        return {"index": point["index"], "status": "done"}
    except Exception as exc:  # a failing point must not stop the others
        return _failure(point, exc)


#: Scenario keys a batch may differ in (the rest must agree: one circuit, task, dt, device).
BATCHED_SECTIONS = ("gamma", "plasticity_gate")


def batch_groups(scenario_path: str | Path, points: list, max_size: int | None = None) -> list:
    """Split grid points into batches: points whose scenarios differ only in γ and
    plasticity-gate parameters (and agree on :func:`cdtp.brian.engine.compiled_kind`) go together,
    at most ``max_size`` per batch. With ``plasticity.consolidation = "cycle"`` they must also
    share the steps per cycle and the lag (one plasticity clock per network)."""
    from cdtp.brian.engine import compiled_kind
    from cdtp.study.scenario import load_scenario

    groups: dict = {}
    for p in points:
        sc = load_scenario(scenario_path, p["overrides"])
        rest = {k: v for k, v in sc.raw.items()
                if k not in (*BATCHED_SECTIONS, "sweep", "record", "name")}
        cycle = ((sc.schedule.whole_period(sc.dt), sc.schedule.gamma.lag)
                 if sc.circuit.consolidation == "cycle" else None)
        key = (json.dumps(rest, sort_keys=True, default=str), compiled_kind(sc.schedule), cycle)
        groups.setdefault(key, []).append(p)
    out = []
    for members in groups.values():
        size = max_size or len(members)
        out += [members[i:i + size] for i in range(0, len(members), size)]
    return out


def run_batch(scenario_path: str, points: list, directory: str, interrupt=None) -> list[dict]:
    """Simulate grid points that differ only in their schedules as one Brian2 network
    (:func:`cdtp.brian.batch.build_batch`) and write each point's file: per-cycle ``output``,
    ``label`` and ``loss`` (no traces, snapshots or weights, so no proposition checks). Never
    raises an :class:`Exception`: returns one result per point, as :func:`run_point`
    (``interrupt`` is not followed within a batch: :func:`sweep` stops after it)."""
    from cdtp.brian.batch import build_batch
    from cdtp.brian.simulation import run_attributes
    from cdtp.model.losses import get_loss
    from cdtp.record.dataset import Recorder, RecordSpec
    from cdtp.study.scenario import load_scenario

    directory = Path(directory)
    try:
        scenarios = [load_scenario(scenario_path, p["overrides"]) for p in points]
        base = scenarios[0]
        inputs, labels, task = base.stream()
        batch = build_batch(base.circuit, [s.schedule for s in scenarios], inputs, labels,
                            len(inputs), dt=base.dt, device=base.device).run()
    except Exception as exc:  # the whole batch failed: every point records why
        return [_failure(p, exc) for p in points]
    spec = RecordSpec(variables=(), gates=False, snapshots=False, weights=False)
    loss = get_loss(base.circuit.loss)
    results = []
    for k, (p, sc) in enumerate(zip(points, scenarios)):
        try:
            n = batch.cycles_completed[k]
            out, lab = batch.outputs(k)[:n], labels[:n]
            attrs = run_attributes(
                sc.circuit, sc.schedule, spec, sc.dt, sc.device, "brian2",
                sc.attributes(task, {"sweep_point": p["coords"],
                                     "batched": f"one network of {batch.size} circuits"}),
                n_cycles=len(inputs),
            )
            recorder = Recorder(spec, sc.circuit.sizes, sc.circuit.bias, attrs,
                                path=_point_file(directory, p["index"]))
            recorder.add_cycles(np.arange(n), {"output": out, "label": lab,
                                               "loss": loss.value(out, lab).reshape(n)})
            recorder.finish({"diverged": batch.diverged[k] or "", "interrupted": "",
                             "cycles_completed": n, "cycles_planned": len(inputs)}).close()
            results.append({"index": p["index"], "status": "done"})
        except Exception as exc:
            results.append(_failure(p, exc))
    return results


def _import_brian2_plugin():
    """A Dask worker plugin that imports brian2 in each worker process's main thread."""
    import logging

    from distributed.diagnostics.plugin import WorkerPlugin

    class ImportBrian2(WorkerPlugin):
        name = "cdtp-import-brian2"

        def setup(self, worker):
            import brian2  # noqa: F401

            from cdtp.study.interrupts import ignore_interrupts

            # Ctrl-C reaches every process of the terminal's group: the sweep's own process
            # alone decides (Brian2's handler here would cut a point short and let it be
            # stored as complete)
            ignore_interrupts()
            # a task cancelled because the sweep was interrupted is expected, not a warning
            logging.getLogger("distributed.worker.state_machine").addFilter(
                lambda record: "ended with CancelledError" not in record.getMessage()
            )

    return ImportBrian2()


def point_state(path: str | Path) -> tuple[str, str]:
    """Whether a point file is ``missing``, ``complete`` (every planned cycle ran, or the run
    diverged), ``incomplete`` (interrupted, or fewer cycles than planned) or ``corrupt`` (not
    readable as a cdtp result); and why, for the last two."""
    from cdtp.record.dataset import ENGINE

    path = Path(path)
    if not path.exists():
        return "missing", ""
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            attrs = dict(ds.attrs)
    except Exception as exc:  # any unreadable file: truncated, not HDF5, …
        return "corrupt", f"{type(exc).__name__}: {exc}"
    if "circuit" not in attrs or "cycles_completed" not in attrs:
        return "corrupt", "not a cdtp results file"
    if attrs.get("interrupted"):
        return "incomplete", str(attrs["interrupted"])
    if attrs.get("diverged"):
        return "complete", ""
    done, planned = attrs["cycles_completed"], attrs.get("cycles_planned")
    try:
        if planned is not None and int(done) < int(planned):
            return "incomplete", f"{int(done)} of {int(planned)} cycles"
    except (TypeError, ValueError):
        return "corrupt", f"cycles_completed = {done!r}, cycles_planned = {planned!r}"
    return "complete", ""


def _set_aside(path: Path, why: str) -> Path:
    """Rename ``path`` to ``<name>.<why>`` (``.<why>-2`` … if taken) and return the new path."""
    target = path.with_name(f"{path.name}.{why}")
    k = 2
    while target.exists():
        target = path.with_name(f"{path.name}.{why}-{k}")
        k += 1
    os.replace(path, target)
    return target


def sweep(
    scenario_path: str | Path,
    directory: str | Path,
    *,
    overrides: list[str] | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    batch: bool = False,
    progress: Callable[..., None] | None = None,
) -> dict:
    """Run every grid point not finished yet; returns ``{"keys", "points", "computed",
    "skipped", "results", "set_aside", "cleaned"}``. ``workers = 0`` runs serially in this
    process; otherwise a Dask LocalCluster of that many single-threaded processes, or the
    scheduler at ``scheduler``. ``batch``: points that differ only in γ / plasticity-gate
    parameters run together as one Brian2 network (:func:`batch_groups`, :func:`run_batch`;
    split into as many batches as there are workers), recording per-cycle output, label and
    loss only. ``progress(points_done, n_points)`` is called at the start and after every
    point; if it takes the keywords ``running`` and ``failed`` (as
    :class:`cdtp.study.progress.SweepProgress` does) they say how many points are being computed (at
    most one per worker) and how many have failed.

    A point is done when its file is complete (:func:`point_state`); a corrupt or incomplete
    one is renamed (``point_<i>.nc.corrupt``, ``.incomplete``; listed in ``set_aside``) and
    computed again. Temporary files that killed runs left in ``directory`` are removed first
    (``cleaned``). Ctrl-C (:class:`KeyboardInterrupt`) stops the sweep at once: the workers
    are shut down, the points in flight leave nothing (no point file, no failure record), and
    the next run computes exactly the points that are missing.
    """
    from cdtp.record.dataset import remove_stale_temporaries
    from cdtp.study.interrupts import RaiseOnInterrupt, Shielded

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers = {workers!r}; allowed: an integer ≥ 0")
    keys, points = grid(scenario_path, overrides)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cleaned = remove_stale_temporaries(directory)
    set_aside = []
    todo = []
    for p in points:
        f = _point_file(directory, p["index"])
        state, why = point_state(f)
        if state in ("corrupt", "incomplete"):
            set_aside.append((str(_set_aside(f, state)), why))
        if state != "complete":
            todo.append(p)
    by_index = {p["index"]: p for p in points}
    skipped = len(points) - len(todo)
    done = [skipped]
    failed = [0]
    parallel = 1 if scheduler is None and workers == 0 else max(workers, 1)
    counts = progress is not None and {"running", "failed"} <= set(
        inspect.signature(progress).parameters)

    def report():
        if progress is None:
            return
        if counts:
            remaining = len(points) - done[0]
            progress(done[0], len(points), running=min(parallel, remaining), failed=failed[0])
        else:
            progress(done[0], len(points))

    report()
    results = []

    def finished(result):
        got = result if isinstance(result, list) else [result]
        for r in got:
            if r["status"] == "failed":
                _record_failure(directory, by_index[r["index"]], r["error"])
            else:
                _clear_failure(directory, by_index[r["index"]])
        results.extend(got)
        done[0] += len(got)
        failed[0] += sum(r["status"] == "failed" for r in got)
        report()

    serial = scheduler is None and workers == 0
    with RaiseOnInterrupt(immediately=not serial) as interrupt:
        if batch and todo:
            n_tasks = max(workers, 1) if scheduler is None else max(workers, 2)
            tasks = batch_groups(scenario_path, todo, max_size=-(-len(todo) // n_tasks))
            fn, args = run_batch, tasks
        else:
            fn, args = run_point, todo
        if not args:
            pass
        elif serial:
            for a in args:
                result = fn(str(scenario_path), a, str(directory), interrupt)
                interrupt.check()  # (a point cut short raised already: this is after a batch)
                finished(result)
        else:
            _run_on_dask(fn, args, scenario_path, directory, workers, scheduler, finished,
                         Shielded, interrupt.check)
    return {
        "keys": keys,
        "points": points,
        "computed": len(todo),
        "skipped": skipped,
        "results": results,
        "set_aside": set_aside,
        "cleaned": [str(c) for c in cleaned],
    }


def _run_on_dask(fn, args, scenario_path, directory, workers, scheduler, finished, shielded,
                 check):
    """Map ``fn`` over ``args`` on Dask; on an interrupt cancel everything and shut the
    workers down (further Ctrl-C only print a message meanwhile), then re-raise."""
    import logging

    from distributed import Client, LocalCluster, as_completed

    cluster = client = futures = None
    try:
        if scheduler is None:
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        client = Client(scheduler or cluster)
        client.register_plugin(_import_brian2_plugin())
        futures = client.map(
            fn, [str(scenario_path)] * len(args), args, [str(directory)] * len(args),
            pure=False,
        )
        for fut in as_completed(futures):
            finished(fut.result())
            check()
    except KeyboardInterrupt:
        with shielded("interrupted: shutting the workers down (points in flight are not"
                      " recorded)…"):
            # the shutdown of killed tasks is noisy in distributed's logs: not the user's
            # business here
            for name in ("distributed", "distributed.nanny", "distributed.worker"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            _close(client, cluster, futures, interrupted=True)
            client = cluster = None
        raise
    finally:
        _close(client, cluster, futures)


def _close(client, cluster, futures, interrupted: bool = False) -> None:
    """Shut down the client and the local cluster. After an interrupt the local workers go
    first (a task cancelled on a live worker is logged there as a warning); a remote
    scheduler's workers get the tasks cancelled."""
    import contextlib

    if interrupted and cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)
        cluster = None
    if client is not None:
        if interrupted and futures and cluster is None:
            with contextlib.suppress(Exception):
                client.cancel(futures)
        with contextlib.suppress(Exception):
            client.close(timeout=10)
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)


def dimension_name(key: str) -> str:
    """The combined file's dimension of a swept key: the dotted path with ``_`` for every
    character that cannot appear in a Python name (``gamma.frequency`` → ``gamma_frequency``),
    so that ``ds.sel(gamma_frequency=8.0)`` works; the key itself is the dimension's
    ``key`` attribute."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in key)


def _held_out_pieces(loaded: dict) -> tuple[dict, dict]:
    """The held-out variables of each loaded point on the union of the points' epochs, and the
    NaN stand-in for a point without them (or without a file); ({}, {}) when no point has a
    held-out set. ``examples_seen`` is left out: it is ``epoch`` × the epoch length."""
    having = {i: d for i, d in loaded.items() if "test_loss" in d}
    if not having:
        return {}, {}
    epochs = functools.reduce(np.union1d, [d.epoch.values for d in having.values()])
    names = [v for v in HELD_OUT_VARIABLES if v in next(iter(having.values()))]

    def on_epochs(d):
        return d[names].drop_vars("examples_seen", errors="ignore").reindex(epoch=epochs)

    pieces = {i: dict(on_epochs(d).data_vars) for i, d in having.items()}
    return pieces, dict((on_epochs(next(iter(having.values()))) * np.nan).data_vars)


def combine(keys: list[str], points: list, directory: str | Path,
            attrs: dict | None = None) -> xr.Dataset:
    """One Dataset with a dimension per swept key from the point files (see the module doc).

    Dimensions are named by :func:`dimension_name`; global attributes: ``swept_keys`` (the
    dotted keys) and ``swept_dims`` (the dimensions, in the same order), as JSON; ``circuit``
    (of the first point that ran; ``circuit_note`` says so when circuit keys are swept),
    ``dt`` (unless swept) and whatever ``attrs`` adds (``cdtp sweep`` adds the scenario)."""
    from cdtp.analysis.propositions import check_all
    from cdtp.record.dataset import load

    directory = Path(directory)
    pieces = []
    n_cycles = 0
    loaded = {}
    for p in points:
        f = _point_file(directory, p["index"])
        if f.exists():
            loaded[p["index"]] = load(f)
            n_cycles = max(n_cycles, loaded[p["index"]].sizes.get("cycle", 0))
    template = next((d for d in loaded.values() if "loss" in d), None)
    held_out, no_held_out = _held_out_pieces(loaded)
    for p in points:
        ds = loaded.get(p["index"])
        data = dict(held_out.get(p["index"], no_held_out))
        if ds is not None:
            if "loss" in ds:
                sub = ds[[v for v in SUMMARY_VARIABLES if v in ds]].reindex(cycle=range(n_cycles))
                data.update(sub.data_vars)
            elif template is not None:
                data.update(
                    (
                        template[list(SUMMARY_VARIABLES)].reindex(cycle=range(n_cycles)) * np.nan
                    ).data_vars
                )
            for name, res in check_all(ds).items():
                pas = res.passed.values
                data[f"{name}_median_residual"] = xr.DataArray(
                    float(np.nanmedian(res.residual.values))
                    if np.any(~np.isnan(res.residual.values))
                    else np.nan,
                    attrs={"long_name": f"{name}: median residual", "units": "1"},
                )
                data[f"{name}_passed_fraction"] = xr.DataArray(
                    float(np.nanmean(pas)) if np.any(~np.isnan(pas)) else np.nan,
                    attrs={"long_name": f"{name}: fraction of cells passing", "units": "1"},
                )
            state, why = point_state(_point_file(directory, p["index"]))
            if ds.attrs.get("diverged"):
                status, error = "diverged", ds.attrs["diverged"]
            elif state != "complete":
                status, error = "failed", f"{state}: {why}"
            else:
                status, error = "ok", ""
        else:
            failed = _point_file(directory, p["index"]).with_suffix(".failed.json")
            error = json.loads(failed.read_text())["error"] if failed.exists() else "not run"
            status = "failed"
            if template is not None:
                sub = template[[v for v in SUMMARY_VARIABLES if v in template]]
                sub = sub.reindex(cycle=range(n_cycles)) * np.nan
                data.update(sub.data_vars)
        data["status"] = xr.DataArray(status, attrs={"long_name": "point status"})
        data["error"] = xr.DataArray(error, attrs={"long_name": "error or divergence"})
        data["point_file"] = xr.DataArray(str(_point_file(directory, p["index"])))
        piece = xr.Dataset(data)
        piece = piece.expand_dims({dimension_name(k): [p["coords"][k]] for k in keys})
        pieces.append(piece)
    out = xr.combine_by_coords(
        pieces, compat="no_conflicts", join="outer", combine_attrs="drop_conflicts"
    )
    for k in keys:
        d = dimension_name(k)
        out[d].attrs["long_name"] = k
        out[d].attrs["key"] = k
        if points and points[0].get("units", {}).get(k):
            out[d].attrs["units"] = points[0]["units"][k]
    if template is not None:
        # only what every point shares: the circuit unless a circuit key is swept, dt unless
        # swept (steps per cycle change with the γ frequency and dt)
        shared = ["cdtp_version", "circuit"]
        if "dt" not in keys:
            shared.append("dt")
        out.attrs = {k: template.attrs[k] for k in shared if k in template.attrs}
        swept_circuit = [k for k in keys if k.startswith("circuit.")]
        if swept_circuit:
            out.attrs["circuit_note"] = (
                "the circuit of the first point that ran; swept per point: "
                + ", ".join(swept_circuit))
    for name, value in (attrs or {}).items():
        out.attrs[name] = value if isinstance(value, (str, int, float)) else json.dumps(
            value, default=str)
    out.attrs["swept_keys"] = json.dumps(keys)
    out.attrs["swept_dims"] = json.dumps([dimension_name(k) for k in keys])
    return out
