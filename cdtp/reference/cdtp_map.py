"""The discrete CDTP map (seed 000, Eqs 46–52), in the order the Brian2 circuit executes it.

This is the oracle for the circuit (docs/model.md §2.2): with algebraic h and τ (τ_h = τ_τ = 0),
τ_a = τ_u = dt and a hard hold gate, one step of :func:`step` is exactly one step of the
paper's sequential map

    h_l ← f_l(γ a_{l−1} + (1 − γ) g_l(u_l))          (46)
    a_l ← 1_{γ=1} h_l + 1_{γ<1} a_l                    (47)
    u_l ← τ_l + 1_{γ<1} (u_l − h_l)                     (48)
    τ_{l−1} ← γ a_{l−1} + (1 − γ) g_l(u_l)              (49)
    ΔW_l = η_W p s_l Δτ_l n_{l−1}ᵀ                      (50, as corrected in docs/model.md §2.1)
    Δ1Ω_l = (τ_{l−1} − g_l(u_l)) σ(u_l)ᵀ,  Δ2Ω_l = (a_{l−1} − g_l(u_l)) σ(u_l)ᵀ   (51, 52)

with (49) of step k evaluated at the start of step k + 1, before (46) — which reads the same
g_l(u_l) — so a single pass of the feedback synapses per step serves both. For finite time
constants every line becomes one forward-Euler step of the ODEs of docs/model.md §2 with factor
k_x = dt / τ_x (k_x = 1 for an algebraic variable, τ_x = 0).

One step, in order (the same stages, in the same order, as the Brian2 network):

1. ``fb_{l−1} = g_l(u_l)`` for l = 2..L (feedback synapses);
2. targets: ``m_{l−1} = γ_l a_{l−1} + (1 − γ_l) fb_{l−1}``;
   ``τ_{l−1} += k_τ (m_{l−1} − τ_{l−1})``; top: ``τ_L += k_τ (a_L − (1 − γ_L) β ∂ℓ/∂a_L − τ_L)``;
   ``Δτ`` is recorded; the feedback weights move by ``η_Ω dt (m_{l−1} − fb_{l−1}) σ(u_l)ᵀ``
   (Δ1) or ``η_Ω dt (a_{l−1} − fb_{l−1}) σ(u_l)ᵀ`` (Δ2);
3. ``h_in_l = W_l σ(m_{l−1})`` (feedforward synapses; m_0 = x);
4. ``W_l += η_W p_l Δτ_l n_{l−1}ᵀ`` (DTP1), n_{l−1} = σ̃(a_{l−1}) / ‖σ̃(a_{l−1})‖² (σ̃
   includes the bias unit); with the influence factor, ``W_l += η_W p_l Δe_l n_{l−1}ᵀ`` where
   e_l = s_l (τ_l − a_l), s_l = ‖a_L − τ_L‖² / (‖a_l − τ_l‖² + ε);
5. ``h += k_h (h_in − h)``, ``a += k_a c (h − a)``, ``u += k_u (τ − u + (1 − c)(u − h))``.

The gate of projection l (m_{l−1}, τ_{l−1}) is the γ of layer l, the layer whose encoder
switches its input; with a global γ this is the same γ everywhere.

**The influence factor.** docs/model.md §2 writes the DTP rule as Ẇ_l = η_W p s_l τ̇_l nᵀ. Because
s_l changes while τ_l relaxes (it is huge early in a feedback phase, when ‖a_l − τ_l‖ is still
small), Σ s_l Δτ_l does not telescope: measured on a tanh circuit it overshoots Eq 43 by
8× on layer 2 and 97× on layer 1. Driving the weights with the change of the *scaled*
discrepancy e_l = s_l (τ_l − a_l) telescopes exactly — Σ Δe_l over the window is
s_l(end)(τ_l − a_l)(end), Eq 43 with the converged targets — and equals τ̇_l whenever s_l = 1 and
a_l is held. The circuit does the same.

The state is batched along the first axis: a batch of independent circuits run in lock-step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from cdtp.model.circuit import FEEDBACK_DECODERS, eta_w_of_layer
from cdtp.model.gating import HoldGate, Schedule, consolidation_period
from cdtp.model.layers import Network, with_bias
from cdtp.model.losses import Loss, get_loss

__all__ = ["CDTPParameters", "CDTPState", "decoder_input", "feedback_norm_reference",
           "mirror_gains", "normalized_feedback", "parameters_of", "pending_weights",
           "resolve_consolidation", "run", "squared_norms",
           "step"]

FEEDBACK_RULES = ("delta1", "delta2", "fixed", "mirror")


@dataclass(frozen=True)
class CDTPParameters:
    """Rates and time constants of the CDTP dynamics, in SI units (seconds).

    Parameters
    ----------
    dt : float
        Integration step (s).
    tau_h, tau_a, tau_u, tau_tau : float
        Time constants (s); 0 means algebraic (instantaneous). Nonzero values must be ≥ dt.
    eta_w : float
        Feedforward learning rate η_W (dimensionless: ΔW = η_W Δτ nᵀ).
    eta_w_hidden : float or None
        η_W of the hidden layers (l < L); None: ``eta_w`` for every layer.
    eta_omega : float
        Feedback learning rate η_Ω (1/s: Ω̇ = η_Ω (…)).
    beta : float
        Output nudging strength β of τ_L.
    feedback_rule : {"delta1", "delta2", "fixed", "mirror"}
        ``mirror``: Ω_l receives the transpose of W_l's update times the constant
        c_l = ``feedback_gain`` / ‖W_l(0)‖₂² (see :func:`mirror_gains`), so Ω_l − c_l W_lᵀ
        keeps its initial value (zero from the ``transpose`` init).
    feedback_gain : float
        The gain of transpose-type feedback (``mirror``).
    normalize_feedback : bool
        Divide the feedback input of layer l − 1 by ‖W_l‖_F² / ‖W_l(0)‖_F², the summed squares
        of layer l's feedforward weights (no bias column) relative to the run's start: one
        normalization unit per layer keeps the loop's gain c_l ‖W_l D‖² from growing with
        ‖W_l‖ (docs/model.md §2.3). Needs the ``mirror`` rule.
    leak : float
        λ of the leaky inversion loop: in the feedback phase u_l relaxes by
        τ_l − h_l − λ (u_l − a_l) (Eq 48 with λ = 0). Its fixed point is the damped
        (Levenberg–Marquardt) preimage instead of the exact one.
    difference : bool
        Hold the feedback input g_l(u_l) at the end of the feedforward phase (ĝ_{l−1}, with the
        hold gate of layer l) and feed back its change: m_{l−1} = a_{l−1} + (1 − γ)(g_l(u_l) −
        ĝ_{l−1}). No jump of τ_{l−1} at the γ descent, whatever the decoder's reconstruction
        error (the difference correction of Lee et al. 2015, made exact by the loop).
    decoder : {"sigma", "slope_gated"}
        ``sigma``: fb_{l−1} = Ω_l σ̃(u_l) (the paper's g_l). ``slope_gated`` (needs
        ``difference``): fb_{l−1} = Ω_l ũ_l (u with the bias unit) and the change is gated by
        the receiving neuron's slope, m_{l−1} = a_{l−1} + (1 − γ) σ′(a_{l−1}) (fb_{l−1} −
        ĝ_{l−1}); linearized, the leaky loop's fixed point is then the damped Gauss–Newton
        step J_lᵀ (J_l J_lᵀ + (λ / c_l) I)⁻¹ (τ_l − a_l) with J_l = W_l diag σ′(a_{l−1}).
    influence : bool
        Multiply ΔW_l by the DTP influence factor s_l (Eqs 41–43).
    influence_eps : float
        ε in s_l = ‖a_L − τ_L‖² / (‖a_l − τ_l‖² + ε).
    hold : HoldGate
        c(γ), the paper's 1_{γ=1} (hard) or a smooth version.
    consolidation : {"step", "cycle"}
        ``cycle`` (the circuit's ``plasticity.consolidation``): :func:`run` sets
        ``plasticity_every`` to the steps of one γ cycle.
    plasticity_every : int
        Apply the feedforward (and mirrored) weight changes every this many steps: each
        neuron sums its drive p_l·Δτ_l between updates, and the update adds η_W · (that sum)
        · n_{l−1} with n_{l−1} read when it fires (the Brian2 circuit's ``plasticity_every``,
        :func:`cdtp.brian.engine.build`). 1: every step. With the steps of a γ cycle, the
        cycle's change is applied at the start of the next one, so W does not move while the
        loops settle (consolidation at the cycle boundary).
    norm_eps : float
        ε in n_{l−1} = σ̃(a_{l−1}) / (‖σ̃(a_{l−1})‖² + ε), so a silent layer gives n = 0.
    loss : str or Loss
    """

    dt: float = 1e-4
    tau_h: float = 0.0
    tau_a: float = 1e-4
    tau_u: float = 1e-4
    tau_tau: float = 0.0
    eta_w: float = 0.1
    eta_w_hidden: float | None = None
    eta_omega: float = 0.0
    beta: float = 0.1
    feedback_rule: str = "delta1"
    influence: bool = False
    influence_eps: float = 1e-12
    norm_eps: float = 1e-12
    plasticity_every: int = 1
    consolidation: str = "step"
    hold: HoldGate = field(default_factory=HoldGate)
    loss: str | Loss = "squared_error"
    feedback_gain: float = 0.5
    leak: float = 0.0
    difference: bool = False
    decoder: str = "sigma"
    normalize_feedback: bool = False

    def __post_init__(self):
        if not self.dt > 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
            v = getattr(self, name)
            if v < 0 or (0 < v < self.dt * (1 - 1e-12)):
                raise ValueError(f"{name} must be 0 (algebraic) or ≥ dt = {self.dt}, got {v}")
        if self.feedback_rule not in FEEDBACK_RULES:
            raise ValueError(
                f"unknown feedback_rule {self.feedback_rule!r};"
                f" allowed: {', '.join(FEEDBACK_RULES)}"
            )
        if self.decoder not in FEEDBACK_DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; allowed:"
                             f" {', '.join(FEEDBACK_DECODERS)}")
        if self.decoder == "slope_gated" and not self.difference:
            raise ValueError("decoder 'slope_gated' needs difference = True")
        if self.normalize_feedback and self.feedback_rule != "mirror":
            raise ValueError("normalize_feedback needs feedback_rule 'mirror'")

    def rate(self, name: str) -> float:
        """k = dt/τ for a time constant, 1 for an algebraic variable."""
        tau = getattr(self, name)
        return 1.0 if tau == 0 else self.dt / tau


@dataclass
class CDTPState:
    """State of a batch of circuits; lists are indexed by layer as in the paper."""

    net: Network
    a: list
    h: list
    u: list
    tau: list
    batch: int = 1
    step_index: int = 0
    dtau: list = field(default_factory=list)
    e: list = field(default_factory=list)
    de: list = field(default_factory=list)
    fb: list = field(default_factory=list)
    m: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    feedback: list = field(default_factory=list)
    fb_ref: list = field(default_factory=list)
    w_drive: list = field(default_factory=list)
    mirror: list = field(default_factory=list)
    fro0: list = field(default_factory=list)

    @classmethod
    def initial(cls, net: Network, batch: int = 1) -> CDTPState:
        """All activities zero (the circuit's initial condition); weights copied from ``net``.

        Weights carry a leading batch axis so that a batch of circuits learns independently.
        """
        L = net.depth

        def zeros(l):
            return np.zeros((batch, net.sizes[l]))

        state = cls(
            net=net,
            a=[zeros(l) for l in range(L + 1)],
            h=[None] + [zeros(l) for l in range(1, L + 1)],
            u=[None, None] + [zeros(l) for l in range(2, L + 1)],
            tau=[None] + [zeros(l) for l in range(1, L + 1)],
            batch=batch,
        )
        state.weights = [None] + [
            np.repeat(net.weights[l][None], batch, axis=0) for l in range(1, L + 1)
        ]
        state.feedback = [None, None] + [
            np.repeat(net.feedback[l][None], batch, axis=0) for l in range(2, L + 1)
        ]
        state.dtau = [None] + [zeros(l) for l in range(1, L + 1)]
        state.e = [None] + [zeros(l) for l in range(1, L + 1)]
        state.de = [None] + [zeros(l) for l in range(1, L + 1)]
        state.fb_ref = [None] + [zeros(l) for l in range(1, L + 1)]
        state.w_drive = [None] + [zeros(l) for l in range(1, L + 1)]
        return state

    @classmethod
    def of_networks(cls, nets: list) -> CDTPState:
        """A batch of circuits of the same sizes, circuit k starting from ``nets[k]``: its own
        weights, feedback weights and ``feedback.normalize`` reference
        (:func:`feedback_norm_reference`: the one ``nets[k]`` carries, else its weights')."""
        if len({tuple(n.sizes) for n in nets}) != 1:
            raise ValueError("CDTPState.of_networks: the networks' layer sizes differ: "
                             + ", ".join(str(list(n.sizes)) for n in nets))
        state = cls.initial(nets[0], len(nets))
        L = nets[0].depth
        for l in range(1, L + 1):
            state.weights[l] = np.stack([n.weights[l] for n in nets])
            if l >= 2:
                state.feedback[l] = np.stack([n.feedback[l] for n in nets])
        refs = [feedback_norm_reference(n) for n in nets]
        state.fro0 = [None, None] + [np.array([[r[l]] for r in refs]) for l in range(2, L + 1)]
        return state


def parameters_of(circuit, dt: float) -> CDTPParameters:
    """The map's parameters for a :class:`cdtp.model.circuit.CircuitConfig` run at step ``dt``."""
    return CDTPParameters(
        dt=dt, tau_h=circuit.tau_h, tau_a=circuit.tau_a, tau_u=circuit.tau_u,
        tau_tau=circuit.tau_tau, eta_w=circuit.eta_w, eta_w_hidden=circuit.eta_w_hidden,
        eta_omega=circuit.eta_omega,
        beta=circuit.beta, feedback_rule=circuit.feedback_rule, influence=circuit.influence,
        influence_eps=circuit.influence_eps, loss=circuit.loss, hold=circuit.hold,
        feedback_gain=circuit.feedback_gain, leak=circuit.leak, difference=circuit.difference,
        decoder=circuit.feedback_decoder, normalize_feedback=circuit.normalize_feedback,
        consolidation=circuit.consolidation,
    )


def decoder_input(sigma, v: np.ndarray, bias: bool, decoder: str) -> np.ndarray:
    """What Ω_l multiplies for the activity ``v`` of layer l: σ̃(v), or ṽ itself with the
    ``slope_gated`` decoder (its receiving neurons apply σ′)."""
    return with_bias(v if decoder == "slope_gated" else sigma(v), bias)


def mirror_gains(weights: list, sizes, gain: float) -> list:
    """c_l = gain / ‖W_l‖₂² of each projection's linear part (no bias column), for l ≥ 2.

    ``weights`` are W_l matrices, or batches of them (leading axis); the result has one value
    per circuit, shaped to multiply a batch of feedback updates. With Ω_l = c_l W_lᵀ the
    inversion loop's matrix c_l W_l D W_lᵀ D′ has eigenvalues in [0, gain] at the start.
    """
    norms = [np.array([np.linalg.norm(m, 2) for m in w]) for w in _linear_parts(weights, sizes)]
    return [None, None] + [(gain / n**2)[:, None, None] for n in norms]


def _linear_parts(weights: list, sizes) -> list:
    """W_l without its bias column, with a leading batch axis, for l ≥ 2."""
    out = []
    for l in range(2, len(sizes)):
        w = np.asarray(weights[l])
        out.append((w[None] if w.ndim == 2 else w)[:, :, : sizes[l - 1]])
    return out


FEEDBACK_NORM_REFERENCE = "feedback_norm_reference"


def feedback_norm_reference(net: Network) -> list:
    """‖W_l(0)‖_F² (l ≥ 2) of ``feedback.normalize``, the reference its normalization units
    divide by: kept in ``net.meta`` by :func:`cdtp.brian.engine.initial_network`, so that a run
    restarted from later weights of the same circuit keeps its start's reference; else the
    squared norms of ``net``'s own weights."""
    ref = net.meta.get(FEEDBACK_NORM_REFERENCE)
    if ref is not None:
        return list(ref)
    return [None, None] + [float(v[0, 0]) for v in squared_norms(net.weights, net.sizes)[2:]]


def normalized_feedback(net: Network, reference: list | None = None) -> Network:
    """A copy of ``net`` whose Ω_l are what ``feedback.normalize`` sends down at its current
    weights: Ω_l ‖W_l(0)‖_F² / ‖W_l‖_F² (``reference``: the ‖W_l(0)‖_F² list; default
    :func:`feedback_norm_reference`). For the analyses that read Ω_l as the circuit's feedback
    (alignment, the solved-loop reference)."""
    ref = feedback_norm_reference(net) if reference is None else reference
    now = squared_norms(net.weights, net.sizes)
    out = net.copy()
    for l in range(2, net.depth + 1):
        out.feedback[l] = net.feedback[l] * (ref[l] / float(now[l][0, 0]))
    return out


def squared_norms(weights: list, sizes) -> list:
    """‖W_l‖_F² of each projection's linear part (no bias column), for l ≥ 2, shaped (batch, 1)
    like :func:`mirror_gains`' values: what the normalization unit of layer l sums."""
    return [None, None] + [np.sum(w**2, axis=(1, 2))[:, None]
                           for w in _linear_parts(weights, sizes)]


def resolve_consolidation(params: CDTPParameters, schedule: Schedule) -> CDTPParameters:
    """``params`` with ``plasticity_every`` set to the steps of one γ cycle of ``schedule`` when
    ``consolidation`` is ``cycle`` (the checks of the Brian2 build); unchanged otherwise.
    :func:`step` refuses unresolved parameters."""
    if params.consolidation != "cycle":
        return params
    every = consolidation_period([schedule], params.dt)
    if params.plasticity_every not in (1, every):
        raise ValueError(f"plasticity_every = {params.plasticity_every} conflicts with"
                         f" consolidation 'cycle' ({every} steps per γ cycle)")
    return replace(params, plasticity_every=every)


def pending_weights(state: CDTPState, params: CDTPParameters, l: int, k: int = 0) -> tuple:
    """W_l and Ω_l (None for l = 1) of circuit ``k`` with the drive summed since the last
    update of a slower plasticity clock added as that update will apply it (what the Brian2
    read-out reports; :func:`cdtp.brian.readout.feedforward_matrix`). With consolidation
    ``cycle`` the summed drive is the model's state, not a deferred update: the weights are
    returned as they are."""
    net = state.net
    w = state.weights[l][k].copy()
    om = None if l < 2 else state.feedback[l][k].copy()
    eta = eta_w_of_layer(params.eta_w, params.eta_w_hidden, l, net.depth)
    if (params.plasticity_every > 1 and eta != 0.0 and state.step_index > 0
            and params.consolidation == "step"):
        sa = with_bias(net.sigma(state.a[l - 1][k]), net.bias)
        delta = eta * np.outer(state.w_drive[l][k], sa / (sa @ sa + params.norm_eps))
        w += delta
        if om is not None and params.feedback_rule == "mirror":
            n_pre, n_post = net.sizes[l - 1], net.sizes[l]
            om[:n_pre, :n_post] += state.mirror[l][k].ravel()[0] * delta[:, :n_pre].T
    return w, om


def _change_weights(state: CDTPState, params: CDTPParameters, l: int, delta: np.ndarray) -> None:
    """W_l += delta, and with the ``mirror`` rule Ω_l += c_l deltaᵀ (the linear part)."""
    state.weights[l] += delta
    if params.feedback_rule == "mirror" and l >= 2:
        n_pre, n_post = state.net.sizes[l - 1], state.net.sizes[l]
        state.feedback[l][:, :n_pre, :n_post] += state.mirror[l] * np.swapaxes(
            delta[:, :, :n_pre], 1, 2)


def _matvec(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per-circuit W s for a batch: (B, n, m) × (B, m) → (B, n)."""
    return np.einsum("bij,bj->bi", w, s)


def step(
    state: CDTPState,
    params: CDTPParameters,
    gates: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
) -> CDTPState:
    """Advance ``state`` by one time step in place (see the module docstring for the stages).

    Parameters
    ----------
    gates : dict
        ``gamma``, ``hold``, ``plasticity`` for this step, each an array of length L + 1
        (index = layer), or of shape (batch, L + 1) for a batch with per-circuit schedules.
    x, y : ndarray
        The clamped input (batch, n_0) and label (batch, n_L).
    """
    net = state.net
    L = net.depth
    sigma = net.sigma
    bias = net.bias
    loss = get_loss(params.loss)
    k_h, k_a = params.rate("tau_h"), params.rate("tau_a")
    k_u, k_tau = params.rate("tau_u"), params.rate("tau_tau")

    def gate(name, l):
        g = np.asarray(gates[name], dtype=float)
        return g[..., l][..., None] if g.ndim == 2 else g[l]

    a, h, u, tau = state.a, state.h, state.u, state.tau
    if params.consolidation == "cycle" and params.plasticity_every == 1:
        raise ValueError("consolidation 'cycle' needs plasticity_every = the steps of a γ cycle:"
                         " pass the parameters through resolve_consolidation (run does)")
    if params.feedback_rule == "mirror" and not state.mirror:
        # the mirror gains are fixed by the weights the run starts from
        state.mirror = mirror_gains(state.weights, net.sizes, params.feedback_gain)
    if params.normalize_feedback and not state.fro0:
        # the reference of the normalization units: the one the state's network carries
        # (feedback_norm_reference), else each circuit's weights at its first step. A batch of
        # different networks that carry one is made by CDTPState.of_networks, which sets it
        ref = net.meta.get(FEEDBACK_NORM_REFERENCE)
        state.fro0 = (squared_norms(state.weights, net.sizes) if ref is None else
                      [None, None] + [np.full((state.batch, 1), ref[l])
                                      for l in range(2, L + 1)])
    if params.plasticity_every > 1 and state.step_index % params.plasticity_every == 0:
        # the slower plasticity clock: the drive summed since its last update, with the
        # presynaptic activities of the step before (still this cycle's input at a cycle
        # boundary), then a new sum
        for l in range(1, L + 1):
            eta = eta_w_of_layer(params.eta_w, params.eta_w_hidden, l, L)
            if eta != 0.0:
                sa = with_bias(sigma(a[l - 1]), bias)
                n_prev = sa / (np.sum(sa * sa, axis=1, keepdims=True) + params.norm_eps)
                _change_weights(state, params, l,
                                (eta * state.w_drive[l])[:, :, None] * n_prev[:, None, :])
            state.w_drive[l] = np.zeros_like(state.w_drive[l])
    a[0] = np.asarray(x, dtype=float).reshape(state.batch, -1)

    # -- stage 1: feedback synapses, fb_{l-1} = g_l(u_l) ------------------------------------
    gated = params.decoder == "slope_gated"
    su = [None, None] + [decoder_input(sigma, u[l], bias, params.decoder)
                         for l in range(2, L + 1)]
    fb = [None] + [_matvec(state.feedback[l + 1], su[l + 1]) for l in range(1, L)] + [None]
    if params.normalize_feedback:  # the normalization units' divisive gain
        sq = squared_norms(state.weights, net.sizes)
        fb = [None] + [fb[l] * (state.fro0[l + 1] / sq[l + 1]) for l in range(1, L)] + [None]

    # -- stage 2: targets (Eq 49 + output nudge) and feedback plasticity ----------------------
    m = [a[0]] + [None] * L
    dtau = [None] * (L + 1)
    for l in range(1, L):
        g_above = gate("gamma", l + 1)
        if params.difference:
            ref = state.fb_ref[l]
            ref += k_a * gate("hold", l + 1) * (fb[l] - ref)
            change = fb[l] - ref
            if gated:
                change = sigma.derivative(a[l]) * change
            m[l] = a[l] + (1.0 - g_above) * change
        else:
            m[l] = g_above * a[l] + (1.0 - g_above) * fb[l]
        dtau[l] = k_tau * (m[l] - tau[l])
        tau[l] = tau[l] + dtau[l]
    g_top = gate("gamma", L)
    drive = a[L] - (1.0 - g_top) * params.beta * loss.gradient(a[L], y)
    dtau[L] = k_tau * (drive - tau[L])
    tau[L] = tau[L] + dtau[L]
    if params.feedback_rule in ("delta1", "delta2") and params.eta_omega != 0.0:
        for l in range(2, L + 1):
            if params.feedback_rule == "delta2":
                err = a[l - 1] - fb[l - 1]
            elif params.difference:
                # Δ1 = γ Δ2 (Prop 8), as with the paper's m_{l−1}
                err = gate("gamma", l) * (a[l - 1] - fb[l - 1])
            else:
                err = m[l - 1] - fb[l - 1]
            state.feedback[l] += params.eta_omega * params.dt * err[:, :, None] * su[l][:, None, :]

    # -- stage 3: feedforward synapses, h_in_l = W_l σ(m_{l-1}) ------------------------------
    h_in = [None] + [_matvec(state.weights[l], with_bias(sigma(m[l - 1]), bias))
                     for l in range(1, L + 1)]

    # -- stage 4: feedforward plasticity -------------------------------------------------------
    if params.influence:
        # e_l = s_l (τ_l − a_l); its increment drives the weights (see the module docstring)
        err_top = np.sum((a[L] - tau[L]) ** 2, axis=1, keepdims=True)
        for l in range(1, L + 1):
            err_l = np.sum((a[l] - tau[l]) ** 2, axis=1, keepdims=True)
            e = err_top / (err_l + params.influence_eps) * (tau[l] - a[l])
            state.de[l] = e - state.e[l]
            state.e[l] = e
    for l in range(1, L + 1):
        eta = eta_w_of_layer(params.eta_w, params.eta_w_hidden, l, L)
        if eta != 0.0:
            drive = state.de[l] if params.influence else dtau[l]
            if params.plasticity_every > 1:  # summed; applied at the start of a step
                state.w_drive[l] = state.w_drive[l] + gate("plasticity", l) * drive
                continue
            sa = with_bias(sigma(a[l - 1]), bias)
            n_prev = sa / (np.sum(sa * sa, axis=1, keepdims=True) + params.norm_eps)
            delta = (eta * gate("plasticity", l) * drive)[:, :, None] * n_prev[:, None, :]
            _change_weights(state, params, l, delta)

    # -- stage 5: state updates (Eqs 46–48 as Euler steps) -------------------------------------
    for l in range(1, L + 1):
        c = gate("hold", l)
        h[l] = h[l] + k_h * (h_in[l] - h[l])
        a[l] = a[l] + k_a * c * (h[l] - a[l])
        if l >= 2:
            loop = u[l] - h[l] - params.leak * (u[l] - a[l])
            u[l] = u[l] + k_u * (tau[l] - u[l] + (1.0 - c) * loop)

    state.dtau, state.fb, state.m = dtau, fb, m
    state.step_index += 1
    return state


def run(
    net: Network,
    params: CDTPParameters,
    schedule: Schedule,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    record_every: int = 1,
    state: CDTPState | None = None,
) -> dict:
    """Run the map for one example per γ cycle.

    Parameters
    ----------
    inputs, labels : ndarray
        (n_cycles, n_0) and (n_cycles, n_L) for one circuit, or (n_cycles, batch, n) for a batch.
    record_every : int
        Record a, h, u, τ every this many steps (0: no traces).

    Returns
    -------
    dict
        ``state`` (final), ``trace`` (dict of lists of arrays (n_records, batch, n_l) per layer),
        ``weights_at_cycle_end`` / ``feedback_at_cycle_end`` (lists per layer of
        (n_cycles, batch, …) arrays), ``gates`` (the sampled schedule).
    """
    inputs = np.asarray(inputs, dtype=float)
    labels = np.asarray(labels, dtype=float)
    if inputs.ndim == 2:
        inputs, labels = inputs[:, None, :], labels[:, None, :]
    n_cycles, batch = inputs.shape[:2]
    L = net.depth
    starts = schedule.cycle_starts(params.dt, n_cycles)
    spc = schedule.whole_period(params.dt)
    params = resolve_consolidation(params, schedule)
    n_steps = int(starts[-1])
    cycle_of = np.searchsorted(starts, np.arange(n_steps), side="right") - 1
    ends = set((starts[1:] - 1).tolist())
    g = schedule.sample(n_steps, params.dt, L, params.hold)
    if state is None:
        state = CDTPState.initial(net, batch)
    names = ("a", "h", "u", "tau")
    trace = {k: [[] for _ in range(L + 1)] for k in names}
    w_end = [[] for _ in range(L + 1)]
    om_end = [[] for _ in range(L + 1)]
    for k in range(n_steps):
        cycle = cycle_of[k]
        step(
            state,
            params,
            {key: g[key][k] for key in ("gamma", "hold", "plasticity")},
            inputs[cycle],
            labels[cycle],
        )
        if record_every and (k % record_every == 0):
            for key in names:
                for l, v in enumerate(getattr(state, key)):
                    if v is not None:
                        trace[key][l].append(v.copy())
        if k in ends:
            for l in range(1, L + 1):
                w_end[l].append(state.weights[l].copy())
                if state.feedback[l] is not None:
                    om_end[l].append(state.feedback[l].copy())
    stack = [np.array(x) if x else None for x in w_end]
    return {
        "state": state,
        "trace": {k: [np.array(x) if x else None for x in v] for k, v in trace.items()},
        "weights_at_cycle_end": stack,
        "feedback_at_cycle_end": [np.array(x) if x else None for x in om_end],
        "gates": g,
        "steps_per_cycle": spc,
    }
