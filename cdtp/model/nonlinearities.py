"""Elementwise nonlinearities σ with derivatives and inverses.

The paper (seed 000, Algorithm 1) advises an invertible σ such as the leaky ReLU so that a
decoder g_l = Ω_l σ can approximately invert f_l = W_l σ; leaky ReLU with slope 0.1 is the
project default (docs/model.md §2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["NONLINEARITIES", "Nonlinearity", "get_nonlinearity"]

Array = np.ndarray


@dataclass(frozen=True)
class Nonlinearity:
    """An elementwise function with its derivative and inverse.

    Attributes
    ----------
    name : str
        Registry name, as written in circuit files.
    fn, derivative, inverse : callable
        σ(x), σ'(x) and σ⁻¹(y), all elementwise on arrays.
    lower, upper : float
        The open range of σ; :meth:`project` clips into it (seed 002's projection π onto
        the activation's range).
    brian2_expr : str
        σ as a Brian2 expression in the placeholder ``{x}``, for the circuit builder.
    brian2_slope : str
        σ′ as a Brian2 expression in ``{x}`` (the ``slope_gated`` decoder gates feedback by it).
    """

    name: str
    fn: Callable[[Array], Array]
    derivative: Callable[[Array], Array]
    inverse: Callable[[Array], Array]
    lower: float = -np.inf
    upper: float = np.inf
    brian2_expr: str = ""
    brian2_slope: str = ""

    def __call__(self, x: Array) -> Array:
        return self.fn(x)

    def project(self, y: Array, margin: float = 1e-6) -> Array:
        """Clip ``y`` into the range of σ (π of seed 002 Sec 2.1), ``margin`` inside an open end."""
        lo = self.lower + margin if np.isfinite(self.lower) else -np.inf
        hi = self.upper - margin if np.isfinite(self.upper) else np.inf
        return np.clip(y, lo, hi)


def _leaky_relu(slope: float) -> Nonlinearity:
    if not 0.0 < slope <= 1.0:
        raise ValueError(f"leaky ReLU slope must be in (0, 1], got {slope}")
    return Nonlinearity(
        name="leaky_relu",
        fn=lambda x: np.where(x > 0, x, slope * x),
        derivative=lambda x: np.where(x > 0, 1.0, slope),
        inverse=lambda y: np.where(y > 0, y, y / slope),
        brian2_expr=f"(({{x}})*int(({{x}})>0) + {slope!r}*({{x}})*int(({{x}})<=0))",
        brian2_slope=f"(int(({{x}})>0) + {slope!r}*int(({{x}})<=0))",
    )


def _tanh() -> Nonlinearity:
    return Nonlinearity(
        name="tanh",
        fn=np.tanh,
        derivative=lambda x: 1.0 - np.tanh(x) ** 2,
        inverse=np.arctanh,
        lower=-1.0,
        upper=1.0,
        brian2_expr="tanh({x})",
        brian2_slope="(1 - tanh({x})**2)",
    )


def _identity() -> Nonlinearity:
    return Nonlinearity(
        name="identity",
        fn=lambda x: np.asarray(x, dtype=float).copy(),
        derivative=lambda x: np.ones_like(x, dtype=float),
        inverse=lambda y: np.asarray(y, dtype=float).copy(),
        brian2_expr="({x})",
        brian2_slope="(1 + 0*({x}))",
    )


def _softplus() -> Nonlinearity:
    # log(1 + e^x) written to stay finite for large |x|.
    def fn(x):
        return np.logaddexp(0.0, x)

    def derivative(x):
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))

    def inverse(y):
        y = np.asarray(y, dtype=float)
        return y + np.log(-np.expm1(-y))  # log(e^y - 1), stable for large y

    return Nonlinearity(
        name="softplus",
        fn=fn,
        derivative=derivative,
        inverse=inverse,
        lower=0.0,
        brian2_expr="log(1 + exp({x}))",
        brian2_slope="(0.5*(1 + tanh(0.5*({x}))))",
    )


NONLINEARITIES: dict[str, Callable[..., Nonlinearity]] = {
    "leaky_relu": _leaky_relu,
    "tanh": _tanh,
    "identity": _identity,
    "softplus": _softplus,
}


def get_nonlinearity(name: str, *, slope: float = 0.1) -> Nonlinearity:
    """Return the nonlinearity registered under ``name``.

    Parameters
    ----------
    name : {"leaky_relu", "tanh", "identity", "softplus"}
    slope : float
        Negative-side slope of the leaky ReLU (ignored by the others).
    """
    if isinstance(name, Nonlinearity):
        return name
    try:
        factory = NONLINEARITIES[name]
    except KeyError:
        raise ValueError(
            f"unknown nonlinearity {name!r}; allowed: {', '.join(sorted(NONLINEARITIES))}"
        ) from None
    return factory(slope) if name == "leaky_relu" else factory()
