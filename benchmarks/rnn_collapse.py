"""Why TP at temporal order T = 120 falls after reaching 99 %: measurements around a collapse.

Two steps, each writing one JSON file under ``benchmarks/rnn_runs/diagnostics/``::

    python -m benchmarks.rnn_collapse replay --seed 1 --dtype float32 --until 33000 \\
        --dense 28500:29000 --dense 31000:31500 --dense 32500:33000
    python -m benchmarks.rnn_collapse branch --seed 1 --dtype float32 --at 28500 --length 500

``replay`` reruns one stored run of :mod:`benchmarks.rnn_tp` (same curve, seed and precision,
hence the same trajectory: its held-out accuracies are checked against the stored run's) with a
monitor on every update (:func:`cdtp.rnn.experiment.run`'s ``monitor``). It records, per window
of ``--window`` updates, the mean and largest mini-batch loss and norms of the update
directions; every ``--every`` updates (every update inside a ``--dense`` range) the state of
the network: spectral radius and extreme singular values of W_hh, the condition number of the
regularized Gram matrix W_hhᵀW_hh + rI, the targets' displacements λ_t = v_t − h_t (Eq 2), the
saturation of the hidden units, and the BPTT gradient at the same parameters. It saves the
parameters at the start of every dense range (``.npz`` beside the JSON, not committed).

``branch`` restarts from such a checkpoint and runs the same mini-batches (the data stream of
the seed, advanced to the checkpoint) in several variants side by side: the paper's update in
float32 and in float64, and with the update direction's norm clipped; it records the loss and
direction norms per update. It tells whether a collapse depends on the precision and whether a
clip removes it.

Every process is single-threaded (as :mod:`benchmarks.rnn_tp`).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.rnn_tp import RUNS, _run_path, curve_config  # noqa: E402
from cdtp.rnn import network as rnn  # noqa: E402
from cdtp.rnn.experiment import run  # noqa: E402
from cdtp.rnn.tasks import temporal_order_batch  # noqa: E402

__all__ = ["main", "state_diagnostics"]

DIAG = RUNS / "diagnostics"
#: Parameters of the directions' norms, in RNNParams order.
NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")


def _compact(path: Path, data) -> None:
    """Write JSON atomically, numbers to 6 significant digits, no indentation (the dense
    diagnostics are tens of thousands of numbers)."""

    def short(v):
        if isinstance(v, float):
            return float(f"{v:.6g}") if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [short(x) for x in v]
        return v

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(short(data), separators=(",", ":")))
    tmp.replace(path)


def _norm(a) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


def state_diagnostics(params, x, y, loss, directions, *, gamma_h, r, margin=1e-3):
    """The network's state at one update (all norms Frobenius, in float64 arithmetic).

    Returns a dict: ``rho`` spectral radius of W_hh, ``sigma_max``/``sigma_min`` its extreme
    singular values, ``gram_cond`` the condition number (σ_max² + r)/(σ_min² + r) of the
    regularized Gram matrix, ``lam_T``/``lam_1`` the norms of the target displacements at the
    last and the first step (over the batch), ``lam_max_ratio`` max_t ‖λ_t‖/‖λ_T‖,
    ``lam_max_t`` the step where it is reached, ``saturated`` the fraction of hidden values with
    |h| > 1 − margin (where the slope of Eq 2 is clamped at 1/(2ε − ε²) ≈ 500), ``max_slope``
    the largest mean slope of one step, ``bptt_W_hh`` ‖∂L̄/∂W_hh‖, ``cos_W_hh`` the cosine
    between TP's W_hh direction and the BPTT gradient.
    """
    fp = rnn.forward(params, x)
    batch = fp.z.shape[0]
    dz = loss.gradient(fp.z, y) / batch
    dh_last = dz @ params.W_hy
    inverse = rnn.RegularizedInverse(params, r, margin=margin)
    v = rnn.propagate_targets(fp, rnn.output_target(fp.h_steps[-1], dh_last, gamma_h), inverse)
    lam = v.transpose(1, 0, 2).astype(np.float64) - fp.h_steps[1:]
    lam_norm = np.sqrt(np.sum(lam * lam, axis=(1, 2)))  # per step t = 1 … T
    ratio = lam_norm / lam_norm[-1] if lam_norm[-1] > 0 else np.full_like(lam_norm, np.nan)
    h = np.abs(fp.h_steps[1:].astype(np.float64))
    slope = inverse.inverse_slope(fp.h_steps[1:].astype(np.float64))
    w = params.W_hh.astype(np.float64)
    sv = np.linalg.svd(w, compute_uv=False)
    _, grads = rnn.bptt_gradients(params, x, y, loss)
    g, d = grads.W_hh.astype(np.float64).ravel(), directions.W_hh.astype(np.float64).ravel()
    denom = np.linalg.norm(g) * np.linalg.norm(d)
    return {
        "rho": float(np.max(np.abs(np.linalg.eigvals(w)))),
        "sigma_max": float(sv[0]),
        "sigma_min": float(sv[-1]),
        "gram_cond": float((sv[0] ** 2 + r) / (sv[-1] ** 2 + r)),
        "lam_T": float(lam_norm[-1]),
        "lam_1": float(lam_norm[0]),
        "lam_max_ratio": float(np.nanmax(ratio)),
        "lam_max_t": int(np.nanargmax(ratio)) + 1,
        "saturated": float(np.mean(h > 1.0 - margin)),
        "max_slope": float(np.max(np.mean(slope, axis=(1, 2)))),
        "bptt_W_hh": float(np.linalg.norm(g)),
        "cos_W_hh": float(g @ d / denom) if denom > 0 else float("nan"),
    }


def _parse_ranges(specs):
    ranges = []
    for spec in specs or []:
        try:
            lo, hi = (int(v) for v in spec.split(":"))
        except ValueError:
            raise SystemExit(f"--dense {spec!r}: expected FROM:TO (two integers)") from None
        if not 0 <= lo < hi:
            raise SystemExit(f"--dense {spec!r}: need 0 ≤ FROM < TO")
        ranges.append((lo, hi))
    return ranges


def _diag_path(kind, curve, method, seed, dtype, suffix=".json"):
    return DIAG / f"{kind}_{curve}_{method}_s{seed}_{dtype}{suffix}"


def cmd_replay(args):
    """Rerun a stored run with the monitor on; check it retraces the stored curve."""
    config = curve_config(args.curve, args.method, args.seed, args.until, args.dtype)
    dense = _parse_ranges(args.dense)
    window = {"loss": [], **{n: [] for n in NAMES}}
    record = {
        "curve": args.curve, "method": args.method, "seed": args.seed, "dtype": args.dtype,
        "window": args.window, "every": args.every, "dense": dense,
        "config": json.loads(config.to_json()),
        "windows": {"iteration": [], "loss_mean": [], "loss_max": [],
                    **{f"{n}_mean": [] for n in NAMES}, **{f"{n}_max": [] for n in NAMES}},
        "states": {"iteration": [], "loss": [], **{f"d_{n}": [] for n in NAMES}},
        "eval": {"iteration": [], "accuracy": [], "eval_loss": []},
    }
    checkpoints = {}

    def monitor(it, params, x, y, value, directions, loss):
        norms = {n: _norm(getattr(directions, n)) for n in NAMES}
        window["loss"].append(value)
        for n in NAMES:
            window[n].append(norms[n])
        in_dense = any(lo < it <= hi for lo, hi in dense)
        if it % args.every == 0 or in_dense:
            s = state_diagnostics(params, x, y, loss, directions,
                                  gamma_h=config.gamma_h, r=config.r, margin=config.margin)
            st = record["states"]
            st["iteration"].append(it)
            st["loss"].append(float(value))
            for n in NAMES:
                st[f"d_{n}"].append(norms[n])
            for k, v in s.items():
                st.setdefault(k, []).append(v)
        if any(it == lo + 1 for lo, _ in dense):  # the parameters after update `lo`
            checkpoints[f"it{it - 1}"] = {n: getattr(params, n).copy() for n in NAMES}
        if it % args.window == 0:
            w = record["windows"]
            w["iteration"].append(it)
            w["loss_mean"].append(float(np.mean(window["loss"])))
            w["loss_max"].append(float(np.max(window["loss"])))
            for n in NAMES:
                w[f"{n}_mean"].append(float(np.mean(window[n])))
                w[f"{n}_max"].append(float(np.max(window[n])))
            for v in window.values():
                v.clear()

    def progress(it, values):
        record["eval"]["iteration"].append(it)
        record["eval"]["accuracy"].append(float(values["accuracy"]))
        record["eval"]["eval_loss"].append(float(values["eval_loss"]))
        print(f"{it:6d} acc {values['accuracy']:.3f} loss {values['eval_loss']:.3f}", flush=True)

    ds = run(config, progress=progress, monitor=monitor)
    stored = _run_path(args.curve, args.method, args.seed)
    if stored.exists():
        ref = json.loads(stored.read_text())
        n = min(len(ref["accuracy"]), len(record["eval"]["accuracy"]))
        same_dtype = ref["config"].get("dtype", "float64") == args.dtype
        record["retraces_stored_run"] = bool(
            same_dtype and n > 0 and np.array_equal(ref["accuracy"][:n],
                                                    record["eval"]["accuracy"][:n])
        )
        record["compared_evaluations"] = n
    record["stopped"] = ds.attrs["stopped"]
    record["diverged_iteration"] = int(ds.attrs["diverged_iteration"])
    _compact(_diag_path("replay", args.curve, args.method, args.seed, args.dtype), record)
    if checkpoints:
        DIAG.mkdir(parents=True, exist_ok=True)
        np.savez(
            _diag_path("checkpoints", args.curve, args.method, args.seed, args.dtype, ".npz"),
            **{f"{k}_{n}": v[n] for k, v in checkpoints.items() for n in NAMES},
        )
    print("retraces stored run:", record.get("retraces_stored_run"))


def _clip(directions, max_norm):
    """Scale all directions together so that their joint norm is ≤ max_norm (as PyTorch's
    clip_grad_norm_)."""
    total = math.sqrt(sum(_norm(getattr(directions, n)) ** 2 for n in NAMES))
    if total > max_norm:
        for n in NAMES:
            getattr(directions, n)[...] *= max_norm / total
    return total


def cmd_branch(args):
    """From a replay checkpoint, the same mini-batches under several variants."""
    config = curve_config(args.curve, args.method, args.seed, None, args.dtype)
    if config.task != "temporal_order":
        raise SystemExit("branch: only the temporal order curves")
    ckpt_path = _diag_path("checkpoints", args.curve, args.method, args.seed, args.dtype, ".npz")
    ckpt = np.load(ckpt_path)
    start = rnn.RNNParams(*(ckpt[f"it{args.at}_{n}"] for n in NAMES))
    # The run's data stream (cdtp.rnn.experiment.run: SeedSequence(seed).spawn(3)[1]),
    # advanced past the `at` mini-batches already used.
    data_rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(3)[1])
    for _ in range(args.at):
        temporal_order_batch(data_rng, config.batch_size, config.length, config.positions)
    batches = [
        temporal_order_batch(data_rng, config.batch_size, config.length, config.positions)
        for _ in range(args.length)
    ]
    loss = rnn.readout_loss("softmax")
    variants = {"paper_float32": ("float32", None), "paper_float64": ("float64", None)}
    for c in args.clip:
        variants[f"clip{c:g}_{args.dtype}"] = (args.dtype, c)
    out = {"curve": args.curve, "seed": args.seed, "at": args.at, "length": args.length,
           "checkpoint_dtype": args.dtype, "variants": {}}
    for name, (dtype, clip) in variants.items():
        params = start.astype(dtype)
        opt = rnn.SGD(config.gamma_theta, hidden_bias_factor=2.0)
        rec = {"loss": [], "direction_norm": [], "W_hh_norm": []}
        for x, y in batches:
            with np.errstate(all="ignore"):
                try:
                    value, d = rnn.tp_directions(
                        params, x.astype(dtype), y, loss, gamma_h=config.gamma_h, r=config.r,
                        transition_gradient=config.transition_gradient,
                    )
                except np.linalg.LinAlgError:
                    break
                total = _clip(d, clip) if clip else math.sqrt(
                    sum(_norm(getattr(d, n)) ** 2 for n in NAMES))
                opt.step(params, d)
            rec["loss"].append(float(value))
            rec["direction_norm"].append(float(total))
            rec["W_hh_norm"].append(_norm(params.W_hh))
            if not (math.isfinite(value) and params.is_finite()):
                break
        out["variants"][name] = rec
        print(name, "max loss", max(rec["loss"]), "last", rec["loss"][-1],
              "max |d|", max(rec["direction_norm"]), flush=True)
    _compact(_diag_path(f"branch{args.at}", args.curve, args.method, args.seed, args.dtype), out)


def plot(replay_path: Path, out_path: Path) -> None:
    """Figure of a replay: the whole run (top row) and its first dense range (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = json.loads(replay_path.read_text())
    w, st, ev = rec["windows"], rec["states"], rec["eval"]
    it_s = np.asarray(st["iteration"])
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    dense = rec["dense"][0] if rec["dense"] else None
    for row, (lo, hi) in enumerate(((0, math.inf), tuple(dense) if dense else (0, math.inf))):
        sel = (it_s > lo) & (it_s <= hi)
        ax = axes[row, 0]
        if row == 0:
            ax.plot(ev["iteration"], ev["accuracy"], "k.-", label="held-out accuracy")
            ax.plot(w["iteration"], w["loss_max"], color="C3", lw=0.6,
                    label=f"largest mini-batch loss / {rec['window']} updates")
            ax.plot(w["iteration"], w["loss_mean"], color="C0", lw=0.6, label="mean loss")
        else:
            ax.plot(it_s[sel], np.asarray(st["loss"])[sel], color="C3", lw=0.8,
                    label="mini-batch loss")
        ax.set_ylabel("accuracy / loss")
        ax.legend(fontsize=7)
        ax = axes[row, 1]
        if row == 0:
            for n, c in (("W_hh", "C0"), ("W_xh", "C1"), ("W_hy", "C2")):
                ax.semilogy(w["iteration"], w[f"{n}_max"], color=c, lw=0.6,
                            label=f"max ‖d {n}‖ / window")
        else:
            for n, c in (("W_hh", "C0"), ("W_xh", "C1"), ("W_hy", "C2")):
                ax.semilogy(it_s[sel], np.asarray(st[f"d_{n}"])[sel], color=c, lw=0.8,
                            label=f"‖d {n}‖")
            ax.semilogy(it_s[sel], np.asarray(st["bptt_W_hh"])[sel], "k--", lw=0.6,
                        label="‖∂L̄/∂W_hh‖ (BPTT)")
        ax.legend(fontsize=7)
        ax.set_ylabel("update direction norm")
        ax = axes[row, 2]
        for k, c in (("rho", "C0"), ("sigma_max", "C1"), ("sigma_min", "C2")):
            ax.plot(it_s[sel], np.asarray(st[k])[sel], color=c, lw=0.8,
                    label={"rho": "ρ(W_hh)", "sigma_max": "σ_max(W_hh)",
                           "sigma_min": "σ_min(W_hh)"}[k])
        ax.legend(fontsize=7)
        ax.set_ylabel("W_hh")
        ax = axes[row, 3]
        ax.semilogy(it_s[sel], np.asarray(st["lam_max_ratio"], dtype=float)[sel], color="C0",
                    lw=0.8, label="max_t ‖λ_t‖ / ‖λ_T‖")
        ax.semilogy(it_s[sel], np.asarray(st["saturated"], dtype=float)[sel] + 1e-6,
                    color="C3", lw=0.8, label="fraction |h| > 0.999 (+1e-6)")
        ax.semilogy(it_s[sel], np.asarray(st["gram_cond"])[sel], color="C2", lw=0.8,
                    label="cond(W_hhᵀW_hh + rI)")
        ax.legend(fontsize=7)
        for ax in axes[row]:
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
    axes[0, 0].set_title(f"{rec['curve']} {rec['method'].upper()} seed {rec['seed']} "
                         f"{rec['dtype']}: the whole run", fontsize=9)
    if dense:
        axes[1, 0].set_title(f"every update, {dense[0]}–{dense[1]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def main(argv=None):
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("replay", cmd_replay), ("branch", cmd_branch)):
        p = sub.add_parser(name)
        p.add_argument("--curve", default="temporal_order_120")
        p.add_argument("--method", default="tp", choices=["tp", "bptt"])
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--dtype", choices=["float64", "float32"], default="float32")
        p.set_defaults(func=func)
        if name == "replay":
            p.add_argument("--until", type=int, help="stop after this many updates")
            p.add_argument("--dense", action="append", help="FROM:TO, every update diagnosed")
            p.add_argument("--every", type=int, default=50)
            p.add_argument("--window", type=int, default=50)
        else:
            p.add_argument("--at", type=int, required=True, help="checkpoint iteration")
            p.add_argument("--length", type=int, default=500)
            p.add_argument("--clip", type=float, action="append", default=[])
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
