"""The exploration behind the learning recipe: a fast batched re-implementation of the discrete
CDTP map (``cdtp.reference.cdtp_map``'s stage order; square γ, hard hold, descending gate) with
the options that were tried, run on a validation split of the digits training set.

This is research code kept so that the numbers of the "Exploration" section of
``benchmarks/LEARNING.md`` can be reproduced: ``python -m benchmarks.learning_exploration
"{'diff': True, 'leak': 0.5, 'mirror': True, 'init': 'transpose', 'eta_om': 0, 'beta': 2.0,
'spc': 40, 'duty': 0.25}" 5`` prints, per epoch, the validation accuracy of seeds 0 and 1, the
decoders' reconstruction error and the median P1 residual ‖τ − h‖ / ‖τ − a‖ per layer. It is
not the circuit: the circuit is ``cdtp.brian.engine`` (tested against ``cdtp_map``); options that
helped were then built there. Some options are idealizations that have no circuit counterpart
(``om_noise``: decoders trained on noise-corrupted pairs computed outside the dynamics;
``om_oracle``: decoders refitted by least squares, or set to the scaled transpose, every
``om_oracle`` examples).
"""
# ruff: noqa
import numpy as np
from dataclasses import dataclass

def tanh(x): return np.tanh(x)

@dataclass
class Cfg:
    sizes: tuple = (64, 64, 64, 10)
    spc: int = 20
    duty: float = 0.3
    eta_w: float = 0.3
    eta_om: float = 0.02      # per step (eta_omega * dt)
    beta: float = 0.5
    loss: str = "ce"
    diff: bool = False        # held feedback baseline: m = a + g(u) - g_ref
    om_norm: bool = False     # NLMS for Omega
    om_decay: float = 0.0     # per step weight decay of Omega (times eta_om)
    influence: bool = False
    init: str = "pinv"        # pinv | random | regularized
    reg: float = 0.1
    w_scale: float = 1.0
    fb_scale: float = 1.0
    sigma: str = "tanh"
    slope: float = 0.1
    om_noise: float = 0.0     # noise on a_{l-1} for Omega learning pairs? (not used yet)
    bound: float = 1e3
    clip: float = 0.0
    om_oracle: int = 0
    oracle_kind: str = 'rec'
    oracle_gain: float = 1.0
    mirror: bool = False
    lin_dec: bool = False
    dgate: bool = False
    k_u: float = 1.0
    oracle_noise: float = 0.0
    leak: float = 0.0
    eta_decay: float = 0.0    # eta_w / (1 + eta_decay * epoch)

def make_sigma(cfg):
    if cfg.sigma == "tanh": return np.tanh
    if cfg.sigma == "leaky":
        s = cfg.slope
        return lambda x: np.where(x > 0, x, s * x)
    if cfg.sigma == "softplus":
        return lambda x: np.logaddexp(0, x)
    raise ValueError

def wb(s):  # append bias unit
    return np.concatenate([s, np.ones(s.shape[:-1] + (1,))], -1)

def init(cfg, seed):
    rng = np.random.default_rng(seed)
    n = cfg.sizes; L = len(n) - 1
    W = [None]; Om = [None, None]
    for l in range(1, L + 1):
        w = rng.normal(0, cfg.w_scale / np.sqrt(n[l-1]), (n[l], n[l-1]))
        W.append(np.concatenate([w, np.zeros((n[l], 1))], 1))
    for l in range(2, L + 1):
        w = W[l][:, :n[l-1]]
        if cfg.init == "pinv": om = np.linalg.pinv(w)
        elif cfg.init == "regularized": om = np.linalg.solve(w.T @ w + cfg.reg * np.eye(n[l-1]), w.T)
        elif cfg.init == "transpose": om = w.T * (cfg.oracle_gain / np.linalg.norm(w, 2) ** 2)
        else: om = rng.normal(0, cfg.fb_scale / np.sqrt(n[l]), (n[l-1], n[l]))
        Om.append(np.concatenate([om, np.zeros((n[l-1], 1))], 1) * (1.0 if cfg.init != "random" else 1.0))
    return W, Om

def forward(W, x, sig):
    a = x
    for l in range(1, len(W)):
        a = np.einsum("bij,nj->bni", W[l], wb(sig(a))) if a.ndim == 2 else np.einsum("bij,bnj->bni", W[l], wb(sig(a)))
    return a

def softmax(z):
    z = z - z.max(-1, keepdims=True); e = np.exp(z); return e / e.sum(-1, keepdims=True)

def mv(M, v):  # (B,n,m) x (B,m) -> (B,n)
    return np.matmul(M, v[:, :, None])[:, :, 0]

