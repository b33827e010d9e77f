"""Checks of seed 000's propositions on a recorded run (docs/model.md §4).

Each check is a pure function ``Dataset -> Dataset`` of a recording made by
:func:`cdtp.simulation.simulate` (the circuit is read back from the Dataset's attributes). It
returns, per cycle and layer, the measured ``residual``, the ``tolerance`` (its reason in the
function's docstring and in the result's attributes) and ``passed`` (1, 0, or NaN where the
check does not apply, e.g. a layer without the variable or a cycle with no feedback error).

The states the checks read are the phase-boundary snapshots: "settled" means the snapshot at
``plasticity_end`` — the end of the plasticity window, which for a square γ with the default
descending gate is the end of the feedback phase, and for a sinusoid the trough of γ.

=====  ===========================================================================
check  claim (seed 000) → what is measured
=====  ===========================================================================
P1     u converged ⇒ τ_l = h_l → ‖τ_l − h_l‖ / ‖τ_l − a_l‖, settled, l ≥ 2
P2     u converged ⇒ τ_{l−1} = f_l⁻¹(τ_l) → ‖f_l(m_{l−1}) − τ_l‖ / ‖τ_l − a_l‖
P3     ρ(I − (1−γ) f′g′) < 1 ⇒ the u-loop converges → ρ of the loop's linearization
P4     the u-increments shrink like αᵗ → fitted rate vs predicted ρ (needs u traces)
P5     ΔW_l over the window = η_W (τ_l − a_l) n_{l−1}ᵀ (Eqs 43, 58) → relative error
P6     Δ1Ω at γ = 1 is SGD on ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖² → relative error of the drive
P7     u converged ⇒ Δ1Ω descends ½‖f_l⁻¹(τ_l) − g_l(u_l)‖² → ‖m_{l−1} − f_l⁻¹(τ_l)‖ (traces)
P8     Δ1Ω = γ Δ2Ω → relative error at every snapshot
GN     DTP target change ≈ Gauss-Newton direction (Eq 22) → angle in radians
INV    Lip(f∘g − I) = α < 1 ⇒ exponential inversion → α and fitted rate ≤ α
=====  ===========================================================================

This module never imports brian2.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from cdtp.layers import Network, with_bias
from cdtp.nonlinearities import get_nonlinearity
from cdtp.recording import circuit_of, schedule_of

__all__ = ["CHECKS", "check_all", "report", "summary", "weight_change_terms"]

SETTLED = "plasticity_end"
_TINY = 1e-12


# -- reading the Dataset ------------------------------------------------------------------------
def _snap(ds: xr.Dataset, var: str, l: int, boundary: str = SETTLED) -> np.ndarray:
    nodes = np.flatnonzero(ds.node_layer.values == l)
    return ds[f"snapshot_{var}"].sel(boundary=boundary).values[:, nodes]


def _require(ds: xr.Dataset, names, check: str) -> None:
    missing = [n for n in names if n not in ds]
    if missing:
        raise KeyError(f"{check} needs {missing} in the recording (RecordSpec snapshots/weights)")


def _networks(ds: xr.Dataset, boundary: str) -> list[Network]:
    """One Network per cycle with the weights snapshotted at ``boundary``."""
    circuit = circuit_of(ds)
    sigma = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    sizes, L, bias = circuit.sizes, circuit.depth, circuit.bias
    w = ds.weight.sel(boundary=boundary).values
    proj = ds.projection.values
    index = {}
    for name in dict.fromkeys(proj.tolist()):
        sel = np.flatnonzero(proj == name)
        kind, l = name.rsplit("_", 1)
        l = int(l)
        shape = (sizes[l], sizes[l - 1] + bias) if kind == "feedforward" else (
            sizes[l - 1], sizes[l] + bias
        )
        index[name] = (sel, shape)
    nets = []
    for c in range(w.shape[0]):
        mats = {name: w[c, sel].reshape(shape) for name, (sel, shape) in index.items()}
        nets.append(Network(
            sizes=tuple(sizes),
            weights=[None] + [mats[f"feedforward_{l}"] for l in range(1, L + 1)],
            feedback=[None, None] + [mats[f"feedback_{l}"] for l in range(2, L + 1)],
            sigma=sigma, bias=bias,
        ))
    return nets


def _result(name, claim, residual, tolerance, reason, layers, cycles, extra=None,
            passed=None, higher_is_worse=True) -> xr.Dataset:
    residual = np.asarray(residual, dtype=float)
    if passed is None:
        ok = residual <= tolerance if higher_is_worse else residual >= tolerance
        passed = np.where(np.isnan(residual), np.nan, ok.astype(float))
    coords = {"cycle": ("cycle", np.asarray(cycles)), "layer": ("layer", np.asarray(layers))}
    data = {
        "residual": (("cycle", "layer"), residual, {"long_name": f"{name} residual",
                                                   "units": "1"}),
        "passed": (("cycle", "layer"), np.asarray(passed, dtype=float),
                   {"long_name": f"{name} passed (1), failed (0), n/a (NaN)", "units": "1"}),
        "tolerance": ((), float(tolerance), {"long_name": f"{name} tolerance", "units": "1"}),
    }
    for k, (v, attrs) in (extra or {}).items():
        data[k] = (("cycle", "layer"), np.asarray(v, dtype=float), attrs)
    return xr.Dataset(data, coords=coords, attrs={
        "check": name, "claim": claim, "tolerance_reason": reason,
    })


def _rel(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.linalg.norm(num.reshape(num.shape[0], -1), axis=1)
    den = np.linalg.norm(den.reshape(den.shape[0], -1), axis=1)
    return np.where(den > _TINY, num / np.maximum(den, _TINY), np.nan)


def _loop_matrix(net: Network, l: int, m_prev: np.ndarray, u: np.ndarray, k_u: float,
                 gamma: float = 0.0, k_h: float = 1.0) -> np.ndarray:
    """Linearization of one step of the layer-l u-loop in the feedback phase (c = 0).

    With algebraic h (k_h = 1): u ← u + k_u (τ − f_l((1−γ) g_l(u) + γ a)) has Jacobian
    I − k_u (1−γ) J, J = f_l′ g_l′. With a finite τ_h (k_h = dt/τ_h < 1) the loop carries h
    too, in the circuit's order h ← h + k_h (f_l(m) − h), then u ← u + k_u (τ − h), so one
    step of (h, u) has the block Jacobian [[(1−k_h) I, k_h J'], [−k_u (1−k_h) I,
    I − k_u k_h J']] with J' = (1−γ) J."""
    jf = net.f_jacobian(l, m_prev[None])[0]
    jg = net.g_jacobian(l, u[None])[0]
    j = (1.0 - gamma) * jf @ jg
    eye = np.eye(len(u))
    if k_h == 1.0:
        return eye - k_u * j
    return np.block([[(1.0 - k_h) * eye, k_h * j],
                     [-k_u * (1.0 - k_h) * eye, eye - k_u * k_h * j]])


def _k_u(circuit, dt) -> float:
    return 1.0 if circuit.tau_u == 0 else dt / circuit.tau_u


def _k_h(circuit, dt) -> float:
    return 1.0 if circuit.tau_h == 0 else dt / circuit.tau_h


# -- the checks ---------------------------------------------------------------------------------
def check_p1(ds: xr.Dataset, tolerance: float = 0.05) -> xr.Dataset:
    """P1: with u converged, τ_l = h_l. Residual ‖τ_l − h_l‖ / ‖τ_l − a_l‖ at the end of the
    plasticity window, layers 2..L (layer 1 has no decoder loop: h_1 = f_1(x) = a_1).

    Tolerance 0.05: a loop contracting at rate ρ leaves ρⁿ of the initial discrepancy after n
    steps; with ρ ≤ 0.5 and the ≥ 10 feedback steps of a well-built run that is < 1e-3, so 5 %
    only fails loops that have not converged (too short a phase, ρ near or above 1)."""
    _require(ds, ["snapshot_target", "snapshot_h", "snapshot_a"], "P1")
    L = circuit_of(ds).depth
    layers = list(range(2, L + 1))
    res = np.stack([_rel(_snap(ds, "target", l) - _snap(ds, "h", l),
                         _snap(ds, "target", l) - _snap(ds, "a", l)) for l in layers], axis=1)
    return _result("P1", "u converged ⇒ τ_l = h_l", res, tolerance, check_p1.__doc__,
                   layers, ds.cycle.values)


def check_p2(ds: xr.Dataset, tolerance: float = 0.05) -> xr.Dataset:
    """P2: with u converged, the encoder input m_{l−1} inverts the target: f_l(m_{l−1}) = τ_l.
    Residual ‖f_l(m_{l−1}) − τ_l‖ / ‖τ_l − a_l‖ with the weights and states at the end of the
    plasticity window, layers 2..L.

    Tolerance 0.05, as P1 (with algebraic h, f_l(m_{l−1}) is h_l and P2 reduces to P1; with a
    finite τ_h it also measures how far h lags its drive)."""
    _require(ds, ["snapshot_m", "snapshot_target", "weight"], "P2")
    L = circuit_of(ds).depth
    nets = _networks(ds, SETTLED)
    layers = list(range(2, L + 1))
    cols = []
    for l in layers:
        m, tau, a = _snap(ds, "m", l - 1), _snap(ds, "target", l), _snap(ds, "a", l)
        f = np.stack([nets[c].f(l, m[c][None])[0] for c in range(len(nets))])
        cols.append(_rel(f - tau, tau - a))
    return _result("P2", "u converged ⇒ τ_{l−1} = f_l⁻¹(τ_l)", np.stack(cols, axis=1),
                   tolerance, check_p2.__doc__, layers, ds.cycle.values)


def _predicted_rates(ds: xr.Dataset):
    circuit = circuit_of(ds)
    k_u = _k_u(circuit, float(ds.attrs["dt"]))
    k_h = _k_h(circuit, float(ds.attrs["dt"]))
    nets = _networks(ds, SETTLED)
    layers = list(range(2, circuit.depth + 1))
    rho = np.full((len(nets), len(layers)), np.nan)
    alpha = np.full_like(rho, np.nan)
    for j, l in enumerate(layers):
        m, u = _snap(ds, "m", l - 1), _snap(ds, "u", l)
        for c, net in enumerate(nets):
            mat = _loop_matrix(net, l, m[c], u[c], k_u, k_h=k_h)
            rho[c, j] = np.max(np.abs(np.linalg.eigvals(mat)))
            # α of Secs 5–6 is the Lipschitz constant of the u-iteration itself (h algebraic)
            reduced = mat if k_h == 1.0 else _loop_matrix(net, l, m[c], u[c], k_u)
            alpha[c, j] = np.linalg.norm(reduced, 2)
    return layers, rho, alpha


def check_p3(ds: xr.Dataset, tolerance: float = 1.0) -> xr.Dataset:
    """P3: if ρ(I − (1 − γ) f_l′ g_l′) < 1 the u-loop converges. Residual: that spectral radius
    (with the step factor k_u = dt/τ_u of the Euler loop, γ = 0 of the feedback phase, Jacobians
    at the settled state; with a finite τ_h, of the joint h–u step, see :func:`_loop_matrix`);
    passed iff it is below 1, the premise under which the paper's
    convergence holds. ``converged`` reports whether P1 holds in that cycle, for comparison.

    Tolerance 1: the stability boundary of a linear iteration, not a fitted number."""
    _require(ds, ["snapshot_m", "snapshot_u", "weight"], "P3")
    layers, rho, _ = _predicted_rates(ds)
    p1 = check_p1(ds)
    passed = np.where(np.isnan(rho), np.nan, (rho < tolerance).astype(float))
    return _result("P3", "ρ(I − (1−γ) f′g′) < 1 ⇒ u converges", rho, tolerance,
                   check_p3.__doc__, layers, ds.cycle.values, passed=passed,
                   extra={"converged": (p1.passed.values,
                                        {"long_name": "P1 holds (u converged)", "units": "1"})})


def _fitted_rates(ds: xr.Dataset, layers) -> np.ndarray:
    """Per cycle and layer: exponential rate of ‖u(t+dt) − u(t)‖ over the feedback phase."""
    circuit = circuit_of(ds)
    spc = int(ds.attrs["steps_per_cycle"])
    dt = float(ds.attrs["dt"])
    out = np.full((ds.sizes["cycle"], len(layers)), np.nan)
    if "u" not in ds or "time" not in ds.dims:
        return out
    import json

    bsteps = json.loads(ds.attrs["boundary_steps"])
    every = json.loads(ds.attrs["record"])["every"]
    if every != 1:
        return out
    steps = np.rint(ds.time.values / dt).astype(int) - 1  # sample at the end of step k
    for j, l in enumerate(layers):
        sel = np.flatnonzero(ds.layer.values == l)
        if len(sel) != circuit.sizes[l]:
            continue  # needs every neuron of the layer
        u = ds.u.values[:, sel]
        for ci, c in enumerate(ds.cycle.values):
            lo = c * spc + bsteps["feedback_start"]
            hi = c * spc + min(bsteps["plasticity_end"], spc)
            idx = np.flatnonzero((steps >= lo) & (steps < hi))
            if len(idx) < 4 or np.any(np.diff(steps[idx]) != 1):
                continue
            inc = np.linalg.norm(np.diff(u[idx], axis=0), axis=1)
            # fit where the increments are above float noise and below the first (transient)
            good = np.flatnonzero(inc > 1e-11 * max(np.max(np.abs(u[idx])), 1.0))
            if len(good) < 3:
                continue
            good = good[1:]
            slope = np.polyfit(good, np.log(inc[good]), 1)[0]
            out[ci, j] = float(np.exp(slope))
    return out


def check_p4(ds: xr.Dataset, tolerance: float = 0.2) -> xr.Dataset:
    """P4: near γ = 0 the u-increments shrink like ρᵗ. Residual: |fitted − predicted| /
    predicted, where the fitted rate comes from the recorded u of every neuron of the layer at
    every step of the feedback phase, and the prediction is the largest ρ of the layer's own loop
    and of the loops above it (a layer's target moves until the layers above have settled).

    Tolerance 0.2 (the issue's): the Jacobians are taken at the settled state, while the fit
    spans the whole decay, over which the Jacobians drift by O(the discrepancy)."""
    _require(ds, ["snapshot_m", "snapshot_u", "weight"], "P4")
    layers, rho, _ = _predicted_rates(ds)
    predicted = np.maximum.accumulate(rho[:, ::-1], axis=1)[:, ::-1]
    fitted = _fitted_rates(ds, layers)
    res = np.abs(fitted - predicted) / predicted
    return _result("P4", "u-increments shrink like ρᵗ", res, tolerance, check_p4.__doc__,
                   layers, ds.cycle.values, extra={
                       "fitted_rate": (fitted, {"long_name": "fitted rate", "units": "1"}),
                       "predicted_rate": (predicted, {"long_name": "predicted ρ",
                                                      "units": "1"}),
                   })


def weight_change_terms(ds: xr.Dataset):
    """Recorded ΔW_l over the plasticity window and the DTP prediction of P5, per layer.

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
        predicted.append(circuit.eta_w * err[:, :, None] * n_prev[:, None, :])
        recorded.append(np.stack([w1[c].weights[l] - w0[c].weights[l] for c in range(len(w0))]))
    return layers, recorded, predicted


def check_p5(ds: xr.Dataset, tolerance: float = 0.01) -> xr.Dataset:
    """P5 (Eqs 43, 58): the total ΔW_l over the plasticity window equals
    η_W (τ_l − a_l) n_{l−1}ᵀ (× the influence factor s_l when on), with τ_l, a_l and
    n_{l−1} = σ̃(a_{l−1}) / ‖σ̃(a_{l−1})‖² at the end of the window. Residual: relative error.

    Tolerance 0.01: the sum telescopes exactly when a is held and τ starts the window at a, so
    what remains is a not being perfectly held (a smooth hold gate) and τ not starting at a (a
    short feedforward phase); 1 % is the issue's bound for the continuous circuit."""
    layers, got, pred = weight_change_terms(ds)
    cols = [_rel(g - p, p) for g, p in zip(got, pred)]
    return _result("P5", "ΔW_l over the window = η_W (τ_l − a_l) n_{l−1}ᵀ",
                   np.stack(cols, axis=1), tolerance, check_p5.__doc__, layers,
                   ds.cycle.values)


def check_p6(ds: xr.Dataset, tolerance: float = 0.01) -> xr.Dataset:
    """P6: at γ = 1 the Δ1 drive (m_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ is the negative gradient of
    ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖² with respect to Ω_l. Measured at the end of the feedforward
    phase (``feedback_start`` snapshot): ‖drive − analytic gradient at its a_{l−1}‖ relative to
    ‖a_{l−1}‖ ‖σ̃(u_l)‖, the size of the drive's terms, l = 2..L.

    Tolerance 0.01: the two agree exactly once u_l = f_l(a_{l−1}); the feedforward phase leaves
    a residual u-lag of order ρⁿ (n steps of the phase), below 1 % when the phase is several
    settling times long, and above it when the phase is too short to settle."""
    _require(ds, ["snapshot_m", "snapshot_fb", "snapshot_u", "weight"], "P6")
    circuit = circuit_of(ds)
    nets = _networks(ds, "feedback_start")
    sigma = nets[0].sigma
    layers = list(range(2, circuit.depth + 1))
    cols = []
    for l in layers:
        b = "feedback_start"
        m, fb = _snap(ds, "m", l - 1, b), _snap(ds, "fb", l - 1, b)
        u, a_prev = _snap(ds, "u", l, b), _snap(ds, "a", l - 1, b)
        drive = (m - fb)[:, :, None] * with_bias(sigma(u), circuit.bias)[:, None, :]
        grads = []
        for c, net in enumerate(nets):
            y = net.f(l, a_prev[c][None])
            r = a_prev[c][None] - net.g(l, y)
            grads.append(r[0][:, None] * with_bias(sigma(y), circuit.bias)[0][None, :])
        # scale: ‖a_{l−1}‖ ‖σ̃(u_l)‖, the size of either term of the drive (the gradient itself
        # vanishes when the decoder already reconstructs a_{l−1})
        scale = np.linalg.norm(a_prev, axis=1) * np.linalg.norm(
            with_bias(sigma(u), circuit.bias), axis=1)
        err = np.linalg.norm((drive - np.stack(grads)).reshape(len(nets), -1), axis=1)
        cols.append(np.where(scale > _TINY, err / np.maximum(scale, _TINY), np.nan))
    return _result("P6", "Δ1Ω at γ = 1 descends ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖²",
                   np.stack(cols, axis=1), tolerance, check_p6.__doc__, layers,
                   ds.cycle.values)


def check_p7(ds: xr.Dataset, tolerance: float = 0.05, converged: float = 1e-3) -> xr.Dataset:
    """P7: with u converged, the Δ1 drive (m_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ is the negative
    gradient of ½‖f_l⁻¹(τ_l) − g_l(u_l)‖² with respect to Ω_l, i.e. m_{l−1} = f_l⁻¹(τ_l).

    Measured on the traces, at every sample with 0.05 < γ_l < 0.95 (where Δ1Ω neither vanishes
    nor is P6's case) and the loop at its equilibrium (‖τ_l − h_l‖ ≤ ``converged`` ‖τ_l‖, the
    fixed point of the u-loop):
    ‖m_{l−1} − f_l⁻¹(τ_l)‖ / ‖f_l⁻¹(τ_l) − g_l(u_l)‖, with f_l⁻¹(τ) = σ⁻¹(W⁻¹(τ − b)) computed
    exactly (layers whose W_l is square and invertible; W_l from the cycle's plasticity_start
    snapshot, so W_l must not move during the cycle: run the check with η_W = 0 or a gate that
    keeps W fixed while γ is intermediate, or the drift of W adds to the residual); the largest
    value of the cycle. It needs traces of h, u, target (layer l) and m,
    fb (layer l − 1) of every neuron at every step. The limit Δ1Ω → 0 as γ → 0 is P8's identity
    Δ1Ω = γ Δ2Ω.

    Tolerance 0.05, as P1: with u converged the encoder input inverts the target up to the
    loop's residual; larger values mean the drive is not the descent direction."""
    _require(ds, ["h", "u", "target", "m", "fb", "gamma", "weight"], "P7")
    circuit = circuit_of(ds)
    sigma = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    dt, spc = float(ds.attrs["dt"]), int(ds.attrs["steps_per_cycle"])
    nets = _networks(ds, "plasticity_start")
    layers = [l for l in range(2, circuit.depth + 1)
              if circuit.sizes[l] == circuit.sizes[l - 1]]
    res = np.full((ds.sizes["cycle"], len(layers)), np.nan)
    steps = np.rint(ds.time.values / dt).astype(int) - 1
    cycles = steps // spc
    for j, l in enumerate(layers):
        here = np.flatnonzero(ds.layer.values == l)
        below = np.flatnonzero(ds.layer.values == l - 1)
        if len(here) != circuit.sizes[l] or len(below) != circuit.sizes[l - 1]:
            continue
        h, tau = ds.h.values[:, here], ds.target.values[:, here]
        m, fb = ds.m.values[:, below], ds.fb.values[:, below]
        gamma = ds.gamma.sel(gate_layer=l).values
        gap = np.linalg.norm(tau - h, axis=1)
        ok = ((gamma > 0.05) & (gamma < 0.95)
              & (gap <= converged * np.maximum(np.linalg.norm(tau, axis=1), _TINY)))
        for ci, c in enumerate(ds.cycle.values):
            idx = np.flatnonzero(ok & (cycles == c))
            if not len(idx):
                continue
            w = nets[ci].weights[l]
            lin, b = w[:, : circuit.sizes[l - 1]], w[:, circuit.sizes[l - 1]:].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                inv = sigma.inverse(np.linalg.solve(lin, (tau[idx] - b).T).T)
            num = np.linalg.norm(m[idx] - inv, axis=1)
            den = np.linalg.norm(inv - fb[idx], axis=1)
            r = np.where(den > _TINY, num / np.maximum(den, _TINY), np.nan)
            if np.any(np.isfinite(r)):
                res[ci, j] = float(np.nanmax(r))
    return _result("P7", "u converged ⇒ Δ1Ω descends ½‖f_l⁻¹(τ_l) − g_l(u_l)‖²", res,
                   tolerance, check_p7.__doc__, layers, ds.cycle.values)


def check_p8(ds: xr.Dataset, tolerance: float = 1e-9) -> xr.Dataset:
    """P8: Δ1Ω = γ Δ2Ω, i.e. m_{l−1} − g_l(u_l) = γ_l (a_{l−1} − g_l(u_l)), l = 2..L.

    Measured on the phase-boundary snapshots whose last step held a_{l−1} (c(γ_{l−1}) = 0):
    a snapshot shows a after the step's update but m and g(u) as the step computed them, so
    only where a did not move in that step is the a of the identity the recorded one. Residual:
    the largest relative error over those boundaries of the cycle (NaN if there are none, e.g.
    a sinusoid whose snapshots all fall where the hold gate is open).

    Tolerance 1e-9: an identity of the update (m is γ a + (1 − γ) g); float64 round-off on O(1)
    values is ~1e-16, so anything above 1e-9 is a wrong drive, not round-off."""
    _require(ds, ["snapshot_m", "snapshot_fb", "snapshot_a"], "P8")
    circuit = circuit_of(ds)
    schedule = schedule_of(ds)
    dt, spc = float(ds.attrs["dt"]), int(ds.attrs["steps_per_cycle"])
    gates = schedule.sample(spc, dt, circuit.depth, circuit.hold)
    import json

    bsteps = json.loads(ds.attrs["boundary_steps"])
    layers = list(range(2, circuit.depth + 1))
    res = np.full((ds.sizes["cycle"], len(layers)), np.nan)
    for b in ds.boundary.values:
        k = (bsteps[str(b)] - 1) % spc  # the step whose m and g(u) the snapshot shows
        for j, l in enumerate(layers):
            if gates["hold"][k, l - 1] != 0:
                continue
            m, fb = _snap(ds, "m", l - 1, b), _snap(ds, "fb", l - 1, b)
            a = _snap(ds, "a", l - 1, b)
            num = (m - fb) - gates["gamma"][k, l] * (a - fb)
            den = np.maximum(np.linalg.norm(a - fb, axis=1), _TINY)
            res[:, j] = np.fmax(res[:, j], np.linalg.norm(num, axis=1) / den)
    return _result("P8", "Δ1Ω = γ Δ2Ω", res, tolerance, check_p8.__doc__, layers,
                   ds.cycle.values)


def check_gn(ds: xr.Dataset, tolerance: float = 0.1) -> xr.Dataset:
    """GN (Eq 22): the target change τ_l − a_l points along the Gauss-Newton direction
    J_l⁺ (τ_L − a_L), J_l = ∂a_L/∂a_l from the recorded weights and activities (dense, at the
    settled state). Residual: the angle between them in radians, l = 1..L−1.

    Tolerance 0.1 rad: the paper's claim holds to first order in β and with exact inverses; a
    well-built run (β ≤ 0.1, decoders near f⁻¹) stays within a few hundredths of a radian, while
    BP's direction is typically ~0.5 rad away (see tests/reference/test_backprop.py)."""
    from cdtp.reference.backprop import output_jacobian

    _require(ds, ["snapshot_a", "snapshot_target", "weight"], "GN")
    circuit = circuit_of(ds)
    L = circuit.depth
    nets = _networks(ds, SETTLED)
    a = [_snap(ds, "a", l) for l in range(L + 1)]
    d_out = _snap(ds, "target", L) - a[L]
    layers = list(range(1, L))
    res = np.full((len(nets), len(layers)), np.nan)
    for j, l in enumerate(layers):
        d = _snap(ds, "target", l) - a[l]
        for c, net in enumerate(nets):
            jac = output_jacobian(net, [x[c][None] for x in a], l)[0]
            gn = np.linalg.pinv(jac) @ d_out[c]
            nd, ng = np.linalg.norm(d[c]), np.linalg.norm(gn)
            if nd > _TINY and ng > _TINY:
                res[c, j] = float(np.arccos(np.clip(d[c] @ gn / (nd * ng), -1.0, 1.0)))
    return _result("GN", "DTP target change ≈ Gauss-Newton direction", res, tolerance,
                   check_gn.__doc__, layers, ds.cycle.values)


def check_inv(ds: xr.Dataset, tolerance: float = 1.0) -> xr.Dataset:
    """INV (Secs 5–6): iterative inversion contracts when α = Lip(I − k_u f_l′ g_l′) < 1 (the
    local Lipschitz constant is the spectral norm of the loop's Jacobian at the settled state).
    Residual: α; passed iff α < 1 and, where u traces allow a fit and h is algebraic, the
    fitted rate is at most 1.2 α (20 % for the drift of the Jacobians along the decay, as in
    P4; with a finite τ_h the h–u loop's rate is P4's block prediction instead).

    Tolerance 1: α < 1 is the contraction condition itself."""
    _require(ds, ["snapshot_m", "snapshot_u", "weight"], "INV")
    layers, _, alpha = _predicted_rates(ds)
    bound = np.maximum.accumulate(alpha[:, ::-1], axis=1)[:, ::-1]
    fitted = _fitted_rates(ds, layers)
    if circuit_of(ds).tau_h != 0:
        fitted[:] = np.nan  # with a lagging h the observed rate is P4's, not bounded by α
    ok = alpha < tolerance
    ok = np.where(np.isnan(fitted), ok, ok & (fitted <= 1.2 * bound))
    passed = np.where(np.isnan(alpha), np.nan, ok.astype(float))
    return _result("INV", "α = Lip(f∘g − I) < 1 ⇒ inversion converges exponentially", alpha,
                   tolerance, check_inv.__doc__, layers, ds.cycle.values, passed=passed,
                   extra={"fitted_rate": (fitted, {"long_name": "fitted rate", "units": "1"})})


CHECKS = {
    "P1": check_p1, "P2": check_p2, "P3": check_p3, "P4": check_p4, "P5": check_p5,
    "P6": check_p6, "P7": check_p7, "P8": check_p8, "GN": check_gn, "INV": check_inv,
}


def check_all(ds: xr.Dataset, checks=None) -> dict[str, xr.Dataset]:
    """Run the named checks (default: all) on a recording; a check whose inputs were not
    recorded is left out (its KeyError names what is missing)."""
    out = {}
    for name in checks or CHECKS:
        try:
            out[name] = CHECKS[name](ds)
        except KeyError:
            if checks:
                raise
    return out


def _stats(res: xr.Dataset) -> dict:
    p = res.passed.values
    applicable = ~np.isnan(p)
    failed = applicable & (p == 0)
    r = res.residual.values
    worst = np.nanmax(np.where(applicable, r, np.nan)) if applicable.any() else np.nan
    fail_layers = sorted({int(res.layer.values[j]) for _, j in zip(*np.nonzero(failed))})
    return {
        "applicable": int(applicable.sum()), "failed": int(failed.sum()), "worst": worst,
        "median": float(np.nanmedian(np.where(applicable, r, np.nan))) if applicable.any()
        else np.nan,
        "fail_layers": fail_layers,
        "status": "n/a" if not applicable.any() else ("FAIL" if failed.any() else "pass"),
    }


def report(ds_or_checks) -> str:
    """A text table: check, claim, cells passed, median and worst residual, tolerance, status."""
    checks = check_all(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    rows = [("check", "status", "passed/applicable", "median", "worst", "tolerance", "claim")]
    for name, res in checks.items():
        s = _stats(res)
        rows.append((
            name, s["status"], f"{s['applicable'] - s['failed']}/{s['applicable']}",
            f"{s['median']:.3g}", f"{s['worst']:.3g}", f"{float(res.tolerance):.3g}",
            res.attrs["claim"],
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(ds_or_checks) -> list[str]:
    """One sentence per failing check: where it fails and by how much (empty if all pass)."""
    checks = check_all(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    out = []
    for name, res in checks.items():
        s = _stats(res)
        if s["status"] == "FAIL":
            out.append(
                f"{name} fails in {s['failed']} of {s['applicable']} (cycle, layer) cells, on"
                f" layer(s) {', '.join(map(str, s['fail_layers']))}: residual up to"
                f" {s['worst']:.3g} against a tolerance of {float(res.tolerance):.3g}"
                f" ({res.attrs['claim']})"
            )
    return out
