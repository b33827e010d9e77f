"""What the learning recipe's feedback computes, measured against backprop and Gauss-Newton.

Two diagnostics of a network with feedback weights, evaluated on a sample of examples:

- :func:`reconstruction_errors` — how well each decoder g_l inverts its layer f_l on the data,
  ‖g_l(f_l(h_{l−1})) − h_{l−1}‖ / ‖h_{l−1}‖ (the regular reconstruction of seed 000, Sec 2),
  and the same for small displacements around the data, the *difference* reconstruction
  ‖g_l(f_l(h + δ)) − g_l(f_l(h)) − δ‖ / ‖δ‖ (Meulemans et al. 2020), which is what matters
  when feedback is differential (docs/model.md §2.3);
- :func:`update_alignment` — the angle, per example and hidden layer, between the recipe's
  weight change and (a) the back-propagated gradient step, (b) the Gauss-Newton step of seed
  000 (Eq 22). The paper's claim is that target propagation with good inverses follows the
  Gauss-Newton direction. It also returns the *inversion residual* of the recipe's feedback
  path, ‖f_l(τ_{l−1}) − τ_l‖ / ‖τ_l − h_l‖: how far the target the loop of layer l hands
  down misses the target it was given. With mirrored feedback Ω alone is no decoder (its
  reconstruction error stays near 1); the inverse is computed by Ω *and* the settling loop,
  and this residual is its reconstruction error (at the loop's fixed point it equals
  λ‖u − h_l‖ / ‖τ_l − h_l‖: the damping's share).

Every weight change compared here is rank one with the same presynaptic factor σ̃(h_{l−1})
(normalized or not, a positive scale), so the angle between two weight changes of one example
equals the angle between their postsynaptic vectors: τ_l − h_l for the recipe, −β ∂ℓ/∂h_l for
backprop, J_l⁺(τ_L − h_L) for Gauss-Newton. The top layer is left out: its three vectors are
equal by construction (τ_L − h_L).
"""

from __future__ import annotations

import numpy as np

from cdtp.model.layers import Network
from cdtp.reference.backprop import gauss_newton_direction, sgd_direction
from cdtp.reference.trainer import recipe_targets


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise angle between two (batch, n) arrays, in degrees (NaN where either row is 0)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.sum(a * b, axis=1) / (na * nb)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def reconstruction_errors(net: Network, x: np.ndarray, displacement: float = 0.05,
                          seed: int = 0) -> dict[str, np.ndarray]:
    """Per-layer decoder reconstruction errors on a sample, relative, mean over examples.

    Parameters
    ----------
    net : Network
        Feedforward weights W_1..W_L and feedback weights Ω_2..Ω_L.
    x : ndarray, shape (batch, n_0)
        The inputs whose forward activities are reconstructed.
    displacement : float
        Norm of the random displacement δ of the difference reconstruction, relative to
        ‖h_{l−1}‖ (small: it probes the linearized inverse around the data).
    seed : int
        Seed of the displacement directions.

    Returns
    -------
    dict
        ``"regular"`` and ``"difference"``: arrays of shape (L + 1,), entries 2..L set (NaN for
        layers 0 and 1, which have no decoder).
    """
    rng = np.random.default_rng(seed)
    h = net.forward(np.atleast_2d(x))
    L = net.depth
    regular = np.full(L + 1, np.nan)
    difference = np.full(L + 1, np.nan)
    for l in range(2, L + 1):
        a = h[l - 1]
        norm_a = np.linalg.norm(a, axis=1)
        regular[l] = np.mean(np.linalg.norm(net.g(l, net.f(l, a)) - a, axis=1) / norm_a)
        d = rng.standard_normal(a.shape)
        d *= (displacement * norm_a / np.linalg.norm(d, axis=1))[:, None]
        moved = net.g(l, net.f(l, a + d)) - net.g(l, net.f(l, a))
        difference[l] = np.mean(np.linalg.norm(moved - d, axis=1) / np.linalg.norm(d, axis=1))
    return {"regular": regular, "difference": difference}


def update_alignment(net: Network, x: np.ndarray, y: np.ndarray, loss, beta: float,
                     leak: float, rate: float = 0.5,
                     decoder: str = "sigma") -> dict[str, np.ndarray]:
    """Angles between the recipe's per-example weight change and backprop's and Gauss-Newton's.

    The recipe's targets are those of its converged loops (:func:`recipe_targets`, iterated at
    the loop rate ``rate``, the circuit's dt/τ_u); the circuit's per-cycle weight change
    converges to them as η_W → 0 (tested in tests/test_learning.py).

    Returns
    -------
    dict
        ``"bp"`` and ``"gn"``: arrays of shape (L + 1,) of mean angles in degrees over the
        examples, entries 1..L−1 set; ``"bp_gn"``: the angle between backprop's and
        Gauss-Newton's steps, the scale against which the other two are read;
        ``"inversion"``: the inversion residual of layer l's feedback path, mean over the
        examples, entries 2..L set; ``"inversion_median"``: its median; ``"inversion_missed"``:
        the fraction of examples whose residual exceeds 1 (the target handed down misses by
        more than the displacement the loop was given: its loop did not converge, e.g. its
        gain is past the step's stability limit), which the mean alone would hide or be
        dominated by.
    """
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    h, taus, _ = recipe_targets(net, x, y, loss, beta, leak, rate=rate, decoder=decoder)
    L = net.depth
    out = {k: np.full(L + 1, np.nan) for k in ("bp", "gn", "bp_gn", "inversion",
                                                "inversion_median", "inversion_missed")}
    for l in range(2, L + 1):
        given = np.linalg.norm(taus[l] - h[l], axis=1)
        missed = np.linalg.norm(net.f(l, taus[l - 1]) - taus[l], axis=1)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            ratio = np.where(given > 0, missed / given, np.nan)
        defined = ratio[~np.isnan(ratio)]
        if defined.size:
            out["inversion"][l] = np.mean(defined)
            out["inversion_median"][l] = np.median(defined)
            # a non-finite ratio (the loop overflowed) counts as missed
            out["inversion_missed"][l] = np.mean(~(defined <= 1.0))
    for l in range(1, L):
        recipe = taus[l] - h[l]
        bp = sgd_direction(net, h, y, loss, beta, l)
        gn = gauss_newton_direction(net, h, y, loss, beta, l)
        out["bp"][l] = np.nanmean(_angle_deg(recipe, bp))
        out["gn"][l] = np.nanmean(_angle_deg(recipe, gn))
        out["bp_gn"][l] = np.nanmean(_angle_deg(bp, gn))
    return out
