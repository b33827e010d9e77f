"""Checks P5–P8: what the weight changes are, while the loops run.

P5 (the feedforward update is η_W (τ_l − a_l) n_{l−1}ᵀ over a cycle), P6 and P7 (the feedback
rule Δ1 descends a reconstruction loss in each phase), P8 (Δ1 = γ Δ2), and
:func:`weight_change_terms`, the decomposition P5 and the plots read. The table of every check
is in :mod:`cdtp.analysis.propositions`. Never imports brian2.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from cdtp.analysis.cells import (
    _NO_ERROR,
    _SETTLE_REASON,
    _TINY,
    SETTLE_STEPS,
    SETTLE_TOLERANCE,
    SETTLED,
    _networks,
    _per_layer,
    _premise,
    _rate,
    _rel,
    _require,
    _result,
    _settled_premise,
    _settling,
    _snap,
    _Traces,
)
from cdtp.model.layers import with_bias
from cdtp.model.nonlinearities import get_nonlinearity
from cdtp.record.dataset import BOUNDARIES, boundary_steps_of, circuit_of, schedule_of
from cdtp.reference.cdtp_map import decoder_input

__all__ = ["check_p5", "check_p6", "check_p7", "check_p8", "weight_change_terms"]


def weight_change_terms(ds: xr.Dataset):
    """Recorded ΔW_l over the plasticity window and the DTP prediction of P5, per layer.

    With ``plasticity.consolidation = "cycle"`` the window's change is applied at the next
    cycle's first step: the recorded change of cycle c is then W at the next cycle's window
    start minus W at this one's (NaN for the last recorded cycle, or when the next cycle was
    not recorded).

    Returns
    -------
    layers : list of int
    recorded, predicted : list of ndarray, each (n_cycles, n_l, n_{l−1} + bias)
    """
    _require(ds, ["weight", "snapshot_target", "snapshot_a"], "P5")
    circuit = circuit_of(ds)
    L = circuit.depth
    sigma = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    w0 = _networks(ds, "plasticity_start")
    w1 = _networks(ds, SETTLED)
    a_top, tau_top = _snap(ds, "a", L), _snap(ds, "target", L)
    layers = list(range(1, L + 1))
    recorded, predicted = [], []
    for l in layers:
        a, tau, a_prev = _snap(ds, "a", l), _snap(ds, "target", l), _snap(ds, "a", l - 1)
        s = with_bias(sigma(a_prev), circuit.bias)
        n_prev = s / (np.sum(s * s, axis=1, keepdims=True) + 1e-12)
        err = tau - a
        if circuit.influence:
            top = np.sum((a_top - tau_top) ** 2, axis=1)
            own = np.sum(err ** 2, axis=1)
            err = err * (top / (own + circuit.influence_eps))[:, None]
        predicted.append(circuit.eta_w_at(l) * err[:, :, None] * n_prev[:, None, :])
        if circuit.consolidation == "cycle":
            cycles = ds.cycle.values
            nan = np.full_like(w0[0].weights[l], np.nan)
            recorded.append(np.stack([
                w0[c + 1].weights[l] - w0[c].weights[l]
                if c + 1 < len(w0) and cycles[c + 1] == cycles[c] + 1 else nan
                for c in range(len(w0))]))
        else:
            recorded.append(np.stack([w1[c].weights[l] - w0[c].weights[l]
                                      for c in range(len(w0))]))
    return layers, recorded, predicted


def check_p5(ds: xr.Dataset, tolerance: float = 0.01, premise_tolerance: float = 1e-3
             ) -> xr.Dataset:
    """P5 (Eqs 43, 58): the total ΔW_l over the plasticity window equals
    η_W (τ_l − a_l) n_{l−1}ᵀ (× the influence factor s_l when on), with τ_l, a_l and
    n_{l−1} = σ̃(a_{l−1}) / ‖σ̃(a_{l−1})‖² at the end of the window. Residual: relative error.

    The sum telescopes exactly under three premises, each measured (tolerance
    ``premise_tolerance`` = 1e-3, a tenth of the conclusion's, since each adds its own size
    to the relative error):

    - ``presynaptic_held``: a_{l−1} (so n_{l−1}) held over the window,
      ‖a_{l−1}(end) − a_{l−1}(start)‖ / ‖a_{l−1}(end)‖ (the input layer is clamped: 0);
    - ``target_starts_at_a``: τ_l starts the window at a_l, ‖τ_l − a_l‖(start) /
      ‖τ_l − a_l‖(end) (a feedforward phase long enough to bring τ back to a);
    - ``gate_binary``: the plasticity gate is 1 at every step of the window, max |1 − p_l|.

    Tolerance 0.01 (the issue's bound for the continuous circuit): with the premises met
    what remains is round-off and the influence factor's ε."""
    layers, got, pred = weight_change_terms(ds)
    cols = [_rel(g - p, p) for g, p in zip(got, pred)]
    circuit = circuit_of(ds)
    tr = _Traces(ds)
    held, starts, gate = [], [], []
    window = tr.gates_between(tr.table[:, BOUNDARIES.index("plasticity_start")],
                              tr.table[:, BOUNDARIES.index("plasticity_end")], circuit.depth,
                              circuit.hold)
    n = ds.sizes["cycle"]
    for l in layers:
        if l == 1:
            held.append(np.zeros(n))
        else:
            a0, a1 = _snap(ds, "a", l - 1, "plasticity_start"), _snap(ds, "a", l - 1)
            held.append(_rel(a1 - a0, a1))
        e0 = _snap(ds, "target", l, "plasticity_start") - _snap(ds, "a", l, "plasticity_start")
        starts.append(_rel(e0, _snap(ds, "target", l) - _snap(ds, "a", l)))
        gate.append(np.array([float(np.max(np.abs(1.0 - g["plasticity"][:, l])))
                              if len(g["plasticity"]) else np.nan for g in window]))
    reason = "adds its own size to the relative error: a tenth of the conclusion's tolerance"
    premises = [
        _premise("presynaptic_held", "a_{l−1} held: relative change over the window",
                 _per_layer(held), premise_tolerance, reason,
                 np.where(np.isnan(_per_layer(held)), "a_{l−1} = 0 at the window's end", "")),
        _premise("target_starts_at_a", "τ_l starts at a_l: ‖τ_l − a_l‖ at the window's"
                 " start / at its end", _per_layer(starts), premise_tolerance, reason,
                 np.where(np.isnan(_per_layer(starts)), _NO_ERROR, "")),
        _premise("gate_binary", "plasticity gate 1 throughout the window: max |1 − p|",
                 _per_layer(gate), premise_tolerance, reason,
                 np.where(np.isnan(_per_layer(gate)), "the plasticity window never opens", "")),
    ]
    res = _per_layer(cols)
    why = "no predicted change (τ_l = a_l or η_W = 0)"
    if circuit.consolidation == "cycle":
        why += ("; or, consolidated at the cycle boundary, the change is applied in a cycle"
                " not recorded")
    na = np.where(np.isnan(res), why, "")
    return _result("P5", "a held, τ starts at a ⇒ ΔW_l = η_W (τ_l − a_l) n_{l−1}ᵀ",
                   res, tolerance, check_p5.__doc__, layers, ds.cycle.values, premises, na)


def check_p6(ds: xr.Dataset, tolerance: float = 0.01,
             settle_tolerance: float = SETTLE_TOLERANCE,
             settle_steps: int = SETTLE_STEPS) -> xr.Dataset:
    """P6: at γ = 1 the Δ1 drive (m_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ is the negative gradient of
    ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖² with respect to Ω_l (with the slope-gated decoder,
    g_l(u) = Ω_l ũ, and ũ replaces σ̃(u)). Measured at the end of the feedforward
    phase (``feedback_start`` snapshot): ‖drive − analytic gradient at its a_{l−1}‖ relative to
    ‖a_{l−1}‖ ‖σ̃(u_l)‖, the size of the drive's terms, l = 2..L.

    Premises: the feedforward phase has settled at its end — ``u_settled`` (u_l-increments
    per τ_u relative to ‖u_l‖) and ``a_settled`` (a_l- and a_{l−1}-increments per τ_a relative
    to their size; the input layer is clamped), over the last ``settle_steps`` steps, below
    ``settle_tolerance`` (needs u and a traced at every step: n/a otherwise). The drive equals
    the gradient exactly once u_l = f_l(a_{l−1}), which is where these loops settle.

    The snapshot shows fb = g_l(u_l) as the last step computed it, with the Ω from before that
    step's own Δ1 update, so with a learning Ω the gradient is taken with that Ω (the
    snapshot's minus the step's η_Ω dt (m_{l−1} − fb) σ̃(u_l)ᵀ): otherwise one step of
    learning, η_Ω dt relative (2.5 % at the quickstart's 25 /s and 1 ms), would read as a
    violation.

    Tolerance 0.01: ten times the settling tolerance."""
    _require(ds, ["snapshot_m", "snapshot_fb", "snapshot_u", "weight"], "P6")
    circuit = circuit_of(ds)
    b = "feedback_start"
    dt = float(ds.attrs["dt"])
    nets = _networks(ds, b)
    sigma = nets[0].sigma
    layers = list(range(2, circuit.depth + 1))

    def dec(v):
        return decoder_input(sigma, v, circuit.bias, circuit.feedback_decoder)

    cols = []
    for l in layers:
        m, fb = _snap(ds, "m", l - 1, b), _snap(ds, "fb", l - 1, b)
        u, a_prev = _snap(ds, "u", l, b), _snap(ds, "a", l - 1, b)
        su = dec(u)
        drive = (m - fb)[:, :, None] * su[:, None, :]
        learning = circuit.feedback_rule != "fixed" and circuit.eta_omega != 0
        pre = m if circuit.feedback_rule == "delta1" else a_prev
        grads = []
        for c, net in enumerate(nets):
            omega = net.feedback[l]
            if learning:  # the Ω of the step whose fb the snapshot shows: before its update
                omega = omega - circuit.eta_omega * dt * np.outer(pre[c] - fb[c], su[c])
            sy = dec(net.f(l, a_prev[c][None]))[0]
            r = a_prev[c] - sy @ omega.T
            grads.append(r[:, None] * sy[None, :])
        # scale: ‖a_{l−1}‖ ‖σ̃(u_l)‖, the size of either term of the drive (the gradient itself
        # vanishes when the decoder already reconstructs a_{l−1})
        scale = np.linalg.norm(a_prev, axis=1) * np.linalg.norm(su, axis=1)
        err = np.linalg.norm((drive - np.stack(grads)).reshape(len(nets), -1), axis=1)
        cols.append(np.where(scale > _TINY, err / np.maximum(scale, _TINY), np.nan))
    tr = _Traces(ds)
    k_u, k_a = _rate(circuit.tau_u, tr.dt), _rate(circuit.tau_a, tr.dt)
    size = {l: np.linalg.norm(_snap(ds, v, l, b), axis=1)
            for v, l in [("u", l) for l in layers]}
    u_prem = _settled_premise(tr, "u", layers, b, k_u, [size[l] for l in layers], "‖u_l‖",
                              "u_l = 0", settle_tolerance, settle_steps,
                              what="u_l settled at the end of the feedforward phase")
    a_vals, a_na = [], []
    for l in layers:
        vals, nas = [], []
        for k in (l, l - 1):
            if k == 0:
                continue  # the input is clamped for the whole cycle
            v, r = _settling(tr, "a", k, b, k_a, np.linalg.norm(_snap(ds, "a", k, b), axis=1),
                             f"a_{k} = 0", settle_steps)
            vals.append(v)
            nas.append(r)
        a_vals.append(np.max(np.stack(vals), axis=0))
        a_na.append(np.array([next((x for x in col if x), "") for col in zip(*nas)], object))
    a_prem = _premise(
        "a_settled", f"a_l and a_{{l−1}} settled at the end of the feedforward phase: max ‖Δa‖"
        f" per τ_a over the last {settle_steps} steps / ‖a‖", _per_layer(a_vals),
        settle_tolerance, _SETTLE_REASON.format(k=settle_steps, tol=settle_tolerance),
        _per_layer(a_na))
    return _result("P6", "feedforward settled ⇒ Δ1Ω at γ = 1 descends"
                   " ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖²", _per_layer(cols), tolerance,
                   check_p6.__doc__, layers, ds.cycle.values, [u_prem, a_prem])


def check_p7(ds: xr.Dataset, tolerance: float = 0.05,
             settle_tolerance: float = SETTLE_TOLERANCE, settle_steps: int = SETTLE_STEPS,
             weight_tolerance: float = 1e-3) -> xr.Dataset:
    """P7: with u settled, the Δ1 drive (m_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ is the negative
    gradient of ½‖f_l⁻¹(τ_l) − g_l(u_l)‖² with respect to Ω_l, i.e. m_{l−1} = f_l⁻¹(τ_l).

    Measured on the traces at the samples with 0.05 < γ_l < 0.95 (where Δ1Ω neither vanishes
    nor is P6's case): ‖m_{l−1} − f_l⁻¹(τ_l)‖ / ‖f_l⁻¹(τ_l) − g_l(u_l)‖, with f_l⁻¹(τ) =
    σ⁻¹(W⁻¹(τ − b)) computed exactly from the cycle's plasticity_start W_l; the largest value
    over the samples where u had settled. Needs traces of u, target (layer l) and m, fb
    (layer l − 1) of every neuron at every step; n/a where W_l is not square, or γ_l is never
    intermediate in the cycle (a square γ). The limit Δ1Ω → 0 as γ → 0 is P8's identity.

    Premises: ``u_settled`` — at some intermediate-γ sample of the cycle the u-increments per
    τ_u over the last ``settle_steps`` steps stay below ``settle_tolerance`` of ‖τ_l‖ (the
    value is the best sample's); ``weights_fixed`` — W_l moves by at most
    ``weight_tolerance`` (1e-3, relative, over the cycle's boundary snapshots), since f_l⁻¹ is
    computed from one W_l and its drift adds about cond(W_l) × the drift to the residual.

    Tolerance 0.05, as P1: with u settled the encoder input inverts the target up to the
    loop's residual; larger values mean the drive is not the descent direction."""
    _require(ds, ["weight"], "P7")
    circuit = circuit_of(ds)
    sigma = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    tr = _Traces(ds)
    k_u = _rate(circuit.tau_u, tr.dt)
    layers = list(range(2, circuit.depth + 1))
    shape = (ds.sizes["cycle"], len(layers))
    res, settled, drift = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    na = np.full(shape, "", dtype=object)
    settle_na = np.full(shape, "", dtype=object)
    cycles = tr.cycle_of(tr.steps)
    w_all = {b: _networks(ds, b) for b in ds.boundary.values}
    for j, l in enumerate(layers):
        if circuit.sizes[l] != circuit.sizes[l - 1]:
            na[:, j] = f"W_{l} is not square: f_{l}⁻¹ is not defined"
            continue
        u, why_u = tr.layer("u", l)
        tau, why_t = tr.layer("target", l)
        m, why_m = tr.layer("m", l - 1)
        fb, why_f = tr.layer("fb", l - 1)  # a missing trace makes the layer's cells n/a
        why = why_u or why_t or why_m or why_f or ("" if "gamma" in ds else "γ not recorded")
        if why:
            na[:, j] = why
            continue
        gamma = ds.gamma.sel(gate_layer=l).values
        inc = np.full(len(tr.steps), np.nan)
        step_ok = np.diff(tr.steps) == 1
        inc[1:] = np.where(step_ok, np.linalg.norm(np.diff(u, axis=0), axis=1), np.nan)
        for ci, c in enumerate(ds.cycle.values):
            w0 = w_all["plasticity_start"][ci].weights[l]
            drift[ci, j] = max(np.linalg.norm(w_all[b][ci].weights[l] - w0)
                               for b in w_all) / max(np.linalg.norm(w0), _TINY)
            idx = np.flatnonzero((gamma > 0.05) & (gamma < 0.95) & (cycles == c))
            if not len(idx):
                na[ci, j] = f"γ_{l} never strictly between 0.05 and 0.95 in this cycle"
                continue
            score = np.full(len(idx), np.nan)
            for i, s in enumerate(idx):
                if s >= settle_steps:
                    window = inc[s - settle_steps + 1: s + 1]
                    scale = k_u * np.linalg.norm(tau[s])
                    if np.all(np.isfinite(window)) and scale > _TINY:
                        score[i] = np.max(window) / scale
            if not np.any(np.isfinite(score)):
                settle_na[ci, j] = f"u of layer {l} not traced around the intermediate γ"
                continue
            settled[ci, j] = float(np.nanmin(score))
            good = idx[score <= settle_tolerance]
            if not len(good):
                continue
            lin = w0[:, : circuit.sizes[l - 1]]
            b = w0[:, circuit.sizes[l - 1]:].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                try:
                    inv = sigma.inverse(np.linalg.solve(lin, (tau[good] - b).T).T)
                except np.linalg.LinAlgError:
                    na[ci, j] = f"W_{l} is singular"
                    continue
            num = np.linalg.norm(m[good] - inv, axis=1)
            den = np.linalg.norm(inv - fb[good], axis=1)
            r = np.where(den > _TINY, num / np.maximum(den, _TINY), np.nan)
            if np.any(np.isfinite(r)):
                res[ci, j] = float(np.nanmax(r))
            else:
                na[ci, j] = "τ_l outside the range of f_l, or m = g(u) (no drive)"
    premises = [
        _premise("u_settled", f"u_l settled at an intermediate γ: min over those samples of"
                 f" max ‖Δu‖ per τ_u over the last {settle_steps} steps / ‖τ_l‖", settled,
                 settle_tolerance, _SETTLE_REASON.format(k=settle_steps, tol=settle_tolerance),
                 np.where(settle_na != "", settle_na, na)),
        _premise("weights_fixed", "W_l fixed over the cycle: max relative change",
                 drift, weight_tolerance,
                 "f_l⁻¹ is computed from one W_l: its drift adds about cond(W_l) × the drift",
                 na),
    ]
    return _result("P7", "u settled ⇒ Δ1Ω descends ½‖f_l⁻¹(τ_l) − g_l(u_l)‖²", res,
                   tolerance, check_p7.__doc__, layers, ds.cycle.values, premises, na)


def check_p8(ds: xr.Dataset, tolerance: float = 1e-9) -> xr.Dataset:
    """P8: Δ1Ω = γ Δ2Ω, i.e. m_{l−1} − g_l(u_l) = γ_l (a_{l−1} − g_l(u_l)), l = 2..L. An
    identity of the update: it has no premise, so its cells hold, are violated or are n/a.

    Measured on the phase-boundary snapshots whose last step held a_{l−1} (c(γ_{l−1}) = 0):
    a snapshot shows a after the step's update but m and g(u) as the step computed them, so
    only where a did not move in that step is the a of the identity the recorded one. Residual:
    the largest relative error over those boundaries of the cycle (n/a if there are none, e.g.
    a sinusoid whose snapshots all fall where the hold gate is open).

    n/a with difference feedback, where m_{l−1} carries the held baseline and Δ1 is applied as
    γ Δ2's error by definition.

    Tolerance 1e-9: an identity of the update (m is γ a + (1 − γ) g); float64 round-off on O(1)
    values is ~1e-16, so anything above 1e-9 is a wrong drive, not round-off."""
    _require(ds, ["snapshot_m", "snapshot_fb", "snapshot_a"], "P8")
    circuit = circuit_of(ds)
    schedule = schedule_of(ds)
    dt = float(ds.attrs["dt"])
    table = boundary_steps_of(ds)
    layers = list(range(2, circuit.depth + 1))
    res = np.full((ds.sizes["cycle"], len(layers)), np.nan)
    for b in ds.boundary.values:
        # the step whose m and g(u) the snapshot shows, per cycle
        k = table[:, BOUNDARIES.index(str(b))] - 1
        gates = schedule.sample_steps(k, dt, circuit.depth, circuit.hold)
        for j, l in enumerate(layers):
            held = gates["hold"][:, l - 1] == 0
            m, fb = _snap(ds, "m", l - 1, b), _snap(ds, "fb", l - 1, b)
            a = _snap(ds, "a", l - 1, b)
            num = (m - fb) - gates["gamma"][:, l][:, None] * (a - fb)
            den = np.maximum(np.linalg.norm(a - fb, axis=1), _TINY)
            value = np.where(held, np.linalg.norm(num, axis=1) / den, np.nan)
            res[:, j] = np.fmax(res[:, j], value)
    na = np.where(np.isnan(res), "a_{l−1} moved in the last step of every snapshot", "")
    why_not = None
    if circuit.difference:
        why_not = ("difference feedback: m_{l−1} = a_{l−1} + (1 − γ)(g_l(u_l) − ĝ_{l−1}), and Δ1 is"
                   " applied as γ (a_{l−1} − g_l(u_l)) σ(u_l)ᵀ, so Δ1 = γΔ2 by construction")
    if why_not:
        res[:] = np.nan
        na = np.full(res.shape, why_not, dtype=object)
    return _result("P8", "Δ1Ω = γ Δ2Ω", res, tolerance, check_p8.__doc__, layers,
                   ds.cycle.values, [], na)
