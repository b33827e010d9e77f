"""The learning recipe (circuits/digits.toml): transpose-type feedback that follows W, a leaky
inversion loop and difference feedback — exact against the reference map, and learning a task
it was not tuned on."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cdtp.brian.engine import build, initial_network
from cdtp.data.tasks import mnist1d, teacher_classes
from cdtp.model.circuit import load_circuit
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
from cdtp.reference import cdtp_map
from cdtp.reference.alignment import update_alignment
from cdtp.reference.trainer import train

ROOT = Path(__file__).resolve().parents[1]
DT = 1e-3
# short cycles for the equality tests (40 steps: cheap, every stage of the cycle exercised)
SCHEDULE = Schedule(GammaSchedule("square", frequency=25.0, duty=0.25),
                    PlasticityGate("descending"))


def _recipe_schedule() -> Schedule:
    """The recipe's γ: the one scenarios/theta_digits.toml runs it with."""
    from cdtp.study.scenario import load_scenario

    return load_scenario(ROOT / "scenarios" / "theta_digits.toml").schedule


def _recipe(sizes, **changes):
    base = load_circuit(ROOT / "circuits" / "digits.toml")
    return dataclasses.replace(base, sizes=tuple(sizes), **changes)


@pytest.fixture(scope="module")
def small_task():
    # a task nobody tuned the recipe on: 8 Gaussian inputs, 3 classes of a random tanh teacher
    return teacher_classes(11, n_in=8, hidden=(16,), n_classes=3, n_train=1500, n_test=500)


@pytest.mark.brian2
@pytest.mark.parametrize("rule,init,decoder,eta_hidden,normalize,consolidation", [
    ("mirror", "transpose", "slope_gated", None, False, "step"),
    ("mirror", "transpose", "slope_gated", None, False, "cycle"),  # the recipe's
    ("mirror", "transpose", "slope_gated", 0.5, False, "step"),  # hidden layers' own η_W
    ("mirror", "transpose", "slope_gated", 0.5, True, "cycle"),  # feedback.normalize
    ("mirror", "transpose", "sigma", None, False, "step"),
    ("delta1", "random", "sigma", None, False, "step")])
def test_recipe_options_match_the_reference_map(rule, init, decoder, eta_hidden, normalize,
                                                consolidation):
    """Leak, difference feedback, the mirror rule, both decoders, a hidden-layer η_W of its
    own, the normalization units' feedback gain and consolidation once per cycle: the Brian2
    circuit equals the map."""
    circuit = _recipe((5, 6, 5, 3), feedback_rule=rule, feedback_init=init, eta_omega=20.0,
                      eta_w=0.2, feedback_decoder=decoder, eta_w_hidden=eta_hidden,
                      normalize_feedback=normalize, consolidation=consolidation)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5))
    y = np.eye(3)[rng.integers(0, 3, 6)]
    run = build(circuit, SCHEDULE, x, y, dt=DT, device="numpy").run(6)
    params = cdtp_map.resolve_consolidation(cdtp_map.parameters_of(circuit, DT), SCHEDULE)
    ref = cdtp_map.run(initial_network(circuit), params, SCHEDULE, x, y,
                       record_every=0)["state"]
    for l in range(1, 4):
        # same float64 operations in another order (einsum vs per-synapse sums): rounding
        # O(1e-16) per operation over 120 steps of contracting loops; 1e-9 still catches any
        # wrong coefficient or ordering (those give differences of O(1e-3) and more). Both
        # sides add a consolidated cycle's change not yet applied (pending_weights)
        w, om = cdtp_map.pending_weights(ref, params, l)
        assert np.max(np.abs(run.weights(l) - w)) < 1e-9
        if l >= 2:
            assert np.max(np.abs(run.feedback_weights(l) - om)) < 1e-9
    # the comparison is not vacuous: the weights moved far more than the tolerance
    assert np.max(np.abs(run.weights(1) - initial_network(circuit).weights[1])) > 1e-3


