"""Back-propagation and Gauss-Newton references (seed 000, Sec 4, Eqs 18–23).

Everything is batched along axis 0 and built from the same Network as the target-propagation
code, so the comparisons of Sec 4 (DTP1 target change vs the Gauss-Newton direction vs the
gradient direction) use one set of weights and activities.
"""

from __future__ import annotations

import numpy as np

from cdtp.model.layers import Network, with_bias
from cdtp.model.losses import get_loss

__all__ = [
    "activation_gradients",
    "backprop_gradients",
    "gauss_newton_direction",
    "output_jacobian",
    "sgd_direction",
]


def activation_gradients(net: Network, h, y, loss) -> list:
    """Per-example gradients δ_l = ∂ℓ(h_L, y)/∂h_l for l = 0..L (chain rule of Eq 20).

    δ_L = ∂ℓ/∂h_L (the loss's own gradient) and δ_{l−1} = σ'(h_{l−1}) ⊙ (W_lᵀ δ_l), with W_l's
    bias column dropped (the constant unit has no upstream activity).

    Parameters
    ----------
    h : list of ndarray
        Forward activities [h_0, …, h_L].

    Returns
    -------
    list of ndarray
        [δ_0, …, δ_L], each (batch, n_l).
    """
    loss = get_loss(loss)
    L = net.depth
    deltas: list = [None] * (L + 1)
    deltas[L] = loss.gradient(h[L], y)
    for l in range(L, 0, -1):
        w = net.weights[l][:, : net.sizes[l - 1]]
        deltas[l - 1] = (deltas[l] @ w) * net.sigma.derivative(h[l - 1])
    return deltas


def backprop_gradients(net: Network, x, y, loss) -> list:
    """∂/∂W_l of the batch-mean loss, (1/B) Σ_b ℓ(h_L^b, y^b), by back-propagation.

    ∂ℓ/∂W_l = δ_l σ̃(h_{l−1})ᵀ per example (σ̃ with the bias unit), averaged over the batch —
    the same averaging convention as the DTP updates of :mod:`cdtp.reference.updates`.

    Returns
    -------
    list
        [None, ∂/∂W_1, …, ∂/∂W_L], each shaped like ``net.weights[l]``.
    """
    h = net.forward(np.atleast_2d(np.asarray(x, dtype=float)))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    deltas = activation_gradients(net, h, y, loss)
    batch = h[0].shape[0]
    grads: list = [None]
    for l in range(1, net.depth + 1):
        pre = with_bias(net.sigma(h[l - 1]), net.bias)
        grads.append(deltas[l].T @ pre / batch)
    return grads


def output_jacobian(net: Network, h, l: int) -> np.ndarray:
    """J_l = ∂h_L/∂h_l = f'_L(h_{L−1}) ⋯ f'_{l+1}(h_l) (seed 000, Eq 18), dense, per example.

    Returns
    -------
    ndarray, shape (batch, n_L, n_l)
        The identity for l = L.
    """
    L = net.depth
    if not 0 <= l <= L:
        raise ValueError(f"layer index must be in 0..{L}, got {l}")
    batch = h[l].shape[0]
    jac = np.broadcast_to(np.eye(net.sizes[l]), (batch, net.sizes[l], net.sizes[l])).copy()
    for k in range(l + 1, L + 1):
        jac = net.f_jacobian(k, h[k - 1]) @ jac
    return jac


def sgd_direction(net: Network, h, y, loss, beta: float, l: int) -> np.ndarray:
    """Δ_SGD h_l = −β ∂ℓ/∂h_l = J_lᵀ(τ_L − h_L) (seed 000, Eq 20), shape (batch, n_l)."""
    return -beta * activation_gradients(net, h, y, loss)[l]


def gauss_newton_direction(
    net: Network, h, y, loss, beta: float, l: int, rcond: float = 1e-12
) -> np.ndarray:
    """Gauss-Newton direction (J_lᵀJ_l)⁻¹ Δ_SGD h_l for layer l (seed 000, Eq 22).

    Since Δ_SGD h_l = J_lᵀ(τ_L − h_L) with τ_L − h_L = −β ∂ℓ/∂h_L (Eqs 7, 20), the direction is
    (J_lᵀJ_l)⁻¹ J_lᵀ (τ_L − h_L) = J_l⁺ (τ_L − h_L). It is computed as the pseudo-inverse of the
    dense J_l (:func:`output_jacobian`) applied to τ_L − h_L, which is better conditioned than
    forming J_lᵀJ_l. For non-square J_l (n_l > n_L: J_lᵀJ_l is singular) this is the
    minimum-norm solution of J_l d = τ_L − h_L, i.e. (J_lᵀJ_l)⁺ Δ_SGD h_l; for n_l < n_L it is
    the least-squares solution. Singular values below ``rcond`` × the largest are dropped.

    Returns
    -------
    ndarray, shape (batch, n_l)
    """
    loss = get_loss(loss)
    L = net.depth
    d_out = -beta * loss.gradient(h[L], y)
    jac = output_jacobian(net, h, l)
    return np.einsum("bij,bj->bi", np.linalg.pinv(jac, rcond=rcond), d_out)
