"""Spiking populations of the CDTP circuit (``neurons = "spiking"``; docs/model.md §2.5).

Each rate unit j of a layer sends what it transmits — σ(m_j) upward through the feedforward
synapses, σ(u_j) downward through the feedback synapses — as the spikes of a population of N
Poisson neurons whose rate follows that value,

    r_j(t) = clip(r_0 + r_1 σ_j(t), 0, 1/dt),

and the receiving synapses read the population rate out by an exponential synaptic filter of
time constant τ_s,

    r̂_j ← r̂_j + k_s (c_j / (N dt) − r̂_j),    k_s = 1 − exp(−dt/τ_s),
    σ̂_j = (r̂_j − r_0) / r_1,

where c_j is the number of neurons of population j that spiked in the step. ``k_s`` makes the
filter unbiased at every dt: a constant rate r gives E[r̂] = r exactly (the exact-decay filter
``r̂ e^{−dt/τ_s} + c/(N τ_s)`` overestimates it by dt/(2τ_s)). The feedforward sum of unit i is
Σ_j W_ij σ̂_j: each neuron of population j acts on unit i with weight W_ij / (N r_1) and the
shared filter, minus the constant baseline W_ij r_0 / r_1 (computed by linearity in the order
spikes → count per population → filter → W, which costs O(N n + n²) per step instead of the
O(N n²) of one synapse per neuron pair, and keeps one W_ij per pair of units for plasticity).

The readout's error: the count c_j of N independent neurons firing with probability r dt is
binomial, so r̂_j has variance ≈ r / (2 N τ_s) (k_s ≪ 1) and σ̂_j an error of standard
deviation √(r / (2 N τ_s)) / r_1 — it falls like N^(−1/2). :func:`readout_error` measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import brian2 as b2
import numpy as np

from cdtp.model.circuit import SpikingParameters

__all__ = ["LAYER_SPIKING_EQS", "SPIKING_ORDER", "Populations", "add_population", "attach",
           "readout_code", "readout_error"]


POPULATION_EQS = """
spike : 1
drive : 1
rate_offset : Hz (shared, constant)
rate_gain : Hz (shared, constant)
"""


def add_population(layer, drive: str, count: str, n_units: int, params: SpikingParameters,
                   clock, name: str, order: int):
    """N Poisson neurons per unit of ``layer`` (its first ``n_units``: not the bias unit),
    firing at r_0 + r_1 × ``layer.<drive>`` of their unit; their spikes of a step are counted
    into the unit's variable ``count``. In the ``groups`` slot: at ``order − 1`` each neuron
    receives its unit's drive (a one-to-N summed synapse), at ``order`` it fires, at
    ``order + 1`` the count is summed (an N-to-one summed synapse).

    Returns the NeuronGroup (its ``spike`` variable is 1 in a step where the neuron fired,
    and its threshold ``spike > 0.5`` makes the spikes visible to a SpikeMonitor; neuron
    ``member·n_units + j`` belongs to unit j) and the two Synapses.
    """
    n = params.neurons_per_unit
    pop = b2.NeuronGroup(n_units * n, POPULATION_EQS, threshold="spike > 0.5", reset="",
                         clock=clock, name=name)
    # member-major: neuron member·n_units + j is member ``member`` of unit j's population, so
    # the first k members of every unit are the contiguous subgroup pop[:k·n_units]
    unit = np.tile(np.arange(n_units), n)
    # the drive arrives through synapses rather than a linked variable, so that a SpikeMonitor
    # can watch a subgroup (Brian2 makes no subgroup of a group with an indexed link)
    feed = b2.Synapses(layer, pop, model=f"drive_post = {drive}_pre : 1 (summed)", clock=clock,
                       name=f"{name}_drive")
    feed.connect(i=unit, j=np.arange(n_units * n))
    feed.summed_updaters["drive_post"].order = order - 1
    pop.rate_offset = params.rate_offset * b2.Hz
    pop.rate_gain = params.rate_gain * b2.Hz
    pop.run_regularly(
        "spike = 1.0*int(rand() < clip(rate_offset + rate_gain*drive, 0*Hz, 1/dt)*dt)",
        when="groups", order=order, name=f"{name}_poisson")
    counter = b2.Synapses(pop, layer, model=f"{count}_post = spike_pre : 1 (summed)",
                          clock=clock, name=f"{name}_count")
    counter.connect(i=np.arange(n_units * n), j=unit)
    counter.summed_updaters[f"{count}_post"].order = order + 1
    return pop, feed, counter


def readout_code(count: str, rate: str, out: str) -> str:
    """Abstract code of the synaptic read-out: ``rate`` filters the population rate
    count / (N dt) with ``k_s``; ``out`` = σ̂ = (rate − r_0)/r_1 (1 for the bias unit). The
    group needs ``neurons_per_unit``, ``k_s``, ``spike_rate_offset``, ``spike_rate_gain``."""
    return (f"{rate} += k_s*({count}/(neurons_per_unit*dt) - {rate})\n"
            f"{out} = ((({rate} - spike_rate_offset)/spike_rate_gain))*(1 - is_bias) + is_bias")


READOUT_EQS = """
neurons_per_unit : 1 (shared, constant)
k_s : 1 (shared, constant)
spike_rate_offset : Hz (shared, constant)
spike_rate_gain : Hz (shared, constant)
"""


def set_readout_constants(group, params: SpikingParameters, dt: float) -> None:
    """The read-out constants of ``group`` (see :func:`readout_code`)."""
    group.neurons_per_unit = params.neurons_per_unit
    group.k_s = 1.0 - math.exp(-dt / params.synapse_tau)
    group.spike_rate_offset = params.rate_offset * b2.Hz
    group.spike_rate_gain = params.rate_gain * b2.Hz


def readout_error(sigmas, neurons: list[int], *, params: SpikingParameters | None = None,
                  dt: float = 1e-4, settle: float = 0.02, duration: float = 0.2,
                  seed: int = 0, device: str = "numpy") -> dict:
    """Phase-1 measurement on one layer: units holding fixed σ values ``sigmas`` send them
    through populations of N neurons (each N of ``neurons``) and the filtered read-out σ̂;
    returns {N: relative RMS error ‖σ̂ − σ‖ / ‖σ‖ over units and the steps after ``settle``}
    and the predicted {N: √(mean r / (2 N τ_s)) / r_1 / rms σ} (k_s ≪ 1)."""
    params = params or SpikingParameters()
    sigmas = np.asarray(sigmas, dtype=float)
    b2.set_device("runtime")
    b2.prefs.codegen.target = device
    measured, predicted = {}, {}
    for n in neurons:
        p = SpikingParameters(n, params.rate_offset, params.rate_gain, params.synapse_tau)
        b2.seed(seed)
        clock = b2.Clock(dt=dt * b2.second, name="clock")
        eqs = "sm_drive : 1\ncount_m : 1\nrate_m : Hz\nsm : 1\nis_bias : 1 (constant)\n"
        layer = b2.NeuronGroup(len(sigmas), eqs + READOUT_EQS, clock=clock, name="layer")
        layer.sm_drive = sigmas
        layer.rate_m = (p.rate_offset + p.rate_gain * sigmas) * b2.Hz
        set_readout_constants(layer, p, dt)
        pop, feed, counter = add_population(layer, "sm_drive", "count_m", len(sigmas), p,
                                            clock, "forward_spikes", order=25)
        layer.run_regularly(readout_code("count_m", "rate_m", "sm"), when="groups", order=27,
                            name="readout")
        mon = b2.StateMonitor(layer, "sm", record=True, when="end", clock=clock, name="mon")
        net = b2.Network(layer, pop, feed, counter, mon)
        net.run(duration * b2.second, namespace={})
        keep = np.asarray(mon.t / b2.second) >= settle
        err = np.asarray(mon.sm)[:, keep] - sigmas[:, None]
        measured[n] = float(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(sigmas ** 2)))
        rate = np.clip(p.rate_offset + p.rate_gain * sigmas, 0, 1 / dt)
        k = 1 - math.exp(-dt / p.synapse_tau)
        # the filter's stationary variance: k/(2 − k) × Var(c/(N dt)), c ~ Binomial(N, r dt)
        var = k / (2 - k) * rate * (1 - rate * dt) / (n * dt) / p.rate_gain ** 2
        predicted[n] = float(np.sqrt(np.mean(var)) / np.sqrt(np.mean(sigmas ** 2)))
    return {"measured": measured, "predicted": predicted}


# Where the spiking parts run within a step (the ``groups`` slot; see cdtp.engine.ORDER): the
# forward populations after the targets (20) have set σ(m), before the feedforward sums (40);
# the feedback populations after the state updater and σ(u) (60, 61), before the
# normalization pools (70); the feedback sums (10) of the next step read their σ̂(u).
SPIKING_ORDER = {"forward_spikes": 22, "forward_readout": 24, "feedback_spikes": 63,
                 "feedback_readout": 65}

LAYER_SPIKING_EQS = """
sm_drive : 1
su_drive : 1
count_m : 1
count_u : 1
rate_m : Hz
rate_u : Hz
""" + READOUT_EQS


@dataclass
class Populations:
    """The spiking parts of a built circuit.

    Attributes
    ----------
    groups : list of (str, int, NeuronGroup)
        ``("forward", l, group)`` for l = 0..L−1 and ``("feedback", l, group)`` for
        l = 2..L; neuron ``member·n_l + j`` of a group belongs to unit j.
    objects : list
        Every Brian2 object to add to the network (groups and counting synapses; the
        read-outs run in the layers).
    """

    groups: list = field(default_factory=list)
    objects: list = field(default_factory=list)


def attach(layers, sizes, params: SpikingParameters, clock, dt: float) -> Populations:
    """The spiking populations of a built circuit whose layers have
    :data:`LAYER_SPIKING_EQS`: for each layer l < L a forward population firing at
    r(σ(m_l)) (``sm_drive``) read out into ``sm`` (what W_{l+1} sums) and, sampled while the
    layer above holds (``hold_above``), into ``sa`` (the presynaptic factor of the plasticity
    and of the normalization, σ(a_l) in the rate circuit); for each layer l ≥ 2 a feedback
    population firing at r(σ(u_l)) (``su_drive``) read out into ``su`` (what Ω_l sums)."""
    out = Populations()
    L = len(layers) - 1
    for l, group in enumerate(layers):
        set_readout_constants(group, params, dt)
        group.rate_m = params.rate_offset * b2.Hz
        group.rate_u = params.rate_offset * b2.Hz
        if l < L:
            parts = add_population(group, "sm_drive", "count_m", sizes[l], params, clock,
                                   f"forward_spikes_{l}", SPIKING_ORDER["forward_spikes"])
            out.groups.append(("forward", l, parts[0]))
            out.objects += parts
            group.run_regularly(
                readout_code("count_m", "rate_m", "sm")
                + "\nsa = hold_above*sm + (1 - hold_above)*sa",
                when="groups", order=SPIKING_ORDER["forward_readout"],
                name=f"layer_{l}_forward_readout")
        if l >= 2:
            parts = add_population(group, "su_drive", "count_u", sizes[l], params, clock,
                                   f"feedback_spikes_{l}", SPIKING_ORDER["feedback_spikes"])
            out.groups.append(("feedback", l, parts[0]))
            out.objects += parts
            group.run_regularly(readout_code("count_u", "rate_u", "su"), when="groups",
                                order=SPIKING_ORDER["feedback_readout"],
                                name=f"layer_{l}_feedback_readout")
    return out
