"""Batched studies (cdtp.brian.batch): K circuits in one Brian2 network give the numbers of K
separate
runs, and a cpp_standalone batch reruns with new parameters without compiling.

Separate runs are :func:`cdtp.brian.engine.build` on Brian2's ``numpy`` target (no compilation),
which
the engine tests check against the reference map; one test also compares a batch with the map
directly.
"""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from cdtp.brian.batch import build_batch
from cdtp.brian.engine import build, initial_network
from cdtp.model.circuit import CircuitConfig
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.reference import cdtp_map

pytestmark = pytest.mark.brian2

DT = 1e-3
# Same float64 operations in the same order per block as in a separate run; what differs is
# where the gate values and the clamped example come from (per-neuron variables and a
# TimedArray instead of shared variables and a NetworkOperation). Measured differences are
# 1e-16 – 1e-15; 1e-12 leaves three orders of margin and still fails on any change of order,
# coefficient or schedule (those give ≥ 1e-4: see test_batch_blocks_follow_their_own_schedule).
TOL = 1e-12


def _circuit(**changes):
    base = CircuitConfig(
        sizes=(5, 4, 4, 3), nonlinearity="tanh", tau_h=2 * DT, tau_tau=2 * DT, tau_a=DT,
        tau_u=3 * DT, eta_w=0.05, eta_omega=2.0, beta=0.2, feedback_rule="delta1",
        feedback_init="random", influence=True, seed=3,
    )
    return dataclasses.replace(base, **changes)


def _schedule(frequency, duty, lag=0.0, gate="descending", shape="square"):
    return Schedule(GammaSchedule(shape, frequency=frequency, duty=duty, lag=lag),
                    PlasticityGate(gate))


def _stream(circuit, n, seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 * rng.normal(size=(n, circuit.sizes[0])),
            0.5 * rng.normal(size=(n, circuit.sizes[-1])))


# frequency, duty cycle, travelling-wave lag and plasticity gate all differ between circuits,
# and so do the cycle counts (the batch runs until the longest is done)
SCHEDULES = [_schedule(50, 0.3), _schedule(100, 0.5, 1e-3, "window"), _schedule(25, 0.6, 2e-3)]
N_CYCLES = [4, 6, 2]


def _differences(circuit, batch, k, separate):
    """Largest absolute difference between block k of a batch and a separate run."""
    diffs = {"outputs": np.max(np.abs(separate.outputs() - batch.outputs(k)))}
    for l in range(1, circuit.depth + 1):
        diffs[f"W_{l}"] = np.max(np.abs(separate.weights(l) - batch.weights(l, k)))
        for var in ("a", "h", "target"):
            diffs[f"{var}_{l}"] = np.max(np.abs(separate.state(var, l) - batch.state(var, l, k)))
    for l in range(2, circuit.depth + 1):
        diffs[f"Omega_{l}"] = np.max(
            np.abs(separate.feedback_weights(l) - batch.feedback_weights(l, k))
        )
    return diffs


def _separate(circuit, schedule, x, y, n_cycles, network=None, **options):
    return build(circuit, schedule, x, y, dt=DT, device="numpy", network=network,
                 **options).run(n_cycles)


@pytest.mark.parametrize("plasticity_every", [1, 5])
def test_batch_equals_separate_runs(plasticity_every):
    circuit = _circuit()
    x, y = _stream(circuit, 6)
    batch = build_batch(circuit, SCHEDULES, x, y, N_CYCLES, dt=DT, device="numpy",
                        plasticity_every=plasticity_every).run()
    assert batch.diverged == [None, None, None]
    for k, schedule in enumerate(SCHEDULES):
        separate = _separate(circuit, schedule, x, y, N_CYCLES[k],
                             plasticity_every=plasticity_every)
        diffs = _differences(circuit, batch, k, separate)
        assert max(diffs.values()) < TOL, (k, diffs)
        assert batch.outputs(k).shape == (N_CYCLES[k], circuit.sizes[-1])
        # the comparison is not vacuous: every circuit learned
        moved = np.abs(batch.weights(1, k) - initial_network(circuit).weights[1]).max()
        assert moved > 1e-4


@pytest.mark.parametrize("shape, gate", [("sinusoid", "paper"), ("smoothed_square", "window"),
                                         ("raised_cosine", "descending")])
def test_batch_of_smooth_rhythms_equals_separate_runs(shape, gate):
    """Every γ shape's expression reads per-neuron constants in a batch."""
    circuit = _circuit()
    x, y = _stream(circuit, 4)
    schedules = [
        Schedule(GammaSchedule(shape, frequency=f, duty=d, ramp=r, lag=lag), PlasticityGate(gate))
        for f, d, r, lag in [(50, 0.4, 0.1, 0.0), (100, 0.6, 0.2, 1e-3)]
    ]
    batch = build_batch(circuit, schedules, x, y, [3, 4], dt=DT, device="numpy").run()
    for k, schedule in enumerate(schedules):
        separate = _separate(circuit, schedule, x, y, [3, 4][k])
        assert max(_differences(circuit, batch, k, separate).values()) < TOL


