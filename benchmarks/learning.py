"""Learning that holds up: the circuit with the feedback it learns itself, against backprop.

One example per γ cycle (the γ of ``scenarios/theta_digits.toml``: square, 5 Hz, duty 0.075 —
15 feedforward and 185 feedback steps of dt = 1 ms — descending plasticity gate), the Brian2
circuit running continuously across examples (no resets), weights and feedback weights changing
while it runs (the recipe consolidates each cycle's weight change at the next cycle's start).
The circuit file is ``circuits/digits.toml`` (the learning recipe); for the other tasks only
its layer sizes change. Each task's training set is split into a fit part and a
validation part; settings (the recipe's, and backprop's step) are chosen on the validation part,
and the test split is used once, for the reported number.

Rows (3 seeds each: initial weights and example order; mean ± sd):

- ``circuit``: the Brian2 circuit, test accuracy of its feedforward pass after the last
  epoch; by default on cpp_standalone, all seeds as one compiled network
  (:func:`run_circuits_standalone`), weights after each epoch from snapshots; ``--device
  cython`` runs the seeds one by one and reads the weights back between epochs;
- ``reference recipe``: the same rule with its loops solved (``cdtp_recipe``), the circuit's
  settings, initial weights and example order;
- ``map`` (``--add-map``): the discrete CDTP map, the circuit's numpy oracle, all seeds as one
  batch;
- ``reference difference TP`` (``--add-dtp``): Lee et al.'s DTP from cdtp.reference, (β, step)
  chosen on the validation part (:func:`run_dtp`);
- ``BP``: the same architecture and initial weights, the same examples in the same order,
  plain online SGD (batch 1) at the step that is best on the validation part
  (:func:`cdtp.reference.trainer.train`, ``method="bp"``); only that step is run on the test.

Each epoch also records what the feedback computes (:func:`diagnostics`): the decoders'
reconstruction errors and the angles of the update to backprop's and Gauss-Newton's.

Run ``python -m benchmarks.learning --write`` (about an hour on 2 cores); ``--task NAME``
runs one task and stores its numbers in ``benchmarks/learning_results/NAME.json`` (tasks can run
in parallel processes), ``--report`` writes ``LEARNING.md`` from the stored numbers; ``--quick``
runs one seed and one epoch of each task, to check the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.circuit_learning import network_of
from cdtp.brian.engine import build, initial_network
from cdtp.data import tasks
from cdtp.model.circuit import CircuitConfig, load_circuit
from cdtp.model.layers import Network
from cdtp.reference import alignment, cdtp_map
from cdtp.reference.trainer import TrainingDiverged, train
from cdtp.study.scenario import load_scenario

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the recipe's γ and dt: those of the scenario that ships it
_THETA_DIGITS = load_scenario(ROOT / "scenarios" / "theta_digits.toml")
DT = _THETA_DIGITS.dt
SCHEDULE = _THETA_DIGITS.schedule
SEEDS = (0, 1, 2)
BP_STEPS = (0.003, 0.01, 0.03, 0.1)
# MNIST-1D's inputs (unit variance, peaks near ±5) scaled into tanh's near-linear range: online
# BP's validation accuracy after 10 epochs is 0.28 at scale 1, 0.37–0.39 at 0.5 and 0.25
# (benchmarks/learning_results/exploration.md)
MNIST1D_SCALE = 0.25


@dataclasses.dataclass(frozen=True)
class Spec:
    """One task of the table."""

    name: str
    sizes: tuple
    epochs: int
    make: object  # (fold=0) -> (fit Task, validation Task, test Task); fold seeds the split
    note: str
    nonlinearity: str = "tanh"


def _split(task: tasks.Task, n_val: int, seed: int = 0):
    """(fit, validation, test) tasks: the last ``n_val`` of a permutation of the training set,
    drawn from ``seed``, is held out for validation. The reported rows use seed 0; other seeds
    give other validation folds of the same training set (``learning_targets --folds``), for
    choosing settings on more than one draw of 288 examples. The test split never changes."""
    order = np.random.default_rng(seed).permutation(task.n_train)
    fit, val = order[:-n_val], order[-n_val:]

    def sub(idx_train, x_test, y_test, l_test):
        return tasks.Task(task.name, task.x_train[idx_train], task.y_train[idx_train], x_test,
                          y_test, task.loss, task.labels_train[idx_train], l_test)

    # the fit task's "test" split is the validation part: the one used to choose settings
    validation = sub(fit, task.x_train[val], task.y_train[val], task.labels_train[val])
    return validation, validation, sub(fit, task.x_test, task.y_test, task.labels_test)


def specs(quick: bool = False) -> list[Spec]:
    return [
        Spec("digits", (64, 64, 64, 10), 1 if quick else 10,
             lambda fold=0: _split(tasks.digits(seed=0), 288, fold),
             "8×8 digits, 1 150 fit / 288 validation / 359 test"),
        Spec("mnist1d", (40, 100, 100, 10), 1 if quick else 10,
             lambda fold=0: _split(tasks.mnist1d(42, scale=MNIST1D_SCALE), 800, fold),
             "MNIST-1D (the `mnist1d` package's make_dataset, seed 42, generated offline),"
             f" inputs × {MNIST1D_SCALE} (tanh's near-linear range; exploration below),"
             " 3 200 fit / 800 validation / 1 000 test (chance 0.1)"),
        Spec("teacher_classes", (16, 32, 32, 3), 1,
             lambda fold=0: _split(tasks.teacher_classes(7, n_train=6000, n_test=1000), 1000,
                                        fold),
             "16 Gaussian inputs, 3 classes from a random tanh teacher [16, 32, 3]; one pass over"
             " 5 000 examples, 1 000 validation, 1 000 test (not used to tune anything)"),
        Spec("digits_leaky_relu", (64, 64, 64, 10), 1 if quick else 10,
             lambda fold=0: _split(tasks.digits(seed=0), 288, fold),
             "the digits task with σ = leaky ReLU (slope 0.1) in the circuit and in BP, nothing"
             " else changed (the recipe was not tuned for it)", "leaky_relu"),
    ]


def circuit_for(sizes, nonlinearity: str = "tanh") -> CircuitConfig:
    """The recipe, ``circuits/digits.toml``, with only its layer sizes (and, for the ReLU-family
    rows, its σ) changed."""
    base = load_circuit(ROOT / "circuits" / "digits.toml")
    return dataclasses.replace(base, sizes=tuple(sizes), nonlinearity=nonlinearity,
                               name=f"recipe{list(sizes)}")


def accuracy(net: Network, task: tasks.Task) -> float:
    out = net.forward(task.x_test)[-1]
    return float(np.mean(np.argmax(out, axis=1) == task.labels_test))


def stream(task: tasks.Task, epochs: int, seed: int):
    """The training examples, shuffled anew each epoch by the run's own generator."""
    rng = np.random.default_rng(100 + seed)
    order = np.concatenate([rng.permutation(task.n_train) for _ in range(epochs)])
    return task.x_train[order], task.y_train[order]


