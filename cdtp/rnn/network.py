"""A tanh RNN trained by BPTT or by target propagation with regularized inversion (seed 002).

The model (seed 002, Sec 2, "Problem setting") maps a sequence x_{1:τ} to an output through

    h_t = f_t(h_{t−1}) := tanh(W_xh x_t + W_hh h_{t−1} + b_h),   h_0 = 0,   t = 1, …, τ,
    ŷ  = c(h_τ)       := s(W_hy h_τ + b_y),

with s the softmax (classification, cross-entropy loss) or the identity (regression, squared
error). Arrays are batched: inputs ``x`` have shape (batch, T, d).

Two ways of computing an update:

* :func:`bptt_gradients` — back-propagation through time, written out by hand.
* :func:`tp_directions` — seed 002's target propagation: output target (Eq 1), targets carried
  back in time through the regularized inverse of Sec 2.1, either linearized (Eq 2) or by the
  difference formula of Lee et al. (2015) (Sec 2.2), and the transition parameters moved by a
  gradient step on Σ_t ½‖f_t(h_{t−1}) − v_t‖² (Eq 3). The readout (W_hy, b_y) gets its plain
  loss gradient in both methods.

Normalization conventions
-------------------------
These are the conventions of the paper's public code (vroulet/tpri), so that its step sizes
(``lr`` = γ_θ, ``lr_target`` = γ_h, ``reg`` = r) can be used here as they are:

* The mini-batch loss is the **mean** over the batch, L̄ = (1/B) Σ_i ℓ_i. BPTT's gradient and
  the readout's TP direction are gradients of L̄.
* The output target is a step on L̄ (Eq 1): v_τ = h_τ − γ_h ∇_{h_τ} L̄, so example i is displaced
  by −(γ_h/B) ∂ℓ_i/∂h_τ.
* The transition objective of Eq 3 is **summed** over batch and time,
  Σ_i Σ_t ½‖f_t(h_{t−1}) − v_t‖², not averaged.

For the linearized rule (Eq 2) the target recursion is linear in the displacement, so these
conventions give exactly the same directions as "per-example targets v_τ = h_τ − γ_h ∂ℓ_i/∂h_τ
with the Eq 3 objective averaged over the batch"; for the difference rule they do not.

Two details of that code which the paper's text does not state are options here:

* ``transition_gradient``: ``"local"`` is Eq 3 as written, each step fitted with h_{t−1} held
  fixed (Sec 3's d_θ = Σ_t ∂_θ f_t(h_{t−1}) λ_t). ``"through_time"`` is what the public code
  computes: it differentiates Σ_t ½‖h_t(θ) − v_t‖² with the forward states still attached to
  the autograd graph, i.e. back-propagates the per-step errors h_t − v_t through the recurrence
  (one extra BPTT-like sweep).
* ``beyond_margin``: the code's linearized inverse uses the slope 1/(1 − clamp(h, ±(1 − ε))²)
  with ε = 1e-3 (``"clamp"``); ``"zero"`` instead passes no target back through a unit
  saturated beyond 1 − ε (the derivative of the clip).

In the public code the hidden bias is PyTorch's pair b_ih + b_hh, two trained vectors that get
the same gradient, so the effective bias moves by 2γ_θ per step; :class:`SGD` reproduces this
with ``hidden_bias_factor=2``.

The regularized inverse is encoded once per update (Sec 3, "Arithmetic complexity"): one Cholesky
factorization of W_hhᵀW_hh + rI, from which g_θ = (W_hhᵀW_hh + rI)⁻¹W_hhᵀ is formed with one
triangular solve, and then reused for every time step and every sequence of the batch, so the
per-step cost of the backward pass is one (batch × p) × (p × p) product, as in BPTT.

Initialization (:func:`init_params`). ``"orthogonal"`` is the public code's: W_xh, W_hh and W_hy
all (semi-)orthogonal, every singular value 1, zero biases, h_0 = 0. ``"scaled"`` is an earlier
choice of this project: Haar-orthogonal W_hh, Gaussian W_xh and W_hy of chosen scales.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from cdtp.model.losses import Loss, SoftmaxCrossEntropy, SquaredError
from cdtp.model.nonlinearities import get_nonlinearity

__all__ = [
    "BEYOND_MARGIN",
    "INITS",
    "READOUTS",
    "SGD",
    "TARGET_RULES",
    "TRANSITION_GRADIENTS",
    "ForwardPass",
    "MeanSquaredError",
    "RNNParams",
    "RegularizedInverse",
    "bptt_gradients",
    "forward",
    "init_params",
    "output_target",
    "propagate_targets",
    "readout_loss",
    "semi_orthogonal",
    "sgd_step",
    "tp_directions",
    "transition_update",
]

#: Readout kinds: the output nonlinearity s and the loss ℓ it is paired with (seed 002, Sec 4).
#: ``linear`` is ½‖ŷ − y‖²; ``linear_mse`` is PyTorch's ``MSELoss`` (mean over outputs, no ½),
#: which the paper's code uses for the adding problem.
READOUTS = ("softmax", "linear", "linear_mse")

#: Target propagation rules of Sec 2.2.
TARGET_RULES = ("linearized", "difference")

#: How Eq 3's objective is differentiated (see the module docstring).
TRANSITION_GRADIENTS = ("local", "through_time")

#: What the linearized inverse does beyond the projection margin (see the module docstring).
BEYOND_MARGIN = ("clamp", "zero")

#: Initializations of :func:`init_params`.
INITS = ("orthogonal", "scaled")

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


def semi_orthogonal(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random matrix of the given shape whose singular values are all 1.

    Orthonormal columns if rows ≥ columns, orthonormal rows otherwise; Haar-distributed (QR of a
    Gaussian matrix with the signs of R's diagonal folded into Q). The paper's code draws
    U Vᵀ from the SVD of a uniform matrix instead: the same set of matrices, another
    distribution on it.
    """
    rows, cols = shape
    tall = rows >= cols
    q, r = np.linalg.qr(rng.standard_normal((rows, cols) if tall else (cols, rows)))
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return q if tall else q.T


