"""Declaring a CDTP circuit: a validated, frozen description and its TOML loader.

A circuit file says *what* the circuit is — layer sizes, nonlinearity, time constants, gates,
feedback kind, learning rates, initialization — never how it is simulated (device, dt and
precision are run options of :mod:`cdtp.brian.engine`). Example (``circuits/small.toml``)::

    name = "small"
    sizes = [6, 6, 6, 4]
    nonlinearity = "tanh"

    [time_constants]
    tau_h = "0 ms"        # 0 = algebraic
    tau_a = "1 ms"
    tau_u = "4 ms"
    tau_tau = "0 ms"

    [feedback]
    rule = "delta1"       # delta1 | delta2 | fixed
    init = "pinv"         # random | pinv | regularized_inverse

    [plasticity]
    eta_w = 0.01
    eta_omega = "5 /s"
    beta = 0.1

Every value is checked on load; a bad one raises :class:`ConfigError` naming the file, the key,
the value and what is allowed.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cdtp.model.gating import HOLD_GATES, HoldGate
from cdtp.model.losses import LOSSES
from cdtp.model.nonlinearities import NONLINEARITIES
from cdtp.model.units import UnitError, parse_quantity

__all__ = ["CONSOLIDATIONS", "NEURON_MODELS", "CircuitConfig", "ConfigError", "SpikingParameters",
           "circuit_from_dict", "load_circuit"]

FEEDBACK_RULES = ("delta1", "delta2", "fixed", "mirror")
FEEDBACK_INITS = ("random", "pinv", "regularized_inverse", "transpose", "zeros")
FEEDBACK_DECODERS = ("sigma", "slope_gated")
# when the feedforward weights change (docs/model.md §2.3): every step, or once per γ cycle
CONSOLIDATIONS = ("step", "cycle")
# Brian2 state-update methods of the layer ODEs (docs/model.md §2.4)
INTEGRATION_METHODS = ("euler", "exact", "exponential_euler", "rk4")
# what a unit is: a rate variable, or populations of Poisson neurons (docs/model.md §2.5)
NEURON_MODELS = ("rate", "spiking")


class ConfigError(ValueError):
    """A circuit or scenario file that does not validate."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = source, key
        super().__init__(f"{source}: {key}: {message}")


@dataclass(frozen=True)
class SpikingParameters:
    """The populations of the spiking variant (circuit file ``[spiking]``; docs/model.md
    §2.5). Rates in Hz, times in s.

    Attributes
    ----------
    neurons_per_unit : int
        N, the Poisson neurons of one population: each unit has one population for what it
        sends up (σ(m)) and, above layer 1, one for what it sends down (σ(u)).
    rate_offset, rate_gain : float
        r_0 and r_1 of a neuron's rate r = r_0 + r_1 σ (clipped to [0, 1/dt]); σ = ±1 fires
        at r_0 ± r_1. Only N·r enters the read-out's variance: 100 neurons at 500 Hz read out
        like 1 000 at 50 Hz.
    synapse_tau : float
        τ_s of the exponential synaptic filter that reads the population rate out.
    """

    neurons_per_unit: int = 100
    rate_offset: float = 500.0
    rate_gain: float = 500.0
    synapse_tau: float = 2e-3


