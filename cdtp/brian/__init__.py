"""Build and run: the circuit as Brian2 NeuronGroups and Synapses.

- :mod:`~cdtp.brian.equations` — the layer dynamics as Brian2 differential equations;
- :mod:`~cdtp.brian.engine` — assembly of one circuit, devices, divergence checks, read-out;
- :mod:`~cdtp.brian.batch` — many circuits of one structure as one Brian2 network;
- :mod:`~cdtp.brian.simulation` — run a circuit on an example stream and record it.

May import: :mod:`cdtp.model`, :mod:`cdtp.reference` (initial decoders, the numpy
device's map), :mod:`cdtp.record` (to hand over what it recorded), Brian2, numpy. The only package
that imports Brian2.
"""