PREMISE_CYCLES = 20
PREMISE_CHECKS = ("P1", "P2", "INV")


def premise_samples(c: CircuitConfig, nets, x, y, n_train: int) -> list:
    """The proposition checks while the circuit learns: from the weights at the start of each
    epoch (``nets[e]``), the circuit runs the epoch's first :data:`PREMISE_CYCLES` examples
    again with u traced at every step (the map, which equals the Brian2 circuit to rounding;
    from rest, with the mirror gains of those weights), and P1, P2 and INV classify every
    (cycle, layer) cell. Per epoch: per check, the counts of each state."""
    from cdtp.analysis.propositions import check_all, counts
    from cdtp.brian.simulation import simulate
    from cdtp.record.dataset import RecordSpec

    out = []
    for e, net in enumerate(nets):
        lo = e * n_train
        if lo + PREMISE_CYCLES > len(x):
            break
        ds = simulate(c, SCHEDULE, x[lo:lo + PREMISE_CYCLES], y[lo:lo + PREMISE_CYCLES], dt=DT,
                      backend="map", record=RecordSpec(variables=("u",)), network=net)
        states = ("cells", "holds", "violated", "premise_not_met", "na")
        per_check = {k: counts(v) for k, v in check_all(ds, list(PREMISE_CHECKS)).items()}
        out.append({k: {state: c[state] for state in states} for k, c in per_check.items()})
    return out


def _evaluate(nets, c, evals, stream=None, n_train=0, **fields) -> dict:
    """Accuracies after each epoch on ``evals``, the feedback diagnostics, and (given the run's
    example ``stream``) the premise samples of :func:`premise_samples`."""
    curves = {k: [accuracy(net, task) for net in nets[1:]] for k, task in evals.items()}
    diag = [diagnostics(net, c, evals["val"]) for net in nets]
    out = {"curves": curves, "diagnostics": diag, **fields}
    if stream is not None:
        out["premises"] = premise_samples(c, nets, *stream, n_train)
    return out


def run_circuit(circuit: CircuitConfig, fit, evals, epochs: int, seed: int) -> dict:
    """One seed of the circuit on cython: the run stops after every epoch and the weights are
    read from the synapses. Per-epoch accuracies and diagnostics, times."""
    c = dataclasses.replace(circuit, seed=seed)
    x, y = stream(fit, epochs, seed)
    t0 = time.perf_counter()
    run = build(c, SCHEDULE, x, y, dt=DT, device="cython")
    t_build = time.perf_counter() - t0
    nets = [initial_network(c)]  # the weights the circuit starts from
    sim = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        run.run(fit.n_train)
        sim += time.perf_counter() - t0
        if run.diverged:
            break
        nets.append(network_of(run, c))
    steps = run.cycle * SCHEDULE.steps_per_cycle(DT)
    return _evaluate(nets, c, evals, (x, y), fit.n_train, diverged=run.diverged, sim=sim,
                     build=t_build, us_per_step=1e6 * sim / max(steps, 1), device="cython")


def _network(c: CircuitConfig, weights, feedback) -> Network:
    """The circuit's numpy :class:`Network` with W_l = ``weights(l)`` and Ω_l =
    ``feedback(l)`` (l ≥ 2)."""
    net = initial_network(c)
    for l in range(1, c.depth + 1):
        net.weights[l] = weights(l)
        if l >= 2:
            net.feedback[l] = feedback(l)
    return net


