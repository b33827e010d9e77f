"""Reading a built circuit back: weight matrices, weight snapshots, divergence.

Every function here serves one circuit (:class:`cdtp.brian.engine.CircuitRun`, k = 0) and a
batch of K circuits (:class:`cdtp.brian.batch.BatchRun`, circuit k = block k of every group)
alike: the all-to-all synapses of circuit k are those whose presynaptic neuron lies in block k.
"""

from __future__ import annotations

import brian2 as b2
import numpy as np

from cdtp.model.circuit import CircuitConfig

__all__ = ["block_matrix", "check_divergence", "divergence_after_run", "feedback_matrix",
           "feedforward_matrix", "snapshot_matrices", "snapshot_monitors"]

def block_matrix(syn, var, n_post_block, n_pre_block, n_rows, n_cols, k=0, values=None):
    """Synaptic variable ``var`` of circuit k (block k) of an all-to-all-per-block Synapses
    object as an (n_rows, n_cols) matrix; ``values`` (one per synapse, e.g. a monitored
    snapshot) replace the variable's current values."""
    i, j = np.asarray(syn.i[:]), np.asarray(syn.j[:])
    mine = i // n_pre_block == k
    w = np.zeros((n_rows, n_cols))
    values = np.asarray(getattr(syn, var)[:] if values is None else values)
    w[j[mine] - k * n_post_block, i[mine] - k * n_pre_block] = values[mine]
    return w


def feedforward_matrix(run, l: int, k: int) -> np.ndarray:
    """W_l of circuit k of a built run (a :class:`CircuitRun` or a batch), with the drive a
    slow plasticity clock has summed but not yet applied added as that update will apply it
    (σ(a_pre) and its norm as they are now, which the next update reads). With
    ``plasticity.consolidation = "cycle"`` the drive is the model's own state (what the
    neurons hold until the cycle boundary): W_l is the synapses' weight, without it."""
    sizes, bias = run.circuit.sizes, int(run.circuit.bias)
    nb_pre, nb_post = sizes[l - 1] + bias, sizes[l] + bias
    w = block_matrix(run.feedforward[l], "W", nb_post, nb_pre, sizes[l], nb_pre, k)
    eta = run.circuit.eta_w_at(l)
    if run.plasticity_every > 1 and eta != 0 and run.circuit.consolidation == "step":
        pre, post = run.layers[l - 1], run.layers[l]
        sl_pre = slice(k * nb_pre, (k + 1) * nb_pre)
        sa = np.asarray(pre.sa[sl_pre]) * np.asarray(pre.inv_norm[sl_pre])
        drive = np.asarray(post.w_drive[k * nb_post: k * nb_post + sizes[l]])
        w += eta * np.outer(drive, sa)
    return w


def feedback_matrix(run, l: int, k: int) -> np.ndarray:
    """Ω_l of circuit k of a built run; with the ``mirror`` rule on a slow plasticity clock, the
    pending mirrored update is added as for W (:func:`feedforward_matrix`)."""
    circuit = run.circuit
    sizes, bias = circuit.sizes, int(circuit.bias)
    nb_pre, nb_post = sizes[l] + bias, sizes[l - 1] + bias
    om = block_matrix(run.feedback[l], "Omega", nb_post, nb_pre, sizes[l - 1], nb_pre, k)
    eta = circuit.eta_w_at(l)
    if (run.plasticity_every > 1 and circuit.feedback_rule == "mirror" and eta != 0
            and circuit.consolidation == "step"):
        below, above = run.layers[l - 1], run.layers[l]
        sl = slice(k * nb_post, k * nb_post + sizes[l - 1])
        sa = np.asarray(below.sa[sl]) * np.asarray(below.inv_norm[sl])
        drive = np.asarray(above.w_drive[k * nb_pre: k * nb_pre + sizes[l]])
        gain = float(np.asarray(run.feedback[l].mirror_gain[:])[k * nb_pre * sizes[l - 1]])
        om[:, : sizes[l]] += gain * eta * np.outer(sa, drive)
    return om


