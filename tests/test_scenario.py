"""Scenario files: inline and referenced circuits agree, ``--set`` overrides by dotted path with
units, the example stream (cycles or epochs, seeded), and refusals that name file and key."""

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cdtp.model.circuit import ConfigError, load_circuit
from cdtp.study.scenario import apply_overrides, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parent.parent
CIRCUIT = ROOT / "circuits" / "teacher_student.toml"

BASE = """
name = "t"
circuit = "c.toml"
cycles = 7
dt = "1 ms"
[task]
name = "teacher_student"
seed = 20
[gamma]
frequency = "25 Hz"
"""


def _write(tmp_path, text=BASE, name="s.toml"):
    shutil.copy(CIRCUIT, tmp_path / "c.toml")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_inline_circuit_table_equals_the_referenced_file(tmp_path):
    by_file = load_scenario(_write(tmp_path))
    data = tomllib.loads(BASE)
    data["circuit"] = tomllib.loads(CIRCUIT.read_text())
    inline = scenario_from_dict(data, source=str(tmp_path / "inline.toml"))
    assert inline.circuit == by_file.circuit == load_circuit(CIRCUIT)


def test_overrides_reach_the_referenced_circuit_and_parse_units(tmp_path):
    path = _write(tmp_path)
    before = (tmp_path / "c.toml").read_text()
    s = load_scenario(
        path,
        [
            "circuit.plasticity.eta_w=0.05",
            'gamma.frequency="50 Hz"',
            'dt="0.5 ms"',
            "gamma.shape=sinusoid",
        ],
    )
    assert s.circuit.eta_w == 0.05
    assert s.schedule.gamma.frequency == 50.0 and s.schedule.gamma.shape == "sinusoid"
    assert s.dt == 5e-4
    assert (tmp_path / "c.toml").read_text() == before  # the file itself is not touched


def test_stream_has_one_example_per_cycle_and_is_seeded(tmp_path):
    path = _write(tmp_path)
    x, y, info = load_scenario(path).stream()
    assert x.shape == (7, 6) and y.shape == (7, 4) and info["task"] == "teacher_student"
    x2, _, _ = load_scenario(path).stream()
    np.testing.assert_array_equal(x, x2)
    x3, _, _ = load_scenario(path, ["seed=1"]).stream()
    assert not np.array_equal(x, x3)


def test_epochs_show_every_training_example_once_per_epoch(tmp_path):
    shutil.copy(ROOT / "circuits" / "digits.toml", tmp_path / "d.toml")
    path = tmp_path / "s.toml"
    path.write_text(
        'circuit = "d.toml"\nepochs = 2\n[task]\nname = "digits"\n[gamma]\nfrequency = "50 Hz"\n'
    )
    x, _, _ = load_scenario(path).stream()
    from cdtp.data.tasks import digits

    train = digits(seed=0).x_train  # the scenario's seed (0) chooses the split
    twice = np.concatenate([train, train])
    # the same rows with the same multiplicities: compare both sorted lexicographically
    np.testing.assert_array_equal(x[np.lexsort(x.T)], twice[np.lexsort(twice.T)])
    assert not np.array_equal(x[: len(train)], train)  # shuffled, not in file order


@pytest.mark.parametrize(
    "text, key",
    [
        (BASE.replace("cycles = 7", "cycles = 7\nepochs = 1"), "cycles"),
        (BASE.replace("cycles = 7", ""), "cycles"),
        (BASE.replace("cycles = 7", "cycles = 0"), "cycles"),
        ('kind = "spiking"\n' + BASE, "kind"),
        (BASE + '[task2]\nname = "digits"\n', "task2"),
        (BASE.replace('name = "teacher_student"', 'name = "mnist"'), "task.name"),
        (BASE + '[record]\nvariables = ["a", "voltage"]\n', "record.variables"),
        (BASE.replace('"1 ms"', '"1 Hz"'), "dt"),
    ],
)
def test_refusals_name_file_and_key(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    assert err.value.source == str(path) and err.value.key == key


def test_set_needs_key_equals_value():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["gamma.frequency"])
    with pytest.raises(ConfigError, match="is not a table"):
        apply_overrides({"gamma": 3}, ["gamma.frequency=8"])


def test_a_plasticity_window_closing_before_the_cycle_end_keeps_the_last_cycle(tmp_path):
    # regression: with a sinusoid and the descending gate no phase boundary falls on the cycle's
    # last step; the final cycle used to be dropped (2 of 3 cycles recorded)
    from cdtp.brian.simulation import simulate

    s = load_scenario(
        _write(tmp_path), ["gamma.shape=sinusoid", "plasticity_gate.kind=descending", "cycles=3"]
    )
    x, y, _ = s.stream()
    ds = simulate(s.circuit, s.schedule, x, y, dt=s.dt, backend="map", record=s.record)
    assert ds.sizes["cycle"] == 3 and np.all(np.isfinite(ds.loss.values))
    assert ds.boundary_time.values[-1, -1] < 3 * 0.04  # the window closed inside cycle 2


def test_time_constant_below_dt_is_refused_only_where_the_method_overshoots(tmp_path):
    """Euler (and RK4) overshoot when dt > τ, so the scenario refuses it, naming the key; the
    exponential methods solve the relaxation over a step exactly and are accepted (as by
    :func:`cdtp.brian.engine.build`, which applies the same rule)."""
    path = _write(tmp_path)
    short = 'circuit.time_constants.tau_a="0.5 ms"'  # dt = 1 ms in BASE
    with pytest.raises(ConfigError, match="exponential_euler") as err:
        load_scenario(path, [short])
    assert err.value.key == "circuit.time_constants.tau_a"
    s = load_scenario(path, [short, 'circuit.integration.method="exponential_euler"'])
    assert s.circuit.tau_a == 5e-4 and s.circuit.integration_method == "exponential_euler"
