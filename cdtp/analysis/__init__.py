"""Analyse: the paper's propositions checked on recorded runs, and figures.

- :mod:`~cdtp.analysis.propositions` — premises and conclusions of the convergence and
  feedback-weight propositions, per (cycle, layer), with the reason a check fails;
- :mod:`~cdtp.analysis.plots` — figures of runs and sweeps.

May import: :mod:`cdtp.model`, :mod:`cdtp.reference` (Jacobians), :mod:`cdtp.record`, numpy,
xarray, matplotlib — never Brian2.
"""