@pytest.mark.brian2
@pytest.mark.parametrize("every", [2, 40, "cycle"])
def test_slow_plasticity_clock_matches_the_reference_map(every):
    """``plasticity_every``: the map sums each neuron's drive and applies it on the slower
    clock exactly as the Brian2 circuit does; 40 (the steps of a γ cycle here) applies each
    cycle's change at the start of the next one, as ``plasticity.consolidation = "cycle"``
    does."""
    circuit = _recipe((5, 6, 5, 3), eta_w=0.2, eta_w_hidden=0.5,
                      consolidation="cycle" if every == "cycle" else "step")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5))
    y = np.eye(3)[rng.integers(0, 3, 6)]
    options = {} if every == "cycle" else {"plasticity_every": every}
    run = build(circuit, SCHEDULE, x, y, dt=DT, device="numpy", **options).run(6)
    assert run.plasticity_every == (40 if every == "cycle" else every)
    params = dataclasses.replace(cdtp_map.parameters_of(circuit, DT), **options)
    ref = cdtp_map.run(initial_network(circuit), params, SCHEDULE, x, y, record_every=0)["state"]
    every_step = cdtp_map.run(initial_network(circuit), dataclasses.replace(
        cdtp_map.parameters_of(circuit, DT), consolidation="step"), SCHEDULE, x, y,
        record_every=0)["state"]
    sig = initial_network(circuit).sigma
    for l in range(1, 4):
        # the Brian2 read-out adds the drive not yet applied, as its next update will (not
        # with consolidation "cycle", where the summed drive is the neurons' own state)
        sa = np.r_[sig(ref.a[l - 1][0]), 1.0]
        pending = circuit.eta_w_at(l) * np.outer(ref.w_drive[l][0], sa / (sa @ sa + 1e-12))
        if every == "cycle":
            pending = pending * 0.0
        # as in test_recipe_options_match_the_reference_map: rounding only
        assert np.max(np.abs(run.weights(l) - ref.weights[l][0] - pending)) < 1e-9
        # not vacuous: the slow clock changes the weights (by more than 1e-4)
        assert np.max(np.abs(ref.weights[l][0] + pending - every_step.weights[l][0])) > 1e-4


def test_consolidation_rejects_schedules_without_a_cycle_boundary():
    """``consolidation = "cycle"`` needs a whole number of steps per cycle and no lag; a run
    option that contradicts it is an error, not a silent override."""
    circuit = _recipe((5, 6, 5, 3), consolidation="cycle")
    x, y = np.zeros((2, 5)), np.eye(3)[[0, 1]]
    lagged = Schedule(GammaSchedule("square", frequency=25.0, duty=0.25, lag=2e-3),
                      PlasticityGate("descending"))
    with pytest.raises(ValueError, match="lag = 0"):
        build(circuit, lagged, x, y, dt=DT, device="numpy")
    with pytest.raises(ValueError, match="lag = 0"):
        cdtp_map.run(initial_network(circuit), cdtp_map.parameters_of(circuit, DT), lagged, x,
                     y, record_every=0)
    odd = Schedule(GammaSchedule("square", frequency=30.0, duty=0.25),
                   PlasticityGate("descending"))  # 33.3 steps per cycle
    with pytest.raises(ValueError, match="whole number"):
        build(circuit, odd, x, y, dt=DT, device="numpy")
    with pytest.raises(ValueError, match="conflicts with"):
        build(circuit, SCHEDULE, x, y, dt=DT, device="numpy", plasticity_every=2)


