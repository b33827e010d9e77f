"""Brian2 devices: which code-generation target runs the circuit, and its preferences.

``cython`` and ``numpy`` are Brian2's runtime targets (Python drives the run; ``numpy`` needs
no compiler); ``cpp_standalone`` compiles the whole network into one binary that runs without
Python (docs/model.md §6): fastest for long runs, but nothing can be changed or read during the
run. ``CDTP_BRIAN2_CACHE`` points Brian2's Cython cache at a directory of your choice.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import brian2 as b2

__all__ = ["DEVICES", "configure_device"]

# Which clocks tick together. Brian2 keeps t = i·dt per clock, rounded; its runtime targets
# treat two clocks as simultaneous when their t differ by less than Clock.epsilon_dt (1e-4) of
# the smaller dt, its C++ standalone network when they differ by at most 1e-14 s. A slower clock
# whose dt is not a binary fraction of a second (one 5 Hz γ cycle: 0.2 s, against 1 ms steps)
# is then off the step clock by more than 1e-14 s once t reaches about a minute, ticks in a slot
# of its own, and may run after the step it belongs before (measured: the consolidated weight
# change reading the next example's input from t ≈ 60 s on; brian-team/brian2 PR #1057 discusses
# the standalone tolerance). The standalone network is given the runtime targets' rule.
_STANDALONE_SAME_TIME = "if(s==t || fabs(s-t)<=Clock_epsilon)"
_RUNTIME_SAME_TIME = ("if(s==t || fabs(s-t) < {eps!r}*fmin(clock->dt[0], minclock->dt[0]))")


def _clocks_tick_together_as_in_runtime(device) -> None:
    """Make ``device`` (cpp_standalone) write a network whose clocks tick together by the
    runtime targets' rule (see above); refuse a Brian2 whose network source differs."""
    writes = type(device).generate_network_source

    def generate_network_source(writer, compiler):
        class Writer:
            def write(self, filename, contents):
                if filename == "network.*":
                    if _STANDALONE_SAME_TIME not in contents.cpp_file:
                        raise RuntimeError(
                            "cdtp: this Brian2's standalone network.cpp has no clock comparison"
                            f" {_STANDALONE_SAME_TIME!r}; cdtp cannot make its clocks tick"
                            " together as in runtime (cdtp/brian/devices.py)")
                    contents.cpp_file = contents.cpp_file.replace(
                        _STANDALONE_SAME_TIME,
                        _RUNTIME_SAME_TIME.format(eps=float(b2.Clock.epsilon_dt)))
                writer.write(filename, contents)

        writes(device, Writer(), compiler)

    device.generate_network_source = generate_network_source

DEVICES = ("cython", "numpy", "cpp_standalone")


def configure_device(device: str, directory: str | None, threads: int = 1) -> str | None:
    """Make ``device`` the current Brian2 device; for cpp_standalone return its project
    directory (a new temporary one when ``directory`` is None), else None."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; allowed: {', '.join(DEVICES)}")
    cache = os.environ.get("CDTP_BRIAN2_CACHE")
    if cache:
        b2.prefs.codegen.runtime.cython.cache_dir = str(Path(cache) / "cython")
    if device == "cpp_standalone":
        if directory is None:
            directory = tempfile.mkdtemp(prefix="cdtp-standalone-")
        b2.set_device("cpp_standalone", directory=directory, build_on_run=False)
        b2.get_device().reinit()
        b2.get_device().activate(directory=directory, build_on_run=False)
        _clocks_tick_together_as_in_runtime(b2.get_device())
        # OpenMP threads of the standalone binary (0 or 1: none)
        b2.prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
        # Brian2's default is an unbounded `make -j`: one compiler per source file at once
        # (measured: 20+ compilers, load average 50 on a 2-core machine); bound it by the cores
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{os.cpu_count() or 1}"]
        return directory
    b2.set_device("runtime")
    b2.prefs.codegen.target = device
    return None
