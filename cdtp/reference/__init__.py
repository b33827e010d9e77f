"""Seed 000's discrete algorithms in numpy: the oracles of the circuit, and its baselines.

- :mod:`~cdtp.reference.cdtp_map` — the discrete CDTP map the Brian2 circuit must reproduce;
- :mod:`~cdtp.reference.targets`, :mod:`~cdtp.reference.updates` — DTP targets and updates;
- :mod:`~cdtp.reference.regularized` — analytic regularized inverses, Gauss–Newton;
- :mod:`~cdtp.reference.backprop` — backprop, the baseline;
- :mod:`~cdtp.reference.trainer` — training loops of all of these on a task;
- :mod:`~cdtp.reference.alignment` — what feedback computes: reconstruction errors, angles
  of updates to BP and Gauss–Newton.

Seed 002's recurrent system is :mod:`cdtp.rnn`. May import: :mod:`cdtp.model`,
:mod:`cdtp.data`, numpy, scipy — never Brian2.
"""
