"""Checks of seed 000's propositions on a recorded run (docs/model.md §4).

The propositions are implications: *if* the premise holds (u has settled, the loop contracts,
a is held …), *then* the conclusion holds. Each check is a pure function ``Dataset -> Dataset``
of a recording made by :func:`cdtp.brian.simulation.simulate` (the circuit is read back from the
Dataset's attributes) and puts every (cycle, layer) cell in one of four states:

=====================  ==========================================================================
``holds`` (1)          every premise measured and met, and the conclusion within its tolerance
``violated`` (2)       every premise met, the conclusion outside its tolerance: the simulation
                       disagrees with the theory (a wrong drive, or a finding)
``premise not met`` (3) a premise measured and missed (``unmet_premise`` names it, ``reason``
                       says by how much): the cell lies outside the theorem, which claims nothing
``n/a`` (0)            a premise or the conclusion could not be measured (``reason`` says why,
                       e.g. u was not traced in that cycle)
=====================  ==========================================================================

The result holds per cell ``state`` (int, with ``flag_values`` / ``flag_meanings``),
``residual`` (the conclusion's, against the scalar ``tolerance``), ``reason`` (text, empty
where the cell holds or is violated), ``unmet_premise`` (the key of the premise missed by the
largest factor), one ``premise_<key>`` variable per premise (its measured value, with its own
``tolerance``, ``long_name`` and ``tolerance_reason`` attributes), ``premise_ratio`` (the largest
value / tolerance over the premises: ≤ 1 where every premise is met — the x axis of
:func:`cdtp.analysis.plots.plot_premise`) and, for the sweep summaries, ``passed`` (1 holds, 0 violated,
NaN otherwise). The state is decided in one place (:func:`_classify`) from these numbers only,
so the report cannot contradict them.

Premises are measured on the run, not assumed. "u settled" means: over the last
``settle_steps`` (default 3) steps before the snapshot the increments of u, per time constant
(‖Δu‖ τ_u / dt = ‖τ_u u̇‖), stay below ``settle_tolerance`` (default 10⁻³) of the scale the
conclusion is measured against. That needs u traced at every step of those steps; in cycles
without traces the cell is n/a. The loop's rate ρ and Lipschitz constant α are estimated from
the Jacobians at the recorded states.

The states the checks read are the phase-boundary snapshots: "settled" means the snapshot at
``plasticity_end`` — the end of the plasticity window, which for a square γ with the default
descending gate is the end of the feedback phase, and for a sinusoid the trough of γ. A
snapshot shows the state at the end of the step before the boundary, the same state as the
trace sample of that step.

=====  ===========================================================================
check  premise ⇒ conclusion (seed 000) → what is measured
=====  ===========================================================================
P1     u settled ⇒ τ_l = h_l → ‖τ_l − h_l‖ / ‖τ_l − a_l‖, l ≥ 2
P2     u settled ⇒ τ_{l−1} = f_l⁻¹(τ_l) → ‖f_l(m_{l−1}) − τ_l‖ / ‖τ_l − a_l‖
P3     ρ(I − (1−γ) f′g′) < 1 ⇒ the u-loop converges → geometric rate of the u-increments
P4     ρ < 1 ⇒ the u-increments shrink like ρᵗ → |fitted − ρ| / ρ
P5     a_{l−1} held, τ_l starts at a_l, p ∈ {0, 1} ⇒ ΔW_l = η_W (τ_l − a_l) n_{l−1}ᵀ
P6     feedforward phase settled ⇒ Δ1Ω at γ = 1 is SGD on ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖²
P7     u settled, W fixed ⇒ Δ1Ω descends ½‖f_l⁻¹(τ_l) − g_l(u_l)‖² → ‖m_{l−1} − f_l⁻¹(τ_l)‖
P8     (unconditional) Δ1Ω = γ Δ2Ω → relative error at every held snapshot
GN     targets settled, J_l of full column rank, first order ⇒ τ_l − a_l ∥ J_l⁺(τ_L − a_L)
INV    α = Lip(I − k_u f∘g) < 1 ⇒ inversion converges at least as fast as αᵗ
=====  ===========================================================================

This module never imports brian2.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from cdtp.model.layers import Network, with_bias
from cdtp.model.nonlinearities import get_nonlinearity
from cdtp.record.dataset import BOUNDARIES, boundary_steps_of, circuit_of, schedule_of

__all__ = [
    "CHECKS",
    "HOLDS",
    "NOT_APPLICABLE",
    "PREMISE_NOT_MET",
    "STATE_NAMES",
    "VIOLATED",
    "check_all",
    "counts",
    "premises_not_met",
    "report",
    "summary",
    "violations",
    "weight_change_terms",
]

SETTLED = "plasticity_end"
_TINY = 1e-12

NOT_APPLICABLE, HOLDS, VIOLATED, PREMISE_NOT_MET = 0, 1, 2, 3
STATE_NAMES = {HOLDS: "holds", VIOLATED: "violated", PREMISE_NOT_MET: "premise not met",
               NOT_APPLICABLE: "n/a"}

#: Default "settled" criterion (see the module docstring and :func:`_settling`).
SETTLE_TOLERANCE = 1e-3
SETTLE_STEPS = 3
_SETTLE_REASON = (
    "settled: over the last {k} steps the increments per time constant stay below {tol:g} of "
    "the scale the conclusion is measured against — a drift that small changes the conclusion's "
    "residual by about as much, far under its own tolerance, so a cell whose premise is met and "
    "whose conclusion misses is a wrong drive, not a slow loop; {k} steps, not one, so that an "
    "oscillating loop does not pass on a single small increment"
)


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


class _Traces:
    """Trace windows by absolute step, with the reason when a window was not recorded."""

    def __init__(self, ds: xr.Dataset):
        self.ds = ds
        self.dt = float(ds.attrs["dt"])
        # the step of each boundary of each recorded cycle (cycles may differ in length by one
        # step when the γ period is not a whole number of steps)
        self.table = boundary_steps_of(ds)
        self.row = {int(c): i for i, c in enumerate(ds.cycle.values)} if "cycle" in ds.dims \
            else {}
        self.every = json.loads(ds.attrs.get("record", "{}")).get("every", 1)
        self.has_time = "time" in ds.dims
        # a sample at time t shows the state at the end of step t/dt − 1
        self.steps = (np.rint(ds.time.values / self.dt).astype(int) - 1 if self.has_time
                      else np.zeros(0, int))
        self.sizes = circuit_of(ds).sizes

    def step(self, cycle: int, boundary: str) -> int:
        """The step whose end state the ``boundary`` snapshot of ``cycle`` shows."""
        return int(self.table[self.row[int(cycle)], BOUNDARIES.index(boundary)]) - 1

    def cycle_of(self, steps) -> np.ndarray:
        """The γ cycle each step belongs to."""
        steps = np.asarray(steps, dtype=np.int64)
        if not len(steps):
            return np.zeros(0, np.int64)
        schedule = schedule_of(self.ds)
        n = int(np.ceil((steps.max() + 1) * self.dt * schedule.gamma.frequency)) + 2
        starts = schedule.cycle_starts(self.dt, n)
        return np.searchsorted(starts, steps, side="right") - 1

    def gates_between(self, lo: np.ndarray, hi: np.ndarray, layers: int, hold):
        """Per cycle, the sampled gates of steps [lo[c], hi[c]) (a list of dicts)."""
        schedule = schedule_of(self.ds)
        return [schedule.sample_steps(np.arange(a, b), self.dt, layers, hold)
                for a, b in zip(lo, hi)]

    def layer(self, var: str, l: int):
        """(values (time, n_l), "") or (None, why not)."""
        if not self.has_time or var not in self.ds:
            return None, f"{var} not traced (record {var} at every step)"
        sel = np.flatnonzero(self.ds.layer.values == l)
        if len(sel) != self.sizes[l]:
            return None, f"{len(sel)} of {self.sizes[l]} neurons of layer {l} traced (needs all)"
        if self.every != 1:
            return None, f"traces sampled every {self.every} steps (needs every step)"
        return self.ds[var].values[:, sel], ""

    def window(self, lo: int, hi: int):
        """Sample indices of steps lo..hi inclusive, or None unless every one was traced."""
        if lo < 0:
            return None
        i = np.searchsorted(self.steps, lo)
        j = i + (hi - lo)
        if j >= len(self.steps) or self.steps[i] != lo or self.steps[j] != hi:
            return None
        return np.arange(i, j + 1)


def _settling(tr: _Traces, var: str, l: int, boundary: str, rate: float, scale: np.ndarray,
              no_scale: str, k: int = SETTLE_STEPS):
    """How far ``var`` of layer l was from settled at each cycle's ``boundary`` snapshot.

    Value: max over the last ``k`` steps of ‖x(s) − x(s−1)‖ / (rate · scale), i.e. the
    increment per time constant (``rate`` = dt/τ_x) relative to ``scale`` (per cycle).

    Returns
    -------
    values : ndarray (n_cycles,)
        NaN where not measurable.
    reasons : ndarray of str (n_cycles,)
        Why a value is NaN ('' where measured).
    """
    cycles = tr.ds.cycle.values
    values = np.full(len(cycles), np.nan)
    reasons = np.full(len(cycles), "", dtype=object)
    x, why = tr.layer(var, l)
    for ci, c in enumerate(cycles):
        end = tr.step(c, boundary)
        idx = None if x is None else tr.window(end - k, end)
        if x is None:
            reasons[ci] = why
        elif idx is None:
            reasons[ci] = f"{var} of layer {l} not traced in the last {k} steps before {boundary}"
        elif not scale[ci] > _TINY:
            reasons[ci] = no_scale
        else:
            inc = np.linalg.norm(np.diff(x[idx], axis=0), axis=1)
            values[ci] = float(np.max(inc)) / (rate * scale[ci])
    return values, reasons


def _premise(key, description, values, tolerance, reason, na=None) -> dict:
    values = np.asarray(values, dtype=float)
    if na is None:
        na = np.full(values.shape, "", dtype=object)
    return {"key": key, "description": description, "values": values,
            "tolerance": float(tolerance), "reason": reason, "na": np.asarray(na, dtype=object)}


def _per_layer(columns) -> np.ndarray:
    return np.stack(columns, axis=1)


def _settled_premise(tr, var, layers, boundary, rate, scales, scale_name, no_scale,
                     tolerance, k, key=None, what=None) -> dict:
    """The premise "``var`` settled at ``boundary``" for each layer of ``layers``."""
    vals, nas = [], []
    for l, scale in zip(layers, scales):
        v, r = _settling(tr, var, l, boundary, rate, scale, no_scale, k)
        vals.append(v)
        nas.append(r)
    what = what or f"{var}_l settled"
    return _premise(
        key or f"{var}_settled",
        f"{what}: max ‖Δ{var}‖ per τ_{var} over the last {k} steps / {scale_name}",
        _per_layer(vals), tolerance, _SETTLE_REASON.format(k=k, tol=tolerance),
        _per_layer(nas),
    )


def _classify(residual, tolerance, premises, na):
    """The state of every cell, from the numbers only (see the module docstring)."""
    shape = residual.shape
    state = np.full(shape, NOT_APPLICABLE, dtype=np.int8)
    reason = np.full(shape, "", dtype=object)
    unmet = np.full(shape, "", dtype=object)
    ratio = np.full(shape, np.nan)
    for p in premises:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = p["values"] / p["tolerance"] if p["tolerance"] > 0 else np.where(
                p["values"] > 0, np.inf, 0.0)
        ratio = np.fmax(ratio, r)
    if not premises:
        ratio = np.zeros(shape)  # unconditional claim: its premise is always met
    for idx in np.ndindex(shape):
        missed = [(p["values"][idx] / max(p["tolerance"], _TINY), p) for p in premises
                  if p["values"][idx] > p["tolerance"]]
        unmeasured = [p for p in premises if np.isnan(p["values"][idx])]
        if missed:
            _, p = max(missed, key=lambda t: t[0])
            state[idx] = PREMISE_NOT_MET
            unmet[idx] = p["key"]
            reason[idx] = (f"{p['description'].split(':')[0]}: {p['values'][idx]:.3g} >"
                           f" tolerance {p['tolerance']:.3g}")
        elif unmeasured:
            p = unmeasured[0]
            reason[idx] = p["na"][idx] or f"premise '{p['key']}' not measurable"
        elif na[idx] or np.isnan(residual[idx]):
            reason[idx] = na[idx] or "conclusion not measurable"
        elif residual[idx] <= tolerance:
            state[idx] = HOLDS
        else:
            state[idx] = VIOLATED
    return state, reason, unmet, ratio


def _result(name, claim, residual, tolerance, reason, layers, cycles, premises=(), na=None,
            extra=None) -> xr.Dataset:
    residual = np.asarray(residual, dtype=float)
    na = np.full(residual.shape, "", dtype=object) if na is None else np.asarray(na, object)
    premises = list(premises)
    state, why, unmet, ratio = _classify(residual, float(tolerance), premises, na)
    passed = np.where(state == HOLDS, 1.0, np.where(state == VIOLATED, 0.0, np.nan))
    dims = ("cycle", "layer")
    coords = {"cycle": ("cycle", np.asarray(cycles)), "layer": ("layer", np.asarray(layers))}
    flags = {"flag_values": np.array(sorted(STATE_NAMES), dtype=np.int8),
             "flag_meanings": " ".join(STATE_NAMES[k].replace(" ", "_").replace("/", "")
                                       for k in sorted(STATE_NAMES))}
    data = {
        "residual": (dims, residual, {"long_name": f"{name} residual", "units": "1"}),
        "tolerance": ((), float(tolerance), {"long_name": f"{name} tolerance", "units": "1"}),
        "state": (dims, state, {"long_name": f"{name} state", **flags}),
        "reason": (dims, why.astype(str), {"long_name": f"{name}: why n/a or premise not met"}),
        "unmet_premise": (dims, unmet.astype(str), {"long_name": f"{name}: premise missed"}),
        "premise_ratio": (dims, ratio, {
            "long_name": f"{name}: largest premise value / its tolerance", "units": "1"}),
        "passed": (dims, passed,
                   {"long_name": f"{name} holds (1), violated (0), otherwise NaN", "units": "1"}),
    }
    for p in premises:
        data[f"premise_{p['key']}"] = (dims, p["values"], {
            "long_name": p["description"], "units": "1", "tolerance": p["tolerance"],
            "tolerance_reason": p["reason"]})
    for k, (v, attrs) in (extra or {}).items():
        data[k] = (dims, np.asarray(v, dtype=float), attrs)
    return xr.Dataset(data, coords=coords, attrs={
        "check": name, "claim": claim, "tolerance_reason": reason,
        "premises": json.dumps([p["key"] for p in premises]),
    })


def _rel(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.linalg.norm(num.reshape(num.shape[0], -1), axis=1)
    den = np.linalg.norm(den.reshape(den.shape[0], -1), axis=1)
    return np.where(den > _TINY, num / np.maximum(den, _TINY), np.nan)


def _loop_matrix(net: Network, l: int, m_prev: np.ndarray, u: np.ndarray, k_u: float,
                 gamma: float = 0.0, k_h: float = 1.0, leak: float = 0.0) -> np.ndarray:
    """Linearization of one step of the layer-l u-loop in the feedback phase (c = 0).

    With algebraic h (k_h = 1): u ← u + k_u (τ − f_l((1−γ) g_l(u) + γ a)) has Jacobian
    I − k_u (1−γ) J, J = f_l′ g_l′. With a finite τ_h (k_h = dt/τ_h < 1) the loop carries h
    too, in the circuit's order h ← h + k_h (f_l(m) − h), then u ← u + k_u (τ − h), so one
    step of (h, u) has the block Jacobian [[(1−k_h) I, k_h J'], [−k_u (1−k_h) I,
    I − k_u k_h J']] with J' = (1−γ) J. A leaky loop (λ = ``leak``, docs/model.md §2.3) adds λ I
    to J' (its u-term −λ (u − a) in the feedback phase; with algebraic h, directly to J)."""
    jf = net.f_jacobian(l, m_prev[None])[0]
    jg = net.g_jacobian(l, u[None])[0]
    eye = np.eye(len(u))
    j = (1.0 - gamma) * jf @ jg + leak * eye
    if k_h == 1.0:
        return eye - k_u * j
    return np.block([[(1.0 - k_h) * eye, k_h * j],
                     [-k_u * (1.0 - k_h) * eye, eye - k_u * k_h * j]])


def _leak_term(ds: xr.Dataset, l: int, boundary: str = SETTLED) -> np.ndarray:
    """u_l − a_l at ``boundary``: what a leaky loop's fixed point trades against τ_l − h_l."""
    return _snap(ds, "u", l, boundary) - _snap(ds, "a", l, boundary)


def _rate(tau: float, dt: float) -> float:
    """dt/τ, the Euler step factor (1 for an algebraic variable)."""
    return 1.0 if tau == 0 else dt / tau


def _error_scale(ds, l, boundary=SETTLED):
    return np.linalg.norm(_snap(ds, "target", l, boundary) - _snap(ds, "a", l, boundary), axis=1)


_NO_ERROR = "no feedback error in this cycle (τ_l = a_l)"


# -- the checks ---------------------------------------------------------------------------------
def _u_settled_premise(ds, tr, layers, settle_tolerance, settle_steps, boundary=SETTLED):
    """u_l settled at ``boundary``, relative to the feedback error ‖τ_l − a_l‖ there."""
    circuit = circuit_of(ds)
    k_u = _rate(circuit.tau_u, tr.dt)
    scales = [_error_scale(ds, l, boundary) for l in layers]
    return _settled_premise(tr, "u", layers, boundary, k_u, scales, "‖τ_l − a_l‖", _NO_ERROR,
                            settle_tolerance, settle_steps)


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


def _predicted_rates(ds: xr.Dataset):
    circuit = circuit_of(ds)
    k_u = _rate(circuit.tau_u, float(ds.attrs["dt"]))
    k_h = _rate(circuit.tau_h, float(ds.attrs["dt"]))
    nets = _networks(ds, SETTLED)
    layers = list(range(2, circuit.depth + 1))
    rho = np.full((len(nets), len(layers)), np.nan)
    alpha = np.full_like(rho, np.nan)
    for j, l in enumerate(layers):
        m, u = _snap(ds, "m", l - 1), _snap(ds, "u", l)
        for c, net in enumerate(nets):
            if not (np.all(np.isfinite(m[c])) and np.all(np.isfinite(u[c]))):
                continue
            mat = _loop_matrix(net, l, m[c], u[c], k_u, k_h=k_h, leak=circuit.leak)
            if not np.all(np.isfinite(mat)):
                continue
            rho[c, j] = np.max(np.abs(np.linalg.eigvals(mat)))
            # α of Secs 5–6 is the Lipschitz constant of the u-iteration itself (h algebraic)
            reduced = mat if k_h == 1.0 else _loop_matrix(net, l, m[c], u[c], k_u,
                                                           leak=circuit.leak)
            alpha[c, j] = np.linalg.norm(reduced, 2)
    return layers, rho, alpha


def _upward_max(x: np.ndarray) -> np.ndarray:
    """Per cycle, the largest value of each layer and the layers above it (a layer's target
    keeps moving until the layers above have settled)."""
    return np.maximum.accumulate(x[:, ::-1], axis=1)[:, ::-1]


def _u_increments(tr: _Traces, l: int):
    """Per cycle: the u-increment norms of layer l over the phase [feedback_start,
    plasticity_end), or (None, why) when they were not traced."""
    u, why = tr.layer("u", l)
    out = []
    for c in tr.ds.cycle.values:
        if u is None:
            out.append((None, why))
            continue
        lo = tr.step(c, "feedback_start")  # the last feedforward step's end state
        hi = tr.step(c, "plasticity_end")
        idx = tr.window(lo, hi) if hi - lo >= 1 else None
        if idx is None:
            out.append((None, f"u of layer {l} not traced over this cycle's feedback phase"))
            continue
        out.append((np.linalg.norm(np.diff(u[idx], axis=0), axis=1),
                    float(max(np.max(np.abs(u[idx])), 1.0))))
    return out


def _u_settled_from(ds, tr, layers, first, settle_tolerance, settle_steps, key, what):
    """u settled at the end of the window in every layer from ``first(l)`` to L, per layer l
    (the largest value; n/a if any of them is not measurable)."""
    L = circuit_of(ds).depth
    k_u = _rate(circuit_of(ds).tau_u, tr.dt)
    each = {k: _settling(tr, "u", k, SETTLED, k_u, _error_scale(ds, k), _NO_ERROR,
                         settle_steps) for k in range(2, L + 1)}
    vals, nas = [], []
    for l in layers:
        ks = range(first(l), L + 1)
        vals.append(np.max(np.stack([each[k][0] for k in ks]), axis=0))
        nas.append(np.array([next((x for x in col if x), "") for col in zip(
            *[each[k][1] for k in ks])], object))
    return _premise(key, f"{what}: max ‖Δu‖ per τ_u over the last {settle_steps} steps /"
                    " ‖τ − a‖", _per_layer(vals), settle_tolerance,
                    _SETTLE_REASON.format(k=settle_steps, tol=settle_tolerance), _per_layer(nas))


def _gamma_low_premise(ds, layers, tolerance=0.05) -> dict:
    """γ_l stays near 0 over the feedback window [feedback_start, plasticity_end)."""
    circuit = circuit_of(ds)
    table = boundary_steps_of(ds)
    lo = table[:, BOUNDARIES.index("feedback_start")]
    hi = table[:, BOUNDARIES.index("plasticity_end")]
    gates = _Traces(ds).gates_between(lo, hi, circuit.depth, circuit.hold)
    vals = [np.array([float(np.max(g["gamma"][:, l])) if len(g["gamma"]) else np.nan
                      for g in gates]) for l in layers]
    why = np.where(hi > lo, "", "no feedback window").astype(object)
    return _premise("gamma_low", "γ_l near 0 over the feedback window: max γ_l",
                    _per_layer(vals), tolerance,
                    "the loop matrix is taken at γ = 0; γ ≤ 0.05 changes its gain (1 − γ) by at"
                    " most 5 %, a quarter of P4's tolerance",
                    np.repeat(why[:, None], len(layers), axis=1))


def _weights_steady_premise(ds, layers, tolerance=0.05) -> dict:
    """W_k and Ω_k, k ≥ l, nearly constant over the feedback window."""
    L = circuit_of(ds).depth
    w0, w1 = _networks(ds, "feedback_start"), _networks(ds, SETTLED)
    change = np.zeros((len(w0), L + 1))
    for c, (a, b) in enumerate(zip(w0, w1)):
        for k in range(1, L + 1):
            mats = [(a.weights[k], b.weights[k])] + (
                [(a.feedback[k], b.feedback[k])] if k >= 2 else [])
            change[c, k] = max(np.linalg.norm(y - x) / max(np.linalg.norm(y), _TINY)
                               for x, y in mats)
    vals = [np.max(change[:, l:], axis=1) for l in layers]
    return _premise("weights_steady", "W and Ω of this layer and above steady over the"
                    " feedback window: max relative change", _per_layer(vals), tolerance,
                    "the loop matrix is taken with the window's final weights; a 5 % change"
                    " moves its rate by about 5 %, a quarter of P4's tolerance")


def _fitted_rates(tr: _Traces, layers):
    """Per cycle and layer: exponential rate of ‖u(t+dt) − u(t)‖ over the feedback phase,
    fitted where the increments are above float noise, the first (transient) one left out;
    with the reason where there is none."""
    n = tr.ds.sizes["cycle"]
    out = np.full((n, len(layers)), np.nan)
    why = np.full((n, len(layers)), "", dtype=object)
    for j, l in enumerate(layers):
        for ci, (inc, size) in enumerate(_u_increments(tr, l)):
            if inc is None:
                why[ci, j] = size
                continue
            good = np.flatnonzero(inc > 1e-11 * size)
            if len(good) < 4:
                why[ci, j] = "the u-increments reach round-off within 3 steps: no rate to fit"
                continue
            good = good[1:]
            out[ci, j] = float(np.exp(np.polyfit(good, np.log(inc[good]), 1)[0]))
    return out, why


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
    na = np.where(np.isnan(res), "no predicted change (τ_l = a_l or η_W = 0)", "")
    return _result("P5", "a held, τ starts at a ⇒ ΔW_l = η_W (τ_l − a_l) n_{l−1}ᵀ",
                   res, tolerance, check_p5.__doc__, layers, ds.cycle.values, premises, na)


def check_p6(ds: xr.Dataset, tolerance: float = 0.01,
             settle_tolerance: float = SETTLE_TOLERANCE,
             settle_steps: int = SETTLE_STEPS) -> xr.Dataset:
    """P6: at γ = 1 the Δ1 drive (m_{l−1} − g_l(u_l)) σ̃(u_l)ᵀ is the negative gradient of
    ½‖a_{l−1} − g_l(f_l(a_{l−1}))‖² with respect to Ω_l. Measured at the end of the feedforward
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
    cols = []
    for l in layers:
        m, fb = _snap(ds, "m", l - 1, b), _snap(ds, "fb", l - 1, b)
        u, a_prev = _snap(ds, "u", l, b), _snap(ds, "a", l - 1, b)
        drive = (m - fb)[:, :, None] * with_bias(sigma(u), circuit.bias)[:, None, :]
        su = with_bias(sigma(u), circuit.bias)
        learning = circuit.feedback_rule != "fixed" and circuit.eta_omega != 0
        pre = m if circuit.feedback_rule == "delta1" else a_prev
        grads = []
        for c, net in enumerate(nets):
            omega = net.feedback[l]
            if learning:  # the Ω of the step whose fb the snapshot shows: before its update
                omega = omega - circuit.eta_omega * dt * np.outer(pre[c] - fb[c], su[c])
            y = net.f(l, a_prev[c][None])
            r = a_prev[c] - with_bias(sigma(y), circuit.bias)[0] @ omega.T
            grads.append(r[:, None] * with_bias(sigma(y), circuit.bias)[0][None, :])
        # scale: ‖a_{l−1}‖ ‖σ̃(u_l)‖, the size of either term of the drive (the gradient itself
        # vanishes when the decoder already reconstructs a_{l−1})
        scale = np.linalg.norm(a_prev, axis=1) * np.linalg.norm(
            with_bias(sigma(u), circuit.bias), axis=1)
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


# -- reading the results ------------------------------------------------------------------------
def _premise_list(res: xr.Dataset) -> list[str]:
    return json.loads(res.attrs.get("premises", "[]"))


def counts(res: xr.Dataset) -> dict:
    """The counts of each state of one check's result and the worst number of each.

    Returns
    -------
    dict
        ``cells``; ``holds``, ``violated``, ``premise_not_met``, ``na`` (counts);
        ``worst_holds`` / ``worst_violated`` (largest residual of those cells, NaN if none);
        ``least_violated`` (smallest residual of the violated cells); ``violated_layers``;
        ``premises``: per premise key, ``count`` (cells where it is the one missed by the
        largest factor), ``worst`` (its largest value there), ``tolerance``, ``description``,
        ``within`` (of those cells, how many have the conclusion within tolerance anyway);
        ``na_reasons``: reason → count, most frequent first.
    """
    state = res.state.values
    r = res.residual.values
    tol = float(res.tolerance)

    def worst(mask, fn=np.max):
        vals = r[mask & np.isfinite(r)]
        return float(fn(vals)) if len(vals) else np.nan

    out = {
        "cells": int(state.size),
        "holds": int(np.sum(state == HOLDS)),
        "violated": int(np.sum(state == VIOLATED)),
        "premise_not_met": int(np.sum(state == PREMISE_NOT_MET)),
        "na": int(np.sum(state == NOT_APPLICABLE)),
        "worst_holds": worst(state == HOLDS),
        "worst_violated": worst(state == VIOLATED),
        "least_violated": worst(state == VIOLATED, np.min),
        "violated_layers": sorted({int(res.layer.values[j])
                                   for _, j in zip(*np.nonzero(state == VIOLATED))}),
        "premises": {},
        "na_reasons": {},
    }
    unmet = res.unmet_premise.values
    for key in _premise_list(res):
        mask = (state == PREMISE_NOT_MET) & (unmet == key)
        if not mask.any():
            continue
        var = res[f"premise_{key}"]
        out["premises"][key] = {
            "count": int(mask.sum()), "worst": float(np.max(var.values[mask])),
            "tolerance": float(var.attrs["tolerance"]), "description": var.attrs["long_name"],
            "within": int(np.sum(mask & (r <= tol))),
        }
    reasons, n = np.unique(res.reason.values[state == NOT_APPLICABLE], return_counts=True)
    out["na_reasons"] = {str(k): int(v) for k, v in sorted(zip(reasons, n), key=lambda t: -t[1])}
    return out


def report(ds_or_checks) -> str:
    """A text table: per check, the counts of each state, the worst residual of the cells that
    hold and of those violated, the tolerance and the claim."""
    checks = check_all(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    rows = [("check", "holds", "violated", "premise not met", "n/a", "worst held",
             "worst violated", "tolerance", "premise ⇒ conclusion")]

    def fmt(x):
        return "-" if np.isnan(x) else f"{x:.3g}"

    for name, res in checks.items():
        s = counts(res)
        rows.append((name, str(s["holds"]), str(s["violated"]), str(s["premise_not_met"]),
                     str(s["na"]), fmt(s["worst_holds"]), fmt(s["worst_violated"]),
                     f"{float(res.tolerance):.3g}", res.attrs["claim"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _layers(ls) -> str:
    return ("layer " if len(ls) == 1 else "layers ") + ", ".join(map(str, ls))


def _conclusion_sentence(s: dict, tol: float) -> str:
    met = s["holds"] + s["violated"]
    if s["violated"] == 0:
        return (f"holds in {'it' if met == 1 else 'all of them'} (residual up to"
                f" {s['worst_holds']:.3g} ≤ tolerance {tol:.3g})")
    bad = (f"residual {s['least_violated']:.3g} to {s['worst_violated']:.3g} > tolerance"
           f" {tol:.3g}, {_layers(s['violated_layers'])}")
    if s["holds"] == 0:
        return f"violated in {'it' if met == 1 else 'all of them'} ({bad})"
    return (f"holds in {s['holds']} (residual up to {s['worst_holds']:.3g} ≤ {tol:.3g}) and is"
            f" violated in {s['violated']} ({bad})")


def _premise_sentences(s: dict) -> list[str]:
    out = []
    for p in s["premises"].values():
        what = p["description"].split(":")[0]
        anyway = (f"; the conclusion is within its tolerance anyway in {p['within']} of them"
                  if p["within"] else "")
        out.append(f"Premise not met in {_cells(p['count'])}, where “{what}” fails (worst"
                   f" {p['worst']:.3g} > tolerance {p['tolerance']:.3g}){anyway}.")
    return out


def _na_sentence(s: dict, top: int = 3) -> str:
    items = list(s["na_reasons"].items())
    listed = "; ".join(f"{k} ({v})" for k, v in items[:top])
    more = f"; {len(items) - top} other reasons" if len(items) > top else ""
    return f"Not evaluated (n/a) in {_cells(s['na'])}: {listed}{more}."


def _sentence(name: str, res: xr.Dataset) -> str:
    s = counts(res)
    tol = float(res.tolerance)
    met = s["holds"] + s["violated"]
    if _premise_list(res):
        head = (f"{name}: premise met in {met} of {_cells(s['cells'])}"
                + (f"; {_conclusion_sentence(s, tol)}." if met else "."))
    else:
        head = (f"{name} (no premise): evaluated in {met} of {_cells(s['cells'])}"
                + (f"; {_conclusion_sentence(s, tol)}." if met else "."))
    parts = [head, *_premise_sentences(s)]
    if s["na"]:
        parts.append(_na_sentence(s))
    return " ".join(parts)


def summary(ds_or_checks) -> list[str]:
    """A plain-language reading: one paragraph per check, built from :func:`counts` only —
    where the premise was met and whether the conclusion held there, which premise was
    missed where and by how much, and why the other cells could not be evaluated."""
    checks = check_all(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    return [_sentence(name, res) for name, res in checks.items()]


def violations(ds_or_checks) -> list[str]:
    """One sentence per check with violated cells (premise met, conclusion missed): where and
    by how much; empty when nothing contradicts the theory."""
    checks = check_all(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    out = []
    for name, res in checks.items():
        s = counts(res)
        if s["violated"]:
            out.append(
                f"{name} is violated in {s['violated']} of the {s['holds'] + s['violated']}"
                f" cells whose premise is met, on {_layers(s['violated_layers'])}: residual"
                f" {s['least_violated']:.3g} to {s['worst_violated']:.3g} > tolerance"
                f" {float(res.tolerance):.3g} ({res.attrs['claim']})")
    return out


def premises_not_met(ds_or_checks) -> list[str]:
    """One sentence per check and premise that was missed somewhere: in how many cells and
    by how much (the theorem claims nothing there)."""
    checks = check_all(ds_or_checks) if isinstance(ds_or_checks, xr.Dataset) else ds_or_checks
    return [f"{name}: {line}" for name, res in checks.items()
            for line in _premise_sentences(counts(res))]
