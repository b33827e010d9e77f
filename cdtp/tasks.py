"""Learning tasks for the reference algorithms: a teacher–student regression and 8×8 digits.

A :class:`Task` is an immutable bundle of train and test arrays (batched along axis 0, as in
:mod:`cdtp.layers`), the name of the loss to train with (:func:`cdtp.losses.get_loss`) and a
metadata dict saying how the task was made. Randomness comes in only as a seed or a
:class:`numpy.random.Generator`; nothing here touches global random state or the network.

- :func:`teacher_student` — a random teacher network (:func:`cdtp.layers.init_network`) maps
  Gaussian inputs to regression targets; squared-error loss.
- :func:`digits` — the 1 797 bundled 8×8 handwritten digits (``cdtp/data/digits.npz``, read with
  :mod:`importlib.resources`; no download, no scikit-learn), with a seeded stratified train/test
  split; softmax cross-entropy loss, one-hot targets.
- :func:`get_task` — either of the above by name.
- :func:`read_npz` — the user's own examples from a ``.npz`` file (arrays ``x`` and ``y``),
  checked before any simulation.
"""

from __future__ import annotations

import importlib.resources
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from cdtp.layers import init_network
from cdtp.losses import LOSSES
from cdtp.nonlinearities import NONLINEARITIES

__all__ = ["TASKS", "Task", "digits", "get_task", "read_npz", "teacher_student"]


