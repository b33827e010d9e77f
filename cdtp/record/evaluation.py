"""Held-out evaluation of a run: test accuracy or test loss of the circuit's forward weights,
at the end of every epoch (analysis side: numpy and xarray, never brian2).

An *epoch* is one pass over the training examples (``epoch_length`` γ cycles, one example
each). :class:`HeldOut` is handed to :func:`cdtp.brian.simulation.simulate`, which shows it the
feedforward weights W_1..W_L it reads from the network at the end of every cycle; at cycle 0
(the initial weights), at every multiple of ``epoch_length`` and at the end of the run (also
of a run shorter than an epoch, or cut short), it runs the circuit's forward map on the test
examples with numpy — h_0 = x, h_l = W_l [σ(h_{l−1}); 1] (:class:`cdtp.model.layers.Network`,
the bias a constant-1 unit) — and records:

=================  =========  =========================================================
variable           dims       what
=================  =========  =========================================================
``test_accuracy``  (epoch)    fraction of test examples whose largest output h_L is the
                              label's class (classification tasks only)
``test_loss``      (epoch)    mean over the test examples of the circuit's loss ℓ(h_L, y)
=================  =========  =========================================================

Coordinates: ``epoch`` (examples seen / epoch length: 0, 1, 2, … and a fraction for an
evaluation at the end of a run that stops inside an epoch) and ``examples_seen`` (γ cycles
completed). The global attribute ``held_out`` (JSON) says where the test examples came from,
how many there are, the problem kind and the epoch length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from cdtp.model.layers import Network
from cdtp.model.losses import get_loss
from cdtp.model.nonlinearities import get_nonlinearity

__all__ = ["HeldOut", "forward_network", "held_out_summary"]


def forward_network(circuit, weights) -> Network:
    """The circuit's feedforward map with the weights ``weights`` as a numpy
    :class:`~cdtp.model.layers.Network`.

    Parameters
    ----------
    circuit : cdtp.model.circuit.CircuitConfig
        Gives the sizes, σ (with its leaky slope) and the bias.
    weights : mapping
        ``weights["feedforward_l"]`` is W_l, as an (n_l, n_{l−1} [+1]) matrix or raveled
        row-major (the layout of the results file's ``weight`` variable and of
        :meth:`cdtp.brian.engine.CircuitRun.weights`), for l = 1..L.
    """
    sizes = tuple(circuit.sizes)
    b = int(circuit.bias)
    ws: list = [None]
    for l in range(1, len(sizes)):
        ws.append(np.asarray(weights[f"feedforward_{l}"], dtype=float).reshape(
            sizes[l], sizes[l - 1] + b))
    return Network(sizes=sizes, weights=ws, feedback=[None] * len(sizes),
                   sigma=get_nonlinearity(circuit.nonlinearity, slope=circuit.leaky_slope),
                   bias=circuit.bias)


@dataclass
class HeldOut:
    """Evaluates the circuit on held-out examples at the end of every epoch.

    Parameters
    ----------
    circuit : cdtp.model.circuit.CircuitConfig
    x_test : numpy.ndarray
        Test inputs, (n_test, n_0).
    y_test : numpy.ndarray
        Test targets, (n_test, n_L) (one-hot rows for a classification).
    labels_test : numpy.ndarray or None
        Integer class labels (n_test,) for a classification; None for a regression (then only
        the test loss is recorded).
    epoch_length : int
        Training examples per epoch (γ cycles).
    source : str
        Where the test examples came from (stored in the ``held_out`` attribute).
    """

    circuit: object
    x_test: np.ndarray
    y_test: np.ndarray
    labels_test: np.ndarray | None
    epoch_length: int
    source: str = ""
    _rows: dict = field(default_factory=dict)
    _last: tuple | None = None

    def __post_init__(self):
        self.x_test = np.asarray(self.x_test, dtype=float)
        self.y_test = np.asarray(self.y_test, dtype=float)
        if self.labels_test is not None:
            self.labels_test = np.asarray(self.labels_test, dtype=np.int64)
        if len(self.x_test) == 0:
            raise ValueError("a held-out evaluation needs at least one test example")
        if int(self.epoch_length) < 1:
            raise ValueError(f"epoch_length = {self.epoch_length}; allowed: an integer ≥ 1")
        self.epoch_length = int(self.epoch_length)
        self.loss = get_loss(self.circuit.loss)

    @property
    def classification(self) -> bool:
        """True when test accuracy is defined (the task has class labels)."""
        return self.labels_test is not None

    def evaluate(self, weights) -> tuple[float, float]:
        """(test accuracy — NaN for a regression —, mean test loss) of the forward map with
        ``weights`` (see :func:`forward_network`); NaN for both when the output is not
        finite (a diverged run)."""
        out = forward_network(self.circuit, weights).forward(self.x_test)[-1]
        if not np.all(np.isfinite(out)):
            return float("nan"), float("nan")
        loss = float(np.mean(self.loss.value(out, self.y_test)))
        if not self.classification:
            return float("nan"), loss
        return float(np.mean(np.argmax(out, axis=1) == self.labels_test)), loss

    def observe(self, cycles_done: int, weights) -> None:
        """The weights at the end of cycle ``cycles_done`` − 1 (at the start of the run for
        0): evaluated when an epoch ends there; otherwise kept for :meth:`finish`."""
        if cycles_done % self.epoch_length == 0 and cycles_done not in self._rows:
            self._rows[cycles_done] = self.evaluate(weights)
        self._last = (cycles_done, weights)

    def finish(self, cycles_done: int) -> None:
        """Evaluate the end of the run (``cycles_done`` cycles completed) if no epoch ended
        there."""
        if cycles_done not in self._rows and self._last is not None and (
                self._last[0] == cycles_done):
            self._rows[cycles_done] = self.evaluate(self._last[1])
        self._last = None

    def attributes(self) -> dict:
        """The ``held_out`` attribute: source, number of test examples, problem, epoch
        length."""
        return {"source": self.source, "n_test": len(self.x_test),
                "problem": "classification" if self.classification else "regression",
                "epoch_length": self.epoch_length}

    def dataset(self) -> xr.Dataset:
        """The evaluations so far as a Dataset on the ``epoch`` dimension."""
        seen = np.array(sorted(self._rows), dtype=np.int64)
        acc = np.array([self._rows[k][0] for k in seen], dtype=float)
        loss = np.array([self._rows[k][1] for k in seen], dtype=float)
        coords = {
            "epoch": ("epoch", seen / self.epoch_length,
                      {"units": "1", "long_name": "epochs completed (passes over the training"
                       " examples)"}),
            "examples_seen": ("epoch", seen, {"units": "1", "long_name": "training examples"
                                              " presented (γ cycles completed)"}),
        }
        data = {"test_loss": ("epoch", loss, {
            "units": "1", "long_name": f"held-out loss: mean {self.loss.name} over"
            f" {len(self.x_test)} test examples"})}
        if self.classification:
            data["test_accuracy"] = ("epoch", acc, {
                "units": "1", "long_name": "held-out accuracy: fraction of"
                f" {len(self.x_test)} test examples classified correctly"})
        return xr.Dataset(data, coords=coords)


def held_out_summary(ds: xr.Dataset) -> list[str]:
    """Lines describing a Dataset's held-out evaluation (for ``cdtp info``); empty when there
    is none."""
    if "test_loss" not in ds:
        return []
    try:
        meta = json.loads(ds.attrs.get("held_out", "{}"))
    except (TypeError, ValueError):
        meta = {}
    lines = [f"held out: {meta.get('n_test', '?')} test examples"
             + (f" ({meta['source']})" if meta.get("source") else "")
             + (f", epoch = {meta['epoch_length']} examples" if "epoch_length" in meta else "")]
    name = "test_accuracy" if "test_accuracy" in ds else "test_loss"
    values = ", ".join(
        f"{float(e):g}: {float(v):.4g}" for e, v in zip(ds.epoch.values, ds[name].values))
    lines.append(f"{name.replace('_', ' ')} by epoch: {values}")
    return lines
