"""Tasks: shapes, the seeded stratified split, teacher targets, argument validation."""

import numpy as np
import pytest

from cdtp.data.tasks import Task, digits, get_task, teacher_student


def test_digits_shapes_and_ranges():
    task = digits(seed=0, test_fraction=0.2, scale=2.0)
    assert task.n_train + task.n_test == 1797
    assert task.n_in == 64 and task.n_out == 10
    assert task.loss == "softmax_cross_entropy"
    assert task.is_classification
    # Inputs are pixel/16 * scale: the documented range is [0, scale], and both ends occur.
    assert task.x_train.min() == 0.0 and task.x_train.max() == 2.0
    # One-hot rows agree with the integer labels.
    np.testing.assert_array_equal(task.y_train.sum(axis=1), 1.0)
    np.testing.assert_array_equal(task.y_train.argmax(axis=1), task.labels_train)
    np.testing.assert_array_equal(task.y_test.argmax(axis=1), task.labels_test)


def test_digits_split_is_seeded_disjoint_and_stratified():
    a, b, c = digits(seed=3), digits(seed=3), digits(seed=4)
    np.testing.assert_array_equal(a.metadata["test_indices"], b.metadata["test_indices"])
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.metadata["test_indices"], c.metadata["test_indices"])
    train, test = a.metadata["train_indices"], a.metadata["test_indices"]
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).size == 1797
    # Stratified: each class holds out round(0.2 * n_class) examples exactly.
    counts_all = np.bincount(np.concatenate([a.labels_train, a.labels_test]), minlength=10)
    np.testing.assert_array_equal(
        np.bincount(a.labels_test, minlength=10), np.round(0.2 * counts_all)
    )


def test_digits_does_not_touch_global_random_state():
    state = np.random.get_state()[1].copy()  # noqa: NPY002 — checking the legacy global state
    digits(seed=1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_task_arrays_are_read_only():
    task = digits(seed=0)
    with pytest.raises(ValueError, match="read-only"):
        task.x_train[0, 0] = 1.0


def test_teacher_targets_equal_teacher_forward_pass():
    task = teacher_student(7, n_in=5, hidden=(6, 4), n_out=3, n_train=20, n_test=11)
    assert task.x_train.shape == (20, 5) and task.y_train.shape == (20, 3)
    assert task.x_test.shape == (11, 5) and task.y_test.shape == (11, 3)
    assert task.loss == "squared_error" and not task.is_classification
    teacher = task.metadata["teacher"]
    assert teacher.sizes == (5, 6, 4, 3)
    # Same arrays through the same code path: identical to the last bit.
    np.testing.assert_array_equal(task.y_train, teacher.forward(task.x_train)[-1])
    np.testing.assert_array_equal(task.y_test, teacher.forward(task.x_test)[-1])


def test_teacher_noise_only_on_training_targets():
    clean = teacher_student(2, n_train=400, n_test=50, noise=0.0)
    noisy = teacher_student(2, n_train=400, n_test=50, noise=0.5)
    np.testing.assert_array_equal(clean.x_train, noisy.x_train)
    np.testing.assert_array_equal(clean.y_test, noisy.y_test)
    residual = noisy.y_train - clean.y_train
    # 1600 draws of N(0, 0.5²): the sample std is within ~3.5 % of 0.5 at 2 sigma; 10 % is safe.
    assert abs(residual.std() - 0.5) < 0.05


def test_teacher_seed_and_generator_agree():
    a = teacher_student(5)
    b = teacher_student(np.random.default_rng(5))
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_get_task_by_name():
    assert get_task("digits", seed=0).name == "digits"
    assert get_task("teacher_student", n_in=3, hidden=2).n_in == 3


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: get_task("mnist"),
         r"unknown task 'mnist'; allowed: digits, mnist1d, teacher_classes, teacher_student"),
        (lambda: digits(test_fraction=1.5), r"test_fraction must be in \(0, 1\)"),
        (lambda: digits(scale=-1.0), r"scale must be a finite number > 0"),
        (lambda: digits(seed=-2), r"seed must be a non-negative integer"),
        (lambda: teacher_student(0, n_in=0), r"n_in must be a positive integer"),
        (lambda: teacher_student(0, hidden=(4, -1)), r"each hidden width must be a positive"),
        (lambda: teacher_student(0, noise=-0.1), r"noise must be a finite number >= 0"),
        (lambda: teacher_student(0, nonlinearity="relu6"), r"unknown nonlinearity 'relu6'"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_seed_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"int seed or a numpy\.random\.Generator"):
        teacher_student("zero")


def test_task_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="x_train has 3 rows, y_train 2"):
        Task(
            "t",
            np.zeros((3, 2)),
            np.zeros((2, 1)),
            np.zeros((1, 2)),
            np.zeros((1, 1)),
            loss="squared_error",
        )
