"""cdtp — continuous-time Differential Target Propagation.

The handful a user needs::

    import cdtp

    scenario = cdtp.load_scenario("scenarios/quickstart.toml", ["cycles=20"])
    ds = cdtp.run(scenario)                 # xarray.Dataset, as `cdtp run` records it
    print(cdtp.report(ds))                  # the proposition checks, as `cdtp check` prints
    cdtp.plots.plot_learning_curve(ds)

- :func:`load_scenario`, :func:`load_circuit` — read and validate TOML files;
- :func:`run` — run a scenario (``cdtp run``); :func:`run_sweep` — a ``[sweep]`` grid
  (``cdtp sweep``); :func:`simulate` — the low-level run of a circuit on your own example
  stream (:func:`cdtp.simulation.simulate`);
- :func:`check`, :func:`report` — the proposition checks; :func:`open_result` — a results file;
- :mod:`plots` (figures), :mod:`sweep` (grids: ``cdtp.sweep.grid``, ``combine``).

The package reads like the pipeline: declare → build → run → record → analyse.

- declare: :mod:`cdtp.circuit` (circuit files), :mod:`cdtp.gating` (γ, hold and plasticity
  gates), :mod:`cdtp.scenario` (scenario files), :mod:`cdtp.units`;
- build and run (Brian2): :mod:`cdtp.engine`, :mod:`cdtp.simulation`;
- record and analyse (xarray, never brian2): :mod:`cdtp.recording`, :mod:`cdtp.evaluation`
  (held-out accuracy), :mod:`cdtp.propositions`, :mod:`cdtp.plots`;
- studies: :mod:`cdtp.sweep` (Dask), :mod:`cdtp.cli` (the ``cdtp`` command);
- math modules (numpy/scipy only): :mod:`cdtp.nonlinearities`, :mod:`cdtp.losses`,
  :mod:`cdtp.layers`, and the discrete reference algorithms of both papers in
  :mod:`cdtp.reference`;
- tasks and data: :mod:`cdtp.tasks`.

``import cdtp`` imports none of these: each name above is imported on first use (Brian2 alone
takes seconds to import).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "check",
    "load_circuit",
    "load_scenario",
    "open_result",
    "plots",
    "report",
    "run",
    "run_sweep",
    "simulate",
    "sweep",
]

# name → (module, attribute or None for the module itself), imported on first access
_LAZY = {
    "check": ("cdtp.api", "check"),
    "load_circuit": ("cdtp.api", "load_circuit"),
    "load_scenario": ("cdtp.api", "load_scenario"),
    "open_result": ("cdtp.api", "open_result"),
    "report": ("cdtp.api", "report"),
    "run": ("cdtp.api", "run"),
    "run_sweep": ("cdtp.api", "run_sweep"),
    "simulate": ("cdtp.simulation", "simulate"),
    "plots": ("cdtp.plots", None),
    "sweep": ("cdtp.sweep", None),
}


def __getattr__(name: str):
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'cdtp' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
