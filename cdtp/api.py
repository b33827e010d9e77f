"""The handful of functions a user needs, re-exported by ``import cdtp``.

Each takes the path the ``cdtp`` command takes, so that a script and the command give the same
files and numbers: :func:`run` is ``cdtp run`` without the report and figures,
:func:`run_sweep` is ``cdtp sweep``, :func:`check` and :func:`report` are ``cdtp check``,
:func:`open_result` is what ``cdtp check``, ``plot`` and ``info`` open. Brian2, xarray and
matplotlib are imported only when a function needs them, so ``import cdtp`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["check", "load_circuit", "load_scenario", "open_result", "report", "run",
           "run_sweep"]


def load_scenario(path, overrides=None):
    """Read, override and validate a scenario file.

    Parameters
    ----------
    path : str or path-like
        A scenario TOML file (``scenarios/*.toml``).
    overrides : list of str, optional
        ``"key=value"`` strings by dotted path, value in TOML syntax, as ``--set`` takes them
        (``['gamma.frequency="8 Hz"', "cycles=20"]``).

    Returns
    -------
    cdtp.study.scenario.Scenario
        The validated scenario (circuit, schedule, task, what to record).

    Raises
    ------
    cdtp.model.circuit.ConfigError
        A value that does not validate, naming the file, the key, the value and what is
        allowed.
    """
    from cdtp.study.scenario import load_scenario as _load

    return _load(path, list(overrides or []))


def load_circuit(path):
    """Read and validate a circuit file.

    Parameters
    ----------
    path : str or path-like
        A circuit TOML file (``circuits/*.toml``).

    Returns
    -------
    cdtp.model.circuit.CircuitConfig

    Raises
    ------
    cdtp.model.circuit.ConfigError
        A value that does not validate, naming the file, the key, the value and what is
        allowed.
    """
    from cdtp.model.circuit import load_circuit as _load

    return _load(path)


def _output_path(output, scenario) -> Path:
    from cdtp.study.cli import BadInput, _check_output

    try:
        return _check_output(Path(output), scenario.files, option="output")
    except BadInput as exc:
        raise ValueError(str(exc)) from None


def run(scenario, output=None, *, overrides=None, progress=None):
    """Run a scenario, as ``cdtp run`` does, and return its recording.

    Parameters
    ----------
    scenario : str, path-like or cdtp.study.scenario.Scenario
        A scenario file, or one loaded by :func:`load_scenario`. A ``kind = "rnn"`` file runs
        seed 002's RNN experiment (:mod:`cdtp.rnn.experiment`), as ``cdtp run`` does.
    output : str or path-like, optional
        Write the results file here (a ``.nc`` path, written atomically; the checks of
        ``cdtp run -o`` apply: it may not be the scenario, circuit or ``.npz`` file). Without
        it nothing is written.
    overrides : list of str, optional
        ``"key=value"`` overrides (only with a path; see :func:`load_scenario`).
    progress : callable, optional
        ``progress(cycles_done, cycles_planned)``, called as the run goes.

    Returns
    -------
    xarray.Dataset
        The recording, in memory (the layout of :mod:`cdtp.record.dataset`; with a held-out set, the
        per-epoch ``test_accuracy`` / ``test_loss`` of :mod:`cdtp.record.evaluation`).

    Raises
    ------
    cdtp.model.circuit.ConfigError
        A scenario that does not validate; nothing is written.
    ValueError
        An output path that ``cdtp run -o`` would refuse (not ``.nc``, a folder, in a folder
        that is not writable, or one of the input files); nothing is written.

    Examples
    --------
    >>> ds = cdtp.run("scenarios/quickstart.toml", overrides=["cycles=5"])  # doctest: +SKIP
    >>> float(ds.test_loss[-1])  # doctest: +SKIP
    """
    from cdtp.record.dataset import remove_stale_temporaries
    from cdtp.study.scenario import Scenario

    if not isinstance(scenario, Scenario):
        from cdtp.study.cli import _kind

        if _kind(str(scenario), list(overrides or [])) == "rnn":
            return _run_rnn(scenario, output, overrides)
        scenario = load_scenario(scenario, overrides)
    elif overrides:
        raise ValueError("overrides apply to a scenario file; got a loaded Scenario (use"
                         " cdtp.load_scenario(path, overrides))")
    path = None
    if output is not None:
        path = _output_path(output, scenario)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, path.name)
    ds = scenario.simulate(path=path, progress=progress)
    with ds:
        return ds.load()


def _run_rnn(path, output, overrides):
    """A ``kind = "rnn"`` file: seed 002's RNN experiment (:mod:`cdtp.rnn.experiment`),
    as ``cdtp run`` runs it."""
    from cdtp.model.circuit import read_toml
    from cdtp.record.dataset import save
    from cdtp.rnn import experiment as rnn_experiment
    from cdtp.study.cli import BadInput, _check_output
    from cdtp.study.scenario import apply_overrides

    data = apply_overrides(read_toml(path, "scenario"), list(overrides or []))
    try:
        config = rnn_experiment.RNNExperimentConfig.from_mapping(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: kind: 'rnn' (an RNN experiment file), but: {exc}") from None
    out = None
    if output is not None:
        try:
            out = _check_output(Path(output), [path], option="output")
        except BadInput as exc:
            raise ValueError(str(exc)) from None
    ds = rnn_experiment.run(config)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        save(ds, out)
    return ds


def run_sweep(scenario, output, *, overrides=None, workers=0, batch=False):
    """Run a scenario's ``[sweep]`` grid, as ``cdtp sweep`` does, and return the combined
    Dataset.

    One file per grid point goes into ``<output stem>_points/`` next to ``output``; run again,
    the points already done are skipped.

    Parameters
    ----------
    scenario : str or path-like
        A scenario file with a ``[sweep]`` table.
    output : str or path-like
        The combined ``.nc`` file.
    overrides : list of str, optional
        ``"key=value"`` overrides applied to every point.
    workers : int
        0 (default): serially in this process; N: a Dask LocalCluster of N processes.
    batch : bool
        Simulate points that differ only in γ / plasticity-gate parameters as one network
        (per-cycle output, label and loss only).

    Returns
    -------
    xarray.Dataset
        One dimension per swept key (see :func:`cdtp.study.sweep.combine`).
    """
    from cdtp.record.dataset import save
    from cdtp.study.cli import BadInput, _check_output
    from cdtp.study.sweep import combine, grid, sweep

    _, points = grid(scenario, list(overrides or []))
    inputs = sorted({f for p in points for f in p["files"]})
    try:
        out = _check_output(Path(output), inputs, option="output")
        points_dir = _check_output(out.with_name(out.stem + "_points"), inputs, suffix=None,
                                   folder=True, option="output")
    except BadInput as exc:
        raise ValueError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    info = sweep(scenario, points_dir, overrides=list(overrides or []), workers=workers,
                 batch=batch)
    ds = combine(info["keys"], info["points"], points_dir)
    save(ds, out)
    return ds


def check(ds, checks=None):
    """Evaluate the propositions (P1–P8, GN, INV) on a recording, as ``cdtp check`` does.

    Parameters
    ----------
    ds : xarray.Dataset or str or path-like
        A recording (from :func:`run` or :func:`open_result`) or the path of a results file.
    checks : list of str, optional
        Names of the checks to run (default: every check whose inputs were recorded).

    Returns
    -------
    dict of str to xarray.Dataset
        Per check, its residual, premise and state in every (cycle, layer) cell
        (:mod:`cdtp.analysis.propositions`); give it to :func:`report` or
        :func:`cdtp.analysis.plots.plot_residuals`.
    """
    from cdtp.analysis.propositions import check_all

    if isinstance(ds, str | Path):
        ds = open_result(ds)
    return check_all(ds, checks)


def report(ds_or_checks) -> str:
    """The text ``cdtp check`` prints: the table of proposition checks, a plain-language
    reading, the violations (or that there are none) and, when recorded, the held-out accuracy
    or loss by epoch.

    Parameters
    ----------
    ds_or_checks : xarray.Dataset or dict
        A recording, or the result of :func:`check`.

    Returns
    -------
    str
    """
    import xarray as xr

    from cdtp.analysis import propositions
    from cdtp.record.evaluation import held_out_summary

    checks = check(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    parts = [propositions.report(checks), "\n".join(propositions.summary(checks)),
             "\n".join(propositions.violations(checks))
             or "no violation: wherever a premise was met, its conclusion held"]
    if isinstance(ds_or_checks, xr.Dataset):
        parts.append("\n".join(held_out_summary(ds_or_checks)))
    return "\n\n".join(p for p in parts if p) + "\n"


def open_result(path):
    """Open a results file (one run, or a combined sweep) into memory, its attributes checked
    as ``cdtp check``, ``plot`` and ``info`` check them.

    Parameters
    ----------
    path : str or path-like
        A ``.nc`` file written by ``cdtp run``, ``cdtp sweep`` or :func:`run`.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    ValueError
        When the file is missing, not NetCDF, or not a cdtp results file (naming the
        attribute at fault).
    """
    from cdtp.study.cli import BadInput, _open

    try:
        return _open(str(path))
    except BadInput as exc:
        raise ValueError(str(exc)) from None
