"""Assembly: the Brian2 objects of one circuit, or of K circuits of one structure.

:func:`assemble` makes the layer NeuronGroups, normalization neurons, feedforward and feedback
Synapses and every layer operation, in that order, for :func:`cdtp.brian.engine.build` (K = 1)
and :func:`cdtp.brian.batch.build_batch` (K blocks of neurons per group, block-diagonal
connectivity). Which object computes which quantity: the table of :mod:`cdtp.brian.engine`.
Within each time step the objects run in the order :data:`ORDER` (all in the ``groups``
slot), the order of the stages of :mod:`cdtp.reference.cdtp_map`.
"""

from __future__ import annotations

from dataclasses import dataclass

import brian2 as b2
import numpy as np

from cdtp.brian.equations import (
    FB_REF_DRIVE,
    NORM_EQS,
    NORM_FEEDBACK_EQS,
    check_method,
    integrate,
    layer_dynamics,
    layer_equations,
    sigma_expression,
    slope_expression,
    target_code,
)
from cdtp.brian.gates import gate_code, set_schedule_constants
from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import consolidation_period
from cdtp.reference import cdtp_map

__all__ = ["ORDER", "Assembly", "assemble", "block_synapses", "check_stream",
           "plasticity_every_of", "stream_arrays", "validate_build"]

# Execution order within a time step (all in the 'groups' slot).
ORDER = {
    # the slower plasticity clock (plasticity_every > 1) applies the summed drive first, with
    # the presynaptic activities of the step before, so that an update at a cycle boundary
    # reads the cycle's own input, not the next example's (cdtp_map, ``plasticity_every``)
    "slow_plasticity": 0,
    "drive_reset": 1,
    "input": 2,
    "input_pool": 3,
    "input_broadcast": 4,
    "weight_norm": 6,
    "weight_norm_pool": 7,
    "weight_norm_broadcast": 8,
    "feedback_sum": 10,
    "gates": 15,
    "targets": 20,
    "feedback_plasticity": 30,
    "error_pool": 30,
    "error_broadcast": 35,
    "feedforward_sum": 40,
    "influence": 45,
    "feedforward_plasticity": 50,
    "drive_accumulate": 55,
    "dynamics": 60,
    "norm_pool": 70,
    "norm_broadcast": 80,
}


def plasticity_every_of(circuit: CircuitConfig, schedules, dt: float,
                        plasticity_every: int = 1) -> int:
    """The steps between weight updates: ``plasticity_every`` as given, or, with
    ``plasticity.consolidation = "cycle"``, the steps of one γ cycle (the summed change is
    applied at each cycle's first step, before its input is clamped)."""
    if circuit.consolidation != "cycle":
        return plasticity_every
    spc = consolidation_period(schedules, dt, circuit.source)
    if plasticity_every not in (1, spc):
        raise ValueError(f"plasticity_every = {plasticity_every!r} conflicts with"
                         f" plasticity.consolidation = 'cycle' of {circuit.source} ({spc}"
                         " steps per γ cycle)")
    return spc


