"""Weight updates of differential target propagation (seed 000, Secs 3, 7, 8, 10.2).

Feedforward updates move W_l so that h_l moves to its target τ_l (DTP1, Eqs 10/13), optionally
scaled by the influence factor of Sec 7 (DTP, Eqs 42–43). Decoder updates train Ω_l: the
normalized rule of Algorithm 1 and the two variants Δ1, Δ2 of the continuous circuit (Eqs 51–52).

Conventions (shared with :mod:`cdtp.model.layers` and :mod:`cdtp.reference.cdtp_map`):

- arrays are batched along axis 0; every update returned here is the **average over the batch**
  of the per-example updates, so a batch of one gives the paper's per-example formula and a
  larger batch gives the usual mini-batch step;
- with a bias, the presynaptic vector is σ̃(h_{l−1}) = [σ(h_{l−1}), 1] (``with_bias``)
  and its squared norm **includes the constant 1**: ‖σ̃‖² = ‖σ(h_{l−1})‖² + 1. This is what Eq 10
  gives when the bias is one more weight of the row (∂h_l/∂W_l then has σ̃ in it), it is what the
  circuit's normalization neurons pool, and it keeps the denominator ≥ 1 so a silent layer cannot
  blow the update up.
"""

from __future__ import annotations

import numpy as np

from cdtp.model.layers import Network, with_bias
from cdtp.model.nonlinearities import Nonlinearity

__all__ = [
    "all_layer_updates",
    "decoder_update_delta1",
    "decoder_update_delta2",
    "decoder_update_normalized",
    "dtp1_update",
    "dtp_update",
    "fit_decoder",
    "influence_factor",
    "normalized_presynaptic",
    "reconstruction_loss",
]


def _sigma_and_bias(net_or_sigma, bias):
    if isinstance(net_or_sigma, Network):
        return net_or_sigma.sigma, net_or_sigma.bias if bias is None else bool(bias)
    if isinstance(net_or_sigma, Nonlinearity):
        if bias is None:
            raise ValueError("pass bias=True/False when giving a Nonlinearity instead of a Network")
        return net_or_sigma, bool(bias)
    raise TypeError(f"expected a Network or a Nonlinearity, got {type(net_or_sigma).__name__}")


