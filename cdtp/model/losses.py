"""Losses ℓ(h_L, y) on the output layer, with their gradients ∂ℓ/∂h_L.

Arrays are batched along the first axis: ``h`` and ``y`` have shape (batch, n_L). The value is
the per-example loss (shape (batch,)); the gradient is per example too, so the output target of
Eq 7, τ_L = h_L − β ∂ℓ/∂h_L, is computed row by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LOSSES", "Loss", "SoftmaxCrossEntropy", "SquaredError", "get_loss", "softmax"]


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum for stability."""
    z = np.asarray(z, dtype=float)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Loss:
    """Base class: a per-example loss with its gradient."""

    name: str = "loss"

    def value(self, h: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient(self, h: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, h: np.ndarray) -> np.ndarray:
        """Class predictions (argmax of the output layer)."""
        return np.argmax(h, axis=-1)


@dataclass(frozen=True)
class SquaredError(Loss):
    """ℓ = ½‖h − y‖²; ∂ℓ/∂h = h − y."""

    name: str = "squared_error"

    def value(self, h, y):
        d = np.asarray(h, dtype=float) - y
        return 0.5 * np.sum(d * d, axis=-1)

    def gradient(self, h, y):
        return np.asarray(h, dtype=float) - y


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Loss):
    """ℓ = −Σ y log softmax(h) with one-hot (or probability) ``y``; ∂ℓ/∂h = softmax(h) − y."""

    name: str = "softmax_cross_entropy"

    def value(self, h, y):
        h = np.asarray(h, dtype=float)
        shifted = h - h.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return -np.sum(y * (shifted - log_z), axis=-1)

    def gradient(self, h, y):
        return softmax(h) - y


LOSSES = {"squared_error": SquaredError, "softmax_cross_entropy": SoftmaxCrossEntropy}


def get_loss(name: str | Loss) -> Loss:
    """Return the loss registered under ``name`` (``squared_error``, ``softmax_cross_entropy``)."""
    if isinstance(name, Loss):
        return name
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(sorted(LOSSES))}") from None