def validate_build(circuit: CircuitConfig, schedules, dt: float, plasticity_every: int,
              threads: int) -> list[int]:
    """Checks shared by :func:`build` and :func:`cdtp.brian.batch.build_batch`; the steps per γ
    cycle
    of each schedule (None where the period is not a whole number of steps)."""
    check_method(circuit)
    for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
        v = getattr(circuit, name)
        # Euler and RK4 overshoot when dt exceeds a time constant; the exponential methods do not
        if circuit.integration_method in ("euler", "rk4") and 0 < v < dt * (1 - 1e-9):
            raise ValueError(f"{name} = {v} s is shorter than dt = {dt} s: use 0 or ≥ dt (or"
                             " integration.method = 'exact' / 'exponential_euler')")
    for s in schedules:
        if s.gamma.period / dt < 2 - 1e-9:
            raise ValueError(f"the γ period ({s.gamma.period * 1e3:g} ms) must be at least 2"
                             f" time steps (dt = {dt * 1e3:g} ms)")
    spcs = [s.whole_period(dt) for s in schedules]
    if not isinstance(plasticity_every, int) or plasticity_every < 1 or any(
        (1 if spc is None else spc) % plasticity_every for spc in spcs
    ):
        periods = " / ".join(str(s.gamma.period / dt) for s in schedules)
        raise ValueError(
            f"plasticity_every = {plasticity_every!r}: a positive integer dividing the"
            f" steps per γ cycle ({periods}; 1 when that is not a whole number)"
        )
    if circuit.consolidation == "cycle" and (
            spc := consolidation_period(schedules, dt, circuit.source)) != plasticity_every:
        raise ValueError(f"{circuit.source}: plasticity.consolidation = 'cycle' was built for"
                         f" {plasticity_every} steps per γ cycle, the schedule has {spc}:"
                         " rebuild to change the period")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads = {threads!r}: a positive integer")
    return spcs


