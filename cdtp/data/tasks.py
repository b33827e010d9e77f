"""Learning tasks for the reference algorithms: a teacher–student regression and 8×8 digits.

A :class:`Task` is an immutable bundle of train and test arrays (batched along axis 0, as in
:mod:`cdtp.model.layers`), the name of the loss to train with (:func:`cdtp.model.losses.get_loss`)
and a
metadata dict saying how the task was made. Randomness comes in only as a seed or a
:class:`numpy.random.Generator`; nothing here touches global random state or the network.

- :func:`teacher_student` — a random teacher network (:func:`cdtp.model.layers.init_network`) maps
  Gaussian inputs to regression targets; squared-error loss.
- :func:`digits` — the 1 797 bundled 8×8 handwritten digits (``cdtp/data/digits.npz``, read with
  :mod:`importlib.resources`; no download, no scikit-learn), with a seeded stratified train/test
  split; softmax cross-entropy loss, one-hot targets.
- :func:`teacher_classes` — the argmax class of a random teacher; :func:`mnist1d` —
  MNIST-1D generated offline.
- :func:`get_task` — any of the above by name.
- :func:`read_npz_task` — the user's own examples from a ``.npz`` file (arrays ``x`` and ``y``,
  optionally ``x_test`` and ``y_test``; integer labels or one-hot rows or regression targets),
  with a held-out split (:func:`split_held_out`), checked before any simulation;
  :func:`read_npz` — its training arrays only.
"""

from __future__ import annotations

import importlib.resources
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from cdtp.model.layers import init_network
from cdtp.model.losses import LOSSES
from cdtp.model.nonlinearities import NONLINEARITIES

__all__ = ["PROBLEMS", "TASKS", "Task", "digits", "get_task", "mnist1d", "read_npz",
           "read_npz_task", "split_held_out", "teacher_classes", "teacher_student"]


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
        Loss name understood by :func:`cdtp.model.losses.get_loss`.
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
        The teacher's σ (a name from :data:`cdtp.model.nonlinearities.NONLINEARITIES`).
    noise : float
        Standard deviation of the training-target noise, ≥ 0.

    Returns
    -------
    Task
        ``loss == "squared_error"``; ``metadata["teacher"]`` is the teacher
        :class:`~cdtp.model.layers.Network` and ``metadata["sizes"]`` its layer sizes.
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


