"""The CDTP dynamics as Brian2 equation strings (docs/model.md §2, §2.4).

A layer l ≥ 1 is a NeuronGroup whose differential equations are the paper's Eqs 46–48,

    dh/dt = (h_in - h)/tau_h : 1                                               (46)
    da/dt = hold*(h - a)/tau_a : 1                                             (47)
    du/dt = (target - u + (1 - hold)*(u - h - leak*(u - a)))/tau_u : 1         (48, l ≥ 2)

integrated by Brian2's state updater (method ``euler``, ``exact``, ``exponential_euler`` or
``rk4``: the circuit file's ``[integration] method``) in the slot of stage 5 of
:mod:`cdtp.reference.cdtp_map`. The target and the held feedback input,

    dtarget/dt = (m - target)/tau_tau : 1                                      (49)
    dtarget/dt = (a - (1 - gamma)*beta*dloss - target)*(1 - is_bias)/tau_tau   (top layer)
    dfb_ref/dt = hold_above*(fb - fb_ref)/tau_a : 1          (difference feedback, §2.3)

belong to stage 2 — the weight update of stage 4 reads their increment and u reads the new
target — so they are integrated by the same Brian2 method into the code of the ``targets``
operation (:func:`integrate`) instead of the group's state updater, which runs once per step.

**The algebraic limit.** A time constant of 0 in the circuit file is not an ODE: the variable
is set to its drive, exactly as the reference map's step with k = dt/τ = 1 does (the map treats
τ = 0 and τ = dt alike): ``h`` is the feedforward synapses' summed variable itself (a batch, whose
blocks stop at their own last step, assigns ``h += running*(h_in - h)`` just before the state
updater), ``a += hold*(h - a)`` and ``u += target - u + (1 - hold)*(…)`` run right after the state
updater, ``target += drive - target`` in stage 2. A time constant equal to dt stays an ODE: with
``euler`` it is the map's k = 1 step too (up to rounding), with ``exact`` it relaxes by 1 − 1/e.

Brian2 integrates h, a and u of one layer together, all derivatives taken at the start of the
step; the map updates h, then a with the new h, then u with the new h and a. The two agree when
h is algebraic (it is then summed in stage 3, before the state updater) and the hold gate is
hard (u reads a only through ``(1 - hold)*leak*a``, and a moves only where hold = 1); with a
finite τ_h, a lags h by one step against the map: a different first-order discretization of the
same ODE (docs/model.md §2.4 measures the difference).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import brian2 as b2

from cdtp.brian.gates import GATE_VARIABLES, SCHEDULE_CONSTANTS
from cdtp.brian.spiking import LAYER_SPIKING_EQS
from cdtp.model.circuit import CircuitConfig
from cdtp.model.nonlinearities import get_nonlinearity

__all__ = ["BATCH_EQS", "FB_REF_DRIVE", "FEEDBACK_NORM_EQS", "LAYER_EQS", "METHODS",
           "NORM_EQS", "NORM_FEEDBACK_EQS", "LayerDynamics",
           "check_method", "describe", "integrate", "layer_dynamics", "layer_equations",
           "sigma_expression", "slope_expression", "target_code"]

METHODS = ("euler", "exact", "exponential_euler", "rk4")

H_RHS = "(h_in - h)/tau_h"
A_RHS = "hold*(h - a)/tau_a"
U_DRIVE = "target - u + (1 - hold)*(u - h - leak*(u - a))"
FB_REF_DRIVE = "hold_above*(fb - fb_ref)"


@dataclass(frozen=True)
class LayerDynamics:
    """Eqs 46–48 of one layer, split by where Brian2 runs each part.

    Attributes
    ----------
    equations : str
        Lines for the NeuronGroup: differential equations of the finite time constants,
        parameters of the algebraic ones.
    before : str
        Algebraic updates before the state updater (a batch's algebraic h), or "".
    after : str
        Algebraic a and u, then σ(u), σ(a), after the state updater.
    h_sum : str
        The variable the feedforward synapses sum W σ(m) into: ``h_in``, or ``h`` itself when
        h is algebraic.
    """

    equations: str
    before: str
    after: str
    h_sum: str


def layer_dynamics(circuit, l: int, batched: bool, sigma) -> LayerDynamics:
    """Eqs 46–48 of layer ``l`` of ``circuit``; ``sigma(var)`` is the Brian2 expression of
    σ(var) for a neuron (the bias unit's σ is 1). In a batch, every rate is multiplied by
    ``running`` (0 after a block's last step)."""
    run = "running*" if batched else ""
    eqs, before, after = [], [], []
    if l == 0:
        return LayerDynamics("a : 1\nh : 1\nu : 1\n", "", "", "h_in")
    h_sum = "h_in"
    if circuit.tau_h > 0:
        eqs += [f"dh/dt = {run}{H_RHS} : 1", "h_in : 1"]
    elif batched:
        eqs += ["h : 1", "h_in : 1"]
        before.append("h += running*(h_in - h)")
    else:
        eqs.append("h : 1")
        h_sum = "h"
    if circuit.tau_a > 0:
        eqs.append(f"da/dt = {run}{A_RHS} : 1")
    else:
        eqs.append("a : 1")
        after.append(f"a += {run}hold*(h - a)")
    if l >= 2 and circuit.tau_u > 0:
        eqs.append(f"du/dt = {run}({U_DRIVE})/tau_u : 1")
    else:
        eqs.append("u : 1")
        if l >= 2:
            after.append(f"u += {run}({U_DRIVE})")
    # a spiking circuit sends σ(u) as the rate of the layer's feedback population (su_drive)
    # and reads su, and σ(a) below the top layer, out of spikes (cdtp.brian.spiking)
    spiking = getattr(circuit, "neurons", "rate") == "spiking"
    if l >= 2:
        # the slope-gated decoder sends u itself (its receiving neurons apply σ′, §2.3)
        su = ("u*(1 - is_bias) + is_bias" if circuit.feedback_decoder == "slope_gated"
              else sigma("u"))
        after.append(f"{'su_drive' if spiking else 'su'} = {su}")
    if not spiking or l == circuit.depth:
        after.append(f"sa = {sigma('a')}")
    return LayerDynamics("\n".join(eqs) + "\n", "\n".join(before), "\n".join(after), h_sum)


def integrate(variable: str, drive: str, tau_name: str, tau: float, group, method: str,
              batched: bool) -> str:
    """Abstract code advancing ``d<variable>/dt = drive/<tau_name>`` by one step with Brian2's
    ``method``, or — ``tau`` = 0, the algebraic limit — ``variable += drive``, the map's k = 1
    step. ``group`` supplies the variables the equation refers to."""
    run = "running*" if batched else ""
    if tau == 0:
        return f"{variable} += {run}({drive})"
    eqs = b2.Equations(f"d{variable}/dt = {run}({drive})/{tau_name} : 1")
    return b2.StateUpdateMethod.apply_stateupdater(eqs, group.variables, method,
                                                   group_name=group.name)


def check_method(circuit) -> None:
    """A clear error for a method that cannot integrate ``circuit``: Brian2's exponential
    Euler and exact solution divide by u's linear coefficient, which is 0 in the feedback
    phase of the paper's loop (λ = 0: u is a pure integrator there); the exact solution of
    the coupled (a, u) system also divides by the difference of their rates."""
    method = circuit.integration_method
    if method not in METHODS:
        raise ValueError(f"{circuit.source}: integration.method: {method!r} is not allowed;"
                         f" allowed: {', '.join(METHODS)}")
    where = f"{circuit.source}: integration.method = {method!r}"
    has_u = circuit.depth >= 2 and circuit.tau_u > 0
    if method in ("exact", "exponential_euler") and has_u and circuit.leak == 0:
        raise ValueError(
            f"{where} needs feedback.leak > 0: with λ = 0 the decoder input u is a pure"
            " integrator in the feedback phase and Brian2's solution divides by its (zero) rate;"
            " allowed with leak = 0: euler, rk4")
    if method == "exact" and has_u and circuit.tau_a > 0:
        if circuit.hold.kind != "hard":
            raise ValueError(
                f"{where} needs a hard hold gate: the exact solution of the coupled (a, u)"
                " system divides by a rate difference that a smooth gate's c(γ) crosses;"
                " allowed with a smooth gate: euler, exponential_euler, rk4")
        if abs(circuit.tau_a - circuit.tau_u) < 1e-12:
            raise ValueError(
                f"{where} needs tau_a ≠ tau_u (the exact solution divides by their difference"
                " in the feedforward phase); allowed with tau_a = tau_u: euler,"
                " exponential_euler, rk4")
    if method == "exact" and circuit.tau_h > 0 and (circuit.tau_a > 0 or has_u):
        raise ValueError(
            f"{where} needs tau_h = 0 (algebraic): the exact solution of the coupled (h, a, u)"
            " system divides by differences of rates that coincide for equal time constants;"
            " allowed with a finite tau_h: euler, exponential_euler, rk4")


def _code_lines(code: str, indent: str) -> list[str]:
    return [indent + line for line in code.strip().splitlines()]


def describe(network: b2.Network, layers: list, synapses: list, method: str) -> str:
    """The model as Brian2 holds it, without running it: each layer's differential equations
    (and its parameters, by name), each weight projection's synaptic model, then one time step
    in execution order — state updaters with the code Brian2 generates for ``method``,
    run_regularly operations and summed variables."""
    from brian2.equations.equations import DIFFERENTIAL_EQUATION, SUBEXPRESSION

    out = []
    for group in layers:
        eqs = group.equations
        out.append(f"{group.name} (NeuronGroup, {len(group)} neurons):")
        first = [n for n in ("h", "a", "u") if n in eqs.diff_eq_names]
        odes = [eqs[n] for n in first + sorted(set(eqs.diff_eq_names) - set(first))]
        out += [f"    {eq}" for eq in odes] or ["    (no differential equation)"]
        out += [f"    {eq}" for eq in eqs.ordered if eq.type == SUBEXPRESSION]
        params = [eq.varname for eq in eqs.ordered
                  if eq.type not in (DIFFERENTIAL_EQUATION, SUBEXPRESSION)]
        out += textwrap.wrap("parameters: " + ", ".join(params), 100,
                             initial_indent="    ", subsequent_indent="        ")
    for syn in synapses:
        out.append(f"{syn.name} (Synapses {syn.source.name} → {syn.target.name},"
                   f" {len(syn)} synapses):")
        out += [f"    {line}" for line in str(syn.equations).strip().splitlines()]
    out.append("")
    out.append("one time step, in execution order (when, order, object):")
    for obj in network.sorted_objects:
        kind = type(obj).__name__
        if kind == "StateUpdater":
            group = obj.group
            if not group.equations.diff_eq_names:
                continue
            code = b2.StateUpdateMethod.apply_stateupdater(group.equations, group.variables,
                                                           method, group_name=group.name)
            out.append(f"  {obj.when} {obj.order:>3}  {obj.name} ({method}):")
            out += _code_lines(code, "      ")
        elif kind == "SummedVariableUpdater":
            out.append(f"  {obj.when} {obj.order:>3}  {obj.name}: {obj.target_var.name}_post ="
                       f" Σ {obj.expression}")
        elif kind == "CodeRunner":
            out.append(f"  {obj.when} {obj.order:>3}  {obj.name}:")
            out += _code_lines(obj.abstract_code, "      ")
        elif kind == "NetworkOperation":
            out.append(f"  {obj.when} {obj.order:>3}  {obj.name} (Python, once per γ cycle)")
    return "\n".join(out)


# -- the variables every layer has, and the normalization neurons ------------------------------

def sigma_expression(circuit: CircuitConfig, var: str) -> str:
    """σ of the circuit applied to ``var``, as a Brian2 expression."""
    nl = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    return nl.brian2_expr.format(x=var)


def slope_expression(circuit: CircuitConfig, var: str) -> str:
    """σ′ of the circuit at ``var``, as a Brian2 expression."""
    nl = get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope)
    return nl.brian2_slope.format(x=var)


LAYER_EQS = """
target : 1
dtau : 1
scaled_error : 1
d_scaled_error : 1
influence_eps : 1 (shared, constant)
m : 1
fb : 1
fb_ref : 1
leak : 1 (shared, constant)
sm : 1
sa : 1
su : 1
y : 1
inv_norm : 1
err_self : 1
err_top : 1
exp_sum : 1
is_bias : 1 (constant)
hold_epsilon : 1 (shared, constant)
hold_width : 1 (shared, constant)
tau_h : second (shared, constant)
tau_a : second (shared, constant)
tau_u : second (shared, constant)
tau_tau : second (shared, constant)
beta : 1 (shared, constant)
"""


# a batch's blocks stop at their own last step: ``running`` is 1 until then, 0 after, and every
# state update is multiplied by it (dt·running), so a block's final state is the state a
# separate run of that circuit ends in
BATCH_EQS = """
running : 1
t_last : second (constant)
"""


def layer_equations(dynamics: str, batched: bool, slow: bool, spiking: bool = False,
                    normalized: bool = False) -> str:
    """The NeuronGroup equations of a layer: its Eqs 46–48 (``dynamics``, from
    :func:`cdtp.brian.equations.layer_dynamics`), the parameters every layer has, in a
    spiking circuit the read-out variables of :mod:`cdtp.brian.spiking`, and with
    ``normalized`` (``feedback.normalize``, layers l ≥ 2) those of the feedback's gain."""
    gate_flag = "" if batched else " (shared)"
    const_flag = " (constant)" if batched else " (shared, constant)"
    lines = [dynamics, LAYER_EQS]
    lines += [f"{v} : 1{gate_flag}" for v in GATE_VARIABLES]
    lines += [f"{v} : {unit}{const_flag}" for v, unit in SCHEDULE_CONSTANTS.items()]
    if batched:
        lines.append(BATCH_EQS)
    if slow:
        lines.append("w_drive : 1")
    if spiking:
        lines.append(LAYER_SPIKING_EQS)
    if normalized:
        lines.append(FEEDBACK_NORM_EQS)
    return "\n".join(lines) + "\n"


# feedback.normalize (docs/model.md §2.3): a layer l ≥ 2's units sum the squares of their
# incoming weights (wsq), its normalization neuron sums those (wsq_total) and sends back
# fb_scale = ‖W_l(0)‖_F² / ‖W_l‖_F², the gain of what its feedback synapses send down
FEEDBACK_NORM_EQS = """
wsq : 1
fb_scale : 1
"""
NORM_FEEDBACK_EQS = """
wsq_total : 1
wsq_reference : 1 (constant)
"""


NORM_EQS = """
sq_norm : 1
err : 1
exp_total : 1
"""


def target_code(drive: str, tau_tau: float, group, method: str, batched: bool) -> str:
    """Stage 2's dτ/dt = drive/τ_τ (Eq 49, or the top layer's nudged target), leaving the
    step's increment in ``dtau`` for the weight update (Eq 50). Algebraic (τ_τ = 0): the
    map's k = 1 step, ``dtau = drive``, so the increment is not recomputed from the sum."""
    if tau_tau == 0:
        run = "running*" if batched else ""
        return f"dtau = {run}({drive})\ntarget += dtau"
    update = integrate("target", drive, "tau_tau", tau_tau, group, method, batched)
    return f"_target_start = target\n{update}\ndtau = target - _target_start"
