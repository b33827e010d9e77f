"""Own data in scenario files and the held-out evaluation of a run.

- A user's ``.npz``: integer labels and one-hot rows give the same task; targets that do not
  fit the circuit are refused with the file, the key and the shapes that would fit; the
  classification/regression rule; a ``test_fraction`` split reproducible from its seed and
  stratified; ``x_test``/``y_test`` from the file.
- ``[task]`` accepts ``teacher_classes`` and ``mnist1d``; an unknown key names the allowed ones.
- The recorded ``test_accuracy`` / ``test_loss`` equal an independent numpy forward pass on the
  weights recorded in the same file, at the end of every epoch and of the run.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from cdtp.data.tasks import read_npz_task, split_held_out
from cdtp.model.circuit import ConfigError
from cdtp.study.scenario import load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parent.parent
CIRCUIT = ROOT / "circuits" / "teacher_student.toml"  # [6, 6, 6, 4], tanh, squared error

BASE = f"""
name = "own"
circuit = "{CIRCUIT}"
dt = "1 ms"
device = "numpy"
seed = 3
"""
TABLES = """
[gamma]
shape = "square"
frequency = "25 Hz"
duty = 0.25

[record]
variables = []
"""


def _write(tmp_path, body: str, **arrays) -> Path:
    if arrays:
        np.savez(tmp_path / "data.npz", **arrays)
    path = tmp_path / "own.toml"
    path.write_text(BASE + body + TABLES)
    return path


def _classes(rng, n, n_classes=4, n_in=6):
    x = rng.normal(size=(n, n_in))
    return x, rng.integers(0, n_classes, size=n)


# -- labels and shapes ---------------------------------------------------------------------
def test_integer_and_one_hot_labels_give_the_same_task(tmp_path, rng):
    x, labels = _classes(rng, 30)
    np.savez(tmp_path / "int.npz", x=x, y=labels)
    np.savez(tmp_path / "float_int.npz", x=x, y=labels.astype(float))
    np.savez(tmp_path / "onehot.npz", x=x, y=np.eye(4)[labels])
    tasks = [read_npz_task(tmp_path / f, 6, 4) for f in ("int.npz", "float_int.npz",
                                                          "onehot.npz")]
    for t in tasks:
        assert t.is_classification
        np.testing.assert_array_equal(t.labels_train, labels)
        np.testing.assert_array_equal(t.y_train, np.eye(4)[labels])
        np.testing.assert_array_equal(t.x_train, x)
        assert t.n_test == 0 and t.metadata["held_out"] == "none"


def test_the_classification_or_regression_rule(tmp_path, rng):
    x = rng.normal(size=(10, 6))
    np.savez(tmp_path / "r.npz", x=x, y=rng.normal(size=(10, 4)))
    assert not read_npz_task(tmp_path / "r.npz", 6, 4).is_classification
    # a single output unit: a 1-D y is a column of regression targets
    np.savez(tmp_path / "r1.npz", x=x, y=rng.normal(size=10))
    t = read_npz_task(tmp_path / "r1.npz", 6, 1)
    assert not t.is_classification and t.y_train.shape == (10, 1)
    # explicit: labels taken as plain one-hot targets
    np.savez(tmp_path / "c.npz", x=x, y=np.arange(10) % 4)
    t = read_npz_task(tmp_path / "c.npz", 6, 4, problem="regression")
    assert not t.is_classification and t.y_train.shape == (10, 4)
    with pytest.raises(ValueError, match="not one-hot"):
        read_npz_task(tmp_path / "r.npz", 6, 4, problem="classification")


@pytest.mark.parametrize(("y", "expect"), [
    (np.zeros((12, 3)), r"y has shape \(12, 3\); allowed: \(12,\) integer class labels in"
                        r" \[0, 4\), or \(12, 4\) one-hot rows"),
    (np.zeros((12, 1)), r"y has shape \(12, 1\)"),
    (np.linspace(0, 2, 12), r"non-integer values"),
    (np.arange(12), r"class label 4 in y is outside the 4 output units"),
    (np.zeros(11, dtype=int), r"y has shape \(11,\) for 12 examples"),
])
def test_labels_that_do_not_fit_name_the_file_the_key_and_the_shapes(tmp_path, rng, y,
                                                                     expect):
    x = rng.normal(size=(12, 6))
    path = _write(tmp_path, 'cycles = 4\n[task]\nname = "npz"\npath = "data.npz"\n', x=x, y=y)
    with pytest.raises(ConfigError, match=expect) as err:
        load_scenario(path)
    message = str(err.value)
    assert message.startswith(f"{path}: task.path: ") and "data.npz" in message


def test_a_wrong_input_width_names_the_width_expected(tmp_path, rng):
    path = _write(tmp_path, 'cycles = 4\n[task]\nname = "npz"\npath = "data.npz"\n',
                  x=rng.normal(size=(12, 5)), y=np.zeros(12, dtype=int))
    with pytest.raises(ConfigError, match=r"task.path: .*x has shape \(12, 5\); allowed:"
                                          r" \(n ≥ 1, 6\)"):
        load_scenario(path)


# -- held-out sets -------------------------------------------------------------------------
def test_test_fraction_is_reproducible_with_its_seed_and_stratified(rng):
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    a = split_held_out(len(labels), 0.2, 7, labels)
    b = split_held_out(len(labels), 0.2, 7, labels)
    c = split_held_out(len(labels), 0.2, 8, labels)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # stratified: round(0.2 · n_c) of every class
    assert [int(a[labels == k].sum()) for k in range(4)] == [2, 4, 6, 8]
    with pytest.raises(ValueError, match="leaves the test split empty"):
        split_held_out(3, 0.1, 0)


def test_test_fraction_in_a_scenario(tmp_path, rng):
    x, labels = _classes(rng, 40)
    body = ('epochs = 1\n[task]\nname = "npz"\npath = "data.npz"\ntest_fraction = 0.25\n'
            "seed = 11\n")
    path = _write(tmp_path, body, x=x, y=labels)
    t1, t2 = load_scenario(path).task_data(), load_scenario(path).task_data()
    np.testing.assert_array_equal(t1.x_test, t2.x_test)
    mask = split_held_out(40, 0.25, 11, labels)  # the task's own seed, not the scenario's
    np.testing.assert_array_equal(t1.x_test, x[mask])
    np.testing.assert_array_equal(t1.labels_train, labels[~mask])
    s = load_scenario(path)
    assert s.held_out().epoch_length == t1.n_train == (~mask).sum()
    # the stream is one pass over the training examples only
    inputs, _, info = s.stream()
    assert len(inputs) == t1.n_train and info["problem"] == "classification"
    assert not any((inputs == row).all(axis=1).any() for row in t1.x_test)


def test_held_out_arrays_of_the_file_and_their_conflicts(tmp_path, rng):
    x, labels = _classes(rng, 20)
    xt, lt = _classes(rng, 8)
    body = 'epochs = 1\n[task]\nname = "npz"\npath = "data.npz"\n'
    t = load_scenario(_write(tmp_path, body, x=x, y=labels, x_test=xt, y_test=lt)).task_data()
    np.testing.assert_array_equal(t.x_test, xt)
    np.testing.assert_array_equal(t.labels_test, lt)
    with pytest.raises(ConfigError, match=r"task.test_fraction: .*one held-out set"):
        load_scenario(_write(tmp_path, body + "test_fraction = 0.2\n", x=x, y=labels,
                             x_test=xt, y_test=lt))
    with pytest.raises(ConfigError, match="only one of x_test and y_test"):
        load_scenario(_write(tmp_path, body, x=x, y=labels, x_test=xt))
    with pytest.raises(ConfigError, match=r"x_test has shape \(8, 5\)"):
        load_scenario(_write(tmp_path, body, x=x, y=labels, x_test=xt[:, :5], y_test=lt))


# -- built-in tasks in [task] --------------------------------------------------------------
def _dict(task: dict, sizes=(6, 6, 6, 4), **top) -> dict:
    return {"circuit": {"sizes": list(sizes), "nonlinearity": "tanh"}, "cycles": 4,
            "task": task, **top}


def test_unknown_task_keys_name_the_file_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        scenario_from_dict(_dict({"name": "digits", "margin": 0.1}, (64, 10)), "s.toml")
    assert str(err.value) == ("s.toml: task.margin: unknown key for task 'digits'; allowed:"
                              " name, scale, seed, test_fraction")
    with pytest.raises(ConfigError, match="task.n_tset: unknown key for task 'teacher_classes'"
                                          r" \(did you mean 'n_test'\?\)"):
        scenario_from_dict(_dict({"name": "teacher_classes", "n_tset": 3}), "s.toml")
    with pytest.raises(ConfigError, match=r"task.margin: -1.0; allowed: a number ≥ 0"):
        scenario_from_dict(_dict({"name": "teacher_classes", "margin": -1.0}), "s.toml")
    with pytest.raises(ConfigError, match=r"task.test_fraction: 1.5"):
        scenario_from_dict(_dict({"name": "digits", "test_fraction": 1.5}, (64, 10)), "s.toml")
    with pytest.raises(ConfigError, match=r"task.name: mnist1d has 40 inputs and 10 outputs;"
                                          r" the circuit has sizes \[6, 6, 6, 4\]"):
        scenario_from_dict(_dict({"name": "mnist1d"}), "s.toml")


def test_teacher_classes_and_mnist1d_tasks_from_a_scenario():
    s = scenario_from_dict(_dict({"name": "teacher_classes", "n_train": 50, "n_test": 30,
                                  "seed": 2, "hidden": [5]}))
    t = s.task_data()
    assert (t.n_train, t.n_test, t.is_classification) == (50, 30, True)
    assert t.metadata["sizes"] == (6, 5, 4)
    h = s.held_out(t)
    assert h.classification and h.epoch_length == 50 and len(h.x_test) == 30
    m = scenario_from_dict(_dict({"name": "mnist1d", "n_train": 60, "n_test": 20},
                                 (40, 16, 10))).task_data()
    assert (m.n_train, m.n_test, m.n_in, m.n_out) == (60, 20, 40, 10)
    quarter = scenario_from_dict(_dict({"name": "mnist1d", "n_train": 60, "n_test": 20,
                                        "scale": 0.25}, (40, 16, 10))).task_data()
    np.testing.assert_array_equal(quarter.x_train, 0.25 * m.x_train)  # × 0.25 is exact
    d = scenario_from_dict(_dict({"name": "digits", "test_fraction": 0.5}, (64, 10)))
    assert d.held_out().source == "the digits test split"
    assert abs(d.task_data().n_test - 1797 / 2) < 10  # per-class rounding


# -- the recorded evaluation ---------------------------------------------------------------
def _forward(ds, x, cycle, boundary="plasticity_end"):
    """h_L of the circuit's forward map h_l = W_l [σ(h_{l−1}); 1] (Eq 54: σ applies to the
    input too) with the W_l recorded at ``boundary`` of ``cycle``, written out here (tanh, bias
    column last) independently of cdtp.model.layers."""
    from cdtp.record.dataset import projection_matrix

    h = x
    for l in (1, 2, 3):
        w = projection_matrix(ds, f"feedforward_{l}", cycle=cycle, boundary=boundary).values
        h = np.tanh(h) @ w[:, :-1].T + w[:, -1]
    return h


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """A classification from an .npz with integer labels and x_test/y_test in the file: two
    epochs of 10 examples (one γ cycle each), run by the ``cdtp`` command."""
    from cdtp.study.cli import main

    tmp = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(5)
    x, labels = _classes(rng, 10)
    xt, lt = _classes(rng, 25)
    path = _write(tmp, 'epochs = 2\n[task]\nname = "npz"\npath = "data.npz"\n', x=x, y=labels,
                  x_test=xt, y_test=lt)
    out = tmp / "own.nc"
    # the figures: `cdtp plot` in test_info_check_and_plot_show_the_held_out_evaluation
    assert main(["run", str(path), "-o", str(out), "--no-figures"]) == 0
    return out, xt, lt


def test_test_accuracy_equals_a_numpy_forward_pass_on_the_recorded_weights(npz_run):
    from cdtp.record.dataset import load

    out, xt, lt = npz_run
    ds = load(out)
    np.testing.assert_array_equal(ds.epoch.values, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(ds.examples_seen.values, [0, 10, 20])
    assert ds.test_accuracy.attrs["units"] == "1" and "held-out" in ds.test_accuracy.long_name
    meta = json.loads(ds.attrs["held_out"])
    assert meta == {"source": "x_test and y_test of the file", "n_test": 25,
                    "problem": "classification", "epoch_length": 10}
    for k, seen in enumerate((10, 20), start=1):
        h = _forward(ds, xt, seen - 1)
        # W changes only while p > 0, so the weights at plasticity_end are the cycle's last;
        # they are also those the next cycle starts with
        if seen < 20:
            from cdtp.record.dataset import projection_matrix

            np.testing.assert_array_equal(
                projection_matrix(ds, "feedforward_2", cycle=seen, boundary="cycle_start"),
                projection_matrix(ds, "feedforward_2", cycle=seen - 1,
                                  boundary="plasticity_end"))
        # the same argmax of the same products: equal; the loss's sums may be reassociated
        # (float64 rounding, ~1e-16 relative)
        assert float(ds.test_accuracy[k]) == np.mean(np.argmax(h, axis=1) == lt)
        loss = np.mean(0.5 * np.sum((h - np.eye(4)[lt]) ** 2, axis=1))
        np.testing.assert_allclose(float(ds.test_loss[k]), loss, rtol=1e-12)
    # this map is the circuit's: the output it held in each cycle is the map of that cycle's
    # input with the weights of its feedforward phase (τ_a = dt: a follows h within a step;
    # the products are the same up to summation order, ~1e-15). With consolidation "cycle"
    # (the quickstart circuit's) the previous cycle's change lands at the cycle's first step,
    # after the cycle_start record: those weights are the ones at plasticity_start
    from cdtp.record.dataset import layer_snapshot

    x = layer_snapshot(ds, "a", 0).sel(boundary="cycle_start").values
    for c in (0, 9, 19):
        np.testing.assert_allclose(_forward(ds, x[c:c + 1], c, "plasticity_start")[0],
                                   ds.output.sel(cycle=c).values, rtol=1e-12, atol=1e-12)


def test_info_check_and_plot_show_the_held_out_evaluation(npz_run, tmp_path, capsys):
    from cdtp.study.cli import main

    out, _, _ = npz_run
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "held out: 25 test examples (x_test and y_test of the file), epoch = 10" in text
    assert "test accuracy by epoch: 0: " in text and ", 2: " in text
    # `cdtp check` ends with the same lines, and carries them in its JSON
    main(["check", str(out)])
    assert "test accuracy by epoch: 0: " in capsys.readouterr().out
    main(["check", "--json", str(out)])
    held = json.loads(capsys.readouterr().out)["held_out"]
    assert held[0].startswith("held out: 25 test examples") and len(held) == 2
    assert main(["plot", str(out), "-o", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "held_out.png").stat().st_size > 0


def test_a_run_shorter_than_an_epoch_is_evaluated_at_its_end(tmp_path):
    """teacher_classes through the Python API: 8 training examples, 12 cycles → evaluations
    after 0, 8 and 12 examples (epoch 1.5), on the initial weights for the first."""
    import cdtp
    from cdtp.brian.engine import initial_network
    from cdtp.record.evaluation import forward_network

    path = _write(tmp_path, 'cycles = 12\n[task]\nname = "teacher_classes"\nn_train = 8\n'
                  "n_test = 40\nseed = 4\n")
    ds = cdtp.run(path)
    np.testing.assert_array_equal(ds.epoch.values, [0.0, 1.0, 1.5])
    scenario = cdtp.load_scenario(path)
    task = scenario.task_data()
    net = initial_network(scenario.circuit)
    h = net.forward(task.x_test)[-1]
    # the initial weights, before any cycle ran: the same forward map
    assert float(ds.test_accuracy[0]) == np.mean(np.argmax(h, axis=1) == task.labels_test)
    w = {f"feedforward_{l}": net.weights[l] for l in (1, 2, 3)}
    np.testing.assert_allclose(forward_network(scenario.circuit, w).forward(task.x_test)[-1],
                               h, rtol=0, atol=0)
    assert ds.attrs["cycles_completed"] == 12


# -- the compiled device -------------------------------------------------------------------------
STANDALONE_RECORD = TABLES + "gates = false\nsnapshots = false\nweights = false\n"


@pytest.mark.slow  # a compilation of its own (70 s under load); the engine's standalone path
@pytest.mark.brian2  # is in the default suite (tests/test_engine.py, tests/test_batch.py)
def test_cpp_standalone_scenario_records_what_numpy_records(tmp_path, rng):
    """``device = "cpp_standalone"`` in a scenario: one compiled binary gives the per-cycle
    output and loss and the per-epoch held-out evaluation of the numpy device's run."""
    x, labels = _classes(rng, 24)
    np.savez(tmp_path / "data.npz", x=x, y=labels)
    body = 'epochs = 2\n[task]\nname = "npz"\npath = "data.npz"\ntest_fraction = 0.25\n'
    runs = {}
    for device in ("numpy", "cpp_standalone"):
        path = tmp_path / f"{device}.toml"
        path.write_text(BASE.replace('device = "numpy"', f'device = "{device}"') + body
                        + STANDALONE_RECORD)
        runs[device] = load_scenario(path).simulate()
    a, b = runs["numpy"], runs["cpp_standalone"]
    assert b.attrs["device"] == "cpp_standalone" and b.attrs["cycles_completed"] == 36
    # the same float64 arithmetic compiled by another code generator: rounding only (the
    # outputs move by O(1) over the run, so a wrong step or order would show at 1e-3)
    np.testing.assert_allclose(b.output.values, a.output.values, atol=1e-9)
    np.testing.assert_allclose(b.loss.values, a.loss.values, atol=1e-9)
    np.testing.assert_allclose(b.test_loss.values, a.test_loss.values, atol=1e-9)
    np.testing.assert_array_equal(b.test_accuracy.values, a.test_accuracy.values)
    assert len(b.epoch) == 3  # before training and after each of the 2 epochs


def test_cpp_standalone_refuses_what_it_cannot_record(tmp_path):
    path = tmp_path / "sa.toml"
    path.write_text(BASE.replace('device = "numpy"', 'device = "cpp_standalone"') + "cycles = 4\n"
                    + TABLES)
    with pytest.raises(ConfigError, match=r"sa\.toml: device: cpp_standalone records") as err:
        load_scenario(path)
    assert "snapshots = false" in str(err.value)
