"""Declare: what a circuit is, independent of any simulator.

- :mod:`~cdtp.model.circuit` — circuit files (TOML) → a validated :class:`CircuitConfig`;
- :mod:`~cdtp.model.gating` — the γ signal, the hold and plasticity gates, per-layer schedules;
- :mod:`~cdtp.model.layers` — the feedforward map f_l and the feedback map g_l as numpy;
- :mod:`~cdtp.model.nonlinearities`, :mod:`~cdtp.model.losses` — σ and the output losses;
- :mod:`~cdtp.model.units` — physical quantities in files (``"50 ms"``).

May import: numpy, scipy and the standard library — never Brian2, xarray or another cdtp
package. Every other package builds on this one.
"""