def run_circuits_standalone(circuit: CircuitConfig, fit, evals, epochs: int, seeds) -> list:
    """Every seed at once on cpp_standalone: one compiled network holding one circuit per seed
    (:func:`cdtp.brian.batch.build_batch`, each with its own initial weights and example order),
    run once through all epochs; the weights after each epoch come from snapshots taken at
    the start of the next epoch's first cycle, and after the run from the synapses."""
    from cdtp.brian.batch import build_batch

    cs = [dataclasses.replace(circuit, seed=s) for s in seeds]
    streams = [stream(fit, epochs, s) for s in seeds]
    n = fit.n_train * epochs
    t0 = time.perf_counter()
    batch = build_batch(circuit, [SCHEDULE] * len(seeds), [x for x, _ in streams],
                        [y for _, y in streams], n, dt=DT, device="cpp_standalone",
                        networks=[initial_network(c) for c in cs], snapshot_every=fit.n_train)
    batch.run()  # code generation, compilation and the simulation
    import brian2

    sim = brian2.get_device()._last_run_time  # the binary's own run time, all seeds together
    t_build = time.perf_counter() - t0 - sim
    steps = n * SCHEDULE.steps_per_cycle(DT)
    out = []
    for k, c in enumerate(cs):
        done = batch.cycles_completed[k] // fit.n_train
        nets = [initial_network(c)]
        for e in range(1, min(done + 1, epochs)):
            nets.append(_network(c, lambda l, e=e, k=k: batch.weight_snapshots(l, k)[e],
                                 lambda l, e=e, k=k: batch.weight_snapshots(l, k, "feedback")[e]))
        if not batch.diverged[k]:
            nets.append(_network(c, lambda l, k=k: batch.weights(l, k),
                                 lambda l, k=k: batch.feedback_weights(l, k)))
        out.append(_evaluate(nets, c, evals, streams[k], fit.n_train,
                             diverged=batch.diverged[k], sim=sim / len(cs),
                             build=t_build / len(cs), us_per_step=1e6 * sim / steps,
                             device=f"cpp_standalone, {len(cs)} seeds in one network"))
    return out


DIAGNOSTIC_EXAMPLES = 200


def diagnostics(net: Network, circuit: CircuitConfig, task: tasks.Task) -> dict:
    """Decoder reconstruction errors, the loops' inversion residuals and the update's angles to
    BP and Gauss-Newton, on the
    first :data:`DIAGNOSTIC_EXAMPLES` validation examples (lists indexed by layer; NaN where
    undefined)."""
    x = task.x_test[:DIAGNOSTIC_EXAMPLES]
    y = task.y_test[:DIAGNOSTIC_EXAMPLES]
    if circuit.normalize_feedback:  # the feedback the loops receive: Ω_l times the units' gain
        net = cdtp_map.normalized_feedback(net)
    rec = alignment.reconstruction_errors(net, x)
    ang = alignment.update_alignment(net, x, y, circuit.loss, circuit.beta, circuit.leak,
                                     rate=DT / circuit.tau_u, decoder=circuit.feedback_decoder)
    out = ({f"rec_{k}": v for k, v in rec.items()}
           | {(k.replace("inversion", "inversion_residual") if k.startswith("inversion")
               else f"angle_{k}"): v for k, v in ang.items()})
    return {k: [None if np.isnan(e) else float(e) for e in v] for k, v in out.items()}


def run_map(circuit: CircuitConfig, fit, evals, epochs: int, seeds, chunk: int = 200) -> list:
    """The discrete CDTP map (:mod:`cdtp.reference.cdtp_map`, the circuit's oracle), every
    seed as one batch of circuits, with the circuit's initial weights and example orders."""
    cs = [dataclasses.replace(circuit, seed=s) for s in seeds]
    inits = [initial_network(c) for c in cs]
    state = cdtp_map.CDTPState.of_networks(inits)
    streams = [stream(fit, epochs, s) for s in seeds]
    x = np.stack([x for x, _ in streams], axis=1)  # (cycles, seeds, n_0)
    y = np.stack([y for _, y in streams], axis=1)
    params = cdtp_map.parameters_of(circuit, DT)
    nets = [[n] for n in inits]
    t0 = time.perf_counter()
    for e in range(epochs):
        for start in range(e * fit.n_train, (e + 1) * fit.n_train, chunk):
            stop = min(start + chunk, (e + 1) * fit.n_train)
            state = cdtp_map.run(inits[0], params, SCHEDULE, x[start:stop], y[start:stop],
                                 record_every=0, state=state)["state"]
        for k, c in enumerate(cs):
            nets[k].append(_network(c, lambda l, k=k, s=state: s.weights[l][k].copy(),
                                    lambda l, k=k, s=state: s.feedback[l][k].copy()))
    sim = time.perf_counter() - t0
    return [_evaluate(n, c, evals, diverged=None, sim=sim / len(cs)) for n, c in zip(nets, cs)]


