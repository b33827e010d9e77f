"""Parsing quantities written in files ("8 Hz", "2 ms") into SI floats.

Circuit and scenario files are read without importing Brian2 (only the engine imports it), so
this small parser accepts the units those files need, with Brian2's spelling.
"""

from __future__ import annotations

import re

__all__ = ["DIMENSIONS", "UnitError", "parse_quantity"]

_TIME = {"s": 1.0, "second": 1.0, "ms": 1e-3, "msecond": 1e-3, "us": 1e-6, "µs": 1e-6,
         "usecond": 1e-6, "ns": 1e-9}
_FREQ = {"Hz": 1.0, "hertz": 1.0, "kHz": 1e3, "khertz": 1e3, "mHz": 1e-3}
_RATE = {"/s": 1.0, "1/s": 1.0, "Hz": 1.0, "/ms": 1e3, "1/ms": 1e3}
DIMENSIONS = {"time": _TIME, "frequency": _FREQ, "rate": _RATE}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(rf"^\s*({_NUMBER})\s*\*?\s*([^\s\d].*?)?\s*$")


class UnitError(ValueError):
    """A quantity that does not parse, or has the wrong dimension."""


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
        With the value and the units allowed for ``dimension``.
    """
    units = DIMENSIONS[dimension]
    allowed = ", ".join(repr(u) for u in units)
    if isinstance(value, bool):
        raise UnitError(f"expected a {dimension} such as '2 ms' (units {allowed}), got {value!r}")
    if isinstance(value, int | float):
        if allow_bare_zero and value == 0:
            return 0.0
        raise UnitError(
            f"{value!r} has no unit; write the {dimension} as a string with one of {allowed},"
            f" e.g. '{value} {next(iter(units))}'"
        )
    if not isinstance(value, str):
        raise UnitError(f"expected a {dimension} string such as '2 ms', got {value!r}")
    match = _PATTERN.match(value)
    if not match:
        raise UnitError(f"cannot parse {value!r} as a {dimension}: expected '<number> <unit>'"
                        f" with unit one of {allowed}")
    number, unit = float(match.group(1)), (match.group(2) or "").strip()
    if not unit:
        if allow_bare_zero and number == 0:
            return 0.0
        raise UnitError(f"{value!r} has no unit; allowed units for a {dimension}: {allowed}")
    if unit not in units:
        raise UnitError(f"unknown {dimension} unit {unit!r} in {value!r}; allowed: {allowed}")
    scale = units[unit]
    # divide by 1000 rather than multiply by 1e-3: "100 us" is exactly 1e-4 then
    return number / round(1.0 / scale) if scale < 1 else number * scale