@pytest.mark.parametrize("consolidation", ["step", "cycle"])
def test_consolidated_update_is_the_solved_loops_update(consolidation):
    """At a large η_W the weights move while the loops settle: every step, the loop of layer l
    inverts a W_l that has already taken part of its displacement (ΔW_1 shrinks by about the
    factor 1 − η_W of W_2). Consolidated once per cycle, the circuit's change over a cycle is
    the solved loops' update at the cycle's starting weights (``cdtp_recipe``)."""
    from cdtp.model.losses import get_loss
    from cdtp.reference.trainer import TrainingConfig, _recipe_step

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1, 5)), np.eye(3)[[1]]
    long_feedback = Schedule(GammaSchedule("square", frequency=5.0, duty=0.15),
                             PlasticityGate("descending"))
    circuit = _recipe((5, 6, 5, 3), eta_w=0.05, eta_w_hidden=0.4, consolidation=consolidation)
    net = initial_network(circuit)
    state = cdtp_map.run(net, cdtp_map.parameters_of(circuit, DT), long_feedback, x, y,
                         record_every=0)["state"]
    dw = [None] + [state.weights[l][0] - net.weights[l] for l in (1, 2, 3)]
    if consolidation == "cycle":  # the cycle's change is applied when the next one starts
        for l in (1, 2, 3):
            sa = np.r_[net.sigma(state.a[l - 1][0]), 1.0]
            dw[l] = dw[l] + circuit.eta_w_at(l) * np.outer(state.w_drive[l][0], sa / (sa @ sa))
    cfg = TrainingConfig("cdtp_recipe", 1, 1, circuit.eta_w, circuit.beta, 0.5, 0.0,
                         "normalized", "differential", 1000, 0.5, circuit.leak, 0, 1,
                         recipe_decoder=circuit.feedback_decoder, hidden_lr=circuit.eta_w_hidden)
    ref = _recipe_step(initial_network(circuit), x, y, get_loss(circuit.loss), cfg,
                       {"unconverged": 0})
    lengths = [np.linalg.norm(dw[l]) / np.linalg.norm(ref[l]) for l in (1, 2, 3)]
    errors = [np.linalg.norm(dw[l] - ref[l]) / np.linalg.norm(ref[l]) for l in (1, 2, 3)]
    if consolidation == "cycle":
        # measured relative errors 5.1e-6, 8.2e-7 and 2.6e-16: what is left of the loops'
        # settling after 170 feedback steps (slowest rate k_u λ = 0.067 per step, e^−11 ≈
        # 1e-5; the output layer needs no loop); the every-step rule's error is 0.50
        assert max(errors) < 1e-4
    else:
        # measured: ΔW_1 0.60 of the solved update's length, relative error 0.50 (W_2 moves
        # at η_W 0.4 while layer 2's loop settles), ΔW_2 0.91 and 0.095; the bars fail if
        # the drift vanished
        assert lengths[0] < 0.8 and errors[0] > 0.2


def test_mirror_rule_keeps_feedback_the_scaled_transpose(small_task):
    """Ω_l − c_l W_lᵀ is invariant under the mirror rule; from the transpose init it stays 0
    (to rounding) while W changes by O(1)."""
    circuit = _recipe((8, 16, 16, 3))
    net = initial_network(circuit)
    gains = cdtp_map.mirror_gains(net.weights, circuit.sizes, circuit.feedback_gain)
    out = cdtp_map.run(net, cdtp_map.parameters_of(circuit, DT), SCHEDULE,
                       small_task.x_train[:60], small_task.y_train[:60], record_every=0)
    state = out["state"]
    for l in (2, 3):
        n_pre, n_post = circuit.sizes[l - 1], circuit.sizes[l]
        w = state.weights[l][0][:, :n_pre]
        om = state.feedback[l][0][:, :n_post]
        moved = np.max(np.abs(w - net.weights[l][:, :n_pre]))
        assert moved > 1e-2
        # float64 rounding of 1 200 additive updates: ≤ 1e-13 relative to the O(1) entries
        assert np.max(np.abs(om - gains[l][0] * w.T)) < 1e-12


def test_hidden_learning_rate_applies_to_the_hidden_layers_only(small_task):
    """``eta_w_hidden``: η_W of W_1 … W_{L−1}; W_L keeps ``eta_w``. With the hidden rate 0 the
    hidden layers stay exactly at their initial weights and the output layer's first update is
    the one-rate run's (the layers below have not moved yet when it is made); with it equal to
    ``eta_w`` the run is the one-rate run, bit for bit."""
    x, y = small_task.x_train[:3], small_task.y_train[:3]
    # one rate, every step: the weights after one cycle are the cycle's own update
    base = _recipe((8, 16, 16, 3), eta_w_hidden=None, consolidation="step")
    net = initial_network(base)

    def weights(circuit, n):
        out = cdtp_map.run(initial_network(circuit), cdtp_map.parameters_of(circuit, DT),
                           SCHEDULE, x[:n], y[:n], record_every=0)
        return [None] + [out["state"].weights[l][0] for l in (1, 2, 3)]

    one = weights(base, 1)
    frozen = weights(dataclasses.replace(base, eta_w_hidden=0.0), 1)
    for l in (1, 2):
        np.testing.assert_array_equal(frozen[l], net.weights[l])
    assert np.max(np.abs(one[3] - net.weights[3])) > 1e-3
    # W_3's update within one cycle reads a_2 of the cycle's forward pass, which no plasticity
    # of this cycle changes (the window closes before the next forward pass): identical
    np.testing.assert_array_equal(frozen[3], one[3])
    same = weights(dataclasses.replace(base, eta_w_hidden=base.eta_w), 3)
    for l in (1, 2, 3):
        np.testing.assert_array_equal(same[l], weights(base, 3)[l])
    assert base.eta_w_at(1) == base.eta_w_at(3) == base.eta_w
    mixed = dataclasses.replace(base, eta_w_hidden=0.3)
    assert (mixed.eta_w_at(1), mixed.eta_w_at(2), mixed.eta_w_at(3)) == (0.3, 0.3, base.eta_w)


