"""Sequence tasks of seed 002, Sec 4: temporal order, adding problem, and scanned 8×8 digits.

Every generator takes a ``numpy.random.Generator`` and returns a mini-batch ``(x, y)`` with
``x`` of shape (batch, T, d) (float64) and ``y`` one-hot labels (batch, k) for classification or
targets (batch, 1) for the adding problem. Time positions in the docstrings are 1-based as in
the paper (t = 1 … T); array index t − 1 holds step t.

The MNIST/CIFAR pixel tasks of the paper are replaced by the bundled 8×8 UCI digits
(``cdtp/data/digits.npz``), scanned pixel by pixel (T = 64, d = 1) or row by row (T = 8, d = 8),
and by MNIST-1D (Greydanus 2020) read sample by sample (T = 40, d = 1), generated offline by the
``mnist1d`` package (:func:`load_mnist1d_sequences`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np

__all__ = [
    "ADDING_SUCCESS",
    "ADDING_SUCCESS_THRESHOLD",
    "MARKER_POSITIONS",
    "TASKS",
    "TEMPORAL_ORDER_CLASSES",
    "TEMPORAL_ORDER_SYMBOLS",
    "DigitsSequences",
    "adding_batch",
    "adding_marker_range",
    "adding_success",
    "load_digit_sequences",
    "load_mnist1d_sequences",
    "temporal_order_batch",
    "temporal_order_marker_range",
]

#: Input alphabet of the temporal order problem: four distractors and the two markers.
TEMPORAL_ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y")
#: Output classes: the order in which the two markers appear.
TEMPORAL_ORDER_CLASSES = ("XX", "XY", "YX", "YY")
#: A prediction of the adding problem counts as correct if its error is below this (seed 002
#: Sec 4, following Manchev & Spratling 2020): the absolute error in the paper's code, the
#: squared error in its text.
ADDING_SUCCESS_THRESHOLD = 0.04
#: How the adding problem's success is measured: |ŷ − y| (code) or (ŷ − y)² (text) < 0.04.
ADDING_SUCCESS = ("absolute", "squared")
#: Marker-position conventions of the temporal order problem.
MARKER_POSITIONS = ("code", "text")
#: Task names understood by :mod:`cdtp.rnn.experiment`.
TASKS = ("temporal_order", "adding", "digits_pixel", "digits_row", "mnist1d")


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def temporal_order_marker_range(
    length: int, positions: str = "code"
) -> tuple[tuple[int, int], tuple[int, int]]:
    """1-based inclusive ranges of the two marker positions t1 and t2.

    ``positions="code"`` (the paper's public code): 0-based p0 ∈ [⌊T/10⌋, 2⌊T/10⌋) and
    p1 ∈ [⌊T/2⌋, ⌊T/2⌋ + ⌊T/10⌋), i.e. t1 ∈ [⌊T/10⌋ + 1, 2⌊T/10⌋] and
    t2 ∈ [⌊T/2⌋ + 1, ⌊T/2⌋ + ⌊T/10⌋]. ``positions="text"`` (the paper's Sec 4):
    t1 ∈ [T/10, 2T/10] and t2 ∈ [4T/10, 5T/10], real bounds rounded inwards.
    """
    length = _check_positive_int("length", length, minimum=10)
    if positions not in MARKER_POSITIONS:
        raise ValueError(
            f"unknown marker positions {positions!r}; allowed: {', '.join(MARKER_POSITIONS)}"
        )
    if positions == "code":
        tenth, half = length // 10, length // 2
        return (tenth + 1, 2 * tenth), (half + 1, half + tenth)
    lo1, hi1 = -(-length // 10), (2 * length) // 10
    lo2, hi2 = -(-4 * length // 10), (5 * length) // 10
    return (max(lo1, 1), hi1), (lo2, hi2)


def temporal_order_batch(
    rng: np.random.Generator, batch_size: int, length: int, positions: str = "code"
) -> tuple[np.ndarray, np.ndarray]:
    """Temporal order problem (seed 002 Sec 4; Hochreiter & Schmidhuber 1997).

    Each step carries a random symbol from {a, b, c, d}, except positions t1 and t2
    (:func:`temporal_order_marker_range`) which carry X or Y, each drawn independently and
    uniformly. The class is the order of the two markers, one of XX, XY, YX, YY. Inputs are
    one-hot over the six symbols. The paper's code numbers the symbols X, Y, a–d as 0–5 and the
    classes as v0 + 2·v1; ours are a permutation of both, which changes nothing for a model
    whose input and readout weights are drawn rotation-invariantly.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch_size : int
    length : int
        Sequence length T ≥ 10.
    positions : {"code", "text"}
        Marker ranges of the paper's code or of its text.

    Returns
    -------
    x : ndarray, shape (batch_size, T, 6)
    y : ndarray, shape (batch_size, 4)
        One-hot class labels, in the order of :data:`TEMPORAL_ORDER_CLASSES`.
    """
    rng = _check_rng(rng)
    batch_size = _check_positive_int("batch_size", batch_size)
    (lo1, hi1), (lo2, hi2) = temporal_order_marker_range(length, positions)
    symbols = rng.integers(0, 4, size=(batch_size, length))
    labels = rng.integers(0, 4, size=batch_size)
    t1 = rng.integers(lo1, hi1 + 1, size=batch_size)
    t2 = rng.integers(lo2, hi2 + 1, size=batch_size)
    rows = np.arange(batch_size)
    # class index = 2·[first is Y] + [second is Y]; X is symbol 4, Y is symbol 5.
    symbols[rows, t1 - 1] = 4 + labels // 2
    symbols[rows, t2 - 1] = 4 + labels % 2
    x = np.eye(len(TEMPORAL_ORDER_SYMBOLS))[symbols]
    y = np.eye(len(TEMPORAL_ORDER_CLASSES))[labels]
    return x, y


def adding_marker_range(length: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """1-based inclusive ranges t1 ∈ [1, T/10] and t2 ∈ (T/10, T/2].

    The paper's intervals [1, T/10] and [T/10, T/2] share the point T/10; we give it to t1 so that
    the two markers never coincide. Its code's 0-based p0 ∈ [0, ⌊T/10⌋) and
    p1 ∈ [⌊T/10⌋, ⌊T/10⌋ + ⌊0.4T⌋) are the same ranges whenever ⌊T/10⌋ + ⌊0.4T⌋ = ⌊T/2⌋
    (e.g. T = 30: t1 ∈ [1, 3], t2 ∈ [4, 15]).
    """
    length = _check_positive_int("length", length, minimum=10)
    hi1 = length // 10
    return (1, hi1), (hi1 + 1, length // 2)


def adding_batch(
    rng: np.random.Generator, batch_size: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Adding problem (seed 002 Sec 4).

    Channel 0 holds uniform numbers in [0, 1]; channel 1 is zero except for ones at
    t1 ∈ [1, T/10] and t2 ∈ (T/10, T/2] (:func:`adding_marker_range`). The target is the mean
    (X_{t1} + X_{t2}) / 2, which lies in [0, 1].

    Returns
    -------
    x : ndarray, shape (batch_size, T, 2)
    y : ndarray, shape (batch_size, 1)
    """
    rng = _check_rng(rng)
    batch_size = _check_positive_int("batch_size", batch_size)
    (lo1, hi1), (lo2, hi2) = adding_marker_range(length)
    x = np.zeros((batch_size, length, 2))
    x[:, :, 0] = rng.uniform(0.0, 1.0, size=(batch_size, length))
    t1 = rng.integers(lo1, hi1 + 1, size=batch_size)
    t2 = rng.integers(lo2, hi2 + 1, size=batch_size)
    rows = np.arange(batch_size)
    x[rows, t1 - 1, 1] = 1.0
    x[rows, t2 - 1, 1] = 1.0
    y = 0.5 * (x[rows, t1 - 1, 0] + x[rows, t2 - 1, 0])
    return x, y[:, None]


def adding_success(
    prediction: np.ndarray, target: np.ndarray, kind: str = "absolute"
) -> np.ndarray:
    """Boolean per example: error below :data:`ADDING_SUCCESS_THRESHOLD` (0.04).

    ``kind="absolute"``: |ŷ − y| < 0.04 (the paper's code, which its Fig 3 plots);
    ``kind="squared"``: (ŷ − y)² < 0.04, i.e. |ŷ − y| < 0.2 (its text).
    """
    if kind not in ADDING_SUCCESS:
        raise ValueError(f"unknown adding success {kind!r}; allowed: {', '.join(ADDING_SUCCESS)}")
    err = np.asarray(prediction) - np.asarray(target)
    if kind == "absolute":
        return np.all(np.abs(err) < ADDING_SUCCESS_THRESHOLD, axis=-1)
    return np.sum(err**2, axis=-1) < ADDING_SUCCESS_THRESHOLD


@dataclass(frozen=True)
class DigitsSequences:
    """Labelled sequences (the bundled digits, MNIST-1D) with a fixed train/test split.

    Attributes
    ----------
    x_train, x_test : ndarray, shape (n, T, d)
        Pixel intensities scaled to [0, 1] (digits); MNIST-1D's signal values as generated.
    y_train, y_test : ndarray, shape (n, 10)
        One-hot labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A training mini-batch drawn uniformly with replacement across calls."""
        rng = _check_rng(rng)
        batch_size = _check_positive_int("batch_size", batch_size)
        idx = rng.integers(0, len(self.x_train), size=batch_size)
        return self.x_train[idx], self.y_train[idx]


#: Layouts: name → (T, d).
DIGIT_LAYOUTS = {"pixel": (64, 1), "row": (8, 8)}


def load_digit_sequences(
    layout: str = "pixel", test_fraction: float = 0.2, split_seed: int = 0
) -> DigitsSequences:
    """8×8 digits scanned pixel by pixel (T = 64, d = 1) or row by row (T = 8, d = 8).

    The split is stratified by class and fixed by ``split_seed`` (its own generator, so it does
    not depend on or disturb any training randomness).

    Parameters
    ----------
    layout : {"pixel", "row"}
    test_fraction : float
        Fraction of each class held out, in (0, 1).
    split_seed : int
    """
    if layout not in DIGIT_LAYOUTS:
        raise ValueError(f"unknown digits layout {layout!r}; allowed: {', '.join(DIGIT_LAYOUTS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    with resources.files("cdtp").joinpath("data/digits.npz").open("rb") as fh, np.load(fh) as z:
        images = z["images"].astype(float) / 16.0
        labels = z["labels"].astype(int)
    n_steps, n_in = DIGIT_LAYOUTS[layout]
    x = images.reshape(len(images), n_steps, n_in)
    y = np.eye(10)[labels]
    rng = np.random.default_rng(split_seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        n_test = round(test_fraction * len(members))
        test[rng.choice(members, size=n_test, replace=False)] = True
    return DigitsSequences(x[~test], y[~test], x[test], y[test])


#: MNIST-1D sequence length (the package's default ``final_seq_length``).
MNIST1D_LENGTH = 40


def load_mnist1d_sequences(seed: int = 42) -> DigitsSequences:
    """MNIST-1D (Greydanus 2020) as a sequence task: 40 steps of one sample each, 10 classes.

    Generated offline by the ``mnist1d`` package's ``make_dataset`` with its default arguments
    (4 000 training / 1 000 test signals; seed 42 is the package's default, the data set of the
    MNIST-1D paper); nothing is downloaded.

    Parameters
    ----------
    seed : int
        The generator's seed.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ImportError(
            "the mnist1d task needs the mnist1d package (pip install mnist1d)"
        ) from None
    args = get_dataset_args()
    args.seed = int(seed)
    data = make_dataset(args)
    x_train = np.asarray(data["x"], dtype=float)
    x_test = np.asarray(data["x_test"], dtype=float)
    if x_train.shape[1] != MNIST1D_LENGTH:
        raise ValueError(
            f"mnist1d generated sequences of length {x_train.shape[1]}, expected {MNIST1D_LENGTH}"
        )
    eye = np.eye(10)
    return DigitsSequences(
        x_train[:, :, None], eye[np.asarray(data["y"])], x_test[:, :, None],
        eye[np.asarray(data["y_test"])],
    )
