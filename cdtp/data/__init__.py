"""Data: supervised tasks and the bundled data set.

- :mod:`~cdtp.data.tasks` — teacher-student regression and classification, the bundled 8×8
  digits (``digits.npz`` in this folder), MNIST-1D generated offline, a user's own ``.npz``.

May import: :mod:`cdtp.model`, numpy.
"""