def _frozen(a, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype)  # a private copy, so freezing it cannot affect the caller
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Task:
    """Train and test data for one supervised task.

    Arrays are copied and made read-only on construction, so a task can be shared between runs
    without one run changing another's data.

    Parameters
    ----------
    name : str
        Registry name (``"digits"``, ``"teacher_student"``).
    x_train, x_test : numpy.ndarray
        Inputs, float64, shape (n_train, n_in) and (n_test, n_in).
    y_train, y_test : numpy.ndarray
        Targets, float64, shape (n, n_out): one-hot rows for classification, real values for
        regression.
    loss : str
        Loss name understood by :func:`cdtp.losses.get_loss`.
    labels_train, labels_test : numpy.ndarray or None
        Integer class labels (shape (n,)) for classification, ``None`` for regression.
    metadata : dict
        How the task was made (seed, split, scaling, teacher network, ...).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    loss: str
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("x_train", "y_train", "x_test", "y_test"):
            a = _frozen(getattr(self, key), float)
            if a.ndim != 2:
                raise ValueError(f"Task {self.name!r}: {key} must be 2-D (batch, n), got {a.shape}")
            object.__setattr__(self, key, a)
        for split in ("train", "test"):
            nx, ny = len(getattr(self, f"x_{split}")), len(getattr(self, f"y_{split}"))
            if nx != ny:
                raise ValueError(f"Task {self.name!r}: x_{split} has {nx} rows, y_{split} {ny}")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError(f"Task {self.name!r}: train and test inputs differ in width")
        if self.y_train.shape[1] != self.y_test.shape[1]:
            raise ValueError(f"Task {self.name!r}: train and test targets differ in width")
        if self.loss not in LOSSES:
            raise ValueError(
                f"Task {self.name!r}: unknown loss {self.loss!r}; allowed: {', '.join(LOSSES)}"
            )
        if (self.labels_train is None) != (self.labels_test is None):
            raise ValueError(f"Task {self.name!r}: give labels for both splits or for neither")
        for split in ("train", "test"):
            labels = getattr(self, f"labels_{split}")
            if labels is None:
                continue
            labels = _frozen(labels, np.int64)
            if labels.shape != (len(getattr(self, f"x_{split}")),):
                raise ValueError(f"Task {self.name!r}: labels_{split} must have one entry a row")
            object.__setattr__(self, f"labels_{split}", labels)

    @property
    def n_in(self) -> int:
        """Input width n_0."""
        return int(self.x_train.shape[1])

    @property
    def n_out(self) -> int:
        """Output width n_L."""
        return int(self.y_train.shape[1])

    @property
    def is_classification(self) -> bool:
        """True when the task has class labels (test accuracy is then defined)."""
        return self.labels_train is not None

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])


def _as_generator(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, Integral) and not isinstance(rng_or_seed, bool):
        if rng_or_seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {rng_or_seed}")
        return np.random.default_rng(int(rng_or_seed))
    raise TypeError(
        f"expected an int seed or a numpy.random.Generator, got {type(rng_or_seed).__name__}"
    )


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _teacher_sizes(n_in, hidden, n_out, n_train, n_test, nonlinearity, out_name: str):
    """Validated layer sizes of a teacher network and the split sizes (shared by the teacher
    tasks); ``out_name`` names the output width in messages."""
    n_in = _positive_int("n_in", n_in)
    n_out = _positive_int(out_name, n_out)
    n_train = _positive_int("n_train", n_train)
    n_test = _positive_int("n_test", n_test)
    if isinstance(hidden, Integral):
        hidden = (hidden,)
    hidden = tuple(_positive_int("each hidden width", h) for h in hidden)
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"unknown nonlinearity {nonlinearity!r}; allowed: {', '.join(sorted(NONLINEARITIES))}"
        )
    return (n_in, *hidden, n_out), n_train, n_test


def teacher_student(
    rng_or_seed=0,
    n_in: int = 16,
    hidden: int | Sequence[int] = (32,),
    n_out: int = 4,
    n_train: int = 512,
    n_test: int = 256,
    nonlinearity: str = "leaky_relu",
    noise: float = 0.0,
) -> Task:
    """A regression task whose targets come from a random teacher network.

    The teacher is ``init_network([n_in, *hidden, n_out], rng, nonlinearity=nonlinearity)``
    (so the student can represent it exactly when it has the same architecture). Inputs are
    i.i.d. standard normal; targets are the teacher's output layer h_L. Gaussian noise of
    standard deviation ``noise`` is added to the *training* targets only, so the test loss
    measures the distance to the noise-free teacher.

    Parameters
    ----------
    rng_or_seed : int or numpy.random.Generator
        Source of the teacher weights, the inputs and the noise, drawn in that order.
    n_in, n_out : int
        Input and output widths.
    hidden : int or sequence of int
        Hidden layer widths of the teacher (an int means one hidden layer; ``()`` none).
    n_train, n_test : int
        Number of examples per split.
    nonlinearity : str
        The teacher's σ (a name from :data:`cdtp.nonlinearities.NONLINEARITIES`).
    noise : float
        Standard deviation of the training-target noise, ≥ 0.

    Returns
    -------
    Task
        ``loss == "squared_error"``; ``metadata["teacher"]`` is the teacher
        :class:`~cdtp.layers.Network` and ``metadata["sizes"]`` its layer sizes.
    """
    rng = _as_generator(rng_or_seed)
    sizes, n_train, n_test = _teacher_sizes(n_in, hidden, n_out, n_train, n_test, nonlinearity,
                                            "n_out")
    n_in = sizes[0]
    if not isinstance(noise, Real) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    teacher = init_network(sizes, rng, nonlinearity=nonlinearity)
    x_train = rng.standard_normal((n_train, n_in))
    x_test = rng.standard_normal((n_test, n_in))
    y_train = teacher.forward(x_train)[-1]
    y_test = teacher.forward(x_test)[-1]
    if noise > 0:
        y_train = y_train + noise * rng.standard_normal(y_train.shape)
    return Task(
        name="teacher_student",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        loss="squared_error",
        metadata={
            "sizes": sizes,
            "nonlinearity": nonlinearity,
            "noise": float(noise),
            "seed": rng_or_seed if isinstance(rng_or_seed, Integral) else None,
            "teacher": teacher,
        },
    )


def teacher_classes(
    rng_or_seed=0,
    n_in: int = 16,
    hidden: int | Sequence[int] = (32,),
    n_classes: int = 3,
    n_train: int = 6000,
    n_test: int = 1000,
    nonlinearity: str = "tanh",
    margin: float = 0.0,
) -> Task:
    """A nonlinear classification task: the class is the argmax of a random teacher network.

    Inputs are i.i.d. standard normal; the teacher is ``init_network([n_in, *hidden,
    n_classes], rng, nonlinearity=nonlinearity)`` with its output scaled to unit variance per
    class. Examples whose two largest teacher outputs differ by less than ``margin`` are
    redrawn. Made for checking that a learning rule tuned elsewhere learns a task nobody tuned
    it on: a student of the teacher's architecture can represent it exactly.

    Parameters
    ----------
    rng_or_seed : int or numpy.random.Generator
        Source of the teacher weights, then the inputs.
    n_in, n_classes, n_train, n_test : int
        Widths and split sizes.
    hidden : int or sequence of int
        Hidden widths of the teacher.
    nonlinearity : str
        The teacher's σ.
    margin : float
        Smallest gap between the two largest teacher outputs, ≥ 0.

    Returns
    -------
    Task
        ``loss == "softmax_cross_entropy"``, one-hot targets, integer labels.
    """
    rng = _as_generator(rng_or_seed)
    sizes, n_train, n_test = _teacher_sizes(n_in, hidden, n_classes, n_train, n_test,
                                            nonlinearity, "n_classes")
    n_in, n_classes = sizes[0], sizes[-1]
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if not isinstance(margin, Real) or not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    teacher = init_network(sizes, rng, nonlinearity=nonlinearity)
    probe = teacher.forward(rng.standard_normal((4096, n_in)))[-1]
    mean, std = probe.mean(axis=0), probe.std(axis=0) + 1e-12

    def draw(n):
        xs, labels = [], []
        while sum(len(x) for x in xs) < n:
            x = rng.standard_normal((2 * n, n_in))
            out = (teacher.forward(x)[-1] - mean) / std
            top2 = np.sort(out, axis=1)[:, -2:]
            keep = top2[:, 1] - top2[:, 0] >= margin
            xs.append(x[keep])
            labels.append(np.argmax(out[keep], axis=1))
        return np.concatenate(xs)[:n], np.concatenate(labels)[:n]

    x_train, l_train = draw(n_train)
    x_test, l_test = draw(n_test)
    eye = np.eye(n_classes)
    return Task(
        name="teacher_classes",
        x_train=x_train,
        y_train=eye[l_train],
        x_test=x_test,
        y_test=eye[l_test],
        loss="softmax_cross_entropy",
        labels_train=l_train,
        labels_test=l_test,
        metadata={
            "sizes": sizes,
            "nonlinearity": nonlinearity,
            "margin": float(margin),
            "seed": rng_or_seed if isinstance(rng_or_seed, Integral) else None,
            "teacher": teacher,
        },
    )


def mnist1d(seed: int = 0, n_train: int = 4000, n_test: int = 1000) -> Task:
    """MNIST-1D (Greydanus 2020): 40-sample 1-D signals of the ten digit templates, shifted,
    scaled, sheared and noised; generated offline by the ``mnist1d`` package's
    ``make_dataset`` (its default 4 000 / 1 000 split, 10 classes; nothing is downloaded).

    Parameters
    ----------
    seed : int
        The generator's seed (the package's default is 42; the data set of the papers).
    n_train, n_test : int
        Examples in each split (the package's defaults).
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ImportError(
            "the mnist1d task needs the mnist1d package (pip install mnist1d)") from None
    args = get_dataset_args()
    args.seed = int(seed)
    args.num_samples = _positive_int("n_train", n_train) + _positive_int("n_test", n_test)
    args.train_split = n_train / args.num_samples
    data = make_dataset(args)
    eye = np.eye(10)
    return Task(
        name="mnist1d",
        x_train=data["x"], y_train=eye[data["y"]], x_test=data["x_test"],
        y_test=eye[data["y_test"]], loss="softmax_cross_entropy",
        labels_train=np.asarray(data["y"]), labels_test=np.asarray(data["y_test"]),
        metadata={"seed": int(seed), "source": "mnist1d.data.make_dataset"},
    )


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    ref = importlib.resources.files("cdtp").joinpath("data/digits.npz")
    with ref.open("rb") as fh, np.load(fh) as data:
        return np.array(data["images"]), np.array(data["labels"])


def digits(seed=0, test_fraction: float = 0.2, scale: float = 1.0) -> Task:
    """The bundled 8×8 handwritten digits with a seeded, stratified train/test split.

    Pixel values 0–16 are flattened to 64 inputs and mapped linearly to ``[0, scale]``
    (``x = scale * pixel / 16``). Within each class, ``round(test_fraction * n_class)``
    examples, chosen by a permutation drawn from ``seed``, go to the test set; the rest train.
    Both splits keep the file's original order, so the split is a fixed set for a given seed.

    Parameters
    ----------
    seed : int or numpy.random.Generator
        Source of the split permutations (the only randomness).
    test_fraction : float
        Fraction of each class held out, in (0, 1).
    scale : float
        Upper end of the input range, > 0.

    Returns
    -------
    Task
        ``loss == "softmax_cross_entropy"``, one-hot ``y``, integer ``labels_*``, 10 outputs.
    """
    rng = _as_generator(seed)
    if not isinstance(test_fraction, Real) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if not isinstance(scale, Real) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    images, labels = _load_digits()
    x = images.reshape(len(images), -1).astype(float) * (float(scale) / 16.0)
    labels = labels.astype(np.int64)
    n_classes = int(labels.max()) + 1
    test_mask = np.zeros(len(labels), dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        n_test = round(test_fraction * len(idx))
        if n_test < 1 or n_test >= len(idx):
            raise ValueError(
                f"test_fraction={test_fraction} leaves class {c} ({len(idx)} examples) "
                "with an empty train or test split"
            )
        test_mask[rng.permutation(idx)[:n_test]] = True
    onehot = np.eye(n_classes)[labels]
    return Task(
        name="digits",
        x_train=x[~test_mask],
        y_train=onehot[~test_mask],
        x_test=x[test_mask],
        y_test=onehot[test_mask],
        loss="softmax_cross_entropy",
        labels_train=labels[~test_mask],
        labels_test=labels[test_mask],
        metadata={
            "source": "cdtp/data/digits.npz (UCI optical digits, as sklearn load_digits)",
            "seed": seed if isinstance(seed, Integral) else None,
            "test_fraction": float(test_fraction),
            "scale": float(scale),
            "input_range": (0.0, float(scale)),
            "train_indices": np.flatnonzero(~test_mask),
            "test_indices": np.flatnonzero(test_mask),
        },
    )


TASKS = {"digits": digits, "mnist1d": mnist1d, "teacher_classes": teacher_classes,
         "teacher_student": teacher_student}


def get_task(name: str, **kwargs) -> Task:
    """Build the task registered under ``name`` with keyword arguments ``kwargs``.

    Parameters
    ----------
    name : {"digits", "teacher_classes", "teacher_student"}
    **kwargs
        Passed to :func:`digits`, :func:`teacher_classes` or :func:`teacher_student`.
    """
    try:
        factory = TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}") from None
    return factory(**kwargs)


def read_npz(path, n_in: int, n_out: int, loss: str = "squared_error"
             ) -> tuple[np.ndarray, np.ndarray]:
    """The examples of a user's ``.npz`` file, checked against a circuit.

    Parameters
    ----------
    path : path-like
        A ``.npz`` file (``numpy.savez``) with arrays ``x`` (n, n_in) and ``y``: either
        targets (n, n_out) or integer class labels (n,) in [0, n_out), one-hot encoded here.
        Nothing is unpickled.
    n_in, n_out : int
        The circuit's input and output widths.
    loss : str
        With ``softmax_cross_entropy`` every target row must be a distribution (≥ 0, sum 1).

    Returns
    -------
    x, y : numpy.ndarray
        float64, shapes (n, n_in) and (n, n_out).

    Raises
    ------
    ValueError
        Saying what is wrong with the file (not a .npz, missing or non-numeric arrays, wrong
        shape, NaN or infinite values, labels out of range) and what is allowed.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc});"
                         " allowed: a numpy.savez file with arrays x and y") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not a .npz archive; allowed: a"
                         " numpy.savez file with arrays x and y")
    arrays = {}
    with data:
        missing = {"x", "y"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks arrays {sorted(missing)} (needs x and y)")
        for name in ("x", "y"):
            try:
                arrays[name] = data[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{path}: array {name} cannot be read ({exc}); allowed:"
                                 " numeric arrays (object arrays are not unpickled)") from None
    x, y = arrays["x"], arrays["y"]
    for name, a in (("x", x), ("y", y)):
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array {name} has dtype {a.dtype}; allowed: integer or"
                             " floating-point numbers")
    if x.ndim != 2 or x.shape[1] != n_in or len(x) == 0:
        raise ValueError(f"{path}: x has shape {x.shape}; allowed: (n ≥ 1, {n_in}), one row"
                         " per example for the circuit's input layer")
    if y.ndim == 1 and y.dtype.kind in "biu":
        bad = y[(y < 0) | (y >= n_out)]
        if bad.size:
            raise ValueError(f"{path}: class label {bad[0]} in y is outside the {n_out} output"
                             f" units; allowed: integers 0 … {n_out - 1}")
        y = np.eye(n_out)[y]
    if y.ndim != 2 or y.shape[1] != n_out:
        raise ValueError(f"{path}: y has shape {y.shape}; allowed: ({len(x)}, {n_out}) targets"
                         f" or ({len(x)},) integer class labels in [0, {n_out})")
    if len(y) != len(x):
        raise ValueError(f"{path}: x has {len(x)} rows and y {len(y)}; one target per example")
    x, y = x.astype(float), y.astype(float)
    for name, a in (("x", x), ("y", y)):
        if not np.all(np.isfinite(a)):
            row = int(np.argwhere(~np.isfinite(a))[0][0])
            raise ValueError(f"{path}: {name} has NaN or infinite values (first in row {row});"
                             " allowed: finite numbers")
    if loss == "softmax_cross_entropy" and (
        np.any(y < 0) or not np.allclose(y.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    ):
        raise ValueError(f"{path}: softmax cross-entropy needs every row of y to be a"
                         " distribution (entries ≥ 0, summing to 1), e.g. one-hot labels")
    return x, y
