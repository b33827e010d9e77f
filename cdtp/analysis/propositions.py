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
:func:`cdtp.analysis.plots.plot_premise`) and, for the sweep summaries, ``passed`` (1 holds,
0 violated, NaN otherwise). The state is decided in one place (:func:`_classify`) from these numbers only,
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

from cdtp.analysis.cells import (
    HOLDS,
    NOT_APPLICABLE,
    PREMISE_NOT_MET,
    SETTLE_STEPS,
    SETTLE_TOLERANCE,
    STATE_NAMES,
    VIOLATED,
)
from cdtp.analysis.inversion import check_gn, check_inv
from cdtp.analysis.plasticity import check_p5, check_p6, check_p7, check_p8, weight_change_terms
from cdtp.analysis.settling import check_p1, check_p2, check_p3, check_p4

__all__ = [
    "CHECKS",
    "HOLDS",
    "NOT_APPLICABLE",
    "PREMISE_NOT_MET",
    "SETTLE_STEPS",
    "SETTLE_TOLERANCE",
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
