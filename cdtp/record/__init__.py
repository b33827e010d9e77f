"""Record: every run as a self-describing xarray Dataset (NetCDF).

- :mod:`~cdtp.record.dataset` — what is recorded (``RecordSpec``), the Dataset's layout and
  attributes, safe writing and reading of results files;
- :mod:`~cdtp.record.evaluation` — held-out accuracy and loss of recorded weights.

May import: :mod:`cdtp.model`, numpy, xarray — never Brian2, so results can be read and
analysed without it.
"""