@pytest.mark.brian2
def test_recipe_learns_a_task_it_was_not_tuned_on(small_task):
    """One pass over 1 500 examples of a generated 3-class task: the circuit (Brian2) reaches
    at least 0.8 test accuracy and is within 0.03 of online backprop at its best step on the
    same examples in the same order (chance is 1/3); and its feedback path's reconstruction
    error (the inversion residual) falls while W learns."""
    circuit = _recipe((8, 16, 16, 3))
    rng = np.random.default_rng(100)
    order = rng.permutation(small_task.n_train)
    # the recipe's γ (200 steps per cycle) on Brian2's cython target: 300 000 steps take about
    # 5 min on the numpy target and ~35 s compiled. The compiled code objects are kept in
    # Brian2's Cython cache (~/.cython, or CDTP_BRIAN2_CACHE), so only a session with an empty
    # cache compiles them (~1–3 min); the weights agree with the numpy target's to 7e-15
    # (measured), far inside the accuracy bars
    run = build(circuit, _recipe_schedule(), small_task.x_train[order],
                small_task.y_train[order], dt=DT, device="cython").run(small_task.n_train)
    assert not run.diverged
    net = initial_network(circuit)
    net.weights = [None] + [run.weights(l) for l in (1, 2, 3)]
    out = net.forward(small_task.x_test)[-1]
    circuit_acc = np.mean(out.argmax(1) == small_task.labels_test)
    bp = []
    for lr in (0.003, 0.01, 0.03, 0.1):
        ds = train(initial_network(circuit), small_task, "bp", epochs=1, batch_size=1, lr=lr,
                   seed=100)
        bp.append(float(ds.test_accuracy.values[-1]))
    print(f"circuit {circuit_acc:.3f}, BP {bp}")
    # measured: circuit 0.912 (the same with the 8 Hz γ's 110 feedback steps; 0.924 with the
    # recipe before consolidation and per-layer η_W),
    # BP 0.826 / 0.900 / 0.898 / 0.876 at the four steps. The bars
    # leave 0.12 and 0.05 of margin for what the test guards against — a wrong rule learns to
    # chance (1/3) or diverges — not for noise: the stream and the initial weights are fixed
    assert circuit_acc >= 0.8
    assert circuit_acc >= max(bp) - 0.03
    # the feedback inverts better as W learns: with mirrored Ω the inverse is Ω *and* the
    # settling loop, and its reconstruction error is the inversion residual
    # ‖f_l(τ_{l−1}) − τ_l‖ / ‖τ_l − h_l‖ (cdtp.reference.alignment; the regular decoder error
    # of Ω alone stays near 1, LEARNING.md). The mirror keeps c_l while ‖W_l‖ grows, so the
    # leak's share λ / (c_l ‖J_l‖² + λ) of the fixed point shrinks.
    trained = initial_network(circuit)
    trained.weights = net.weights
    trained.feedback = [None, None] + [run.feedback_weights(l) for l in (2, 3)]
    x, y = small_task.x_test[:200], small_task.y_test[:200]
    before, after = (update_alignment(n, x, y, circuit.loss, circuit.beta, circuit.leak,
                                      rate=DT / circuit.tau_u,
                                      decoder=circuit.feedback_decoder)["inversion"][2:]
                     for n in (initial_network(circuit), trained))
    print(f"inversion residual before {before}, after {after}")
    # measured: layer 2 0.85 → 0.51; layer 3 0.556 → 0.554, with either γ (the output layer
    # learns at η_W 0.05 and W_3 hardly grows; with the earlier recipe's one η_W 0.1: 0.85 →
    # 0.41 and 0.56 → 0.18). The bar asks the hidden layer's loop for a fall by at least a
    # quarter and the output layer's for no rise beyond 2 %. What it tests is the mechanism
    # the docs describe (docs/model.md §2.3 item 3): mirrored Ω grows with W at fixed c_l, so
    # the loop gain c_l‖J_l‖² grows and the leak's share of the fixed point shrinks
    assert after[0] < 0.75 * before[0], (before, after)
    assert after[1] < 1.02 * before[1], (before, after)


