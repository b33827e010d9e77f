"""cdtp — continuous-time Differential Target Propagation.

The package reads like the pipeline: declare → build → run → record → analyse.

- declare: :mod:`cdtp.circuit` (circuit files), :mod:`cdtp.gating` (γ, hold and plasticity
  gates), :mod:`cdtp.scenario` (scenario files), :mod:`cdtp.units`;
- build and run (Brian2): :mod:`cdtp.engine`, :mod:`cdtp.simulation`;
- record and analyse (xarray, never brian2): :mod:`cdtp.recording`, :mod:`cdtp.propositions`,
  :mod:`cdtp.plots`;
- studies: :mod:`cdtp.sweep` (Dask), :mod:`cdtp.cli` (the ``cdtp`` command);
- math modules (numpy/scipy only): :mod:`cdtp.nonlinearities`, :mod:`cdtp.losses`,
  :mod:`cdtp.layers`, and the discrete reference algorithms of both papers in
  :mod:`cdtp.reference`;
- tasks and data: :mod:`cdtp.tasks`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
