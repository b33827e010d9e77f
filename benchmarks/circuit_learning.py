"""Learning in the Brian2 CDTP circuit: teacher-student regression and 8×8 digits.

One example is clamped per γ cycle and the circuit runs continuously across examples (no
resets); weights change on the fly during each cycle's plasticity window. The script prints a
Markdown table and, with ``--write``, stores it in ``benchmarks/CIRCUIT_LEARNING.md`` together
with a figure of the learning curves.

Run ``python -m benchmarks.circuit_learning --write`` (about 10 min on 2 cores with the Brian2
``numpy`` target; ``--device cython`` compiles first, then runs faster).

What is measured
----------------
- teacher-student: the online squared error of each cycle's output (held at the end of the
  cycle's feedforward phase, before that cycle's weight change), first 20 cycles vs last 20 of
  300; the issue asks for a ≥ 10× fall.
- digits: test accuracy of the circuit's feedforward pass (its weights read back from the
  Brian2 synapses, the forward pass evaluated with :meth:`cdtp.model.layers.Network.forward`: the
  value a_L settles to in the feedforward phase, since h and a follow W σ(a) there) after each
  epoch, and the online training accuracy of the cycles' own outputs; the issue asks for
  ≥ 85 % within 3 epochs on a [64, 64, 64, 10] circuit.
- wall time of the simulation (excluding the build and code generation) and µs per simulated
  step.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np

from cdtp.brian.engine import build, initial_network
from cdtp.data import tasks
from cdtp.model.circuit import CircuitConfig, load_circuit
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.model.layers import Network

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# γ: a 50 Hz square wave (20 ms cycles), feedforward for the first 30 %, sampled at dt = 1 ms.
# With τ_a = τ_u = dt and algebraic h and τ, each phase converges within its steps (the
# discrete-limit setting of docs/model.md §2.2, where the circuit equals the reference map).
DT = 1e-3
# Teacher seeds of the table. The circuit's settings were chosen on teachers 10–14; these are
# fresh ones.
TEACHER_SEEDS = tuple(range(20, 30))
SCHEDULE = Schedule(
    gamma=GammaSchedule(shape="square", frequency=50.0, duty=0.3),
    plasticity=PlasticityGate(kind="descending"),
)


def teacher_student_circuit() -> CircuitConfig:
    """``circuits/teacher_student.toml``: (6, 6, 6, 4) tanh units in the discrete limit."""
    return load_circuit(ROOT / "circuits" / "teacher_student.toml")


def digits_circuit() -> CircuitConfig:
    """``circuits/digits.toml``: the [64, 64, 64, 10] softmax circuit in the discrete limit."""
    return load_circuit(ROOT / "circuits" / "digits.toml")


def network_of(run, circuit: CircuitConfig) -> Network:
    """The circuit's current feedforward and feedback weights as a numpy :class:`Network`."""
    net = initial_network(circuit)
    for l in range(1, circuit.depth + 1):
        net.weights[l] = run.weights(l)
        if l >= 2:
            net.feedback[l] = run.feedback_weights(l)
    return net


def run_teacher_student(device: str, teachers=TEACHER_SEEDS, cycles: int = 300) -> dict:
    """Train the circuit on ``cycles`` examples of each teacher; one fresh circuit per teacher.

    The teacher has the student's architecture, with its own seed (teacher seeds differ from
    the circuit's seed, or the student would start at the teacher).
    """
    circuit = teacher_student_circuit()
    rows, curves, wall, build_time, steps, diverged = [], [], 0.0, 0.0, 0, []
    for seed in teachers:
        task = tasks.teacher_student(
            seed,
            n_in=6,
            hidden=(6, 6),
            n_out=4,
            n_train=cycles,
            n_test=256,
            nonlinearity="tanh",
        )

        def test_loss(net, task=task):
            out = net.forward(task.x_test)[-1]
            return 0.5 * float(np.mean(np.sum((out - task.y_test) ** 2, axis=1)))

        before = test_loss(initial_network(circuit))
        t0 = time.perf_counter()
        run = build(circuit, SCHEDULE, task.x_train, task.y_train, dt=DT, device=device)
        build_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        run.run(cycles)
        wall += time.perf_counter() - t0
        steps += run.cycle * run.steps_per_cycle
        online = 0.5 * np.sum((run.outputs() - task.y_train[: run.cycle]) ** 2, axis=1)
        curves.append(online)
        after = test_loss(network_of(run, circuit))
        rows.append(
            {
                "teacher": seed,
                "online_first": float(np.mean(online[:20])),
                "online_last": float(np.mean(online[-20:])),
                "test_before": before,
                "test_after": after,
            }
        )
        diverged.append(run.diverged)
    return {
        "circuit": circuit,
        "rows": rows,
        "curves": curves,
        "wall": wall,
        "build": build_time,
        "steps": steps,
        "diverged": diverged,
        "cycles": cycles,
    }


