"""Reference trainer: BP equals manual SGD, training lowers the loss, reproducibility, layout."""

import numpy as np
import pytest
import xarray as xr

from cdtp.data.tasks import digits, teacher_student
from cdtp.model.layers import init_network
from cdtp.reference.backprop import backprop_gradients
from cdtp.reference.trainer import METHODS, TrainingDiverged, train


@pytest.fixture(scope="module")
def small_task():
    return teacher_student(0, n_in=8, hidden=(12,), n_out=3, n_train=128, n_test=64)


def _net(task, seed=1, hidden=(12,)):
    return init_network([task.n_in, *hidden, task.n_out], np.random.default_rng(seed))


def test_bp_step_equals_manual_sgd_step(small_task):
    # One epoch with batch_size = n_train is exactly one full-batch step; the order of the
    # batch does not matter for a batch mean. Same float operations up to the summation order
    # inside the matrix products, so agreement to ~1e-15 relative is expected; 1e-12 is safe.
    net = _net(small_task)
    manual = net.copy()
    grads = backprop_gradients(manual, small_task.x_train, small_task.y_train, small_task.loss)
    for l in range(1, manual.depth + 1):
        manual.weights[l] = manual.weights[l] - 0.05 * grads[l]
    train(net, small_task, "bp", epochs=1, batch_size=small_task.n_train, lr=0.05, seed=0)
    for l in range(1, net.depth + 1):
        np.testing.assert_allclose(net.weights[l], manual.weights[l], rtol=1e-12, atol=1e-14)


def test_bp_hidden_step_equals_manual_layered_step(small_task):
    # hidden_lr: the hidden layers step by their own rate, the output layer by lr; the same
    # full-batch step by hand, to the same rounding as above
    net = _net(small_task, hidden=(12, 10))
    manual = net.copy()
    grads = backprop_gradients(manual, small_task.x_train, small_task.y_train, small_task.loss)
    for l in range(1, manual.depth + 1):
        manual.weights[l] = manual.weights[l] - (0.05 if l == manual.depth else 0.2) * grads[l]
    train(net, small_task, "bp", epochs=1, batch_size=small_task.n_train, lr=0.05,
          hidden_lr=0.2, seed=0)
    for l in range(1, net.depth + 1):
        np.testing.assert_allclose(net.weights[l], manual.weights[l], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="hidden_lr is a setting of bp and cdtp_recipe"):
        train(net, small_task, "dtp", epochs=1, batch_size=8, lr=0.05, hidden_lr=0.2)


def test_bp_reduces_teacher_student_loss(small_task):
    # The student has the teacher's architecture, so the loss can go to 0. Measured with these
    # seeds: test loss 0.80 → 0.023 after 30 epochs (a factor ~35); asking for a factor 10
    # leaves room for platform differences but fails if learning is broken.
    ds = train(_net(small_task), small_task, "bp", epochs=30, batch_size=16, lr=0.1, seed=0)
    assert ds.test_loss[-1] < ds.test_loss[0] / 10
    assert ds.train_loss[-1] < ds.train_loss[0] / 10


@pytest.mark.parametrize("method", ["dtp", "dtp1", "difference_tp", "regularized_tp"])
def test_target_propagation_reduces_loss(small_task, method):
    # Each TP method on the tiny teacher-student task, 30 epochs. Measured reductions of the
    # test loss: dtp 24x, dtp1 8.4x, difference_tp 3.3x, regularized_tp 9.2x; requiring 2x
    # fails if the targets or updates have the wrong sign or are ineffective (the loss would
    # then stay put or grow).
    lr = {"dtp": 3.0, "dtp1": 1.0, "difference_tp": 0.1, "regularized_tp": 0.1}[method]
    ds = train(_net(small_task), small_task, method, epochs=30, batch_size=16, lr=lr, seed=0)
    assert ds.test_loss[-1] < ds.test_loss[0] / 2


def test_same_seed_gives_identical_dataset(small_task):
    runs = [
        train(_net(small_task), small_task, "dtp", epochs=2, batch_size=16, lr=1.0, seed=3)
        for _ in range(2)
    ]
    # wall_time is a measurement of the machine, not of the algorithm.
    xr.testing.assert_identical(runs[0].drop_vars("wall_time"), runs[1].drop_vars("wall_time"))
    other = train(_net(small_task), small_task, "dtp", epochs=2, batch_size=16, lr=1.0, seed=4)
    assert not np.array_equal(other.train_loss.values, runs[0].train_loss.values)


def test_dataset_layout_and_metadata():
    task = digits(seed=0)
    net = init_network([64, 16, 16, 10], np.random.default_rng(0))
    ds = train(net, task, "bp", epochs=3, batch_size=64, lr=0.1, seed=0, eval_every=2)
    # epoch 0 (before training), every second epoch, and always the last.
    np.testing.assert_array_equal(ds.epoch.values, [0, 2, 3])
    steps_per_epoch = -(-task.n_train // 64)
    np.testing.assert_array_equal(ds.step.values, [0, 2 * steps_per_epoch, 3 * steps_per_epoch])
    for name in ("train_loss", "test_loss", "test_accuracy", "train_accuracy", "wall_time"):
        assert name in ds
    for name, var in {**ds.data_vars, **ds.coords}.items():
        assert "units" in var.attrs and "long_name" in var.attrs, name
    assert ds.wall_time.attrs["units"] == "s"
    assert ds.attrs["method"] == "bp" and ds.attrs["lr"] == 0.1 and ds.attrs["seed"] == 0
    assert ds.attrs["task"] == "digits"
    assert ((ds.test_accuracy >= 0) & (ds.test_accuracy <= 1)).all()


def test_divergence_raises_with_epoch_and_layer(small_task):
    with pytest.raises(TrainingDiverged, match=r"W_\d became non-finite in epoch \d+") as err:
        train(_net(small_task), small_task, "bp", epochs=5, batch_size=8, lr=1e8, seed=0)
    assert 1 <= err.value.layer <= 2 and 1 <= err.value.epoch <= 5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "sgd"}, r"unknown method 'sgd'; allowed: bp, dtp1, dtp, difference_tp"),
        ({"epochs": 0}, r"epochs must be a positive integer"),
        ({"lr": -1.0}, r"lr must be a finite number > 0"),
        ({"inversion": "exact"}, r"unknown inversion 'exact'"),
        ({"decoder_rule": "hebb"}, r"unknown decoder_rule 'hebb'"),
    ],
)
def test_bad_arguments_raise(small_task, kwargs, message):
    args = {"method": "bp", "epochs": 1, "batch_size": 8, "lr": 0.1, **kwargs}
    method = args.pop("method")
    with pytest.raises(ValueError, match=message):
        train(_net(small_task), small_task, method, **args)


def test_network_must_fit_task(small_task):
    net = init_network([5, 4, 3], np.random.default_rng(0))
    with pytest.raises(ValueError, match="do not fit task"):
        train(net, small_task, "bp", epochs=1, batch_size=8, lr=0.1)


def test_methods_list_is_complete():
    assert set(METHODS) == {"bp", "dtp1", "dtp", "difference_tp", "regularized_tp",
                            "cdtp_recipe"}