def run_bp(circuit: CircuitConfig, task, epochs: int, seed: int, lr: float,
           hidden_lr: float | None = None) -> list:
    """Online BP from the circuit's initial weights, in the circuit's example order; accuracy
    on ``task``'s test split after each epoch (index 0: before training). ``hidden_lr``: the
    hidden layers' step, if not ``lr``."""
    c = dataclasses.replace(circuit, seed=seed)
    ds = train(initial_network(c), task, "bp", epochs=epochs, batch_size=1, lr=lr,
               hidden_lr=hidden_lr, seed=100 + seed)
    return [float(v) for v in ds.test_accuracy.values]


def run_bp_layered(circuit: CircuitConfig, val, test, epochs: int, seeds) -> dict | None:
    """BP with the circuit's per-layer steps: the hidden layers at ``eta_w_hidden / eta_w``
    times the output layer's step, which is chosen on validation from :data:`BP_STEPS` — the
    same freedom the recipe has, given to BP (None when the recipe has one η_W). A step whose
    run diverges scores 0 (it is not chosen)."""
    if circuit.eta_w_hidden is None:
        return None
    ratio = circuit.eta_w_hidden / circuit.eta_w

    def last(lr, s):
        try:
            return run_bp(circuit, val, epochs, s, lr, ratio * lr)[-1]
        except TrainingDiverged:
            return 0.0

    t0 = time.perf_counter()
    val_runs = {lr: [last(lr, s) for s in seeds] for lr in BP_STEPS}
    best = max(val_runs, key=lambda lr: np.mean(val_runs[lr]))
    out = {"ratio": ratio, "lr": best, "val": val_runs[best], "all_val": val_runs,
           "test": [run_bp(circuit, test, epochs, s, best, ratio * best)[-1] for s in seeds]}
    out["time"] = (time.perf_counter() - t0) / len(seeds) / (len(BP_STEPS) + 1)
    print(f"BP with hidden steps × {ratio:g}: val {val_runs}, test {out['test']}", flush=True)
    return out


def run_reference(circuit: CircuitConfig, test, epochs: int, seed: int) -> dict:
    """The recipe with its loops solved (``cdtp_recipe``): the circuit's settings, the same
    initial weights and example order, test accuracy per epoch (nothing tuned on it, so no
    validation run)."""
    c = dataclasses.replace(circuit, seed=seed)
    t0 = time.perf_counter()
    ds = train(initial_network(c), test, "cdtp_recipe", epochs=epochs, batch_size=1,
               lr=c.eta_w, hidden_lr=c.eta_w_hidden, beta=c.beta, regularization=c.leak,
               inversion_iterations=1000,
               inversion_step=DT / c.tau_u, seed=100 + seed,
               recipe_decoder=c.feedback_decoder, recipe_normalize=c.normalize_feedback)
    return {"test": [float(v) for v in ds.test_accuracy.values[1:]],
            "time": time.perf_counter() - t0}


DTP_GRID = tuple((beta, lr) for beta in (0.5, 2.0) for lr in BP_STEPS)


def run_dtp(circuit: CircuitConfig, val, test, epochs: int, seeds) -> dict:
    """Reference difference target propagation (Lee et al. 2015; ``difference_tp`` of
    :mod:`cdtp.reference.trainer`: decoders trained on noise-corrupted activities, the delta
    rule towards difference targets), online, the circuit's initial weights and example order;
    (β, step) chosen on the validation part from :data:`DTP_GRID`, then run once on the test."""
    def run(task, seed, beta, lr):
        c = dataclasses.replace(circuit, seed=seed)
        ds = train(initial_network(c), task, "difference_tp", epochs=epochs, batch_size=1,
                   lr=lr, beta=beta, seed=100 + seed)
        return float(ds.test_accuracy.values[-1])

    t0 = time.perf_counter()
    grid = {bl: [run(val, s, *bl) for s in seeds] for bl in DTP_GRID}
    best = max(grid, key=lambda bl: np.mean(grid[bl]))
    t1 = time.perf_counter()
    tests = [run(test, s, *best) for s in seeds]
    return {"beta": best[0], "lr": best[1], "val": grid[best], "test": tests,
            "time": (time.perf_counter() - t1) / len(seeds),
            "grid": {f"{b} {lr}": v for (b, lr), v in grid.items()}, "grid_time": t1 - t0}