# Variants of the digits circuit run for contrast: (label, overrides of circuits/digits.toml).
DIGITS_VARIANTS = (
    ("circuits/digits.toml", {}),
    ("leaky ReLU σ (slope 0.1)", {"nonlinearity": "leaky_relu"}),
    ("Ω learned by Δ1, η_Ω = 20 /s", {"feedback_rule": "delta1", "eta_omega": 20.0}),
    ("Ω learned by Δ1, η_Ω = 2 /s", {"feedback_rule": "delta1", "eta_omega": 2.0}),
)


def run_digits(device: str, epochs: int = 3, overrides: dict | None = None) -> dict:
    circuit = dataclasses.replace(digits_circuit(), **(overrides or {}))
    task = tasks.digits(seed=0)
    rng = np.random.default_rng(circuit.seed)
    order = np.concatenate([rng.permutation(task.n_train) for _ in range(epochs)])
    x, y = task.x_train[order], task.y_train[order]
    t0 = time.perf_counter()
    run = build(circuit, SCHEDULE, x, y, dt=DT, device=device)
    t_build = time.perf_counter() - t0
    test_acc, train_acc, wall = [], [], 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        run.run(task.n_train)
        wall += time.perf_counter() - t0
        if run.diverged:
            break
        net = network_of(run, circuit)
        pred = np.argmax(net.forward(task.x_test)[-1], axis=1)
        test_acc.append(float(np.mean(pred == task.labels_test)))
        k = run.cycle
        online = np.argmax(run.outputs()[k - task.n_train : k], axis=1)
        train_acc.append(float(np.mean(online == task.labels_train[order[k - task.n_train : k]])))
    steps = run.cycle * run.steps_per_cycle
    return {
        "circuit": circuit,
        "n_train": task.n_train,
        "n_test": task.n_test,
        "test_accuracy": test_acc,
        "online_accuracy": train_acc,
        "wall": wall,
        "build": t_build,
        "steps": steps,
        "diverged": run.diverged,
    }


def describe(c: CircuitConfig) -> str:
    return (
        f"sizes {list(c.sizes)}, {c.nonlinearity}, loss {c.loss}, τ_h = {c.tau_h * 1e3:g} ms,"
        f" τ_a = {c.tau_a * 1e3:g} ms, τ_u = {c.tau_u * 1e3:g} ms, τ_τ = {c.tau_tau * 1e3:g} ms,"
        f" hold {c.hold.kind} ε = {c.hold.epsilon:g}, feedback {c.feedback_rule} (init"
        f" {c.feedback_init}, r = {c.regularization:g}), η_W = {c.eta_w:g},"
        f" η_Ω = {c.eta_omega:g} /s, β = {c.beta:g}, influence {c.influence}, seed {c.seed}"
    )


