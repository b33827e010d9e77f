"""Why TP at temporal order T = 120 falls after reaching 99 %: measurements around a collapse.

Each step writes one JSON file under ``benchmarks/rnn_runs/diagnostics/``::

    python -m benchmarks.rnn_collapse replay --seed 1 --dtype float32 --until 33000
    python -m benchmarks.rnn_collapse branch --seed 1 --dtype float32 --at 19500 --length 500

``replay`` reruns one run of :mod:`benchmarks.rnn_tp` (same curve, seed and precision; with
the current code the same trajectory as a run made now; a stored run made by an earlier version
of the code agrees only for its first thousands of updates, float32 rounding in another
summation order, and the replay records up to which evaluation) with a monitor on every
update (:func:`cdtp.rnn.experiment.run`'s ``monitor``). It records, per window of ``--window``
updates, the mean and largest mini-batch loss and norms of the update
directions; every ``--every`` updates, and every update of the ``--lookback`` updates before
an evaluation that falls below ``--drop-below`` after the run has reached 99 %, the state of
the network: spectral radius and extreme singular values of W_hh, the condition number of the
regularized Gram matrix W_hhᵀW_hh + rI, the targets' displacements λ_t = v_t − h_t (Eq 2), the
saturation of the hidden units, and the BPTT gradient at the same parameters. It saves the
parameters at the start of every such segment (``.npz`` beside the JSON, not committed).

``branch`` restarts from such a checkpoint and runs the same mini-batches (the data stream of
the seed, advanced to the checkpoint) in several variants side by side: the paper's update in
float32 and in float64, and with the update direction's norm clipped; it records the loss and
direction norms per update. It tells whether a collapse depends on the precision and whether a
clip removes it.

``update`` reruns a curve to one update (``--at``, typically the one before a NaN) and records
that update and the one before in detail: the targets' displacements ‖λ_t‖ over t, each
example's largest growth, TP's and BPTT's norms, in the run's precision and in float64. It tells
a target explosion (Eq 2's targets growing backwards in time) from an exploding gradient TP
inherits from BPTT::

    python -m benchmarks.rnn_collapse update --curve temporal_order_120 --seed 0 --at 33989

Every process is single-threaded (as :mod:`benchmarks.rnn_tp`).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
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
#: The transition parameters (Eq 3).
TRANSITION = ("W_xh", "W_hh", "b_h")


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


def _target_displacements(params, x, y, loss, *, gamma_h, r, margin=1e-3, growth_cap=None):
    """The forward pass, the regularized inverse and the target displacements
    λ_t = v_t − h_t of one update (Eqs 1–2, as :func:`cdtp.rnn.network.tp_directions` computes
    them), λ as a float64 array (T, batch, p)."""
    fp = rnn.forward(params, x)
    dz = loss.gradient(fp.z, y) / fp.z.shape[0]
    inverse = rnn.RegularizedInverse(params, r, margin=margin)
    v_last = rnn.output_target(fp.h_steps[-1], dz @ params.W_hy, gamma_h)
    v = rnn.propagate_targets(fp, v_last, inverse, growth_cap=growth_cap)
    return fp, inverse, v.transpose(1, 0, 2).astype(np.float64) - fp.h_steps[1:]


def state_diagnostics(params, x, y, loss, directions, *, gamma_h, r, margin=1e-3,
                      growth_cap=None):
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
    fp, inverse, lam = _target_displacements(params, x, y, loss, gamma_h=gamma_h, r=r,
                                             margin=margin, growth_cap=growth_cap)
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


def _diag_path(kind, curve, method, seed, dtype, suffix=".json"):
    return DIAG / f"{kind}_{curve}_{method}_s{seed}_{dtype}{suffix}"


def _append_state(states, it, value, directions, diag):
    states["iteration"].append(it)
    states["loss"].append(float(value))
    for n in NAMES:
        states.setdefault(f"d_{n}", []).append(_norm(getattr(directions, n)))
    for k, v in diag.items():
        states.setdefault(k, []).append(v)


def cmd_replay(args):
    """Rerun a run of the benchmark with the monitor on; diagnose every update before a drop.

    The monitor keeps the last ``--lookback`` updates (parameters before the update and the
    mini-batch). When an evaluation falls below ``--drop-below`` after the run has reached
    99 %, every one of those updates is diagnosed again (a "segment", at most
    ``--max-segments``) and the parameters at its start are saved for ``branch``.
    """
    config = curve_config(args.curve, args.method, args.seed, args.until, args.dtype)
    recent = collections.deque(maxlen=args.lookback)
    window = {"loss": [], **{n: [] for n in NAMES}}
    record = {
        "curve": args.curve, "method": args.method, "seed": args.seed, "dtype": args.dtype,
        "window": args.window, "every": args.every, "lookback": args.lookback,
        "drop_below": args.drop_below, "config": json.loads(config.to_json()),
        "windows": {"iteration": [], "loss_mean": [], "loss_max": [],
                    **{f"{n}_mean": [] for n in NAMES}, **{f"{n}_max": [] for n in NAMES}},
        "states": {"iteration": [], "loss": []},
        "segments": [],
        "eval": {"iteration": [], "accuracy": [], "eval_loss": []},
    }
    checkpoints = {}
    kw = {"gamma_h": config.gamma_h, "r": config.r, "margin": config.margin,
          "growth_cap": config.target_growth_cap}  # the targets the run's updates used
    readout = {}

    def monitor(it, params, x, y, value, directions, loss):
        readout["loss"] = loss
        if args.checkpoint_every and (it - 1) % args.checkpoint_every == 0:
            checkpoints[f"it{it - 1}"] = {n: getattr(params, n).copy() for n in NAMES}
        recent.append((it, params.copy(), x, y))
        window["loss"].append(value)
        for n in NAMES:
            window[n].append(_norm(getattr(directions, n)))
        if it % args.every == 0:
            _append_state(record["states"], it, value, directions,
                          state_diagnostics(params, x, y, loss, directions, **kw))
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

    def segment():
        loss = readout["loss"]
        states = {"iteration": [], "loss": []}
        for it, params, x, y in recent:
            value, d = rnn.tp_directions(params, x, y, loss, **kw,
                                         transition_gradient=config.transition_gradient)
            _append_state(states, it, value, d, state_diagnostics(params, x, y, loss, d, **kw))
        first = recent[0]
        checkpoints[f"it{first[0] - 1}"] = {n: getattr(first[1], n) for n in NAMES}
        record["segments"].append({"from": first[0] - 1, "to": recent[-1][0], "states": states})

    def progress(it, values):
        ev = record["eval"]
        reached = any(a >= 0.99 for a in ev["accuracy"])
        ev["iteration"].append(it)
        ev["accuracy"].append(float(values["accuracy"]))
        ev["eval_loss"].append(float(values["eval_loss"]))
        print(f"{it:6d} acc {values['accuracy']:.3f} loss {values['eval_loss']:.3f}", flush=True)
        if (reached and values["accuracy"] < args.drop_below
                and len(record["segments"]) < args.max_segments and recent):
            segment()
            print(f"        segment {record['segments'][-1]['from']}–{it} diagnosed", flush=True)

    with np.errstate(all="ignore"):
        ds = run(config, progress=progress, monitor=monitor)
    record["stopped"] = ds.attrs["stopped"]
    record["diverged_iteration"] = int(ds.attrs["diverged_iteration"])
    if ds.attrs["stopped"] and len(record["segments"]) < args.max_segments and recent:
        segment()  # the updates before the stop
    stored = _run_path(args.curve, args.method, args.seed)
    if stored.exists():
        ref = json.loads(stored.read_text())
        n = min(len(ref["accuracy"]), len(record["eval"]["accuracy"]))
        same = [a == b for a, b in zip(ref["accuracy"][:n], record["eval"]["accuracy"][:n])]
        # evaluations that agree with the stored run before the first difference (runs made by
        # an earlier version of the code drift apart: float32 rounding in another order)
        record["retraces_stored_run_to"] = (
            int(ref["iteration"][same.index(False) - 1]) if False in same and same.index(False)
            else (int(ref["iteration"][n - 1]) if n and all(same) else 0)
        )
    _compact(_diag_path("replay", args.curve, args.method, args.seed, args.dtype), record)
    if checkpoints:
        DIAG.mkdir(parents=True, exist_ok=True)
        np.savez(
            _diag_path("checkpoints", args.curve, args.method, args.seed, args.dtype, ".npz"),
            **{f"{k}_{n}": v[n] for k, v in checkpoints.items() for n in NAMES},
        )
    print("agrees with the stored run to iteration", record.get("retraces_stored_run_to"))


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
    # name → (dtype, clip, readout step factor, transition step factor)
    variants = {"paper_float32": ("float32", None, 1.0, 1.0),
                "paper_float64": ("float64", None, 1.0, 1.0)}
    for c in args.clip:
        variants[f"clip{c:g}_{args.dtype}"] = (args.dtype, c, 1.0, 1.0)
    for f in args.halve:
        variants[f"readout_step_x{f:g}"] = (args.dtype, None, f, 1.0)
        variants[f"transition_step_x{f:g}"] = (args.dtype, None, 1.0, f)
    out = {"curve": args.curve, "seed": args.seed, "at": args.at, "length": args.length,
           "checkpoint_dtype": args.dtype, "variants": {}}
    for name, (dtype, clip, readout_f, transition_f) in variants.items():
        params = start.astype(dtype)
        opt = rnn.SGD(config.gamma_theta * readout_f, hidden_bias_factor=2.0,
                      transition_factor=transition_f / readout_f)
        rec = {"loss": [], "direction_norm": [], "W_hh_norm": [], "cos_prev_W_hh": [],
               "cos_prev_W_hy": []}
        prev = None
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
                # cosine of this direction with the previous one: ≈ −1 when the iterates
                # oscillate across a valley (a step beyond 2 / curvature)
                for n in ("W_hh", "W_hy"):
                    a = getattr(d, n).astype(np.float64).ravel()
                    b = None if prev is None else getattr(prev, n).astype(np.float64).ravel()
                    den = 0.0 if b is None else np.linalg.norm(a) * np.linalg.norm(b)
                    rec[f"cos_prev_{n}"].append(float(a @ b / den) if den > 0 else None)
                prev = d.copy()
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


def _transition_vector(d):
    return np.concatenate([getattr(d, n).astype(np.float64).ravel() for n in TRANSITION])


def _with_transition(params, vec):
    out = params.copy()
    k = 0
    for n in TRANSITION:
        a = getattr(out, n)
        a[...] = vec[k:k + a.size].reshape(a.shape)
        k += a.size
    return out


def update_sharpness(params, x, y, loss, *, gamma_h, r, transition_gradient, step,
                     iterations=30, eps=1e-4, seed=0):
    """Largest |eigenvalue| of the Jacobian of TP's transition direction, times the step.

    TP moves the transition parameters θ_tr = (W_xh, W_hh, b_h) by θ_tr ← θ_tr − γ_θ d(θ_tr)
    (readout fixed, one mini-batch). Near a minimum this map is stable only if
    γ_θ |μ| < 2 for every eigenvalue μ of ∂d/∂θ_tr (for d = γ_h ∇L̄ this is the classic
    γ_θγ_h λ_max(Hessian) < 2). Power iteration on central differences
    J v ≈ (d(θ + εv) − d(θ − εv)) / 2ε, in float64. Returns γ_θ |μ_max| (b_h counted once;
    the paired bias moves by 2γ_θ, a small share of the parameters).
    """
    params = params.astype(np.float64)
    x = x.astype(np.float64)
    theta = _transition_vector(params)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(theta.size)
    v /= np.linalg.norm(v)
    mu = 0.0

    def direction(vec):
        _, d = rnn.tp_directions(_with_transition(params, vec), x, y, loss, gamma_h=gamma_h,
                                 r=r, transition_gradient=transition_gradient)
        return _transition_vector(d)

    for _ in range(iterations):
        jv = (direction(theta + eps * v) - direction(theta - eps * v)) / (2 * eps)
        mu = float(v @ jv)
        norm = np.linalg.norm(jv)
        if norm == 0:
            break
        v = jv / norm
    return step * abs(mu)


def cmd_sharpness(args):
    """γ_θ |μ_max| of TP's transition update at replay checkpoints, on the mini-batches that
    follow each checkpoint in the run (``--batches`` of them); added to the file's points."""
    config = curve_config(args.curve, args.method, args.seed, None, args.dtype)
    ckpt = np.load(_diag_path("checkpoints", args.curve, args.method, args.seed, args.dtype,
                              ".npz"))
    loss = rnn.readout_loss("softmax")
    path = _diag_path("sharpness", args.curve, args.method, args.seed, args.dtype)
    out = {"curve": args.curve, "seed": args.seed, "dtype": args.dtype,
           "step": config.gamma_theta, "points": {}}
    if path.exists():  # add to the checkpoints measured before
        out["points"] = json.loads(path.read_text())["points"]
    for at in args.at:
        params = rnn.RNNParams(*(ckpt[f"it{at}_{n}"] for n in NAMES))
        data_rng = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(3)[1])
        for _ in range(at):
            temporal_order_batch(data_rng, config.batch_size, config.length, config.positions)
        values = []
        for _ in range(args.batches):  # the next mini-batches of the run
            x, y = temporal_order_batch(data_rng, config.batch_size, config.length,
                                        config.positions)
            values.append(update_sharpness(
                params, x, y, loss, gamma_h=config.gamma_h, r=config.r,
                transition_gradient=config.transition_gradient, step=config.gamma_theta,
            ))
        out["points"][str(at)] = values
        print(at, "γ_θ|μ_max| per mini-batch:", [round(v, 3) for v in values], flush=True)
    _compact(path, out)


