"""Study: scenario files, parameter sweeps and the ``cdtp`` command.

- :mod:`~cdtp.study.scenario` — scenario files (TOML) → a validated scenario, run end to end;
- :mod:`~cdtp.study.sweep` — grids of scenarios on one machine or a Dask cluster;
- :mod:`~cdtp.study.cli` — the ``cdtp`` command (run, sweep, check, info, plot);
- :mod:`~cdtp.study.demo` — the reference part of ``make demo``;
- :mod:`~cdtp.study.progress`, :mod:`~cdtp.study.interrupts` — progress bars, Ctrl-C.

May import every other cdtp package; nothing imports it but :mod:`cdtp.api`.
"""
