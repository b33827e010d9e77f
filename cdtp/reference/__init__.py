"""The discrete algorithms of both papers in numpy: oracles for the circuit, and baselines."""
