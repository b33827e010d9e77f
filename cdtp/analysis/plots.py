"""Figures of recorded runs (matplotlib; axis labels come from the variables' attributes).

Every function takes Datasets (or the check results of :mod:`cdtp.analysis.propositions`) and
returns the :class:`matplotlib.figure.Figure`; nothing is written unless you save it. Never imports
brian2.
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr

from cdtp.record.dataset import layer_traces, schedule_of

__all__ = [
    "label_of",
    "plot_cycle",
    "plot_held_out",
    "plot_learning_curve",
    "plot_premise",
    "plot_raster",
    "plot_residuals",
    "plot_sweep_heatmap",
    "plot_sweep_learning_curves",
    "plot_weight_change",
    "save_all",
    "save_sweep",
    "sweep_summaries",
]


def _figure(*args, **kwargs):
    import matplotlib.pyplot as plt

    # constrained layout keeps titles, labels and outside legends inside the saved figure
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(*args, **kwargs)


def _wrap(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (existing breaks kept)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def label_of(da: xr.DataArray) -> str:
    """``long_name [units]`` of a variable (its name when it has no attributes)."""
    name = da.attrs.get("long_name", da.name or "")
    units = da.attrs.get("units")
    return f"{name} [{units}]" if units not in (None, "", "1") else str(name)


def plot_cycle(ds: xr.Dataset, cycle: int = 0, layer: int | None = None, units=(0, 1)):
    """Anatomy of one γ cycle: on top γ_l of every layer (a per-layer lag, a travelling wave,
    shows as shifted curves) with the hold gate c(γ) and plasticity gate p of ``layer``;
    below, a, h, τ and u of the chosen units of that layer (default: the top layer), phase
    boundaries marked. The cycle's own first and last step are used, so a cycle one step
    longer or shorter than the next (a period that is not a whole number of steps) is drawn
    as it ran."""
    if "time" not in ds.dims:
        raise ValueError("the recording has no traces (record some variables)")
    L = int(ds.gate_layer.max()) if "gate_layer" in ds.dims else int(ds.layer.max())
    layer = L if layer is None else layer
    dt = float(ds.attrs["dt"])
    starts = schedule_of(ds).cycle_starts(dt, cycle + 1)
    t0, t1 = starts[cycle] * dt, starts[cycle + 1] * dt
    window = ds.sel(time=slice(t0 + dt / 2, t1 + dt / 2))
    if window.sizes["time"] == 0:
        raise ValueError(f"cycle {cycle} was not traced")
    fig, (top, bottom) = _figure(2, 1, sharex=True, figsize=(7, 5.5), layout="constrained",
                                 gridspec_kw={"height_ratios": [1.2, 2]})
    t_ms = (window.time.values - t0) * 1e3
    if "gamma" in window:
        for j, l in enumerate(window.gate_layer.values):
            top.plot(t_ms, window.gamma.sel(gate_layer=l).values, drawstyle="steps-pre",
                     color=f"C{j}", lw=1.4, label=f"γ_{int(l)}")
    for name, style in (("hold", ":"), ("plasticity", "--")):
        if name in window:
            top.plot(t_ms, window[name].sel(gate_layer=max(layer, 1)).values,
                     drawstyle="steps-pre", color="black", ls=style, lw=0.9,
                     label=f"{window[name].attrs['long_name']}, layer {max(layer, 1)}")
    top.set_ylabel("gate")
    top.set_ylim(-0.05, 1.1)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    traces = layer_traces(window, layer)
    styles = {"a": "-", "h": ":", "target": "--", "u": "-."}
    for j, unit in enumerate(units):
        if unit not in traces.unit.values:
            continue
        for var, ls in styles.items():
            if var in traces and np.any(np.isfinite(traces[var].sel(unit=unit).values)):
                bottom.plot(t_ms, traces[var].sel(unit=unit).values, ls, color=f"C{j}",
                            label=f"{var} (unit {unit})")
    if "boundary_time" in ds and cycle in ds.cycle.values:
        for t in ds.boundary_time.sel(cycle=cycle).values:
            if t0 < t < t1:
                for ax in (top, bottom):
                    ax.axvline((t - t0) * 1e3, color="grey", lw=0.6, ls=":")
    bottom.set_xlabel("time within the cycle [ms]")
    bottom.set_ylabel(f"layer {layer} activity")
    bottom.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)
    fig.suptitle(f"γ cycle {cycle} ({(t1 - t0) * 1e3:g} ms, steps {starts[cycle]}–"
                 f"{starts[cycle + 1] - 1})")
    return fig


def plot_raster(ds: xr.Dataset, cycles=(0, 1)):
    """Spike raster of a spiking run (``[record] spikes``) over cycles ``cycles[0]`` …
    ``cycles[1] − 1``, one row per recorded neuron grouped by population (forward σ(m) of
    layers 0…L−1, feedback σ(u) of layers 2…L), with the feedback phases shaded (the hold gate
    of layer 1 below ½, when gates were traced, else the recorded phase boundaries) and γ of
    every layer on top."""
    if "spike_time" not in ds:
        raise ValueError("the recording has no spikes (a spiking circuit with [record] spikes"
                         " > 0)")
    dt = float(ds.attrs["dt"])
    starts = schedule_of(ds).cycle_starts(dt, cycles[1])
    t0, t1 = starts[cycles[0]] * dt, starts[cycles[1]] * dt
    fig, (top, bottom) = _figure(2, 1, sharex=True, figsize=(7.5, 6),
                                 gridspec_kw={"height_ratios": [1, 4]})

    def shade(ax):
        if "hold" in ds and "time" in ds.dims:
            w = ds.sel(time=slice(t0, t1 + dt / 2))
            t_ms = (w.time.values - t0) * 1e3
            low = w.hold.sel(gate_layer=1).values < 0.5
            ax.fill_between(t_ms, 0, 1, where=low, step="pre", color="0.9", lw=0,
                            transform=ax.get_xaxis_transform(), label="feedback phase")
        elif "boundary_time" in ds:
            for c in range(*cycles):
                if c in ds.cycle.values:
                    b = ds.boundary_time.sel(cycle=c)
                    ax.axvspan((float(b.sel(boundary="feedback_start")) - t0) * 1e3,
                               (starts[c + 1] * dt - t0) * 1e3, color="0.9", lw=0,
                               label="feedback phase" if c == cycles[0] else None)

    shade(top)
    shade(bottom)
    if "gamma" in ds and "time" in ds.dims:
        w = ds.sel(time=slice(t0, t1 + dt / 2))
        for j, l in enumerate(w.gate_layer.values):
            top.plot((w.time.values - t0) * 1e3, w.gamma.sel(gate_layer=l).values,
                     drawstyle="steps-pre", color=f"C{j}", lw=1.2, label=f"γ_{int(l)}")
    if "plasticity" in ds and "time" in ds.dims:
        w = ds.sel(time=slice(t0, t1 + dt / 2))
        top.plot((w.time.values - t0) * 1e3, w.plasticity.sel(gate_layer=1).values, "--",
                 drawstyle="steps-pre", color="black", lw=0.9, label="plasticity gate p")
    top.set_ylim(-0.05, 1.1)
    top.set_ylabel("γ")
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    # rows: populations in order, within each by unit then member
    pop = ds.population.values.astype(str)
    order = np.lexsort((ds.member.values, ds.spiking_unit.values, ds.spiking_layer.values,
                        pop == "feedback"))
    row = np.empty(len(order), dtype=int)
    row[order] = np.arange(len(order))
    keep = (ds.spike_time.values >= t0) & (ds.spike_time.values < t1 + dt / 2)
    times = (ds.spike_time.values[keep] - t0) * 1e3
    neurons = ds.spike_neuron.values[keep]
    for k, (kind, l) in enumerate(dict.fromkeys(zip(pop[order], ds.spiking_layer.values[order]))):
        mine = (pop[neurons] == kind) & (ds.spiking_layer.values[neurons] == l)
        bottom.scatter(times[mine], row[neurons[mine]], s=1.5, marker="|", color=f"C{k}",
                       label=f"{kind} {l}")
    bottom.set_xlabel(f"time from the start of cycle {cycles[0]} [ms]")
    bottom.set_ylabel("recorded neuron")
    bottom.set_ylim(-1, len(order))
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  markerscale=4)
    fig.suptitle(f"spikes, cycles {cycles[0]}–{cycles[1] - 1}")
    return fig


def plot_learning_curve(ds: xr.Dataset, window: int = 20):
    """Loss of each cycle's example and its running mean over ``window`` cycles; accuracy of
    the cycles' outputs (argmax against one-hot labels) when the task is a classification."""
    fig, ax = _figure(figsize=(6, 3.5))
    loss = ds.loss.values
    k = ds.cycle.values
    ax.semilogy(k, loss, lw=0.5, alpha=0.4, label="per cycle")
    if len(loss) >= window:
        ax.semilogy(k[window - 1:], np.convolve(loss, np.ones(window) / window, "valid"),
                    label=f"mean of {window}")
    ax.set_xlabel(label_of(ds.cycle))
    ax.set_ylabel(label_of(ds.loss))
    labels = ds.label.values
    if np.all(np.isin(labels, (0.0, 1.0))) and np.all(labels.sum(axis=1) == 1):
        correct = (ds.output.values.argmax(axis=1) == labels.argmax(axis=1)).astype(float)
        if len(correct) >= window:
            twin = ax.twinx()
            twin.plot(k[window - 1:], np.convolve(correct, np.ones(window) / window, "valid"),
                      color="C2", label="accuracy")
            twin.set_ylabel(f"online accuracy (mean of {window})")
            twin.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return fig


