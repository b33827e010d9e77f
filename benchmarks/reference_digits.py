"""Reference learning benchmark: BP, DTP, difference TP and regularized-inverse TP on digits.

Run ``python -m benchmarks.reference_digits [--output-dir benchmarks]``. A [64, 64, 64, 10]
leaky-ReLU network (same initialization seed, same data split, same mini-batch seed for every
method) is trained for 20 epochs by each method of :func:`cdtp.reference.trainer.train`; the
table (method, final and best test accuracy, first epoch at ≥ 90 %, wall time, hyper-parameters)
is printed and written to ``REFERENCE_DIGITS.md`` with the machine description, and the test
accuracy curves to ``reference_digits.png``.

Acceptance target (issue): BP ≥ 95 % and DTP ≥ 90 % test accuracy within 20 epochs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cdtp.data.tasks import digits
from cdtp.model.layers import init_network
from cdtp.reference.trainer import train

__all__ = ["CONFIGS", "main", "run"]

SIZES = (64, 64, 64, 10)
EPOCHS = 20
BATCH_SIZE = 16
INIT_SEED = 0
SPLIT_SEED = 0
TRAIN_SEED = 0

#: Rows of the table: label → ``method`` plus hyper-parameters, tuned on a small grid (see
#: REFERENCE_DIGITS.md) with the same split and seeds; passed to
#: :func:`cdtp.reference.trainer.train`.
CONFIGS = {
    "bp": {"method": "bp", "lr": 0.1},
    "dtp": {
        "method": "dtp",
        "lr": 300.0,
        "beta": 0.1,
        "decoder_lr": 1.0,
        "decoder_noise": 0.1,
        "inversion": "differential",
        "inversion_iterations": 5,
        "inversion_step": 0.5,
    },
    # The same DTP with the converged input-correction inversion of Sec 5 (Eq 27) instead:
    # shown to document why the default starts the inversion at h_{l-1} (trainer docstring).
    "dtp_input_correction": {
        "method": "dtp",
        "lr": 300.0,
        "beta": 0.1,
        "decoder_lr": 1.0,
        "decoder_noise": 0.1,
        "inversion": "input",
        "inversion_iterations": 50,
    },
    "difference_tp": {
        "method": "difference_tp",
        "lr": 0.1,
        "beta": 1.0,
        "decoder_lr": 1.0,
        "decoder_noise": 0.1,
    },
    "regularized_tp": {"method": "regularized_tp", "lr": 0.1, "beta": 1.0, "regularization": 0.1},
}


def run(epochs: int = EPOCHS) -> dict:
    """Train every row of :data:`CONFIGS`; returns {label: Dataset}."""
    task = digits(seed=SPLIT_SEED)
    results = {}
    for label, cfg in CONFIGS.items():
        cfg = dict(cfg)
        method = cfg.pop("method")
        net = init_network(SIZES, np.random.default_rng(INIT_SEED))
        results[label] = train(
            net, task, method, epochs=epochs, batch_size=BATCH_SIZE, seed=TRAIN_SEED, **cfg
        )
    return results


def _epochs_to(ds, level: float) -> str:
    hit = np.flatnonzero(ds.test_accuracy.values >= level)
    return str(int(ds.epoch.values[hit[0]])) if hit.size else "never"


def _table(results: dict) -> str:
    lines = [
        "| row | final test acc. | best test acc. | epochs to 90 % | wall time (s) "
        "| hyper-parameters |",
        "|---|---|---|---|---|---|",
    ]
    for method, ds in results.items():
        acc = ds.test_accuracy.values
        params = ", ".join(f"{k}={v}" for k, v in CONFIGS[method].items() if k != "method")
        lines.append(
            f"| {method} | {acc[-1]:.3f} | {acc.max():.3f} | {_epochs_to(ds, 0.9)} "
            f"| {float(ds.wall_time[-1]):.1f} | {params} |"
        )
    return "\n".join(lines)


def _machine() -> str:
    return (
        f"- platform: {platform.platform()}\n"
        f"- processor: {platform.processor() or platform.machine()}, cpu count {os.cpu_count()}\n"
        f"- python {platform.python_version()}, numpy {np.__version__}\n"
        f"- date: {datetime.date.today().isoformat()}\n"
    )


def _figure(results: dict, path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, ds in results.items():
        ax.plot(ds.epoch, ds.test_accuracy, marker=".", label=method)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{ds.test_accuracy.attrs['long_name']} [{ds.test_accuracy.attrs['units']}]")
    ax.set_title(f"digits, {list(SIZES)} leaky ReLU, batch {BATCH_SIZE}")
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args(argv)
    results = run(args.epochs)
    table = _table(results)
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    _figure(results, os.path.join(args.output_dir, "reference_digits.png"))
    bp, dtp = (float(results[m].test_accuracy.max()) for m in ("bp", "dtp"))
    verdict = (
        f"Target (BP ≥ 0.95, DTP ≥ 0.90 within {args.epochs} epochs, best epoch): "
        f"BP {bp:.3f} {'met' if bp >= 0.95 else 'NOT met'}, "
        f"DTP {dtp:.3f} {'met' if dtp >= 0.9 else 'NOT met'}."
    )
    print(verdict)
    text = (
        "# Reference learning benchmark: digits\n\n"
        f"`python -m benchmarks.reference_digits` — {list(SIZES)} leaky-ReLU (slope 0.1) network "
        f"with biases, {args.epochs} epochs, batch size {BATCH_SIZE}, initialization seed "
        f"{INIT_SEED} (same initial weights for every method), stratified split seed "
        f"{SPLIT_SEED} (1438 train / 359 test, inputs pixel/16 in [0, 1]), mini-batch/noise "
        f"seed {TRAIN_SEED}. Methods as documented in `cdtp/reference/trainer.py`; accuracies "
        "are fractions of the 359 test images, evaluated after every epoch; wall time is "
        "training only.\n\n"
        f"{table}\n\n{verdict}\n\n## Machine\n\n{_machine()}"
    )
    path = os.path.join(args.output_dir, "REFERENCE_DIGITS.md")
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
