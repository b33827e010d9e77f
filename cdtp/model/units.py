"""Parsing quantities written in files ("8 Hz", "2 ms") into SI floats.

Circuit and scenario files are read without importing Brian2 (only the engine imports it), so
this small parser accepts the units those files need, with Brian2's spelling and the SI
prefixes p, n, u (µ, μ), m, k, M and G: ``"100 us"``, ``"0.5 msecond"``, ``"1 kHz"``,
``"25 /s"``, ``"0.2 /ms"``. A rate is an inverse time, so ``Hz`` and ``/s`` are the same unit.
"""

from __future__ import annotations

import math
import re

__all__ = ["DIMENSIONS", "UnitError", "parse_quantity"]

# SI prefixes as exact powers of ten (so that "100 us" is exactly 1e-4)
_PREFIX = {"p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9}


def _prefixed(bases: dict[str, int], sign: int = 1) -> dict[str, int]:
    """Every prefixed spelling of ``bases`` ({unit: power of ten}) → power of ten of the value
    in SI units; ``sign = -1`` for inverse units (1 per ms = 1e3 per s)."""
    out = {}
    for base, power in bases.items():
        for prefix, p in _PREFIX.items():
            out[prefix + base] = power + sign * p
    return out


_TIME = _prefixed({"s": 0, "second": 0})
_INVERSE_TIME = {
    **_prefixed({"Hz": 0, "hertz": 0}),
    **{f"{one}/{u}": -p for one in ("", "1") for u, p in _TIME.items()},
}
_INVERSE_TIME.update({f"{one} / {u}": -p for one in ("", "1") for u, p in _TIME.items()})
#: {dimension: {unit spelling: power of ten of one such unit in SI}}
DIMENSIONS = {"time": _TIME, "frequency": _INVERSE_TIME, "rate": _INVERSE_TIME}
_EXAMPLES = {"time": "'2 ms'", "frequency": "'8 Hz'", "rate": "'25 /s' or '8 Hz'"}
_DESCRIBE = {"time": "a time", "frequency": "a frequency (1/time)", "rate": "a rate (1/time)"}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(rf"^\s*({_NUMBER})\s*\*?\s*([^\s\d].*?)?\s*$")


class UnitError(ValueError):
    """A quantity that does not parse, or has the wrong dimension."""


def _allowed(dimension: str) -> str:
    if dimension == "time":
        return "s, ms, us (µs), ns (or second, msecond, …)"
    return "Hz, kHz, mHz, /s, /ms (or hertz, 1/s, …)"


def parse_quantity(value, dimension: str, *, allow_bare_zero: bool = True) -> float:
    """Return ``value`` ("2 ms", "8 Hz", "0.5 second") in SI units as a float.

    Parameters
    ----------
    value : str or number
        A string with a number and a unit. A bare number is accepted only for 0 when
        ``allow_bare_zero`` (zero needs no unit).
    dimension : {"time", "frequency", "rate"}

    Raises
    ------
    UnitError
        With the value and the units allowed for ``dimension``; a unit of another dimension
        ("8 ms" given for a rate) is reported as a wrong dimension.
    """
    units = DIMENSIONS[dimension]
    allowed = _allowed(dimension)
    example = _EXAMPLES[dimension]
    if isinstance(value, bool):
        raise UnitError(f"expected {_DESCRIBE[dimension]} such as {example}, got {value!r}")
    if isinstance(value, int | float):
        if allow_bare_zero and value == 0:
            return 0.0
        raise UnitError(
            f"{value!r} has no unit; write {_DESCRIBE[dimension]} as a string such as"
            f" {example} (units {allowed})"
        )
    if not isinstance(value, str):
        raise UnitError(
            f"{value!r} has type {type(value).__name__}: expected {_DESCRIBE[dimension]} string"
            f" such as {example}"
        )
    match = _PATTERN.match(value)
    if not match:
        raise UnitError(f"cannot parse {value!r} as {_DESCRIBE[dimension]}: expected"
                        f" '<number> <unit>' such as {example} (units {allowed})")
    number, unit = float(match.group(1)), (match.group(2) or "").strip()
    if not math.isfinite(number):
        raise UnitError(f"{value!r} is not a finite number")
    if not unit:
        if allow_bare_zero and number == 0:
            return 0.0
        raise UnitError(f"{value!r} has no unit; allowed units for {_DESCRIBE[dimension]}:"
                        f" {allowed}")
    if unit not in units:
        other = next((d for d, table in DIMENSIONS.items() if unit in table), None)
        if other is not None:
            raise UnitError(
                f"wrong dimension: {value!r} is {_DESCRIBE[other]}, expected"
                f" {_DESCRIBE[dimension]} such as {example}"
            )
        raise UnitError(f"unknown {dimension} unit {unit!r} in {value!r}; allowed: {allowed}")
    power = units[unit]
    # divide by 10**k rather than multiply by 10**-k: "100 us" is then exactly 1e-4
    value_si = number / 10.0 ** -power if power < 0 else number * 10.0 ** power
    if not math.isfinite(value_si):
        raise UnitError(f"{value!r} is too large")
    return value_si