@pytest.mark.parametrize("hidden,normalize", [(None, False), (0.3, False), (0.3, True)])
def test_circuit_update_converges_to_the_reference_recipe(hidden, normalize):
    """With long phases (30 feedforward steps, so u has relaxed to a when the feedback baseline
    is held; 170 feedback steps) the map's weight change over one γ cycle equals
    the reference recipe's (``cdtp_recipe``: loops solved to 1e-10) up to the drift of W inside
    the window, which is first order in η_W: the relative error must fall 10× when η_W does.
    ``hidden``: the hidden layers at their own rate, that factor times the output's (the
    circuit's ``eta_w_hidden``, the reference's ``hidden_lr``). ``normalize``: the circuit's
    ``feedback.normalize`` against the reference's ``recipe_normalize``, from a network whose
    reference ‖W_l(0)‖_F² is 2 and 0.5 times its current ‖W_l‖_F² (as after learning), so
    the normalization units scale the loops' feedback by 2 and 0.5."""
    from cdtp.model.losses import get_loss
    from cdtp.reference.trainer import TrainingConfig, _recipe_step

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1, 5)), np.eye(3)[[1]]
    long_feedback = Schedule(GammaSchedule("square", frequency=5.0, duty=0.15),
                             PlasticityGate("descending"))
    errors = {}
    for eta in (1e-3, 1e-4):
        eta_hidden = None if hidden is None else hidden * eta
        # every step: the drift this test measures (consolidation "cycle" removes it:
        # test_consolidated_update_is_the_solved_loops_update)
        circuit = _recipe((5, 6, 5, 3), eta_w=eta, eta_w_hidden=eta_hidden,
                          normalize_feedback=normalize, consolidation="step")
        net = initial_network(circuit)
        if normalize:
            ref0 = net.meta[cdtp_map.FEEDBACK_NORM_REFERENCE]
            net.meta[cdtp_map.FEEDBACK_NORM_REFERENCE] = [None, None, 2 * ref0[2], ref0[3] / 2]
        state = cdtp_map.run(net, cdtp_map.parameters_of(circuit, DT), long_feedback, x, y,
                             record_every=0)["state"]
        cfg = TrainingConfig("cdtp_recipe", 1, 1, eta, circuit.beta, 0.5, 0.0, "normalized",
                             "differential", 1000, 0.5, circuit.leak, 0, 1,
                             recipe_decoder=circuit.feedback_decoder, hidden_lr=eta_hidden,
                             recipe_normalize=normalize)
        ref = _recipe_step(net.copy(), x, y, get_loss(circuit.loss), cfg, {"unconverged": 0})
        if normalize:
            plain = _recipe_step(net.copy(), x, y, get_loss(circuit.loss),
                                 dataclasses.replace(cfg, recipe_normalize=False),
                                 {"unconverged": 0})
            # not vacuous: the scaled loops hand down other targets (first layer off by > 10 %)
            assert np.linalg.norm(plain[1] - ref[1]) > 0.1 * np.linalg.norm(ref[1])
        errors[eta] = [np.linalg.norm(state.weights[l][0] - net.weights[l] - ref[l])
                       / np.linalg.norm(ref[l]) for l in (1, 2, 3)]
    # the top layer's target does not depend on the loops: equal to rounding
    assert errors[1e-4][2] < 1e-9
    for l in (0, 1):
        # measured 3.2e-3 and 2.0e-3 at η_W = 1e-3 (2.5e-3 and 2.0e-3 with the hidden layers at
        # 0.3 η_W, 2.2e-3 and 1.6e-3 with the normalized feedback; a rate that one side
        # ignored would be off by 0.7): the drift of W within the window
        assert errors[1e-3][l] < 5e-3
        # first order in η_W (measured ratios 9.3 and 10.0)
        assert 8 < errors[1e-3][l] / errors[1e-4][l] < 12


