"""Every shipped scenario loads and validates (the cheap ones also run in tests/test_cli.py)."""

from pathlib import Path

import pytest

from cdtp.study.scenario import load_scenario

SCENARIOS = [
    p
    for p in sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.toml"))
    if not p.stem.startswith("rnn_")
]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_validates(path):
    scenario = load_scenario(path)
    x, y = scenario.stream()[:2]
    assert x.shape[1] == scenario.circuit.sizes[0] and y.shape[1] == scenario.circuit.sizes[-1]
    assert len(x) >= 1
