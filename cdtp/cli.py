"""The ``cdtp`` command.

    cdtp run SCENARIO [-o FILE] [--set key=value ...] [--figures DIR]
    cdtp sweep SCENARIO [--workers N | --scheduler ADDRESS] [--batch] [-o FILE]
               [--set key=value ...]
    cdtp check FILE [--json] [--strict]
    cdtp plot FILE [-o DIR]
    cdtp info FILE

Exit codes: 0 done (``check``: no proposition violated — wherever a premise was met, its
conclusion held), 1 a violation (``check --strict``: also a premise not met) or the run
diverged, 2 bad input (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["main"]


class BadInput(Exception):
    """A file or argument the command cannot use (exit code 2)."""


class _Progress:
    def __init__(self, label: str, unit: str = "cycles"):
        self.label, self.unit = label, unit

    def __call__(self, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {self.unit}"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _bad_input(message: str) -> int:
    print(f"cdtp: error: {message}", file=sys.stderr)
    return 2


def _open(path: str):
    from cdtp.recording import load

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{path}: no such results file")
    try:
        ds = load(p)
    except Exception as exc:  # not NetCDF
        raise BadInput(f"{path}: not a NetCDF results file ({exc})") from None
    if not _is_sweep(ds) and ("circuit" not in ds.attrs or "steps_per_cycle" not in ds.attrs):
        raise BadInput(f"{path}: not a cdtp results file (no circuit in its attributes)")
    return ds


def _is_sweep(ds) -> bool:
    """A combined sweep (:func:`cdtp.sweep.combine`) rather than one run."""
    return "swept_keys" in ds.attrs


def _points(ds):
    """(coords, status, error, {check: (passed fraction, median residual)}) per grid point."""
    keys = json.loads(ds.attrs["swept_keys"])
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
        coords = {k: row[k].item() for k in keys}
        checks = {
            n: (float(row[f"{n}_passed_fraction"]), float(row[f"{n}_median_residual"]))
            for n in names
        }
        out.append((coords, str(row.status.item()), str(row.error.item()), checks))
    return keys, out


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


def _kind(path: str) -> str:
    import tomllib

    try:
        return str(tomllib.loads(Path(path).read_text()).get("kind", "circuit"))
    except (OSError, tomllib.TOMLDecodeError):
        return "circuit"  # the scenario loader reports the problem with file and key


def _run_rnn(args) -> int:
    from cdtp.recording import save
    from cdtp.reference import rnn_experiment
    from cdtp.scenario import apply_overrides

    if args.set:
        import tomllib

        data = apply_overrides(tomllib.loads(Path(args.scenario).read_text()), args.set)
        try:
            config = rnn_experiment.RNNExperimentConfig.from_mapping(data)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{args.scenario}: {exc}") from None
    else:
        try:
            config = rnn_experiment.load_config(args.scenario)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    out = Path(args.output or f"results/{Path(args.scenario).stem}.nc")
    out.parent.mkdir(parents=True, exist_ok=True)
    ds = rnn_experiment.run(config)
    save(ds, out)
    print(f"results: {out}")
    print(ds)
    return 1 if ds.attrs.get("diverged") in (1, True, "1", "True") else 0


def cmd_run(args) -> int:
    from cdtp import plots, propositions
    from cdtp.scenario import load_scenario

    if _kind(args.scenario) == "rnn":
        return _run_rnn(args)
    scenario = load_scenario(args.scenario, args.set)
    out = Path(args.output or f"results/{scenario.name}.nc")
    out.parent.mkdir(parents=True, exist_ok=True)
    ds = scenario.simulate(path=out, progress=_Progress(f"run {scenario.name}"))
    with ds:
        ds = ds.load()
    checks = propositions.check_all(ds)
    text = propositions.report(checks)
    reading = "\n".join(propositions.summary(checks))
    report_path = out.with_suffix(".propositions.txt")
    report_path.write_text(text + "\n\n" + reading + "\n")
    figures = Path(args.figures) if args.figures else out.with_suffix("")
    paths = plots.save_all(ds, figures, checks)
    loss = ds.loss.values
    k = max(1, min(20, len(loss) // 5))
    print(f"results: {out}")
    print(f"propositions report: {report_path}")
    print(f"figures: {', '.join(str(p) for p in paths)}")
    print(
        f"loss, mean of the first {k} cycles: {np.mean(loss[:k]):.4g}; of the last {k}:"
        f" {np.mean(loss[-k:]):.4g}"
    )
    print(text)
    print()
    print(reading)
    if ds.attrs["diverged"]:
        print(f"the run diverged: {ds.attrs['diverged']}", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args) -> int:
    from cdtp.recording import save
    from cdtp.sweep import combine, grid, sweep

    grid(args.scenario, args.set)  # validate every point before anything is written
    out = Path(args.output or f"results/{Path(args.scenario).stem}_sweep.nc")
    out.parent.mkdir(parents=True, exist_ok=True)
    points_dir = out.with_name(out.stem + "_points")
    info = sweep(
        args.scenario,
        points_dir,
        overrides=args.set,
        workers=args.workers,
        scheduler=args.scheduler,
        batch=args.batch,
        progress=_Progress(f"sweep {out.stem}", "points"),
    )
    ds = combine(info["keys"], info["points"], points_dir)
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
    from cdtp import propositions

    ds = _open(args.file)
    if _is_sweep(ds):
        return _check_sweep(args, ds)
    checks = propositions.check_all(ds)
    failures = propositions.violations(checks)
    unmet = propositions.premises_not_met(checks)
    stats = {name: propositions.counts(res) for name, res in checks.items()}
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
                          "reading": propositions.summary(checks)}, indent=2))
    else:
        print(propositions.report(checks))
        print()
        print("\n".join(propositions.summary(checks)))
        print()
        print("\n".join(failures) or "no violation: wherever a premise was met, its"
              " conclusion held")
    diverged = ds.attrs.get("diverged", "")
    if diverged:
        print(f"the run diverged: {diverged}", file=sys.stderr)
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
    from cdtp import plots

    ds = _open(args.file)
    directory = Path(args.output or Path(args.file).with_suffix(""))
    save = plots.save_sweep if _is_sweep(ds) else plots.save_all
    for p in save(ds, directory):
        print(p)
    return 0


def _info_sweep(args, ds) -> int:
    keys, points = _points(ds)
    print(f"file: {args.file}")
    if "circuit" in ds.attrs:
        circuit = json.loads(ds.attrs["circuit"])
        print(f"circuit: {circuit['name']} sizes {circuit['sizes']} {circuit['nonlinearity']}")
    print(
        "sweep over: "
        + "; ".join(
            f"{k} = "
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


def cmd_info(args) -> int:
    ds = _open(args.file)
    if _is_sweep(ds):
        return _info_sweep(args, ds)
    a = ds.attrs
    circuit = json.loads(a["circuit"])
    print(f"file: {args.file}")
    print(f"circuit: {circuit['name']} sizes {circuit['sizes']} {circuit['nonlinearity']}")
    print(f"schedule: {a['schedule']}")
    print(f"dt: {a['dt']} s, {a['steps_per_cycle']} steps per cycle, device {a['device']}")
    print(f"cycles completed: {a['cycles_completed']}; diverged: {a['diverged'] or 'no'}")
    if "loss" in ds:
        print(f"loss: first cycle {float(ds.loss[0]):.4g}, last {float(ds.loss[-1]):.4g}")
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
    run.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run a scenario's [sweep] grid")
    sw.add_argument("scenario")
    sw.add_argument("-o", "--output", help="combined NetCDF file (default results/NAME_sweep.nc)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=2, help="local Dask worker processes (0: run serially here)"
    )
    where.add_argument("--scheduler", help="address of a running Dask scheduler")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
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
    info = sub.add_parser("info", help="describe a results file")
    info.add_argument("file")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    from cdtp.circuit import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, BadInput) as exc:
        return _bad_input(str(exc))


if __name__ == "__main__":
    sys.exit(main())