def run_task(spec: Spec, seeds, device: str = "cython", with_map: bool = False,
             reference_seeds: int | None = None, stored_bp: dict | None = None) -> dict:
    fit, val, test = spec.make()
    circuit = circuit_for(spec.sizes, spec.nonlinearity)
    res = {"spec": spec, "circuit": [], "bp": {}, "circuit_cfg": circuit}
    evals = {"val": val, "test": test}
    if device == "cpp_standalone":
        res["circuit"] = run_circuits_standalone(circuit, fit, evals, spec.epochs, seeds)
    else:
        res["circuit"] = [run_circuit(circuit, fit, evals, spec.epochs, s) for s in seeds]
    for seed, r in zip(seeds, res["circuit"]):
        print(f"{spec.name} circuit seed {seed}: val {r['curves']['val'][-1:]} test"
              f" {r['curves']['test'][-1:]} ({r['sim']:.0f} s, {r['us_per_step']:.0f} µs/step)",
              flush=True)
    if with_map:
        res["map"] = run_map(circuit, fit, {"val": val, "test": test}, spec.epochs, seeds)
        print(f"{spec.name} map: test {[r['curves']['test'][-1] for r in res['map']]}",
              flush=True)
    res["reference"] = [run_reference(circuit, test, spec.epochs, seed)
                        for seed in seeds[:reference_seeds]]
    print(f"{spec.name} reference recipe: test {[r['test'][-1] for r in res['reference']]}",
          flush=True)
    res["bp_layered"] = run_bp_layered(circuit, val, test, spec.epochs, seeds)
    if stored_bp is not None:
        # BP and the reference difference TP do not depend on the recipe (the same initial W,
        # examples and order), so stored runs of them are reused; the caller checked sizes,
        # epochs and seeds
        res["bp"], res["bp_time"] = stored_bp["bp"], stored_bp["bp_time"]
        if stored_bp.get("dtp"):
            res["dtp"] = stored_bp["dtp"]
        return res
    # BP's step is chosen on the validation part; only the chosen step is run on the test
    for lr in BP_STEPS:
        t0 = time.perf_counter()
        res["bp"][lr] = [{"val": run_bp(circuit, val, spec.epochs, s, lr)} for s in seeds]
        res.setdefault("bp_time", {})[lr] = (time.perf_counter() - t0) / len(seeds)
        print(f"{spec.name} BP lr {lr}: val {[r['val'][-1] for r in res['bp'][lr]]}", flush=True)
    best = max(res["bp"], key=lambda lr: np.mean([r["val"][-1] for r in res["bp"][lr]]))
    for s, r in zip(seeds, res["bp"][best]):
        r["test"] = run_bp(circuit, test, spec.epochs, s, best)
    return res


def _ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def _row(spec: Spec, method: str, val, test, time_text: str, us: str = "—") -> str:
    """One table row; ``val`` and ``test`` are per-seed accuracies (``val`` None: not run)."""
    val_text = "—" if val is None else _ms(val)
    return (f"| {spec.name} | {list(spec.sizes)} | {method} | {spec.epochs} | {val_text} |"
            f" **{_ms(test)}** | {time_text} | {us} |")


def table(results: list[dict]) -> str:
    lines = [
        "| task | sizes | method | epochs | validation acc. | **test acc.** | wall time / seed |"
        " µs / step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        spec = res["spec"]
        cir = res["circuit"]
        ok = [r for r in cir if not r["diverged"]]
        lines.append(_row(
            spec, f"circuit (Brian2, {cir[0].get('device', 'cython')}), {len(cir)} seeds",
            [r["curves"]["val"][-1] for r in ok], [r["curves"]["test"][-1] for r in ok],
            f"{np.mean([r['sim'] for r in cir]):.0f} s (+ {np.mean([r['build'] for r in cir]):.0f}"
            " s build)", f"{np.mean([r['us_per_step'] for r in cir]):.0f}"))
        if res.get("map"):
            mp = res["map"]
            lines.append(_row(
                spec, f"discrete CDTP map (numpy, the circuit's oracle), {len(mp)} seeds",
                [r["curves"]["val"][-1] for r in mp], [r["curves"]["test"][-1] for r in mp],
                f"{np.mean([r['sim'] for r in mp]):.0f} s"))
        if res.get("reference"):
            ref = res["reference"]
            lines.append(_row(
                spec, f"reference recipe, loops solved (`cdtp_recipe`), {len(ref)} seeds", None,
                [r["test"][-1] for r in ref], f"{np.mean([r['time'] for r in ref]):.0f} s"))
        if res.get("dtp"):
            d = res["dtp"]
            lines.append(_row(
                spec, f"reference difference TP (Lee et al., `difference_tp`), {len(d['test'])}"
                f" seeds, β {d['beta']}, step {d['lr']} (best on validation of β 0.5, 2 × the BP"
                " steps)", d["val"], d["test"], f"{d['time']:.0f} s"))
        best = max(res["bp"], key=lambda lr: np.mean([r["val"][-1] for r in res["bp"][lr]]))
        bp = res["bp"][best]
        lines.append(_row(
            spec, f"BP, online SGD, {len(bp)} seeds, step {best} (best on validation of"
            f" {', '.join(map(str, BP_STEPS))})", [r["val"][-1] for r in bp],
            [r["test"][-1] for r in bp], f"{res['bp_time'][best]:.0f} s"))
        if res.get("bp_layered"):
            b = res["bp_layered"]
            lines.append(_row(
                spec, f"BP, online SGD, {len(b['test'])} seeds, hidden layers at {b['ratio']:g}"
                f" × the output's step (the recipe's η_W ratio), step {b['lr']} (best on"
                f" validation of {', '.join(map(str, BP_STEPS))})", b["val"], b["test"],
                f"{b['time']:.0f} s"))
        if len(ok) < len(cir):
            lines.append(f"| {spec.name} | | circuit runs that diverged: {len(cir) - len(ok)} |"
                         " | | | | |")
    return "\n".join(lines)


def curves_table(results: list[dict]) -> str:
    lines = []
    for res in results:
        if res["spec"].epochs < 2:
            continue
        tests = np.array([r["curves"]["test"] for r in res["circuit"] if not r["diverged"]])
        lines.append(f"Circuit test accuracy per epoch, {res['spec'].name} (mean of "
                     f"{len(tests)} seeds): " + ", ".join(f"{v:.3f}" for v in tests.mean(0)))
    return "\n\n".join(lines)


def premises_table(results: list[dict]) -> str:
    """Per task and check: the states of all sampled (cycle, layer) cells, summed over epochs
    and seeds (:func:`premise_samples`)."""
    rows = []
    for res in results:
        runs = [r["premises"] for r in res["circuit"] if r.get("premises")]
        if not runs:
            continue
        for check in PREMISE_CHECKS:
            n = {k: sum(ep[check][k] for run in runs for ep in run)
                 for k in ("cells", "holds", "violated", "premise_not_met", "na")}
            tested = n["cells"] - n["na"]
            rows.append(f"| {res['spec'].name} | {check} | {len(runs)} × {len(runs[0])} ×"
                        f" {PREMISE_CYCLES} | {n['cells']} | **{n['holds']}"
                        f" ({100 * n['holds'] / max(tested, 1):.0f} %)** | {n['violated']} |"
                        f" {n['premise_not_met']} | {n['na']} |")
    if not rows:
        return ""
    return "\n".join([
        "## The theory's premises while the circuit learns",
        "",
        "From the weights at the start of every epoch, the circuit runs that epoch's first"
        f" {PREMISE_CYCLES} examples again with u traced at every step (the map, equal to the"
        " Brian2 circuit to rounding; from rest, with the mirror gains of those weights), and"
        " the checks of `cdtp check` classify each (cycle, hidden layer) cell: P1 (τ = h at the"
        " settled loop), P2 (the loop's fixed point), INV (the loop's contraction α < 1). % of"
        " the cells not n/a.",
        "",
        "| task | check | seeds × epochs × cycles | cells | holds | violated | premise not met |"
        " n/a |",
        "|---|---|---|---|---|---|---|---|",
        *rows])


def _diag_mean(res: dict, key: str) -> np.ndarray:
    """(epochs + 1, L + 1) mean over the seeds that did not diverge."""
    runs = [r["diagnostics"] for r in res["circuit"] if not r["diverged"] and "diagnostics" in r]
    if runs and not any(key in d[0] for d in runs):  # stored before this diagnostic existed
        return np.full((len(runs[0]), len(res["spec"].sizes)), np.nan)
    with warnings.catch_warnings():  # layers without a decoder or an angle are NaN throughout
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.array([[[np.nan if v is None else v for v in row[key]]
                                     for row in d] for d in runs], dtype=float), axis=0)


