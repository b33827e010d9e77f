"""γ schedules, the hold gate c(γ) and the plasticity gate p(t) (docs/model.md §2, §2.1).

A γ schedule is a periodic function of the phase φ ∈ [0, 1) of a theta-like cycle of
frequency f. Each cycle begins with the feedforward phase (γ = 1) at φ = 0, when a new example
is clamped, and descends into the feedback phase (γ → 0). With a travelling wave, layer l sees
γ_l(t) = γ(t − (l − 1)Δ).

Every shape exists twice, and the two must agree: as a numpy function (used by the reference
discrete CDTP map and by the analysis) and as a Brian2 expression over shared constants (used by
the circuit), so that changing a schedule's *parameters* (frequency, duty cycle, ramp, lag,
plasticity window) never changes generated code. Only the *kind* of shape is compiled in.

γ is a function of continuous time, sampled half a time step into each step:
φ_k = frac((k + ½)·(f dt) − lag·f) at step k (computed exactly so, in this order, by numpy here
and by the generated code of :mod:`cdtp.brian.engine`, so both see the same phase bit for bit). A
cycle begins at the step where layer 1's phase wraps: cycle c starts at the first step k with
(k + ½) f dt ≥ c, i.e. at round(c / (f dt)) steps. When the period 1/f is a whole number T of
steps every cycle is T steps long, as before. When it is not (6 Hz or 16 Hz at dt = 1 ms),
cycles are ⌊1/(f dt)⌋ or ⌈1/(f dt)⌉ steps long, and every phase boundary (a cycle's start, the
end of the feedforward phase, the plasticity window) lies within half a step of its
continuous-time instant: the error is at most one step per cycle in any phase's duration, and
it does not accumulate (cycle c starts within half a step of c/f whatever c is).

This module is numpy-only: the Brian2 expressions are plain strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GAMMA_SHAPES",
    "HOLD_GATES",
    "PLASTICITY_GATES",
    "GammaSchedule",
    "HoldGate",
    "PlasticityGate",
    "Schedule",
    "consolidation_period",
    "cycle_position",
    "phase",
]

GAMMA_SHAPES = ("square", "sinusoid", "raised_cosine", "smoothed_square", "array")
PLASTICITY_GATES = ("paper", "descending", "window", "always", "off")
HOLD_GATES = ("hard", "smooth")


def cycle_position(step, dt: float, frequency: float, lag: float = 0.0) -> np.ndarray:
    """x_k = (k + ½)·(f dt) − lag·f, the γ cycles elapsed at the middle of step ``k``.

    ⌊x_k⌋ is the cycle step k belongs to and frac(x_k) its phase. The order of the float
    operations is the one of the engine's generated code (:mod:`cdtp.brian.engine`), so both agree
    exactly, also on a step whose middle falls on a phase boundary.
    """
    k = np.asarray(step, dtype=float)
    return (k + 0.5) * (frequency * dt) - lag * frequency


def phase(t, dt: float, frequency: float, lag: float = 0.0) -> np.ndarray:
    """φ = frac(((t + dt/2) − lag) f), the phase of the γ cycle at the step starting at ``t``
    (computed as :func:`cycle_position` of step t/dt)."""
    x = cycle_position(np.rint(np.asarray(t, dtype=float) / dt), dt, frequency, lag)
    return x - np.floor(x)


@dataclass(frozen=True)
class GammaSchedule:
    """The γ rhythm.

    Parameters
    ----------
    shape : {"square", "sinusoid", "raised_cosine", "smoothed_square", "array"}
        - ``square``: γ = 1 for φ < duty, else 0;
        - ``sinusoid``: γ = ½(1 + cos 2πφ) (theta; ``duty`` unused);
        - ``raised_cosine``: γ = 1 for φ < duty, then one raised-cosine dip to 0 and back
          over the rest of the cycle;
        - ``smoothed_square``: like ``square`` with raised-cosine edges of width ``ramp``
          (fall on [duty, duty + ramp), rise on [1 − ramp, 1));
        - ``array``: ``values`` sampled uniformly over one cycle (the user's own shape).
    frequency : float
        Cycles per second (Hz).
    duty : float
        Fraction of the cycle in the feedforward plateau, in (0, 1).
    ramp : float
        Edge width of ``smoothed_square`` as a fraction of the cycle.
    lag : float
        Travelling-wave lag Δ in seconds: layer l is delayed by (l − 1)Δ.
    values : tuple of float
        One cycle of γ for ``shape="array"``, each in [0, 1].
    """

    shape: str = "square"
    frequency: float = 8.0
    duty: float = 0.25
    ramp: float = 0.05
    lag: float = 0.0
    values: tuple = field(default=())

    def __post_init__(self):
        if self.shape not in GAMMA_SHAPES:
            raise ValueError(f"unknown γ shape {self.shape!r}; allowed: {', '.join(GAMMA_SHAPES)}")
        if not (np.isfinite(self.frequency) and self.frequency > 0):
            raise ValueError(f"γ frequency must be a positive number of Hz, got {self.frequency}")
        if not 0.0 < self.duty < 1.0:
            raise ValueError(f"γ duty cycle must be in (0, 1), got {self.duty}")
        if self.lag < 0:
            raise ValueError(f"γ lag must be ≥ 0 s, got {self.lag}")
        if self.shape == "smoothed_square":
            if not 0.0 < self.ramp or self.duty + 2 * self.ramp > 1.0:
                raise ValueError(
                    f"smoothed_square needs 0 < ramp and duty + 2·ramp ≤ 1, got duty={self.duty},"
                    f" ramp={self.ramp}"
                )
        if self.shape == "array":
            v = np.asarray(self.values, dtype=float)
            if v.ndim != 1 or v.size < 2 or np.any(v < 0) or np.any(v > 1):
                raise ValueError("γ values must be a list of at least 2 numbers in [0, 1]")

    @property
    def period(self) -> float:
        """Seconds per cycle."""
        return 1.0 / self.frequency

    def layer_lag(self, layer: int) -> float:
        """(l − 1)Δ, the delay of layer ``layer`` ≥ 1."""
        return max(layer - 1, 0) * self.lag

    def of_phase(self, phi: np.ndarray) -> np.ndarray:
        """γ as a function of the phase φ ∈ [0, 1)."""
        phi = np.asarray(phi, dtype=float)
        d, r = self.duty, self.ramp
        if self.shape == "square":
            return (phi < d).astype(float)
        if self.shape == "sinusoid":
            return 0.5 * (1.0 + np.cos(2.0 * np.pi * phi))
        if self.shape == "raised_cosine":
            dip = 0.5 * (1.0 + np.cos(2.0 * np.pi * (phi - d) / (1.0 - d)))
            return np.where(phi < d, 1.0, dip)
        if self.shape == "smoothed_square":
            fall = 0.5 * (1.0 + np.cos(np.pi * np.clip((phi - d) / r, 0.0, 1.0)))
            rise = 0.5 * (1.0 - np.cos(np.pi * np.clip((phi - 1.0 + r) / r, 0.0, 1.0)))
            return np.where(phi < 1.0 - r, fall, rise)
        v = np.asarray(self.values, dtype=float)
        idx = np.minimum(np.floor(phi * v.size).astype(int), v.size - 1)
        return v[idx]

    def descent_window(self) -> tuple[float, float]:
        """Phases [start, end) from the start of the γ descent to the trough / end of the low
        plateau: the default plasticity window of docs/model.md §2.1."""
        d, r = self.duty, self.ramp
        if self.shape == "square":
            return d, 1.0
        if self.shape == "sinusoid":
            return 0.0, 0.5
        if self.shape == "raised_cosine":
            return d, d + 0.5 * (1.0 - d)
        if self.shape == "smoothed_square":
            return d, 1.0 - r
        v = np.asarray(self.values, dtype=float)
        n = v.size
        start = 0
        while start + 1 < n and v[start + 1] >= v[start] and v[start] < v.max():
            start += 1
        while start + 1 < n and v[start + 1] >= v[start]:
            start += 1
        trough = start + int(np.argmin(v[start:]))
        # extend over a low plateau
        end = trough
        while end + 1 < n and v[end + 1] <= v[trough]:
            end += 1
        return start / n, (end + 1) / n

    def brian2_expression(self) -> str:
        """γ as a Brian2 expression of the shared constants ``gamma_phase`` (φ),
        ``gamma_duty`` and ``gamma_ramp`` (the ``array`` shape reads a TimedArray
        ``gamma_values`` indexed by φ)."""
        if self.shape == "square":
            return "1.0*int(gamma_phase < gamma_duty)"
        if self.shape == "sinusoid":
            return "0.5*(1 + cos(2*pi*gamma_phase))"
        if self.shape == "raised_cosine":
            return (
                "int(gamma_phase < gamma_duty) + int(gamma_phase >= gamma_duty)"
                "*0.5*(1 + cos(2*pi*(gamma_phase - gamma_duty)/(1 - gamma_duty)))"
            )
        if self.shape == "smoothed_square":
            return (
                "int(gamma_phase < 1 - gamma_ramp)"
                "*0.5*(1 + cos(pi*clip((gamma_phase - gamma_duty)/gamma_ramp, 0, 1)))"
                " + int(gamma_phase >= 1 - gamma_ramp)"
                "*0.5*(1 - cos(pi*clip((gamma_phase - 1 + gamma_ramp)/gamma_ramp, 0, 1)))"
            )
        n = len(self.values)
        return f"gamma_values((floor(gamma_phase*{n}) + 0.5)*second/{n})"


@dataclass(frozen=True)
class HoldGate:
    """c(γ), the paper's 1_{γ=1}: ``hard`` c = 1 iff γ ≥ 1 − ε; ``smooth`` a logistic of
    (γ − (1 − ε)) / width."""

    kind: str = "hard"
    epsilon: float = 1e-6
    width: float = 0.02

    def __post_init__(self):
        if self.kind not in HOLD_GATES:
            raise ValueError(f"unknown hold gate {self.kind!r}; allowed: {', '.join(HOLD_GATES)}")
        if not 0 < self.epsilon < 1:
            raise ValueError(f"hold gate epsilon must be in (0, 1), got {self.epsilon}")
        if self.kind == "smooth" and not self.width > 0:
            raise ValueError(f"smooth hold gate width must be > 0, got {self.width}")

    def __call__(self, gamma: np.ndarray) -> np.ndarray:
        gamma = np.asarray(gamma, dtype=float)
        if self.kind == "hard":
            return (gamma >= 1.0 - self.epsilon).astype(float)
        return 1.0 / (1.0 + np.exp(-(gamma - (1.0 - self.epsilon)) / self.width))

    def brian2_expression(self) -> str:
        """c as a Brian2 expression of ``gamma`` and the shared ``hold_epsilon``,
        ``hold_width``."""
        if self.kind == "hard":
            return "1.0*int(gamma >= 1 - hold_epsilon)"
        return "1/(1 + exp(-(gamma - (1 - hold_epsilon))/hold_width))"


@dataclass(frozen=True)
class PlasticityGate:
    """p(t), when feedforward weights may change (docs/model.md §2.1).

    - ``paper``: p = 1_{γ<1}, Eq 50 as corrected; with a smooth γ it unwinds (net ΔW ≈ 0);
    - ``descending`` (default): open from the start of the γ descent to the trough or the end
      of the low plateau (:meth:`GammaSchedule.descent_window`);
    - ``window``: open for phases in [``start``, ``end``);
    - ``always`` / ``off``.
    """

    kind: str = "descending"
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self):
        if self.kind not in PLASTICITY_GATES:
            raise ValueError(
                f"unknown plasticity gate {self.kind!r}; allowed: {', '.join(PLASTICITY_GATES)}"
            )
        if self.kind == "window" and not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(
                f"plasticity window needs 0 ≤ start < end ≤ 1 (phases), got [{self.start},"
                f" {self.end})"
            )

    def window(self, gamma: GammaSchedule) -> tuple[float, float]:
        """The phase window [start, end) for the window-type gates."""
        if self.kind == "descending":
            return gamma.descent_window()
        if self.kind == "window":
            return self.start, self.end
        if self.kind == "always":
            return 0.0, 1.0
        return 0.0, 0.0

    def __call__(self, phi: np.ndarray, gamma_value: np.ndarray, gamma: GammaSchedule):
        if self.kind == "paper":
            return (np.asarray(gamma_value) < 1.0).astype(float)
        lo, hi = self.window(gamma)
        phi = np.asarray(phi)
        return ((phi >= lo) & (phi < hi)).astype(float)

    def brian2_expression(self) -> str:
        """p as a Brian2 expression of ``gamma``, ``gamma_phase`` and the shared
        ``plasticity_start``, ``plasticity_end``."""
        if self.kind == "paper":
            return "1.0*int(gamma < 1)"
        return "1.0*int(gamma_phase >= plasticity_start)*int(gamma_phase < plasticity_end)"


@dataclass(frozen=True)
class Schedule:
    """γ rhythm + plasticity gate, sampled on a time grid.

    The hold gate c(γ) is a property of the circuit (how its neurons read γ), not of the
    schedule, so :meth:`sample` takes it as an argument.
    """

    gamma: GammaSchedule = field(default_factory=GammaSchedule)
    plasticity: PlasticityGate = field(default_factory=PlasticityGate)

    def steps_per_cycle(self, dt: float) -> int:
        """Steps per γ cycle when the period is a whole number of steps.

        Raises
        ------
        ValueError
            If it is not (then cycles differ in length by one step: see
            :meth:`cycle_starts`).
        """
        n = self.whole_period(dt)
        if n is None:
            raise ValueError(
                f"the γ period ({self.gamma.period * 1e3:g} ms) is not a whole number of time"
                f" steps (dt = {dt * 1e3:g} ms): cycles are"
                f" {math.floor(self.gamma.period / dt)} or {math.ceil(self.gamma.period / dt)}"
                " steps long; use cycle_starts()"
            )
        return n

    def whole_period(self, dt: float) -> int | None:
        """The period in steps if it is a whole number of them (to 1e-9 relative), else None."""
        n = self.gamma.period / dt
        return round(n) if abs(n - round(n)) <= 1e-9 * n else None

    def cycle_starts(self, dt: float, n_cycles: int, first: int = 0) -> np.ndarray:
        """The steps at which cycles ``first`` … ``first + n_cycles`` begin (n_cycles + 1
        values; the last is where cycle ``first + n_cycles − 1`` ends).

        Cycle c begins at the first step k whose cycle position (:func:`cycle_position`,
        layer 1: no lag) is ≥ c, i.e. at round(c / (f dt)) up to ties: within half a step of
        the continuous-time instant c/f. With a whole period T, cycle c begins at c·T.
        """
        c = np.arange(first, first + n_cycles + 1, dtype=float)
        f = self.gamma.frequency
        k = np.ceil(c / (f * dt) - 0.5)
        # settle the estimate on the exact float criterion (at most a step either way)
        for _ in range(3):
            k = np.where(np.floor(cycle_position(k - 1, dt, f)) >= c, k - 1, k)
            k = np.where(np.floor(cycle_position(k, dt, f)) < c, k + 1, k)
        return k.astype(np.int64)

    def boundary_table(self, dt: float, n_cycles: int, layers: int,
                       hold: HoldGate | None = None) -> np.ndarray:
        """The step of each phase boundary of cycles 0 … n_cycles − 1, shape (n_cycles, 4).

        Columns, as :data:`cdtp.record.dataset.BOUNDARIES`: the cycle's first step; the first step
        with c(γ_1) < ½ (the feedback phase); the first step with p_1 > 0; one past the last
        step with p_1 > 0. A boundary that does not occur in a cycle is the next cycle's first
        step. Absolute step indices (step k runs from k dt to (k + 1) dt).
        """
        hold = HoldGate() if hold is None else hold
        starts = self.cycle_starts(dt, n_cycles)
        table = np.empty((n_cycles, 4), dtype=np.int64)
        table[:, 0] = starts[:-1]
        chunk = max(1, 2_000_000 // max(int(starts[1] - starts[0]), 1))
        for lo in range(0, n_cycles, chunk):
            hi = min(lo + chunk, n_cycles)
            s0, s1 = int(starts[lo]), int(starts[hi])
            steps = np.arange(s0, s1)
            phi = cycle_position(steps, dt, self.gamma.frequency)
            phi = phi - np.floor(phi)
            g = self.gamma.of_phase(phi)
            fb = np.flatnonzero(hold(g) < 0.5) + s0
            open_ = np.flatnonzero(self.plasticity(phi, g, self.gamma) > 0) + s0
            a, b = starts[lo:hi], starts[lo + 1:hi + 1]
            i = np.searchsorted(fb, a)
            first_fb = np.append(fb, s1)[i]
            table[lo:hi, 1] = np.where(first_fb < b, first_fb, b)
            i = np.searchsorted(open_, a)
            first_p = np.append(open_, s1)[i]
            j = np.searchsorted(open_, b) - 1
            last_p = np.where(j >= 0, np.append(open_, -1)[np.maximum(j, 0)], -1)
            has = first_p < b
            table[lo:hi, 2] = np.where(has, first_p, b)
            table[lo:hi, 3] = np.where(has, last_p + 1, b)
        return table

    def check_steps(self, dt: float, layers: int, hold: HoldGate | None = None) -> None:
        """Refuse a schedule whose cycles are shorter than 2 steps, or whose feedforward or
        feedback phase (layer 1, c(γ) ≥ ½ / < ½) is empty in some cycle.

        Raises
        ------
        ValueError
            Naming the period, dt and what is missing.
        """
        period = self.gamma.period / dt
        if period < 2 - 1e-9:
            raise ValueError(
                f"the γ period ({self.gamma.period * 1e3:g} ms) must be at least 2 time steps"
                f" (dt = {dt * 1e3:g} ms)"
            )
        # the pattern of a cycle depends on its phase offset only, which repeats after at most
        # a few thousand cycles for any period of finite precision; 64 cycles show the extremes
        table = self.boundary_table(dt, 64, layers, hold)
        ends = np.append(table[1:, 0], self.cycle_starts(dt, 64)[-1])
        for c in range(len(table)):
            ff, fb = table[c, 1] - table[c, 0], ends[c] - table[c, 1]
            if ff < 1 or fb < 1:
                which = "feedforward" if ff < 1 else "feedback"
                raise ValueError(
                    f"cycle {c} has no {which} step: the γ period"
                    f" ({self.gamma.period * 1e3:g} ms = {period:g} steps of"
                    f" {dt * 1e3:g} ms) is too short for this γ shape and duty cycle"
                )

    def sample(
        self, n_steps: int, dt: float, layers: int, hold: HoldGate | None = None
    ) -> dict[str, np.ndarray]:
        """γ_l, c_l, p_l and φ_l at the start of each step, shape (n_steps, layers + 1).

        Column l is layer l (column 0, the clamped input, copies layer 1).
        """
        return self.sample_steps(np.arange(n_steps), dt, layers, hold)

    def sample_steps(
        self, steps, dt: float, layers: int, hold: HoldGate | None = None
    ) -> dict[str, np.ndarray]:
        """As :meth:`sample`, at the given absolute steps (shape (len(steps), layers + 1))."""
        hold = HoldGate() if hold is None else hold
        steps = np.asarray(steps)
        n_steps = len(steps)
        out = {k: np.empty((n_steps, layers + 1)) for k in ("phase", "gamma", "hold", "plasticity")}
        for l in range(layers + 1):
            x = cycle_position(steps, dt, self.gamma.frequency, self.gamma.layer_lag(max(l, 1)))
            phi = x - np.floor(x)
            g = self.gamma.of_phase(phi)
            out["phase"][:, l] = phi
            out["gamma"][:, l] = g
            out["hold"][:, l] = hold(g)
            out["plasticity"][:, l] = self.plasticity(phi, g, self.gamma)
        return out


def consolidation_period(schedules, dt: float, source: str = "the circuit") -> int:
    """The steps of one γ cycle, the interval of ``plasticity.consolidation = "cycle"`` (the
    summed weight change applied at each cycle boundary), for schedules that allow it: a
    period of a whole number of steps, the same for all (a batch), and no travelling-wave lag
    (a lagged layer's plasticity window would cross the boundary)."""
    spcs = {s.whole_period(dt) for s in schedules}
    periods = " / ".join(f"{s.gamma.period / dt:g}" for s in schedules)
    if None in spcs or len(spcs) > 1:
        raise ValueError(f"{source}: plasticity.consolidation = 'cycle' applies the weight"
                         " changes at the γ cycle boundary: the period must be a whole number"
                         f" of steps, the same for every circuit of a batch (got {periods}"
                         " steps); allowed otherwise: consolidation = 'step'")
    if any(s.gamma.lag for s in schedules):
        raise ValueError(f"{source}: plasticity.consolidation = 'cycle' needs γ lag = 0 (a"
                         " lagged layer's plasticity window crosses the cycle boundary);"
                         " allowed with a lag: consolidation = 'step'")
    (spc,) = spcs
    return spc
