"""Build and run: the circuit as Brian2 NeuronGroups and Synapses.

- :mod:`~cdtp.brian.engine` — :func:`~cdtp.brian.engine.build` one circuit, and the
  :class:`~cdtp.brian.engine.CircuitRun` it returns (its docstring maps every equation to a
  Brian2 object);
- :mod:`~cdtp.brian.equations` — the layer dynamics as Brian2 differential equations;
- :mod:`~cdtp.brian.gates` — γ, the hold and plasticity gates: per-layer constants and code;
- :mod:`~cdtp.brian.assembly` — the groups, synapses and operations, in execution order;
- :mod:`~cdtp.brian.readout` — weights, weight snapshots and divergence read back;
- :mod:`~cdtp.brian.devices` — cython, numpy, cpp_standalone;
- :mod:`~cdtp.brian.batch` — many circuits of one structure as one Brian2 network;
- :mod:`~cdtp.brian.simulation` — run a circuit on an example stream and record it.

May import: :mod:`cdtp.model`, :mod:`cdtp.reference` (initial decoders, the numpy
device's map), :mod:`cdtp.record` (to hand over what it recorded), Brian2, numpy.
"""
