"""Seed 002 benchmark: target propagation (regularized inversion) vs BPTT on sequence tasks.

Run ``python -m benchmarks.rnn_tp`` (``--quick`` for a short smoke run). Produces
``benchmarks/RNN_TP.md`` (tables with machine info), ``benchmarks/rnn_tp_curves.png`` (accuracy
vs iterations, TP and BPTT, four tasks) and ``benchmarks/rnn_tp_grid.png`` (seed 002 Fig 6a:
area under the training-loss curve over γ_θ × r, divergence marked).

Every worker process is single-threaded (OMP/OpenBLAS threads set to 1 before numpy loads).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cdtp.reference import rnn  # noqa: E402
from cdtp.reference.rnn_experiment import RNNExperimentConfig, run  # noqa: E402
from cdtp.reference.sequence_tasks import temporal_order_batch  # noqa: E402

__all__ = ["main"]

HERE = Path(__file__).resolve().parent

#: Shared initialization and TP hyper-parameters (see RNN_TP.md for how they were chosen).
INPUT_SCALE = 0.1
TP = {
    "method": "tp",
    "gamma_theta": 10.0,
    "gamma_h": 1e-3,
    "r": 1.0,
    "margin": 0.1,
    "rule": "linearized",
}
#: Per-task TP changes: on the adding problem (linear readout, squared error) the readout's
#: gradient step of γ_θ = 10 diverges at once; γ_θ = 0.3 was the largest of {0.3, 1, 3} that
#: stayed finite in 3 000-iteration trials (all three stalled near 0.65).
TP_TASK_OVERRIDES = {"adding": {"gamma_theta": 0.3}}
BPTT = {"method": "bptt", "gamma_theta": 0.03}
#: label → method settings; every variant runs on every task.
VARIANTS = {"tp": TP, "bptt": BPTT}

#: (label, task, sequence length (None: the task's default), batch size, full iteration
#: budget, eval period)
CURVE_TASKS = [
    ("temporal order T = 60", "temporal_order", 60, 20, 40000, 500),
    ("adding T = 30", "adding", 30, 20, 20000, 500),
    ("digits pixel by pixel T = 64", "digits_pixel", None, 16, 10000, 250),
    ("digits row by row T = 8", "digits_row", None, 16, 10000, 250),
    ("temporal order T = 120", "temporal_order", 120, 20, 40000, 1000),
]

#: Fig 6a: seed 002 fixes γ_h = 1e-3 and runs 400 iterations over γ_θ × r.
#: The task is digits pixel by pixel (MNIST-like, T = 64), where 400 iterations show learning.
GRID_TASK = "digits_pixel"
GRID_GAMMA_THETA = [1e-1, 1.0, 1e1, 1e2, 1e3]
GRID_R = [0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
GRID_GAMMA_H = [1e-3]
GRID_ITERATIONS = 400
#: Sequence lengths of the cost measurement (p = 100, so the last three have T ≥ p).
COST_LENGTHS = (30, 100, 200, 400)


def _run_job(job):
    kind, key, cfg_dict = job
    ds = run(RNNExperimentConfig(**cfg_dict))
    return (
        kind,
        key,
        {
            "iteration": ds.iteration.values.tolist(),
            "train_loss": ds.train_loss.values.tolist(),
            "accuracy": ds.accuracy.values.tolist(),
            "wall_time": ds.wall_time.values.tolist(),
            "diverged": int(ds.attrs["diverged"]),
            "diverged_iteration": int(ds.attrs["diverged_iteration"]),
            "config": json.loads(ds.attrs["config"]),
        },
    )


def _time_per_iteration(method, length, hidden, batch, repeats, rng):
    params = rnn.init_params(6, hidden, 4, rng, input_scale=INPUT_SCALE)
    loss = rnn.readout_loss("softmax")
    x, y = temporal_order_batch(rng, batch, length)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if method == "tp":
            rnn.tp_directions(
                params, x, y, loss, gamma_h=TP["gamma_h"], r=TP["r"], margin=TP["margin"]
            )
        else:
            rnn.bptt_gradients(params, x, y, loss)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _cost_job(job):
    _, key, (length, hidden, batch, repeats) = job
    rng = np.random.default_rng(0)
    # Interleave the two methods so both see the same machine load.
    tp, bp = [], []
    for _ in range(5):
        tp.append(_time_per_iteration("tp", length, hidden, batch, repeats, rng))
        bp.append(_time_per_iteration("bptt", length, hidden, batch, repeats, rng))
    return "cost", key, {"tp": float(np.median(tp)), "bptt": float(np.median(bp))}


def _jobs(quick):
    scale = 20 if quick else 1
    jobs = []
    for label, task, length, batch, iters, every in CURVE_TASKS:
        n = iters // scale
        every = max(every // scale, 1) if quick else every
        for name, method_cfg in VARIANTS.items():
            if method_cfg["method"] == "tp":
                method_cfg = {**method_cfg, **TP_TASK_OVERRIDES.get(task, {})}
            cfg = dict(
                task=task,
                T=length,
                batch_size=batch,
                iterations=n - n % every,
                eval_every=every,
                hidden=100,
                seed=0,
                input_scale=INPUT_SCALE,
                eval_size=1000,
                **method_cfg,
            )
            jobs.append(("curve", (label, name), cfg))
    grid_iters = GRID_ITERATIONS // (4 if quick else 1)
    for gh in GRID_GAMMA_H:
        for gt in GRID_GAMMA_THETA:
            for r in GRID_R:
                cfg = dict(
                    task=GRID_TASK,
                    method="tp",
                    batch_size=16,
                    iterations=grid_iters,
                    eval_every=grid_iters // 20,
                    hidden=100,
                    seed=0,
                    input_scale=INPUT_SCALE,
                    gamma_theta=gt,
                    gamma_h=gh,
                    r=r,
                    margin=TP["margin"],
                )
                jobs.append(("grid", (gh, gt, r), cfg))
    return jobs


def _cost_jobs(quick):
    return [("cost", length, (length, 100, 20, 3 if quick else 20)) for length in COST_LENGTHS]


def _dispatch(job):
    return _cost_job(job) if job[0] == "cost" else _run_job(job)


def _machine():
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _first_reaching(curve, level):
    acc = np.asarray(curve["accuracy"], dtype=float)
    hit = np.flatnonzero(acc >= level)
    return int(curve["iteration"][hit[0]]) if hit.size else None


def _plot_curves(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_TASKS), figsize=(4.2 * len(CURVE_TASKS), 3.4))
    for ax, (label, task, *_rest) in zip(axes, CURVE_TASKS):
        for (name, method_cfg), color in zip(VARIANTS.items(), ("C0", "C2", "C1")):
            c = curves[(label, name)]
            legend = (
                "BPTT"
                if name == "bptt"
                else (f"TP γ_h = {method_cfg['gamma_h']:g}, γ_θ = {method_cfg['gamma_theta']:g},"
                      f" r = {method_cfg['r']:g}")
            )
            ax.plot(c["iteration"], c["accuracy"], color=color, label=legend)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("fraction err² < 0.04" if task == "adding" else "held-out accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grid_area(c):
    loss = np.asarray(c["train_loss"], dtype=float)
    every = c["iteration"][0]
    return np.nan if c["diverged"] or not np.all(np.isfinite(loss)) else float(loss.sum() * every)


def _plot_grid(grid, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    areas = {
        gh: np.array([[_grid_area(grid[(gh, gt, r)]) for r in GRID_R] for gt in GRID_GAMMA_THETA])
        for gh in GRID_GAMMA_H
    }
    finite = np.concatenate([a[np.isfinite(a)] for a in areas.values()])
    vmin, vmax = (np.log10(finite.min()), np.log10(finite.max())) if finite.size else (0, 1)
    fig, axes = plt.subplots(1, len(GRID_GAMMA_H), figsize=(5.5 * len(GRID_GAMMA_H), 4))
    for ax, gh in zip(np.atleast_1d(axes), GRID_GAMMA_H):
        im = ax.imshow(
            np.log10(areas[gh]),
            origin="lower",
            cmap="viridis_r",
            aspect="auto",
            vmin=vmin,
            vmax=vmax,
        )
        for i, gt in enumerate(GRID_GAMMA_THETA):
            for j, r in enumerate(GRID_R):
                if grid[(gh, gt, r)]["diverged"]:
                    ax.text(j, i, "×", ha="center", va="center", color="red", fontsize=14)
        ax.set_xticks(range(len(GRID_R)), [f"{r:g}" for r in GRID_R])
        ax.set_yticks(range(len(GRID_GAMMA_THETA)), [f"{g:g}" for g in GRID_GAMMA_THETA])
        ax.set_xlabel("regularization r")
        ax.set_ylabel("step size γ_θ")
        ax.set_title(
            f"TP, digits pixel by pixel (T = 64), γ_h = {gh:g}\n"
            f"log10 area under training loss, {GRID_ITERATIONS} it. (× = diverged)",
            fontsize=9,
        )
        fig.colorbar(im, ax=ax, label="log10 Σ_iter loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return areas


def _report(curves, grid, area, cost, machine, elapsed, quick, path):
    lines = [
        "# Seed 002: target propagation with regularized inversion vs BPTT",
        "",
        "Generated by `python -m benchmarks.rnn_tp"
        + (" --quick`" if quick else "`")
        + f" in {elapsed / 60:.1f} min of wall time (2 single-threaded worker processes).",
        "",
        "## Machine",
        "",
        "| key | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
        "## Hyper-parameters",
        "",
        f"tanh RNN, hidden 100, orthogonal W_hh, W_xh ~ N(0, {INPUT_SCALE}²), "
        "W_hy ~ N(0, 1/100), zero biases; plain SGD; loss = batch mean.",
        *[
            f"{name}: " + ", ".join(f"{k} = {v}" for k, v in cfg.items() if k != "method") + "  "
            for name, cfg in VARIANTS.items()
        ],
        *[f"tp on {task}: " + ", ".join(f"{k} = {v}" for k, v in o.items()) + "  "
          for task, o in TP_TASK_OVERRIDES.items()],
        "Held-out sets: 1000 fresh sequences (synthetic tasks, own seed stream), "
        "the fixed 20 % stratified test split (digits).",
        "",
        "## Accuracy vs iterations (`rnn_tp_curves.png`)",
        "",
        "| task | method | iterations run | diverged | final accuracy | best accuracy "
        "| first iteration ≥ 99 % | train loss (last window) | s / iteration |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, *_ in CURVE_TASKS:
        for method in VARIANTS:
            c = curves[(label, method)]
            acc = np.asarray(c["accuracy"], dtype=float)
            loss = np.asarray(c["train_loss"], dtype=float)
            ran = c["diverged_iteration"] - 1 if c["diverged"] else c["config"]["iterations"]
            wall = np.asarray(c["wall_time"], dtype=float)
            finite = np.isfinite(wall)
            last_acc = acc[finite][-1] if finite.any() else np.nan
            last_loss = loss[finite][-1] if finite.any() else np.nan
            per_it = (
                wall[finite][-1] / np.asarray(c["iteration"])[finite][-1]
                if finite.any()
                else np.nan
            )
            hit = _first_reaching(c, 0.99)
            lines.append(
                f"| {label} | {method} | {ran} | "
                f"{'yes @ ' + str(c['diverged_iteration']) if c['diverged'] else 'no'} | "
                f"{last_acc:.3f} | {np.nanmax(acc):.3f} | "
                f"{hit if hit is not None else '—'} | "
                f"{last_loss:.4f} | {per_it * 1e3:.2f} ms |"
            )
    lines += [
        "",
        "For the adding problem, accuracy is the fraction of held-out sequences whose squared "
        "error is below 0.04 (seed 002 Sec 4).",
        "",
        "## Fig 6a grid (`rnn_tp_grid.png`)",
        "",
        f"TP on {GRID_TASK}, {grid[next(iter(grid))]['config']['iterations']} iterations, "
        f"margin = {TP['margin']}. Area under the training-loss curve (Σ over iterations of "
        "the mini-batch loss); `div@k` = NaN/Inf or unfactorizable Gram matrix at iteration k. "
        "A model that learns nothing scores ≈ iterations × ln 10 ≈ 921 (400 iterations).",
    ]
    for gh in GRID_GAMMA_H:
        lines += [
            "",
            f"γ_h = {gh:g}:",
            "",
            "| γ_θ \\ r | " + " | ".join(f"{r:g}" for r in GRID_R) + " |",
            "|---|" + "---|" * len(GRID_R),
        ]
        for i, gt in enumerate(GRID_GAMMA_THETA):
            cells = []
            for j, r in enumerate(GRID_R):
                c = grid[(gh, gt, r)]
                cells.append(
                    f"div@{c['diverged_iteration']}" if c["diverged"] else f"{area[gh][i, j]:.0f}"
                )
            lines.append(f"| {gt:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cost: time per update, hidden p = 100, batch 20",
        "",
        "Median over 5 interleaved rounds of the median of 20 direction computations (forward, "
        "backward, and for TP the factorization), measured in the main process after the "
        "training pool has closed; other users' jobs were running on the machine.",
        "",
        "| T | T ≥ p | TP (ms) | BPTT (ms) | TP / BPTT |",
        "|---|---|---|---|---|",
    ]
    for length in sorted(cost):
        c = cost[length]
        lines.append(
            f"| {length} | {'yes' if length >= 100 else 'no'} | {c['tp'] * 1e3:.2f} | "
            f"{c['bptt'] * 1e3:.2f} | {c['tp'] / c['bptt']:.2f} |"
        )
    lines += ["", *_acceptance(curves, grid, area, cost), "", *NOTES]
    path.write_text("\n".join(lines) + "\n")


#: Fixed notes appended to the report: what differs from seed 002 and why.
NOTES = [
    "## Notes and deviations from seed 002",
    "",
    "- Seed 002's appendix (initialization, hyper-parameter grids) is not part of the text "
    "we have. Initialization here: Haar-orthogonal W_hh (its Sec 3 recommends orthonormal "
    "weights), small Gaussian W_xh and W_hy, zero biases. Step sizes were picked by short "
    "exploratory runs (digits row by row, 2–3k iterations; temporal order, 6k and 40k "
    "iterations), not by the paper's grid search.",
    "- Step sizes. The previous version of this benchmark used γ_h = 1, γ_θ = 0.03 and TP "
    "reached only 0.522 on temporal order T = 60 (0.730 on adding). Seed 002's Fig 6a fixes "
    "γ_h = 1e-3: a small output step keeps every target displacement in the range where the "
    "linearized inverse (Eq 2) is accurate and no unit is pushed against tanh's bounds, and "
    "γ_θ is scaled up so that γ_θ γ_h = 0.01. γ_θ = 10 was the first value tried, on temporal "
    "order T = 20 (100 % test accuracy from iteration 1 000, where γ_h ∈ {0.1, 1, 10} with "
    "γ_θ ∈ {0.01, 0.03} oscillated between 0.5 and 0.9 or stalled at chance); no further "
    "tuning, and BPTT keeps its γ_θ = 0.03 (not re-tuned: its row is a reference point, not "
    "a best effort).",
    "- Temporal order T = 60 with these settings is not stable over 40 000 iterations: TP "
    "holds ≥ 99 % from about iteration 2 500 to 9 000, then oscillates and falls to 0.3–0.7 "
    "after iteration 21 000 (plain SGD at a fixed γ_θ = 10, no decay). T = 120 does not learn "
    "(chance level, as BPTT); seed 002 reports 100 % there, so its settings (Appendix D) must "
    "differ from ours.",
    "- The projection π onto tanh's open range uses [−1 + ε, 1 − ε] with ε = 0.1 (slope of "
    "the inverse ≤ 5.3); with γ_h = 1e-3 targets stay close to h and ε rarely matters.",
    "- Fig 6a grid: r = 0 uses the exact inverse (WᵀW)⁻¹Wᵀ; a run counts as diverged also "
    "when WᵀW + rI is not numerically positive definite. Divergence in this grid is not "
    "monotone in r or γ_θ (e.g. r = 1e-3 diverges where r = 0 stalls), so read it as "
    "'small r is unstable or stalls', not as a sharp boundary.",
    "- The regularization r sets the gain of the backward target recursion: with orthogonal "
    "W_hh, g_θ = W_hhᵀ/(1 + r), so the per-step gain is about mean(1/(1 − h²))/(1 + r). "
    "At initialization on temporal order T = 60 the displacement at t = 6 relative to t = 60 "
    "is ≈ 300 (r = 0), 64 (r = 0.03), 1.8 (r = 0.1), against 0.04 for BPTT's gradient.",
    "- The pixel-by-pixel MNIST/CIFAR experiments are replaced by the bundled 8 × 8 digits "
    "(T = 64 pixel by pixel, T = 8 row by row); batch 16 as in the paper's image tasks.",
    "- One mini-batch loss is the batch mean; each example gets its own output target "
    "(Eq 1), and the Eq 3 objective is averaged over the batch.",
]


def _acceptance(curves, grid, area, cost):
    out = ["## Acceptance checks (computed from the runs above)", ""]
    for label in (CURVE_TASKS[0][0], CURVE_TASKS[4][0]):
        budget = curves[(label, "bptt")]["config"]["iterations"]
        for name in VARIANTS:
            c = curves[(label, name)]
            hit = _first_reaching(c, 0.99)
            acc = np.asarray(c["accuracy"], dtype=float)
            final = acc[np.isfinite(acc)][-1] if np.isfinite(acc).any() else np.nan
            state = (
                f"reached ≥ 99 % at iteration {hit}"
                if hit is not None
                else f"did NOT reach 99 % within {budget} iterations "
                f"(best {np.nanmax(acc):.3f}, final {final:.3f})"
            )
            out.append(
                f"- {label[0].upper()}{label[1:]}, {name}: {state}"
                + (f"; diverged at {c['diverged_iteration']}" if c["diverged"] else "")
                + "."
            )
    label = CURVE_TASKS[1][0]
    for name in VARIANTS:
        acc = np.asarray(curves[(label, name)]["accuracy"], dtype=float)
        fin = acc[np.isfinite(acc)]
        out.append(
            f"- Adding T = 30, {name}: fraction with squared error < 0.04 = "
            f"{fin[-1] if fin.size else float('nan'):.3f} at the end (best {np.nanmax(acc):.3f})."
        )
    for gh in GRID_GAMMA_H:
        a = area[gh]
        no_learning = GRID_ITERATIONS * np.log(10)
        r0 = a[:, 0]
        div0 = sum(grid[(gh, gt, 0.0)]["diverged"] for gt in GRID_GAMMA_THETA)
        best_pos = np.nanmin(a[:, 1:]) if np.isfinite(a[:, 1:]).any() else np.nan
        best_r0 = np.nanmin(r0) if np.isfinite(r0).any() else np.nan
        out.append(
            f"- Fig 6a grid, γ_h = {gh:g}: r = 0 diverged for {div0}/{len(GRID_GAMMA_THETA)} "
            f"step sizes; best finite area at r = 0: {best_r0:.0f} vs best at r > 0: "
            f"{best_pos:.0f} (no learning ≈ {no_learning:.0f})."
        )
    ratios = {t: c["tp"] / c["bptt"] for t, c in cost.items() if t >= 100}
    if ratios:
        worst = max(ratios.values())
        out.append(
            f"- Cost at T ≥ p = 100: TP / BPTT time per update ≤ {worst:.2f} "
            f"({'meets' if worst <= 1.5 else 'does NOT meet'} the ≤ 1.5 target)."
        )
    return out


def main(argv=None):
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/20 of the iterations")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write outputs")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be ≥ 1, got {args.workers}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    jobs = _jobs(args.quick)
    # Longest first, so the two workers finish together.
    jobs.sort(key=lambda j: -(j[2]["iterations"] * (j[2].get("T") or 60) if j[0] != "cost" else 0))
    curves, grid, cost = {}, {}, {}
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for kind, key, result in pool.imap_unordered(_dispatch, jobs):
            {"curve": curves, "grid": grid, "cost": cost}[kind][key] = result
            print(f"[{(time.perf_counter() - start) / 60:5.1f} min] {kind} {key} done", flush=True)
    # Timing runs alone in this process after the pool is closed, so no worker competes.
    for job in _cost_jobs(args.quick):
        _, key, result = _cost_job(job)
        cost[key] = result
        print(f"[{(time.perf_counter() - start) / 60:5.1f} min] cost T = {key} done", flush=True)
    elapsed = time.perf_counter() - start
    _plot_curves(curves, args.out_dir / "rnn_tp_curves.png")
    area = _plot_grid(grid, args.out_dir / "rnn_tp_grid.png")
    _report(curves, grid, area, cost, _machine(), elapsed, args.quick, args.out_dir / "RNN_TP.md")
    print((args.out_dir / "RNN_TP.md").read_text())


if __name__ == "__main__":
    main()