def table(ts: dict | None, dg: dict | None, device: str) -> str:
    lines = [
        "# Learning in the Brian2 circuit",
        "",
        "Generated by `python -m benchmarks.circuit_learning --write`.",
        "",
        "| key | value |",
        "|---|---|",
        f"| platform | {platform.platform()} |",
        f"| python | {platform.python_version()} |",
        f"| Brian2 device | {device} |",
        f"| date | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} |",
        "",
        f"γ: square, {SCHEDULE.gamma.frequency:g} Hz, duty {SCHEDULE.gamma.duty:g};"
        f" plasticity gate {SCHEDULE.plasticity.kind}; dt = {DT * 1e3:g} ms"
        f" ({round(1 / (SCHEDULE.gamma.frequency * DT))} steps per cycle); one example per γ"
        " cycle, no resets between examples.",
        "",
    ]
    if ts:
        n = ts["cycles"]
        lines += [
            f"## Teacher-student regression ({n} cycles, {len(ts['rows'])} teachers)",
            "",
            f"Circuit: {describe(ts['circuit'])}.",
            "",
            "Online loss: ½‖a_L − y‖² of each cycle's own example, mean of the first 20 and the"
            f" last 20 of {n} cycles. Test loss: the same on 256 held-out inputs, before and"
            " after.",
            "",
            "| teacher seed | online, first 20 | online, last 20 | fall | test before | test after"
            " | fall |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ts["rows"]:
            lines.append(
                f"| {r['teacher']} | {r['online_first']:.4f} | {r['online_last']:.4f}"
                f" | {r['online_first'] / r['online_last']:.1f}× | {r['test_before']:.4f}"
                f" | {r['test_after']:.4f} | {r['test_before'] / r['test_after']:.1f}× |"
            )
        online = [r["online_first"] / r["online_last"] for r in ts["rows"]]
        test = [r["test_before"] / r["test_after"] for r in ts["rows"]]
        lines += [
            "",
            f"Median fall: online {np.median(online):.1f}×, test {np.median(test):.1f}×;"
            f" teachers with a ≥ 10× fall: online {sum(x >= 10 for x in online)}/{len(online)},"
            f" test {sum(x >= 10 for x in test)}/{len(test)}. Simulation wall time"
            f" {ts['wall']:.1f} s for {ts['steps']} steps: {1e6 * ts['wall'] / ts['steps']:.0f} µs"
            f" per step; build {ts['build']:.1f} s in all; diverged runs:"
            f" {sum(bool(d) for d in ts['diverged'])}.",
            "",
        ]
    if dg:
        main = dg[0][1]
        epochs = max(len(r["test_accuracy"]) for _, r in dg)
        lines += [
            "## Digits, [64, 64, 64, 10], one example per γ cycle",
            "",
            f"Circuit (first row): {describe(main['circuit'])}. Other rows change only what"
            " their label says.",
            "",
            "Test accuracy of the circuit's weights after each epoch"
            f" ({main['n_train']} training examples, {main['n_test']} test examples); online"
            " accuracy = the cycles' own outputs over the last"
            " epoch, before each cycle's weight change.",
            "",
            "| variant | "
            + " | ".join(f"test, epoch {e}" for e in range(1, epochs + 1))
            + " | online, last epoch | wall time | µs / step | diverged |",
            "|---|" + "---|" * (epochs + 4),
        ]
        for label, r in dg:
            acc = [f"{a:.3f}" for a in r["test_accuracy"]]
            acc += ["—"] * (epochs - len(acc))
            online = f"{r['online_accuracy'][-1]:.3f}" if r["online_accuracy"] else "—"
            lines.append(
                f"| {label} | " + " | ".join(acc) + f" | {online} | {r['wall']:.1f} s"
                f" | {1e6 * r['wall'] / max(r['steps'], 1):.0f}"
                f" | {(r['diverged'] or 'no').replace('|', chr(92) + '|')} |"
            )
        lines.append("")
    return "\n".join(lines)


def figure(ts: dict | None, dg: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if ts:
        for curve in ts["curves"]:
            k = np.arange(19, len(curve))
            axes[0].semilogy(k, np.convolve(curve, np.ones(20) / 20, "valid"), lw=0.8)
        axes[0].set(
            xlabel="γ cycle (one example each)",
            ylabel="online squared error (20-cycle mean)",
            title=f"teacher-student, {len(ts['curves'])} teachers",
        )
    if dg:
        for label, r in dg:
            e = np.arange(1, len(r["test_accuracy"]) + 1)
            axes[1].plot(e, r["test_accuracy"], "o-", label=label)
        axes[1].axhline(0.85, color="grey", lw=0.8, ls=":")
        axes[1].set(
            xlabel="epoch", ylabel="test accuracy", title="digits [64, 64, 64, 10]", ylim=(0, 1)
        )
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="numpy", choices=("numpy", "cython"))
    parser.add_argument("--task", default="both", choices=("both", "teacher_student", "digits"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--write", action="store_true", help="store the table and figure in benchmarks/"
    )
    args = parser.parse_args(argv)
    ts = run_teacher_student(args.device) if args.task in ("both", "teacher_student") else None
    dg = None
    if args.task in ("both", "digits"):
        dg = [
            (label, run_digits(args.device, args.epochs, overrides))
            for label, overrides in DIGITS_VARIANTS
        ]
    text = table(ts, dg, args.device)
    print(text)
    if args.write:
        (HERE / "CIRCUIT_LEARNING.md").write_text(text + "\n![curves](circuit_learning.png)\n")
        figure(ts, dg, HERE / "circuit_learning.png")


if __name__ == "__main__":
    main()