def check_stream(circuit: CircuitConfig, inputs, labels):
    sizes = circuit.sizes
    inputs = np.asarray(inputs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if inputs.ndim != 2 or inputs.shape[1] != sizes[0]:
        raise ValueError(f"inputs must have shape (n_examples, {sizes[0]}), got {inputs.shape}")
    if labels.shape != (len(inputs), sizes[-1]):
        raise ValueError(f"labels must have shape ({len(inputs)}, {sizes[-1]}), got {labels.shape}")
    return inputs, labels


@dataclass
class Assembly:
    """The Brian2 objects of K ≥ 1 circuits (K blocks of neurons per group)."""

    clock: object
    layers: list
    norms: list
    pools: list
    broadcasts: list
    feedforward: list
    feedback: list
    namespace: dict
    block_sizes: list


def stream_arrays(circuit: CircuitConfig, inputs: list, labels: list):
    """Inputs and labels of K circuits as the rows of the ``stimulus`` / ``label_stream``
    TimedArrays: row k holds example k of every circuit, each in its own block."""
    sizes, bias = circuit.sizes, int(circuit.bias)
    n_rows = max(len(x) for x in inputs)
    blocks = []
    for stream, n in ((inputs, sizes[0]), (labels, sizes[-1])):
        arr = np.zeros((n_rows, len(stream), n + bias))
        for k, s in enumerate(stream):
            arr[: len(s), k, :n] = s
            arr[len(s):, k, :n] = s[-1]  # past its end a stream repeats its last example
        blocks.append(arr.reshape(n_rows, -1))
    return blocks


def assemble(circuit, schedules, nets, *, dt, plasticity_every, batched, timed_stream,
             inputs=None, labels=None) -> Assembly:
    """Create the groups and synapses of ``len(schedules)`` circuits of the structure
    ``circuit``. ``batched``: per-neuron gate constants and block-diagonal connectivity (each
    circuit one block of every group, one normalization neuron per block); otherwise one
    circuit with shared constants. ``timed_stream``: examples come from TimedArrays indexed by
    the cycle number (cpp_standalone, batches) instead of a per-cycle NetworkOperation.

    The objects are made in the order: TimedArrays, layer groups and normalization neurons,
    the layers' operations, normalization synapses, feedforward synapses, feedback synapses."""
    sizes, bias = circuit.sizes, int(circuit.bias)
    nb = [n + bias for n in sizes]  # neurons per block, bias unit last
    clock = b2.Clock(dt=dt * b2.second, name="cdtp_clock")
    namespace, cycle_time = _timed_arrays(circuit, schedules, batched, timed_stream, inputs,
                                          labels)
    _check_batch_method(circuit, batched)
    if circuit.neurons == "spiking" and batched:
        raise ValueError(f"{circuit.source}: neurons = 'spiking' cannot run in a batch (one"
                         " network of many circuits); allowed in a batch: neurons = 'rate'")
    def sigma(v):
        return _keep_bias(sigma_expression(circuit, v))

    dynamics = [layer_dynamics(circuit, l, batched, sigma) for l in range(circuit.depth + 1)]
    layers, norms = _layer_groups(circuit, dynamics, len(schedules), nb, clock, namespace, dt,
                                  batched, plasticity_every > 1)
    set_schedule_constants(layers, schedules, circuit, nb if batched else None, dt=dt)
    _layer_operations(circuit, layers, dynamics, gate_code(schedules[0], circuit, batched),
                      batched, timed_stream, cycle_time)
    pools, broadcasts = _normalization(circuit, layers, norms, nb, len(schedules), clock)
    feedforward = _feedforward_synapses(circuit, layers, norms, nets, dynamics, nb, clock, dt,
                                        plasticity_every)
    feedback = _feedback_synapses(circuit, layers, nets, nb, clock, dt, plasticity_every,
                                  batched)
    # run_regularly operations are contained in their groups and join the network with them
    return Assembly(clock=clock, layers=layers, norms=norms, pools=pools,
                    broadcasts=broadcasts, feedforward=feedforward, feedback=feedback,
                    namespace=namespace, block_sizes=nb)


def _keep_bias(expr: str) -> str:
    """``expr`` on the units of a layer, 1 on its bias unit."""
    return f"({expr})*(1 - is_bias) + is_bias"


def _timed_arrays(circuit, schedules, batched, timed_stream, inputs, labels):
    """The namespace of the layer groups (an ``array`` γ's values; with ``timed_stream``, the
    ``stimulus`` and ``label_stream`` TimedArrays) and the expression of the current cycle's
    row in those arrays ("" without a timed stream)."""
    namespace = {}
    if schedules[0].gamma.shape == "array":
        n = len(schedules[0].gamma.values)
        namespace["gamma_values"] = b2.TimedArray(
            np.asarray(schedules[0].gamma.values, dtype=float), dt=b2.second / n,
            name="gamma_values"
        )
    cycle_time = ""
    if timed_stream:
        # dt = 1 s per row, so the γ period is not compiled in; a batch's block holds its
        # last example after its own last step
        now = "clip(t_in_timesteps, 0, floor(t_last/dt + 0.5))" if batched else "t_in_timesteps"
        cycle_time = f"(floor(({now} - gamma_t0_step + 0.5)*gamma_freq_dt) + 0.5)*second"
        stim, lab = stream_arrays(circuit, inputs, labels)
        namespace["stimulus"] = b2.TimedArray(stim, dt=b2.second, name="stimulus")
        namespace["label_stream"] = b2.TimedArray(lab, dt=b2.second, name="label_stream")
    return namespace, cycle_time


def _check_batch_method(circuit: CircuitConfig, batched: bool) -> None:
    method = circuit.integration_method
    if batched and method in ("exact", "exponential_euler") and circuit.depth >= 2 \
            and circuit.tau_u > 0:
        # Brian2 does not cancel ``running`` between u's rate and drive: a stopped block
        # (running = 0) would divide 0 by 0
        raise ValueError(
            f"{circuit.source}: integration.method = {method!r}: a batch multiplies every rate"
            " by its block's running flag, and Brian2's solution of u divides by u's rate, 0"
            " once a block has stopped; allowed in a batch: euler, rk4")


def _layer_groups(circuit, dynamics, K, nb, clock, namespace, dt, batched, slow):
    """The NeuronGroup ``layer_l`` (K blocks of n_l units and a bias unit) and the
    normalization neurons ``norm_l`` (one per block) of every layer l = 0..L."""
    sizes, bias = circuit.sizes, int(circuit.bias)
    layers, norms = [], []
    for l in range(circuit.depth + 1):
        is_bias = np.tile(np.r_[np.zeros(sizes[l]), np.ones(bias)], K)
        eqs = layer_equations(dynamics[l].equations, batched, slow, circuit.neurons == "spiking",
                              normalized=circuit.normalize_feedback and l >= 2)
        group = b2.NeuronGroup(K * nb[l], eqs,
                               method=circuit.integration_method, clock=clock,
                               name=f"layer_{l}", namespace=namespace)
        # Eqs 46–48 advance in stage 5 of the reference map's step
        group.state_updater.order = ORDER["dynamics"]
        group.is_bias = is_bias
        for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
            # an algebraic variable (τ = 0) reads no time constant; dt keeps the value finite
            setattr(group, name, (getattr(circuit, name) or dt) * b2.second)
        group.beta = circuit.beta
        group.leak = circuit.leak
        group.influence_eps = circuit.influence_eps
        # σ of the bias unit is 1 in every phase
        group.sm = is_bias
        group.sa = is_bias
        group.su = is_bias
        group.inv_norm = 1.0 / (bias + 1e-12)
        group.exp_sum = float(sizes[l])
        if batched:
            group.running = 1.0
        layers.append(group)
        norm_eqs = NORM_EQS + (NORM_FEEDBACK_EQS if circuit.normalize_feedback and l >= 2
                               else "")
        norms.append(b2.NeuronGroup(K, norm_eqs, clock=clock, name=f"norm_{l}"))
    return layers, norms


def _layer_operations(circuit, layers, dynamics, gates, batched, timed_stream, cycle_time):
    """Each layer's run_regularly operations: the input clamp of layer 0; the gates, targets
    (Eq 49), influence factor and the algebraic parts of Eqs 46–48 of layers l ≥ 1."""
    L, method = circuit.depth, circuit.integration_method
    run_factor = "running*" if batched else ""
    # a spiking circuit sends σ through its populations: sm_drive is their rate, and sm, sa
    # are read out from their spikes (cdtp.brian.spiking)
    spiking = circuit.neurons == "spiking"
    sm_var = "sm_drive" if spiking else "sm"
    input_code = (f"m = a\nsm_drive = {_keep_bias(sigma_expression(circuit, 'a'))}" if spiking
                  else f"m = a\nsm = {_keep_bias(sigma_expression(circuit, 'a'))}\nsa = sm")
    label_code = ""
    if timed_stream:
        input_code = f"a = stimulus({cycle_time}, i)\n" + input_code
        label_code = f"y = label_stream({cycle_time}, i)\n"
    layers[0].run_regularly(input_code, when="groups", order=ORDER["input"],
                            name="layer_0_input")
    for l in range(1, L + 1):
        group = layers[l]
        group.run_regularly(gates, when="groups", order=ORDER["gates"], name=f"layer_{l}_gates")
        if l < L:
            m_code = "m = (gamma_above*a + (1 - gamma_above)*fb)*(1 - is_bias)\n"
            if circuit.difference:
                gate = (f"{slope_expression(circuit, 'a')}*"
                        if circuit.feedback_decoder == "slope_gated" else "")
                # the feedback input held at the end of the feedforward phase; its change is fed
                # back (cdtp.reference.cdtp_map, ``difference``)
                m_code = (integrate("fb_ref", FB_REF_DRIVE, "tau_a", circuit.tau_a, group,
                                    method, batched) + "\n"
                          f"m = (a + (1 - gamma_above)*{gate}(fb - fb_ref))*(1 - is_bias)\n")
            sm = _keep_bias(sigma_expression(circuit, "m"))
            code = m_code + target_code("m - target", circuit.tau_tau, group, method,
                                        batched) + f"\n{sm_var} = {sm}"
        else:
            grad = "(a - y)" if circuit.loss == "squared_error" else "(exp(a)/exp_sum - y)"
            code = label_code + target_code(
                # the bias unit's target relaxes to (and stays at) 0; a factor (1 − is_bias)
                # on the whole rate would make its linear coefficient 0, which the exponential
                # methods divide by
                f"(a - (1 - gamma)*beta*{grad})*(1 - is_bias) - target", circuit.tau_tau,
                group, method, batched)
        group.run_regularly(code, when="groups", order=ORDER["targets"],
                            name=f"layer_{l}_targets")
        if circuit.influence:
            group.run_regularly(
                "d_scaled_error = err_top/(err_self + influence_eps)*(target - a)"
                f" - scaled_error\nscaled_error += {run_factor}d_scaled_error",
                when="groups", order=ORDER["influence"], name=f"layer_{l}_influence",
            )
        # Eqs 46–48: the state updater (order "dynamics"); algebraic variables and σ around it
        if dynamics[l].before:
            group.run_regularly(dynamics[l].before, when="groups",
                                order=ORDER["dynamics"] - 1, name=f"layer_{l}_algebraic")
        if dynamics[l].after:  # (empty in a spiking layer 1: σ(a) comes from its spikes)
            group.run_regularly(dynamics[l].after, when="groups", order=ORDER["dynamics"] + 1,
                                name=f"layer_{l}_dynamics")
    # layer 0's gates are needed for nothing but γ_1 on layer 0 (m_0 = x is not gated), and in
    # a spiking circuit for hold_above, which samples σ̂(a_0) (cdtp.brian.spiking)
    if spiking:
        layers[0].run_regularly(gates, when="groups", order=ORDER["gates"],
                                name="layer_0_gates")


def _normalization(circuit, layers, norms, nb, K, clock):
    """The normalization neurons' summed synapses: ``pool_l`` (layer → its block's neuron:
    ‖σ̃(a)‖², Σ(a − τ)², Σe^a, and with ``feedback.normalize`` ‖W_l‖_F²) and ``broadcast_l``
    back (1/‖σ̃(a)‖², …, the feedback's gain; and, with the influence factor,
    ``broadcast_top_l`` of the output layer's error to every layer)."""
    L = circuit.depth
    softmax = circuit.loss == "softmax_cross_entropy"
    pools, broadcasts = [], []
    for l in range(L + 1):
        members = np.arange(K * nb[l])
        block_of = members // nb[l]
        pool_model = ["sq_norm_post = sa_pre**2 : 1 (summed)"]
        if circuit.influence and l >= 1:
            pool_model.append("err_post = (a_pre - target_pre)**2 : 1 (summed)")
        if l == L and softmax:
            pool_model.append("exp_total_post = exp(a_pre)*(1 - is_bias_pre) : 1 (summed)")
        weight_norm = circuit.normalize_feedback and l >= 2
        if weight_norm:
            pool_model.append("wsq_total_post = wsq_pre : 1 (summed)")
        pool = b2.Synapses(layers[l], norms[l], model="\n".join(pool_model), clock=clock,
                           name=f"pool_{l}")
        pool.connect(i=members, j=block_of)
        back_model = ["inv_norm_post = 1/(sq_norm_pre + 1e-12) : 1 (summed)"]
        if circuit.influence and l >= 1:
            back_model.append("err_self_post = err_pre : 1 (summed)")
        if l == L and softmax:
            back_model.append("exp_sum_post = exp_total_pre : 1 (summed)")
        if weight_norm:
            back_model.append("fb_scale_post = wsq_reference_pre/wsq_total_pre : 1 (summed)")
        back = b2.Synapses(norms[l], layers[l], model="\n".join(back_model), clock=clock,
                           name=f"broadcast_{l}")
        back.connect(i=block_of, j=members)
        first = l == 0
        pool.summed_updaters["sq_norm_post"].order = ORDER["input_pool" if first else "norm_pool"]
        back.summed_updaters["inv_norm_post"].order = ORDER[
            "input_broadcast" if first else "norm_broadcast"
        ]
        if "err_post" in pool.summed_updaters:
            pool.summed_updaters["err_post"].order = ORDER["error_pool"]
            back.summed_updaters["err_self_post"].order = ORDER["error_broadcast"]
        if weight_norm:
            pool.summed_updaters["wsq_total_post"].order = ORDER["weight_norm_pool"]
            back.summed_updaters["fb_scale_post"].order = ORDER["weight_norm_broadcast"]
        if "exp_total_post" in pool.summed_updaters:
            pool.summed_updaters["exp_total_post"].order = ORDER["norm_pool"]
            back.summed_updaters["exp_sum_post"].order = ORDER["norm_broadcast"]
        pools.append(pool)
        broadcasts.append(back)
    if circuit.influence:
        for l in range(1, L + 1):
            members = np.arange(K * nb[l])
            top = b2.Synapses(norms[L], layers[l], model="err_top_post = err_pre : 1 (summed)",
                              clock=clock, name=f"broadcast_top_{l}")
            top.connect(i=members // nb[l], j=members)
            top.summed_updaters["err_top_post"].order = ORDER["error_broadcast"]
            broadcasts.append(top)
    return pools, broadcasts


def _connect_blocks(syn, nb, l_pre, l_post, n_post, matrices):
    """All-to-all synapses within each circuit's block; returns their initial values."""
    i, j, values = block_synapses(matrices, nb[l_pre], nb[l_post], n_post)
    syn.connect(i=i, j=j)
    return values


def _feedforward_synapses(circuit, layers, norms, nets, dynamics, nb, clock, dt,
                          plasticity_every):
    """Synapses ``feedforward_l`` (W_l, Eq 46's sum) and their plasticity (Eq 50), directly
    or, with ``plasticity_every`` > 1, through a drive each neuron sums between updates."""
    sizes = circuit.sizes
    slow = plasticity_every > 1
    drive = "d_scaled_error" if circuit.influence else "dtau"
    feedforward = [None]
    for l in range(1, circuit.depth + 1):
        weight_norm = circuit.normalize_feedback and l >= 2
        ff = b2.Synapses(
            layers[l - 1], layers[l],
            model=f"W : 1\n{dynamics[l].h_sum}_post = W*sm_pre : 1 (summed)\n"
                  "eta_w : 1 (shared, constant)"
                  # each unit of layer l sums the squares of its incoming weights (no bias)
                  + ("\nwsq_post = W**2*(1 - is_bias_pre) : 1 (summed)" if weight_norm else ""),
            clock=clock, name=f"feedforward_{l}",
        )
        ff.W = _connect_blocks(ff, nb, l - 1, l, sizes[l], [net.weights[l] for net in nets])
        eta = circuit.eta_w_at(l)
        ff.eta_w = eta
        ff.summed_updaters[f"{dynamics[l].h_sum}_post"].order = ORDER["feedforward_sum"]
        if weight_norm:
            ff.summed_updaters["wsq_post"].order = ORDER["weight_norm"]
            # the reference ‖W_l(0)‖_F² of each circuit (cdtp_map.squared_norms)
            norms[l].wsq_reference = [cdtp_map.feedback_norm_reference(net)[l] for net in nets]
        if eta != 0 and slow:
            every = plasticity_every * dt * b2.second
            post = layers[l]
            ff.run_regularly("W += eta_w*w_drive_post*sa_pre*inv_norm_pre", dt=every,
                             when="groups", order=ORDER["slow_plasticity"],
                             name=f"feedforward_{l}_plasticity")
            post.run_regularly("w_drive = 0", dt=every, when="groups",
                               order=ORDER["drive_reset"], name=f"layer_{l}_drive_reset")
            post.run_regularly(f"w_drive += plasticity*{drive}", when="groups",
                               order=ORDER["drive_accumulate"],
                               name=f"layer_{l}_drive_accumulate")
        elif eta != 0:
            ff.run_regularly(f"W += eta_w*plasticity_post*{drive}_post*sa_pre*inv_norm_pre",
                             when="groups", order=ORDER["feedforward_plasticity"],
                             name=f"feedforward_{l}_plasticity")
        feedforward.append(ff)
    return feedforward


def _feedback_synapses(circuit, layers, nets, nb, clock, dt, plasticity_every, batched):
    """Synapses ``feedback_l`` (Ω_l, summed into ``fb`` of layer l − 1) and their plasticity:
    Δ1 / Δ2 (Eqs 51/52) or the ``mirror`` rule."""
    sizes, K = circuit.sizes, len(nets)
    slow = plasticity_every > 1
    drive = "d_scaled_error" if circuit.influence else "dtau"
    omega_dt = "dt*running_post" if batched else "dt"
    feedback = [None, None]
    gain = "*fb_scale_pre" if circuit.normalize_feedback else ""
    for l in range(2, circuit.depth + 1):
        fbs = b2.Synapses(
            layers[l], layers[l - 1],
            # with feedback.normalize the sum carries the sending layer's gain fb_scale
            model=f"Omega : 1\nfb_post = Omega*su_pre{gain} : 1 (summed)\n"
                  "eta_omega : Hz (shared, constant)\nmirror_gain : 1 (constant)\n"
                  "eta_w_fb : 1 (shared, constant)",
            clock=clock, name=f"feedback_{l}",
        )
        fbs.Omega = _connect_blocks(fbs, nb, l, l - 1, sizes[l - 1],
                                    [net.feedback[l] for net in nets])
        fbs.eta_omega = circuit.eta_omega * b2.Hz
        fbs.eta_w_fb = circuit.eta_w_at(l)  # Ω_l mirrors W_l's update
        fbs.summed_updaters["fb_post"].order = ORDER["feedback_sum"]
        if circuit.feedback_rule in ("delta1", "delta2") and circuit.eta_omega != 0:
            err = {"delta1": "(m_post - fb_post)", "delta2": "(a_post - fb_post)"}[
                circuit.feedback_rule]
            if circuit.difference and circuit.feedback_rule == "delta1":
                err = "gamma_above_post*(a_post - fb_post)"  # Δ1 = γ Δ2 (Prop 8)
            fbs.run_regularly(
                f"Omega += eta_omega*{omega_dt}*{err}*su_pre",
                when="groups", order=ORDER["feedback_plasticity"], name=f"feedback_{l}_plasticity",
            )
        elif circuit.feedback_rule == "mirror" and circuit.eta_w_at(l) != 0:
            # Ω_l follows the transpose of W_l's update (cdtp_map, ``mirror``): the same local
            # factors, with pre and post exchanged
            gains = [cdtp_map.mirror_gains(net.weights, sizes, circuit.feedback_gain)[l].item()
                     for net in nets]
            fbs.mirror_gain = np.repeat(gains, len(fbs) // K)
            drive_pre = "w_drive_pre" if slow else f"plasticity_pre*{drive}_pre"
            fbs.run_regularly(
                f"Omega += mirror_gain*eta_w_fb*{drive_pre}*sa_post*inv_norm_post",
                dt=(plasticity_every * dt * b2.second) if slow else None,
                when="groups",
                order=ORDER["slow_plasticity" if slow else "feedforward_plasticity"],
                name=f"feedback_{l}_plasticity",
            )
        feedback.append(fbs)
    return feedback


def block_synapses(matrices, nb_pre: int, nb_post: int, n_post: int):
    """Presynaptic indices, postsynaptic indices and values of the all-to-all synapses inside
    each block, one (n_post, nb_pre) matrix per circuit: presynaptic-major (see the module
    docstring), the postsynaptic units running over each block's first ``n_post`` (not the
    bias unit)."""
    mats = np.stack(matrices)
    k, pre, post = (a.ravel() for a in np.meshgrid(
        np.arange(len(mats)), np.arange(nb_pre), np.arange(n_post), indexing="ij"))
    return k * nb_pre + pre, k * nb_post + post, mats[k, post, pre]
