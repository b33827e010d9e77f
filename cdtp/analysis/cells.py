"""The machinery every proposition check shares: reading a recording, measuring premises,
and putting each (cycle, layer) cell in one state (:mod:`cdtp.analysis.propositions` says what
the states mean).

- reading the Dataset: the phase-boundary snapshots (:func:`_snap`), the networks at each cycle
  (:func:`_networks`), u's traces (:class:`_Traces`);
- premises: u settled (:func:`_settling`, :func:`_u_settled_premise`), γ low, weights steady,
  the loop's rate ρ and Lipschitz constant (:func:`_loop_matrix`, :func:`_predicted_rates`,
  :func:`_fitted_rates`);
- the verdict: :func:`_premise` (one measured premise), :func:`_classify` (the state of every
  cell, decided here only), :func:`_result` (the check's Dataset).

The names with a leading underscore are internal to :mod:`cdtp.analysis`. Never imports brian2.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from cdtp.model.layers import Network
from cdtp.model.nonlinearities import get_nonlinearity
from cdtp.record.dataset import BOUNDARIES, boundary_steps_of, circuit_of, schedule_of

__all__ = ["HOLDS", "NOT_APPLICABLE", "PREMISE_NOT_MET", "SETTLED", "SETTLE_STEPS",
           "SETTLE_TOLERANCE", "STATE_NAMES", "VIOLATED"]


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
                 gamma: float = 0.0, k_h: float = 1.0, leak: float = 0.0,
                 slope_prev: np.ndarray | None = None) -> np.ndarray:
    """Linearization of one step of the layer-l u-loop in the feedback phase (c = 0).

    With algebraic h (k_h = 1): u ← u + k_u (τ − f_l((1−γ) g_l(u) + γ a)) has Jacobian
    I − k_u (1−γ) J, J = f_l′ g_l′. With a finite τ_h (k_h = dt/τ_h < 1) the loop carries h
    too, in the circuit's order h ← h + k_h (f_l(m) − h), then u ← u + k_u (τ − h), so one
    step of (h, u) has the block Jacobian [[(1−k_h) I, k_h J'], [−k_u (1−k_h) I,
    I − k_u k_h J']] with J' = (1−γ) J. A leaky loop (λ = ``leak``, docs/model.md §2.3) adds λ I
    to J' (its u-term −λ (u − a) in the feedback phase; with algebraic h, directly to J).
    With the ``slope_gated`` decoder, g_l′ = diag(σ′(a_{l−1})) Ω_l: pass ``slope_prev`` =
    σ′(a_{l−1})."""
    jf = net.f_jacobian(l, m_prev[None])[0]
    if slope_prev is None:
        jg = net.g_jacobian(l, u[None])[0]
    else:
        jg = slope_prev[:, None] * net.feedback[l][:, : net.sizes[l]]
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


def _predicted_rates(ds: xr.Dataset):
    circuit = circuit_of(ds)
    k_u = _rate(circuit.tau_u, float(ds.attrs["dt"]))
    k_h = _rate(circuit.tau_h, float(ds.attrs["dt"]))
    nets = _networks(ds, SETTLED)
    layers = list(range(2, circuit.depth + 1))
    rho = np.full((len(nets), len(layers)), np.nan)
    alpha = np.full_like(rho, np.nan)
    gated = circuit.feedback_decoder == "slope_gated"
    for j, l in enumerate(layers):
        m, u = _snap(ds, "m", l - 1), _snap(ds, "u", l)
        slopes = nets[0].sigma.derivative(_snap(ds, "a", l - 1)) if gated and nets else None
        for c, net in enumerate(nets):
            if not (np.all(np.isfinite(m[c])) and np.all(np.isfinite(u[c]))):
                continue
            slope = None if slopes is None else slopes[c]
            mat = _loop_matrix(net, l, m[c], u[c], k_u, k_h=k_h, leak=circuit.leak,
                               slope_prev=slope)
            if not np.all(np.isfinite(mat)):
                continue
            rho[c, j] = np.max(np.abs(np.linalg.eigvals(mat)))
            # α of Secs 5–6 is the Lipschitz constant of the u-iteration itself (h algebraic)
            reduced = mat if k_h == 1.0 else _loop_matrix(net, l, m[c], u[c], k_u,
                                                           leak=circuit.leak, slope_prev=slope)
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