def _inversion_cell(mean: float, median: float, missed: float) -> str:
    """The inversion residual's table cell: mean, and where recorded its median and the share of
    examples whose loop missed (residual > 1), means over the seeds."""
    if np.isnan(median):  # rows stored before the median and the count were recorded
        return f"{mean:.2f}"
    return f"{mean:.3g} / {median:.2f} ({100 * missed:.0f} %)"


def diagnostics_table(results: list[dict]) -> str:
    """Per task: decoder reconstruction errors and the update's angles, at the start, after
    the first epoch, midway and at the end (mean over seeds)."""
    out = ["## What the feedback computes while the circuit learns",
           "On the first 200 validation examples, after each epoch, mean of the seeds"
           " (`cdtp.reference.alignment`): the decoders' relative reconstruction error"
           " ‖g_l(f_l(h)) − h‖/‖h‖ (*regular*) and, for displacements δ of 5 % of ‖h‖,"
           " ‖g_l(f_l(h + δ)) − g_l(f_l(h)) − δ‖/‖δ‖ (*difference*: what differential feedback"
           " uses); the angle (degrees) of the recipe's per-example update of hidden layer l"
           " (targets of the converged loops on the circuit's current weights) to the backprop"
           " step and to the Gauss-Newton step J_l⁺(τ_L − h_L), and the angle between those"
           " two. Figure: `learning_diagnostics.png`. The reconstruction columns use the"
           " paper's decoder g_l = Ω_l σ̃(·) with the circuit's Ω_l, not the slope-gated"
           " feedback the recipe sends (which is not a decoder of a_{l−1}: it moves targets by"
           " σ′ ⊙ Ω Δu); the angles use the recipe's own loops. Mirrored feedback is not an"
           " inverse, so the reconstruction errors stay near 1: the recipe's inverse is Ω"
           " *and* the settling loop. Its reconstruction error is the *inversion residual*"
           " ‖f_l(τ_{l−1}) − τ_l‖ / ‖τ_l − h_l‖ of the converged loop of layer l: how far the"
           " target it hands down misses the target it was given (at the loop's fixed point,"
           " the leak's share λ‖u − h_l‖ / ‖τ_l − h_l‖; 0 for an exact inverse). It is a"
           " mean over the examples: where the loop of an example stops contracting (its"
           " gain past the step's stability limit, late in training), that example's residual"
           " is large and dominates it. Rows recorded since the tenth round show it as mean /"
           " median (share of the examples whose residual exceeds 1: the target handed down"
           " misses by more than the displacement the loop was given)."]
    for res in results:
        if not any("diagnostics" in r for r in res["circuit"]):
            continue
        L = len(res["spec"].sizes) - 1
        rr, rd = _diag_mean(res, "rec_regular"), _diag_mean(res, "rec_difference")
        ab, ag, abg = (_diag_mean(res, k) for k in ("angle_bp", "angle_gn", "angle_bp_gn"))
        inv = _diag_mean(res, "inversion_residual")
        inv_med = _diag_mean(res, "inversion_residual_median")
        inv_missed = _diag_mean(res, "inversion_residual_missed")
        n = len(rr) - 1
        epochs = sorted({0, 1, n // 2, n} & set(range(n + 1)))
        has_inv = not np.isnan(inv).all()  # rows stored before it was recorded lack it
        inv_layers = list(range(2, L + 1)) if has_inv else []
        head = ("| epoch | " + " | ".join(f"rec. g_{l} regular / difference" for l in
                                          range(2, L + 1)) + " | "
                + "".join(f"inversion residual, layer {l} | " for l in inv_layers)
                + " | ".join(f"∠ layer {l}: to BP / to GN (BP–GN)" for l in range(1, L)) + " |")
        out += [f"**{res['spec'].name}**", "\n".join([
            head, "|" + "---|" * (1 + (L - 1) * 2 + len(inv_layers))] + [
            f"| {e} | " + " | ".join(f"{rr[e, l]:.2f} / {rd[e, l]:.2f}" for l in range(2, L + 1))
            + " | " + "".join(_inversion_cell(inv[e, l], inv_med[e, l], inv_missed[e, l])
                              + " | " for l in inv_layers)
            + " | ".join(f"{ab[e, l]:.0f}° / {ag[e, l]:.0f}° ({abg[e, l]:.0f}°)"
                         for l in range(1, L)) + " |" for e in epochs])]
    return "\n\n".join(out) if len(out) > 1 else ""


def diagnostics_figure(results: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [r for r in results if any("diagnostics" in c for c in r["circuit"])]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 3 * len(rows)), squeeze=False,
                             layout="constrained")
    for (ax_r, ax_a), res in zip(axes, rows):
        L = len(res["spec"].sizes) - 1
        rr, rd = _diag_mean(res, "rec_regular"), _diag_mean(res, "rec_difference")
        ab, ag = _diag_mean(res, "angle_bp"), _diag_mean(res, "angle_gn")
        ep = np.arange(len(rr))
        inv = _diag_mean(res, "inversion_residual")
        for l in range(2, L + 1):
            (line,) = ax_r.plot(ep, rr[:, l], label=f"g_{l} regular")
            ax_r.plot(ep, rd[:, l], "--", color=line.get_color(), label=f"g_{l} difference")
            if not np.isnan(inv[:, l]).all():
                ax_r.plot(ep, inv[:, l], ":", color=line.get_color(),
                          label=f"layer {l} loop inversion residual")
        for l in range(1, L):
            (line,) = ax_a.plot(ep, ab[:, l], label=f"layer {l} to BP")
            ax_a.plot(ep, ag[:, l], "--", color=line.get_color(), label=f"layer {l} to GN")
        ax_r.set(title=f"{res['spec'].name}: reconstruction error", xlabel="epoch",
                 ylabel="relative error")
        ax_a.set(title=f"{res['spec'].name}: angle of the update", xlabel="epoch",
                 ylabel="degrees")
        ax_r.legend(fontsize=7)
        ax_a.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULTS = HERE / "learning_results"


def _store(res: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    out = {k: v for k, v in res.items() if k not in ("spec", "circuit_cfg")}
    out["bp"] = {str(lr): v for lr, v in res["bp"].items()}
    out["bp_time"] = {str(lr): v for lr, v in res["bp_time"].items()}
    out["epochs"] = res["spec"].epochs
    out["machine"] = f"{platform.platform()}, Python {platform.python_version()}"
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / f"{res['spec'].name}.json").write_text(json.dumps(out, indent=1))


def _stored_bp(spec: Spec, seeds) -> dict:
    """The stored BP rows of ``spec``, refused unless they were run with the same epochs and
    seeds."""
    stored = _load(spec)
    if stored is None:
        raise SystemExit(f"--reuse-bp: no stored numbers for {spec.name}")
    runs = next(iter(stored["bp"].values()))
    if stored["spec"].epochs != spec.epochs or len(runs) != len(seeds) or any(
            len(r["val"]) != spec.epochs + 1 for r in runs):
        raise SystemExit(f"--reuse-bp: the stored BP rows of {spec.name} were run with other"
                         " epochs or seeds")
    return stored


def _load(spec: Spec) -> dict | None:
    path = RESULTS / f"{spec.name}.json"
    if not path.exists():
        return None
    res = json.loads(path.read_text())
    res["bp"] = {float(k): v for k, v in res["bp"].items()}
    res["bp_time"] = {float(k): v for k, v in res["bp_time"].items()}
    res["spec"] = dataclasses.replace(spec, epochs=res.get("epochs", spec.epochs))
    return res


def render(results: list[dict]) -> str:
    c = circuit_for(results[0]["spec"].sizes)
    return "\n\n".join([
        "# Learning that holds up\n\nGenerated by `python -m benchmarks.learning --report` from"
        " the numbers in `benchmarks/learning_results/` ("
        + "; ".join(f"{r['spec'].name}: {r.get('machine', '')}, {r.get('date', '')}"
                    for r in results) + ").",
        f"γ: {SCHEDULE.gamma.shape}, {SCHEDULE.gamma.frequency:g} Hz, duty"
        f" {SCHEDULE.gamma.duty:g}; plasticity gate {SCHEDULE.plasticity.kind}; dt ="
        f" {DT * 1e3:g} ms ({SCHEDULE.steps_per_cycle(DT)} steps per cycle); one example per γ"
        " cycle. The recipe (`circuits/digits.toml`): tanh, softmax"
        f" cross-entropy, feedback rule {c.feedback_rule} (init {c.feedback_init}, gain"
        f" {c.feedback_gain}), leak λ = {c.leak}, difference = {c.difference},"
        f" decoder = {c.feedback_decoder}, τ_u = {c.tau_u * 1e3:g} ms, η_W = {c.eta_w}"
        + ("" if c.eta_w_hidden is None else f" (hidden layers {c.eta_w_hidden})") + ","
        f" β = {c.beta}"
        + ("" if c.consolidation == "step" else
           f", weight changes consolidated once per {c.consolidation}")
        + (", feedback normalized by ‖W_l‖_F²" if c.normalize_feedback else "")
        + "; other tasks change only `sizes`.",
        "\n".join(f"- {s.name}: {s.note}" for s in (r["spec"] for r in results)),
        "Wall times were measured while other jobs shared the machine's 2 cores: they bound the"
        " cost of a row, they are not a speed measurement (see RESULTS.md for the engine's"
        " speed).",
        table(results),
        curves_table(results),
        *([p] if (p := premises_table(results)) else []),
        *([d] if (d := diagnostics_table(results)) else []),
        *([(RESULTS / "exploration.md").read_text().strip()]
          if (RESULTS / "exploration.md").exists() else []),
    ]) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="run every task, write LEARNING.md")
    ap.add_argument("--task", help="run one task and store its numbers")
    ap.add_argument("--report", action="store_true", help="write LEARNING.md from stored numbers")
    ap.add_argument("--quick", action="store_true", help="one seed, one epoch, nothing stored")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="run the first N seeds")
    ap.add_argument("--epochs", type=int, help="override the task's epochs")
    ap.add_argument("--map", action="store_true",
                    help="add rows of the discrete CDTP map (slow: numpy, step by step)")
    ap.add_argument("--reference-seeds", type=int, default=None,
                    help="run the solved-loop reference on the first N seeds only (it is the"
                         " slowest row: loops solved to 1e-10 for every example)")
    ap.add_argument("--add-map", action="store_true",
                    help="with --task: run only the map and add its rows to the stored numbers")
    ap.add_argument("--add-dtp", action="store_true",
                    help="with --task: run only the reference difference-TP rows and add them"
                         " to the stored numbers")
    ap.add_argument("--reuse-bp", action="store_true",
                    help="with --task: take the BP (and difference-TP) rows from the stored"
                         " numbers of the same task, epochs and seeds (they do not depend on the"
                         " recipe's settings)")
    ap.add_argument("--device", default="cpp_standalone", choices=("cython", "cpp_standalone"),
                    help="Brian2 device of the circuit rows")
    args = ap.parse_args(argv)
    seeds = SEEDS[:1] if args.quick else SEEDS[: max(1, args.seeds)]
    all_specs = specs(args.quick)
    if args.epochs:
        all_specs = [dataclasses.replace(s, epochs=args.epochs) for s in all_specs]
    if args.add_map or args.add_dtp:
        flag, key = ("--add-map", "map") if args.add_map else ("--add-dtp", "dtp")
        spec = next((s for s in all_specs if s.name == args.task), None)
        stored = _load(spec) if spec else None
        if stored is None:
            ap.error(f"{flag} needs --task NAME with stored numbers")
        fit, val, test = spec.make()
        circuit = circuit_for(spec.sizes, spec.nonlinearity)
        stored[key] = (run_map(circuit, fit, {"val": val, "test": test}, spec.epochs, seeds)
                       if key == "map" else run_dtp(circuit, val, test, spec.epochs, seeds))
        stored["spec"] = spec
        _store(stored)
        return
    if args.report:
        results = [r for r in (_load(s) for s in all_specs) if r is not None]
    else:
        chosen = [s for s in all_specs if args.task in (None, s.name)]
        if not chosen:
            ap.error(f"--task: unknown task {args.task!r}; allowed:"
                     f" {', '.join(s.name for s in all_specs)}")
        results = [run_task(s, seeds, args.device, args.map, args.reference_seeds,
                            _stored_bp(s, seeds) if args.reuse_bp else None)
                   for s in chosen]
        if not args.quick:
            for r in results:
                _store(r)
    text = render(results)
    print(text)
    if (args.write or args.report) and not args.quick:
        (HERE / "LEARNING.md").write_text(text)
        diagnostics_figure(results, HERE / "learning_diagnostics.png")


if __name__ == "__main__":
    main()