@pytest.mark.brian2
@pytest.mark.parametrize("every,eta_hidden", [(1, None), (2, None), (2, 0.5), ("cycle", 0.5)])
def test_brian2_mirror_keeps_feedback_the_scaled_transpose(every, eta_hidden):
    """In the Brian2 circuit too (every step, on the slower plasticity clock and consolidated
    once per cycle, with one η_W or with the hidden layers' own), Ω_l stays c_l W_lᵀ while W_l
    moves."""
    cycle = every == "cycle"
    circuit = _recipe((5, 6, 5, 3), eta_w=0.2, eta_w_hidden=eta_hidden,
                      consolidation="cycle" if cycle else "step")
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(5, 5)), np.eye(3)[rng.integers(0, 3, 5)]
    run = build(circuit, SCHEDULE, x, y, dt=DT, device="numpy",
                plasticity_every=1 if cycle else every).run(5)
    net = initial_network(circuit)
    gains = cdtp_map.mirror_gains(net.weights, circuit.sizes, circuit.feedback_gain)
    for l in (2, 3):
        n_pre, n_post = circuit.sizes[l - 1], circuit.sizes[l]
        w = run.weights(l)[:, :n_pre]
        assert np.max(np.abs(w - net.weights[l][:, :n_pre])) > 1e-3
        # rounding of a few hundred additive updates; a missed or doubled update is O(1e-3)
        assert np.max(np.abs(run.feedback_weights(l)[:, :n_post] - gains[l][0] * w.T)) < 1e-12


@pytest.mark.brian2
def test_weight_snapshots_are_the_weights_at_cycle_starts():
    """``snapshot_every``: W and Ω recorded at the start of every s-th cycle equal the map's
    weights at the end of the cycle before (what a cpp_standalone run reports curves from)."""
    circuit = _recipe((5, 6, 5, 3), eta_w=0.2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 5))
    y = np.eye(3)[rng.integers(0, 3, 6)]
    run = build(circuit, SCHEDULE, x, y, dt=DT, device="numpy", snapshot_every=2).run(6)
    ref = cdtp_map.run(initial_network(circuit), cdtp_map.parameters_of(circuit, DT), SCHEDULE,
                       x, y, record_every=0)
    for l in range(1, 4):
        snaps = run.weight_snapshots(l)
        assert snaps.shape[0] == 3  # cycles 0, 2, 4 (the run ends before cycle 6 starts)
        np.testing.assert_array_equal(snaps[0], initial_network(circuit).weights[l])
        for k, cycle in ((1, 2), (2, 4)):
            # the same arithmetic as the map to rounding (see the test above)
            assert np.max(np.abs(snaps[k] - ref["weights_at_cycle_end"][l][cycle - 1][0])) < 1e-9
    for l in (2, 3):
        snaps = run.weight_snapshots(l, "feedback")
        assert np.max(np.abs(snaps[2] - ref["feedback_at_cycle_end"][l][3][0])) < 1e-9
    with pytest.raises(ValueError, match="snapshot_every"):
        run.weight_snapshots(1, "feedback")


@pytest.mark.brian2
def test_batch_weight_snapshots_per_circuit():
    """A batch of circuits with their own initial weights and streams snapshots each one's
    weights as a separate map run would (one compilation for several seeds)."""
    from cdtp.brian.batch import build_batch

    circuit = _recipe((5, 6, 5, 3), eta_w=0.2)
    rng = np.random.default_rng(6)
    xs = [rng.normal(size=(4, 5)) for _ in range(2)]
    ys = [np.eye(3)[rng.integers(0, 3, 4)] for _ in range(2)]
    nets = [initial_network(dataclasses.replace(circuit, seed=s)) for s in (1, 2)]
    batch = build_batch(circuit, [SCHEDULE] * 2, xs, ys, 4, dt=DT, device="numpy",
                        networks=nets, snapshot_every=1).run()
    for k in range(2):
        ref = cdtp_map.run(nets[k], cdtp_map.parameters_of(circuit, DT), SCHEDULE, xs[k], ys[k],
                           record_every=0)
        for l in (1, 3):
            snaps = batch.weight_snapshots(l, k)
            assert snaps.shape[0] == 4
            # rounding only, as above; blocks that mixed up would differ by O(1)
            assert np.max(np.abs(snaps[3] - ref["weights_at_cycle_end"][l][2][0])) < 1e-9
        om = batch.weight_snapshots(3, k, "feedback")
        assert np.max(np.abs(om[2] - ref["feedback_at_cycle_end"][3][1][0])) < 1e-9


