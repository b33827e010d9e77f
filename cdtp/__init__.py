"""cdtp — continuous-time Differential Target Propagation.

The package reads like the pipeline: declare → build → run → record → analyse.

- math modules (numpy/scipy only): :mod:`cdtp.nonlinearities`, :mod:`cdtp.losses`,
  :mod:`cdtp.layers`, and the discrete reference algorithms of both papers in
  :mod:`cdtp.reference`;
- tasks and data: :mod:`cdtp.tasks`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
