"""Which hidden targets learn a task online? Target rules side by side, without circuit dynamics.

Research code behind the "ideal targets" tables of ``benchmarks/LEARNING.md``: it asks whether a
task's gap between the circuit and backprop is in the *direction* of the targets the circuit
computes (then no tuning of the dynamics can close it) or in how well the circuit computes them.

Per example (online, one example per update, the splits, initial weights and example orders of
``benchmarks.learning``): the forward pass h_l = W_l σ̃(h_{l−1}); the output displacement
δ_L = −β ∂ℓ/∂h_L; top-down, the displacement δ_{l−1} of layer l − 1 by one rule:

``bp``
    backprop's transport δ_{l−1} = J_lᵀ δ_l, J_l = W_l diag σ′(h_{l−1}) (with ``upd=sgd``,
    η = the SGD step and β = 1, this *is* online backprop);
``gn``
    the damped Gauss–Newton step J_lᵀ (J_l J_lᵀ + λ′ I)⁻¹ δ_l (``lam`` = λ′);
``loop``
    the circuit's leaky inversion loop with mirrored (transpose-type) feedback and difference
    feedback, run for ``iters`` Euler steps of rate ``k`` from u = h_l (the circuit runs about
    30 in its feedback phase; ``iters`` ≥ 300 solves it): u ← u + k [h_l + δ_l − f_l(h_{l−1}
    + g_l(u) − g_l(h_l)) − λ (u − h_l)], δ_{l−1} = g_l(u) − g_l(h_l), with g_l(u) = c_l W_lᵀ σ(u)
    (the recipe; c_l = gain / ‖W_l(0)‖₂², fixed, as the mirror rule keeps it) or, with
    ``dgate=1``, g_l(u) = σ′(h_{l−1}) ⊙ c_l W_lᵀ (u − h_l) (feedback gated by the slope of the
    receiving neuron, backprop's placement of σ′; linearized, its fixed point is ``gn`` with
    λ′ = λ / c_l); ``renorm=1`` recomputes c_l = gain / ‖W_l‖₂² before every example (a
    diagnostic, not a circuit: it keeps the loop gain, and λ relative to it, at their initial
    values while W grows); ``renorm=2`` scales c_l by ‖W_l(0)‖_F² / ‖W_l‖_F² instead (the sum
    of the squared feedforward weights, a quantity one normalization unit per layer can sum
    from its synapses); ``sim=1`` runs the loops of all layers at once, as the circuit does
    (each Euler step, every layer's loop reads the current feedback of the layer above as its
    target), instead of one after another from the top, each to its own fixed point;

then every layer moves by η δ_l σ̃(h_{l−1})ᵀ / ‖σ̃(h_{l−1})‖² (``upd=nlms``, the circuit's
normalized update) or η δ_l σ̃(h_{l−1})ᵀ (``upd=sgd``); ``hid`` multiplies η of the hidden
layers (l < L), so that the output step (η β) and the hidden steps can be set apart. All
configurations and seeds run as one batch. Example::

    python -m benchmarks.learning_targets --task mnist1d --epochs 10 --seeds 0 1 \\
        "bp upd=sgd eta=0.01 beta=1" "gn lam=0.1" "loop lam=0.5 k=0.5 iters=30"

prints the validation accuracy after every epoch, one column per configuration and seed; with
``--folds 1 2 3`` it trains on three other fit/validation splits of the training set and prints
the last epoch's mean ± sd over folds × seeds (settings are chosen on that, not on one draw of
the validation examples).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from benchmarks.learning import circuit_for, specs, stream
from cdtp.brian.engine import initial_network
from cdtp.model.layers import with_bias

RULES = ("bp", "gn", "loop")
DEFAULTS = {"eta": 0.1, "beta": 2.0, "lam": 0.5, "k": 0.5, "iters": 30, "gain": 0.5,
            "dgate": 0, "upd": "nlms", "renorm": 0, "hid": 1.0, "sim": 0}


def parse_rule(text: str) -> dict:
    """``"gn lam=0.1 eta=0.03"`` → ``{"rule": "gn", "lam": 0.1, "eta": 0.03, ...}``."""
    words = text.split()
    if not words or words[0] not in RULES:
        raise ValueError(f"configuration {text!r}: the first word must be one of {RULES}")
    cfg = dict(DEFAULTS, rule=words[0])
    for w in words[1:]:
        key, _, value = w.partition("=")
        if key not in DEFAULTS:
            raise ValueError(f"configuration {text!r}: unknown key {key!r}; allowed:"
                             f" {', '.join(DEFAULTS)}")
        cfg[key] = value if key == "upd" else float(value)
    if cfg["upd"] not in ("nlms", "sgd"):
        raise ValueError(f"configuration {text!r}: upd must be nlms or sgd")
    return cfg


def _mv(m, v):
    return np.einsum("bij,bj->bi", m, v)


def run(task: str, cfgs: list[dict], seeds, epochs: int, nonlinearity: str = "tanh",
        on: str = "val", verbose: bool = True, fold: int = 0) -> np.ndarray:
    """Train every (configuration, seed) pair; accuracy on ``on`` ("val" or "test") after each
    epoch, shape (epochs, configurations × seeds), configuration-major. ``fold`` seeds the
    fit/validation split (0: the split of the reported rows)."""
    spec = {s.name: s for s in specs()}[task]
    fit, val, test = spec.make(fold)
    evalset = val if on == "val" else test
    sizes, depth = spec.sizes, len(spec.sizes) - 1
    runs = [(c, s) for c in cfgs for s in seeds]
    n = len(runs)
    weights = [None] + [np.zeros((n, sizes[l], sizes[l - 1] + 1)) for l in range(1, depth + 1)]
    xs, ys = [], []
    for b, (_, seed) in enumerate(runs):
        circuit = dataclasses.replace(circuit_for(sizes), seed=seed, nonlinearity=nonlinearity)
        net = initial_network(circuit)
        for l in range(1, depth + 1):
            weights[l][b] = net.weights[l]
        x, y = stream(fit, epochs, seed)
        xs.append(x)
        ys.append(y)
    x_all, y_all = np.stack(xs, 1), np.stack(ys, 1)
    sigma = net.sigma  # the circuit's σ (with its leaky-ReLU slope)

    def col(key):
        return np.array([c[key] for c, _ in runs], dtype=float)

    eta, beta, lam, k, iters = col("eta"), col("beta"), col("lam"), col("k"), col("iters")
    gain, hid = col("gain"), col("hid")
    # the mirror rule keeps Ω_l = c_l W_lᵀ with c_l fixed at its transpose start
    c0 = [None, None] + [gain / np.array([np.linalg.norm(w[:, :-1], 2) ** 2 for w in weights[l]])
                         for l in range(2, depth + 1)]
    rules = np.array([c["rule"] for c, _ in runs])
    dgate = col("dgate").astype(bool)[:, None]
    renorm = col("renorm").astype(int)
    # ‖W_l(0)‖_F² (without the bias column), the reference of ``renorm=2``
    fro0 = [None, None] + [np.array([np.sum(w[:, :-1] ** 2) for w in weights[l]])
                           for l in range(2, depth + 1)]
    nlms = np.array([c["upd"] == "nlms" for c, _ in runs])
    sim = col("sim").astype(bool)
    loop = np.flatnonzero((rules == "loop") & ~sim)
    joint = np.flatnonzero((rules == "loop") & sim)

    def accuracy():
        out = []
        for b in range(n):
            h = evalset.x_test
            for l in range(1, depth + 1):
                h = with_bias(sigma(h), True) @ weights[l][b].T
            out.append(np.mean(np.argmax(h, 1) == evalset.labels_test))
        return out

    curves = []
    for t in range(len(x_all)):
        h, pre, slope = [x_all[t]], [None], [None]
        for l in range(1, depth + 1):
            pre.append(with_bias(sigma(h[-1]), True))
            slope.append(sigma.derivative(h[-1]))  # σ′(h_{l−1})
            h.append(_mv(weights[l], pre[-1]))
        z = h[depth] - h[depth].max(1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        delta = [None] * (depth + 1)
        delta[depth] = -beta[:, None] * (p - y_all[t])
        if len(joint):
            joint_deltas = _joint_loops([None] + [w[joint] for w in weights[1:]],
                                        [None, None] + [cl[joint] for cl in c0[2:]],
                                        [v[joint] for v in h], [None] + [v[joint] for v in
                                                                         slope[1:]],
                                        delta[depth][joint], lam[joint], k[joint],
                                        iters[joint], dgate[joint], sigma)
        for l in range(depth, 1, -1):
            w = weights[l][:, :, :-1]
            jac = w * slope[l][:, None, :]
            out = np.zeros_like(h[l - 1])
            for b in np.flatnonzero(rules == "bp"):
                out[b] = jac[b].T @ delta[l][b]
            for b in np.flatnonzero(rules == "gn"):
                m = jac[b] @ jac[b].T + lam[b] * np.eye(sizes[l])
                out[b] = jac[b].T @ np.linalg.solve(m, delta[l][b])
            if len(loop):
                c_now = c0[l][loop]
                if renorm.any():
                    spectral = gain[loop] / np.linalg.norm(w[loop], 2, axis=(1, 2)) ** 2
                    frob = c0[l][loop] * fro0[l][loop] / np.sum(w[loop] ** 2, axis=(1, 2))
                    c_now = np.select([renorm[loop] == 1, renorm[loop] == 2],
                                      [spectral, frob], c_now)
                out[loop] = _loop(weights[l][loop], c_now, h[l][loop], h[l - 1][loop],
                                  slope[l][loop], delta[l][loop], lam[loop], k[loop],
                                  iters[loop], dgate[loop], sigma)
            if len(joint):
                out[joint] = joint_deltas[l - 1]
            delta[l - 1] = out
        for l in range(1, depth + 1):
            norm = np.where(nlms, np.sum(pre[l] ** 2, 1), 1.0)
            step = eta if l == depth else eta * hid
            weights[l] += (step / norm)[:, None, None] * delta[l][:, :, None] * pre[l][:, None, :]
        if (t + 1) % fit.n_train == 0:
            curves.append(accuracy())
            if verbose:
                print(f"epoch {len(curves)}: " + "  ".join(f"{v:.3f}" for v in curves[-1]),
                      flush=True)
    return np.array(curves)


def _mirrored(w, c):
    """Ω_l = c_l W_lᵀ (without the bias column) for a batch of runs."""
    return c[:, None, None] * np.transpose(w[:, :, :-1], (0, 2, 1))


def _feedback(omega, u, h_l, slope_below, dgate, sigma):
    """g_l(u): slope-gated, σ′(h_{l−1}) ⊙ Ω_l (u − h_l), where ``dgate``; else Ω_l σ(u)."""
    return np.where(dgate, slope_below * _mv(omega, u - h_l), _mv(omega, sigma(u)))


def _loop(w, c, h_l, h_below, slope_below, delta, lam, k, iters, dgate, sigma):
    """The leaky inversion loop of one layer for a batch of runs (see the module docstring)."""
    omega = _mirrored(w, c)

    def g(u):
        return _feedback(omega, u, h_l, slope_below, dgate, sigma)

    ref = g(h_l)
    u, tau = h_l.copy(), h_l + delta
    for it in range(int(iters.max())):
        f = _mv(w, with_bias(sigma(h_below + g(u) - ref), True))
        du = k[:, None] * (tau - f - lam[:, None] * (u - h_l))
        u = u + du * (it < iters)[:, None]
    return g(u) - ref


def _joint_loops(w, c, h, slope, delta_top, lam, k, iters, dgate, sigma):
    """All layers' leaky loops at once (``sim=1``): per Euler step, layer l's target is h_l plus
    the current feedback displacement from layer l + 1 (δ_L at the top). Returns
    [None, δ_1, …, δ_{L−1}]."""
    depth = len(w) - 1
    omega = [None, None] + [_mirrored(w[l], c[l]) for l in range(2, depth + 1)]

    def g(l, u):
        return _feedback(omega[l], u, h[l], slope[l], dgate, sigma)

    ref = [None, None] + [g(l, h[l]) for l in range(2, depth + 1)]
    u = [None, None] + [h[l].copy() for l in range(2, depth + 1)]
    for it in range(int(iters.max())):
        disp = [None] + [g(l + 1, u[l + 1]) - ref[l + 1] for l in range(1, depth)]
        new = list(u)
        for l in range(2, depth + 1):
            tau = h[l] + (delta_top if l == depth else disp[l])
            f = _mv(w[l], with_bias(sigma(h[l - 1] + disp[l - 1]), True))
            du = k[:, None] * (tau - f - lam[:, None] * (u[l] - h[l]))
            new[l] = u[l] + du * (it < iters)[:, None]
        u = new
    return [None] + [g(l + 1, u[l + 1]) - ref[l + 1] for l in range(1, depth)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+", help='e.g. "gn lam=0.1" (see the module docstring)')
    ap.add_argument("--task", default="mnist1d", choices=[s.name for s in specs()])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--nonlinearity", default="tanh", choices=("tanh", "leaky_relu", "softplus"))
    ap.add_argument("--folds", type=int, nargs="+",
                    help="validation folds (seeds of the fit/validation split; 0 is the reported"
                         " rows' split): print the last epoch's mean ± sd over folds × seeds")
    args = ap.parse_args(argv)
    cfgs = [parse_rule(c) for c in args.configs]
    t0 = time.perf_counter()
    if args.folds:
        last = np.stack([run(args.task, cfgs, args.seeds, args.epochs, args.nonlinearity,
                             verbose=False, fold=f)[-1] for f in args.folds])
        last = last.reshape(len(args.folds), len(cfgs), len(args.seeds))
        print(f"({time.perf_counter() - t0:.0f} s) validation after epoch {args.epochs},"
              f" folds {args.folds} × seeds {args.seeds}")
        for j, text in enumerate(args.configs):
            print(f"{text}: {last[:, j].mean():.3f} ± {last[:, j].std(ddof=1):.3f}"
                  f" (per fold {', '.join(f'{v:.3f}' for v in last[:, j].mean(1))})")
        return
    curves = run(args.task, cfgs, args.seeds, args.epochs, args.nonlinearity)
    labels = [f"{c} / seed {s}" for c in args.configs for s in args.seeds]
    print(f"({time.perf_counter() - t0:.0f} s)")
    for j, label in enumerate(labels):
        print(f"{label}: last {curves[-1, j]:.3f}, best {curves[:, j].max():.3f}"
              f" (epoch {int(np.argmax(curves[:, j])) + 1})")


if __name__ == "__main__":
    main()