def test_batch_blocks_follow_their_own_schedule():
    """The blocks really differ: swapping two schedules changes the results by far more than
    the tolerance."""
    circuit = _circuit()
    x, y = _stream(circuit, 6)
    batch = build_batch(circuit, SCHEDULES[:2], x, y, 4, dt=DT, device="numpy").run()
    swapped = _separate(circuit, SCHEDULES[1], x, y, 4)
    assert max(_differences(circuit, batch, 0, swapped).values()) > 1e-4


def test_batch_with_own_weights_and_streams_and_softmax():
    """Per-circuit initial weights and example streams; softmax loss, no influence factor."""
    circuit = _circuit(loss="softmax_cross_entropy", influence=False, feedback_rule="delta2")
    nets = [initial_network(dataclasses.replace(circuit, seed=s)) for s in (4, 5)]
    streams = [_stream(circuit, 5, seed=s) for s in (1, 2)]
    streams = [(x, np.eye(3)[np.argmax(y, axis=1)]) for x, y in streams]
    schedules = [_schedule(50, 0.5), _schedule(50, 0.5, 2e-3)]
    batch = build_batch(circuit, schedules, [s[0] for s in streams], [s[1] for s in streams],
                        [5, 3], dt=DT, device="numpy", networks=nets).run()
    for k in range(2):
        separate = _separate(circuit, schedules[k], *streams[k], [5, 3][k], network=nets[k])
        diffs = _differences(circuit, batch, k, separate)
        assert max(diffs.values()) < TOL, (k, diffs)


def test_batch_normalized_feedback_keeps_each_circuits_reference():
    """``feedback.normalize``: each block's normalization neuron divides by its own circuit's
    ‖W_l‖_F² relative to that circuit's start (per-circuit initial weights)."""
    circuit = _circuit(loss="softmax_cross_entropy", influence=False, feedback_rule="mirror",
                       feedback_init="transpose", feedback_decoder="slope_gated",
                       difference=True, leak=0.2, eta_w=0.3, normalize_feedback=True)
    nets = [initial_network(dataclasses.replace(circuit, seed=s)) for s in (4, 5)]
    refs = [cdtp_map.feedback_norm_reference(n)[2] for n in nets]
    assert abs(refs[0] - refs[1]) > 0.1  # the two circuits' references differ
    streams = [_stream(circuit, 5, seed=s) for s in (1, 2)]
    streams = [(x, np.eye(3)[np.argmax(y, axis=1)]) for x, y in streams]
    schedules = [_schedule(50, 0.5), _schedule(50, 0.5, 2e-3)]
    batch = build_batch(circuit, schedules, [s[0] for s in streams], [s[1] for s in streams],
                        5, dt=DT, device="numpy", networks=nets).run()
    for k in range(2):
        separate = _separate(circuit, schedules[k], *streams[k], 5, network=nets[k])
        diffs = _differences(circuit, batch, k, separate)
        assert max(diffs.values()) < TOL, (k, diffs)


def test_batch_discrete_limit_matches_reference_map():
    """A batch of discrete-limit circuits against the reference map directly."""
    circuit = _circuit(tau_h=0.0, tau_tau=0.0, tau_u=DT, influence=False)
    params = cdtp_map.CDTPParameters(
        dt=DT, tau_h=0.0, tau_a=DT, tau_u=DT, tau_tau=0.0, eta_w=circuit.eta_w,
        eta_omega=circuit.eta_omega, beta=circuit.beta, feedback_rule="delta1",
        influence=False, influence_eps=circuit.influence_eps, loss=circuit.loss,
        hold=circuit.hold,
    )
    schedules = [_schedule(50, 0.3, gate="paper"), _schedule(50, 0.6, gate="paper")]
    x, y = _stream(circuit, 3)
    batch = build_batch(circuit, schedules, x, y, 3, dt=DT, device="numpy").run()
    for k, schedule in enumerate(schedules):
        ref = cdtp_map.run(initial_network(circuit), params, schedule, x, y)
        for l in range(1, circuit.depth + 1):
            # as in tests/test_engine.py: rounding accumulated over 60 steps of a contracting
            # loop, numpy einsum vs per-synapse sums
            assert np.max(np.abs(batch.weights(l, k) - ref["state"].weights[l][0])) < 1e-9
        for l in range(2, circuit.depth + 1):
            assert np.max(np.abs(batch.feedback_weights(l, k) - ref["state"].feedback[l][0])) < 1e-9


def test_diverging_circuit_does_not_disturb_the_others():
    circuit = _circuit(activity_bound=50.0)
    x, y = _stream(circuit, 4)
    big = initial_network(circuit)
    big.weights[2] = 1e4 * big.weights[2]  # drives block 1's a_2 past the activity bound
    batch = build_batch(circuit, SCHEDULES[:2], x, y, 4, dt=DT, device="numpy",
                        networks=[initial_network(circuit), big]).run()
    assert batch.diverged[0] is None
    assert batch.diverged[1] and "bound" in batch.diverged[1]
    separate = _separate(circuit, SCHEDULES[0], x, y, 4)
    assert max(_differences(circuit, batch, 0, separate).values()) < TOL


