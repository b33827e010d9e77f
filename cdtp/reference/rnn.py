"""A tanh RNN trained by BPTT or by target propagation with regularized inversion (seed 002).

The model (seed 002, Sec 2, "Problem setting") maps a sequence x_{1:τ} to an output through

    h_t = f_t(h_{t−1}) := tanh(W_xh x_t + W_hh h_{t−1} + b_h),   h_0 = 0,   t = 1, …, τ,
    ŷ  = c(h_τ)       := s(W_hy h_τ + b_y),

with s the softmax (classification, cross-entropy loss) or the identity (regression, squared
error). Arrays are batched: inputs ``x`` have shape (batch, T, d); the loss of a mini-batch is
the mean of the per-example losses.

Two ways of computing an update:

* :func:`bptt_gradients` — back-propagation through time, written out by hand.
* :func:`tp_directions` — seed 002's target propagation: output target (Eq 1), targets carried
  back in time through the regularized inverse of Sec 2.1, either linearized (Eq 2) or by the
  difference formula of Lee et al. (2015) (Sec 2.2), and the transition parameters moved by a
  gradient step on Σ_t ½‖f_t(h_{t−1}) − v_t‖² (Eq 3). The readout (W_hy, b_y) gets its plain
  loss gradient in both methods.

The regularized inverse is encoded once per update (Sec 3, "Arithmetic complexity"): one Cholesky
factorization of W_hhᵀW_hh + rI, from which g_θ = (W_hhᵀW_hh + rI)⁻¹W_hhᵀ is formed with one
triangular solve, and then reused for every time step and every sequence of the batch, so the
per-step cost of the backward pass is one (batch × p) × (p × p) product, as in BPTT.

Projection margin. tanh's range (−1, 1) is open, so π clips into [−1 + ε, 1 − ε]; ε is
``margin`` (default 1e-6). The linearized recursion multiplies each displacement by the inverse's
slope 1/(1 − h²), which is up to ~1/(2ε) for a nearly saturated unit; in our runs (see
``benchmarks/RNN_TP.md``) ε = 1e-6 let a single saturated unit blow the targets up, and ε = 0.1
(slope ≤ 5.3, zero beyond |h| = 0.9) kept TP finite. This is an implementation choice the paper
does not specify.

Initialization. Seed 002 defers its initialization details to an appendix that is not part of
the text we have; its Sec 3 recommends orthonormal recurrent weights ("By initializing the weight
matrices as orthonormal matrices, the differences between the two oracles can be closer"). We use
a Haar-random orthogonal W_hh, Gaussian W_xh and W_hy with variance 1/fan-in, and zero biases
(:func:`init_params`); this choice is ours and documented as such.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from cdtp.losses import Loss, SoftmaxCrossEntropy, SquaredError
from cdtp.nonlinearities import get_nonlinearity

__all__ = [
    "READOUTS",
    "ForwardPass",
    "RNNParams",
    "RegularizedInverse",
    "bptt_gradients",
    "forward",
    "init_params",
    "output_target",
    "propagate_targets",
    "readout_loss",
    "sgd_step",
    "tp_directions",
    "transition_update",
]

#: Readout kinds: the output nonlinearity s and the loss ℓ it is paired with (seed 002, Sec 4).
READOUTS = ("softmax", "linear")

#: Target propagation rules of Sec 2.2.
TARGET_RULES = ("linearized", "difference")

_TANH = get_nonlinearity("tanh")


@dataclass
class RNNParams:
    """Parameters θ = (W_hh, W_xh, b_h, W_hy, b_y) of the RNN (seed 002, Sec 2).

    Attributes
    ----------
    W_xh : ndarray, shape (p, d)
        Input-to-hidden weights.
    W_hh : ndarray, shape (p, p)
        Hidden-to-hidden (transition) weights.
    b_h : ndarray, shape (p,)
        Hidden bias.
    W_hy : ndarray, shape (k, p)
        Readout weights.
    b_y : ndarray, shape (k,)
        Readout bias.
    """

    W_xh: np.ndarray
    W_hh: np.ndarray
    b_h: np.ndarray
    W_hy: np.ndarray
    b_y: np.ndarray

    @property
    def names(self) -> tuple[str, ...]:
        """Field names, in declaration order."""
        return tuple(f.name for f in fields(self))

    @property
    def n_hidden(self) -> int:
        """Hidden-state dimension p."""
        return self.W_hh.shape[0]

    def copy(self) -> RNNParams:
        """Deep copy."""
        return RNNParams(*(getattr(self, n).copy() for n in self.names))

    def astype(self, dtype) -> RNNParams:
        """Copy with every array cast to ``dtype``."""
        return RNNParams(*(getattr(self, n).astype(dtype) for n in self.names))

    def is_finite(self) -> bool:
        """True if no entry is NaN or ±Inf."""
        return all(np.all(np.isfinite(getattr(self, n))) for n in self.names)


def init_params(
    n_inputs: int,
    n_hidden: int,
    n_outputs: int,
    rng: np.random.Generator,
    *,
    input_scale: float | None = None,
    output_scale: float | None = None,
) -> RNNParams:
    """Seeded initialization: orthogonal W_hh, Gaussian W_xh and W_hy, zero biases.

    W_hh is Haar-distributed on the orthogonal group (QR of a Gaussian matrix with the signs of
    R's diagonal folded into Q), as suggested by seed 002 Sec 3; W_xh ~ N(0, 1/d) and
    W_hy ~ N(0, 1/p) entrywise. The appendix of seed 002 that gives its exact initialization is not
    in the text we have, so the input and readout scales are our choice.

    Parameters
    ----------
    n_inputs, n_hidden, n_outputs : int
        d, p and k.
    rng : numpy.random.Generator
        Source of randomness (no global state).
    input_scale, output_scale : float, optional
        Standard deviations of the entries of W_xh and W_hy; default 1/√d and 1/√p.
    """
    for name, value in (("n_inputs", n_inputs), ("n_hidden", n_hidden), ("n_outputs", n_outputs)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    q, r = np.linalg.qr(rng.standard_normal((n_hidden, n_hidden)))
    w_hh = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    if input_scale is None:
        input_scale = 1.0 / np.sqrt(n_inputs)
    if output_scale is None:
        output_scale = 1.0 / np.sqrt(n_hidden)
    for name, value in (("input_scale", input_scale), ("output_scale", output_scale)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and ≥ 0, got {value!r}")
    w_xh = input_scale * rng.standard_normal((n_hidden, n_inputs))
    w_hy = output_scale * rng.standard_normal((n_outputs, n_hidden))
    return RNNParams(
        W_xh=w_xh, W_hh=w_hh, b_h=np.zeros(n_hidden), W_hy=w_hy, b_y=np.zeros(n_outputs)
    )


def readout_loss(readout: str) -> Loss:
    """The loss paired with a readout: softmax → cross-entropy, linear → ½‖ŷ − y‖².

    The loss acts on the readout's pre-activation z = W_hy h_τ + b_y (the softmax is folded into
    :class:`~cdtp.losses.SoftmaxCrossEntropy`).
    """
    if readout == "softmax":
        return SoftmaxCrossEntropy()
    if readout == "linear":
        return SquaredError()
    raise ValueError(f"unknown readout {readout!r}; allowed: {', '.join(READOUTS)}")


@dataclass(frozen=True)
class ForwardPass:
    """Everything a backward pass needs from the forward pass.

    Attributes
    ----------
    x : ndarray, shape (batch, T, d)
        Inputs.
    h : ndarray, shape (batch, T + 1, p)
        Hidden states, ``h[:, 0] = h_0 = 0`` and ``h[:, t] = h_t``.
    z : ndarray, shape (batch, k)
        Readout pre-activation W_hy h_T + b_y.
    """

    x: np.ndarray
    h: np.ndarray
    z: np.ndarray


def _check_inputs(params: RNNParams, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (batch, T, d), got shape {x.shape}")
    if x.shape[2] != params.W_xh.shape[1]:
        raise ValueError(
            f"x has {x.shape[2]} input channels but W_xh expects {params.W_xh.shape[1]}"
        )
    if x.shape[1] < 1:
        raise ValueError("sequences must have at least one time step")
    return x


def forward(params: RNNParams, x: np.ndarray) -> ForwardPass:
    """Run h_t = tanh(W_xh x_t + W_hh h_{t−1} + b_h) from h_0 = 0 and read out h_T.

    Parameters
    ----------
    params : RNNParams
    x : ndarray, shape (batch, T, d)
    """
    x = _check_inputs(params, x)
    batch, n_steps, _ = x.shape
    dtype = np.result_type(params.W_hh.dtype, x.dtype, np.float32)
    # Input drive of every step in one product: (batch, T, d) @ (d, p).
    drive = x @ params.W_xh.T.astype(dtype, copy=False) + params.b_h
    h = np.zeros((batch, n_steps + 1, params.n_hidden), dtype=dtype)
    w_hh_t = params.W_hh.T
    for t in range(1, n_steps + 1):
        h[:, t] = np.tanh(drive[:, t - 1] + h[:, t - 1] @ w_hh_t)
    z = h[:, -1] @ params.W_hy.T + params.b_y
    return ForwardPass(x=x, h=h, z=z)


def _readout_gradients(params: RNNParams, fp: ForwardPass, y, loss: Loss):
    """Mean loss, ∂ℓ_i/∂h_T per example, and the readout gradients of the mean loss."""
    batch = fp.z.shape[0]
    value = float(np.mean(loss.value(fp.z, y)))
    dz = loss.gradient(fp.z, y)  # per example, (batch, k)
    h_last = fp.h[:, -1]
    grad_w_hy = dz.T @ h_last / batch
    grad_b_y = dz.sum(axis=0) / batch
    dh_last = dz @ params.W_hy  # ∂ℓ_i/∂h_T per example, (batch, p)
    return value, dh_last, grad_w_hy, grad_b_y


def _transition_gradients(params: RNNParams, fp: ForwardPass, du: np.ndarray):
    """(W_xh, W_hh, b_h) gradients from pre-activation errors du (batch, T, p), batch-averaged.

    This is Σ_t ∂_θ f_t(h_{t−1}) applied to the per-step errors, done as one product over all
    (example, step) pairs.
    """
    batch, n_steps, p = du.shape
    du_flat = du.reshape(batch * n_steps, p)
    h_prev = fp.h[:, :-1].reshape(batch * n_steps, p)
    x_flat = fp.x.reshape(batch * n_steps, -1)
    grad_w_hh = du_flat.T @ h_prev / batch
    grad_w_xh = du_flat.T @ x_flat / batch
    grad_b_h = du_flat.sum(axis=0) / batch
    return grad_w_xh, grad_w_hh, grad_b_h


def bptt_gradients(
    params: RNNParams, x: np.ndarray, y: np.ndarray, loss: Loss
) -> tuple[float, RNNParams]:
    """Mean mini-batch loss and its exact gradient by back-propagation through time.

    With δ_T = ∂ℓ/∂h_T, the recursion is du_t = δ_t ⊙ (1 − h_t²), δ_{t−1} = W_hhᵀ du_t, and
    ∂ℓ/∂W_hh = Σ_t du_t h_{t−1}ᵀ, ∂ℓ/∂W_xh = Σ_t du_t x_tᵀ, ∂ℓ/∂b_h = Σ_t du_t (seed 002,
    Sec 3, "Bounding the difference…", chain rule).

    Parameters
    ----------
    params : RNNParams
    x : ndarray, shape (batch, T, d)
    y : ndarray, shape (batch, k)
        One-hot labels (softmax readout) or regression targets (linear readout).
    loss : Loss
        From :func:`readout_loss`.

    Returns
    -------
    loss_value : float
        Mean loss over the batch.
    grads : RNNParams
        Gradient of the mean loss, one array per parameter.
    """
    fp = forward(params, x)
    value, delta, grad_w_hy, grad_b_y = _readout_gradients(params, fp, y, loss)
    batch, n_steps, p = fp.h.shape[0], fp.h.shape[1] - 1, fp.h.shape[2]
    slope = 1.0 - fp.h[:, 1:] ** 2  # tanh'(u_t) for all t at once
    du = np.empty((batch, n_steps, p), dtype=fp.h.dtype)
    w_hh = params.W_hh
    for t in range(n_steps, 0, -1):
        du[:, t - 1] = delta * slope[:, t - 1]
        delta = du[:, t - 1] @ w_hh
    grad_w_xh, grad_w_hh, grad_b_h = _transition_gradients(params, fp, du)
    return value, RNNParams(grad_w_xh, grad_w_hh, grad_b_h, grad_w_hy, grad_b_y)


class RegularizedInverse:
    """Regularized inverse of the transition f_t (seed 002, Sec 2.1), encoded once.

        f_t⁻¹(v) = (W_hhᵀW_hh + rI)⁻¹ W_hhᵀ (a⁻¹(π(v)) − W_xh x_t − b_h),

    π the clip into tanh's range (−1, 1) with ``margin`` inside each end. Construction does the
    whole O(p³) work of Sec 3's 𝒫(f⁻¹): a Cholesky factorization of W_hhᵀW_hh + rI
    (``scipy.linalg.cho_factor``) and one solve that forms g_θ = (W_hhᵀW_hh + rI)⁻¹W_hhᵀ. After
    that, every time step and every sequence of a batch costs one matrix product.

    Parameters
    ----------
    params : RNNParams
    r : float
        Regularization r ≥ 0. With r = 0 the Gram matrix must be positive definite (W_hh of full
        rank); otherwise ``numpy.linalg.LinAlgError`` is raised.
    margin : float
        Distance ε kept from ±1 by the projection π. tanh's range (−1, 1) is open, so a
        projection onto it needs a closed subset [−1 + ε, 1 − ε]; ε is a free choice of the
        implementation. It also bounds the inverse's slope 1/(1 − h²) by about 1/(2ε), and
        the slope is 0 (the clip's derivative) for units saturated beyond 1 − ε, so a
        saturated unit passes no target back. Must be in (0, 1).
    """

    def __init__(self, params: RNNParams, r: float, margin: float = 1e-6):
        if not np.isfinite(r) or r < 0:
            raise ValueError(f"the regularization r must be finite and ≥ 0, got {r!r}")
        self.params = params
        self.r = float(r)
        if not 0.0 < margin < 1.0:
            raise ValueError(f"the projection margin must be in (0, 1), got {margin!r}")
        self.margin = float(margin)
        w = params.W_hh
        gram = w.T @ w + self.r * np.eye(w.shape[0], dtype=w.dtype)
        self.factor = cho_factor(gram, lower=True, check_finite=False)
        self.g = cho_solve(self.factor, w.T, check_finite=False)  # (WᵀW + rI)⁻¹Wᵀ, (p, p)
        self._g_t = np.ascontiguousarray(self.g.T)

    def project(self, v: np.ndarray) -> np.ndarray:
        """π: clip into (−1 + margin, 1 − margin)."""
        return _TANH.project(v, margin=self.margin)

    def pre_activation(self, v: np.ndarray) -> np.ndarray:
        """a⁻¹(π(v)) = arctanh of the projected target."""
        return np.arctanh(self.project(v))

    def __call__(self, v: np.ndarray, x_t: np.ndarray) -> np.ndarray:
        """f_t⁻¹(v) for a batch of targets ``v`` (batch, p) and inputs ``x_t`` (batch, d)."""
        residual = self.pre_activation(v) - x_t @ self.params.W_xh.T - self.params.b_h
        return residual @ self._g_t

    def inverse_slope(self, h: np.ndarray) -> np.ndarray:
        """Elementwise derivative of a⁻¹∘π at ``h``: 1/(1 − h²) inside the clip range, 0 outside."""
        bound = (1.0 - self.margin) ** 2
        h2 = h * h
        inside = h2 < bound
        np.minimum(h2, bound, out=h2)  # keeps 1 − h² ≥ 2ε − ε² > 0
        slope = np.reciprocal(np.subtract(1.0, h2, out=h2), out=h2)
        slope *= inside
        return slope

    def jacobian_vector(self, h_t: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """∂_h f_t⁻¹(h_t)ᵀ dv = g_θ diag((a⁻¹∘π)′(h_t)) dv, row by row (Eq 2).

        In seed 002's notation ∂_h f⁻¹ is the transposed Jacobian, so this is the directional
        derivative of f_t⁻¹ at h_t along dv. It does not depend on x_t.
        """
        return (dv * self.inverse_slope(h_t)) @ self._g_t

    def difference(self, h_t: np.ndarray, v_t: np.ndarray) -> np.ndarray:
        """f_t⁻¹(v_t) − f_t⁻¹(h_t) (Lee et al. 2015; seed 002 Sec 2.2); x_t and b_h cancel."""
        return (self.pre_activation(v_t) - self.pre_activation(h_t)) @ self._g_t


def output_target(h_last: np.ndarray, dh_last: np.ndarray, gamma_h: float) -> np.ndarray:
    """Eq 1: v_τ = h_τ − γ_h ∂_h ℓ(y, c_θ(h_τ)), per example."""
    return h_last - gamma_h * dh_last


def propagate_targets(
    fp: ForwardPass,
    v_last: np.ndarray,
    inverse: RegularizedInverse,
    rule: str = "linearized",
) -> np.ndarray:
    """Carry the output target back in time (seed 002, Eq 2 or the difference formula).

    ``rule="linearized"`` (Eq 2): v_{t−1} = h_{t−1} + ∂_h f_t⁻¹(h_t)ᵀ (v_t − h_t).
    ``rule="difference"`` (Lee et al. 2015): v_{t−1} = h_{t−1} + f_t⁻¹(v_t) − f_t⁻¹(h_t).

    The recursion is run on displacements λ_t = v_t − h_t (Sec 3), which is the same arithmetic
    without the cancellation of adding and subtracting h.

    Parameters
    ----------
    fp : ForwardPass
    v_last : ndarray, shape (batch, p)
        The output target v_τ of Eq 1.
    inverse : RegularizedInverse
        Encoded once for this update.
    rule : {"linearized", "difference"}

    Returns
    -------
    v : ndarray, shape (batch, T, p)
        ``v[:, t − 1]`` is the target v_t of step t = 1, …, T.
    """
    if rule not in TARGET_RULES:
        raise ValueError(f"unknown target rule {rule!r}; allowed: {', '.join(TARGET_RULES)}")
    h = fp.h
    n_steps = h.shape[1] - 1
    lam = np.empty_like(h[:, 1:])
    lam[:, -1] = v_last - h[:, -1]
    if rule == "linearized":
        g_t = inverse._g_t
        slope = inverse.inverse_slope(h[:, 2:])  # (a⁻¹∘π)′(h_t) for t = 2 … T at once
        for t in range(n_steps, 1, -1):
            lam[:, t - 2] = (lam[:, t - 1] * slope[:, t - 2]) @ g_t
    else:
        for t in range(n_steps, 1, -1):
            lam[:, t - 2] = inverse.difference(h[:, t], h[:, t] + lam[:, t - 1])
    return h[:, 1:] + lam


def transition_update(params: RNNParams, fp: ForwardPass, v: np.ndarray):
    """Gradient of Eq 3's objective (1/B) Σ_i Σ_t ½‖f_t(h_{t−1}) − v_t‖² w.r.t. (W_xh, W_hh, b_h).

    The forward states h_{t−1} are held fixed (each step is fitted to its own target), so the
    pre-activation error is du_t = (h_t − v_t) ⊙ (1 − h_t²).

    Returns
    -------
    grad_w_xh, grad_w_hh, grad_b_h : ndarray
    """
    h = fp.h[:, 1:]
    du = (h - v) * (1.0 - h * h)
    return _transition_gradients(params, fp, du)


def tp_directions(
    params: RNNParams,
    x: np.ndarray,
    y: np.ndarray,
    loss: Loss,
    *,
    gamma_h: float,
    r: float,
    rule: str = "linearized",
    margin: float = 1e-6,
) -> tuple[float, RNNParams]:
    """Mean loss and seed 002's target-propagation update directions.

    Output target by Eq 1 (per example), targets propagated by Eq 2 (or the difference formula)
    through one :class:`RegularizedInverse` encoded for this update, transition parameters by
    the gradient of Eq 3, readout by the gradient of the loss. Subtracting γ_θ times the returned
    directions is one TP step (:func:`sgd_step`).

    Parameters
    ----------
    params : RNNParams
    x, y : ndarray
        As in :func:`bptt_gradients`.
    loss : Loss
    gamma_h : float
        Target step size γ_h > 0 of Eq 1.
    r : float
        Regularization r ≥ 0 of the inverse (Sec 2.1).
    rule : {"linearized", "difference"}
    margin : float
        The projection π clips into [−1 + margin, 1 − margin] (see :class:`RegularizedInverse`).

    Returns
    -------
    loss_value : float
    directions : RNNParams
        Eq 3 gradients for (W_xh, W_hh, b_h) and loss gradients for (W_hy, b_y).
    """
    if not np.isfinite(gamma_h) or gamma_h <= 0:
        raise ValueError(f"gamma_h must be finite and > 0, got {gamma_h!r}")
    fp = forward(params, x)
    value, dh_last, grad_w_hy, grad_b_y = _readout_gradients(params, fp, y, loss)
    inverse = RegularizedInverse(params, r, margin=margin)
    v_last = output_target(fp.h[:, -1], dh_last, gamma_h)
    v = propagate_targets(fp, v_last, inverse, rule)
    d_w_xh, d_w_hh, d_b_h = transition_update(params, fp, v)
    return value, RNNParams(d_w_xh, d_w_hh, d_b_h, grad_w_hy, grad_b_y)


def sgd_step(params: RNNParams, directions: RNNParams, step_size: float) -> None:
    """In place: θ ← θ − γ_θ d for every parameter (plain SGD, seed 002 Sec 4)."""
    for name in params.names:
        getattr(params, name)[...] -= step_size * getattr(directions, name)
