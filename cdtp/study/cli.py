"""The ``cdtp`` command.

    cdtp run SCENARIO [-o FILE] [--set key=value ...] [--figures DIR | --no-figures]
    cdtp sweep SCENARIO [--workers N | --scheduler ADDRESS] [--batch] [-o FILE]
               [--set key=value ...]
    cdtp check FILE [--json] [--strict]
    cdtp plot FILE [-o DIR]
    cdtp info FILE            (a results file, or a circuit / scenario .toml: its equations)

Exit codes: 0 done (``check``: no proposition violated — wherever a premise was met, its
conclusion held), 1 a violation (``check --strict``: also a premise not met) or the run
diverged, 2 bad input (nothing is written), 130 interrupted (Ctrl-C).

Ctrl-C during ``run``: the first stops after the current time step and writes the cycles
completed, marked ``interrupted``; a second aborts and writes nothing. During ``sweep``: the
workers are shut down, the points in flight are not recorded, and running the same command
again computes exactly the missing points.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from cdtp.record.dataset import sweep_dims
from cdtp.study.progress import RunProgress, SweepProgress

__all__ = ["main"]


class BadInput(Exception):
    """A file or argument the command cannot use (exit code 2)."""


def _bad_input(message: str) -> int:
    print(f"cdtp: error: {message}", file=sys.stderr)
    return 2


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are, or resolve to, the same file."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_output(path: Path, inputs, *, option: str = "-o", suffix: str | None = ".nc",
                  folder: bool = False) -> Path:
    """Refuse, before anything runs, an output path the command could not write or that would
    destroy one of its ``inputs``: it must end in ``suffix``, not be an existing folder (or,
    with ``folder``, an existing file), lie in a writable folder, and be none of the inputs."""
    if suffix and path.suffix != suffix:
        raise BadInput(f"{option}: {path}: a results file must end in {suffix}; allowed: a path"
                       f" such as {path.with_suffix(suffix)}")
    if not folder and path.is_dir():
        raise BadInput(f"{option}: {path} is a folder; allowed: a {suffix} file path")
    if folder and path.exists() and not path.is_dir():
        raise BadInput(f"{option}: {path} is a file, not a folder; allowed: a folder path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{option}: {path}: {parent} is not a folder; allowed: a path in a"
                       " writable folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{option}: {path}: the folder {parent} is not writable; allowed: a path"
                       " in a writable folder")
    for f in inputs:
        f = Path(f)
        if _same_file(path, f):
            raise BadInput(f"{option}: {path} would overwrite the input file {f}; allowed: an"
                           " output path that is none of the scenario, circuit or .npz files")
    return path


def _open(path: str):
    """A results file, its attributes checked: forged or damaged ones exit 2 naming the
    attribute instead of failing later."""
    from cdtp.record.dataset import circuit_of, load, schedule_of

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{path}: no such results file")
    try:
        ds = load(p)
    except Exception as exc:  # not NetCDF, truncated, …
        raise BadInput(f"{path}: not a NetCDF results file ({type(exc).__name__}: {exc})"
                       ) from None
    if _is_sweep(ds):
        _check_sweep_attrs(path, ds)
        return ds
    if "circuit" not in ds.attrs or "dt" not in ds.attrs:
        raise BadInput(f"{path}: not a cdtp results file (no circuit in its attributes)")
    checks = {
        "circuit": lambda: circuit_of(ds),
        "schedule": lambda: schedule_of(ds),
        "steps_per_cycle": lambda: _positive_int(ds.attrs.get("steps_per_cycle", 1)),
        "period_steps": lambda: _positive(ds.attrs.get("period_steps", 1)),
        "dt": lambda: _positive(ds.attrs["dt"]),
        "boundary_steps": lambda: _boundary_steps(ds.attrs.get("boundary_steps", "{}")),
        "cycles_completed": lambda: int(ds.attrs.get("cycles_completed", 0)),
        "diverged": lambda: str(ds.attrs.get("diverged", "")),
    }
    for name, check in checks.items():
        try:
            check()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInput(f"{path}: attribute {name}: {str(ds.attrs.get(name))[:80]!r} is not"
                           f" valid ({type(exc).__name__}: {exc})") from None
    return ds


def _positive_int(v) -> int:
    if int(v) != float(v) or int(v) < 1:
        raise ValueError("not an integer ≥ 1")
    return int(v)


def _positive(v) -> float:
    if not float(v) > 0:
        raise ValueError("not a number > 0")
    return float(v)


def _boundary_steps(text) -> dict:
    d = json.loads(text) if isinstance(text, str) else text
    if not isinstance(d, dict) or not all(isinstance(v, int) for v in d.values()):
        raise ValueError("not a table of step offsets")
    return d


def _check_sweep_attrs(path, ds) -> None:
    try:
        keys = sweep_dims(ds)
        if not isinstance(keys, list) or not keys or not all(k in ds.dims for k in keys):
            raise ValueError(f"{keys!r} are not dimensions of the file")
        for var in ("status", "error"):
            if var not in ds:
                raise KeyError(f"no variable {var!r}")
        if "circuit" in ds.attrs:
            json.loads(ds.attrs["circuit"])["sizes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: not a valid sweep file: attribute swept_keys or circuit:"
                       f" {type(exc).__name__}: {exc}") from None


def _is_sweep(ds) -> bool:
    """A combined sweep (:func:`cdtp.study.sweep.combine`) rather than one run."""
    return "swept_keys" in ds.attrs


def _points(ds):
    """The swept keys (dotted) and (coords by key, status, error, {check: (passed fraction,
    median residual)}) per grid point."""
    keys = sweep_dims(ds)
    names = sorted({v.rsplit("_", 2)[0] for v in ds.data_vars if v.endswith("_passed_fraction")})
    flat = ds[
        [
            "status",
            "error",
            *[f"{n}_passed_fraction" for n in names],
            *[f"{n}_median_residual" for n in names],
        ]
    ].stack(point=keys)
    out = []
    for i in range(flat.sizes["point"]):
        row = flat.isel(point=i)
        coords = {ds[k].attrs.get("key", k): row[k].item() for k in keys}
        checks = {
            n: (float(row[f"{n}_passed_fraction"]), float(row[f"{n}_median_residual"]))
            for n in names
        }
        out.append((coords, str(row.status.item()), str(row.error.item()), checks))
    return [ds[k].attrs.get("key", k) for k in keys], out


def _where(coords: dict) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in coords.items()
    )


def _check_sweep(args, ds) -> int:
    keys, points = _points(ds)
    failures = []
    for coords, status, error, checks in points:
        if status != "ok":
            failures.append(f"{_where(coords)}: {status}: {error}")
        for name, (fraction, _) in checks.items():
            if np.isfinite(fraction) and fraction < 1:
                failures.append(f"{_where(coords)}: {name} passes in {fraction:.0%} of its cells")
    evaluated = any(np.isfinite(f) for *_, c in points for f, _ in c.values())
    if args.json:
        print(
            json.dumps(
                {
                    "file": args.file,
                    "swept_keys": keys,
                    "points": [
                        {
                            "coords": coords,
                            "status": status,
                            "error": error,
                            "checks": {
                                n: {
                                    "passed_fraction": None if np.isnan(f) else f,
                                    "median_residual": None if np.isnan(r) else r,
                                }
                                for n, (f, r) in checks.items()
                            },
                        }
                        for coords, status, error, checks in points
                    ],
                    "failures": failures,
                },
                indent=2,
            )
        )
    else:
        names = list(points[0][3]) if points else []
        header = ["point", "status", *names]
        rows = [
            [_where(c), st, *("-" if np.isnan(ch[n][0]) else f"{ch[n][0]:.0%}" for n in names)]
            for c, st, _, ch in points
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        print("fraction of (cycle, layer) cells passing each check, per grid point:")
        for r in [header, *rows]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        print("\n".join(failures) or "every point ran and every check passed")
    if not evaluated:
        print(
            "no check could be evaluated on this file (nothing recorded that they need):"
            " nothing was verified",
            file=sys.stderr,
        )
        return 1
    return 1 if failures else 0


def _kind(path: str, overrides: list[str]) -> str:
    """The scenario's ``kind`` (``--set kind=…`` included): circuit or rnn."""
    import tomllib

    from cdtp.study.scenario import apply_overrides

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return "circuit"  # the scenario loader reports the problem with file and key
    kinds = [o for o in overrides or [] if o.split("=", 1)[0].strip() == "kind"]
    if kinds:
        data = apply_overrides({"kind": data.get("kind")}, kinds)
    return str(data.get("kind", "circuit"))


