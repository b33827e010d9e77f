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
  stream (:func:`cdtp.brian.simulation.simulate`);
- :func:`check`, :func:`report` — the proposition checks; :func:`open_result` — a results file;
- ``cdtp.plots`` (figures, :mod:`cdtp.analysis.plots`) and ``cdtp.sweep`` (grids,
  :mod:`cdtp.study.sweep`).

The packages are the pipeline, in order — each may import only those before it:

1. :mod:`cdtp.model` — declare: circuit files, γ and the gates, σ, losses, units (numpy);
2. :mod:`cdtp.data` — tasks and the bundled digits;
3. :mod:`cdtp.reference` — seed 000's discrete algorithms in numpy: the circuit's oracles,
   its baselines, and the map behind the numpy device;
4. :mod:`cdtp.record` — the results Dataset and held-out evaluation (xarray, never Brian2);
5. :mod:`cdtp.brian` — build and run the circuit in Brian2 (model, data, reference, record
   and analysis never import it);
6. :mod:`cdtp.analysis` — the propositions' checks and the figures (never Brian2);
7. :mod:`cdtp.study` — scenario files, sweeps (Dask), the ``cdtp`` command.

Beside the pipeline, importing only :mod:`cdtp.model`: :mod:`cdtp.rnn` (seed 002's
recurrent target propagation by regularized inversion).

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
    "simulate": ("cdtp.brian.simulation", "simulate"),
    "plots": ("cdtp.analysis.plots", None),
    "sweep": ("cdtp.study.sweep", None),
    **{package: (f"cdtp.{package}", None) for package in
       ("model", "data", "reference", "record", "brian", "analysis", "study", "rnn")},
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