def test_standalone_batch_reruns_without_compiling(standalone_project):
    """One cpp_standalone build (~30–60 s; a later session recompiles only what changed: see
    ``standalone_project`` in conftest.py); rerun() changes schedules, weights, cycle counts and
    streams through run_args: the binary is not rebuilt, and the numbers are those of separate
    runs with the new settings."""
    circuit = _circuit()
    x, y = _stream(circuit, 6)
    project = Path(standalone_project("batch"))
    batch = build_batch(circuit, SCHEDULES, x, y, N_CYCLES, dt=DT, device="cpp_standalone",
                        standalone_directory=str(project)).run()
    for k, schedule in enumerate(SCHEDULES):
        separate = _separate(circuit, schedule, x, y, N_CYCLES[k])
        assert max(_differences(circuit, batch, k, separate).values()) < TOL
    binary = project / "main"
    built = binary.stat().st_mtime_ns
    sources = {p: p.stat().st_mtime_ns for p in project.rglob("*.cpp")}

    new = [_schedule(100, 0.3, 2e-3), _schedule(50, 0.5, gate="window"), _schedule(50, 0.7)]
    nets = [initial_network(dataclasses.replace(circuit, seed=s)) for s in (7, 8, 9)]
    x2, y2 = _stream(circuit, 6, seed=5)
    batch.rerun(new, networks=nets, inputs=x2, labels=y2, n_cycles=[5, 3, 1])
    assert binary.stat().st_mtime_ns == built
    assert {p: p.stat().st_mtime_ns for p in sources} == sources
    for k, schedule in enumerate(new):
        separate = _separate(circuit, schedule, x2, y2, [5, 3, 1][k], network=nets[k])
        diffs = _differences(circuit, batch, k, separate)
        assert max(diffs.values()) < TOL, (k, diffs)

    with pytest.raises(ValueError, match="compiled for"):
        batch.rerun(n_cycles=[40, 1, 1])  # 40 cycles at 100 Hz: longer than the build
    with pytest.raises(ValueError, match="6 examples"):
        batch.rerun(n_cycles=[7, 1, 1])  # 7 cycles at 100 Hz fit the build, not the stream
    with pytest.raises(ValueError, match="compiled kind"):
        batch.rerun([_schedule(50, 0.5, shape="sinusoid")] * 3)
    assert os.path.exists(binary)


def test_batch_rejects_bad_input():
    circuit = _circuit()
    x, y = _stream(circuit, 4)
    with pytest.raises(ValueError, match="must agree"):
        build_batch(circuit, [_schedule(50, 0.5), _schedule(50, 0.5, shape="sinusoid")], x, y, 2)
    with pytest.raises(ValueError, match="one per circuit"):
        build_batch(circuit, SCHEDULES, x, y, [2, 2])
    with pytest.raises(ValueError, match="4 examples"):
        build_batch(circuit, SCHEDULES, x, y, 5)
    with pytest.raises(ValueError, match="positive whole number"):
        build_batch(circuit, SCHEDULES, x, y, 0)
    with pytest.raises(ValueError, match="shape"):
        build_batch(circuit, SCHEDULES, x[:, :3], y, 2)
    with pytest.raises(ValueError, match="plasticity_every"):
        build_batch(circuit, SCHEDULES, x, y, 2, plasticity_every=7)
    batch = build_batch(circuit, SCHEDULES[:1], x, y, 1, device="numpy", dt=DT).run()
    with pytest.raises(RuntimeError, match="cpp_standalone"):
        batch.rerun()
    with pytest.raises(RuntimeError, match="runs once"):
        batch.run()


@pytest.mark.slow
def test_cython_batch_equals_separate_cython_runs():
    """The compiled runtime target (what studies use): one batch compile, then the same
    numbers as separate cython runs (measured 2e-15 in benchmarks/BATCH.md)."""
    circuit = _circuit()
    x, y = _stream(circuit, 6)
    batch = build_batch(circuit, SCHEDULES, x, y, N_CYCLES, dt=DT, device="cython").run()
    for k, schedule in enumerate(SCHEDULES):
        separate = build(circuit, schedule, x, y, dt=DT, device="cython").run(N_CYCLES[k])
        assert max(_differences(circuit, batch, k, separate).values()) < TOL


def test_batch_of_periods_that_are_not_whole_steps_equals_separate_runs():
    """16 Hz (62.5 steps) and 60 Hz (16.7 steps) at 1 ms next to a whole 50 Hz: each block
    clamps its examples at its own cycle starts (one step apart in length), as separate runs
    do; outputs are sampled every step."""
    circuit = _circuit()
    x, y = _stream(circuit, 4)
    schedules = [_schedule(16, 0.3), _schedule(60, 0.5, 1e-3), _schedule(50, 0.4)]
    n_cycles = [2, 4, 3]
    batch = build_batch(circuit, schedules, x, y, n_cycles, dt=DT, device="numpy").run()
    assert batch.output_every == 1
    for k, schedule in enumerate(schedules):
        separate = _separate(circuit, schedule, x, y, n_cycles[k])
        diffs = _differences(circuit, batch, k, separate)
        assert max(diffs.values()) < TOL, (k, diffs)