def _epoch_means(ds: xr.Dataset, values: np.ndarray, epoch_length: int):
    """Means of per-cycle ``values`` over each epoch (a last partial epoch included), with the
    epochs completed at each bin's end."""
    k = ds.cycle.values
    edges = np.arange(0, k[-1] + 1 + epoch_length, epoch_length)
    x, y = [], []
    for lo, hi in itertools.pairwise(edges):
        sel = (k >= lo) & (k < hi)
        if sel.any():
            x.append(min(hi, k[-1] + 1) / epoch_length)
            y.append(float(np.mean(values[sel])))
    return np.array(x), np.array(y)


def plot_held_out(ds: xr.Dataset):
    """The learning curve by epoch: held-out accuracy (classification) or loss (regression)
    of the forward weights after each epoch (:mod:`cdtp.record.evaluation`), with the same measure
    of the training examples as they were presented (online: each example's output in its own
    cycle), averaged over each epoch."""
    import json

    fig, ax = _figure(figsize=(6, 3.5))
    meta = json.loads(ds.attrs.get("held_out", "{}"))
    epoch_length = int(meta.get("epoch_length", ds.sizes.get("cycle", 1)))
    classification = "test_accuracy" in ds
    name = "test_accuracy" if classification else "test_loss"
    ax.plot(ds.epoch.values, ds[name].values, "o-", color="C3", label="held out")
    if "loss" in ds and ds.sizes.get("cycle", 0):
        if classification:
            online = (ds.output.values.argmax(axis=1) == ds.label.values.argmax(axis=1))
            ylabel = "accuracy"
        else:
            online = ds.loss.values
            ylabel = "loss"
        x, y = _epoch_means(ds, online.astype(float), epoch_length)
        ax.plot(x, y, "s--", color="C0", label="training examples (online, epoch mean)")
    else:
        ylabel = "accuracy" if classification else "loss"
    ax.set_xlabel(label_of(ds.epoch))
    ax.set_ylabel(ylabel)
    if classification:
        ax.set_ylim(0, 1)
    ax.set_title(f"held out: {meta.get('n_test', '?')} examples", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_residuals(checks: dict):
    """One panel per check: residual per cycle and layer, the tolerance as a dashed line."""
    names = list(checks)
    cols = 3
    rows = int(np.ceil(len(names) / cols))
    fig, axes = _figure(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        res = checks[name]
        floor = 1e-17  # exact zeros (identities such as P8) drawn on the axis floor
        for l in res.layer.values:
            r = res.residual.sel(layer=l).values
            ax.plot(res.cycle.values, np.where(r > 0, r, np.where(r == 0, floor, np.nan)),
                    "o-", ms=3, label=f"layer {l}")
        ax.axhline(float(res.tolerance), color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(_wrap(f"{name}: {res.attrs['claim']}", 36), fontsize=7)
        ax.set_xlabel("cycle")
        ax.set_ylabel("residual (0 drawn at 1e-17)")
        ax.legend(fontsize=6)
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    return fig


#: Colour and marker of each state of a proposition cell in :func:`plot_premise`.
STATE_STYLE = {
    "holds": ("C2", "o"),
    "violated": ("C3", "X"),
    "premise not met": ("0.55", "s"),
}


def plot_premise(res: xr.Dataset, ax=None):
    """One check's cells: conclusion residual against premise residual.

    x is the ``premise_ratio`` of each (cycle, layer) cell — the largest premise value over its
    tolerance, so x ≤ 1 where every premise is met (an unconditional check such as P8 has
    none: its cells sit at x = 0, drawn on the axis floor); y is the conclusion's residual,
    with its tolerance as a dashed line. The theory predicts no cell in the upper-left
    quadrant (premise met, conclusion missed): those are the ``violated`` cells. Cells that
    are n/a (nothing to place) are counted in the title.
    """
    from cdtp.analysis.propositions import STATE_NAMES

    if ax is None:
        fig, ax = _figure(figsize=(4.5, 3.8))
    else:
        fig = ax.figure
    state = res.state.values.ravel()
    x = res.premise_ratio.values.ravel()
    y = res.residual.values.ravel()
    tol = float(res.tolerance)
    placed = np.isfinite(x) & np.isfinite(y) & (state != 0)
    xs, ys = x[placed], y[placed]
    floor_x = min(min(xs[xs > 0], default=1.0), 1.0) / 10 if len(xs) else 0.1
    floor_y = min(min(ys[ys > 0], default=tol), tol) / 10 if len(ys) else tol / 10
    for code, name in STATE_NAMES.items():
        if name not in STATE_STYLE:
            continue
        sel = placed & (state == code)
        if not sel.any():
            continue
        colour, marker = STATE_STYLE[name]
        ax.scatter(np.maximum(x[sel], floor_x), np.maximum(y[sel], floor_y), s=14,
                   c=colour, marker=marker, label=f"{name} ({int(sel.sum())})", alpha=0.8)
    ax.axvline(1.0, color="k", lw=0.8, ls=":")
    ax.axhline(tol, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    premises = [res[v].attrs["long_name"].split(":")[0] for v in res.data_vars
                if v.startswith("premise_") and v != "premise_ratio"]
    ax.set_xlabel("premise value / tolerance (largest of: " + "; ".join(premises) + ")"
                  if premises else "no premise (unconditional): drawn at the floor",
                  fontsize=7, wrap=True)
    ax.set_ylabel(f"{res.attrs['check']} residual (tolerance dashed)")
    n_na = int(np.sum(state == 0))
    ax.set_title(_wrap(f"{res.attrs['check']}: {res.attrs['claim']}", 52)
                 + (f"\n{n_na} cells n/a" if n_na else ""), fontsize=8)
    if placed.any():
        ax.legend(fontsize=7)
    return fig


def plot_weight_change(ds: xr.Dataset):
    """Recorded ΔW_l over each plasticity window against the DTP prediction of P5
    (η_W (τ_l − a_l) n_{l−1}ᵀ), every synapse of every cycle, one colour per layer."""
    from cdtp.analysis.propositions import weight_change_terms

    layers, recorded, predicted = weight_change_terms(ds)
    fig, ax = _figure(figsize=(4.5, 4.5))
    lim = 0.0
    for l, got, pred in zip(layers, recorded, predicted):
        ax.plot(pred.ravel(), got.ravel(), ".", ms=2, label=f"W_{l}")
        values = np.abs(np.concatenate([np.ravel(pred), np.ravel(got)]))
        values = values[np.isfinite(values)]  # a diverged run records NaN
        if values.size:
            lim = max(lim, float(values.max()))
    ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8, label="equality")
    ax.set_xlabel("predicted ΔW (η_W × DTP update)")
    ax.set_ylabel("recorded ΔW over the plasticity window")
    ax.legend(fontsize=7)
    return fig


def plot_sweep_heatmap(da: xr.DataArray, x: str, y: str):
    """A per-run summary over two swept parameters (other dims must be reduced first)."""
    extra = [d for d in da.dims if d not in (x, y)]
    if extra:
        raise ValueError(f"reduce the dims {extra} first (e.g. .mean({extra!r}))")
    fig, ax = _figure(figsize=(5, 4))
    data = da.transpose(y, x)
    mesh = ax.pcolormesh(np.arange(da.sizes[x] + 1), np.arange(da.sizes[y] + 1), data.values,
                         shading="flat")
    ax.set_xticks(np.arange(da.sizes[x]) + 0.5, [_tick(v) for v in da[x].values])
    ax.set_yticks(np.arange(da.sizes[y]) + 0.5, [_tick(v) for v in da[y].values])
    ax.set_xlabel(label_of(da[x]))
    ax.set_ylabel(label_of(da[y]))
    fig.colorbar(mesh, ax=ax, label=label_of(da))
    return fig


def _tick(value) -> str:
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)


def _swept(ds: xr.Dataset) -> list[str]:
    from cdtp.record.dataset import sweep_dims

    return sweep_dims(ds)


def sweep_summaries(ds: xr.Dataset, window: int = 5) -> dict[str, xr.DataArray]:
    """Per-point summaries of a combined sweep (:func:`cdtp.study.sweep.combine`): the mean loss of
    the last ``window`` cycles and each check's median residual that was evaluated somewhere."""
    out = {}
    if "loss" in ds:
        last = ds.loss.isel(cycle=slice(-window, None)).mean("cycle", skipna=False)
        last.attrs = {"long_name": f"loss, mean of the last {window} cycles"}
        out["final_loss"] = last
    for name in ds.data_vars:
        if name.endswith("_median_residual") and np.any(np.isfinite(ds[name].values)):
            out[name] = ds[name]
    return out


def plot_sweep_learning_curves(ds: xr.Dataset, window: int = 5, max_lines: int = 24):
    """Running-mean loss against cycle, one line per grid point (at most ``max_lines``)."""
    keys = _swept(ds)
    fig, ax = _figure(figsize=(6, 3.5))
    stacked = ds.loss.stack(point=keys)
    for i in range(min(stacked.sizes["point"], max_lines)):
        loss = stacked.isel(point=i).values
        coords = ", ".join(f"{k}={_tick(stacked[k].values[i])}" for k in keys)
        w = min(window, len(loss))
        ax.semilogy(ds.cycle.values[w - 1:], np.convolve(loss, np.ones(w) / w, "valid"),
                    lw=1, label=coords)
    ax.set_xlabel(label_of(ds.cycle))
    ax.set_ylabel(f"{label_of(ds.loss)} (mean of {window})")
    ax.legend(fontsize=6, ncol=2)
    return fig


def _save_figures(figures: dict, directory) -> list:
    """Draw each ``name → make()`` figure into ``directory/name.png``; returns the paths."""
    import matplotlib.pyplot as plt

    paths = []
    for name, make in figures.items():
        fig = make()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def save_sweep(ds: xr.Dataset, directory) -> list:
    """Figures of a combined sweep (PNG): learning curves of every point and, per summary of
    :func:`sweep_summaries`, a heatmap over the first two swept keys (other swept keys
    reduced to their worst, i.e. largest, value) or a line over a single swept key."""
    from pathlib import Path


    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keys = _swept(ds)
    figures = {}
    if "loss" in ds:
        figures["learning_curves"] = lambda: plot_sweep_learning_curves(ds)
    for name, da in sweep_summaries(ds).items():
        if len(keys) >= 2:
            worst = da.max(keys[2:]) if len(keys) > 2 else da
            worst.attrs = da.attrs
            figures[name] = lambda d=worst: plot_sweep_heatmap(d, keys[1], keys[0])
        else:
            figures[name] = lambda d=da: _plot_sweep_line(d, keys[0])
    return _save_figures(figures, directory)


def _plot_sweep_line(da: xr.DataArray, x: str):
    fig, ax = _figure(figsize=(5, 3.5))
    ax.plot(np.arange(da.sizes[x]), da.values, "o-")
    ax.set_xticks(np.arange(da.sizes[x]), [_tick(v) for v in da[x].values])
    ax.set_xlabel(label_of(da[x]))
    ax.set_ylabel(label_of(da))
    return fig


def save_all(ds: xr.Dataset, directory, checks: dict | None = None) -> list:
    """Write the standard figures of a run into ``directory`` (PNG): learning curve, the
    held-out learning curve by epoch (``held_out.png``, when recorded), a γ cycle,
    the residuals of every check per cycle, one premise-vs-conclusion figure per check
    (``premise_<check>.png``, :func:`plot_premise`), the weight change and, for a spiking
    run with recorded spikes, the raster of its first cycle (:func:`plot_raster`); returns
    their paths."""
    from pathlib import Path

    from cdtp.analysis.propositions import check_all

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checks = check_all(ds) if checks is None else checks
    figures = {"learning_curve": lambda: plot_learning_curve(ds)}
    if "test_loss" in ds and ds.sizes.get("epoch", 0):
        figures["held_out"] = lambda: plot_held_out(ds)
    if "time" in ds.dims:
        first = int(ds.cycle.values[0]) if "cycle" in ds.dims else 0
        figures["cycle"] = lambda: plot_cycle(ds, cycle=first)
    if checks:
        figures["propositions"] = lambda: plot_residuals(checks)
        for name, res in checks.items():
            figures[f"premise_{name}"] = lambda r=res: plot_premise(r)
    if "weight" in ds:
        figures["weight_change"] = lambda: plot_weight_change(ds)
    if "spike_time" in ds and "cycle" in ds.dims and ds.sizes["cycle"]:
        first = int(ds.cycle.values[0])
        figures["raster"] = lambda: plot_raster(ds, (first, first + 1))
    return _save_figures(figures, directory)
