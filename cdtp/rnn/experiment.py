"""Train the tanh RNN of :mod:`cdtp.rnn.network` on a sequence task, by TP or BPTT.

A run is described by a frozen :class:`RNNExperimentConfig` (loadable from TOML with
:func:`load_config`) and returns an ``xarray.Dataset`` on an ``iteration`` dimension
(docs/model.md §5): the mean training loss over each evaluation window, held-out accuracy (for the
adding problem, the fraction of held-out sequences solved, see ``adding_success``), held-out
loss, and the training wall time. Every variable has ``units`` and ``long_name``; the resolved
config is stored as JSON in the global attributes.

Step sizes are those of the paper's public code as they are: ``gamma_theta`` is its ``lr``,
``gamma_h`` its ``lr_target``, ``r`` its ``reg`` (the normalization conventions that make this
so are in :mod:`cdtp.rnn.network`). The defaults of the options that the paper's text leaves
open are its code's: orthogonal initialization, PyTorch's paired hidden bias, projection margin
1e-3 with a clamped slope, Eq 3 differentiated through time, the code's marker positions, the
absolute-error success test of the adding problem, PyTorch's ``MSELoss``.

Stop rule (the paper's code): a run stops when its loss is NaN/Inf or exceeds ``stop_factor``
(2) times its initial value. The code checks its training loss on 4 000 fresh mini-batches every
4 000 iterations; here the held-out loss (fresh sequences for the synthetic tasks, the test split
for the digits) is checked at every evaluation against its value before training. A stopped run
(or one whose regularized Gram matrix cannot be factorized) is recorded as diverged, not raised.
"""

from __future__ import annotations

import collections
import json
import math
import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path

import numpy as np
import xarray as xr

from cdtp.rnn import network as rnn
from cdtp.rnn.tasks import (
    ADDING_SUCCESS,
    MARKER_POSITIONS,
    TASKS,
    adding_batch,
    adding_success,
    load_digit_sequences,
    load_mnist1d_sequences,
    temporal_order_batch,
)

__all__ = [
    "DTYPES",
    "METHODS",
    "REGRESSION_LOSSES",
    "TASK_DEFAULT_LENGTH",
    "RNNExperimentConfig",
    "load_config",
    "run",
]

METHODS = ("tp", "bptt")
#: Floating-point precisions of a run (``RNNExperimentConfig.dtype``).
DTYPES = ("float64", "float32")
#: Loss of the adding problem: PyTorch's ``MSELoss`` (paper's code) or ½ (ŷ − y)².
REGRESSION_LOSSES = {"mse": "linear_mse", "half_squared": "linear"}
#: Sequence length used when ``T`` is not given; the digits tasks only allow this length.
TASK_DEFAULT_LENGTH = {
    "temporal_order": 60, "adding": 30, "digits_pixel": 64, "digits_row": 8, "mnist1d": 40
}
_FIXED_LENGTH_TASKS = ("digits_pixel", "digits_row", "mnist1d")
#: Mini-batch losses whose median ``spike_backoff`` compares each update's loss with.
BACKOFF_WINDOW = 200


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


