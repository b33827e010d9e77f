"""Target computation and propagation (seed 000, Secs 2–9; Lee et al. 2015 for DTP).

Layer targets are lists indexed like the layers, ``taus[l]`` = τ_l for l = 1..L and
``taus[0] is None`` (there is no decoder into the clamped input layer). Arrays are batched
along axis 0 and every iteration runs on the whole batch at once; an iteration stops when
**every** example has converged.

Single-layer inversions (Secs 5–6) take plain callables ``f`` and ``g`` on batched arrays, so
they apply to any encoder/decoder pair; :func:`layer_maps` gives them for a Network layer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from cdtp.model.layers import Network
from cdtp.model.losses import get_loss
from cdtp.reference.updates import all_layer_updates, decoder_update_normalized

__all__ = [
    "Algorithm1Result",
    "InversionResult",
    "ScaledTargets",
    "algorithm1",
    "combine_targets",
    "contraction",
    "difference_targets",
    "input_correction",
    "inversion_targets",
    "kappa_weights",
    "layer_maps",
    "output_correction",
    "output_target",
    "plain_inverse_targets",
    "scaled_targets",
    "single_step_refinement",
]

#: an increment larger than this (or non-finite) stops an iteration as diverged
DIVERGENCE_LIMIT = 1e12


def _rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def _norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(a * a, axis=1))


def layer_maps(net: Network, l: int):
    """(f_l, g_l) of layer l as callables on batched arrays (for Secs 5–6 iterations)."""
    if not 2 <= l <= net.depth:
        raise ValueError(f"layer {l} has no decoder; decoders exist for l = 2..{net.depth}")
    return (lambda x: net.f(l, x)), (lambda y: net.g(l, y))


def output_target(h_L, y, loss, beta: float) -> np.ndarray:
    """τ_L = h_L − β ∂ℓ(h_L, y)/∂h_L (seed 000, Eq 7), row by row."""
    h_L = _rows(h_L)
    return h_L - beta * get_loss(loss).gradient(h_L, _rows(y))


def plain_inverse_targets(net: Network, tau_L) -> list:
    """Plain target propagation τ_{l−1} = g_l(τ_l), i.e. τ_l = (g_{l+1}∘⋯∘g_L)(τ_L) (Eqs 5, 7).

    Returns
    -------
    list
        [None, τ_1, …, τ_L].
    """
    L = net.depth
    taus: list = [None] * (L + 1)
    taus[L] = _rows(tau_L)
    for l in range(L, 1, -1):
        taus[l - 1] = net.g(l, taus[l])
    return taus


def difference_targets(net: Network, h, tau_L) -> list:
    """Difference target propagation (Lee et al. 2015, Eq 15; seed 002 Sec 2.2).

        τ_{l−1} = h_{l−1} + g_l(τ_l) − g_l(h_l)

    The decoder's reconstruction error at h_l is subtracted, so τ_{l−1} = h_{l−1} when τ_l = h_l
    whatever the decoder. It is also Eq 33 (single-step refinement) with the forward pair
    (x', y') = (h_{l−1}, h_l).

    Returns
    -------
    list
        [None, τ_1, …, τ_L].
    """
    L = net.depth
    taus: list = [None] * (L + 1)
    taus[L] = _rows(tau_L)
    for l in range(L, 1, -1):
        taus[l - 1] = h[l - 1] + (net.g(l, taus[l]) - net.g(l, h[l]))
    return taus


@dataclass
class InversionResult:
    """Outcome of an iterative single-layer inversion (Secs 5–6).

    Attributes
    ----------
    tau_x : ndarray (batch, n_x)
        The input target: g(u) for input correction, the iterate itself for output correction.
    u : ndarray or None
        The corrected decoder input (input correction only).
    iterations : int
        Number of updates performed.
    increments : ndarray (iterations, batch)
        ‖u_t − u_{t−1}‖ (resp. ‖τ_x,t − τ_x,t−1‖) per iteration and example.
    converged : bool
        Every example's last increment fell below ``tol``.
    diverged : bool
        An increment exceeded :data:`DIVERGENCE_LIMIT` or became non-finite.
    """

    tau_x: np.ndarray
    u: np.ndarray | None
    iterations: int
    increments: np.ndarray
    converged: bool
    diverged: bool = False

    @property
    def increment_norms(self) -> np.ndarray:
        """Largest increment over the batch, per iteration, shape (iterations,)."""
        if self.increments.size == 0:
            return np.zeros(0)
        return self.increments.max(axis=1)


def _iterate(step, x0, max_iter: int, tol: float):
    """Fixed-point loop x ← x + step(x), recording per-example increment norms."""
    x = _rows(x0).copy()
    incs = []
    converged = diverged = False
    for _ in range(max_iter):
        d = step(x)
        x = x + d
        n = _norms(d)
        incs.append(n)
        if not np.all(np.isfinite(n)) or n.max() > DIVERGENCE_LIMIT:
            diverged = True
            break
        if n.max() < tol:
            converged = True
            break
    inc = np.array(incs) if incs else np.zeros((0, x.shape[0]))
    return x, inc, converged, diverged


def input_correction(
    f, g, tau_y, u0=None, max_iter: int = 200, tol: float = 1e-10
) -> InversionResult:
    """Invert f at τ_y by correcting the decoder's input (seed 000, Sec 5, Eq 27).

        u ← u + τ_y − f(g(u)) = r(u),   τ_x = g(u)                                       (27)

    A fixed point has f(g(u)) = τ_y, so τ_x = g(u) is an exact preimage (Eqs 25–26). The
    increments contract like αᵗ where α bounds the Lipschitz constant of f∘g − I (Eqs 28–30);
    :func:`contraction` measures it from Jacobians.

    Parameters
    ----------
    f, g : callable
        Encoder and approximate-inverse decoder on batched arrays.
    tau_y : array_like (batch, n_y)
    u0 : array_like, optional
        Start of u; τ_y by default (so τ_x starts at g(τ_y), plain TP).
    max_iter : int
    tol : float
        Stop when every example's ‖u_t − u_{t−1}‖ < tol.
    """
    tau_y = _rows(tau_y)
    u, inc, conv, div = _iterate(
        lambda u: tau_y - f(g(u)), tau_y if u0 is None else u0, max_iter, tol
    )
    return InversionResult(g(u), u, inc.shape[0], inc, conv, div)


def output_correction(
    f, g, tau_y, x0=None, max_iter: int = 200, tol: float = 1e-10
) -> InversionResult:
    """Invert f at τ_y by correcting the decoder's output (seed 000, Sec 6.2, Eq 35).

        τ_x ← m(τ_x) = τ_x + g(τ_y) − g(f(τ_x))                                          (35)

    Converges like αᵗ when the Lipschitz constant of m, i.e. of g∘f − I (Eq 36), is α < 1;
    at the fixed point g(f(τ_x)) = g(τ_y), so f(τ_x) = τ_y when g is injective.

    Parameters
    ----------
    x0 : array_like, optional
        Start of τ_x; g(τ_y) by default, as the paper suggests.
    """
    tau_y = _rows(tau_y)
    g_tau = g(tau_y)
    x, inc, conv, div = _iterate(
        lambda x: g_tau - g(f(x)), g_tau if x0 is None else x0, max_iter, tol
    )
    return InversionResult(x, None, inc.shape[0], inc, conv, div)


def single_step_refinement(f, g, tau_y, x_prime=None, *, u=None) -> np.ndarray:
    """One output-side correction of the decoder (seed 000, Sec 6.1, Eqs 33–34).

    The decoder's error at τ_y is estimated by its auto-encoder error at a nearby pair
    (x', y' = f(x')) (Eq 32), giving

        τ_x = g(τ_y) + x' − g(f(x'))                                                    (33)

    Give either ``x_prime`` (the forward pair x' = h_{l−1} turns this into difference TP) or
    ``u``, the last decoder input of an input-correction run, for x' = g(u) (Eq 34):

        τ_x = g(τ_y) + g(u) − g(f(g(u)))                                                (34)
    """
    if (x_prime is None) == (u is None):
        raise ValueError("give exactly one of x_prime (Eq 33) or u (Eq 34)")
    xp = g(_rows(u)) if x_prime is None else _rows(x_prime)
    return g(_rows(tau_y)) + xp - g(f(xp))


def contraction(net: Network, l: int, point, kind: str = "input") -> tuple:
    """Local contraction factors of the inversion iterations of layer l, from Jacobians.

    - ``"input"`` (Eq 27): the map r(u) = u + τ − f_l(g_l(u)) has Jacobian
      I − f_l'(g_l(u)) g_l'(u) = −ℰ (Eq 28), evaluated at ``point`` = u;
    - ``"output"`` (Eq 35): m(x) = x + g_l(τ) − g_l(f_l(x)) has Jacobian
      I − g_l'(f_l(x)) f_l'(x) (Eq 36), evaluated at ``point`` = x.

    Returns
    -------
    spectral_norm, spectral_radius : ndarray, each (batch,)
        ‖·‖₂ is a local Lipschitz constant (the paper's α); ρ(·) is the asymptotic per-step
        rate of the increments near a fixed point.
    """
    point = _rows(point)
    if kind == "input":
        x = net.g(l, point)
        jac = net.f_jacobian(l, x) @ net.g_jacobian(l, point)
    elif kind == "output":
        y = net.f(l, point)
        jac = net.g_jacobian(l, y) @ net.f_jacobian(l, point)
    else:
        raise ValueError(f"unknown kind {kind!r}; allowed: input, output")
    m = np.eye(jac.shape[-1])[None] - jac
    return np.linalg.norm(m, ord=2, axis=(1, 2)), np.max(np.abs(np.linalg.eigvals(m)), axis=1)


def inversion_targets(
    net: Network,
    h,
    tau_L,
    method: str = "input",
    *,
    max_iter: int = 500,
    tol: float = 1e-12,
    return_results: bool = False,
):
    """Propagate targets top-down, inverting each layer iteratively (seed 000, Secs 5–6).

    For l = L..2, τ_{l−1} ≈ f_l⁻¹(τ_l) by

    - ``"input"``: converged input correction (Eq 27) started at u = τ_l, τ_{l−1} = g_l(u).
      This is what the continuous circuit converges to: at a fixed point of Eq 48 (γ = 0),
      f_l(g_l(u_l)) = τ_l and τ_{l−1} = g_l(u_l) (Props 1–2), the oracle for the CDTP map;
    - ``"output"``: converged output correction (Eq 35) started at g_l(τ_l);
    - ``"input_refined"``: input correction, then the single-step refinement of Eq 34.

    Layer by layer (each waits for the layer above): Algorithm 1 is the all-layers-in-parallel
    alternative. A layer that does not converge within ``max_iter`` raises a RuntimeWarning
    (its last iterate is still used).

    Returns
    -------
    list, or (list, list)
        [None, τ_1, …, τ_L]; with ``return_results`` also [None, None, result_2, …, result_L]
        (the :class:`InversionResult` that produced τ_{l−1}).
    """
    if method not in ("input", "output", "input_refined"):
        raise ValueError(f"unknown method {method!r}; allowed: input, output, input_refined")
    L = net.depth
    taus: list = [None] * (L + 1)
    results: list = [None] * (L + 1)
    taus[L] = _rows(tau_L)
    for l in range(L, 1, -1):
        f, g = layer_maps(net, l)
        if method == "output":
            res = output_correction(f, g, taus[l], max_iter=max_iter, tol=tol)
            taus[l - 1] = res.tau_x
        else:
            res = input_correction(f, g, taus[l], max_iter=max_iter, tol=tol)
            taus[l - 1] = res.tau_x
            if method == "input_refined":
                taus[l - 1] = single_step_refinement(f, g, taus[l], u=res.u)
        if not res.converged:
            warnings.warn(
                f"layer {l} inversion ({method}) did not converge in {res.iterations} iterations"
                f" (last increment {res.increment_norms[-1] if res.iterations else np.nan:.3g},"
                f" tol {tol:g})",
                RuntimeWarning,
                stacklevel=2,
            )
        results[l] = res
    return (taus, results) if return_results else taus


@dataclass
class Algorithm1Result:
    """Outcome of :func:`algorithm1`.

    Attributes
    ----------
    taus : list
        [None, τ_1, …, τ_L] at the end of the relaxation.
    h : list
        Forward activities [h_0, …, h_L].
    iterations : int
    converged : bool
        max over the batch of ‖Δτ_1‖ fell below the stopping precision.
    increments : ndarray (iterations, L + 1)
        Largest ‖Δτ_l‖ over the batch per iteration; column l is layer l (columns 0 and L
        are 0: the input has no target and τ_L is fixed).
    weight_updates : list
        [None, ΔW_1, …, ΔW_L], the DTP updates of the last line (Eq 43), batch-averaged.
    decoder_updates : list
        [None, None, ΔΩ_2, …, ΔΩ_L], the normalized decoder rule with rate β.
    """

    taus: list
    h: list
    iterations: int
    converged: bool
    increments: np.ndarray
    weight_updates: list
    decoder_updates: list


def algorithm1(
    net: Network,
    x,
    y,
    loss,
    beta: float,
    stopping_precision: float = 1e-8,
    max_iter: int = 1000,
    *,
    decoder_step_first: bool = False,
    update_method: str = "dtp",
) -> Algorithm1Result:
    """Parallel multi-layer iterative DTP (seed 000, Sec 8, Algorithm 1), without side effects.

    1. forward pass h_l = W_l σ̃(h_{l−1}); decoder steps ΔΩ_l = β (h_{l−1} − g_l(h_l)) n(h_l)ᵀ;
    2. τ_L = h_L − β ∂ℓ/∂h_L (Eq 7) and τ_{l−1} = g_l(τ_l) top-down;
    3. repeat, for all l = 2..L at once (each from the previous iterate),
       τ_{l−1} ← τ_{l−1} + g_l(τ_l) − g_l(f_l(τ_{l−1}))  (Eq 35),
       until max_b ‖Δτ_1‖ < StoppingPrecision or ``max_iter`` sweeps;
    4. ΔW_l = ‖τ_L − h_L‖²/‖τ_l − h_l‖² (τ_l − h_l) n_{l−1}ᵀ (Eq 43).

    The network is not modified: the updates are returned. In the paper the decoder step of
    line 1 is applied before the relaxation; by default the relaxation here uses the decoders
    as given (so that a caller can test the relaxation on fixed decoders) and
    ``decoder_step_first=True`` reproduces the paper's order on a copy of the network.

    Parameters
    ----------
    update_method : {"dtp", "dtp1"}
        Algorithm 1's influence-weighted update (default), or plain DTP1.
    """
    x = _rows(x)
    y = _rows(y)
    L = net.depth
    h = net.forward(x)
    dec: list = [None] * (L + 1)
    for l in range(2, L + 1):
        dec[l] = decoder_update_normalized(net, l, h[l - 1], h[l], rate=beta)
    work = net
    if decoder_step_first:
        work = net.copy()
        for l in range(2, L + 1):
            work.feedback[l] = work.feedback[l] + dec[l]
    tau_L = output_target(h[L], y, loss, beta)
    taus = plain_inverse_targets(work, tau_L)
    incs = []
    converged = L < 2
    it = 0
    while not converged and it < max_iter:
        new = list(taus)
        row = np.zeros(L + 1)
        for l in range(2, L + 1):
            d = work.g(l, taus[l]) - work.g(l, work.f(l, taus[l - 1]))
            new[l - 1] = taus[l - 1] + d
            row[l - 1] = _norms(d).max()
        taus = new
        incs.append(row)
        it += 1
        if not np.isfinite(row).all():
            break
        converged = row[1] < stopping_precision
    updates = all_layer_updates(work, h, taus, method=update_method)
    inc = np.array(incs) if incs else np.zeros((0, L + 1))
    return Algorithm1Result(taus, h, it, bool(converged), inc, updates, dec)


# -- multiple descendants (Sec 9.3) and numerical stability (Sec 9.4) -----------------------


def kappa_weights(taus, h) -> np.ndarray:
    """Convex weights of several candidate targets for one layer (seed 000, Sec 9.3, Eq 44).

        κ_X ∝ 1 / ‖τ_XA − h_A‖²,   Σ_X κ_X = 1

    so a branch that needs a smaller change of h_A to reach τ_L (more influence) weighs more.
    Computed as (d_min²/d_X²) / Σ_Y (d_min²/d_Y²) per example, which never overflows; branches
    whose target equals h_A (d = 0) share the whole weight equally.

    Parameters
    ----------
    taus : sequence of array_like, each (batch, n_A)
        Candidate targets τ_XA of layer A from its descendants X.
    h : array_like (batch, n_A)

    Returns
    -------
    ndarray, shape (n_branches, batch)
    """
    h = _rows(h)
    d2 = np.stack([np.sum((_rows(t) - h) ** 2, axis=1) for t in taus])
    dmin = d2.min(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dmin > 0, dmin / d2, (d2 == 0).astype(float))
    return ratio / ratio.sum(axis=0, keepdims=True)


def combine_targets(taus, h) -> np.ndarray:
    """τ_A = Σ_X κ_X τ_XA with the κ of :func:`kappa_weights` (seed 000, Eq 44)."""
    k = kappa_weights(taus, h)
    return sum(k[i][:, None] * _rows(t) for i, t in enumerate(taus))


@dataclass
class ScaledTargets:
    """Outcome of :func:`scaled_targets`.

    Attributes
    ----------
    taus : list
        [None, τ̂_1, …, τ̂_L], normalized targets: ‖τ̂_l − h_l‖ = ρ for every layer.
    scalars : list
        [None, s_1, …, s_L], each (batch,): s_l (τ̂_l − h_l) = Δ_DTP h_l (Eq 41) and
        s_l (τ̂_l − h_l) n_{l−1}ᵀ = Δ_DTP W_l (Eq 43).
    magnitudes : list
        [None, m_1, …, m_L], each (batch,): m_l = ‖Δ_DTP1 h_l‖, the size of the unscaled target
        change that the chain would have produced.
    scale : ndarray (batch,)
        ρ.
    """

    taus: list
    scalars: list
    magnitudes: list
    scale: np.ndarray


def scaled_targets(net: Network, h, tau_L, scale=None, method: str = "difference", **kw):
    """Target propagation with uniform-magnitude changes and a carried scalar (Sec 9.4).

    The paper proposes to keep the target change of every layer at one magnitude and to carry
    a scalar along the feedback path "such that their product corresponds to the DTP target
    changes". Derivation (linear regime, β → 0, where every layer's propagation
    δ_{l−1} = G_l δ_l is linear in the target change δ_l = τ_l − h_l):

    - Propagate at fixed magnitude ρ: τ̂_l = h_l + ρ d_l with ‖d_l‖ = 1. The layer below
      receives δ̃_{l−1} = G_l(ρ d_l); the unscaled chain would have had δ_{l−1} = G_l δ_l =
      (m_l/ρ) δ̃_{l−1} where m_l = ‖δ_l‖. Hence m_{l−1} = m_l ‖δ̃_{l−1}‖ / ρ, and layer l−1
      renormalizes d_{l−1} = δ̃_{l−1} / ‖δ̃_{l−1}‖ before passing on.
    - The DTP change (Eq 41) is Δ_DTP h_l = (m_L²/m_l²) δ_l = (m_L²/m_l²)(m_l/ρ)(τ̂_l − h_l),
      so the scalar is s_l = m_L² / (ρ m_l), and it too propagates locally:
      s_L = m_L/ρ,  s_{l−1} = s_l ρ / ‖δ̃_{l−1}‖ — each layer needs only ρ, its own measured
      ‖δ̃_{l−1}‖ and the scalar from above; m_L = ‖τ_L − h_L‖ is the global broadcast of Sec 7.
    - The weight update is the DTP1 rule on the normalized target with s_l as a local learning
      rate: ΔW_l = s_l (τ̂_l − h_l) n_{l−1}ᵀ = Δ_DTP W_l (Eq 43).

    In a linear network with linear propagation this is exactly the DTP update of the unscaled
    chain; with nonlinear layers the two agree to first order in β and ρ (the propagation is
    then evaluated at the uniform magnitude ρ instead of at each layer's own magnitude).

    Parameters
    ----------
    scale : float or array_like (batch,), optional
        ρ; defaults to ‖τ_L − h_L‖ per example (the top target is then unchanged).
    method : {"difference", "linearized", "inversion"}
        The per-layer propagation G: difference TP (:func:`difference_targets`' step),
        seed 002's linearized regularized inverse (needs ``r=``), or converged input correction.
    **kw
        Passed to the propagation (``r`` for "linearized"; ``max_iter``, ``tol`` for
        "inversion").
    """
    L = net.depth
    tau_L = _rows(tau_L)
    delta_L = tau_L - h[L]
    m_L = _norms(delta_L)
    rho = m_L.copy() if scale is None else np.broadcast_to(np.asarray(scale, float), m_L.shape)
    if np.any(rho <= 0):
        raise ValueError("the uniform target magnitude ρ must be > 0")

    def unit(v):
        n = _norms(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n[:, None] > 0, v / n[:, None], 0.0), n

    if method == "linearized":
        from cdtp.reference.regularized import regularized_inverse_jacobian

        r = kw.pop("r")

        def propagate(l, tau_hat):
            jac = regularized_inverse_jacobian(net, l, h[l], r, reference=h[l - 1], **kw)
            return np.einsum("bij,bj->bi", jac, tau_hat - h[l])
    elif method == "difference":

        def propagate(l, tau_hat):
            return net.g(l, tau_hat) - net.g(l, h[l])
    elif method == "inversion":

        def propagate(l, tau_hat):
            f, g = layer_maps(net, l)
            return input_correction(f, g, tau_hat, **kw).tau_x - h[l - 1]
    else:
        raise ValueError(
            f"unknown method {method!r}; allowed: difference, linearized, inversion"
        )

    taus: list = [None] * (L + 1)
    scalars: list = [None] * (L + 1)
    mags: list = [None] * (L + 1)
    d, _ = unit(delta_L)
    taus[L] = h[L] + rho[:, None] * d
    mags[L] = m_L
    with np.errstate(divide="ignore", invalid="ignore"):
        scalars[L] = m_L / rho
        for l in range(L, 1, -1):
            d_tilde = propagate(l, taus[l])
            d, size = unit(d_tilde)
            taus[l - 1] = h[l - 1] + rho[:, None] * d
            mags[l - 1] = mags[l] * size / rho
            scalars[l - 1] = np.where(size > 0, scalars[l] * rho / size, 0.0)
    return ScaledTargets(taus, scalars, mags, np.asarray(rho, dtype=float))