def init_params(
    n_inputs: int,
    n_hidden: int,
    n_outputs: int,
    rng: np.random.Generator,
    *,
    init: str = "orthogonal",
    input_scale: float | None = None,
    output_scale: float | None = None,
) -> RNNParams:
    """Seeded initialization; zero biases in both kinds.

    Parameters
    ----------
    n_inputs, n_hidden, n_outputs : int
        d, p and k.
    rng : numpy.random.Generator
        Source of randomness (no global state).
    init : {"orthogonal", "scaled"}
        ``"orthogonal"`` (the paper's code): W_xh, W_hh and W_hy from :func:`semi_orthogonal`.
        ``"scaled"``: Haar-orthogonal W_hh, W_xh ~ N(0, input_scale²) and
        W_hy ~ N(0, output_scale²) entrywise.
    input_scale, output_scale : float, optional
        Only for ``"scaled"``: standard deviations of the entries of W_xh and W_hy; default
        1/√d and 1/√p.
    """
    for name, value in (("n_inputs", n_inputs), ("n_hidden", n_hidden), ("n_outputs", n_outputs)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    if init == "orthogonal":
        if input_scale is not None or output_scale is not None:
            raise ValueError("input_scale and output_scale only apply to init='scaled'")
        w_xh = semi_orthogonal((n_hidden, n_inputs), rng)
        w_hh = semi_orthogonal((n_hidden, n_hidden), rng)
        w_hy = semi_orthogonal((n_outputs, n_hidden), rng)
    else:
        w_hh = semi_orthogonal((n_hidden, n_hidden), rng)
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


@dataclass(frozen=True)
class MeanSquaredError(Loss):
    """ℓ = ‖h − y‖² / k (PyTorch's ``MSELoss`` per example: mean over the k outputs, no ½)."""

    name: str = "mean_squared_error"

    def value(self, h, y):
        d = np.asarray(h, dtype=float) - y
        return np.mean(d * d, axis=-1)

    def gradient(self, h, y):
        h = np.asarray(h, dtype=float)
        return 2.0 * (h - y) / h.shape[-1]


def readout_loss(readout: str) -> Loss:
    """The loss paired with a readout.

    softmax → cross-entropy, linear → ½‖ŷ − y‖², linear_mse → ‖ŷ − y‖²/k. The loss acts on the
    readout's pre-activation z = W_hy h_τ + b_y (the softmax is folded into
    :class:`~cdtp.model.losses.SoftmaxCrossEntropy`).
    """
    if readout == "softmax":
        return SoftmaxCrossEntropy()
    if readout == "linear":
        return SquaredError()
    if readout == "linear_mse":
        return MeanSquaredError()
    raise ValueError(f"unknown readout {readout!r}; allowed: {', '.join(READOUTS)}")


@dataclass(frozen=True)
class ForwardPass:
    """Everything a backward pass needs from the forward pass.

    Attributes
    ----------
    x : ndarray, shape (batch, T, d)
        Inputs.
    h_steps : ndarray, shape (T + 1, batch, p)
        Hidden states, time-major and C-contiguous: ``h_steps[0] = h_0 = 0`` and
        ``h_steps[t] = h_t``, so that the recurrences of the backward passes work on contiguous
        (batch, p) blocks.
    z : ndarray, shape (batch, k)
        Readout pre-activation W_hy h_T + b_y.
    """

    x: np.ndarray
    h_steps: np.ndarray
    z: np.ndarray

    @property
    def h(self) -> np.ndarray:
        """Hidden states batch-major, shape (batch, T + 1, p): ``h[:, t] = h_t`` (a view)."""
        return self.h_steps.transpose(1, 0, 2)


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

    The states are stored time-major (``ForwardPass.h_steps``, each step one contiguous
    (batch, p) block) and every step is computed in place into its block: one matrix product,
    one addition, one tanh, no temporary arrays.

    Parameters
    ----------
    params : RNNParams
    x : ndarray, shape (batch, T, d)
    """
    x = _check_inputs(params, x)
    batch, n_steps, _ = x.shape
    dtype = np.result_type(params.W_hh.dtype, x.dtype, np.float32)
    # Input drive of every step in one product: (batch, T, d) @ (d, p), then time-major.
    drive = x @ params.W_xh.T.astype(dtype, copy=False) + params.b_h
    drive = np.ascontiguousarray(drive.transpose(1, 0, 2), dtype=dtype)
    h_steps = np.empty((n_steps + 1, batch, params.n_hidden), dtype=dtype)
    h_steps[0] = 0.0
    w_hh_t = np.ascontiguousarray(params.W_hh.T, dtype=dtype)
    for t in range(1, n_steps + 1):
        h_t = h_steps[t]
        np.matmul(h_steps[t - 1], w_hh_t, out=h_t)
        h_t += drive[t - 1]  # floating-point addition commutes: = drive + W_hh h_{t−1}
        np.tanh(h_t, out=h_t)
    z = h_steps[-1] @ params.W_hy.T + params.b_y
    return ForwardPass(x=x, h_steps=h_steps, z=z)


def _readout_gradients(params: RNNParams, fp: ForwardPass, y, loss: Loss):
    """Mean loss L̄, ∂L̄/∂h_T per example (= (1/B) ∂ℓ_i/∂h_T), and the readout gradients of L̄."""
    batch = fp.z.shape[0]
    value = float(np.mean(loss.value(fp.z, y)))
    dz = loss.gradient(fp.z, y) / batch  # ∂L̄/∂z_i, (batch, k)
    h_last = fp.h_steps[-1]
    grad_w_hy = dz.T @ h_last
    grad_b_y = dz.sum(axis=0)
    dh_last = dz @ params.W_hy  # ∂L̄/∂h_T,i, (batch, p)
    return value, dh_last, grad_w_hy, grad_b_y


def _transition_gradients(fp: ForwardPass, du_steps: np.ndarray):
    """(W_xh, W_hh, b_h) gradients Σ_i Σ_t from pre-activation errors du (T, batch, p).

    This is Σ_t ∂_θ f_t(h_{t−1}) applied to the per-step errors, done as one product over all
    (step, example) pairs in their time-major order (no transposing copies); any 1/B belongs in
    ``du_steps``.
    """
    n_steps, batch, p = du_steps.shape
    du_flat = du_steps.reshape(n_steps * batch, p)
    h_prev = fp.h_steps[:-1].reshape(n_steps * batch, p)
    x_flat = fp.x.transpose(1, 0, 2).reshape(n_steps * batch, -1)
    grad_w_hh = du_flat.T @ h_prev
    grad_w_xh = du_flat.T @ x_flat
    grad_b_h = du_flat.sum(axis=0)
    return grad_w_xh, grad_w_hh, grad_b_h


def _backprop_through_time(
    params: RNNParams, fp: ForwardPass, last: np.ndarray, errors: np.ndarray | None = None
) -> np.ndarray:
    """Pre-activation errors du_t (T, batch, p) of a loss with ∂/∂h_T = ``last`` + e_T.

    δ_T = last (+ e_T), du_t = δ_t ⊙ (1 − h_t²), δ_{t−1} = W_hhᵀ du_t + e_{t−1} (chain rule
    through h_t = tanh(W_xh x_t + W_hh h_{t−1} + b_h)). ``errors`` (T, batch, p), time-major,
    holds e_1 … e_T, the gradients injected at every step, or is None (a loss on h_T only).
    """
    h_steps = fp.h_steps
    n_steps = h_steps.shape[0] - 1
    slope = 1.0 - h_steps[1:] ** 2  # tanh'(u_t) for all t at once
    du = np.empty_like(slope)
    w_hh = np.ascontiguousarray(params.W_hh)
    delta = last if errors is None else errors[-1]
    buf = np.empty_like(h_steps[0])
    for t in range(n_steps, 0, -1):
        np.multiply(delta, slope[t - 1], out=du[t - 1])
        if t > 1:
            np.matmul(du[t - 1], w_hh, out=buf)
            if errors is not None:
                buf += errors[t - 2]
            delta = buf
    return du


def bptt_gradients(
    params: RNNParams, x: np.ndarray, y: np.ndarray, loss: Loss
) -> tuple[float, RNNParams]:
    """Mean mini-batch loss L̄ and its exact gradient by back-propagation through time.

    With δ_T = ∂L̄/∂h_T, the recursion is du_t = δ_t ⊙ (1 − h_t²), δ_{t−1} = W_hhᵀ du_t, and
    ∂L̄/∂W_hh = Σ_t du_t h_{t−1}ᵀ, ∂L̄/∂W_xh = Σ_t du_t x_tᵀ, ∂L̄/∂b_h = Σ_t du_t (seed 002,
    Sec 3, "Bounding the difference…", chain rule).

    Parameters
    ----------
    params : RNNParams
    x : ndarray, shape (batch, T, d)
    y : ndarray, shape (batch, k)
        One-hot labels (softmax readout) or regression targets (linear readouts).
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
    value, dh_last, grad_w_hy, grad_b_y = _readout_gradients(params, fp, y, loss)
    du = _backprop_through_time(params, fp, dh_last)
    grad_w_xh, grad_w_hh, grad_b_h = _transition_gradients(fp, du)
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
        projection onto it needs a closed subset [−1 + ε, 1 − ε]. The paper's code uses
        ε = 1e-3 (its ``tol_inv``). Must be in (0, 1).
    beyond_margin : {"clamp", "zero"}
        Slope of a⁻¹∘π used by the linearized rule at a unit with |h| > 1 − ε: ``"clamp"``
        (the paper's code) evaluates 1/(1 − h²) at the clamped h, i.e. 1/(2ε − ε²);
        ``"zero"`` uses the clip's derivative, 0, so a saturated unit passes no target back.
    """

    def __init__(
        self, params: RNNParams, r: float, margin: float = 1e-3, beyond_margin: str = "clamp"
    ):
        if not np.isfinite(r) or r < 0:
            raise ValueError(f"the regularization r must be finite and ≥ 0, got {r!r}")
        if not 0.0 < margin < 1.0:
            raise ValueError(f"the projection margin must be in (0, 1), got {margin!r}")
        if beyond_margin not in BEYOND_MARGIN:
            raise ValueError(
                f"unknown beyond_margin {beyond_margin!r}; allowed: {', '.join(BEYOND_MARGIN)}"
            )
        self.params = params
        self.r = float(r)
        self.margin = float(margin)
        self.beyond_margin = beyond_margin
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
        """Elementwise slope of a⁻¹∘π at ``h``: 1/(1 − h²) inside the clip range.

        Beyond it: 1/(1 − (1 − margin)²) (``"clamp"``) or 0 (``"zero"``).
        """
        bound = (1.0 - self.margin) ** 2
        h2 = h * h
        inside = h2 < bound if self.beyond_margin == "zero" else None
        np.minimum(h2, bound, out=h2)  # keeps 1 − h² ≥ 2ε − ε² > 0
        slope = np.reciprocal(np.subtract(1.0, h2, out=h2), out=h2)
        if inside is not None:
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


def output_target(h_last: np.ndarray, grad_last: np.ndarray, gamma_h: float) -> np.ndarray:
    """Eq 1: v_τ = h_τ − γ_h ∇_{h_τ} L̄, with ``grad_last`` = ∂L̄/∂h_τ per example.

    L̄ is the batch-mean loss, so ``grad_last`` row i is (1/B) ∂ℓ_i/∂h_τ (the paper's code).
    """
    return h_last - gamma_h * grad_last


def propagate_targets(
    fp: ForwardPass,
    v_last: np.ndarray,
    inverse: RegularizedInverse,
    rule: str = "linearized",
    growth_cap: float | None = None,
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
    growth_cap : float or None
        Not in the paper (``None``: off). Per example and step, ‖λ_{t−1}‖ is scaled down to at
        most ``growth_cap`` · ‖λ_t‖ (direction kept), so the displacements cannot grow
        backwards in time by more than this factor per step. The paper's regularization r keeps
        the inverse's gain ‖(WᵀW + rI)⁻¹Wᵀ‖ ≤ 1/(2√r), but Eq 2 multiplies it by the slope
        1/(1 − h²), which near-saturated units make large: benchmarks/RNN_TP.md measured
        targets growing 8 800× over 21 steps at r = 1 (a "target explosion").

    Returns
    -------
    v : ndarray, shape (batch, T, p)
        ``v[:, t − 1]`` is the target v_t of step t = 1, …, T (a batch-major view of a
        time-major array).
    """
    if rule not in TARGET_RULES:
        raise ValueError(f"unknown target rule {rule!r}; allowed: {', '.join(TARGET_RULES)}")
    if growth_cap is not None and not (np.isfinite(growth_cap) and growth_cap > 0):
        raise ValueError(f"growth_cap must be finite and > 0, or None, got {growth_cap!r}")
    h = fp.h_steps  # time-major: h[t] = h_t
    n_steps = h.shape[0] - 1
    lam = np.empty_like(h[1:])  # lam[t − 1] = λ_t
    np.subtract(v_last, h[-1], out=lam[-1])
    if rule == "linearized":
        g_t = inverse._g_t
        slope = inverse.inverse_slope(h[2:])  # (a⁻¹∘π)′(h_t) for t = 2 … T at once
        buf = np.empty_like(h[0])
        for t in range(n_steps, 1, -1):
            np.multiply(lam[t - 1], slope[t - 2], out=buf)
            np.matmul(buf, g_t, out=lam[t - 2])
            if growth_cap is not None:
                _cap_growth(lam[t - 2], lam[t - 1], growth_cap)
    else:
        for t in range(n_steps, 1, -1):
            lam[t - 2] = inverse.difference(h[t], h[t] + lam[t - 1])
            if growth_cap is not None:
                _cap_growth(lam[t - 2], lam[t - 1], growth_cap)
    lam += h[1:]  # v_t = h_t + λ_t
    return lam.transpose(1, 0, 2)


def _cap_growth(earlier: np.ndarray, later: np.ndarray, cap: float) -> None:
    """In place: scale each row of ``earlier`` so that its norm is at most ``cap`` times the
    same row's norm in ``later`` (rows already within the cap are left bit for bit)."""
    n_earlier = np.sqrt(np.einsum("ij,ij->i", earlier, earlier))
    limit = cap * np.sqrt(np.einsum("ij,ij->i", later, later))
    over = n_earlier > limit
    if np.any(over):
        earlier[over] *= (limit[over] / n_earlier[over])[:, None].astype(earlier.dtype)


def transition_update(
    params: RNNParams, fp: ForwardPass, v: np.ndarray, mode: str = "local"
):
    """Gradient of Eq 3's objective Σ_i Σ_t ½‖h_t − v_t‖² w.r.t. (W_xh, W_hh, b_h).

    Summed over the batch and time (the paper's code). ``mode="local"``: each step is fitted
    with h_{t−1} held fixed (Eq 3 as written), du_t = (h_t − v_t) ⊙ (1 − h_t²).
    ``mode="through_time"``: h_t is a function of θ through the whole recurrence (the paper's
    code differentiates it so), so the errors h_t − v_t are back-propagated through time.

    Returns
    -------
    grad_w_xh, grad_w_hh, grad_b_h : ndarray
    """
    if mode not in TRANSITION_GRADIENTS:
        raise ValueError(
            f"unknown transition gradient {mode!r}; allowed: {', '.join(TRANSITION_GRADIENTS)}"
        )
    h = fp.h_steps[1:]  # time-major, (T, batch, p)
    v_steps = np.asarray(v).transpose(1, 0, 2)
    if v_steps.shape != h.shape:
        raise ValueError(f"v must have shape {fp.h[:, 1:].shape}, got {np.shape(v)}")
    error = h - v_steps
    if mode == "local":
        du = error * (1.0 - h * h)
    else:
        du = _backprop_through_time(params, fp, error[-1], error)
    return _transition_gradients(fp, du)


def tp_directions(
    params: RNNParams,
    x: np.ndarray,
    y: np.ndarray,
    loss: Loss,
    *,
    gamma_h: float,
    r: float,
    rule: str = "linearized",
    margin: float = 1e-3,
    beyond_margin: str = "clamp",
    transition_gradient: str = "local",
    growth_cap: float | None = None,
) -> tuple[float, RNNParams]:
    """Mean loss and seed 002's target-propagation update directions.

    Output target by Eq 1 (a step on the batch-mean loss), targets propagated by Eq 2 (or the
    difference formula) through one :class:`RegularizedInverse` encoded for this update,
    transition parameters by the gradient of Eq 3 summed over batch and time, readout by the
    gradient of the batch-mean loss. Subtracting γ_θ times the returned directions is one TP
    step (:class:`SGD`). These are the paper code's conventions, so its ``lr``, ``lr_target``
    and ``reg`` are γ_θ, γ_h and r here.

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
    margin, beyond_margin
        Projection margin and slope beyond it (see :class:`RegularizedInverse`).
    transition_gradient : {"local", "through_time"}
        See :func:`transition_update`.
    growth_cap : float or None
        See :func:`propagate_targets` (not in the paper; ``None``: off).

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
    inverse = RegularizedInverse(params, r, margin=margin, beyond_margin=beyond_margin)
    v_last = output_target(fp.h_steps[-1], dh_last, gamma_h)
    v = propagate_targets(fp, v_last, inverse, rule, growth_cap)
    d_w_xh, d_w_hh, d_b_h = transition_update(params, fp, v, transition_gradient)
    return value, RNNParams(d_w_xh, d_w_hh, d_b_h, grad_w_hy, grad_b_y)


class SGD:
    """SGD with optional Nesterov momentum, in PyTorch's form (``torch.optim.SGD``).

    With momentum μ > 0 and direction g: b ← g on the first step, b ← μ b + g afterwards;
    θ ← θ − γ (g + μ b). With μ = 0: θ ← θ − γ g (plain SGD, which seed 002's TP uses).

    Parameters
    ----------
    step_size : float
        γ > 0.
    momentum : float
        μ in [0, 1).
    hidden_bias_factor : float
        Multiplies the step of b_h. The paper's code trains PyTorch's pair b_ih + b_hh, which
        receive the same gradient, so its effective hidden bias moves by 2γ: factor 2.
    transition_factor : float
        Multiplies the step of the transition parameters (W_xh, W_hh, b_h); 1 in the paper.
        With factor γ_h, BPTT takes the steps that TP's direction effectively has when its
        propagated targets vanish within a few steps (benchmarks/RNN_TP.md, "step-matched
        BPTT"): γ_θ on the readout and about γ_θγ_h on the transition.
    clip_norm : float or None
        If set, the directions of all parameters are first scaled together so that their
        joint Euclidean norm is at most ``clip_norm`` (PyTorch's ``clip_grad_norm_``; b_h
        counted once). Not in the paper (its TP and BPTT do not clip); a variant for
        benchmarks/RNN_TP.md.
    """

    def __init__(
        self,
        step_size: float,
        momentum: float = 0.0,
        hidden_bias_factor: float = 1.0,
        transition_factor: float = 1.0,
        clip_norm: float | None = None,
    ):
        if not np.isfinite(step_size) or step_size <= 0:
            raise ValueError(f"step_size must be finite and > 0, got {step_size!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not np.isfinite(hidden_bias_factor) or hidden_bias_factor <= 0:
            raise ValueError(f"hidden_bias_factor must be > 0, got {hidden_bias_factor!r}")
        self.step_size = float(step_size)
        self.momentum = float(momentum)
        self.hidden_bias_factor = float(hidden_bias_factor)
        if not np.isfinite(transition_factor) or transition_factor <= 0:
            raise ValueError(f"transition_factor must be > 0, got {transition_factor!r}")
        self.transition_factor = float(transition_factor)
        if clip_norm is not None and not (np.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be finite and > 0, or None, got {clip_norm!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self._buffers: dict[str, np.ndarray] = {}

    def step(self, params: RNNParams, directions: RNNParams) -> None:
        """In place: one update of ``params`` along ``directions`` (not modified)."""
        scale_all = 1.0
        if self.clip_norm is not None:
            total = float(np.sqrt(sum(
                np.sum(np.square(getattr(directions, n), dtype=np.float64))
                for n in params.names
            )))
            if total > self.clip_norm:
                scale_all = self.clip_norm / total
        for name in params.names:
            d = getattr(directions, name)
            if scale_all != 1.0:
                d = d * d.dtype.type(scale_all)
            if self.momentum > 0:
                buf = self._buffers.get(name)
                if buf is None:
                    buf = self._buffers[name] = d.copy()
                else:
                    buf *= self.momentum
                    buf += d
                d = d + self.momentum * buf
            scale = self.step_size * (self.hidden_bias_factor if name == "b_h" else 1.0)
            if name in ("W_xh", "W_hh", "b_h"):
                scale *= self.transition_factor
            getattr(params, name)[...] -= scale * d


def sgd_step(params: RNNParams, directions: RNNParams, step_size: float) -> None:
    """In place: θ ← θ − γ_θ d for every parameter (plain SGD, seed 002 Sec 4)."""
    for name in params.names:
        getattr(params, name)[...] -= step_size * getattr(directions, name)