def _rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def _batch_outer(post: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """Batch average of the outer products post_b pre_bᵀ: (B, n) × (B, m) → (n, m)."""
    return post.T @ pre / post.shape[0]


def normalized_presynaptic(
    net_or_sigma, h_prev, bias: bool | None = None, norm_eps: float = 0.0
) -> np.ndarray:
    """n_{l−1} = σ̃(h_{l−1}) / (‖σ̃(h_{l−1})‖² + ε), row by row (Algorithm 1; Eq 45).

    With a bias the appended 1 is part of σ̃ and of its norm (module docstring).

    Returns
    -------
    ndarray, shape (batch, n_{l−1} + bias)
    """
    sigma, bias = _sigma_and_bias(net_or_sigma, bias)
    s = with_bias(sigma(_rows(h_prev)), bias)
    return s / (np.sum(s * s, axis=1, keepdims=True) + norm_eps)


def dtp1_update(
    net_or_sigma,
    h_prev,
    h,
    tau,
    bias: bool | None = None,
    *,
    weight=None,
    norm_eps: float = 0.0,
) -> np.ndarray:
    """Single-layer Differential Target-Prop update of W_l (seed 000, Eqs 10 and 13).

    For f_l(h_{l−1}) = W_l σ̃(h_{l−1}) the Jacobian ∂h_l/∂W_l has one block σ̃(h_{l−1})ᵀ per
    output unit, so the normalizer (∂h/∂W ∂h/∂Wᵀ)⁻¹ of Eq 10 is ‖σ̃(h_{l−1})‖⁻² I (Eq 14) and

        ΔW_l = (τ_l − h_l) σ̃(h_{l−1})ᵀ / ‖σ̃(h_{l−1})‖²                             (13)

    which, added to W_l, moves h_l exactly to τ_l for that example (Eq 12 holds with no
    remainder because h_l is linear in W_l).

    Parameters
    ----------
    net_or_sigma : Network or Nonlinearity
        Supplies σ (and the bias flag, when a Network).
    h_prev, h, tau : array_like, shape (batch, n) or (n,)
        h_{l−1}, h_l and the target τ_l.
    bias : bool, optional
        Whether σ̃ carries the constant-1 unit; defaults to ``net.bias``.
    weight : array_like, shape (batch,), optional
        A per-example factor multiplying each example's update before the batch average (the
        influence factor of :func:`dtp_update`, or the carried scalar of Sec 9.4).
    norm_eps : float
        ε added to ‖σ̃‖² (0 by default; with a bias the norm is ≥ 1 anyway).

    Returns
    -------
    ndarray, shape (n_l, n_{l−1} + bias)
        The batch average of the per-example updates.
    """
    n_prev = normalized_presynaptic(net_or_sigma, h_prev, bias, norm_eps)
    delta = _rows(tau) - _rows(h)
    if weight is not None:
        delta = delta * np.asarray(weight, dtype=float).reshape(-1, 1)
    return _batch_outer(delta, n_prev)


def influence_factor(h_L, tau_L, h, tau, eps: float = 1e-12) -> np.ndarray:
    """Per-example influence factor ‖τ_L − h_L‖² / (‖τ_l − h_l‖² + ε) (seed 000, Eqs 41–43).

    ε (default 1e-12, the same as the circuit's ``influence_eps``) only guards a layer whose
    target equals its activity; the factor is then ≈ 0·ε⁻¹·‖τ_L − h_L‖², i.e. large only if the
    output is being pushed while that layer is not — which the paper's influence argument
    cannot handle either.

    Returns
    -------
    ndarray, shape (batch,)
    """
    top = np.sum((_rows(tau_L) - _rows(h_L)) ** 2, axis=1)
    own = np.sum((_rows(tau) - _rows(h)) ** 2, axis=1)
    return top / (own + eps)


def dtp_update(
    net_or_sigma,
    h_prev,
    h,
    tau,
    h_L,
    tau_L,
    bias: bool | None = None,
    *,
    eps: float = 1e-12,
    norm_eps: float = 0.0,
) -> np.ndarray:
    """Differential Target-Prop update with the influence factor (seed 000, Eqs 42–43).

        ΔW_l = ‖τ_L − h_L‖² / ‖τ_l − h_l‖² · (τ_l − h_l) σ̃(h_{l−1})ᵀ / ‖σ̃(h_{l−1})‖²      (43)

    i.e. the DTP1 update of :func:`dtp1_update` with each example scaled by its own
    :func:`influence_factor` before the batch average (the factor varies across examples,
    Sec 7: larger steps on examples with a larger output gradient).

    Returns
    -------
    ndarray, shape (n_l, n_{l−1} + bias)
    """
    s = influence_factor(h_L, tau_L, h, tau, eps)
    return dtp1_update(net_or_sigma, h_prev, h, tau, bias, weight=s, norm_eps=norm_eps)


def all_layer_updates(
    net: Network, h, taus, method: str = "dtp1", *, eps: float = 1e-12, weights=None
) -> list:
    """Updates of all layers in parallel (Sec 7; last line of Algorithm 1).

    Parameters
    ----------
    net : Network
    h : list of ndarray
        Forward activities [h_0, …, h_L] (:meth:`Network.forward`).
    taus : list
        Targets [None, τ_1, …, τ_L]; a ``None`` entry gives a ``None`` update.
    method : {"dtp1", "dtp"}
        Eq 13 for every layer, or Eq 43 (influence-weighted).
    weights : list, optional
        Per-layer per-example factors (shape (batch,)), e.g. the scalars carried by
        :func:`cdtp.reference.targets.scaled_targets`; multiplies the chosen update.

    Returns
    -------
    list
        [None, ΔW_1, …, ΔW_L].
    """
    if method not in ("dtp1", "dtp"):
        raise ValueError(f"unknown update method {method!r}; allowed: dtp1, dtp")
    L = net.depth
    out: list = [None] * (L + 1)
    for l in range(1, L + 1):
        if taus[l] is None:
            continue
        w = None if weights is None else weights[l]
        if method == "dtp":
            s = influence_factor(h[L], taus[L], h[l], taus[l], eps)
            w = s if w is None else s * np.asarray(w, dtype=float)
        out[l] = dtp1_update(net, h[l - 1], h[l], taus[l], weight=w)
    return out


# -- decoder (feedback weight) updates --------------------------------------------------------


def decoder_update_normalized(net: Network, l: int, h_prev, h, rate: float = 1.0) -> np.ndarray:
    """Algorithm 1's decoder step: ΔΩ_l = rate · (h_{l−1} − g_l(h_l)) σ̃(h_l)ᵀ / ‖σ̃(h_l)‖².

    The DTP1 rule applied to the decoder with target h_{l−1}: with rate = 1 and one example it
    makes g_l(h_l) = h_{l−1} exactly (Algorithm 1 uses rate = β). Batch-averaged.

    Returns
    -------
    ndarray, shape (n_{l−1}, n_l + bias)
    """
    h_prev, h = _rows(h_prev), _rows(h)
    err = h_prev - net.g(l, h)
    return rate * _batch_outer(err, normalized_presynaptic(net, h))


def decoder_update_delta1(net: Network, l: int, tau_prev, u) -> np.ndarray:
    """Δ1Ω_l = (τ_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ (seed 000, Eq 51), batch-averaged.

    The negative gradient of ½‖τ_{l−1} − g_l(u_l)‖² with respect to Ω_l (Props 6–7).
    """
    u = _rows(u)
    err = _rows(tau_prev) - net.g(l, u)
    return _batch_outer(err, with_bias(net.sigma(u), net.bias))


def decoder_update_delta2(net: Network, l: int, a_prev, u) -> np.ndarray:
    """Δ2Ω_l = (a_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ (seed 000, Eq 52), batch-averaged.

    With τ_{l−1} = γ a_{l−1} + (1 − γ) g_l(u_l) (Eq 49), Δ1 = γ Δ2 (Prop 8, Eq 60).
    """
    u = _rows(u)
    err = _rows(a_prev) - net.g(l, u)
    return _batch_outer(err, with_bias(net.sigma(u), net.bias))


def reconstruction_loss(net: Network, l: int, x, kind: str = "regular") -> np.ndarray:
    """Per-example reconstruction error of the layer-l auto-encoder (Secs 2, 9.2).

    - ``"regular"``: ½‖x − g_l(f_l(x))‖² with x = h_{l−1} (what Δ1 at γ = 1 and Algorithm 1's
      rule descend; Prop 6);
    - ``"reverse"``: ½‖x − f_l(g_l(x))‖² with x = h_l (the condition f∘g ≈ I of Eq 3).

    Returns
    -------
    ndarray, shape (batch,)
    """
    x = _rows(x)
    if kind == "regular":
        d = x - net.g(l, net.f(l, x))
    elif kind == "reverse":
        d = x - net.f(l, net.g(l, x))
    else:
        raise ValueError(f"unknown reconstruction kind {kind!r}; allowed: regular, reverse")
    return 0.5 * np.sum(d * d, axis=1)


def fit_decoder(net: Network, l: int, h_prev, ridge: float = 0.0) -> np.ndarray:
    """Ω_l minimizing the regular reconstruction error over a sample (Sec 9.2), in closed form.

        Ω_l = argmin_Ω (1/B) Σ_b ½‖x_b − Ω σ̃(f_l(x_b))‖² + (ridge/2)‖Ω‖²,   x_b = h_{l−1}^b

    i.e. the fixed point of the Δ1 / Algorithm 1 decoder rules at γ = 1 (Prop 6) on that sample:
    Ω_l = XᵀS (SᵀS + B·ridge·I)⁻¹ with S the rows σ̃(f_l(x_b)). A decoder "trained to
    convergence", for tests and initialization.

    Returns
    -------
    ndarray, shape (n_{l−1}, n_l + bias)
    """
    x = _rows(h_prev)
    s = with_bias(net.sigma(net.f(l, x)), net.bias)
    gram = s.T @ s + x.shape[0] * ridge * np.eye(s.shape[1])
    return np.linalg.solve(gram, s.T @ x).T