@pytest.fixture(scope="module")
def recipe_runs(small_task):
    """The recipe on the untuned task, 60 cycles through the map (which records the circuit's
    Dataset): with its own γ (scenarios/theta_digits.toml: 185 feedback steps), and with
    faster γ rhythms whose feedback phases are too short for its loops: 25 Hz duty 0.25 (30
    feedback steps) and 25 Hz duty 0.9 (4)."""
    from cdtp.brian.simulation import simulate
    from cdtp.record.dataset import RecordSpec

    record = RecordSpec(variables=("u",))
    x, y = small_task.x_train[:60], small_task.y_train[:60]
    circuit = _recipe((8, 16, 16, 3), seed=3)
    out = {}
    for key, schedule in (("recipe", _recipe_schedule()), ("fast", SCHEDULE),
                          ("short", Schedule(GammaSchedule("square", frequency=25.0, duty=0.9),
                                             PlasticityGate("descending")))):
        out[key] = simulate(circuit, schedule, x, y, dt=DT, backend="map", record=record)
    return out


def test_premises_hold_with_the_recipes_gamma_and_short_phases_are_flagged(recipe_runs):
    """Issue bar: P1/P2 hold in ≥ 90 % of (cycle, layer) cells while the circuit learns, and
    INV's α < 1 likewise: with the recipe's γ its leaky loops settle within the feedback phase
    (185 steps; the slowest loop mode moves at
    k_u (λ + c s²_min) ≥ k_u λ = 0.067 per step). Loops still moving when a shorter phase ends are
    flagged (premise "u settled" not met), never reported as holding."""
    from cdtp.analysis.propositions import check_all, counts

    good = check_all(recipe_runs["recipe"], ["P1", "P2", "INV"])
    for name in ("P1", "P2"):
        c = counts(good[name])
        assert c["violated"] == 0, (name, c)
        # measured: 120 of 120 with the 185 feedback steps of the 5 Hz γ (with the 8 Hz γ's 110
        # steps 102: u still moved by up to 0.2 % of ‖τ − a‖ per τ_u, tolerance 0.1 %). The
        # bar is the 90 %
        assert c["holds"] >= 0.9 * (c["cells"] - c["na"]), (name, c)
    c = counts(good["INV"])
    assert c["violated"] == 0, c
    # α < 1 wherever INV's premises (u settled, γ low, W and Ω steady) are met: measured in 120
    # of 120 cells; the bar is the 90 %
    assert c["holds"] >= 0.9 * (c["cells"] - c["na"]), c
    for key in ("fast", "short"):
        c = counts(check_all(recipe_runs[key], ["P1"])["P1"])
        # measured: 120 of 120 not settled for both
        assert c["premise_not_met"] >= 0.9 * (c["cells"] - c["na"]), (key, c)
        assert "u_settled" in c["premises"], (key, c)
        assert c["violated"] == 0, (key, c)


def test_mnist1d_scale_multiplies_the_inputs_and_is_checked():
    """``scale`` multiplies the inputs only (labels, targets unchanged); a bad value is named."""
    base = mnist1d(3, n_train=40, n_test=10)
    scaled = mnist1d(3, n_train=40, n_test=10, scale=0.25)
    # multiplication by 0.25 is exact in float64 (a power of two)
    assert np.array_equal(scaled.x_train, 0.25 * base.x_train)
    assert np.array_equal(scaled.x_test, 0.25 * base.x_test)
    assert np.array_equal(scaled.labels_train, base.labels_train)
    with pytest.raises(ValueError, match="mnist1d: scale must be a finite number > 0, got -1"):
        mnist1d(3, n_train=40, n_test=10, scale=-1)


@pytest.mark.brian2
def test_simulate_starts_from_given_weights(small_task):
    """``simulate(network=…)``: a run from trained weights (what the premise samples of
    benchmarks/LEARNING.md start from) is the same on the Brian2 circuit and on the map, and is
    not the run from the circuit's seeded initial weights."""
    from cdtp.brian.simulation import simulate
    from cdtp.record.dataset import RecordSpec

    circuit = _recipe((8, 16, 16, 3), seed=3)
    schedule = Schedule(GammaSchedule("square", frequency=25.0, duty=0.25),
                        PlasticityGate("descending"))
    x, y = small_task.x_train[:20], small_task.y_train[:20]
    trained = cdtp_map.run(initial_network(circuit), cdtp_map.parameters_of(circuit, DT),
                           schedule, x, y, record_every=0)["state"]
    net = initial_network(circuit)
    for l in range(1, circuit.depth + 1):
        net.weights[l] = trained.weights[l][0].copy()
        if l >= 2:
            net.feedback[l] = trained.feedback[l][0].copy()
    record = RecordSpec(variables=())
    kw = dict(dt=DT, record=record, n_cycles=5)
    runs = {b: simulate(circuit, schedule, x[:5], y[:5], backend=b, device="numpy", network=net,
                        **kw) for b in ("map", "brian2")}
    fresh = simulate(circuit, schedule, x[:5], y[:5], backend="map", **kw)
    # the same arithmetic in two implementations: rounding only (outputs are O(1))
    np.testing.assert_allclose(runs["brian2"].output.values, runs["map"].output.values,
                               atol=1e-9)
    # 20 cycles of learning move the outputs by O(0.1); a run that ignored ``network`` would
    # equal the fresh one
    assert np.max(np.abs(runs["map"].output.values - fresh.output.values)) > 1e-2
    small = initial_network(dataclasses.replace(circuit, sizes=(8, 16, 3)))
    with pytest.raises(ValueError, match="sizes"):
        simulate(circuit, schedule, x[:5], y[:5], backend="map", network=small, **kw)