def mnist1d(seed: int = 0, n_train: int = 4000, n_test: int = 1000,
            scale: float = 1.0) -> Task:
    """MNIST-1D (Greydanus 2020): 40-sample 1-D signals of the ten digit templates, shifted,
    scaled, sheared and noised; generated offline by the ``mnist1d`` package's
    ``make_dataset`` (its default 4 000 / 1 000 split, 10 classes; nothing is downloaded).

    Parameters
    ----------
    seed : int
        The generator's seed (the package's default is 42; the data set of the papers).
    n_train, n_test : int
        Examples in each split (the package's defaults).
    scale : float
        Multiplies every input. The package's signals have about unit variance per sample
        with peaks near ±5; the networks here pass the input through σ (h_1 = W_1 σ(x)), and
        tanh flattens those peaks, which carry much of the class information (measured in
        benchmarks/LEARNING.md: online BP, tanh, [40, 100, 100, 10], 10 epochs, validation
        0.28 at scale 1, 0.38 at 0.25; 0.57 when the input is not passed through σ). With
        ``scale`` ≈ 0.25 tanh works in its near-linear range.
    """
    if isinstance(scale, bool) or not isinstance(scale, Real) or not np.isfinite(scale) \
            or scale <= 0:
        raise ValueError(f"mnist1d: scale must be a finite number > 0, got {scale!r}")
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
        x_train=float(scale) * data["x"], y_train=eye[data["y"]],
        x_test=float(scale) * data["x_test"],
        y_test=eye[data["y_test"]], loss="softmax_cross_entropy",
        labels_train=np.asarray(data["y"]), labels_test=np.asarray(data["y_test"]),
        metadata={"seed": int(seed), "source": "mnist1d.data.make_dataset",
                  "scale": float(scale)},
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
    name : {"digits", "mnist1d", "teacher_classes", "teacher_student"}
    **kwargs
        Passed to :func:`digits`, :func:`mnist1d`, :func:`teacher_classes` or
        :func:`teacher_student`.
    """
    try:
        factory = TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(sorted(TASKS))}") from None
    return factory(**kwargs)


PROBLEMS = ("classification", "regression")

_NPZ_ALLOWED = "a numpy.savez file with arrays x and y (and optionally x_test and y_test)"


def _open_npz(path) -> dict[str, np.ndarray]:
    """The numeric arrays of a ``.npz`` file (nothing is unpickled)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc});"
                         f" allowed: {_NPZ_ALLOWED}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not a .npz archive; allowed:"
                         f" {_NPZ_ALLOWED}")
    arrays = {}
    with data:
        missing = {"x", "y"} - set(data.files)
        if missing:
            raise ValueError(f"{path} lacks arrays {sorted(missing)} (has {sorted(data.files)});"
                             f" allowed: {_NPZ_ALLOWED}")
        if ("x_test" in data.files) != ("y_test" in data.files):
            raise ValueError(f"{path} has only one of x_test and y_test; allowed: both (a"
                             " held-out set) or neither")
        for name in ("x", "y", "x_test", "y_test"):
            if name not in data.files:
                continue
            try:
                arrays[name] = data[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise ValueError(f"{path}: array {name} cannot be read ({exc}); allowed:"
                                 " numeric arrays (object arrays are not unpickled)") from None
            if arrays[name].dtype.kind not in "biuf":
                raise ValueError(f"{path}: array {name} has dtype {arrays[name].dtype};"
                                 " allowed: integer or floating-point numbers")
    return arrays


def _is_one_hot(y: np.ndarray) -> bool:
    return (y.ndim == 2 and y.shape[1] >= 2 and bool(np.all((y == 0) | (y == 1)))
            and bool(np.all(y.sum(axis=1) == 1)))


def _inputs(path, name: str, x: np.ndarray, n_in: int) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != n_in or len(x) == 0:
        raise ValueError(f"{path}: {name} has shape {x.shape}; allowed: (n ≥ 1, {n_in}), one row"
                         f" per example for the circuit's {n_in} input units")
    x = x.astype(float)
    if not np.all(np.isfinite(x)):
        row = int(np.argwhere(~np.isfinite(x))[0][0])
        raise ValueError(f"{path}: {name} has NaN or infinite values (first in row {row});"
                         " allowed: finite numbers")
    return x


def _targets(path, name: str, y: np.ndarray, n: int, n_out: int, problem: str | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets (n, n_out) and, for a classification, integer labels (n,) — the rule of
    :func:`read_npz_task`."""
    shapes = (f"allowed: ({n},) integer class labels in [0, {n_out}), or ({n}, {n_out})"
              f" one-hot rows or regression targets — the circuit's output layer has {n_out}"
              " units")
    if n_out == 1:
        shapes = f"allowed: ({n},) or ({n}, 1) regression targets — the circuit has one output"
    if y.ndim == 0 or y.ndim > 2 or len(y) != n:
        raise ValueError(f"{path}: {name} has shape {y.shape} for {n} examples; {shapes}")
    if not np.all(np.isfinite(y)):
        row = int(np.argwhere(~np.isfinite(y))[0][0])
        raise ValueError(f"{path}: {name} has NaN or infinite values (first in row {row});"
                         " allowed: finite numbers")
    if y.ndim == 1 and n_out == 1:
        y = y.reshape(n, 1)
    if y.ndim == 1:
        if not np.all(y == np.round(y)):
            raise ValueError(f"{path}: {name} has shape {y.shape} with non-integer values (e.g."
                             f" {y[y != np.round(y)][0]!r}); {shapes}")
        bad = y[(y < 0) | (y >= n_out)]
        if bad.size:
            raise ValueError(f"{path}: class label {bad[0]:g} in {name} is outside the {n_out}"
                             f" output units; allowed: integers 0 … {n_out - 1}")
        labels = y.astype(np.int64)
        if problem == "regression":
            return np.eye(n_out)[labels], None
        return np.eye(n_out)[labels], labels
    if y.shape[1] != n_out:
        raise ValueError(f"{path}: {name} has shape {y.shape}; {shapes}")
    y = y.astype(float)
    if problem == "regression":
        return y, None
    if _is_one_hot(y):
        return y, np.argmax(y, axis=1).astype(np.int64)
    if problem == "classification":
        raise ValueError(f"{path}: {name}: problem = 'classification' needs class labels, but"
                         f" its rows are not one-hot; {shapes}")
    return y, None


def split_held_out(n: int, test_fraction: float, rng_or_seed=0,
                   labels: np.ndarray | None = None) -> np.ndarray:
    """A seeded held-out mask over ``n`` examples, stratified by class when labels are given.

    Within each class (or over all examples, without labels) ``round(test_fraction · n_c)``
    examples, chosen by a permutation drawn from the seed, are held out; the same seed gives the
    same split.

    Parameters
    ----------
    n : int
        Number of examples.
    test_fraction : float
        Fraction held out, in (0, 1).
    rng_or_seed : int or numpy.random.Generator
        Source of the permutations (one per class, in class order).
    labels : numpy.ndarray, optional
        Integer class labels (n,): stratify by them.

    Returns
    -------
    numpy.ndarray
        Boolean mask, True for the held-out examples.

    Raises
    ------
    ValueError
        When ``test_fraction`` is out of range or leaves the train or the test split empty.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, Real) or not (
            0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = _as_generator(rng_or_seed)
    mask = np.zeros(n, dtype=bool)
    groups = ([np.arange(n)] if labels is None
              else [np.flatnonzero(labels == c) for c in np.unique(labels)])
    for idx in groups:
        mask[rng.permutation(idx)[: round(test_fraction * len(idx))]] = True
    if not mask.any() or mask.all():
        raise ValueError(f"test_fraction = {test_fraction} of {n} examples leaves the"
                         f" {'test' if not mask.any() else 'training'} split empty")
    return mask


def read_npz_task(path, n_in: int, n_out: int, loss: str = "squared_error", *,
                  test_fraction: float | None = None, seed=0, problem: str | None = None
                  ) -> Task:
    """A user's ``.npz`` examples as a :class:`Task`, checked against a circuit.

    The file holds arrays ``x`` (n, n_in) and ``y``, and optionally a held-out set ``x_test``,
    ``y_test`` of the same layouts. Nothing is unpickled.

    **Classification or regression** (``problem``), when not given, follows from ``y``:

    - ``y`` of shape (n,) and the circuit has several outputs: integer class labels in
      [0, n_out) (integer-valued floats are accepted), one-hot encoded as targets →
      classification;
    - ``y`` of shape (n, n_out) whose rows are all one-hot (entries 0 or 1, one 1 per row) →
      classification, the label being the 1's position;
    - any other ``y`` of shape (n, n_out) — or (n,) with a single output unit — → regression
      targets.

    ``problem = "regression"`` treats labels as plain one-hot targets (no accuracy);
    ``problem = "classification"`` refuses targets that are not labels or one-hot rows.

    **Held out**: ``x_test``/``y_test`` from the file, or, with ``test_fraction``, a seeded
    split of ``x``/``y`` (:func:`split_held_out`, stratified by class for a classification); the
    two may not be combined. Without either the task has no test examples.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file (``numpy.savez``).
    n_in, n_out : int
        The circuit's input and output widths.
    loss : str
        The circuit's loss; with ``softmax_cross_entropy`` every target row must be a
        distribution (≥ 0, sum 1).
    test_fraction : float, optional
        Fraction of the examples held out, in (0, 1).
    seed : int or numpy.random.Generator
        Source of the held-out split.
    problem : {"classification", "regression"}, optional
        Decided from ``y`` when not given (the rule above).

    Returns
    -------
    Task
        Named ``"npz"``; ``metadata`` says where the held-out set came from.

    Raises
    ------
    ValueError
        Saying what is wrong (not a .npz, missing or non-numeric arrays, shapes that do not fit
        the circuit — with the shapes that would — NaN or infinite values, labels out of range)
        and what is allowed.
    """
    if problem is not None and problem not in PROBLEMS:
        raise ValueError(f"problem {problem!r} is not allowed; allowed: {', '.join(PROBLEMS)}")
    arrays = _open_npz(path)
    x = _inputs(path, "x", arrays["x"], n_in)
    y, labels = _targets(path, "y", arrays["y"], len(x), n_out, problem)
    classification = labels is not None
    if "x_test" in arrays:
        if test_fraction is not None:
            raise ValueError(f"{path} has x_test and y_test, and a test_fraction is given too;"
                             " allowed: one held-out set, from the file or from test_fraction")
        x_test = _inputs(path, "x_test", arrays["x_test"], n_in)
        y_test, labels_test = _targets(path, "y_test", arrays["y_test"], len(x_test), n_out,
                                       "classification" if classification else "regression")
        held_out = {"held_out": "x_test and y_test of the file"}
        x_train, y_train, labels_train = x, y, labels
    elif test_fraction is not None:
        mask = split_held_out(len(x), test_fraction, seed, labels)
        x_train, y_train, x_test, y_test = x[~mask], y[~mask], x[mask], y[mask]
        labels_train = None if labels is None else labels[~mask]
        labels_test = None if labels is None else labels[mask]
        held_out = {"held_out": f"test_fraction = {test_fraction:g} of the file's examples"
                    + (" (stratified by class)" if classification else "")
                    + (f", seed {seed}" if isinstance(seed, Integral) else "")}
    else:
        x_train, y_train, labels_train = x, y, labels
        x_test, y_test = np.zeros((0, n_in)), np.zeros((0, n_out))
        labels_test = None if labels is None else np.zeros(0, dtype=np.int64)
        held_out = {"held_out": "none"}
    if loss == "softmax_cross_entropy":
        for name, t in (("y", y_train), ("y_test", y_test)):
            if np.any(t < 0) or not np.allclose(t.sum(axis=1), 1.0, rtol=0, atol=1e-9):
                raise ValueError(f"{path}: softmax cross-entropy needs every row of {name} to be"
                                 " a distribution (entries ≥ 0, summing to 1), e.g. one-hot"
                                 " labels or integer class labels")
    return Task(
        name="npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, loss=loss,
        labels_train=labels_train, labels_test=labels_test,
        metadata={"path": str(path), "problem": "classification" if classification
                  else "regression", **held_out},
    )


def read_npz(path, n_in: int, n_out: int, loss: str = "squared_error"
             ) -> tuple[np.ndarray, np.ndarray]:
    """The training examples of a user's ``.npz`` file, checked against a circuit.

    The arrays ``x`` and ``y`` of :func:`read_npz_task` (which see for the layouts allowed),
    ``y`` as targets of shape (n, n_out) (class labels one-hot encoded).

    Returns
    -------
    x, y : numpy.ndarray
        float64, shapes (n, n_in) and (n, n_out).
    """
    task = read_npz_task(path, n_in, n_out, loss)
    return np.array(task.x_train), np.array(task.y_train)
