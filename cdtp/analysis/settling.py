"""Checks P1–P4: the targets settle, and the feedback loop converges at its predicted rate.

P1 and P2 (u settled ⇒ τ_l = h_l, τ_{l−1} = f_l⁻¹(τ_l)); P3 and P4 (ρ(I − (1−γ) f′g′) < 1 ⇒ the
u-loop converges, its increments shrinking like ρᵗ). The table of every check is in
:mod:`cdtp.analysis.propositions`. Never imports brian2.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from cdtp.analysis.cells import (
    _NO_ERROR,
    SETTLE_STEPS,
    SETTLE_TOLERANCE,
    SETTLED,
    _error_scale,
    _fitted_rates,
    _gamma_low_premise,
    _leak_term,
    _networks,
    _per_layer,
    _predicted_rates,
    _premise,
    _rate,
    _rel,
    _require,
    _result,
    _settled_premise,
    _snap,
    _Traces,
    _u_increments,
    _u_settled_from,
    _u_settled_premise,
    _upward_max,
    _weights_steady_premise,
)
from cdtp.record.dataset import circuit_of

__all__ = ["check_p1", "check_p2", "check_p3", "check_p4"]


def check_p1(ds: xr.Dataset, tolerance: float = 0.05,
             settle_tolerance: float = SETTLE_TOLERANCE,
             settle_steps: int = SETTLE_STEPS) -> xr.Dataset:
    """P1: if u has settled, τ_l = h_l. Residual ‖τ_l − h_l‖ / ‖τ_l − a_l‖ at the end of the
    plasticity window, layers 2..L (layer 1 has no decoder loop: h_1 = f_1(x) = a_1). With a
    leaky loop (``feedback.leak`` λ > 0, docs/model.md §2.3) the fixed point is
    τ_l − h_l = λ (u_l − a_l), and the residual is ‖τ_l − h_l − λ (u_l − a_l)‖ / ‖τ_l − a_l‖.

    Premise ``u_settled``: the u-increments per τ_u over the last ``settle_steps`` steps
    before the snapshot, relative to ‖τ_l − a_l‖, below ``settle_tolerance`` (1e-3; needs u
    traced at every step: n/a in untraced cycles). In the feedback phase τ_u u̇ = τ − h, so
    a premise-met cell has ‖τ − h‖ within about 1e-3 of the error a few steps before the
    snapshot.

    Tolerance 0.05: 50× the settling tolerance, so a cell whose u has settled and that misses
    it records a τ − h the u-dynamics did not see — a wrong drive or a wrong recording."""
    _require(ds, ["snapshot_target", "snapshot_h", "snapshot_a"], "P1")
    L = circuit_of(ds).depth
    layers = list(range(2, L + 1))
    lam = circuit_of(ds).leak
    res = _per_layer([_rel(_snap(ds, "target", l) - _snap(ds, "h", l) - lam * _leak_term(ds, l),
                           _snap(ds, "target", l) - _snap(ds, "a", l)) for l in layers])
    premise = _u_settled_premise(ds, _Traces(ds), layers, settle_tolerance, settle_steps)
    return _result("P1", "u settled ⇒ τ_l = h_l", res, tolerance, check_p1.__doc__,
                   layers, ds.cycle.values, [premise])


def check_p2(ds: xr.Dataset, tolerance: float = 0.05,
             settle_tolerance: float = SETTLE_TOLERANCE,
             settle_steps: int = SETTLE_STEPS) -> xr.Dataset:
    """P2: if u has settled, the encoder input m_{l−1} inverts the target: f_l(m_{l−1}) = τ_l.
    Residual ‖f_l(m_{l−1}) − τ_l‖ / ‖τ_l − a_l‖ with the weights and states at the end of the
    plasticity window, layers 2..L.

    Premises: ``u_settled`` as P1; with a finite τ_h also ``h_settled`` (h-increments per
    τ_h relative to ‖τ_l − a_l‖), since f_l(m_{l−1}) is what h relaxes to.

    With a leaky loop the preimage is damped: f_l(m_{l−1}) = τ_l − λ (u_l − a_l) (P1).

    Tolerance 0.05, as P1 (with algebraic h, f_l(m_{l−1}) is h_l and P2 reduces to P1)."""
    _require(ds, ["snapshot_m", "snapshot_target", "weight"], "P2")
    circuit = circuit_of(ds)
    L = circuit.depth
    nets = _networks(ds, SETTLED)
    layers = list(range(2, L + 1))
    cols = []
    for l in layers:
        m, tau, a = _snap(ds, "m", l - 1), _snap(ds, "target", l), _snap(ds, "a", l)
        f = np.stack([nets[c].f(l, m[c][None])[0] for c in range(len(nets))])
        cols.append(_rel(f - tau + circuit.leak * _leak_term(ds, l), tau - a))
    tr = _Traces(ds)
    premises = [_u_settled_premise(ds, tr, layers, settle_tolerance, settle_steps)]
    if circuit.tau_h != 0:
        premises.append(_settled_premise(
            tr, "h", layers, SETTLED, _rate(circuit.tau_h, tr.dt),
            [_error_scale(ds, l) for l in layers], "‖τ_l − a_l‖", _NO_ERROR,
            settle_tolerance, settle_steps))
    return _result("P2", "u settled ⇒ τ_{l−1} = f_l⁻¹(τ_l)", _per_layer(cols),
                   tolerance, check_p2.__doc__, layers, ds.cycle.values, premises)


def check_p3(ds: xr.Dataset, tolerance: float = 1.0) -> xr.Dataset:
    """P3: if ρ(I − (1 − γ) f_l′ g_l′) < 1 the u-loop converges.

    Premise ``rho_below_1``: that spectral radius (with the step factor k_u = dt/τ_u of the
    Euler loop, γ = 0 of the feedback phase, Jacobians at the settled state; with a finite
    τ_h, of the joint h–u step, see :func:`_loop_matrix`) is below 1, the largest over the
    layer's loop and the loops above it (their targets drive it). Tolerance 1: the stability
    boundary of a linear iteration, not a fitted number. The loop is the one of the feedback
    phase with the window's final weights, so two more premises say that loop is the one that
    ran: ``gamma_low`` (γ_l ≤ 0.05 over the window [feedback_start, plasticity_end); a
    sinusoid's γ sweeps through the window) and ``weights_steady`` (W and Ω of the layer and
    above change by at most 5 % over the window).

    Conclusion: the u-increments shrink over the feedback phase. Residual: their geometric
    rate from the second increment (the first is the phase switch) to the last, (‖Δu_last‖ /
    ‖Δu_2‖)^{1/(n−2)}, floored at float round-off (needs u traced at every step of the phase;
    n/a otherwise). Tolerance 1: shrinking increments, whatever their speed."""
    _require(ds, ["snapshot_m", "snapshot_u", "weight"], "P3")
    layers, rho, _ = _predicted_rates(ds)
    tr = _Traces(ds)
    res = np.full(rho.shape, np.nan)
    na = np.full(rho.shape, "", dtype=object)
    for j, l in enumerate(layers):
        for ci, (inc, size) in enumerate(_u_increments(tr, l)):
            if inc is None:
                na[ci, j] = size
            elif len(inc) < 3:
                na[ci, j] = "feedback phase shorter than 3 steps"
            else:
                inc = np.maximum(inc, 1e-14 * size)
                res[ci, j] = float((inc[-1] / inc[1]) ** (1.0 / (len(inc) - 2)))
    premises = [
        _premise("rho_below_1", "ρ of the u-loop (largest of this layer and above)",
                 _upward_max(rho), 1.0, "the stability boundary of a linear iteration",
                 np.where(np.isnan(rho), "loop matrix not finite", "")),
        _gamma_low_premise(ds, layers),
        _weights_steady_premise(ds, layers),
    ]
    return _result("P3", "ρ(I − (1−γ) f′g′) < 1 ⇒ u converges", res, tolerance,
                   check_p3.__doc__, layers, ds.cycle.values, premises, na)


def check_p4(ds: xr.Dataset, tolerance: float = 0.2, contraction: float = 0.95,
             settle_tolerance: float = SETTLE_TOLERANCE,
             settle_steps: int = SETTLE_STEPS) -> xr.Dataset:
    """P4: near γ = 0 the u-increments shrink like ρᵗ. Residual: |fitted − predicted| /
    predicted, where the fitted rate comes from the recorded u of every neuron of the layer at
    every step of the feedback phase, and the prediction is the largest ρ of the layer's own loop
    and of the loops above it (a layer's target moves until the layers above have settled).

    Premise ``rho_contracting``: that predicted ρ ≤ ``contraction`` (0.95): a loop at the
    stability boundary (ρ → 1) decays too slowly for its rate to be told from the drift of the
    Jacobians along the decay, and one above it has no decay to fit. ``gamma_low`` and
    ``weights_steady`` as in P3; ``u_settled`` (as in P1, in this layer and every layer above
    it): the Jacobians are taken at the final state, which is the fixed point the decay
    approaches only if the loops got there.

    Tolerance 0.2: the Jacobians are taken at the settled state, while the fit spans the whole
    decay, over which the Jacobians drift by O(the discrepancy)."""
    _require(ds, ["snapshot_m", "snapshot_u", "weight"], "P4")
    layers, rho, _ = _predicted_rates(ds)
    predicted = _upward_max(rho)
    fitted, na = _fitted_rates(_Traces(ds), layers)
    res = np.abs(fitted - predicted) / predicted
    premises = [
        _premise("rho_contracting", "predicted ρ (largest of this layer and above)",
                 predicted, contraction, "a clear decay: ρ at most 0.95 (at least 5 % per step)",
                 np.where(np.isnan(predicted), "loop matrix not finite", "")),
        _gamma_low_premise(ds, layers),
        _weights_steady_premise(ds, layers),
        _u_settled_from(ds, _Traces(ds), layers, lambda l: l, settle_tolerance, settle_steps,
                        "u_settled", "u settled in this layer and above"),
    ]
    return _result("P4", "ρ < 1 ⇒ u-increments shrink like ρᵗ", res, tolerance,
                   check_p4.__doc__, layers, ds.cycle.values, premises, na, extra={
                       "fitted_rate": (fitted, {"long_name": "fitted rate", "units": "1"}),
                       "predicted_rate": (predicted, {"long_name": "predicted ρ",
                                                      "units": "1"}),
                   })