def _run_rnn(args) -> int:
    from cdtp.model.circuit import read_toml
    from cdtp.record.dataset import remove_stale_temporaries, save
    from cdtp.rnn import experiment as rnn_experiment
    from cdtp.study.scenario import apply_overrides

    data = apply_overrides(read_toml(args.scenario, "scenario"), args.set)
    try:
        config = rnn_experiment.RNNExperimentConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"{args.scenario}: kind: 'rnn' (an RNN experiment file), but: {exc}"
                       ) from None
    out = _check_output(Path(args.output or f"results/{Path(args.scenario).stem}.nc"),
                        [args.scenario])
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, out.name)
    ds = rnn_experiment.run(config)  # Ctrl-C: KeyboardInterrupt, nothing written
    save(ds, out)
    print(f"results: {out}")
    print(ds)
    return 1 if ds.attrs.get("diverged") in (1, True, "1", "True") else 0


def _status(ds) -> str:
    """"" for a complete run, else what cut it short."""
    a = ds.attrs
    if a.get("diverged"):
        return f"the run diverged: {a['diverged']}"
    if a.get("interrupted"):
        return f"the run was {a['interrupted']}"
    return ""


def cmd_run(args) -> int:
    from cdtp.record.dataset import remove_stale_temporaries
    from cdtp.study.interrupts import StopOnInterrupt
    from cdtp.study.scenario import load_scenario

    if _kind(args.scenario, args.set) == "rnn":
        return _run_rnn(args)
    scenario = load_scenario(args.scenario, args.set)
    out = _check_output(Path(args.output or f"results/{scenario.name}.nc"), scenario.files)
    report_path = _check_output(out.with_suffix(".propositions.txt"), scenario.files,
                                suffix=".txt")
    if args.no_figures and args.figures:
        raise BadInput("--figures and --no-figures: give one of them")
    figures = None if args.no_figures else _check_output(
        Path(args.figures) if args.figures else out.with_suffix(""), scenario.files,
        option="--figures", suffix=None, folder=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out.parent, out.name):
        print(f"removed {stale} (left by a run that was killed)", file=sys.stderr)
    progress = RunProgress(f"run {scenario.name}", quiet=args.quiet)
    with StopOnInterrupt() as interrupt:
        try:
            ds = scenario.simulate(path=out, progress=progress, interrupt=interrupt,
                                   tick=progress)
        finally:
            progress.close()
    with ds:
        ds = ds.load()
    try:
        return _report_run(ds, out, report_path, figures)
    except KeyboardInterrupt:
        print(f"\ninterrupted while writing the report and figures; the results file {out} is"
              " written" + (f" ({_status(ds)})" if _status(ds) else ""), file=sys.stderr)
        return 130