def train(cfg, seeds, Xtr, Ytr, Xte, lab_te, epochs, order_seed=100, eval_every_epoch=True, Xva=None, lab_va=None, verbose=False, stats=False, out=None, fixed_order=False, init_weights=None):
    sig = make_sigma(cfg)
    B = len(seeds); n = cfg.sizes; L = len(n) - 1
    Ws, Oms = zip(*[init(cfg, s) if init_weights is None else init_weights for s in seeds])
    W = [None] + [np.stack([w[l] for w in Ws]) for l in range(1, L + 1)]
    Om = [None, None] + [np.stack([o[l] for o in Oms]) for l in range(2, L + 1)]
    a = [np.zeros((B, k)) for k in n]
    h = [None] + [np.zeros((B, k)) for k in n[1:]]
    u = [None, None] + [np.zeros((B, k)) for k in n[2:]]
    tau = [None] + [np.zeros((B, k)) for k in n[1:]]
    ref = [None] + [np.zeros((B, k)) for k in n[1:]]
    e_inf = [None] + [np.zeros((B, k)) for k in n[1:]]
    nrng = np.random.default_rng(999)
    cmir = [None, None] + [np.array([cfg.oracle_gain / np.linalg.norm(Ws[b][l][:, :-1], 2) ** 2 for b in range(B)])[:, None, None] for l in range(2, L + 1)]
    nff = sum(1 for k in range(cfg.spc) if (k + 0.5) / cfg.spc < cfg.duty)
    rngs = [np.random.default_rng(order_seed + s) for s in seeds]
    hist = []
    ntr = len(Xtr)
    diverged = np.zeros(B, bool)
    online = []
    for ep in range(epochs):
        p1acc = [[] for _ in range(L + 1)]
        orders = np.stack([np.arange(ntr) if fixed_order else r.permutation(ntr) for r in rngs])  # (B, ntr)
        correct = 0
        for c in range(ntr):
            x = Xtr[orders[:, c]]; y = Ytr[orders[:, c]]
            a[0] = x
            if cfg.om_oracle and c % cfg.om_oracle == 0:
                sub = Xtr[nrng.choice(ntr, 300, replace=False)]
                for b in range(B):
                    acts = [sub]
                    for l in range(1, L + 1):
                        acts.append(wb(sig(acts[-1])) @ W[l][b].T)
                    if cfg.oracle_kind == "transpose":
                        for l in range(2, L + 1):
                            w = W[l][b][:, :-1]
                            c = cfg.oracle_gain / np.linalg.norm(w, 2) ** 2
                            Om[l][b] = np.concatenate([c * w.T, np.zeros((w.shape[1], 1))], 1)
                        continue
                    for l in range(2, L + 1):
                        prev = acts[l - 1] + cfg.oracle_noise * nrng.standard_normal(acts[l - 1].shape)
                        S = wb(sig(wb(sig(prev)) @ W[l][b].T))
                        Om[l][b] = np.linalg.solve(S.T @ S + 1e-3 * np.eye(S.shape[1]), S.T @ prev).T
            for k in range(cfg.spc):
                g = 1.0 if k < nff else 0.0
                p = 1.0 - g
                # stage 1
                su = [None, None] + [wb(u[l] if cfg.lin_dec else sig(u[l])) for l in range(2, L + 1)]
                fb = [None] + [mv(Om[l + 1], su[l + 1]) for l in range(1, L)] + [None]
                # stage 2
                m = [a[0]] + [None] * L
                dtau = [None] * (L + 1)
                for l in range(1, L):
                    if cfg.diff:
                        if g == 1.0: ref[l] = fb[l]
                        gate_d = (1 - np.tanh(a[l]) ** 2) if cfg.dgate else 1.0
                        m[l] = g * a[l] + (1 - g) * (a[l] + gate_d * (fb[l] - ref[l]))
                    else:
                        m[l] = g * a[l] + (1 - g) * fb[l]
                    dtau[l] = m[l] - tau[l]; tau[l] = m[l]
                grad = (softmax(a[L]) - y) if cfg.loss == "ce" else (a[L] - y)
                drv = a[L] - (1 - g) * cfg.beta * grad
                dtau[L] = drv - tau[L]; tau[L] = drv
                if cfg.eta_om and g == 1.0 and cfg.om_noise:  # idealized noisy reconstruction
                    for l in range(2, L + 1):
                        at = a[l - 1] + cfg.om_noise * nrng.standard_normal(a[l - 1].shape)
                        s = wb(sig(mv(W[l], wb(sig(at)))))
                        err = at - mv(Om[l], s)
                        step = cfg.eta_om
                        if cfg.om_norm:
                            step = cfg.eta_om / (np.sum(s * s, -1) + 1e-6)[:, None, None]
                        Om[l] += step * err[:, :, None] * s[:, None, :]
                elif cfg.eta_om and g == 1.0:  # Delta1 = gamma * Delta2
                    for l in range(2, L + 1):
                        err = a[l - 1] - fb[l - 1]
                        s = su[l]
                        step = cfg.eta_om
                        if cfg.om_norm:
                            step = cfg.eta_om / (np.sum(s * s, -1) + 1e-6)[:, None, None]
                        Om[l] += step * err[:, :, None] * s[:, None, :]
                        if cfg.om_decay: Om[l] *= (1 - cfg.om_decay)
                # stage 3
                h_in = [None] + [mv(W[l], wb(sig(m[l - 1]))) for l in range(1, L + 1)]
                # stage 4
                if cfg.influence or cfg.clip:
                    et = np.sum((a[L] - tau[L]) ** 2, -1, keepdims=True)
                    de = [None] * (L + 1)
                    for l in range(1, L + 1):
                        el = np.sum((a[l] - tau[l]) ** 2, -1, keepdims=True)
                        if cfg.clip:
                            e = np.minimum(1.0, cfg.clip / np.sqrt(el + 1e-24)) * (tau[l] - a[l])
                        else:
                            e = et / (el + 1e-12) * (tau[l] - a[l])
                        de[l] = e - e_inf[l]; e_inf[l] = e
                if p:
                    for l in range(1, L + 1):
                        sa = wb(sig(a[l - 1]))
                        npre = sa / (np.sum(sa * sa, -1, keepdims=True) + 1e-12)
                        d = de[l] if (cfg.influence or cfg.clip) else dtau[l]
                        dW = cfg.eta_w / (1 + cfg.eta_decay * ep) * d[:, :, None] * npre[:, None, :]
                        W[l] += dW
                        if cfg.mirror and l >= 2:
                            Om[l][:, :, :-1] += cmir[l] * np.swapaxes(dW[:, :, :-1], 1, 2)
                elif cfg.influence:
                    pass
                # stage 5
                for l in range(1, L + 1):
                    h[l] = h_in[l]
                    if g == 1.0: a[l] = h[l]
                    if l >= 2:
                        u[l] = u[l] + cfg.k_u * (tau[l] - u[l] + (1 - g) * (u[l] - h[l] - cfg.leak * (u[l] - a[l])))
            if stats:
                for l in range(1, L + 1):
                    p1acc[l].append(np.linalg.norm(tau[l] - h[l], axis=-1) / (np.linalg.norm(tau[l] - a[l], axis=-1) + 1e-12))
            if c % 200 == 0:
                big = max(np.abs(u[l]).max() for l in range(2, L + 1))
                if not np.isfinite(big) or big > cfg.bound:
                    if verbose: print("diverged", ep, c)
                    return hist, True
            online.append(np.argmax(a[L], -1) == np.argmax(y, -1)) if False else None
        te = acc(W, Xte, lab_te, sig)
        va = acc(W, Xva, lab_va, sig) if Xva is not None else None
        row = dict(epoch=ep + 1, test=te, val=va)
        if stats:
            row["rec"] = [rec_err(W, Om, Xte, sig, l) for l in range(2, L + 1)]
            row["p1"] = [np.median(np.array(p1acc[l]), 0) for l in range(1, L + 1)]
        hist.append(row)
        if out is not None:
            out['W'], out['Om'] = W, Om
        if verbose: print(row, flush=True)
    return hist, False

