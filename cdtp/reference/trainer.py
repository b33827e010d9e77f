"""Mini-batch training of layered networks by back-propagation or target propagation.

:func:`train` runs one of five methods on a :class:`cdtp.data.tasks.Task` and returns the learning
curves as an :class:`xarray.Dataset` (docs/model.md §5). Every method shares the same outer
loop: the training set is shuffled once per epoch with the run's generator and cut into
mini-batches; all updates are batch averages (the convention of :mod:`cdtp.reference.updates`).

Methods
-------
``"bp"``
    SGD on the back-propagated gradient of the batch-mean loss:
    W_l ← W_l − lr · ∂ℓ/∂W_l (:func:`~cdtp.reference.backprop.backprop_gradients`).
``"dtp1"``, ``"dtp"``  (seed 000)
    Output target τ_L = h_L − β ∂ℓ/∂h_L (Eq 7); lower targets by iterative inversion through the
    learned decoders (see *Inversion* below); every layer, the top one included, moves by
    W_l ← W_l + lr · ΔW_l with the DTP1 update (Eq 13) or the influence-weighted DTP update
    (Eq 43) (:func:`~cdtp.reference.updates.all_layer_updates`). The top layer's target is
    Eq 7, so its DTP1 update is a normalized gradient step; no layer uses back-propagation.
``"difference_tp"``  (Lee et al. 2015)
    τ_L from Eq 7, τ_{l−1} = h_{l−1} + g_l(τ_l) − g_l(h_l)
    (:func:`~cdtp.reference.targets.difference_targets`), and the layer-local delta rule
    W_l ← W_l + lr · (τ_l − h_l) σ̃(h_{l−1})ᵀ (batch-averaged), i.e. a gradient step on
    ½‖f_l(h_{l−1}) − τ_l‖² for every layer. For the top layer this is lr·β times the loss
    gradient step, as in Lee et al.
``"cdtp_recipe"``  (docs/model.md §2.3)
    The circuit's learning recipe with converged loops (:func:`recipe_targets`): leaky
    input-correction targets with difference feedback, DTP1 updates with the normalized
    presynaptic factor, feedback weights mirroring W's changes. Start Ω at the transpose
    (``init_network(..., feedback_init="transpose")``); ``regularization`` is the leak λ.
``"regularized_tp"``  (seed 002, Eqs 1–3, adapted to layers)
    Seed 002 separates an output operation (trained by a gradient step on the loss) from the
    transition layers (trained towards targets). Here the output operation is layer L:
    W_L ← W_L − lr · ∂ℓ/∂W_L. The last hidden layer gets the target
    v_{L−1} = h_{L−1} − β ∂ℓ/∂h_{L−1} (Eq 1, β = γ_h), propagated down through the
    linearized regularized inverses of layers L−1..2 (Eq 2;
    :func:`~cdtp.reference.regularized.linearized_targets` on the sub-network of layers
    1..L−1, regularization ``regularization`` = r), and hidden layers take the gradient step
    W_l ← W_l − lr · ∂/∂W_l ½‖f_l(h_{l−1}) − v_l‖² (Eq 3, γ_θ = lr). No decoders are learned.

Decoders (dtp1, dtp, difference_tp)
    Before each batch's forward-weight update, every Ω_l (l = 2..L) takes one step on the
    regular reconstruction objective ½‖h̃_{l−1} − g_l(f_l(h̃_{l−1}))‖² at noise-corrupted
    forward activities h̃_{l−1} = h_{l−1} + ``decoder_noise`` · ε, ε ~ N(0, I) (Lee et al.'s
    corruption; seed 000, Sec 9.2 recommends this objective). ``decoder_rule="normalized"``
    uses Algorithm 1's rule (:func:`~cdtp.reference.updates.decoder_update_normalized`, rate
    ``decoder_lr``); ``"delta1"`` uses the plain gradient step
    (:func:`~cdtp.reference.updates.decoder_update_delta1` at u = f_l(h̃_{l−1}), times
    ``decoder_lr``). The same noise draw serves all layers of a batch in turn.

Inversion (dtp1, dtp)
    ``inversion="differential"`` (default): per layer, top-down, the output-correction
    iteration of Algorithm 1 / Eq 35, τ_{l−1} ← τ_{l−1} + α (g_l(τ_l) − g_l(f_l(τ_{l−1}))),
    started at the forward activity τ_{l−1} = h_{l−1} and run for ``inversion_iterations``
    steps with step α = ``inversion_step``. Its first step is exactly Lee's difference
    target; later steps drive g_l(f_l(τ_{l−1})) towards g_l(τ_l). Starting at h_{l−1} keeps the
    target a small perturbation of h_{l−1} even when f_l is not injective (n_l < n_{l−1}),
    where Algorithm 1's start g_l(τ_l) would put τ_{l−1} on the decoder's image, far from
    h_{l−1}, whatever the loss. ``inversion="input"`` / ``"output"`` instead use
    :func:`~cdtp.reference.targets.inversion_targets` (converged input correction, Eq 27, the
    circuit's fixed point; or output correction from g_l(τ_l)) with
    ``max_iter=inversion_iterations``; its non-convergence warnings are counted in the
    Dataset (``n_unconverged_inversions`` attr) instead of printed.

Divergence
    After every update the new weights are checked; a non-finite entry raises
    :class:`TrainingDiverged` naming the method, epoch, step and layer. Curves with NaNs are
    never returned.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

import cdtp
from cdtp.data.tasks import Task
from cdtp.model.circuit import FEEDBACK_DECODERS, eta_w_of_layer
from cdtp.model.layers import Network, with_bias
from cdtp.model.losses import get_loss
from cdtp.reference.backprop import activation_gradients, backprop_gradients
from cdtp.reference.cdtp_map import feedback_norm_reference, normalized_feedback
from cdtp.reference.regularized import linearized_targets
from cdtp.reference.targets import (
    difference_targets,
    inversion_targets,
    output_correction,
    output_target,
)
from cdtp.reference.updates import (
    all_layer_updates,
    decoder_update_delta1,
    decoder_update_normalized,
)

__all__ = ["METHODS", "TrainingConfig", "TrainingDiverged", "evaluate", "train"]

METHODS = ("bp", "dtp1", "dtp", "difference_tp", "regularized_tp", "cdtp_recipe")
_TP_WITH_DECODERS = ("dtp1", "dtp", "difference_tp")
_INVERSIONS = ("differential", "input", "output")
_DECODER_RULES = ("normalized", "delta1")


class TrainingDiverged(FloatingPointError):
    """A weight became non-finite during training.

    Attributes
    ----------
    method : str
    epoch : int
        1-based epoch in which it happened.
    step : int
        1-based global mini-batch step.
    layer : int
        Layer index l of the offending W_l (or Ω_l, see ``what``).
    what : str
        ``"W"`` (feedforward) or ``"Omega"`` (feedback).
    """

    def __init__(self, method: str, epoch: int, step: int, layer: int, what: str = "W"):
        self.method, self.epoch, self.step, self.layer, self.what = method, epoch, step, layer, what
        super().__init__(
            f"{method} training diverged: {what}_{layer} became non-finite in epoch {epoch} "
            f"(step {step}); lower the learning rate (or β) or check the inputs"
        )


@dataclass(frozen=True)
class TrainingConfig:
    """Resolved hyper-parameters of one run (validated; stored in the Dataset's attrs).

    See :func:`train` for the meaning of each field.
    """

    method: str
    epochs: int
    batch_size: int
    lr: float
    beta: float
    decoder_lr: float
    decoder_noise: float
    decoder_rule: str
    inversion: str
    inversion_iterations: int
    inversion_step: float
    regularization: float
    seed: int | None
    eval_every: int
    recipe_decoder: str = "sigma"
    hidden_lr: float | None = None
    recipe_normalize: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        for name in ("epochs", "batch_size", "eval_every", "inversion_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "beta", "decoder_lr", "inversion_step", "regularization"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not np.isfinite(self.decoder_noise) or self.decoder_noise < 0:
            raise ValueError(
                f"decoder_noise must be a finite number >= 0, got {self.decoder_noise}"
            )
        if self.hidden_lr is not None:
            if self.method not in ("bp", "cdtp_recipe"):
                raise ValueError(f"hidden_lr is a setting of bp and cdtp_recipe (the circuit's"
                                 f" eta_w_hidden), not of {self.method!r}")
            if not np.isfinite(self.hidden_lr) or self.hidden_lr < 0:
                raise ValueError(f"hidden_lr must be a finite number >= 0, got"
                                 f" {self.hidden_lr!r}")
        if self.recipe_normalize and self.method != "cdtp_recipe":
            raise ValueError(f"recipe_normalize is a setting of cdtp_recipe (the circuit's"
                             f" feedback.normalize), not of {self.method!r}")
        if self.recipe_decoder not in FEEDBACK_DECODERS:
            raise ValueError(f"unknown recipe_decoder {self.recipe_decoder!r};"
                             f" allowed: {', '.join(FEEDBACK_DECODERS)}")
        if self.decoder_rule not in _DECODER_RULES:
            raise ValueError(
                f"unknown decoder_rule {self.decoder_rule!r}; allowed: {', '.join(_DECODER_RULES)}"
            )
        if self.inversion not in _INVERSIONS:
            raise ValueError(
                f"unknown inversion {self.inversion!r}; allowed: {', '.join(_INVERSIONS)}"
            )

    def as_attrs(self) -> dict:
        """Hyper-parameters as netCDF-safe global attributes (None becomes "none")."""
        return {k: ("none" if v is None else v) for k, v in self.__dict__.items()}


def evaluate(net: Network, task: Task) -> dict:
    """Mean losses (and accuracies, for classification) of ``net`` on both splits.

    Returns
    -------
    dict
        ``train_loss``, ``test_loss`` and, when the task has labels, ``train_accuracy`` and
        ``test_accuracy`` (fractions in [0, 1]).
    """
    loss = get_loss(task.loss)
    out = {}
    for split in ("train", "test"):
        h_L = net.forward(getattr(task, f"x_{split}"))[-1]
        with np.errstate(all="ignore"):
            out[f"{split}_loss"] = float(np.mean(loss.value(h_L, getattr(task, f"y_{split}"))))
        if task.is_classification:
            labels = getattr(task, f"labels_{split}")
            out[f"{split}_accuracy"] = float(np.mean(loss.predict(h_L) == labels))
    return out


def _sub_network(net: Network, depth: int) -> Network:
    """Layers 0..depth of ``net`` as a Network sharing the weight arrays (no copy)."""
    return Network(
        sizes=net.sizes[: depth + 1],
        weights=net.weights[: depth + 1],
        feedback=net.feedback[: depth + 1],
        sigma=net.sigma,
        bias=net.bias,
    )


def _differential_inversion_targets(net: Network, h, tau_L, iterations: int, step: float):
    """Targets by Eq 35 started at h_{l−1}, ``iterations`` steps of size ``step`` (module doc).

    Uses :func:`~cdtp.reference.targets.output_correction` with the decoder scaled by α,
    since x + α(g(τ) − g(f(x))) is Eq 35 for the decoder α·g.
    """
    L = net.depth
    taus: list = [None] * (L + 1)
    taus[L] = tau_L
    for l in range(L, 1, -1):
        res = output_correction(
            lambda x, l=l: net.f(l, x),
            lambda y, l=l: step * net.g(l, y),
            taus[l],
            x0=h[l - 1],
            max_iter=iterations,
            tol=0.0,
        )
        taus[l - 1] = res.tau_x
    return taus


def _delta_rule(net: Network, h, taus, l: int) -> np.ndarray:
    """(τ_l − h_l) σ̃(h_{l−1})ᵀ, batch-averaged: −∂/∂W_l of ½‖f_l(h_{l−1}) − τ_l‖²."""
    pre = with_bias(net.sigma(h[l - 1]), net.bias)
    return (taus[l] - h[l]).T @ pre / pre.shape[0]


def _train_decoders(net: Network, h, cfg: TrainingConfig, rng: np.random.Generator):
    for l in range(2, net.depth + 1):
        noisy = h[l - 1]
        if cfg.decoder_noise > 0:
            noisy = noisy + cfg.decoder_noise * rng.standard_normal(noisy.shape)
        out = net.f(l, noisy)
        if cfg.decoder_rule == "normalized":
            d = decoder_update_normalized(net, l, noisy, out, rate=cfg.decoder_lr)
        else:
            d = cfg.decoder_lr * decoder_update_delta1(net, l, noisy, out)
        net.feedback[l] = net.feedback[l] + d


def _step(net: Network, x, y, loss, cfg: TrainingConfig, rng, counters: dict) -> list:
    """One mini-batch step; returns the feedforward weight changes [None, ΔW_1, …]."""
    L = net.depth
    if cfg.method == "bp":
        grads = backprop_gradients(net, x, y, loss)
        return [None] + [-eta_w_of_layer(cfg.lr, cfg.hidden_lr, l, L) * grads[l]
                         for l in range(1, L + 1)]
    if cfg.method == "cdtp_recipe":
        return _recipe_step(net, x, y, loss, cfg, counters)
    h = net.forward(x)
    if cfg.method == "regularized_tp":
        deltas = activation_gradients(net, h, y, loss)
        dw: list = [None] * (L + 1)
        dw[L] = -cfg.lr * (deltas[L].T @ with_bias(net.sigma(h[L - 1]), net.bias)) / len(x)
        if L >= 2:
            v = h[L - 1] - cfg.beta * deltas[L - 1]  # seed 002, Eq 1, on the last hidden layer
            taus = linearized_targets(_sub_network(net, L - 1), h[:L], v, cfg.regularization)
            for l in range(1, L):
                dw[l] = cfg.lr * _delta_rule(net, h, taus, l)
        return dw
    _train_decoders(net, h, cfg, rng)
    tau_L = output_target(h[L], y, loss, cfg.beta)
    if cfg.method == "difference_tp":
        taus = difference_targets(net, h, tau_L)
        return [None] + [cfg.lr * _delta_rule(net, h, taus, l) for l in range(1, L + 1)]
    if cfg.inversion == "differential":
        taus = _differential_inversion_targets(
            net, h, tau_L, cfg.inversion_iterations, cfg.inversion_step
        )
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            taus = inversion_targets(
                net, h, tau_L, method=cfg.inversion, max_iter=cfg.inversion_iterations
            )
        counters["unconverged"] += sum(issubclass(w.category, RuntimeWarning) for w in caught)
    updates = all_layer_updates(net, h, taus, method=cfg.method)
    return [None] + [cfg.lr * u for u in updates[1:]]


def recipe_targets(net: Network, x, y, loss, beta: float, leak: float,
                   max_iter: int = 1000, rate: float = 0.5,
                   decoder: str = "sigma") -> tuple[list, list, int]:
    """Targets of the circuit's learning recipe (docs/model.md §2.3) with its loops converged.

    Output target τ_L = h_L − β ∂ℓ/∂h_L (Eq 7); top-down, the leaky input-correction loop of
    layer l with difference feedback, u ← u + k [τ_l − f_l(h_{l−1} + g_l(u) − g_l(h_l))
    − λ (u − h_l)] from u = h_l, until its increment is below 1e-10 (or ``max_iter`` steps),
    gives τ_{l−1} = h_{l−1} + g_l(u) − g_l(h_l). λ is ``leak``; k is ``rate``, the circuit's
    loop rate dt/τ_u (0.5 in the recipe). The fixed point does not depend on k, whether the
    iteration reaches it does: at k = 1 the loop stops contracting once training has grown
    ‖W‖ (measured: after one pass of the teacher_classes task the k = 1 targets point away
    from backprop's, > 90°, where the circuit's own settle).

    ``decoder="slope_gated"`` replaces g_l(u) − g_l(h_l) by σ′(h_{l−1}) ⊙ Ω_l (u − h_l) (the
    circuit's ``feedback.decoder``; Ω_l's bias column cancels in the difference).

    Returns
    -------
    h : list
        The forward activities h_0..h_L, each (batch, n_l).
    taus : list
        τ_1..τ_L (index 0 is ``None``).
    unconverged : int
        How many loops reached ``max_iter`` without converging.
    """
    L = net.depth
    h = net.forward(x)
    taus: list = [None] * (L + 1)
    taus[L] = output_target(h[L], y, loss, beta)
    unconverged = 0
    if decoder not in FEEDBACK_DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; allowed: {', '.join(FEEDBACK_DECODERS)}")
    for l in range(L, 1, -1):
        if decoder == "slope_gated":
            omega = net.feedback[l][:, : net.sizes[l]]
            slope = net.sigma.derivative(h[l - 1])

            def change(u, omega=omega, slope=slope, h_l=h[l]):
                return slope * ((u - h_l) @ omega.T)
        else:
            ref = net.g(l, h[l])

            def change(u, l=l, ref=ref):
                return net.g(l, u) - ref
        u = h[l].copy()
        for _ in range(max_iter):
            du = rate * (taus[l] - net.f(l, h[l - 1] + change(u)) - leak * (u - h[l]))
            u = u + du
            if np.max(np.abs(du)) < 1e-10:
                break
        else:
            unconverged += 1
        taus[l - 1] = h[l - 1] + change(u)
    return h, taus, unconverged


def _recipe_step(net: Network, x, y, loss, cfg: TrainingConfig, counters: dict) -> list:
    """The circuit's learning recipe (docs/model.md §2.3) with its loops run to convergence.

    Targets from :func:`recipe_targets` (λ = ``regularization``, loop rate
    ``inversion_step``, at most ``inversion_iterations`` loop steps, non-convergence counted);
    every layer moves by
    lr (τ_l − h_l) σ̃(h_{l−1})ᵀ / ‖σ̃(h_{l−1})‖² (DTP1 with the circuit's normalized presynaptic
    factor), and Ω_l by the transpose of that change times c_l, the ratio Ω_l / W_lᵀ of the
    transpose start (the ``mirror`` rule). This is what the circuit computes per γ cycle when
    its loops settle within the feedback phase, so it is the circuit's reference at
    convergence. With ``hidden_lr`` the hidden layers (l < L) move by that step instead of lr
    (the circuit's ``eta_w_hidden``). With ``recipe_normalize`` the loops use Ω_l scaled by
    ‖W_l(0)‖_F² / ‖W_l‖_F² (the circuit's ``feedback.normalize``; W_l(0): the weights of the
    first step, or the reference ``net.meta`` carries).
    """
    L = net.depth
    if cfg.recipe_normalize and "norm_reference" not in counters:
        counters["norm_reference"] = feedback_norm_reference(net)
    if "mirror" not in counters:
        ratios = [None, None]
        for l in range(2, L + 1):
            w = net.weights[l][:, : net.sizes[l - 1]]
            ratios.append(float(np.sum(net.feedback[l][:, : net.sizes[l]] * w.T) / np.sum(w**2)))
        counters["mirror"] = ratios
    if cfg.recipe_normalize:
        loops = normalized_feedback(net, counters["norm_reference"])
    else:
        loops = net
    h, taus, unconverged = recipe_targets(loops, x, y, loss, cfg.beta, cfg.regularization,
                                          cfg.inversion_iterations, cfg.inversion_step,
                                          cfg.recipe_decoder)
    counters["unconverged"] += unconverged
    dw: list = [None]
    for l in range(1, L + 1):
        pre = with_bias(net.sigma(h[l - 1]), net.bias)
        pre = pre / np.sum(pre * pre, axis=1, keepdims=True)
        dw.append(eta_w_of_layer(cfg.lr, cfg.hidden_lr, l, L) * (taus[l] - h[l]).T @ pre
                  / len(x))
    for l in range(2, L + 1):
        n_pre, n_post = net.sizes[l - 1], net.sizes[l]
        net.feedback[l][:, :n_post] += counters["mirror"][l] * dw[l][:, :n_pre].T
    return dw


def _seed_attr(seed) -> int | None:
    if isinstance(seed, np.random.Generator):
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or a Generator, got {seed!r}")
    return int(seed)


_VARIABLES = {
    "train_loss": ("mean training loss over the whole training set", "1"),
    "test_loss": ("mean test loss", "1"),
    "train_accuracy": ("training-set classification accuracy", "1"),
    "test_accuracy": ("test-set classification accuracy", "1"),
    "wall_time": ("cumulative training wall-clock time (evaluation excluded)", "s"),
}


def train(
    net: Network,
    task: Task,
    method: str,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    beta: float = 0.1,
    decoder_lr: float = 0.5,
    decoder_noise: float = 0.1,
    decoder_rule: str = "normalized",
    inversion: str = "differential",
    inversion_iterations: int = 5,
    inversion_step: float = 0.5,
    regularization: float = 1.0,
    seed: int | np.random.Generator = 0,
    eval_every: int = 1,
    recipe_decoder: str = "sigma",
    hidden_lr: float | None = None,
    recipe_normalize: bool = False,
) -> xr.Dataset:
    """Train ``net`` in place on ``task`` by ``method`` and return its learning curves.

    Parameters
    ----------
    net : Network
        Updated in place (pass ``net.copy()`` to keep the original). Sizes must match the task.
    task : Task
    method : {"bp", "dtp1", "dtp", "difference_tp", "regularized_tp"}
        See the module docstring for the exact algorithm of each.
    epochs, batch_size : int
        Passes over the training set, and examples per update (the last batch of an epoch
        may be smaller).
    lr : float
        Multiplies every feedforward update: the SGD step size for ``bp`` and
        ``regularized_tp`` (seed 002's γ_θ), the delta-rule step for ``difference_tp``, the
        factor on ΔW_DTP1 / ΔW_DTP (Eqs 13, 43) for ``dtp1`` / ``dtp`` (1 is the paper's rule
        for a single example; as updates are batch-averaged, larger values are usual).
    beta : float
        β of Eq 7 (τ_L = h_L − β ∂ℓ/∂h_L), or seed 002's γ_h for ``regularized_tp``.
        Unused by ``bp``.
    decoder_lr, decoder_noise, decoder_rule
        Decoder training (dtp1, dtp, difference_tp); see the module docstring.
    inversion, inversion_iterations, inversion_step
        Target inversion for dtp1 / dtp; see the module docstring.
    regularization : float
        r of the regularized inverse (``regularized_tp``).
    seed : int or numpy.random.Generator
        Drives the mini-batch order and the decoder noise (the network's initialization is the
        caller's). The same seed, net and task give identical curves.
    eval_every : int
        Evaluate every ``eval_every`` epochs; epoch 0 (before training) and the last epoch are
        always evaluated.
    recipe_decoder : {"sigma", "slope_gated"}
        The decoder of ``cdtp_recipe`` (the circuit's ``feedback.decoder``;
        :func:`recipe_targets`).
    hidden_lr : float or None
        ``bp`` and ``cdtp_recipe`` only: the step of the hidden layers (l < L; for
        ``cdtp_recipe`` the circuit's ``eta_w_hidden``); None: ``lr`` for every layer.
    recipe_normalize : bool
        ``cdtp_recipe`` only: the loops' feedback divided by ‖W_l‖_F² / ‖W_l(0)‖_F² (the
        circuit's ``feedback.normalize``).

    Returns
    -------
    xarray.Dataset
        Dimension ``epoch`` (completed epochs, starting at 0) with coordinate ``step``
        (mini-batch updates done); variables ``train_loss``, ``test_loss``, ``wall_time`` and,
        for classification, ``train_accuracy``, ``test_accuracy``; each with ``units`` and
        ``long_name``. Global attrs hold the method, every hyper-parameter, the seed, the task,
        the layer sizes, the package version and, for ``inversion`` in {"input", "output"}, the
        number of non-converged layer inversions.

    Raises
    ------
    TrainingDiverged
        When a weight becomes non-finite (names epoch, step and layer).
    ValueError
        On a bad argument or a network whose sizes do not match the task.
    """
    cfg = TrainingConfig(
        method=method,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        beta=float(beta),
        decoder_lr=float(decoder_lr),
        decoder_noise=float(decoder_noise),
        decoder_rule=decoder_rule,
        inversion=inversion,
        inversion_iterations=inversion_iterations,
        inversion_step=float(inversion_step),
        regularization=float(regularization),
        seed=_seed_attr(seed),
        eval_every=eval_every,
        recipe_decoder=recipe_decoder,
        hidden_lr=None if hidden_lr is None else float(hidden_lr),
        recipe_normalize=bool(recipe_normalize),
    )
    if net.sizes[0] != task.n_in or net.sizes[-1] != task.n_out:
        raise ValueError(
            f"network sizes {net.sizes} do not fit task {task.name!r} "
            f"(n_in={task.n_in}, n_out={task.n_out})"
        )
    if method != "bp" and net.depth < 2:
        raise ValueError(f"method {method!r} needs at least two layers, network has {net.depth}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    loss = get_loss(task.loss)
    counters = {"unconverged": 0}
    records = [evaluate(net, task)]
    epochs_done, steps_done, times = [0], [0], [0.0]
    elapsed, step = 0.0, 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(task.n_train)
        for i in range(0, task.n_train, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            step += 1
            with np.errstate(over="ignore", invalid="ignore"):
                dw = _step(net, task.x_train[idx], task.y_train[idx], loss, cfg, rng, counters)
            for l in range(1, net.depth + 1):
                net.weights[l] = net.weights[l] + dw[l]
                if not np.all(np.isfinite(net.weights[l])):
                    raise TrainingDiverged(method, epoch, step, l, "W")
            for l in range(2, net.depth + 1):
                if not np.all(np.isfinite(net.feedback[l])):
                    raise TrainingDiverged(method, epoch, step, l, "Omega")
        elapsed += time.perf_counter() - start
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            record = evaluate(net, task)
            if not all(np.isfinite(v) for v in record.values()):
                bad = next(k for k, v in record.items() if not np.isfinite(v))
                raise TrainingDiverged(method, epoch, step, net.depth, f"{bad} of output h_")
            records.append(record)
            epochs_done.append(epoch)
            steps_done.append(step)
            times.append(elapsed)
    data_vars = {}
    for name in records[0]:
        long_name, units = _VARIABLES[name]
        data_vars[name] = (
            "epoch",
            np.array([r[name] for r in records]),
            {"long_name": long_name, "units": units},
        )
    long_name, units = _VARIABLES["wall_time"]
    data_vars["wall_time"] = ("epoch", np.array(times), {"long_name": long_name, "units": units})
    attrs = {
        **cfg.as_attrs(),
        "task": task.name,
        "loss": task.loss,
        "sizes": json.dumps(list(net.sizes)),
        "nonlinearity": net.sigma.name,
        "bias": int(net.bias),
        "cdtp_version": cdtp.__version__,
        "n_unconverged_inversions": counters["unconverged"],
    }
    return xr.Dataset(
        data_vars,
        coords={
            "epoch": ("epoch", np.array(epochs_done), {"long_name": "epoch", "units": "1"}),
            "step": ("epoch", np.array(steps_done), {"long_name": "mini-batch step", "units": "1"}),
        },
        attrs=attrs,
    )