def _report_run(ds, out: Path, report_path: Path, figures: Path | None) -> int:
    """The propositions report, the figures (none when ``figures`` is None) and the summary of
    a finished run; exit code."""
    from cdtp.analysis import plots, propositions

    status = _status(ds)
    n_cycles = ds.sizes.get("cycle", 0) if "loss" in ds else 0
    checks = propositions.check_all(ds) if n_cycles else {}
    text = propositions.report(checks) if checks else "no cycle completed: nothing to check"
    reading = "\n".join(propositions.summary(checks)) if checks else ""
    if status:
        verdict = (f"{status}; {ds.attrs.get('cycles_completed', n_cycles)} cycles completed:"
                   " the checks above cover only those, and the run is not complete")
    else:
        verdict = "\n".join(propositions.violations(checks)) or (
            "no violation: wherever a premise was met, its conclusion held")
    report_path.write_text("\n\n".join(p for p in (text, reading, verdict) if p) + "\n")
    print(f"results: {out}" + (" (marked: " + status + ")" if status else ""))
    print(f"propositions report: {report_path}")
    if n_cycles:
        if figures is not None:
            paths = plots.save_all(ds, figures, checks)
            print(f"figures: {', '.join(str(p) for p in paths)}")
        loss = ds.loss.values
        k = max(1, min(20, len(loss) // 5))
        print(
            f"loss, mean of the first {k} cycles: {np.mean(loss[:k]):.4g}; of the last {k}:"
            f" {np.mean(loss[-k:]):.4g}"
        )
    print(text)
    if reading:
        print()
        print(reading)
    print()
    print(verdict)
    if ds.attrs.get("diverged"):
        print(status, file=sys.stderr)
        return 1
    if ds.attrs.get("interrupted"):
        print(f"{status}: the completed cycles are in {out}, marked interrupted",
              file=sys.stderr)
        return 130
    return 0


def cmd_sweep(args) -> int:
    from cdtp.record.dataset import remove_stale_temporaries, save
    from cdtp.study.sweep import combine, grid, sweep

    if args.workers is not None and args.workers < 0:
        raise BadInput(f"--workers: {args.workers}; allowed: an integer ≥ 0 (0: serially, in"
                       " this process)")
    workers = 2 if args.workers is None else args.workers
    _, points = grid(args.scenario, args.set)  # validate every point before anything is written
    inputs = sorted({f for p in points for f in p["files"]})
    out = _check_output(Path(args.output or f"results/{Path(args.scenario).stem}_sweep.nc"),
                        inputs)
    points_dir = _check_output(out.with_name(out.stem + "_points"), inputs, suffix=None,
                               folder=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, out.name)
    progress = SweepProgress(f"sweep {out.stem}", quiet=args.quiet)
    try:
        info = sweep(
            args.scenario,
            points_dir,
            overrides=args.set,
            workers=workers,
            scheduler=args.scheduler,
            batch=args.batch,
            progress=progress,
        )
    except KeyboardInterrupt:
        progress.close()
        from cdtp.study.sweep import point_state

        done = sum(point_state(points_dir / f"point_{p['index']:04d}.nc")[0] == "complete"
                   for p in points)
        print(f"\ninterrupted: {done} of {len(points)} points are complete in {points_dir};"
              f" run the same command again to compute the {len(points) - done} missing",
              file=sys.stderr)
        return 130
    progress.close()
    for path, why in info["set_aside"]:
        print(f"set aside {path} ({why}); computed again", file=sys.stderr)
    for path in info["cleaned"]:
        print(f"removed {path} (left by a run that was killed)", file=sys.stderr)
    import tomllib

    with open(args.scenario, "rb") as fh:
        scenario = tomllib.load(fh)
    ds = combine(info["keys"], info["points"], points_dir,
                 attrs={"scenario": scenario, "scenario_file": str(args.scenario),
                        "overrides": list(args.set)})
    save(ds, out)
    status = ds.status.values.ravel().tolist()
    print(f"results: {out} ({info['computed']} points computed, {info['skipped']} already done)")
    print(
        f"points: {status.count('ok')} ok, {status.count('diverged')} diverged,"
        f" {status.count('failed')} failed; point files in {points_dir}"
    )
    for err in sorted({str(e) for e in ds.error.values.ravel() if e}):
        print(f"  {err}", file=sys.stderr)
    return 0 if status.count("ok") == len(status) else 1


def cmd_check(args) -> int:
    from cdtp.analysis import propositions
    from cdtp.record.evaluation import held_out_summary

    ds = _open(args.file)
    if _is_sweep(ds):
        return _check_sweep(args, ds)
    checks = propositions.check_all(ds) if "loss" in ds and ds.sizes.get("cycle", 0) else {}
    failures = propositions.violations(checks)
    unmet = propositions.premises_not_met(checks)
    stats = {name: propositions.counts(res) for name, res in checks.items()}
    held_out = held_out_summary(ds)
    if args.json:
        out = {}
        for name, res in checks.items():
            s = stats[name]
            met = s["holds"] + s["violated"]
            worst = np.fmax(s["worst_holds"], s["worst_violated"])
            out[name] = {
                "claim": res.attrs["claim"],
                "tolerance": float(res.tolerance),
                "applicable": met,  # cells whose premises are met
                "failed": s["violated"],
                "worst_residual": None if np.isnan(worst) else float(worst),
                "states": {k: s[k] for k in ("holds", "violated", "premise_not_met", "na")},
                "premises_not_met": s["premises"],
                "na_reasons": s["na_reasons"],
            }
        print(json.dumps({"file": args.file, "checks": out, "failures": failures,
                          "premises_not_met": unmet,
                          "reading": propositions.summary(checks),
                          "held_out": held_out}, indent=2))
    else:
        print(propositions.report(checks))
        print()
        print("\n".join(propositions.summary(checks)))
        print()
        print("\n".join(failures) or "no violation: wherever a premise was met, its"
              " conclusion held")
        if held_out:
            print()
            print("\n".join(held_out))
    diverged = _status(ds)
    if diverged:
        print(diverged, file=sys.stderr)
    if not any(s["holds"] + s["violated"] + s["premise_not_met"] for s in stats.values()):
        print(
            "no check could be evaluated on this file (nothing recorded that they need):"
            " nothing was verified",
            file=sys.stderr,
        )
        return 1
    if args.strict and unmet:
        print("--strict: premises not met:\n" + "\n".join(unmet), file=sys.stderr)
        return 1
    return 1 if failures or diverged else 0


def cmd_plot(args) -> int:
    from cdtp.analysis import plots

    ds = _open(args.file)
    directory = _check_output(Path(args.output or Path(args.file).with_suffix("")),
                              [args.file], suffix=None, folder=True)
    if not _is_sweep(ds) and not ("loss" in ds and ds.sizes.get("cycle", 0)):
        print(f"{args.file}: no cycle was completed ({_status(ds) or 'empty run'}): nothing to"
              " plot", file=sys.stderr)
        return 1
    save = plots.save_sweep if _is_sweep(ds) else plots.save_all
    for p in save(ds, directory):
        print(p)
    if _status(ds):
        print(_status(ds), file=sys.stderr)
    return 0


def _info_sweep(args, ds) -> int:
    _, points = _points(ds)
    keys = sweep_dims(ds)
    print(f"file: {args.file}")
    if "circuit" in ds.attrs:
        circuit = json.loads(ds.attrs["circuit"])
        print(f"circuit: {circuit['name']} sizes {circuit['sizes']} {circuit['nonlinearity']}")
    print(
        "sweep over: "
        + "; ".join(
            f"{ds[k].attrs.get('key', k)} = "
            + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in ds[k].values.tolist())
            for k in keys
        )
    )
    status = [st for _, st, _, _ in points]
    print(
        f"points: {len(points)} ({status.count('ok')} ok, {status.count('diverged')}"
        f" diverged, {status.count('failed')} failed)"
    )
    if "loss" in ds:
        final = (
            ds.loss.isel(cycle=slice(-5, None)).mean("cycle", skipna=False).stack(point=keys).values
        )
        for (coords, st, err, _), loss in zip(points, final):
            print(
                f"  {_where(coords)}: {st}, loss of the last 5 cycles {loss:.4g}"
                + (f" ({err})" if err else "")
            )
    print("variables: " + ", ".join(f"{k}{tuple(v.dims)}" for k, v in ds.data_vars.items()))
    return 0


def _info_equations(path: str) -> int:
    """Print the equations of a circuit (or a scenario's circuit) as Brian2 holds them, from a
    build on the numpy target that is never run (no compilation, no simulation)."""
    import numpy as np

    from cdtp.brian.engine import build
    from cdtp.model.circuit import load_circuit, read_toml
    from cdtp.model.gating import Schedule

    data = read_toml(path, "circuit or scenario")
    if "circuit" in data and "sizes" not in data:
        from cdtp.study.scenario import load_scenario

        scenario = load_scenario(path)
        circuit, schedule, dt = scenario.circuit, scenario.schedule, scenario.dt
        origin = f"scenario {path}: γ {schedule.gamma.shape}, dt = {dt * 1e3:g} ms"
    else:
        circuit, schedule, dt = load_circuit(path), Schedule(), 1e-4
        origin = (f"circuit file {path}: shown with the default schedule (γ"
                  f" {schedule.gamma.shape}) and dt = 0.1 ms")
    try:
        run = build(circuit, schedule, np.zeros((1, circuit.sizes[0])),
                    np.zeros((1, circuit.sizes[-1])), dt=dt, device="numpy")
    except ValueError as exc:
        raise BadInput(f"{path}: {exc}") from None
    print(origin)
    print(run.equations)
    return 0


def point_table(ds) -> list[dict]:
    """One row per point of a combined sweep: the swept values (by dimension name), status,
    diverged (0/1), the loss of the last cycle and its mean over all cycles and over the last 5,
    the online accuracy (argmax of the output against one-hot labels, mean over all cycles and
    over the last 20 %) when the labels are one-hot, the last value of every ``test_*``
    variable, and each check's passed fraction and median residual."""
    dims = sweep_dims(ds)
    names = sorted({v.rsplit("_", 2)[0] for v in ds.data_vars if v.endswith("_passed_fraction")})
    flat = ds.stack(point=dims)
    tests = [v for v in ds.data_vars if v.startswith("test_")]
    rows = []
    for i in range(flat.sizes["point"]):
        p = flat.isel(point=i)
        row = {d: p[d].item() for d in dims}
        row["status"] = str(p.status.item())
        row["diverged"] = int(row["status"] == "diverged")
        if "loss" in p:
            loss = p.loss.values
            loss = loss[np.isfinite(loss)]
            row["loss_final"] = float(loss[-1]) if len(loss) else np.nan
            row["loss_mean"] = float(np.mean(loss)) if len(loss) else np.nan
            row["loss_last5_mean"] = float(np.mean(loss[-5:])) if len(loss) else np.nan
        if "output" in p and "label" in p:
            out, lab = p.output.values, p.label.values
            ok = np.all(np.isfinite(lab), axis=1) & np.all(np.isfinite(out), axis=1)
            out, lab = out[ok], lab[ok]
            if len(lab) and np.all(np.isin(lab, (0.0, 1.0))) and np.all(lab.sum(axis=1) == 1):
                correct = out.argmax(axis=1) == lab.argmax(axis=1)
                tail = max(1, len(correct) // 5)
                row["accuracy_online"] = float(np.mean(correct))
                row["accuracy_online_last20pct"] = float(np.mean(correct[-tail:]))
        for v in tests:
            vals = np.asarray(p[v].values, dtype=float).ravel()
            vals = vals[np.isfinite(vals)]
            row[f"{v}_final"] = float(vals[-1]) if len(vals) else np.nan
        for n in names:
            row[f"{n}_passed_fraction"] = float(p[f"{n}_passed_fraction"])
            row[f"{n}_median_residual"] = float(p[f"{n}_median_residual"])
        row["error"] = str(p.error.item())
        rows.append(row)
    return rows


def _write_csv_atomically(path: Path, rows: list[dict]) -> None:
    import csv
    import tempfile

    fields = list(dict.fromkeys(k for row in rows for k in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else v)
                                 for k, v in row.items()})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def cmd_info(args) -> int:
    if str(args.file).endswith(".toml"):
        return _info_equations(args.file)
    ds = _open(args.file)
    if args.table:
        if not _is_sweep(ds):
            raise BadInput(f"--table: {args.file} is one run, not a sweep (cdtp sweep -o …)")
        table = Path(args.table)
        if table.suffix != ".csv" or table.is_dir() or table.resolve() == Path(args.file).resolve():
            raise BadInput(f"--table: {args.table}; allowed: a .csv file that is not the input")
        rows = point_table(ds)
        _write_csv_atomically(table, rows)
        print(f"table: {table} ({len(rows)} points)", file=sys.stderr)
    if _is_sweep(ds):
        return _info_sweep(args, ds)
    a = ds.attrs
    circuit = json.loads(a["circuit"])
    print(f"file: {args.file}")
    print(f"circuit: {circuit['name']} sizes {circuit['sizes']} {circuit['nonlinearity']}")
    print(f"schedule: {a['schedule']}")
    if "steps_per_cycle" in a:
        per_cycle = f"{a['steps_per_cycle']} steps per cycle"
    else:
        p = float(a["period_steps"])
        per_cycle = (f"{p:.6g} steps per period (cycles of {int(np.floor(p))} or"
                     f" {int(np.ceil(p))} steps)")
    print(f"dt: {a['dt']} s, {per_cycle}, device {a['device']}")
    planned = a.get("cycles_planned")
    print(f"cycles completed: {a['cycles_completed']}"
          + (f" of {planned}" if planned is not None else "")
          + f"; diverged: {a.get('diverged') or 'no'}"
          + f"; interrupted: {a.get('interrupted') or 'no'}")
    if "loss" in ds and ds.sizes.get("cycle", 0):
        print(f"loss: first cycle {float(ds.loss[0]):.4g}, last {float(ds.loss[-1]):.4g}")
    from cdtp.record.evaluation import held_out_summary

    for line in held_out_summary(ds):
        print(line)
    print("variables: " + ", ".join(f"{k}{tuple(v.dims)}" for k, v in ds.data_vars.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdtp", description="Continuous-time DTP circuits.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario file")
    run.add_argument("scenario")
    run.add_argument("-o", "--output", help="results NetCDF file (default results/NAME.nc)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key by dotted path (repeatable)",
    )
    run.add_argument("--figures", help="folder for the figures (default: next to the file)")
    run.add_argument("--no-figures", action="store_true",
                     help="write the results file and the report only (cdtp plot draws the"
                          " figures later)")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar (there is none either when stderr is not a terminal)")
    run.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a scenario's [sweep] grid")
    sw.add_argument("scenario")
    sw.add_argument("-o", "--output", help="combined NetCDF file (default results/NAME_sweep.nc)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=None,
        help="local Dask worker processes (default 2; 0: run serially here)",
    )
    where.add_argument("--scheduler", help="address of a running Dask scheduler")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sw.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar (there is none either when stderr is not a terminal)")
    sw.add_argument(
        "--batch", action="store_true",
        help="simulate points that differ only in gamma / plasticity_gate parameters together,"
             " as one Brian2 network (faster; records per-cycle output, label and loss only:"
             " no traces, snapshots or proposition checks)",
    )
    sw.set_defaults(func=cmd_sweep)
    check = sub.add_parser("check", help="check the propositions on a results file")
    check.add_argument("file")
    check.add_argument("--json", action="store_true")
    check.add_argument(
        "--strict", action="store_true",
        help="exit 1 also where a proposition's premise was not met (default: only on a"
             " violation, i.e. a premise met and its conclusion missed)",
    )
    check.set_defaults(func=cmd_check)
    plot = sub.add_parser("plot", help="draw the standard figures of a results file")
    plot.add_argument("file")
    plot.add_argument("-o", "--output")
    plot.set_defaults(func=cmd_plot)
    info = sub.add_parser(
        "info", help="describe a results file, or show a circuit's equations (.toml)")
    info.add_argument("file")
    info.add_argument("--table", metavar="OUT.csv",
                      help="write one row per sweep point (swept values, loss, accuracy,"
                           " diverged, proposition pass fractions) as CSV")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    from cdtp.model.circuit import ConfigError

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # (output to a pipe is buffered: a closed reader shows up here)
        return code
    except (ConfigError, BadInput) as exc:
        return _bad_input(str(exc))
    except KeyboardInterrupt:
        print("\ncdtp: interrupted: nothing written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of the output went away (`cdtp check f.nc | head`): end quietly, as a
        # tool killed by SIGPIPE does; what is still buffered for stdout goes nowhere, so the
        # interpreter's final flush cannot fail again
        _silence_stdout()
        return 141


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (captured, closed)
        pass


if __name__ == "__main__":
    sys.exit(main())