@dataclass(frozen=True)
class RNNExperimentConfig:
    """One training run (seed 002, Sec 4).

    Attributes
    ----------
    task : {"temporal_order", "adding", "digits_pixel", "digits_row", "mnist1d"}
        ``mnist1d``: MNIST-1D read one sample per step (T = 40), the test split held out.
    method : {"tp", "bptt"}
        Target propagation (Eqs 1–3) or back-propagation through time.
    T : int or None
        Sequence length; ``None`` takes :data:`TASK_DEFAULT_LENGTH`. The digits tasks only
        accept their own length (64 pixel by pixel, 8 row by row, 40 for MNIST-1D); the
        synthetic tasks need T ≥ 10 so that the marker ranges are non-empty.
    hidden : int
        Hidden-state dimension p (seed 002: 100).
    batch_size : int
        Mini-batch size (seed 002: 20 for the synthetic tasks, 16 for images).
    iterations : int
        Number of parameter updates.
    gamma_theta : float
        Step size γ_θ of the parameter updates (both methods); the paper's ``lr``.
    gamma_h : float
        Target step size γ_h of Eq 1 (TP only; must still be > 0); the paper's ``lr_target``.
    r : float
        Regularization of the inverse (TP only), r ≥ 0; the paper's ``reg``.
    momentum : float
        Nesterov momentum in [0, 1) (0: plain SGD). The paper's BPTT uses 0.9 on the synthetic
        tasks; its TP uses plain SGD.
    rule : {"linearized", "difference"}
        Eq 2 or the difference formula of Lee et al. (TP only).
    transition_gradient : {"through_time", "local"}
        How Eq 3 is differentiated (TP only): through the recurrence, as the paper's code does,
        or with h_{t−1} held fixed, as its text writes
        (:func:`cdtp.rnn.network.transition_update`).
    margin : float
        The projection π onto tanh's range clips into [−1 + margin, 1 − margin] (TP only);
        see :class:`cdtp.rnn.network.RegularizedInverse`. In (0, 1); the paper's code: 1e-3.
    beyond_margin : {"clamp", "zero"}
        The linearized inverse's slope at a unit beyond the margin (TP only).
    init : {"orthogonal", "scaled"}
        :func:`cdtp.rnn.network.init_params`; the paper's code: orthogonal.
    input_scale : float or None
        Only with ``init = "scaled"``: standard deviation of the entries of W_xh; ``None``
        means 1/√d.
    paired_hidden_bias : bool
        The hidden bias is PyTorch's pair b_ih + b_hh, so it moves by 2γ_θ (the paper's code).
    transition_step_factor : float
        Multiplies γ_θ for the transition parameters W_xh, W_hh, b_h (> 0; 1 in the paper).
        Set to γ_h for "step-matched BPTT": the step sizes that TP's direction effectively
        has when its targets vanish within a few steps (then TP's transition direction is
        about γ_h times the BPTT gradient; benchmarks/RNN_TP.md).
    transition_step_after_99 : float
        Not in the paper (1: off): from the first evaluation with held-out accuracy
        ≥ ``schedule_from_accuracy`` (0.99 unless set) on, the transition step is multiplied
        by this (> 0). A variant for benchmarks/RNN_TP.md,
        where the solved network's sharper loss makes the paper's step unstable.
    transition_step_decay : float or None
        Not in the paper (``None``: off): a time constant τ in updates. From the first
        evaluation ≥ ``schedule_from_accuracy`` on, the transition step is also multiplied by
        τ / (τ + n), n the updates since that evaluation, so it keeps decreasing
        (Robbins–Monro's 1/n) instead of settling at a new fixed value that the sharpening
        loss can outgrow.
    spike_backoff : float or None
        Not in the paper (``None``: off): a factor k > 1. When an update's mini-batch loss
        exceeds k times the median of the ``BACKOFF_WINDOW`` mini-batch losses before it, the
        transition step is halved, for good; the window then refills before the next halving
        can happen. It reacts to the runaways of the step (benchmarks/RNN_TP.md) from the
        training loss alone, before as well as after the task is solved.
    target_growth_cap : float or None
        Not in the paper (``None``: off; TP only): per example and step, the target displacement
        may grow backwards in time by at most this factor
        (:func:`cdtp.rnn.network.propagate_targets`).
    schedule_from_accuracy : float
        The held-out accuracy whose first evaluation starts ``transition_step_after_99`` and
        ``transition_step_decay`` (in (0, 1]; 0.99 unless set; the ``first_99_iteration``
        attribute stays the first evaluation ≥ 0.99).
    data_cycle : int or None
        ``None`` (default): every update draws a fresh mini-batch. An integer k: the mini-batch
        stream restarts from its seed every k updates, so training sees k fixed mini-batches
        in a fixed order, again and again. The paper's code does this with k = 4 000 on the
        synthetic tasks (it re-seeds its generator each time it resumes a run, which it does in
        chunks of 4 000 iterations): its training set is in effect 4 000 × the batch size
        sequences.
    positions : {"code", "text"}
        Marker positions of the temporal order problem
        (:func:`cdtp.rnn.tasks.temporal_order_marker_range`).
    adding_success : {"absolute", "squared"}
        The adding problem counts a sequence solved if |ŷ − y| < 0.04 (code) or
        (ŷ − y)² < 0.04 (text).
    regression_loss : {"mse", "half_squared"}
        Loss of the adding problem: (ŷ − y)² (PyTorch's ``MSELoss``, the code) or ½ (ŷ − y)².
    clip_norm : float or None
        Not in the paper: scale each update's directions together to a joint norm of at most
        this (:class:`cdtp.rnn.network.SGD`); ``None`` (the paper) does not clip.
    stop_factor : float
        Stop when the held-out loss exceeds this multiple of its initial value (> 1; ``inf``
        disables the rule; NaN/Inf always stops).
    seed : int
        Seeds initialization, mini-batches and the held-out set (independent streams).
    eval_every : int
        Evaluation period in iterations; must divide ``iterations``. The paper: 200.
    eval_size : int
        Held-out sequences for the synthetic tasks (the digits use their fixed test split).
        The paper: 8 000 (drawn afresh at every evaluation; here drawn once).
    dtype : {"float64", "float32"}
        Floating-point precision of the parameters, sequences and recurrences. The paper's code
        runs PyTorch's default, float32; float32 is also about 1.7× faster here (numpy's tanh
        is vectorized for float32 only on AVX2 machines). The readout's loss gradient is
        computed in float64 either way (:mod:`cdtp.model.losses`) and cast back on the update.
    """

    task: str = "temporal_order"
    method: str = "tp"
    T: int | None = None
    hidden: int = 100
    batch_size: int = 20
    iterations: int = 1000
    gamma_theta: float = 0.1
    gamma_h: float = 0.01
    r: float = 1.0
    momentum: float = 0.0
    rule: str = "linearized"
    transition_gradient: str = "through_time"
    margin: float = 1e-3
    beyond_margin: str = "clamp"
    init: str = "orthogonal"
    input_scale: float | None = None
    paired_hidden_bias: bool = True
    transition_step_factor: float = 1.0
    transition_step_after_99: float = 1.0
    transition_step_decay: float | None = None
    schedule_from_accuracy: float = 0.99
    target_growth_cap: float | None = None
    spike_backoff: float | None = None
    data_cycle: int | None = None
    positions: str = "code"
    adding_success: str = "absolute"
    regression_loss: str = "mse"
    clip_norm: float | None = None
    stop_factor: float = 2.0
    seed: int = 0
    eval_every: int = 200
    eval_size: int = 8000
    dtype: str = "float64"

    def __post_init__(self):
        def bad(key, allowed):
            return ValueError(
                f"invalid value for {key!r}: {getattr(self, key)!r}; allowed: {allowed}"
            )

        if self.task not in TASKS:
            raise bad("task", ", ".join(TASKS))
        if self.method not in METHODS:
            raise bad("method", ", ".join(METHODS))
        for key, allowed in (
            ("rule", rnn.TARGET_RULES),
            ("transition_gradient", rnn.TRANSITION_GRADIENTS),
            ("beyond_margin", rnn.BEYOND_MARGIN),
            ("init", rnn.INITS),
            ("positions", MARKER_POSITIONS),
            ("adding_success", ADDING_SUCCESS),
            ("regression_loss", tuple(REGRESSION_LOSSES)),
            ("dtype", DTYPES),
        ):
            if getattr(self, key) not in allowed:
                raise bad(key, ", ".join(allowed))
        if not isinstance(self.paired_hidden_bias, bool):
            raise bad("paired_hidden_bias", "true or false")
        for key in ("hidden", "batch_size", "iterations", "eval_every", "eval_size"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise bad(key, "an integer ≥ 1")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", "an integer ≥ 0")
        if self.T is not None:
            if self.task in _FIXED_LENGTH_TASKS:
                if self.T != TASK_DEFAULT_LENGTH[self.task]:
                    raise bad("T", f"{TASK_DEFAULT_LENGTH[self.task]} (or omitted) for {self.task}")
            elif not _is_int(self.T) or self.T < 10:
                raise bad("T", "an integer ≥ 10 (or omitted)")
        if self.iterations % self.eval_every:
            raise bad("eval_every", f"a divisor of iterations={self.iterations}")
        for key in ("gamma_theta", "gamma_h"):
            v = getattr(self, key)
            if not _is_real(v) or not math.isfinite(v) or v <= 0:
                raise bad(key, "a finite number > 0")
        if not _is_real(self.r) or not math.isfinite(self.r) or self.r < 0:
            raise bad("r", "a finite number ≥ 0")
        if not _is_real(self.margin) or not 0.0 < self.margin < 1.0:
            raise bad("margin", "a number in (0, 1)")
        for key in ("transition_step_factor", "transition_step_after_99"):
            v = getattr(self, key)
            if not _is_real(v) or not math.isfinite(v) or v <= 0:
                raise bad(key, "a finite number > 0")
        tau = self.transition_step_decay
        if tau is not None and not (_is_real(tau) and math.isfinite(tau) and tau > 0):
            raise bad("transition_step_decay", "a finite number > 0 (updates), or omitted")
        kb = self.spike_backoff
        if kb is not None and not (_is_real(kb) and math.isfinite(kb) and kb > 1):
            raise bad("spike_backoff", "a finite number > 1, or omitted")
        cap = self.target_growth_cap
        if cap is not None and not (_is_real(cap) and math.isfinite(cap) and cap > 0):
            raise bad("target_growth_cap", "a finite number > 0, or omitted")
        a = self.schedule_from_accuracy
        if not (_is_real(a) and 0.0 < a <= 1.0):
            raise bad("schedule_from_accuracy", "a number in (0, 1]")
        k = self.data_cycle
        if k is not None and not (_is_int(k) and k >= 1):
            raise bad("data_cycle", "an integer ≥ 1 (updates), or omitted")
        c = self.clip_norm
        if c is not None and not (_is_real(c) and math.isfinite(c) and c > 0):
            raise bad("clip_norm", "a finite number > 0, or omitted")
        if not _is_real(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise bad("momentum", "a number in [0, 1)")
        if not _is_real(self.stop_factor) or not self.stop_factor > 1.0:
            raise bad("stop_factor", "a number > 1 (inf disables the rule)")
        if self.input_scale is not None:
            if self.init != "scaled":
                raise bad("input_scale", "omitted unless init = 'scaled'")
            if (
                not _is_real(self.input_scale)
                or not math.isfinite(self.input_scale)
                or self.input_scale < 0
            ):
                raise bad("input_scale", "a finite number ≥ 0, or omitted")

    @property
    def length(self) -> int:
        """The resolved sequence length."""
        return TASK_DEFAULT_LENGTH[self.task] if self.T is None else int(self.T)

    @classmethod
    def from_mapping(cls, values: Mapping) -> RNNExperimentConfig:
        """Build from a dict, rejecting unknown keys with the list of allowed ones."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a config must be a table of keys, got {type(values).__name__}")
        values = dict(values)
        if values.get("stop_factor") == "inf":  # as written by to_json
            values["stop_factor"] = math.inf
        kind = values.pop("kind", "rnn")  # scenario files say kind = "rnn" for the cdtp command
        if kind != "rnn":
            raise ValueError(f"kind = {kind!r}: an RNN experiment file has kind = 'rnn'")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown config key(s) {', '.join(map(repr, unknown))} "
                f"(values {', '.join(repr(values[k]) for k in unknown)}); "
                f"allowed keys: {', '.join(allowed)}"
            )
        return cls(**values)

    def to_json(self) -> str:
        """The resolved config as JSON (T filled in)."""
        d = asdict(self)
        d["T"] = self.length
        if math.isinf(d["stop_factor"]):
            d["stop_factor"] = "inf"  # JSON has no infinity
        return json.dumps(d, sort_keys=True)


def load_config(path: str | Path) -> RNNExperimentConfig:
    """Read an :class:`RNNExperimentConfig` from a TOML file of top-level keys.

    Errors (unreadable file, TOML syntax, unknown keys, bad values) are raised as ``ValueError``
    whose message starts with the file name.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return RNNExperimentConfig.from_mapping(values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


class _Task:
    """Mini-batch source, held-out set, readout kind and metric for one config."""

    def __init__(self, config: RNNExperimentConfig, data_seed, eval_rng):
        self.config = config
        self._data_seed = data_seed
        self.rng = np.random.default_rng(data_seed)
        self._drawn = 0
        length, task = config.length, config.task
        if task == "temporal_order":
            self.readout, self.n_in, self.n_out = "softmax", 6, 4
            self._draw = lambda rng, n: temporal_order_batch(rng, n, length, config.positions)
        elif task == "adding":
            self.readout = REGRESSION_LOSSES[config.regression_loss]
            self.n_in, self.n_out = 2, 1
            self._draw = lambda rng, n: adding_batch(rng, n, length)
        else:
            if task == "mnist1d":
                digits = load_mnist1d_sequences()
            else:
                digits = load_digit_sequences("pixel" if task == "digits_pixel" else "row")
            self.readout, self.n_in, self.n_out = "softmax", digits.x_train.shape[2], 10
            self._draw = lambda rng, n: digits.batch(rng, n)
            self.x_eval, self.y_eval = digits.x_test, digits.y_test
        if task in ("temporal_order", "adding"):
            self.x_eval, self.y_eval = self._draw(eval_rng, config.eval_size)
        self.dtype = np.dtype(config.dtype)
        self.x_eval = self.x_eval.astype(self.dtype, copy=False)

    def batch(self):
        cycle = self.config.data_cycle
        if cycle is not None and self._drawn and self._drawn % cycle == 0:
            self.rng = np.random.default_rng(self._data_seed)  # the same k batches again
        self._drawn += 1
        x, y = self._draw(self.rng, self.config.batch_size)
        return x.astype(self.dtype, copy=False), y

    def evaluate(self, params: rnn.RNNParams, loss) -> tuple[float, float]:
        """(held-out mean loss, held-out accuracy or adding success fraction)."""
        z = rnn.forward(params, self.x_eval).z
        value = float(np.mean(loss.value(z, self.y_eval)))
        if self.readout != "softmax":
            score = float(np.mean(adding_success(z, self.y_eval, self.config.adding_success)))
        else:
            score = float(np.mean(np.argmax(z, axis=1) == np.argmax(self.y_eval, axis=1)))
        return value, score


def _package_version() -> str:
    try:
        return metadata.version("cdtp")
    except metadata.PackageNotFoundError:
        return "unknown"


def run(config: RNNExperimentConfig, progress=None, monitor=None) -> xr.Dataset:
    """Train one RNN as ``config`` says and return its learning curve.

    Parameters
    ----------
    config : RNNExperimentConfig
    progress : callable, optional
        Called after every evaluation as ``progress(iteration, record)`` with ``record`` a dict
        of that evaluation's ``train_loss``, ``eval_loss``, ``accuracy`` and ``wall_time``
        (lets a long run report, or save, its curve so far).
    monitor : callable, optional
        Called before every update as ``monitor(iteration, params, x, y, loss_value,
        directions, loss)``: the parameters it starts from, its mini-batch, loss and directions,
        and the readout's loss. For diagnostics (benchmarks/rnn_collapse.py); it must not
        modify its arguments; the run is unchanged (no random draws; its time not counted).

    Returns
    -------
    xarray.Dataset
        Dimension ``iteration`` (eval_every, 2·eval_every, …, iterations) with variables
        ``train_loss`` (mean mini-batch loss over the preceding window), ``eval_loss``,
        ``accuracy`` and ``wall_time`` (training time only, evaluation excluded). Global attrs:
        ``config`` (JSON), ``seed``, ``diverged`` (0/1, the stop rule included),
        ``diverged_iteration`` (−1 if none), ``stopped`` (why, or ""), ``initial_eval_loss``,
        ``initial_accuracy`` (before training), ``first_99_iteration`` (first evaluation
        ≥ 0.99, −1 if none), ``cdtp_version``. After a stop every later entry is NaN.
    """
    if not isinstance(config, RNNExperimentConfig):
        raise TypeError(f"config must be an RNNExperimentConfig, got {type(config).__name__}")
    seeds = np.random.SeedSequence(config.seed).spawn(3)
    init_rng, eval_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[2])
    task = _Task(config, seeds[1], eval_rng)
    loss = rnn.readout_loss(task.readout)
    params = rnn.init_params(
        task.n_in,
        config.hidden,
        task.n_out,
        init_rng,
        init=config.init,
        **({"input_scale": config.input_scale} if config.init == "scaled" else {}),
    ).astype(config.dtype)
    optimizer = rnn.SGD(
        config.gamma_theta,
        momentum=config.momentum,
        hidden_bias_factor=2.0 if config.paired_hidden_bias else 1.0,
        transition_factor=config.transition_step_factor,
        clip_norm=config.clip_norm,
    )

    n_eval = config.iterations // config.eval_every
    out = {k: np.full(n_eval, np.nan) for k in ("train_loss", "eval_loss", "accuracy", "wall")}
    diverged_at = -1
    stopped = ""
    elapsed = 0.0
    window = 0.0
    first_99 = -1  # first evaluation ≥ 99 %
    reduced_at = -1  # first evaluation ≥ schedule_from_accuracy (the step variants start there)
    recent, halvings = collections.deque(maxlen=BACKOFF_WINDOW), []  # spike_backoff's
    with np.errstate(all="ignore"):
        initial_loss, initial_score = task.evaluate(params, loss)
        for it in range(1, config.iterations + 1):
            x, y = task.batch()
            start = time.perf_counter()
            try:
                if config.method == "tp":
                    value, directions = rnn.tp_directions(
                        params,
                        x,
                        y,
                        loss,
                        gamma_h=config.gamma_h,
                        r=config.r,
                        rule=config.rule,
                        margin=config.margin,
                        beyond_margin=config.beyond_margin,
                        transition_gradient=config.transition_gradient,
                        growth_cap=config.target_growth_cap,
                    )
                else:
                    value, directions = rnn.bptt_gradients(params, x, y, loss)
                if monitor is not None:
                    pause = time.perf_counter()
                    monitor(it, params, x, y, value, directions, loss)
                    start += time.perf_counter() - pause
                if config.spike_backoff is not None:
                    if (len(recent) == BACKOFF_WINDOW
                            and value > config.spike_backoff * float(np.median(recent))):
                        halvings.append(it)  # a runaway starting: half the step, for good
                        recent.clear()
                    recent.append(value)
                factor = config.transition_step_factor
                if reduced_at >= 0:  # the variants' smaller steps, from their first evaluation
                    factor *= config.transition_step_after_99
                    if config.transition_step_decay is not None:
                        tau = config.transition_step_decay
                        factor = factor * tau / (tau + it - reduced_at)
                optimizer.transition_factor = factor * 0.5 ** len(halvings)
                optimizer.step(params, directions)
                finite = math.isfinite(value) and params.is_finite()
            except np.linalg.LinAlgError:
                finite = False
            elapsed += time.perf_counter() - start
            if not finite:
                diverged_at, stopped = it, "NaN/Inf or unfactorizable Gram matrix"
                break
            window += value
            if it % config.eval_every == 0:
                k = it // config.eval_every - 1
                out["train_loss"][k] = window / config.eval_every
                out["eval_loss"][k], out["accuracy"][k] = task.evaluate(params, loss)
                out["wall"][k] = elapsed
                window = 0.0
                if progress is not None:
                    progress(
                        it,
                        {
                            "train_loss": out["train_loss"][k],
                            "eval_loss": out["eval_loss"][k],
                            "accuracy": out["accuracy"][k],
                            "wall_time": elapsed,
                        },
                    )
                if first_99 < 0 and out["accuracy"][k] >= 0.99:
                    first_99 = it
                if reduced_at < 0 and out["accuracy"][k] >= config.schedule_from_accuracy:
                    reduced_at = it  # the variants' smaller steps from here on (if set)
                if not math.isfinite(out["eval_loss"][k]):
                    diverged_at, stopped = it, "NaN/Inf held-out loss"
                    break
                if out["eval_loss"][k] > config.stop_factor * initial_loss:
                    diverged_at = it
                    stopped = f"held-out loss > {config.stop_factor:g} × its initial value"
                    break

    score_name = (
        f"fraction of held-out sequences with {config.adding_success} error < 0.04"
        if task.readout != "softmax"
        else "held-out classification accuracy"
    )
    loss_name = {
        "softmax": "cross-entropy",
        "linear": "½ squared error",
        "linear_mse": "squared error",
    }[task.readout]
    iteration = np.arange(1, n_eval + 1) * config.eval_every
    ds = xr.Dataset(
        {
            "train_loss": (
                "iteration",
                out["train_loss"],
                {"units": "1", "long_name": f"mean training mini-batch {loss_name}"},
            ),
            "eval_loss": (
                "iteration",
                out["eval_loss"],
                {"units": "1", "long_name": f"held-out {loss_name}"},
            ),
            "accuracy": ("iteration", out["accuracy"], {"units": "1", "long_name": score_name}),
            "wall_time": (
                "iteration",
                out["wall"],
                {"units": "s", "long_name": "cumulative training wall time"},
            ),
        },
        coords={
            "iteration": (
                "iteration",
                iteration,
                {"units": "1", "long_name": "parameter updates"},
            )
        },
        attrs={
            "config": config.to_json(),
            "seed": config.seed,
            "diverged": int(diverged_at > 0),
            "diverged_iteration": diverged_at,
            "stopped": stopped,
            "first_99_iteration": first_99,
            "backoff_iterations": json.dumps(halvings),  # spike_backoff's halvings
            "initial_eval_loss": initial_loss,
            "initial_accuracy": initial_score,
            "cdtp_version": _package_version(),
            "title": f"{config.method.upper()} on {config.task} (T = {config.length})",
        },
    )
    return ds
