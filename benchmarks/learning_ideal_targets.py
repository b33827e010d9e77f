"""Which targets learn digits online? Ideal target rules without circuit dynamics (research code
for benchmarks/LEARNING.md's exploration section).

Per example: forward pass of a [64, 64, 64, 10] tanh network; output target displacement
δ_L = −β ∂ℓ/∂a_L; below it, by ``rule``: ``inv`` the minimum-norm exact preimage J⁺δ (what an
exact inversion loop computes), ``gn`` the damped Gauss–Newton step Jᵀ(JJᵀ + λI)⁻¹δ, ``bp`` the
backprop transport Jᵀδ; every layer moves by η δ_l σ̃(a_{l−1})ᵀ / ‖σ̃(a_{l−1})‖² (the circuit's
normalized update). ``clip`` bounds ‖δ_l‖, ``infl`` applies the DTP influence factor. Prints
the validation accuracy of seeds 0 and 1:
``python -m benchmarks.learning_ideal_targets "{'rule': 'gn', 'lam': 0.1}" 3``.
"""
# ruff: noqa


def main(argv=None):
    import sys, time, numpy as np, ast
    from cdtp.data.tasks import digits
    t = digits(seed=0)
    rng = np.random.default_rng(0); idx = rng.permutation(t.n_train); nva = 288
    va, tr = idx[:nva], idx[nva:]
    Xtr, Ytr = t.x_train[tr], t.y_train[tr]; Xva, lva = t.x_train[va], t.labels_train[va]
    argv = sys.argv[1:] if argv is None else argv
    kw = ast.literal_eval(argv[0]); ep = int(argv[1])
    rule = kw.get("rule", "gn"); lam = kw.get("lam", 0.1); eta = kw.get("eta", 0.3); beta = kw.get("beta", 0.5)
    sizes = kw.get("sizes", (64, 64, 64, 10)); L = len(sizes) - 1
    def wb(s): return np.append(s, 1.0)
    def sm(z): z = z - z.max(); e = np.exp(z); return e / e.sum()
    res = []
    for seed in (0, 1):
        r = np.random.default_rng(seed)
        W = [None] + [np.concatenate([r.normal(0, 1/np.sqrt(sizes[l-1]), (sizes[l], sizes[l-1])), np.zeros((sizes[l],1))], 1) for l in range(1, L+1)]
        ordr = np.random.default_rng(100 + seed)
        for e in range(ep):
            for i in ordr.permutation(len(Xtr)):
                a = [Xtr[i]]
                for l in range(1, L+1): a.append(W[l] @ wb(np.tanh(a[-1])))
                d = [None] * (L + 1)
                d[L] = -beta * (sm(a[L]) - Ytr[i])
                for l in range(L, 1, -1):
                    J = W[l][:, :-1] * (1 - np.tanh(a[l-1])**2)[None]
                    if rule == "gn":
                        d[l-1] = J.T @ np.linalg.solve(J @ J.T + lam * np.eye(len(J)), d[l])
                    elif rule == "bp":
                        d[l-1] = J.T @ d[l]
                    elif rule == "inv":
                        d[l-1] = np.linalg.lstsq(J, d[l], rcond=None)[0]
                for l in range(1, L+1):
                    s = wb(np.tanh(a[l-1]))
                    sc = 1.0
                    if kw.get("infl"): sc = (d[L] @ d[L]) / (d[l] @ d[l] + 1e-12)
                    if kw.get("clip"): sc = min(1.0, kw["clip"] / (np.linalg.norm(d[l]) + 1e-12))
                    W[l] += eta * sc * np.outer(d[l], s / (s @ s))
            def acc(X, lab):
                a = X
                for l in range(1, L+1): a = np.concatenate([np.tanh(a), np.ones((len(a),1))], 1) @ W[l].T
                return (a.argmax(1) == lab).mean()
        res.append(acc(Xva, lva))
    print(kw, ep, np.round(res, 3))


if __name__ == "__main__":
    main()
