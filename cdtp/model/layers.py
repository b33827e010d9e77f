"""Layered encoder/decoder networks: f_l(x) = W_l σ(x) and g_l(y) = Ω_l σ(y) (seed 000, Eq 54).

Conventions used throughout :mod:`cdtp.reference`:

- arrays are batched along the first axis, ``x.shape == (batch, n)``;
- layer indices follow the paper: layer 0 is the input, layers 1..L are computed;
  ``net.weights[l]`` is W_l (l = 1..L) and ``net.feedback[l]`` is Ω_l (l = 2..L, no decoder
  into the input layer); unused indices hold ``None``;
- a bias is an extra constant-1 unit appended to σ(x) (Algorithm 1), so with ``bias=True``
  W_l has shape (n_l, n_{l-1} + 1) and Ω_l has shape (n_{l-1}, n_l + 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cdtp.model.nonlinearities import Nonlinearity, get_nonlinearity

__all__ = ["Network", "init_network", "with_bias"]


def with_bias(s: np.ndarray, bias: bool) -> np.ndarray:
    """Append a constant-1 unit to the last axis of ``s`` when ``bias`` is true."""
    if not bias:
        return s
    ones = np.ones((*s.shape[:-1], 1), dtype=s.dtype)
    return np.concatenate([s, ones], axis=-1)


@dataclass
class Network:
    """Feedforward weights W_1..W_L and feedback weights Ω_2..Ω_L over one nonlinearity.

    Parameters
    ----------
    sizes : tuple of int
        Layer sizes n_0..n_L.
    weights : list
        ``weights[l]`` = W_l for l = 1..L, ``weights[0] is None``.
    feedback : list
        ``feedback[l]`` = Ω_l for l = 2..L, ``None`` elsewhere.
    sigma : Nonlinearity
    bias : bool
    """

    sizes: tuple[int, ...]
    weights: list
    feedback: list
    sigma: Nonlinearity
    bias: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """L, the number of computed layers."""
        return len(self.sizes) - 1

    def copy(self) -> Network:
        """A deep copy of the weights (the nonlinearity is shared, it is immutable)."""
        return Network(
            sizes=tuple(self.sizes),
            weights=[None if w is None else w.copy() for w in self.weights],
            feedback=[None if w is None else w.copy() for w in self.feedback],
            sigma=self.sigma,
            bias=self.bias,
            meta=dict(self.meta),
        )

    # -- encoder and decoder -------------------------------------------------------------
    def f(self, l: int, x: np.ndarray) -> np.ndarray:
        """Encoder f_l(x) = W_l σ(x) (Eq 54)."""
        return with_bias(self.sigma(x), self.bias) @ self.weights[l].T

    def g(self, l: int, y: np.ndarray) -> np.ndarray:
        """Decoder g_l(y) = Ω_l σ(y) (Eq 54), l = 2..L."""
        return with_bias(self.sigma(y), self.bias) @ self.feedback[l].T

    def f_jacobian(self, l: int, x: np.ndarray) -> np.ndarray:
        """∂f_l/∂x = W_l diag σ'(x), shape (batch, n_l, n_{l-1})."""
        w = self.weights[l][:, : self.sizes[l - 1]]
        return w[None, :, :] * self.sigma.derivative(x)[:, None, :]

    def g_jacobian(self, l: int, y: np.ndarray) -> np.ndarray:
        """∂g_l/∂y = Ω_l diag σ'(y), shape (batch, n_{l-1}, n_l)."""
        om = self.feedback[l][:, : self.sizes[l]]
        return om[None, :, :] * self.sigma.derivative(y)[:, None, :]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Forward pass h_0 = x, h_l = f_l(h_{l-1}) (Eq 1); returns [h_0, ..., h_L]."""
        h = [np.asarray(x, dtype=float)]
        for l in range(1, self.depth + 1):
            h.append(self.f(l, h[-1]))
        return h


def init_network(
    sizes,
    rng: np.random.Generator,
    *,
    nonlinearity: str | Nonlinearity = "leaky_relu",
    bias: bool = True,
    weight_scale: float = 1.0,
    feedback_scale: float = 1.0,
    feedback_init: str = "random",
    feedback_gain: float = 0.5,
) -> Network:
    """Seeded initialization of a layered network.

    W_l has i.i.d. N(0, weight_scale² / n_{l-1}) entries (variance-preserving); biases start
    at 0. Ω_l is, by ``feedback_init``:

    - ``"random"``: i.i.d. N(0, feedback_scale² / n_l);
    - ``"pinv"``: the pseudo-inverse of the linear part of W_l (a decoder that inverts the
      encoder exactly when σ is the identity and the layers have equal sizes);
    - ``"transpose"``: ``feedback_gain`` · W_lᵀ / ‖W_l‖₂² (linear part): transpose-type
      feedback, scaled so that W_l Ω_l has eigenvalues in [0, feedback_gain];
    - ``"zeros"``.

    Parameters
    ----------
    sizes : sequence of int
        n_0..n_L, at least two entries, all positive.
    rng : numpy.random.Generator
        The only source of randomness.
    """
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive layer sizes, got {sizes}")
    sigma = get_nonlinearity(nonlinearity)
    b = 1 if bias else 0
    weights: list = [None]
    feedback: list = [None, None]
    for l in range(1, len(sizes)):
        w = rng.normal(0.0, weight_scale / np.sqrt(sizes[l - 1]), size=(sizes[l], sizes[l - 1]))
        weights.append(np.concatenate([w, np.zeros((sizes[l], b))], axis=1))
    for l in range(2, len(sizes)):
        if feedback_init == "random":
            om = rng.normal(0.0, feedback_scale / np.sqrt(sizes[l]), size=(sizes[l - 1], sizes[l]))
        elif feedback_init == "pinv":
            om = np.linalg.pinv(weights[l][:, : sizes[l - 1]])
        elif feedback_init == "transpose":
            w = weights[l][:, : sizes[l - 1]]
            om = feedback_gain * w.T / np.linalg.norm(w, 2) ** 2
        elif feedback_init == "zeros":
            om = np.zeros((sizes[l - 1], sizes[l]))
        else:
            raise ValueError(
                f"unknown feedback_init {feedback_init!r}; allowed: random, pinv, transpose, zeros"
            )
        feedback.append(np.concatenate([om, np.zeros((sizes[l - 1], b))], axis=1))
    return Network(sizes=sizes, weights=weights, feedback=feedback, sigma=sigma, bias=bias)