def acc(W, X, lab, sig):
    out = forward(W, X, sig)  # (B, N, nL)
    return (np.argmax(out, -1) == lab[None]).mean(1)

def rec_err(W, Om, X, sig, l):
    a = X
    acts = [X]
    for k in range(1, len(W)):
        a = np.einsum("bij,bnj->bni", W[k], wb(sig(a))) if a.ndim == 3 else np.einsum("bij,nj->bni", W[k], wb(sig(a)))
        acts.append(a)
    prev, cur = acts[l - 1], acts[l]
    if prev.ndim == 2: prev = np.broadcast_to(prev, cur.shape[:1] + prev.shape)
    recon = np.einsum("bij,bnj->bni", Om[l], wb(sig(cur)))
    return (np.linalg.norm(recon - prev, axis=-1) / (np.linalg.norm(prev, axis=-1) + 1e-12)).mean(1)


def main(argv=None):
    import sys, time, numpy as np
    from cdtp.data.tasks import digits
    t = digits(seed=0)
    # validation split from train
    rng = np.random.default_rng(0); idx = rng.permutation(t.n_train); nva = 288
    va, tr = idx[:nva], idx[nva:]
    Xtr, Ytr = t.x_train[tr], t.y_train[tr]; Xva, lva = t.x_train[va], t.labels_train[va]
    import ast
    argv = sys.argv[1:] if argv is None else argv
    kw = ast.literal_eval(argv[0]) if argv else {}
    ep = int(argv[1]) if len(argv) > 1 else 3
    cfg = Cfg(**kw)
    t0 = time.time()
    hist, div = train(cfg, [0, 1], Xtr, Ytr, Xva, lva, ep, verbose=False, stats=True)
    print(kw, "div" if div else "", [ (h["epoch"], np.round(h["test"], 3).tolist(), [np.round(r,2).tolist() for r in h["rec"]], [np.round(r,2).tolist() for r in h["p1"]]) for h in hist], f"{time.time()-t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
