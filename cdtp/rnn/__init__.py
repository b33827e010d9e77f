"""Seed 002's recurrent system: target propagation through time by regularized inversion.

- :mod:`~cdtp.rnn.network` — the tanh RNN, its losses (conventions stated there), BPTT and
  the regularized-inversion targets;
- :mod:`~cdtp.rnn.tasks` — temporal order, adding, sequential digits;
- :mod:`~cdtp.rnn.experiment` — training runs with the paper's settings.

May import: :mod:`cdtp.model`, numpy, scipy. Independent of the circuit and of Brian2.
"""