def snapshot_monitors(parts, snapshot_every, spc: int, dt: float) -> dict:
    """StateMonitors of every W_l and Ω_l at the start of every ``snapshot_every``-th cycle
    (cycles of ``spc`` steps)."""
    if isinstance(snapshot_every, bool) or int(snapshot_every) != snapshot_every \
            or snapshot_every < 0:
        raise ValueError(f"snapshot_every must be a whole number of cycles ≥ 0, got"
                         f" {snapshot_every!r}")
    if spc is None:
        raise ValueError("snapshot_every needs a γ period that is a whole number of steps")
    clock = b2.Clock(dt=int(snapshot_every) * spc * dt * b2.second, name="snapshot_clock")
    monitors = {}
    for l in range(1, len(parts.layers)):
        for kind, syn, var in (("feedforward", parts.feedforward[l], "W"),
                               ("feedback", parts.feedback[l] if l >= 2 else None, "Omega")):
            if syn is not None:
                monitors[f"{kind}_snapshots_{l}"] = b2.StateMonitor(
                    syn, var, record=True, when="start", clock=clock,
                    name=f"{kind}_snapshots_{l}")
    return monitors


def snapshot_matrices(run, l: int, kind: str, k: int) -> np.ndarray:
    """The snapshots of W_l or Ω_l of circuit k of a run built with ``snapshot_every``."""
    name = f"{kind}_snapshots_{l}"
    if kind not in ("feedforward", "feedback") or name not in {o.name for o in run.network.objects}:
        raise ValueError(f"no {kind} snapshots of layer {l}: build with snapshot_every > 0"
                         " (feedback weights exist for layers ≥ 2)")
    sizes, bias = run.circuit.sizes, int(run.circuit.bias)
    if kind == "feedforward":
        syn, var = run.feedforward[l], "W"
        shape = (sizes[l] + bias, sizes[l - 1] + bias, sizes[l], sizes[l - 1] + bias)
    else:
        syn, var = run.feedback[l], "Omega"
        shape = (sizes[l - 1] + bias, sizes[l] + bias, sizes[l - 1], sizes[l] + bias)
    values = np.asarray(getattr(run.network[name], var))  # (n_synapses, n_snapshots)
    return np.array([block_matrix(syn, var, *shape, k=k, values=v) for v in values.T])


def divergence_after_run(layers, circuit: CircuitConfig, outputs, block: int = 0):
    """Why circuit ``block`` diverged (or None), found after a run without Python in the loop:
    the first per-cycle output that is not finite or leaves the activity bound, else the final
    state; and the index of that output (None when the outputs stayed bounded)."""
    bound = circuit.activity_bound
    bad = [c for c, out in enumerate(outputs)
           if not np.all(np.isfinite(out)) or np.max(np.abs(out)) > bound]
    if bad:
        return f"cycle {bad[0]}: layer {circuit.depth}: a left the bound", bad[0]
    state = {"diverged": None}
    check_divergence(layers, circuit.sizes, bound, len(outputs) - 1, state, block=block,
                      bias=int(circuit.bias))
    return state["diverged"], None


def check_divergence(layers, sizes, bound, cycle, run_state, block=0, bias=0):
    """Record in ``run_state["diverged"]`` why circuit ``block`` has left the bound (a batch's
    blocks are ``sizes[l] + bias`` neurons long)."""
    for l, group in enumerate(layers):
        if l == 0:
            continue
        start = block * (sizes[l] + bias)
        for var in ("a", "u", "target"):
            v = np.asarray(getattr(group, var)[start:start + sizes[l]])
            if not np.all(np.isfinite(v)):
                run_state["diverged"] = f"cycle {cycle}: layer {l}: {var} is not finite"
                return
            peak = float(np.max(np.abs(v)))
            if peak > bound:
                run_state["diverged"] = (
                    f"cycle {cycle}: layer {l}: |{var}| reached {peak:.3g} > bound {bound:g}"
                )
                return
