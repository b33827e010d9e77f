"""Seed 002's RNN: BPTT against finite differences, TP targets and inverse, tasks, experiments."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest

from cdtp.rnn import network as rnn
from cdtp.rnn.experiment import RNNExperimentConfig, load_config, run
from cdtp.rnn.tasks import (
    adding_batch,
    adding_marker_range,
    adding_success,
    load_digit_sequences,
    temporal_order_batch,
    temporal_order_marker_range,
)


def _small_problem(rng, readout, n_in=3, n_hidden=5, n_out=4, batch=4, steps=6):
    params = rnn.init_params(n_in, n_hidden, n_out, rng)
    x = rng.standard_normal((batch, steps, n_in))
    if readout == "softmax":
        y = np.eye(n_out)[rng.integers(0, n_out, size=batch)]
    else:
        y = rng.standard_normal((batch, n_out))
    return params, x, y, rnn.readout_loss(readout)


@pytest.mark.parametrize("readout", ["softmax", "linear"])
def test_bptt_matches_central_differences(rng, readout):
    params, x, y, loss = _small_problem(rng, readout)
    _, grads = rnn.bptt_gradients(params, x, y, loss)
    eps = 1e-5
    worst = 0.0
    for name in params.names:
        w = getattr(params, name)
        numeric = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + eps
            up = float(np.mean(loss.value(rnn.forward(params, x).z, y)))
            w[idx] = old - eps
            down = float(np.mean(loss.value(rnn.forward(params, x).z, y)))
            w[idx] = old
            numeric[idx] = (up - down) / (2 * eps)
        analytic = getattr(grads, name)
        rel = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
        worst = max(worst, rel)
    # Central differences in float64 with eps = 1e-5: truncation O(eps²) ≈ 1e-10 relative,
    # rounding O(1e-16 / eps) ≈ 1e-11; 1e-6 leaves four orders of margin yet catches any
    # missing term (a wrong sign or dropped time step gives O(1) relative error).
    assert worst < 1e-6, worst


def test_bptt_rejects_wrong_input_width(rng):
    params, x, y, loss = _small_problem(rng, "softmax")
    with pytest.raises(ValueError, match="input channels"):
        rnn.bptt_gradients(params, x[:, :, :2], y, loss)


def test_linearized_and_difference_targets_agree_to_second_order(rng):
    # Lee et al.'s difference f⁻¹(v) − f⁻¹(h) = ∂f⁻¹(h)ᵀ(v − h) + O(‖v − h‖²) (seed 002 Sec 2.2):
    # the gap between the two propagated targets must shrink with slope 2 in log-log.
    params, x, _, _ = _small_problem(rng, "softmax", n_hidden=6, steps=5)
    # Keep the states away from saturation so that (i) the projection π stays inactive (it is
    # not differentiable at the clip, which would give slope 1) and (ii) the perturbations
    # 1e-5 … 1e-3 are well inside the region where the Taylor expansion holds.
    x *= 0.3
    fp = rnn.forward(params, x)
    assert np.abs(fp.h).max() < 0.95
    inverse = rnn.RegularizedInverse(params, r=0.5)
    direction = rng.standard_normal(fp.h[:, -1].shape)
    sizes = np.logspace(-5, -3, 5)
    gaps = []
    for s in sizes:
        v_last = fp.h[:, -1] + s * direction
        v_lin = rnn.propagate_targets(fp, v_last, inverse, "linearized")
        v_dif = rnn.propagate_targets(fp, v_last, inverse, "difference")
        gaps.append(np.linalg.norm(v_lin - v_dif))
    slope = np.polyfit(np.log(sizes), np.log(gaps), 1)[0]
    # A first-order discrepancy (a wrong Jacobian) gives slope 1. Over 40 seeds of this setup
    # the fitted slope stayed within 2 ± 0.01; ±0.1 leaves room for third-order bending.
    assert abs(slope - 2.0) < 0.1, slope
    # Zeroth order: relative to the displacement the gap is C·s with C = O(1–10) (curvature of
    # arctanh accumulated over 4 steps); at s = 1e-5 it must be well below 1 %.
    assert gaps[0] < 1e-2 * sizes[0] * np.linalg.norm(direction)


def test_difference_rule_is_the_explicit_inverse_difference(rng):
    # propagate_targets uses f⁻¹(v) − f⁻¹(h) with x_t and b_h cancelled; check it against two
    # explicit calls of the full inverse formula of Sec 2.1 (equal up to rounding: 1e-12).
    params, x, _, _ = _small_problem(rng, "softmax", n_hidden=6, steps=3)
    fp = rnn.forward(params, x)
    inverse = rnn.RegularizedInverse(params, r=0.3)
    v_last = fp.h[:, -1] + 0.05 * rng.standard_normal(fp.h[:, -1].shape)
    v = rnn.propagate_targets(fp, v_last, inverse, "difference")
    t = fp.h.shape[1] - 1
    x_t = fp.x[:, t - 1]
    expected = fp.h[:, t - 1] + inverse(v_last, x_t) - inverse(fp.h[:, t], x_t)
    np.testing.assert_allclose(v[:, t - 2], expected, rtol=0, atol=1e-12)


def test_regularized_inverse_error_shrinks_linearly_in_r(rng):
    # For v = f(h) in the image, f⁻¹_r(v) − h = −r (WᵀW + rI)⁻¹ h: exact at r = 0, error ∝ r.
    params = rnn.init_params(3, 8, 2, rng)
    params.W_hh = rng.standard_normal((8, 8))  # generic (non-orthogonal) full-rank W_hh
    h_prev = 0.5 * np.tanh(rng.standard_normal((4, 8)))
    x_t = rng.standard_normal((4, 3))
    v = np.tanh(x_t @ params.W_xh.T + h_prev @ params.W_hh.T + params.b_h)
    rs = np.logspace(-8, -4, 5)
    errors = [np.linalg.norm(rnn.RegularizedInverse(params, r)(v, x_t) - h_prev) for r in rs]
    slope = np.polyfit(np.log(rs), np.log(errors), 1)[0]
    # Leading term is linear in r, the next is O(r²) ≈ 1e-4 relative at the largest r: ±0.05.
    assert abs(slope - 1.0) < 0.05, slope
    exact = rnn.RegularizedInverse(params, 0.0)(v, x_t)
    # r = 0: the inverse is exact up to conditioning of W_hh times machine epsilon.
    cond = np.linalg.cond(params.W_hh)
    assert np.linalg.norm(exact - h_prev) < 1e3 * cond * np.finfo(float).eps


def test_projection_margin_bounds_the_inverse_slope(rng):
    # π clips into [−1 + ε, 1 − ε]: the slope of a⁻¹∘π is 1/(1 − h²) inside (compared with the
    # closed form to rounding). Beyond the clip it is 0 ("zero", the clip's derivative) or the
    # inside formula at the clamped h ("clamp", the paper's code: 1/(1 − 0.9²) here).
    params = rnn.init_params(2, 4, 2, rng)
    h = np.array([[0.0, 0.5, 0.89, 0.95], [-0.3, -0.899, -0.91, -1.0]])
    inside = np.abs(h) < 0.9
    zero = rnn.RegularizedInverse(params, r=0.1, margin=0.1, beyond_margin="zero")
    clamp = rnn.RegularizedInverse(params, r=0.1, margin=0.1, beyond_margin="clamp")
    for inverse in (zero, clamp):
        slope = inverse.inverse_slope(h)
        np.testing.assert_allclose(slope[inside], 1.0 / (1.0 - h[inside] ** 2), rtol=1e-14)
    np.testing.assert_array_equal(zero.inverse_slope(h)[~inside], 0.0)
    np.testing.assert_allclose(clamp.inverse_slope(h)[~inside], 1.0 / (1.0 - 0.81), rtol=1e-14)
    with pytest.raises(ValueError, match="margin"):
        rnn.RegularizedInverse(params, r=0.1, margin=1.5)
    with pytest.raises(ValueError, match="beyond_margin 'cut'; allowed: clamp, zero"):
        rnn.RegularizedInverse(params, r=0.1, beyond_margin="cut")


def test_inverse_is_factorized_once_per_update(rng, monkeypatch):
    # Sec 3: one p × p factorization per TP update, whatever T and the batch size.
    calls = []
    real = rnn.cho_factor
    monkeypatch.setattr(rnn, "cho_factor", lambda *a, **k: calls.append(1) or real(*a, **k))
    params, x, y, loss = _small_problem(rng, "softmax", steps=9)
    rnn.tp_directions(params, x, y, loss, gamma_h=0.1, r=0.1)
    assert len(calls) == 1


def test_tp_with_exact_inverse_of_linear_regime_matches_bptt_direction(rng):
    # Sec 3 (Lemma 3.1): with orthogonal W_hh, r → 0 and pre-activations near 0 (tanh ≈
    # identity), ∂f⁻¹ᵀ ≈ ∂f, so the TP direction of the transition weights ≈ γ_h × BPTT gradient.
    params, x, y, loss = _small_problem(rng, "linear", n_hidden=6, steps=4)
    x *= 1e-4
    params.b_h[:] = 0.0
    _, grads = rnn.bptt_gradients(params, x, y, loss)
    gamma_h = 1e-6
    _, d = rnn.tp_directions(
        params, x, y, loss, gamma_h=gamma_h, r=0.0, transition_gradient="local"
    )
    rel = np.linalg.norm(d.W_hh / gamma_h - grads.W_hh) / np.linalg.norm(grads.W_hh)
    # Deviations are O(h²) ≈ 1e-7 from tanh′ and O(γ_h) from the target size: 1e-4 is loose
    # enough for both and tight enough to catch a transposed Jacobian (O(1) error).
    assert rel < 1e-4, rel
    np.testing.assert_array_equal(d.W_hy, grads.W_hy)  # readout: plain gradient in both


@pytest.mark.parametrize(
    ("positions", "ranges"),
    # code: 0-based p0 ∈ [6, 12), p1 ∈ [30, 36); text: t1 ∈ [6, 12], t2 ∈ [24, 30] (1-based).
    [("code", (7, 12, 31, 36)), ("text", (6, 12, 24, 30))],
)
def test_temporal_order_statistics(positions, ranges):
    rng = np.random.default_rng(1)
    length = 60
    x, y = temporal_order_batch(rng, 4000, length, positions)
    assert x.shape == (4000, length, 6) and y.shape == (4000, 4)
    np.testing.assert_array_equal(x.sum(axis=2), 1.0)  # one-hot inputs
    (lo1, hi1), (lo2, hi2) = temporal_order_marker_range(length, positions)
    assert (lo1, hi1, lo2, hi2) == ranges
    marker = x[:, :, 4:].sum(axis=2) > 0
    assert np.all(marker.sum(axis=1) == 2)
    pos = np.sort(np.nonzero(marker)[1].reshape(-1, 2), axis=1) + 1  # 1-based
    # Every allowed position is used (4000 draws over ≤ 7 values), none outside.
    assert (pos[:, 0].min(), pos[:, 0].max()) == (lo1, hi1)
    assert (pos[:, 1].min(), pos[:, 1].max()) == (lo2, hi2)
    # Label = order of X/Y: decode from the inputs.
    rows = np.arange(len(x))
    first_y = x[rows, pos[:, 0] - 1, 5] == 1
    second_y = x[rows, pos[:, 1] - 1, 5] == 1
    np.testing.assert_array_equal(y.argmax(axis=1), 2 * first_y + second_y)
    counts = y.sum(axis=0)
    # Balanced classes: binomial std of a count is √(n·¼·¾) ≈ 27 for n = 4000; 5σ ≈ 140.
    assert np.all(np.abs(counts - 1000) < 140), counts


def test_adding_statistics():
    rng = np.random.default_rng(2)
    x, y = adding_batch(rng, 3000, 30)
    assert x.shape == (3000, 30, 2) and y.shape == (3000, 1)
    assert np.all(x[:, :, 1].sum(axis=1) == 2)
    (lo1, hi1), (lo2, hi2) = adding_marker_range(30)
    assert (lo1, hi1, lo2, hi2) == (1, 3, 4, 15)
    pos = np.nonzero(x[:, :, 1])[1].reshape(-1, 2) + 1
    assert pos[:, 0].min() >= lo1 and pos[:, 0].max() <= hi1
    assert pos[:, 1].min() >= lo2 and pos[:, 1].max() <= hi2
    assert np.all((y >= 0) & (y <= 1))
    expected = 0.5 * (x[:, :, 0] * x[:, :, 1]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-15)
    # The mean of two U(0,1) has mean ½ and std 1/√24 ≈ 0.204; the sample mean of 3000 has
    # std 0.0037, so 0.02 is > 5σ.
    assert abs(y.mean() - 0.5) < 0.02


@pytest.mark.parametrize(("layout", "shape"), [("pixel", (64, 1)), ("row", (8, 8))])
def test_digit_sequences_split(layout, shape):
    d = load_digit_sequences(layout)
    assert d.x_train.shape[1:] == shape and d.x_test.shape[1:] == shape
    assert len(d.x_train) + len(d.x_test) == 1797
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    again = load_digit_sequences(layout)
    np.testing.assert_array_equal(d.x_test, again.x_test)  # the split is fixed
    # Stratified: each class is 20% ± one example of its members in the test set.
    train_counts, test_counts = d.y_train.sum(axis=0), d.y_test.sum(axis=0)
    assert np.all(np.abs(test_counts - 0.2 * (train_counts + test_counts)) <= 1)


def test_task_argument_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="length"):
        temporal_order_batch(rng, 5, 4)
    with pytest.raises(ValueError, match="marker positions 'paper'; allowed: code, text"):
        temporal_order_batch(rng, 5, 30, "paper")
    with pytest.raises(ValueError, match="batch_size"):
        adding_batch(rng, 0, 30)
    with pytest.raises(TypeError, match="Generator"):
        adding_batch(0, 5, 30)
    with pytest.raises(ValueError, match="layout"):
        load_digit_sequences("column")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "copy"}, "'task': 'copy'; allowed: temporal_order"),
        ({"method": "adam"}, "'method': 'adam'; allowed: tp, bptt"),
        ({"r": -1.0}, "'r': -1.0; allowed: a finite number ≥ 0"),
        ({"gamma_theta": 0.0}, "'gamma_theta'"),
        ({"hidden": 2.5}, "'hidden': 2.5"),
        ({"task": "digits_row", "T": 64}, "'T': 64; allowed: 8"),
        ({"iterations": 100, "eval_every": 30}, "'eval_every': 30; allowed: a divisor"),
        ({"rule": "exact"}, "'rule': 'exact'"),
        ({"margin": 0.0}, "'margin': 0.0; allowed: a number in \\(0, 1\\)"),
        ({"learning_rate": 0.1}, "unknown config key.*'learning_rate'.*0.1.*allowed keys"),
        ({"momentum": 1.0}, "'momentum': 1.0; allowed: a number in \\[0, 1\\)"),
        ({"stop_factor": 1.0}, "'stop_factor': 1.0; allowed: a number > 1"),
        ({"positions": "paper"}, "'positions': 'paper'; allowed: code, text"),
        ({"transition_gradient": "bptt"}, "'transition_gradient': 'bptt'; allowed: local"),
        ({"input_scale": 0.1}, "'input_scale': 0.1; allowed: omitted unless init = 'scaled'"),
        ({"paired_hidden_bias": 1}, "'paired_hidden_bias': 1; allowed: true or false"),
        ({"clip_norm": 0.0}, "'clip_norm': 0.0; allowed: a finite number > 0, or omitted"),
        ({"transition_step_after_99": -1.0}, "'transition_step_after_99': -1.0; allowed: a fin"),
        ({"transition_step_decay": 0.0}, "'transition_step_decay': 0.0; allowed: a finite numb"),
        ({"spike_backoff": 1.0}, "'spike_backoff': 1.0; allowed: a finite number > 1, or omi"),
        ({"target_growth_cap": 0.0}, "'target_growth_cap': 0.0; allowed: a finite number > 0"),
        ({"schedule_from_accuracy": 1.5}, "'schedule_from_accuracy': 1.5; allowed: a number "),
        ({"data_cycle": 2.5}, "'data_cycle': 2.5; allowed: an integer ≥ 1 "),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        RNNExperimentConfig.from_mapping(changes)


def test_load_config_names_the_file(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('task = "adding"\nmethod = "bptt"\niterations = 20\neval_every = 10\n')
    cfg = load_config(good)
    assert cfg.task == "adding" and cfg.length == 30
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "adding"\ngama_h = 0.1\n')
    with pytest.raises(ValueError, match=r"bad\.toml: unknown config key.*'gama_h'"):
        load_config(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("task = \n")
    with pytest.raises(ValueError, match=r"broken\.toml: invalid TOML"):
        load_config(broken)


_SCENARIO_CURVES = {
    "rnn_temporal_order.toml": "temporal_order_60",
    "rnn_temporal_order_120.toml": "temporal_order_120",
    "rnn_adding.toml": "adding_30",
    "rnn_digits_pixel.toml": "digits_pixel",
    "rnn_mnist1d.toml": "mnist1d",
}


@pytest.mark.parametrize("name", sorted(_SCENARIO_CURVES))
def test_scenario_files_have_the_papers_settings(name):
    # Each rnn_* scenario is the TP run of one benchmark curve, whose settings are the paper's
    # code's (exp/paper_conv_plots.py): same task, length, batch, steps, r and budget.
    from pathlib import Path

    from benchmarks.rnn_tp import curve_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "scenarios" / name)
    want = curve_config(_SCENARIO_CURVES[name], "tp", seed=0)
    for key in ("task", "method", "length", "batch_size", "iterations", "gamma_theta",
                "gamma_h", "r", "momentum", "transition_gradient", "positions"):
        assert getattr(cfg, key) == getattr(want, key), key


@pytest.mark.parametrize("task", ["temporal_order", "adding", "digits_row"])
def test_same_seed_same_dataset(task):
    cfg = RNNExperimentConfig(
        task=task, method="tp", hidden=12, iterations=40, eval_every=20, eval_size=50, seed=3,
        gamma_theta=0.01, gamma_h=0.1, r=0.1,
    )
    a, b = run(cfg), run(cfg)
    for name in ("train_loss", "eval_loss", "accuracy"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert a.attrs["diverged"] == 0 and np.all(np.isfinite(a.train_loss))
    assert json.loads(a.attrs["config"])["seed"] == 3
    for name in a.data_vars:
        assert {"units", "long_name"} <= set(a[name].attrs)
    c = run(RNNExperimentConfig(**{**json.loads(a.attrs["config"]), "seed": 4}))
    assert not np.array_equal(a.train_loss.values, c.train_loss.values)


def test_divergence_is_recorded_not_raised():
    # A step size of 1e6 on the adding problem blows the readout up within a few updates.
    cfg = RNNExperimentConfig(
        task="adding", method="bptt", hidden=8, iterations=50, eval_every=10,
        eval_size=20, gamma_theta=1e6,
    )
    ds = run(cfg)
    assert ds.attrs["diverged"] == 1
    assert 1 <= ds.attrs["diverged_iteration"] <= 50
    assert np.isnan(ds.train_loss.values[-1])


def test_paper_normalization_equals_per_example_targets_with_a_batch_mean(rng):
    # Module docstring: for the linearized rule, "v_τ = h_τ − γ_h ∇L̄, Eq 3 summed over the
    # batch" equals "v_τ,i = h_τ,i − γ_h ∂ℓ_i/∂h_τ, Eq 3 averaged over the batch", because the
    # recursion is linear in the displacement. Second implementation: the per-example version
    # assembled by hand. Equal up to rounding: 1e-12 of the largest entry (summation order
    # differs, so a small entry can carry the rounding of a large one).
    params, x, y, loss = _small_problem(rng, "softmax", n_hidden=6, batch=5, steps=7)
    _, d = rnn.tp_directions(params, x, y, loss, gamma_h=0.3, r=0.5, transition_gradient="local")
    fp = rnn.forward(params, x)
    per_example = loss.gradient(fp.z, y) @ params.W_hy  # ∂ℓ_i/∂h_τ, no 1/B
    inverse = rnn.RegularizedInverse(params, 0.5)
    v = rnn.propagate_targets(fp, fp.h[:, -1] - 0.3 * per_example, inverse, "linearized")
    h = fp.h[:, 1:]
    du = (h - v) * (1.0 - h * h) / len(x)  # batch mean of Eq 3
    expected_w_hh = np.einsum("btp,btq->pq", du, fp.h[:, :-1])
    np.testing.assert_allclose(
        d.W_hh, expected_w_hh, rtol=0, atol=1e-12 * np.abs(expected_w_hh).max()
    )


def test_through_time_transition_gradient_matches_central_differences(rng):
    # "through_time" is the derivative of Σ_i Σ_t ½‖h_t(θ) − v_t‖² with the targets v fixed and
    # h_t a function of θ through the whole recurrence (the paper's code): compare with central
    # differences (eps = 1e-6: truncation ~1e-12, rounding ~1e-10 relative; 1e-7 catches any
    # missing term, which is O(1)). "local" must differ from it (it drops the recurrence).
    params, x, _, _ = _small_problem(rng, "softmax", n_hidden=5, batch=3, steps=6)
    fp = rnn.forward(params, x)
    v = fp.h[:, 1:] + 0.1 * rng.standard_normal(fp.h[:, 1:].shape)
    analytic = rnn.transition_update(params, fp, v, "through_time")

    def objective():
        return 0.5 * np.sum((rnn.forward(params, x).h[:, 1:] - v) ** 2)

    eps = 1e-6
    for name, grad in zip(("W_xh", "W_hh", "b_h"), analytic):
        w = getattr(params, name)
        numeric = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            old = w[idx]
            w[idx] = old + eps
            up = objective()
            w[idx] = old - eps
            numeric[idx] = (up - objective()) / (2 * eps)
            w[idx] = old
        assert np.linalg.norm(grad - numeric) < 1e-7 * np.linalg.norm(numeric), name
    local = rnn.transition_update(params, fp, v, "local")
    assert np.linalg.norm(local[1] - analytic[1]) > 1e-3 * np.linalg.norm(analytic[1])


def test_nesterov_sgd_is_pytorchs_formula():
    # torch.optim.SGD(nesterov=True): b₁ = g, b_k = μ b_{k−1} + g, θ ← θ − γ (g + μ b). With a
    # constant direction g the k-th step is γ g (1 + μ + … + μ^k): closed form, to rounding.
    params = rnn.RNNParams(*(np.zeros(s) for s in ((2, 1), (2, 2), (2,), (1, 2), (1,))))
    g = rnn.RNNParams(*(np.ones_like(getattr(params, n)) for n in params.names))
    opt = rnn.SGD(0.1, momentum=0.9)
    total = 0.0
    for k in range(1, 5):
        opt.step(params, g)
        total += 0.1 * sum(0.9**j for j in range(k + 1))
        np.testing.assert_allclose(params.W_hh, -total, rtol=1e-14)
    # Paired hidden bias: two vectors b_ih, b_hh with the same gradient, each stepped by γ,
    # sum to one vector stepped by 2γ (momentum is linear, so this holds with it too).
    p1 = rnn.RNNParams(*(np.zeros(s) for s in ((2, 1), (2, 2), (2,), (1, 2), (1,))))
    paired = rnn.SGD(0.1, momentum=0.9, hidden_bias_factor=2.0)
    single = rnn.SGD(0.1, momentum=0.9)
    b_ih = rnn.RNNParams(*(np.zeros(s) for s in ((2, 1), (2, 2), (2,), (1, 2), (1,))))
    b_hh = b_ih.copy()
    single_hh = rnn.SGD(0.1, momentum=0.9)
    for _ in range(3):
        paired.step(p1, g)
        single.step(b_ih, g)
        single_hh.step(b_hh, g)
    np.testing.assert_allclose(p1.b_h, b_ih.b_h + b_hh.b_h, rtol=1e-14)
    np.testing.assert_allclose(p1.W_hh, b_ih.W_hh, rtol=1e-14)
    with pytest.raises(ValueError, match="momentum"):
        rnn.SGD(0.1, momentum=1.0)


@pytest.mark.parametrize("shape", [(100, 6), (100, 100), (4, 100)])
def test_orthogonal_init_has_unit_singular_values(rng, shape):
    # The paper's code: every weight matrix U Vᵀ, all singular values 1 (to rounding, 1e-12).
    w = rnn.semi_orthogonal(shape, rng)
    assert w.shape == shape
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), 1.0, atol=1e-12)
    params = rnn.init_params(6, 100, 4, rng)
    for name in ("W_xh", "W_hh", "W_hy"):
        sv = np.linalg.svd(getattr(params, name), compute_uv=False)
        np.testing.assert_allclose(sv, 1.0, atol=1e-12)
    assert not params.b_h.any() and not params.b_y.any()


def test_mean_squared_error_is_pytorchs_mse():
    # MSELoss per example: mean over outputs of (ŷ − y)², gradient 2(ŷ − y)/k (exact arithmetic).
    loss = rnn.readout_loss("linear_mse")
    z = np.array([[0.5, -1.0], [2.0, 0.0]])
    y = np.array([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(loss.value(z, y), [0.625, 1.0])
    np.testing.assert_allclose(loss.gradient(z, y), [[0.5, -1.0], [1.0, -1.0]])


def test_adding_success_absolute_and_squared():
    pred = np.array([[0.5], [0.53], [0.7]])
    target = np.array([[0.51], [0.5], [0.5]])
    # |err| = 0.01, 0.03, 0.2: absolute (< 0.04) → T, T, F. Shifted by 0.1, |err| = 0.09, 0.13,
    # 0.3: absolute → F, F, F; squared (0.0081, 0.0169, 0.09 < 0.04) → T, T, F.
    np.testing.assert_array_equal(adding_success(pred, target, "absolute"), [True, True, False])
    np.testing.assert_array_equal(adding_success(pred + 0.1, target, "absolute"), [False] * 3)
    np.testing.assert_array_equal(
        adding_success(pred + 0.1, target, "squared"), [True, True, False]
    )


def test_stop_rule_stops_a_run_whose_loss_doubles():
    # The paper's code stops when the loss exceeds 2× its initial value. BPTT on the adding
    # problem with γ_θ = 0.5 and momentum 0.9 overshoots: measured held-out loss > 2× initial
    # by iteration 20 for this seed, while staying finite.
    cfg = RNNExperimentConfig(
        task="adding", method="bptt", hidden=8, iterations=200, eval_every=10, eval_size=100,
        gamma_theta=0.5, momentum=0.9,
    )
    ds = run(cfg)
    assert ds.attrs["diverged"] == 1
    assert ds.attrs["stopped"].startswith("held-out loss > 2")
    k = int(np.flatnonzero(np.isfinite(ds.eval_loss.values))[-1])
    assert ds.eval_loss.values[k] > 2 * ds.attrs["initial_eval_loss"]
    off = run(RNNExperimentConfig(**{**json.loads(ds.attrs["config"]), "stop_factor": math.inf}))
    assert not off.attrs["stopped"].startswith("held-out loss")
    assert off.attrs["diverged_iteration"] in (-1,) or (
        off.attrs["diverged_iteration"] > ds.attrs["diverged_iteration"]
    )


def test_benchmark_curves_are_valid_configs():
    from benchmarks.rnn_tp import CURVES, curve_config

    for curve, (_title, _shared, methods) in CURVES.items():
        for method in methods:
            cfg = curve_config(curve, method, seed=0)
            assert cfg.method == method


def test_tp_learns_temporal_order_with_the_papers_settings():
    # The paper's T = 60 settings (γ_θ = 0.1, γ_h = 1e-2, r = 10, plain SGD, batch 20) on
    # T = 20: measured 100 % held-out accuracy from iteration 250 (chance is 25 %); 95 % at
    # iteration 500 leaves room for the 500-sequence held-out sample.
    cfg = RNNExperimentConfig(
        task="temporal_order", method="tp", T=20, iterations=500, eval_every=250,
        eval_size=500, gamma_theta=0.1, gamma_h=1e-2, r=10.0,
    )
    ds = run(cfg)
    assert ds.attrs["diverged"] == 0
    assert float(ds.accuracy[-1]) >= 0.95


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_tp_temporal_order_60_stays_above_99_percent_once_reached(seed):
    # Seed 002 Fig 3 (left), the paper's settings (γ_θ = 0.1, γ_h = 1e-2, r = 10, plain SGD,
    # batch 20), float32, the first 10 000 of the 40 000 iterations of the benchmark runs
    # temporal_order_60-tp-seed{1,2} (benchmarks/RNN_TP.md; the same training trajectory, the
    # held-out sample here is smaller). Measured there: both ≥ 99 % at iteration 1 000; seed 2
    # stays ≥ 99 % at every evaluation to 40 000; seed 1 drops to chance at 1 500, 2 500 and
    # 4 000–5 000 (runaways of the transition update, RNN_TP.md) and is ≥ 99 % at every
    # evaluation from 6 000 to 40 000. So "once reached it stays" holds from 6 000 on for both
    # seeds, not from the first crossing; the test asserts that form. Seed 0 is left out: it
    # is ≥ 99 % at every evaluation only from 29 500 (one drop to 0.81 at 29 000), beyond the
    # 10 000 updates this test can afford; RNN_TP.md reports all three seeds.
    # 1 000 held-out sequences: a 99 % run misclassifies ~10 of them, a collapse ~750.
    cfg = RNNExperimentConfig(
        task="temporal_order", method="tp", T=60, iterations=10000, eval_every=500,
        eval_size=1000, gamma_theta=0.1, gamma_h=1e-2, r=10.0, dtype="float32", seed=seed,
    )
    ds = run(cfg)
    acc = ds.accuracy.values
    it = ds.iteration.values
    assert acc[it == 1000][0] >= 0.99, acc
    assert np.all(acc[it >= 6000] >= 0.99), acc


@pytest.mark.slow
def test_tp_temporal_order_60_with_a_decreasing_step_stays_from_the_first_crossing():
    # The variant of benchmarks/RNN_TP.md (not the paper's setting): the transition step
    # halved at the first evaluation ≥ 99 % and falling as 1000 / (1000 + n) after it. Seed 1
    # with the paper's fixed step falls to 0.268 at iteration 4 000 (RNN_TP.md, the current
    # code's trajectory, float32), a runaway of the step; with the decreasing step it is
    # ≥ 99 % at every evaluation from 1 000 (measured: 2 000 / 2 000 held-out sequences right
    # at every evaluation to 40 000). 10 000 updates cover the drop at 4 000. 1 000 held-out
    # sequences: a 99 % run misclassifies ~10, a drop like the one at 4 000 ~730.
    cfg = RNNExperimentConfig(
        task="temporal_order", method="tp", T=60, iterations=10000, eval_every=500,
        eval_size=1000, gamma_theta=0.1, gamma_h=1e-2, r=10.0, dtype="float32", seed=1,
        transition_step_after_99=0.5, transition_step_decay=1000.0,
    )
    ds = run(cfg)
    acc = ds.accuracy.values
    assert ds.attrs["first_99_iteration"] == 1000, acc
    assert np.all(acc[ds.iteration.values >= 1000] >= 0.99), acc


def _plain_tp_reference(params, x, y, loss, gamma_h, r):
    """A second, plain implementation of TP (batch-major arrays, one expression per step).

    Written directly from the formulas (forward, Eq 1, Eq 2 with the clamped slope, Eq 3
    through time), independent of the time-major in-place code of ``cdtp.rnn.network``.
    """
    batch, steps, _ = x.shape
    p = params.n_hidden
    h = np.zeros((batch, steps + 1, p))
    for t in range(1, steps + 1):
        h[:, t] = np.tanh(x[:, t - 1] @ params.W_xh.T + params.b_h + h[:, t - 1] @ params.W_hh.T)
    z = h[:, -1] @ params.W_hy.T + params.b_y
    dz = loss.gradient(z, y) / batch
    v = np.empty((batch, steps, p))
    v[:, -1] = h[:, -1] - gamma_h * (dz @ params.W_hy)
    g = np.linalg.solve(params.W_hh.T @ params.W_hh + r * np.eye(p), params.W_hh.T)
    for t in range(steps, 1, -1):
        slope = 1.0 / (1.0 - np.minimum(h[:, t] ** 2, (1 - 1e-3) ** 2))
        v[:, t - 2] = h[:, t - 1] + ((v[:, t - 1] - h[:, t]) * slope) @ g.T
    err = h[:, 1:] - v
    du = np.empty_like(err)
    delta = err[:, -1]
    for t in range(steps, 0, -1):
        du[:, t - 1] = delta * (1.0 - h[:, t] ** 2)
        if t > 1:
            delta = du[:, t - 1] @ params.W_hh + err[:, t - 2]
    grad_w_hh = np.einsum("btp,btq->pq", du, h[:, :-1])
    grad_w_xh = np.einsum("btp,btd->pd", du, x)
    return h, v, grad_w_xh, grad_w_hh, du.sum(axis=(0, 1))


def test_time_major_tp_matches_a_plain_implementation(rng):
    # The time-major, in-place recurrences (forward, Eq 2, the through-time sweep) against the
    # plain batch-major formulas above, at the paper's T = 120 settings scale (p = 100,
    # batch 20). The two differ only in summation order inside BLAS/einsum and in solve vs
    # Cholesky for g_θ. Measured: states identical (0.0), targets and directions 3e-12
    # relative (T = 120, r = 1). The bound 1e-10 leaves room for the Eq 2 recursion
    # amplifying rounding over 120 steps (slope ≤ 1/(1 − 0.999²) ≈ 500 per unit). The rewrite
    # to time-major arrays was also checked against the batch-major version it replaced:
    # ≤ 3e-15 relative on every direction (T = 20/60/120, both rules, both Eq 3 modes, BPTT),
    # the products Σ_(i,t) summing the (example, step) pairs in another order.
    params = rnn.init_params(6, 100, 4, rng)
    params.W_hh[...] *= 1.2  # leave the exactly orthogonal start: a generic W_hh
    x, y = temporal_order_batch(rng, 20, 120)
    loss = rnn.readout_loss("softmax")
    h, v, g_xh, g_hh, g_b = _plain_tp_reference(params, x, y, loss, gamma_h=1e-2, r=1.0)
    fp = rnn.forward(params, x)
    np.testing.assert_allclose(fp.h, h, rtol=0, atol=1e-12)
    got_v = rnn.propagate_targets(fp, v[:, -1], rnn.RegularizedInverse(params, 1.0))
    assert np.max(np.abs(got_v - v)) <= 1e-10 * np.max(np.abs(v))
    _, dirs = rnn.tp_directions(
        params, x, y, loss, gamma_h=1e-2, r=1.0, transition_gradient="through_time"
    )
    for got, want in ((dirs.W_xh, g_xh), (dirs.W_hh, g_hh), (dirs.b_h, g_b)):
        assert np.max(np.abs(got - want)) <= 1e-10 * np.max(np.abs(want))


def test_float32_tp_directions_match_float64(rng):
    # The paper's code runs in PyTorch's default float32; so can the runs here (dtype option).
    # One TP update at the paper's T = 120 settings in both precisions: measured relative
    # difference ≤ 5e-4 on every parameter. float32's ε is 6e-8; the Eq 2 slopes reach
    # 1/(1 − 0.999²) ≈ 500 and 120 steps compound the rounding, hence 5e-3, not 1e-6.
    params = rnn.init_params(6, 100, 4, rng)
    x, y = temporal_order_batch(rng, 20, 120)
    loss = rnn.readout_loss("softmax")
    kwargs = {"gamma_h": 1e-2, "r": 1.0, "transition_gradient": "through_time"}
    _, d64 = rnn.tp_directions(params, x, y, loss, **kwargs)
    _, d32 = rnn.tp_directions(params.astype(np.float32), x.astype(np.float32), y, loss, **kwargs)
    assert d32.W_hh.dtype == np.float32
    for name in params.names:
        want, got = getattr(d64, name), getattr(d32, name)
        assert np.max(np.abs(got - want)) <= 5e-3 * np.max(np.abs(want)), name


def test_float32_run_learns_temporal_order_20():
    # As test_tp_learns_temporal_order_with_the_papers_settings, in float32: the parameters
    # stay float32 and it learns (measured: 100 % held-out accuracy at iteration 500).
    cfg = RNNExperimentConfig(
        task="temporal_order", method="tp", T=20, iterations=500, eval_every=250,
        eval_size=500, gamma_theta=0.1, gamma_h=1e-2, r=10.0, dtype="float32",
    )
    ds = run(cfg)
    assert ds.attrs["diverged"] == 0
    assert json.loads(ds.attrs["config"])["dtype"] == "float32"
    assert float(ds.accuracy[-1]) >= 0.95


def test_mnist1d_sequences_shape_and_config():
    # MNIST-1D generated offline by the mnist1d package: 4 000 / 1 000 signals of 40 samples,
    # 10 classes each with ~400 training examples; the config only accepts T = 40.
    from cdtp.rnn.tasks import load_mnist1d_sequences

    data = load_mnist1d_sequences()
    assert data.x_train.shape == (4000, 40, 1) and data.x_test.shape == (1000, 40, 1)
    counts = data.y_train.sum(axis=0)
    assert counts.shape == (10,) and counts.min() > 300
    assert RNNExperimentConfig(task="mnist1d").length == 40
    with pytest.raises(ValueError, match="'T'"):
        RNNExperimentConfig(task="mnist1d", T=64)


def test_sgd_transition_factor_scales_only_the_transition_step(rng):
    # θ ← θ − γ d on the readout, θ ← θ − γ f d on (W_xh, W_hh, b_h): exact arithmetic.
    params = rnn.init_params(3, 5, 2, rng)
    directions = rnn.RNNParams(*(rng.standard_normal(getattr(params, n).shape)
                                 for n in params.names))
    before = params.copy()
    rnn.SGD(0.5, transition_factor=0.01).step(params, directions)
    for name in params.names:
        factor = 0.01 if name in ("W_xh", "W_hh", "b_h") else 1.0
        expected = getattr(before, name) - 0.5 * factor * getattr(directions, name)
        np.testing.assert_array_equal(getattr(params, name), expected)
    with pytest.raises(ValueError, match="transition_step_factor"):
        RNNExperimentConfig(transition_step_factor=0.0)


def test_sgd_clip_norm_scales_all_directions_together(rng):
    # A joint norm N above the clip c: every parameter moves by (c/N) of its unclipped step
    # (PyTorch's clip_grad_norm_); below the clip: the plain step, to the bit.
    params = rnn.init_params(3, 5, 2, rng)
    directions = rnn.RNNParams(*(rng.standard_normal(getattr(params, n).shape)
                                 for n in params.names))
    total = np.sqrt(sum(np.sum(getattr(directions, n) ** 2) for n in params.names))
    for clip, factor in ((total / 4, 0.25), (2 * total, 1.0)):
        moved = params.copy()
        rnn.SGD(0.5, clip_norm=clip).step(moved, directions)
        for name in params.names:
            step = getattr(params, name) - getattr(moved, name)
            # 1e-12: the scale c/N is computed from a float64 sum of squares
            np.testing.assert_allclose(step, 0.5 * factor * getattr(directions, name),
                                       rtol=1e-12, atol=0)
    unclipped = params.copy()
    rnn.SGD(0.5).step(unclipped, directions)
    rnn.SGD(0.5, clip_norm=2 * total).step(params, directions)
    for name in params.names:
        np.testing.assert_array_equal(getattr(params, name), getattr(unclipped, name))


def test_tp_transition_direction_is_nearly_gamma_h_times_bptt_when_targets_vanish(rng):
    # The paper's T = 60 settings (r = 10, γ_h = 1e-2) at the orthogonal start: ‖g_θ‖ = 1/11, so
    # the propagated targets shrink ≈ 10× per step, and Eq 3 differentiated through time is
    # then dominated by ½‖h_T − v_T‖², whose gradient is γ_h times BPTT's. Measured: cosine
    # 0.999 and norm ratio 1.10 (seeds 0–1); the bounds (0.99, 1.0–1.3) keep that finding.
    params = rnn.init_params(6, 100, 4, rng)
    x, y = temporal_order_batch(rng, 20, 60)
    loss = rnn.readout_loss("softmax")
    _, tp = rnn.tp_directions(
        params, x, y, loss, gamma_h=1e-2, r=10.0, transition_gradient="through_time"
    )
    _, bp = rnn.bptt_gradients(params, x, y, loss)
    cosine = np.sum(tp.W_hh * bp.W_hh) / np.linalg.norm(tp.W_hh) / np.linalg.norm(bp.W_hh)
    ratio = np.linalg.norm(tp.W_hh) / (1e-2 * np.linalg.norm(bp.W_hh))
    assert cosine > 0.99
    assert 1.0 < ratio < 1.3


def test_monitor_sees_every_update_and_does_not_change_the_run():
    # The diagnostics hook of run() (benchmarks/rnn_collapse.py): called once per update, before
    # it, with the parameters it starts from and its directions; the curve with a monitor is
    # the curve without one, to the bit (same seed, no extra random numbers drawn).
    cfg = RNNExperimentConfig(
        task="temporal_order", method="tp", T=12, hidden=8, iterations=40, eval_every=20,
        eval_size=50, gamma_theta=0.1, gamma_h=1e-2, r=10.0,
    )
    seen = []

    def monitor(it, params, x, y, value, directions, loss):
        # the update starts from these parameters: redo the TP direction and compare
        again, d = rnn.tp_directions(params, x, y, loss, gamma_h=1e-2, r=10.0,
                                     transition_gradient="through_time")
        assert again == value and np.array_equal(d.W_hh, directions.W_hh)
        seen.append(it)

    with_monitor = run(cfg, monitor=monitor)
    without = run(cfg)
    assert seen == list(range(1, 41))
    for name in ("train_loss", "eval_loss", "accuracy"):
        np.testing.assert_array_equal(with_monitor[name].values, without[name].values)


def test_update_sharpness_matches_the_full_jacobian(rng):
    # benchmarks/rnn_collapse.update_sharpness (power iteration on central differences of TP's
    # transition direction) against the largest |eigenvalue| of the whole Jacobian built column
    # by column with the same differences, on a small RNN (45 transition parameters). The
    # Jacobian is close to γ_h times a symmetric Hessian, so power iteration converges
    # geometrically; 200 iterations leave it at the rounding of the differences, hence 1e-4.
    from benchmarks.rnn_collapse import (
        TRANSITION,
        _transition_vector,
        _with_transition,
        update_sharpness,
    )

    params = rnn.init_params(3, 5, 4, rng)
    params.W_hh[...] *= 1.3
    x = rng.standard_normal((6, 7, 3))
    y = np.eye(4)[rng.integers(0, 4, size=6)]
    loss = rnn.readout_loss("softmax")
    kw = {"gamma_h": 0.1, "r": 1.0, "transition_gradient": "through_time"}
    theta = _transition_vector(params)

    def direction(vec):
        return _transition_vector(rnn.tp_directions(_with_transition(params, vec), x, y, loss,
                                                    **kw)[1])

    eps = 1e-4
    jac = np.column_stack([
        (direction(theta + eps * e) - direction(theta - eps * e)) / (2 * eps)
        for e in np.eye(theta.size)
    ])
    want = 0.5 * np.max(np.abs(np.linalg.eigvals(jac)))
    got = update_sharpness(params, x, y, loss, step=0.5, iterations=200, **kw)
    assert theta.size == sum(getattr(params, n).size for n in TRANSITION)
    assert abs(got - want) <= 1e-4 * want, (got, want)


def test_transition_step_after_99_changes_the_run_only_after_it_reaches_99_percent():
    # The variant of benchmarks/RNN_TP.md: the transition step × 0.5 from the first evaluation
    # ≥ 99 % on. T = 20 with the paper's T = 60 settings reaches 100 % by iteration 250
    # (measured, test_tp_learns_temporal_order_with_the_papers_settings): up to there the two
    # runs are the same to the bit, afterwards the halved step gives other numbers.
    base = {"task": "temporal_order", "method": "tp", "T": 20, "iterations": 500,
            "eval_every": 250, "eval_size": 500, "gamma_theta": 0.1, "gamma_h": 1e-2, "r": 10.0}
    paper = run(RNNExperimentConfig(**base))
    halved = run(RNNExperimentConfig(**base, transition_step_after_99=0.5))
    assert paper.attrs["first_99_iteration"] == halved.attrs["first_99_iteration"] == 250
    assert paper.accuracy.values[0] == halved.accuracy.values[0]
    assert paper.train_loss.values[0] == halved.train_loss.values[0]
    assert paper.train_loss.values[1] != halved.train_loss.values[1]


def _monitored_run(cfg):
    """Run ``cfg`` (float64) with a monitor: the dataset and, per update, the step actually
    taken on W_hh (‖ΔW_hh‖ / ‖direction‖, read off the next update's starting parameters; one
    fewer than the updates), its mini-batch and its loss."""
    seen = []

    def monitor(it, params, x, y, value, directions, loss):
        seen.append((params.W_hh.copy(), directions.W_hh.copy(), x.copy(), value))

    ds = run(cfg, monitor=monitor)
    steps = [
        np.linalg.norm(w1 - w0) / np.linalg.norm(d0)
        for (w0, d0, _, _), (w1, _, _, _) in pairwise(seen)
    ]
    return ds, np.array(steps), [s[2] for s in seen], [s[3] for s in seen]


def test_transition_step_decay_applies_tau_over_tau_plus_n_after_99_percent():
    # The variant "a step that keeps decreasing after 99 %": the transition step is γ_θ up to
    # the first evaluation ≥ 0.99 (iteration 250 at T = 20, measured in
    # test_tp_learns_temporal_order_with_the_papers_settings), then γ_θ · 0.5 · τ / (τ + n).
    # The step is read off the parameters themselves (‖ΔW_hh‖ / ‖direction‖, plain SGD), so
    # this checks what the optimizer did, not what the schedule says. Tolerance 1e-9 relative:
    # float64 rounding of a difference of two O(1) matrices whose change is O(1e-3).
    base = {"task": "temporal_order", "method": "tp", "T": 20, "iterations": 500,
            "eval_every": 250, "eval_size": 500, "gamma_theta": 0.1, "gamma_h": 1e-2, "r": 10.0}
    tau = 40.0
    ds, steps, _, _ = _monitored_run(RNNExperimentConfig(
        **base, transition_step_after_99=0.5, transition_step_decay=tau))
    assert ds.attrs["first_99_iteration"] == 250
    n = np.arange(1, 500 - 250)
    want = np.concatenate([np.full(250, 0.1), 0.1 * 0.5 * tau / (tau + n)])
    np.testing.assert_allclose(steps, want, rtol=1e-9)
    # started by a lower accuracy (schedule_from_accuracy): from the first evaluation ≥ 0.5,
    # which comes before 250, where the run above first reaches 0.99 (evaluations every 25
    # updates here); first_99_iteration stays the first evaluation ≥ 0.99 (−1: none)
    early, steps, _, _ = _monitored_run(RNNExperimentConfig(
        **{**base, "eval_every": 25}, transition_step_after_99=0.5, transition_step_decay=tau,
        schedule_from_accuracy=0.5))
    it, acc = early.iteration.values, early.accuracy.values
    start = int(it[np.flatnonzero(acc >= 0.5)[0]])
    assert start < 250
    hit = np.flatnonzero(acc >= 0.99)
    assert early.attrs["first_99_iteration"] == (int(it[hit[0]]) if hit.size else -1)
    n = np.arange(1, 500 - start)
    want = np.concatenate([np.full(start, 0.1), 0.1 * 0.5 * tau / (tau + n)])
    np.testing.assert_allclose(steps, want, rtol=1e-9)


def test_data_cycle_repeats_the_first_k_mini_batches():
    # data_cycle = k (the paper's code: 4 000): updates k+1 … 2k see the mini-batches of updates
    # 1 … k again, in the same order, and those are the batches of a run without the option
    # (the same data seed): exact equality, they are the same random draws.
    cfg = {"task": "temporal_order", "method": "tp", "T": 12, "hidden": 8, "iterations": 21,
           "eval_every": 7, "eval_size": 50, "gamma_theta": 0.1, "gamma_h": 1e-2, "r": 10.0,
           "dtype": "float64"}
    _, _, cycled, _ = _monitored_run(RNNExperimentConfig(**cfg, data_cycle=7))
    _, _, fresh, _ = _monitored_run(RNNExperimentConfig(**cfg))
    for i in range(21):
        assert np.array_equal(cycled[i], fresh[i % 7])
    assert not np.array_equal(fresh[7], fresh[0])  # without the option the stream goes on


def test_target_growth_cap_against_a_plain_recursion(rng):
    # The cap of propagate_targets (not in the paper): per example, ‖λ_{t−1}‖ ≤ cap · ‖λ_t‖.
    # A case where Eq 2 grows backwards: r = 0 and W_hh = 0.5 × orthogonal, so the inverse
    # multiplies by 2 and the slope 1/(1 − h²) ≥ 1 adds to it. Second implementation: the
    # recursion written out per step with the rescaling. Tolerance 1e-12 relative: the same
    # arithmetic in another order (float64).
    params, x, _, _ = _small_problem(rng, "softmax", n_hidden=6, batch=5, steps=9)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    params.W_hh[...] = 0.5 * q
    fp = rnn.forward(params, x)
    inverse = rnn.RegularizedInverse(params, 0.0)
    v_last = fp.h[:, -1] + 0.01 * rng.standard_normal(fp.h[:, -1].shape)
    free = rnn.propagate_targets(fp, v_last, inverse)
    lam_free = free - fp.h[:, 1:]
    growth = np.linalg.norm(lam_free[:, :-1], axis=2) / np.linalg.norm(lam_free[:, 1:], axis=2)
    assert growth.max() > 1.5  # the uncapped targets do grow backwards here

    g = np.linalg.inv(params.W_hh)  # r = 0: the exact inverse
    h = fp.h
    lam = np.empty_like(lam_free)
    lam[:, -1] = v_last - h[:, -1]
    for t in range(9, 1, -1):  # λ_{t−1} from λ_t, slope at h_t with the 1e-3 margin clamp
        slope = 1.0 / (1.0 - np.minimum(h[:, t] ** 2, (1 - 1e-3) ** 2))
        nxt = (lam[:, t - 1] * slope) @ g.T
        scale = np.minimum(1.0, 1.2 * np.linalg.norm(lam[:, t - 1], axis=1)
                           / np.linalg.norm(nxt, axis=1))
        lam[:, t - 2] = nxt * scale[:, None]
    capped = rnn.propagate_targets(fp, v_last, inverse, growth_cap=1.2)
    np.testing.assert_allclose(capped - h[:, 1:], lam, rtol=1e-12, atol=1e-15)
    ratio = np.linalg.norm(lam[:, :-1], axis=2) / np.linalg.norm(lam[:, 1:], axis=2)
    assert ratio.max() <= 1.2 * (1 + 1e-12)
    # a cap that never binds leaves the targets bit for bit
    np.testing.assert_array_equal(
        rnn.propagate_targets(fp, v_last, inverse, growth_cap=1e6), free)
    with pytest.raises(ValueError, match="growth_cap must be finite and > 0"):
        rnn.propagate_targets(fp, v_last, inverse, growth_cap=0.0)


def test_spike_backoff_halves_the_transition_step_after_a_loss_spike():
    # spike_backoff = k (not in the paper): an update whose mini-batch loss exceeds k × the
    # median of the BACKOFF_WINDOW losses before it halves the transition step for good, then
    # the window refills. Second implementation: the rule applied by hand to the losses the
    # monitor saw; the steps are read off the parameters (‖ΔW_hh‖ / ‖direction‖, plain SGD;
    # 1e-9 relative, as in the decay test). k = 1.1 on T = 20 (the loss falls from 1.39 to
    # ~0.01; measured without the rule, the largest loss / median of the 200 before is 1.23, so
    # a few updates trigger it; at least one is required).
    from collections import deque

    from cdtp.rnn.experiment import BACKOFF_WINDOW

    cfg = RNNExperimentConfig(
        task="temporal_order", method="tp", T=20, iterations=1000, eval_every=500,
        eval_size=200, gamma_theta=0.1, gamma_h=1e-2, r=10.0, spike_backoff=1.1)
    ds, steps, _, losses = _monitored_run(cfg)
    recent, factor, want, halvings = deque(maxlen=BACKOFF_WINDOW), 1.0, [], []
    for it, value in enumerate(losses, start=1):
        if len(recent) == BACKOFF_WINDOW and value > 1.1 * np.median(recent):
            factor *= 0.5
            recent.clear()
            halvings.append(it)
        recent.append(value)
        want.append(0.1 * factor)
    assert halvings and json.loads(ds.attrs["backoff_iterations"]) == halvings
    np.testing.assert_allclose(steps, want[:-1], rtol=1e-9)