def cmd_update(args):
    """One update in detail: rerun the curve to update ``--at`` (and the one before, for
    contrast) and record, on that update's own mini-batch, the profile of the target
    displacements ‖λ_t‖ over t (Eq 2), each example's largest ‖λ_t‖ / ‖λ_T‖, the TP directions'
    norms and the BPTT gradient's, in the run's precision and recomputed in float64.

    Tells a target explosion (λ growing backwards in time, the BPTT gradient ordinary) from an
    exploding gradient that TP inherits (both large)."""
    config = curve_config(args.curve, args.method, args.seed, None, args.dtype)
    wanted = (args.at - 1, args.at)
    every = config.eval_every
    config = dataclasses.replace(config, iterations=-(-args.at // every) * every)
    captured = {}

    def monitor(it, params, x, y, value, directions, loss):
        if it in wanted:
            captured[it] = (params.copy(), x.copy(), y.copy(), directions.copy())

    run(config, monitor=monitor)
    loss = rnn.readout_loss("softmax")
    kw = {"gamma_h": config.gamma_h, "r": config.r, "margin": config.margin,
          "growth_cap": config.target_growth_cap}  # the targets the run's update used
    out = {"curve": args.curve, "method": args.method, "seed": args.seed, "dtype": args.dtype,
           "updates": {}}
    for it, (params, x, y, directions) in sorted(captured.items()):
        rec = {"directions": {n: _norm(getattr(directions, n)) for n in NAMES}}
        for dtype in (args.dtype, "float64"):
            p, xx = params.astype(dtype), x.astype(dtype)
            fp, inverse, lam = _target_displacements(p, xx, y, loss, **kw)
            per_example = np.linalg.norm(lam, axis=2)  # (T, batch)
            _, d = rnn.tp_directions(p, xx, y, loss, **kw,
                                     transition_gradient=config.transition_gradient)
            _, g = rnn.bptt_gradients(p, xx, y, loss)
            rec[dtype] = {
                "loss": float(np.mean(loss.value(fp.z, y))),
                "lam_norm_t": np.linalg.norm(lam, axis=(1, 2)).tolist(),
                "example_max_ratio": (per_example.max(axis=0) / per_example[-1]).tolist(),
                "tp_W_hh": _norm(d.W_hh),
                "bptt_W_hh": _norm(g.W_hh),
                "max_abs_h": float(np.max(np.abs(fp.h_steps))),
                "max_slope": float(np.max(inverse.inverse_slope(fp.h_steps[1:]))),
            }
        out["updates"][str(it)] = rec
        r = rec[args.dtype]
        lam_t = np.asarray(r["lam_norm_t"])
        print(f"update {it}: ‖TP W_hh‖ {r['tp_W_hh']:.4g}, ‖BPTT W_hh‖ {r['bptt_W_hh']:.4g}, "
              f"‖λ_T‖ {lam_t[-1]:.3g}, max_t ‖λ_t‖ {lam_t.max():.3g} at t = "
              f"{int(lam_t.argmax()) + 1}, max |h| {r['max_abs_h']:.4f}", flush=True)
    _compact(_diag_path(f"update{args.at}", args.curve, args.method, args.seed, args.dtype), out)


def _f(v, spec=".3g"):
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _runaway(states):
    """Index of the largest mini-batch loss in a segment and the start of its rise (the
    first of the consecutive updates before it whose loss exceeds twice the segment's median
    before the peak)."""
    loss = np.asarray(states["loss"], dtype=float)
    peak = int(np.nanargmax(loss))
    base = float(np.nanmedian(loss[: peak + 1]))
    start = peak
    while start > 0 and loss[start - 1] > 2 * base:
        start -= 1
    return start, peak


def report_lines() -> list[str]:
    """Markdown tables of every replay, branch and sharpness file in the diagnostics folder."""
    lines = []
    for path in sorted(DIAG.glob("replay_*.json")):
        rec = json.loads(path.read_text())
        tag = f"{rec['curve']} {rec['method'].upper()} seed {rec['seed']} {rec['dtype']}"
        lines += [
            "",
            f"**{tag}** (`{path.name}`; replayed to iteration {rec['eval']['iteration'][-1]}"
            + (f", stopped: {rec['stopped']}" if rec.get("stopped") else "")
            + "). Held-out accuracy at each evaluation below "
            f"{rec['drop_below']:g} after first reaching 99 %, and the diagnosed updates before "
            "it: the mini-batch loss from the start of its rise to its peak, the norm of the "
            "W_hh direction, and the state at the peak: ρ(W_hh), "
            "σ_max/σ_min of W_hh, cond(W_hhᵀW_hh + rI), max_t ‖λ_t‖/‖λ_T‖ (> 1: targets grow "
            "backwards in time), fraction of |h| > 0.999, cosine of TP's W_hh direction with "
            "the BPTT gradient.",
            "",
            "| segment | loss: rise → peak (updates) | ‖d W_hh‖ rise → peak | ρ | σ_max / σ_min | "
            "Gram cond | max ‖λ_t‖/‖λ_T‖ | saturated | cos(TP, BPTT) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for seg in rec["segments"]:
            st = seg["states"]
            a, b = _runaway(st)
            its = st["iteration"]
            lines.append(
                f"| {seg['from']}–{seg['to']} | {_f(st['loss'][a])} → {_f(st['loss'][b])} "
                f"({its[a]}–{its[b]}) | {_f(st['d_W_hh'][a])} → {_f(st['d_W_hh'][b])} | "
                f"{_f(st['rho'][b], '.3f')} | {_f(st['sigma_max'][b], '.3f')} / "
                f"{_f(st['sigma_min'][b], '.3f')} | {_f(st['gram_cond'][b], '.3f')} | "
                f"{_f(st['lam_max_ratio'][b])} | {_f(st['saturated'][b])} | "
                f"{_f(st['cos_W_hh'][b], '.3f')} |"
            )
    for path in sorted(DIAG.glob("branch*.json")):
        rec = json.loads(path.read_text())
        lines += [
            "",
            f"**Branch** `{path.name}`: from the parameters after update {rec['at']}, the same "
            f"{rec['length']} mini-batches of the run under each variant: largest and last "
            "mini-batch loss, the cosines of consecutive W_hh directions over the 5 updates up "
            "to the peak loss (≈ −1: the iterates oscillate across a valley with growing "
            "amplitude).",
            "",
            "| variant | largest loss (update) | last loss | "
            "cos(d_k, d_k−1) of W_hh before the peak |",
            "|---|---|---|---|",
        ]
        for name, v in rec["variants"].items():
            loss = np.asarray(v["loss"], dtype=float)
            k = int(np.nanargmax(loss))
            cos = [c for c in v["cos_prev_W_hh"][max(0, k - 4): k + 1] if c is not None]
            lines.append(
                f"| {name} | {_f(loss[k])} ({rec['at'] + k + 1}) | {_f(loss[-1])} | "
                f"{', '.join(_f(c, '.2f') for c in cos)} |"
            )
    for path in sorted(DIAG.glob("sharpness_*.json")):
        rec = json.loads(path.read_text())
        lines += [
            "",
            f"**Stability of the transition update** `{path.name}`: γ_θ |μ_max|, μ_max the "
            "largest eigenvalue of the Jacobian of TP's transition direction on one "
            "mini-batch (the update is unstable along it when γ_θ|μ_max| > 2), on the "
            "mini-batches that follow each checkpoint.",
            "",
            "| parameters after update | mini-batches | median | largest | fraction > 2 |",
            "|---|---|---|---|---|",
        ]
        for at, vals in sorted(rec["points"].items(), key=lambda kv: int(kv[0])):
            v = np.asarray(vals, dtype=float)
            lines.append(f"| {at} | {v.size} | {np.median(v):.3g} | {v.max():.3g} | "
                         f"{np.mean(v > 2):.2f} |")
    return lines


def plot(replay_path: Path, out_path: Path, segment: int = 0) -> None:
    """Figure of a replay: the whole run (top row) and one diagnosed segment (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec = json.loads(replay_path.read_text())
    w, ev = rec["windows"], rec["eval"]
    seg = rec["segments"][segment] if len(rec["segments"]) > segment else None
    rows = [rec["states"]] + ([seg["states"]] if seg else [])
    fig, axes = plt.subplots(len(rows), 4, figsize=(18, 3.8 * len(rows)), squeeze=False)
    for row, st in enumerate(rows):
        it_s = np.asarray(st["iteration"])

        def series(key, st=st):
            return np.asarray([np.nan if v is None else v for v in st[key]], dtype=float)

        ax = axes[row, 0]
        if row == 0:
            ax.plot(ev["iteration"], ev["accuracy"], "k.-", ms=3, label="held-out accuracy")
            ax.plot(w["iteration"], w["loss_max"], color="C3", lw=0.6,
                    label=f"largest mini-batch loss / {rec['window']} updates")
            ax.plot(w["iteration"], w["loss_mean"], color="C0", lw=0.6, label="mean loss")
        else:
            ax.plot(it_s, series("loss"), color="C3", lw=0.8, label="mini-batch loss")
        ax.set_ylabel("accuracy / loss")
        ax = axes[row, 1]
        for n, c in (("W_hh", "C0"), ("W_xh", "C1"), ("W_hy", "C2")):
            if row == 0:
                ax.semilogy(w["iteration"], w[f"{n}_max"], color=c, lw=0.6,
                            label=f"max ‖d {n}‖ per window")
            else:
                ax.semilogy(it_s, series(f"d_{n}"), color=c, lw=0.8, label=f"‖d {n}‖")
        ax.semilogy(it_s, series("bptt_W_hh"), "k--", lw=0.6, label="‖∂L̄/∂W_hh‖ (BPTT)")
        ax.set_ylabel("update direction norm")
        ax = axes[row, 2]
        for k, label in (("rho", "ρ(W_hh)"), ("sigma_max", "σ_max(W_hh)"),
                         ("sigma_min", "σ_min(W_hh)")):
            ax.plot(it_s, series(k), lw=0.8, label=label)
        ax.set_ylabel("W_hh")
        ax = axes[row, 3]
        ax.semilogy(it_s, series("lam_max_ratio"), color="C0", lw=0.8,
                    label="max_t ‖λ_t‖ / ‖λ_T‖")
        ax.semilogy(it_s, series("saturated") + 1e-6, color="C3", lw=0.8,
                    label="fraction |h| > 0.999 (+1e-6)")
        ax.semilogy(it_s, series("gram_cond"), color="C2", lw=0.8,
                    label="cond(W_hhᵀW_hh + rI)")
        for ax in axes[row]:
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    axes[0, 0].set_title(f"{rec['curve']} {rec['method'].upper()} seed {rec['seed']} "
                         f"{rec['dtype']}: the whole run (states every {rec['every']})",
                         fontsize=9)
    if seg:
        axes[1, 0].set_title(f"every update, {seg['from']}–{seg['to']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)


def main(argv=None):
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("replay", cmd_replay), ("branch", cmd_branch),
                       ("sharpness", cmd_sharpness), ("update", cmd_update)):
        p = sub.add_parser(name)
        p.add_argument("--curve", default="temporal_order_120")
        p.add_argument("--method", default="tp", choices=["tp", "bptt"])
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--dtype", choices=["float64", "float32"], default="float32")
        p.set_defaults(func=func)
        if name == "replay":
            p.add_argument("--until", type=int, help="stop after this many updates")
            p.add_argument("--lookback", type=int, default=500)
            p.add_argument("--checkpoint-every", type=int, default=0,
                           help="also save the parameters every this many updates")
            p.add_argument("--drop-below", type=float, default=0.9)
            p.add_argument("--max-segments", type=int, default=3)
            p.add_argument("--every", type=int, default=50)
            p.add_argument("--window", type=int, default=50)
        elif name == "update":
            p.add_argument("--at", type=int, required=True, help="the update to look at")
        elif name == "sharpness":
            p.add_argument("--at", type=int, action="append", required=True,
                           help="checkpoint iteration (repeatable)")
            p.add_argument("--batches", type=int, default=3)
        else:
            p.add_argument("--at", type=int, required=True, help="checkpoint iteration")
            p.add_argument("--length", type=int, default=500)
            p.add_argument("--clip", type=float, action="append", default=[])
            p.add_argument("--halve", type=float, action="append", default=[],
                           help="also: the readout step, or the transition step, × this")
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
