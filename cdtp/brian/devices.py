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
        # OpenMP threads of the standalone binary (0 or 1: none)
        b2.prefs.devices.cpp_standalone.openmp_threads = threads if threads > 1 else 0
        # Brian2's default is an unbounded `make -j`: one compiler per source file at once
        # (measured: 20+ compilers, load average 50 on a 2-core machine); bound it by the cores
        b2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{os.cpu_count() or 1}"]
        return directory
    b2.set_device("runtime")
    b2.prefs.codegen.target = device
    return None
