"""Checks GN and INV: the settled targets as Gauss–Newton steps, and the inversion loop's rate.

GN (targets settled, J_l of full column rank, first order ⇒ τ_l − a_l ∥ J_l⁺(τ_L − a_L)) and INV
(α = Lip(I − k_u f∘g) < 1 ⇒ inversion converges at least as fast as αᵗ). The table of every check
is in :mod:`cdtp.analysis.propositions`. Never imports brian2.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from cdtp.analysis.cells import (
    _NO_ERROR,
    _TINY,
    SETTLE_STEPS,
    SETTLE_TOLERANCE,
    SETTLED,
    _fitted_rates,
    _gamma_low_premise,
    _networks,
    _per_layer,
    _predicted_rates,
    _premise,
    _rel,
    _require,
    _result,
    _snap,
    _Traces,
    _u_settled_from,
    _upward_max,
    _weights_steady_premise,
)
from cdtp.model.layers import with_bias
from cdtp.record.dataset import circuit_of

__all__ = ["check_gn", "check_inv"]


def check_gn(ds: xr.Dataset, tolerance: float = 0.1,
             settle_tolerance: float = SETTLE_TOLERANCE, settle_steps: int = SETTLE_STEPS,
             condition: float = 1e3, first_order: float = 0.05,
             weights: float = 0.05) -> xr.Dataset:
    """GN (Eq 22): the target change τ_l − a_l points along the Gauss-Newton direction
    J_l⁺ (τ_L − a_L), J_l = ∂a_L/∂a_l from the recorded weights and activities (dense, at the
    settled state). Residual: the angle between them in radians, l = 1..L−1.

    Premises:

    - ``targets_settled``: u settled (as in P1) in every layer above l, whose loops carry the
      output target down to τ_l (needs u traced: n/a otherwise);
    - ``full_rank``: the condition number σ_max / σ_{n_l} of J_l (∞ when n_l > n_L: J_lᵀJ_l is
      singular and Eq 22's (J_lᵀJ_l)⁻¹ does not exist; the inversion then picks the pre-image
      in the decoders' range, not J_l⁺'s) at most ``condition`` (1e3: the least-squares
      direction J_l⁺d moves by up to κ times a relative change of J_l, so past 1e3 even the
      5 % allowed by ``first_order`` could turn it by more than the tolerance; the runs of
      tests/test_propositions.py have κ ≈ 17–110 and angles ≤ 0.005 rad);
    - ``first_order``: the targets are close enough for one Jacobian: ‖J_l(τ) − J_l(a)‖ /
      ‖J_l(a)‖ (J_l at the target states τ_l..τ_{L−1} against at a) at most ``first_order``
      (0.05: half the conclusion's tolerance, since the direction errs by about κ × this over
      the curvature of a well-conditioned J);
    - ``exact_loop``: λ = 0; a leaky loop (docs/model.md §2.3) damps the step on purpose;
    - ``weights_fixed``: Eq 22 holds for fixed weights (η_W → 0, docs/model.md §2.1): the share of
      the error ‖τ_k − a_k‖ that the change of W_k over the window already absorbed,
      ‖ΔW_k σ̃(a_{k−1})‖ / ‖τ_k − a_k‖ (≈ η_W), largest over k > l, at most ``weights``
      (0.05; with η_W near 1 the top layer absorbs the whole error and the targets below can
      even point away from J_l⁺(τ_L − a_L)).

    Tolerance 0.1 rad: with exact inverses and first-order targets the angle is a few
    hundredths of a radian, while BP's direction is typically ~0.5 rad away (see
    tests/reference/test_backprop.py)."""
    from cdtp.reference.backprop import output_jacobian

    _require(ds, ["snapshot_a", "snapshot_target", "weight"], "GN")
    circuit = circuit_of(ds)
    L = circuit.depth
    nets = _networks(ds, SETTLED)
    a = [_snap(ds, "a", l) for l in range(L + 1)]
    taus = [_snap(ds, "target", l) if l >= 1 else a[0] for l in range(L + 1)]
    d_out = taus[L] - a[L]
    layers = list(range(1, L))
    shape = (len(nets), len(layers))
    res, kappa, curv = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for j, l in enumerate(layers):
        d = taus[l] - a[l]
        for c, net in enumerate(nets):
            jac = output_jacobian(net, [x[c][None] for x in a], l)[0]
            at_tau = [x[c][None] for x in a[:l]] + [x[c][None] for x in taus[l:]]
            jac_tau = output_jacobian(net, at_tau, l)[0]
            sv = np.linalg.svd(jac, compute_uv=False)
            kappa[c, j] = (np.inf if len(sv) < circuit.sizes[l] or sv[-1] <= _TINY * sv[0]
                           else sv[0] / sv[-1])
            nj = np.linalg.norm(jac)
            curv[c, j] = np.linalg.norm(jac_tau - jac) / nj if nj > _TINY else np.nan
            gn = np.linalg.pinv(jac) @ d_out[c]
            nd, ng = np.linalg.norm(d[c]), np.linalg.norm(gn)
            if nd > _TINY and ng > _TINY:
                res[c, j] = float(np.arccos(np.clip(d[c] @ gn / (nd * ng), -1.0, 1.0)))
    w0, w1 = _networks(ds, "plasticity_start"), nets
    sigma = nets[0].sigma
    absorbed = np.zeros((len(nets), L + 1))
    for k in range(2, L + 1):
        s_prev = with_bias(sigma(a[k - 1]), circuit.bias)
        moved = np.stack([(w1[c].weights[k] - w0[c].weights[k]) @ s_prev[c]
                          for c in range(len(nets))])
        absorbed[:, k] = _rel(moved, taus[k] - a[k])
    absorbed = _per_layer([np.max(absorbed[:, l + 1:], axis=1) for l in layers])
    premises = [
        _u_settled_from(ds, _Traces(ds), layers, lambda l: l + 1, settle_tolerance,
                        settle_steps, "targets_settled", "u settled in the layers above"),
        _premise("weights_fixed", "weights above fixed: max over k > l of ‖ΔW_k σ̃(a_{k−1})‖"
                 " over the window / ‖τ_k − a_k‖", absorbed, weights,
                 "the share of the error the weights above absorbed while the targets formed"
                 " (≈ η_W); the direction errs by about as much, half the tolerance",
                 np.where(np.isnan(absorbed), _NO_ERROR, "")),
        _premise("full_rank", "J_l of full column rank: condition number", kappa, condition,
                 "J_l⁺d moves by up to κ × a relative change of J_l (see the docstring)"),
        _premise("first_order", "targets to first order: ‖J_l(τ) − J_l(a)‖ / ‖J_l(a)‖", curv,
                 first_order, "the direction errs by about κ × this; half the tolerance",
                 np.where(np.isnan(curv), "J_l = 0", "")),
        _premise("exact_loop", "an exact inversion loop: the leak λ", np.full(shape, circuit.leak),
                 0.0, "a leaky loop (λ > 0) computes damped Gauss-Newton targets"
                 " J_g (J_f J_g + λ I)⁻¹ d, not J_l⁺ d (docs/model.md §2.3)"),
    ]
    na = np.where(np.isnan(res), "no target change (τ_l = a_l) or no output error", "")
    return _result("GN", "DTP target change ≈ Gauss-Newton direction", res, tolerance,
                   check_gn.__doc__, layers, ds.cycle.values, premises, na)


def check_inv(ds: xr.Dataset, tolerance: float = 1.2,
              settle_tolerance: float = SETTLE_TOLERANCE,
              settle_steps: int = SETTLE_STEPS) -> xr.Dataset:
    """INV (Secs 5–6): iterative inversion contracts when α = Lip(I − k_u f_l′ g_l′) < 1; a
    contraction with constant α shrinks its increments at least as fast as αᵗ.

    Premise ``alpha_below_1``: α (the spectral norm of the loop's Jacobian at the settled
    state, the local Lipschitz constant; the largest of the layer's loop and the loops above,
    whose targets drive it) below 1 — the contraction condition itself. α is estimated at the
    final state with the final weights, so, as for P4, ``gamma_low``, ``weights_steady`` and
    ``u_settled`` (this layer and above) say that it is the constant of the loop that ran.

    Conclusion: the fitted exponential rate of the u-increments over the feedback phase (as
    in P4) at most α. Residual: fitted rate / α. Tolerance 1.2: 20 % for the drift of the
    Jacobians along the decay, as in P4. n/a with a finite τ_h (the loop is then the joint
    h–u system, whose rate is P4's block prediction, not bounded by α) and where no rate could
    be fitted (u not traced, or at round-off within 3 steps)."""
    _require(ds, ["snapshot_m", "snapshot_u", "weight"], "INV")
    layers, _, alpha = _predicted_rates(ds)
    bound = _upward_max(alpha)
    fitted, na = _fitted_rates(_Traces(ds), layers)
    if circuit_of(ds).tau_h != 0:
        fitted[:] = np.nan
        na[:] = "finite τ_h: the h–u loop's rate is P4's, not bounded by α"
    premises = [
        _premise("alpha_below_1", "α = Lip(I − k_u f′g′), largest of this layer and above",
                 bound, 1.0, "the contraction condition itself",
                 np.where(np.isnan(bound), "loop matrix not finite", "")),
        _gamma_low_premise(ds, layers),
        _weights_steady_premise(ds, layers),
        _u_settled_from(ds, _Traces(ds), layers, lambda l: l, settle_tolerance, settle_steps,
                        "u_settled", "u settled in this layer and above"),
    ]
    return _result("INV", "α = Lip(f∘g − I) < 1 ⇒ inversion converges like αᵗ",
                   fitted / bound, tolerance, check_inv.__doc__, layers, ds.cycle.values,
                   premises, na, extra={
                       "fitted_rate": (fitted, {"long_name": "fitted rate", "units": "1"}),
                       "alpha": (bound, {"long_name": "α", "units": "1"})})