def test_validation_folds_partition_the_training_set_and_keep_the_test_split():
    # benchmarks.learning's Spec.make(fold): fold 0 is the split of the reported rows; other
    # folds hold out other examples of the same training set and never touch the test split
    from benchmarks.learning import specs

    spec = {s.name: s for s in specs()}["digits"]
    folds = [spec.make(f) for f in (0, 1)]
    default = spec.make()
    np.testing.assert_array_equal(default[1].x_test, folds[0][1].x_test)
    rows = []
    for fit, val, test in folds:
        np.testing.assert_array_equal(test.x_test, default[2].x_test)
        assert len(val.x_test) == 288 and len(fit.x_train) + len(val.x_test) == 1438
        # fit ∪ validation is the whole training set in every fold (compared as sorted rows)
        together = np.concatenate([fit.x_train, val.x_test])
        rows.append(together[np.lexsort(together.T[::-1])])
    np.testing.assert_array_equal(rows[0], rows[1])
    assert not np.array_equal(folds[0][1].x_test, folds[1][1].x_test)


def test_simultaneous_loops_reach_the_top_down_fixed_point():
    """``learning_targets``' ``sim=1`` (all layers' loops at once, as in the circuit) and its
    default (each layer's loop to its fixed point, from the top) share the fixed point: the
    top loop does not read the ones below. Run long, the two agree; run short, they differ
    (the lower loops chase a target that is still moving)."""
    from benchmarks.learning_targets import _joint_loops, _loop
    from cdtp.model.nonlinearities import get_nonlinearity

    rng = np.random.default_rng(0)
    sizes, b = (6, 5, 5, 3), 2
    sigma = get_nonlinearity("tanh")
    w = [None] + [rng.normal(size=(b, sizes[l], sizes[l - 1] + 1)) / np.sqrt(sizes[l - 1])
                  for l in (1, 2, 3)]
    h = [rng.normal(size=(b, 6))]
    for l in (1, 2, 3):
        h.append(np.einsum("bij,bj->bi", w[l], np.concatenate([sigma(h[-1]), np.ones((b, 1))],
                                                              1)))
    slope = [None] + [sigma.derivative(h[l - 1]) for l in (1, 2, 3)]
    c = [None, None] + [np.full(b, 0.5 / np.linalg.norm(w[l][0, :, :-1], 2) ** 2)
                        for l in (2, 3)]
    top = 0.1 * rng.normal(size=(b, 3))
    lam, k, gate = np.full(b, 0.2), np.full(b, 1 / 3), np.ones((b, 1), bool)

    def both(iters):
        it = np.full(b, iters)
        joint = _joint_loops(w, c, h, slope, top, lam, k, it, gate, sigma)
        seq = [None] * 3
        seq[2] = _loop(w[3], c[3], h[3], h[2], slope[3], top, lam, k, it, gate, sigma)
        seq[1] = _loop(w[2], c[2], h[2], h[1], slope[2], seq[2], lam, k, it, gate, sigma)
        return joint, seq

    joint, seq = both(600)
    for l in (1, 2):
        # contracting loops (rate ≥ k λ = 0.067 per step): after 600 steps the distance to the
        # fixed point is below 1e-12 of the displacement; 1e-9 allows for rounding
        assert np.max(np.abs(joint[l] - seq[l])) < 1e-9 * np.max(np.abs(seq[l]))
    joint, seq = both(10)
    assert np.max(np.abs(joint[1] - seq[1])) > 1e-3 * np.max(np.abs(seq[1]))