@dataclass(frozen=True)
class CircuitConfig:
    """A CDTP circuit (docs/model.md §2). Times in seconds, rates in 1/s.

    Attributes
    ----------
    sizes : tuple of int
        n_0 (input) … n_L (output).
    nonlinearity, leaky_slope : str, float
        σ, and the negative slope when σ is the leaky ReLU.
    bias : bool
        A constant-1 unit in every layer (Algorithm 1's bias).
    loss : str
        ``squared_error`` or ``softmax_cross_entropy``.
    tau_h, tau_a, tau_u, tau_tau : float
        Time constants of Eqs 46–49 in s; 0 makes the variable algebraic.
    hold : HoldGate
        c(γ), hard or smooth.
    feedback_rule : str
        ``delta1`` (Eq 51), ``delta2`` (Eq 52) or ``fixed``.
    feedback_init : str
        Ω at t = 0: ``random``, ``pinv`` (pseudo-inverse of W's linear part),
        ``regularized_inverse`` (seed 002's regularized inverse, see ``regularization``),
        ``zeros``.
    regularization : float
        r of the regularized inverse.
    feedback_gain : float
        Gain of transpose-type feedback: the ``transpose`` init is Ω_l = gain · W_lᵀ / ‖W_l‖₂²
        and the ``mirror`` rule adds the transpose of W_l's update times that same factor.
    normalize_feedback : bool
        ``feedback.normalize``: one normalization unit per layer l ≥ 2 sums the squares of W_l's
        weights and divides the feedback input Ω_l sends down by ‖W_l‖_F² / ‖W_l(0)‖_F², so the
        inversion loop's gain does not grow with ‖W_l‖ while the circuit learns (needs the
        ``mirror`` rule; docs/model.md §2.3).
    leak : float
        λ of the leaky inversion loop (u relaxes by τ − h − λ(u − a) in the feedback phase;
        0 is the paper's Eq 48).
    difference : bool
        Feed back the change of g_l(u_l) since the end of the feedforward phase (a held
        baseline), so targets start at the forward activity.
    feedback_decoder : str
        ``sigma``: g_l(u) = Ω_l σ̃(u), the paper's decoder. ``slope_gated``: Ω_l sums u itself
        and each receiving neuron gates the change of its feedback input by its own slope
        σ′(a_{l−1}) (backprop's placement of σ′; needs ``difference``; docs/model.md §2.3).
    eta_w : float
        η_W (dimensionless; ΔW = η_W p s Δτ nᵀ).
    eta_w_hidden : float or None
        η_W of the hidden layers' feedforward synapses (W_l, l < L) when it differs from the
        output layer's ``eta_w``; ``None`` (the default): every layer learns at ``eta_w``.
        The output step is η_W β and a hidden layer's is η_W β times its loop's gain, so one
        rate cannot set both (benchmarks/LEARNING.md, seventh round).
    consolidation : str
        ``plasticity.consolidation``: ``step`` (default), W changes on every step of the
        plasticity window, as the loops settle (the paper's on-the-fly Eq 50); ``cycle``, each
        neuron sums its drive p_l Δτ_l over the cycle and the synapses apply the sum once, at
        the start of the next cycle (an eligibility trace consolidated at the γ boundary), so
        the loops invert the weights the cycle started with (docs/model.md §2.3).
    eta_omega : float
        η_Ω in 1/s.
    beta : float
        Output nudging strength.
    influence, influence_eps : bool, float
        DTP influence factor s_l and its ε.
    weight_scale, feedback_scale : float
        Initialization scales (see :func:`cdtp.model.layers.init_network`).
    seed : int
        Seed of the initial weights.
    activity_bound : float
        A run stops as diverged when any |a|, |u| or |τ| exceeds this.
    integration_method : str
        Brian2's state-update method for the ODEs of h, a, u, τ and ĝ (``[integration]
        method``): ``euler`` (the reference map's arithmetic), ``exact``,
        ``exponential_euler`` or ``rk4`` (docs/model.md §2.4).
    neurons : str
        ``rate`` (every unit is a rate variable) or ``spiking`` (each unit sends what it
        transmits as the spikes of Poisson populations; docs/model.md §2.5).
    spiking : SpikingParameters
        The populations' size, rates and read-out filter (used when ``neurons = "spiking"``).
    """

    sizes: tuple
    name: str = "circuit"
    nonlinearity: str = "leaky_relu"
    leaky_slope: float = 0.1
    bias: bool = True
    loss: str = "squared_error"
    tau_h: float = 0.0
    tau_a: float = 1e-3
    tau_u: float = 4e-3
    tau_tau: float = 0.0
    hold: HoldGate = field(default_factory=HoldGate)
    feedback_rule: str = "delta1"
    feedback_init: str = "pinv"
    regularization: float = 1e-3
    feedback_gain: float = 0.5
    normalize_feedback: bool = False
    leak: float = 0.0
    difference: bool = False
    feedback_decoder: str = "sigma"
    eta_w: float = 0.01
    eta_w_hidden: float | None = None
    consolidation: str = "step"
    eta_omega: float = 0.0
    beta: float = 0.1
    influence: bool = False
    influence_eps: float = 1e-12
    weight_scale: float = 1.0
    feedback_scale: float = 1.0
    seed: int = 0
    activity_bound: float = 1e3
    integration_method: str = "euler"
    neurons: str = "rate"
    spiking: SpikingParameters = field(default_factory=SpikingParameters)
    source: str = field(default="<dict>", compare=False)

    def __post_init__(self):
        src = self.source
        sizes = self.sizes
        if (
            not isinstance(sizes, list | tuple)
            or len(sizes) < 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)
        ):
            raise ConfigError(
                src, "sizes", f"{sizes!r} is not a list of at least two positive integers"
            )
        object.__setattr__(self, "sizes", tuple(sizes))
        for l in range(2, len(sizes)):
            if self.feedback_init in ("pinv", "regularized_inverse") and sizes[l - 1] < sizes[l]:
                raise ConfigError(
                    src,
                    "sizes",
                    f"layer {l} ({sizes[l]} units) is wider than layer {l - 1} ({sizes[l - 1]}):"
                    " sizes must not increase above the input layer, or the decoder g_l cannot"
                    " invert f_l (Prop 2 needs f_l(g_l(u)) = τ_l to be solvable)",
                )
        _choice(src, "nonlinearity", self.nonlinearity, tuple(NONLINEARITIES))
        _choice(src, "loss", self.loss, tuple(LOSSES))
        _choice(src, "feedback.rule", self.feedback_rule, FEEDBACK_RULES)
        _choice(src, "feedback.init", self.feedback_init, FEEDBACK_INITS)
        _choice(src, "feedback.decoder", self.feedback_decoder, FEEDBACK_DECODERS)
        if self.feedback_decoder == "slope_gated" and not self.difference:
            raise ConfigError(src, "feedback.decoder", "'slope_gated' gates the change of the"
                              " feedback input since the feedforward phase; it needs"
                              " feedback.difference = true")
        if self.feedback_decoder == "slope_gated" and self.neurons == "spiking":
            raise ConfigError(src, "feedback.decoder", "'slope_gated' sends u itself, which"
                              " can be negative, down the feedback synapses; spiking populations"
                              " send rates: use decoder = 'sigma' with neurons = 'spiking'")
        if self.normalize_feedback and self.feedback_rule != "mirror":
            raise ConfigError(src, "feedback.normalize", "true needs feedback.rule = 'mirror'"
                              f" (got {self.feedback_rule!r}): the unit divides the feedback by"
                              " the growth of ‖W_l‖², which only mirrored Ω_l follows")
        if self.consolidation == "cycle" and self.neurons == "spiking":
            raise ConfigError(src, "plasticity.consolidation", "'cycle' is not built for"
                              " neurons = 'spiking'; allowed there: 'step'")
        if self.normalize_feedback and self.neurons == "spiking":
            raise ConfigError(src, "feedback.normalize", "not built for neurons = 'spiking';"
                              " allowed with neurons = 'rate'")
        _choice(src, "plasticity.consolidation", self.consolidation, CONSOLIDATIONS)
        _choice(src, "integration.method", self.integration_method, INTEGRATION_METHODS)
        _choice(src, "neurons", self.neurons, NEURON_MODELS)
        _check_spiking(src, self.spiking)
        if not 0 < self.leaky_slope <= 1:
            raise ConfigError(src, "leaky_slope", f"{self.leaky_slope!r} is not in (0, 1]")
        for name in ("tau_h", "tau_a", "tau_u", "tau_tau"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(
                    src, f"time_constants.{name}", f"{v!r} s: a time constant must be ≥ 0"
                )
        for name in ("eta_w", "eta_omega", "beta", "regularization", "influence_eps",
                     "weight_scale", "feedback_scale", "feedback_gain", "leak"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v < 0:
                raise ConfigError(src, name, f"{v!r} must be a finite number ≥ 0")
        v = self.eta_w_hidden
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not np.isfinite(v) or v < 0):
            raise ConfigError(src, "plasticity.eta_w_hidden", f"{v!r} must be a finite number"
                              " ≥ 0 (or left out: the hidden layers then learn at eta_w)")
        if self.loss == "softmax_cross_entropy" and self.sizes[-1] < 2:
            raise ConfigError(src, "loss", "softmax cross-entropy needs at least 2 output units")
        if not self.activity_bound > 0:
            raise ConfigError(src, "divergence.activity_bound", "must be > 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(src, "seed", f"{self.seed!r} must be an integer ≥ 0")

    @property
    def depth(self) -> int:
        """L, the number of computed layers."""
        return len(self.sizes) - 1

    def eta_w_at(self, l: int) -> float:
        """η_W of the feedforward synapses W_l (l = 1 … L)."""
        return eta_w_of_layer(self.eta_w, self.eta_w_hidden, l, self.depth)

    def to_dict(self) -> dict:
        """A JSON-able dictionary (for Dataset attributes)."""
        d = asdict(self)
        d["sizes"] = list(self.sizes)
        d.pop("source")
        if self.neurons == "rate":
            d.pop("spiking")  # unused: a rate circuit's record stays as it was
        if self.eta_w_hidden is None:
            d.pop("eta_w_hidden")  # likewise: one η_W for every layer
        if not self.normalize_feedback:
            d.pop("normalize_feedback")  # likewise
        if self.consolidation == "step":
            d.pop("consolidation")  # likewise
        return d


def eta_w_of_layer(eta_w: float, eta_w_hidden: float | None, l: int, depth: int) -> float:
    """η_W of W_l: ``eta_w`` for the output layer (l = L) and when ``eta_w_hidden`` is None,
    ``eta_w_hidden`` for the hidden layers."""
    if not 1 <= l <= depth:
        raise ValueError(f"layer {l} is not one of 1 … {depth}")
    return float(eta_w if eta_w_hidden is None or l == depth else eta_w_hidden)


def _check_spiking(source, sp: SpikingParameters) -> None:
    n = sp.neurons_per_unit
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(source, "spiking.neurons_per_unit",
                          f"{n!r} is not allowed; allowed: an integer ≥ 1")
    for key, value, low in (("rate_offset", sp.rate_offset, 0.0),
                            ("rate_gain", sp.rate_gain, None),
                            ("synapse_tau", sp.synapse_tau, None)):
        unit = "s" if key == "synapse_tau" else "Hz"
        ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(
            value) and (value >= low if low is not None else value > 0)
        if not ok:
            allowed = "≥ 0 Hz" if low is not None else f"> 0 {unit}"
            raise ConfigError(source, f"spiking.{key}",
                              f"{value!r} {unit} is not allowed; allowed: a finite value {allowed}")


def _choice(source, key, value, allowed):
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(source, key, f"{value!r} is not allowed{extra}; allowed: "
                          + ", ".join(allowed))


def _check_keys(source, section, data, allowed):
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            where = f"{section}.{key}" if section else key
            raise ConfigError(source, where, f"unknown key{extra}; allowed: "
                              + ", ".join(sorted(allowed)))


_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "seed": "an integer ≥ 0", "count": "an integer ≥ 1"}


def _typed(source, key, value, kind):
    """``value`` checked to be of ``kind``: int, float (finite), bool, str, seed (int ≥ 0)
    or count (int ≥ 1); otherwise a :class:`ConfigError` naming the key and what is allowed."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = {
        "int": is_int,
        "seed": is_int,
        "count": is_int,
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(
            source, key, f"{value!r} has type {type(value).__name__}, expected"
            f" {kind if kind in ('int', 'float', 'bool', 'str') else 'int'}"
            f" (allowed: {_KIND_NAMES[kind]})"
        )
    if kind == "float" and not np.isfinite(value):
        raise ConfigError(source, key, f"{value!r} is not a finite number")
    if (kind == "seed" and value < 0) or (kind == "count" and value < 1):
        raise ConfigError(source, key, f"{value!r} is out of range; allowed: {_KIND_NAMES[kind]}")
    return float(value) if kind == "float" else value


_TOP = {"name": "str", "sizes": None, "nonlinearity": "str", "leaky_slope": "float",
        "bias": "bool", "loss": "str", "seed": "seed", "neurons": "str"}
_SECTIONS = {
    "time_constants": {"tau_h": "time", "tau_a": "time", "tau_u": "time", "tau_tau": "time"},
    "hold_gate": {"kind": "str", "epsilon": "float", "width": "float"},
    "feedback": {"rule": "str", "init": "str", "regularization": "float", "gain": "float",
                 "leak": "float", "difference": "bool", "decoder": "str", "normalize": "bool"},
    "plasticity": {"eta_w": "float", "eta_w_hidden": "float", "consolidation": "str",
                   "eta_omega": "rate",
                   "beta": "float", "influence": "bool", "influence_eps": "float"},
    "init": {"weight_scale": "float", "feedback_scale": "float", "seed": "seed"},
    "divergence": {"activity_bound": "float"},
    "integration": {"method": "str"},
    "spiking": {"neurons_per_unit": "count", "rate_offset": "rate", "rate_gain": "rate",
                "synapse_tau": "time"},
}
_RENAME = {("feedback", "rule"): "feedback_rule", ("feedback", "init"): "feedback_init",
           ("feedback", "gain"): "feedback_gain", ("feedback", "decoder"): "feedback_decoder",
           ("feedback", "normalize"): "normalize_feedback",
           ("integration", "method"): "integration_method"}


def circuit_from_dict(data: dict, source: str = "<dict>") -> CircuitConfig:
    """Validate a nested dictionary (the TOML layout) into a :class:`CircuitConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(source, "<root>", "a circuit must be a table of keys")
    data = dict(data.get("circuit", data)) if set(data) == {"circuit"} else dict(data)
    _check_keys(source, "", data, list(_TOP) + list(_SECTIONS))
    if "sizes" not in data:
        raise ConfigError(source, "sizes", "missing: list the layer sizes, input first")
    kwargs: dict = {"source": source}
    for key, kind in _TOP.items():
        if key in data:
            kwargs[key] = data[key] if kind is None else _typed(source, key, data[key], kind)
    hold, spiking = {}, {}
    for section, spec in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(source, section, f"must be a table ([{section}]), got {table!r}")
        _check_keys(source, section, table, list(spec))
        for key, kind in spec.items():
            if key not in table:
                continue
            where = f"{section}.{key}"
            value = table[key]
            if kind in ("time", "rate"):
                try:
                    value = parse_quantity(value, kind)
                except UnitError as exc:
                    raise ConfigError(source, where, str(exc)) from None
            else:
                value = _typed(source, where, value, kind)
            if section == "hold_gate":
                hold[key] = value
            elif section == "spiking":
                spiking[key] = value
            else:
                kwargs[_RENAME.get((section, key), key)] = value
    if hold:
        if "kind" in hold:
            _choice(source, "hold_gate.kind", hold["kind"], HOLD_GATES)
        try:
            kwargs["hold"] = HoldGate(**hold)
        except ValueError as exc:
            raise ConfigError(source, "hold_gate", str(exc)) from None
    if spiking:
        kwargs["spiking"] = SpikingParameters(**spiking)
    return CircuitConfig(**kwargs)


def read_toml(path: str | Path, what: str) -> dict:
    """The table of a TOML file; a missing file or a syntax error is a :class:`ConfigError`
    naming the file (``what`` says which kind of file was expected)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "<file>", f"no such {what} file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "<file>", f"not a text (UTF-8) {what} file: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "<file>", f"cannot read the {what} file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "<syntax>", f"not valid TOML: {exc}") from None


def load_circuit(path: str | Path) -> CircuitConfig:
    """Read and validate a circuit TOML file; errors name the file and the key."""
    return circuit_from_dict(read_toml(path, "circuit"), source=str(path))


