"""Regularized and linearized inversion of f_l(v) = W_l σ(v) + b_l (seed 002, Secs 2.1–2.2).

Seed 002 inverts an RNN cell h = a(W v + …), nonlinearity *after* the linear map, so its
inverse is "σ⁻¹ then least squares". Our layers put the nonlinearity *before* the linear map,
f_l(v) = W σ(v) + b (W the first n_{l−1} columns of ``net.weights[l]``, b its bias column, 0
without bias), so the inverse is "least squares, then σ⁻¹".

Derivation. Write s = σ(v). For a target τ ∈ R^{n_l} and a reference s̄ ∈ R^{n_{l−1}},

    s* = argmin_s ‖W s + b − τ‖² + r ‖s − s̄‖²,   r > 0

is the solution of the normal equations (WᵀW + rI) s = Wᵀ(τ − b) + r s̄, i.e.

    s* = s̄ + (WᵀW + rI)⁻¹ Wᵀ (τ − b − W s̄) = s̄ + Wᵀ (WWᵀ + rI)⁻¹ (τ − b − W s̄)

(the second form by the push-through identity; we factorize whichever Gram matrix is smaller,
once per call, with a Cholesky factorization). The regularized inverse is then

    f_l⁻¹(τ) := σ⁻¹(π(s*)),

π the projection onto σ's range (identity for leaky ReLU; a clip into (−1, 1) for tanh). As in
seed 002 the projection is applied after the unconstrained minimization, which is the exact
constrained minimizer only when the clip is inactive.

Choice of s̄. With ``reference=h_{l−1}`` we take s̄ = σ(h_{l−1}), the layer's actual forward
input. Then the residual τ − b − W s̄ vanishes at τ = h_l, so f_l⁻¹(h_l) = h_{l−1} *exactly*,
for any r: the inverse passes through the forward pair, the regularizer pulls targets toward
the forward activity (seed 000's premise that targets are small perturbations of h), and the
difference correction of Lee et al. becomes unnecessary at zeroth order. With
``reference=None``, s̄ = 0 (seed 002's choice: Tikhonov shrinkage toward 0), which needs no
forward pass and is what :func:`regularized_decoder` builds on.

As r → 0 on a square invertible W, s* → W⁻¹(τ − b) and f_l⁻¹ becomes the exact inverse, with
an O(r) error.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from cdtp.model.layers import Network

__all__ = [
    "linearized_targets",
    "regularized_decoder",
    "regularized_inverse",
    "regularized_inverse_jacobian",
    "regularized_inverse_targets",
    "regularized_pseudoinverse",
]


def _rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def _linear_part(net: Network, l: int):
    w = net.weights[l]
    n_in = net.sizes[l - 1]
    lin = w[:, :n_in]
    b = w[:, n_in] if net.bias else np.zeros(w.shape[0])
    return lin, b


class _RegularizedSolver:
    """Applies A_r = (WᵀW + rI)⁻¹Wᵀ = Wᵀ(WWᵀ + rI)⁻¹ to a batch; factorizes once."""

    def __init__(self, w: np.ndarray, r: float):
        if r < 0:
            raise ValueError(f"the regularization r must be ≥ 0, got {r}")
        self.w = w
        n_out, n_in = w.shape
        self.primal = n_in <= n_out  # factor the n_in × n_in Gram matrix
        gram = w.T @ w if self.primal else w @ w.T
        gram = gram + r * np.eye(gram.shape[0])
        try:
            self.factor = cho_factor(gram, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(
                f"WᵀW + rI is not positive definite for W of shape {w.shape} and r = {r};"
                " use r > 0 for a rank-deficient layer"
            ) from None

    def apply(self, rhs: np.ndarray) -> np.ndarray:
        """A_r applied to each row of ``rhs`` (batch, n_out) → (batch, n_in)."""
        if self.primal:
            return cho_solve(self.factor, self.w.T @ rhs.T, check_finite=False).T
        return (self.w.T @ cho_solve(self.factor, rhs.T, check_finite=False)).T

    def matrix(self) -> np.ndarray:
        """A_r itself, shape (n_in, n_out)."""
        return self.apply(np.eye(self.w.shape[0])).T


def regularized_pseudoinverse(w: np.ndarray, r: float) -> np.ndarray:
    """A_r = (WᵀW + rI)⁻¹ Wᵀ (the Moore-Penrose pseudo-inverse as r → 0⁺)."""
    return _RegularizedSolver(np.asarray(w, dtype=float), r).matrix()


def _reference_activity(net: Network, reference, batch: int, n_in: int):
    if reference is None:
        return np.zeros((batch, n_in))
    return np.broadcast_to(net.sigma(_rows(reference)), (batch, n_in))


def regularized_inverse(net: Network, l: int, tau, r: float, reference=None) -> np.ndarray:
    """Regularized inverse of layer l at τ (seed 002, Sec 2.1, adapted to f = Wσ + b).

        f_l⁻¹(τ) = σ⁻¹(π(s̄ + (WᵀW + rI)⁻¹ Wᵀ (τ − b − W s̄)))

    (module docstring for the derivation). One Cholesky factorization per call.

    Parameters
    ----------
    tau : array_like (batch, n_l)
    r : float
        Regularization; 0 is allowed when W has full column rank.
    reference : array_like (batch, n_{l−1}), optional
        h_{l−1}: s̄ = σ(h_{l−1}) (then f_l⁻¹(h_l) = h_{l−1} exactly). None: s̄ = 0.

    Returns
    -------
    ndarray (batch, n_{l−1})
    """
    tau = _rows(tau)
    w, b = _linear_part(net, l)
    solver = _RegularizedSolver(w, r)
    s_bar = _reference_activity(net, reference, tau.shape[0], w.shape[1])
    s = s_bar + solver.apply(tau - b - s_bar @ w.T)
    return net.sigma.inverse(net.sigma.project(s))


def regularized_inverse_jacobian(
    net: Network, l: int, tau, r: float, reference=None
) -> np.ndarray:
    """∂f_l⁻¹/∂τ of the regularized inverse, per example (seed 002, Eq 2's ∂_h f⁻¹).

        ∂f_l⁻¹/∂τ = diag(1/σ'(v)) (WᵀW + rI)⁻¹ Wᵀ,   v = f_l⁻¹(τ)

    (where the projection π is inactive; a clipped coordinate has a zero row). Seed 002 writes
    ∂_h f⁻¹(h)ᵀ in its transposed-Jacobian notation; this is the same matrix in the ordinary
    (output × input) convention. s̄ only moves the point v, not A_r.

    Returns
    -------
    ndarray (batch, n_{l−1}, n_l)
    """
    tau = _rows(tau)
    w, b = _linear_part(net, l)
    solver = _RegularizedSolver(w, r)
    a = solver.matrix()
    s_bar = _reference_activity(net, reference, tau.shape[0], w.shape[1])
    s = s_bar + solver.apply(tau - b - s_bar @ w.T)
    sp = net.sigma.project(s)
    active = (sp == s).astype(float)
    v = net.sigma.inverse(sp)
    scale = active / net.sigma.derivative(v)
    return scale[:, :, None] * a[None, :, :]


def linearized_targets(net: Network, h, tau_L, r: float, reference: str = "forward") -> list:
    """Target propagation by linearized regularized inversion (seed 002, Eq 2, adapted).

        τ_{l−1} = h_{l−1} + ∂f_l⁻¹(h_l) (τ_l − h_l)

    with the Jacobian of :func:`regularized_inverse_jacobian` taken at τ = h_l. It agrees with
    the difference form h_{l−1} + f_l⁻¹(τ_l) − f_l⁻¹(h_l) up to O(‖τ_l − h_l‖²) (seed 002,
    Sec 2.2). As r → 0 on square invertible layers, τ_l − h_l → J_l⁻¹(τ_L − h_L): the
    Gauss-Newton direction of seed 000, Eq 22.

    Parameters
    ----------
    reference : {"forward", "zero"}
        s̄ = σ(h_{l−1}) or 0 (module docstring). With "forward" the Jacobian is evaluated at
        v = h_{l−1} exactly.

    Returns
    -------
    list
        [None, τ_1, …, τ_L].
    """
    if reference not in ("forward", "zero"):
        raise ValueError(f"unknown reference {reference!r}; allowed: forward, zero")
    L = net.depth
    taus: list = [None] * (L + 1)
    taus[L] = _rows(tau_L)
    for l in range(L, 1, -1):
        ref = h[l - 1] if reference == "forward" else None
        jac = regularized_inverse_jacobian(net, l, h[l], r, reference=ref)
        taus[l - 1] = h[l - 1] + np.einsum("bij,bj->bi", jac, taus[l] - h[l])
    return taus


def regularized_inverse_targets(
    net: Network,
    h,
    tau_L,
    r: float,
    *,
    difference: bool = False,
    reference: str = "forward",
) -> list:
    """Target propagation with the regularized inverse itself (seed 002, Sec 2.1–2.2).

    - ``difference=False``: τ_{l−1} = f_l⁻¹(τ_l);
    - ``difference=True``: τ_{l−1} = h_{l−1} + f_l⁻¹(τ_l) − f_l⁻¹(h_l) (Lee et al.'s formula with
      the regularized inverse as decoder). With ``reference="forward"``, f_l⁻¹(h_l) = h_{l−1}
      and the two coincide (to rounding).

    Returns
    -------
    list
        [None, τ_1, …, τ_L].
    """
    if reference not in ("forward", "zero"):
        raise ValueError(f"unknown reference {reference!r}; allowed: forward, zero")
    L = net.depth
    taus: list = [None] * (L + 1)
    taus[L] = _rows(tau_L)
    for l in range(L, 1, -1):
        ref = h[l - 1] if reference == "forward" else None
        inv = regularized_inverse(net, l, taus[l], r, reference=ref)
        if difference:
            inv = h[l - 1] + inv - regularized_inverse(net, l, h[l], r, reference=ref)
        taus[l - 1] = inv
    return taus


def regularized_decoder(net: Network, l: int, r: float) -> np.ndarray:
    """Feedback weights Ω_l whose decoder g_l(y) = Ω_l σ̃(y) mimics the regularized inverse.

    Precisely: Ω_l = [A_r, −A_r b] (the bias column only when ``net.bias``), with
    A_r = (WᵀW + rI)⁻¹Wᵀ from W_l's linear part, so that

        g_l(y) = A_r (σ(y) − b).

    Relation to the regularized inverse R(y) = σ⁻¹(A_r (y − b)) (s̄ = 0) of
    :func:`regularized_inverse`, which a decoder of the form Ω σ̃ cannot represent (σ sits on the
    wrong side):

    - σ = identity: g_l = R exactly;
    - σ(0) = 0, σ'(0) = 1 and b = 0 (tanh; leaky ReLU on the positive side): g_l and R are both
      A_r y + O(‖y‖³) for tanh — they agree to first order at y = 0 ("linearized at 0");
    - r → 0 with W square and invertible: A_r → W⁻¹, the ``feedback_init="pinv"`` decoder of
      :func:`cdtp.model.layers.init_network` (which however has a zero bias column).

    It is meant to initialize feedback weights near an inverse, so that the inversion loops
    start with α = ‖I − f'g'‖ well below 1 around small activities.

    Returns
    -------
    ndarray, shape (n_{l−1}, n_l + bias), like ``net.feedback[l]``.
    """
    if not 2 <= l <= net.depth:
        raise ValueError(f"decoders exist for l = 2..{net.depth}, got {l}")
    w, b = _linear_part(net, l)
    a = _RegularizedSolver(w, r).matrix()
    if not net.bias:
        return a
    return np.concatenate([a, -(a @ b)[:, None]], axis=1)
