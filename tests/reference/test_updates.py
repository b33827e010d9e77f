"""DTP1 / DTP weight updates and decoder updates (seed 000, Eqs 10–13, 41–43, 51–52)."""

import numpy as np
import pytest

from cdtp.model.layers import init_network, with_bias
from cdtp.reference import regularized as reg
from cdtp.reference import targets as tg
from cdtp.reference import updates as up


def tanh_net(rng, n=5, depth=3):
    """Orthogonal tanh layers with small biases (well conditioned, invertible)."""
    net = init_network((n,) * (depth + 1), rng, nonlinearity="tanh")
    for l in range(1, depth + 1):
        q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        net.weights[l][:, :n] = q
        net.weights[l][:, -1] = rng.normal(0, 0.1, n)
    return net


def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


@pytest.mark.parametrize("bias", [True, False])
def test_dtp1_moves_the_layer_exactly_to_its_target(rng, bias):
    # Eq 12 holds with no remainder for f = W σ̃ (h_l is linear in W_l): one example, one step
    net = init_network((6, 4, 3), rng, bias=bias)
    x = rng.normal(size=(1, 6))
    h = net.forward(x)
    tau = h[2] + rng.normal(size=h[2].shape)
    dw = up.dtp1_update(net, h[1], h[2], tau)
    net.weights[2] = net.weights[2] + dw
    np.testing.assert_allclose(net.f(2, h[1]), tau, atol=1e-13)  # round-off of a 5-term sum
    # the bias unit counts in the normalizer: Eq 13 with ‖σ̃‖² = ‖σ(h)‖² + 1 written by hand
    s = net.sigma(h[1])
    s_t = np.append(s[0], 1.0) if bias else s[0]
    np.testing.assert_allclose(dw, np.outer(tau[0] - h[2][0], s_t) / (s_t @ s_t), rtol=1e-14)


def test_dtp1_is_the_batch_average_of_per_example_updates(rng):
    net = init_network((5, 4), rng)
    x = rng.normal(size=(7, 5))
    h = net.forward(x)
    tau = h[1] + rng.normal(size=h[1].shape)
    per = [up.dtp1_update(net, h[0][b], h[1][b], tau[b]) for b in range(7)]
    np.testing.assert_allclose(up.dtp1_update(net, h[0], h[1], tau), np.mean(per, axis=0),
                               rtol=1e-13)


def test_single_layer_update_moves_output_to_target_to_second_order(rng):
    # Eq 12 + Eq 19: the DTP1 update of one hidden layer, with targets from the linearized
    # exact inverse (seed 002, r = 0: τ_l − h_l = J_l⁻¹(τ_L − h_L)), moves h_L to τ_L up to
    # the curvature of the layers above: the error must fall like β² (log-log slope 2).
    net = tanh_net(rng)
    x = 0.5 * rng.normal(size=(1, 5))
    h = net.forward(x)
    direction = rng.normal(size=h[3].shape)
    betas = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3])
    errors = {1: [], 2: [], "all": []}
    for beta in betas:
        tau_L = h[3] + beta * direction
        taus = reg.linearized_targets(net, h, tau_L, r=0.0)
        for l in (1, 2):
            moved = net.copy()
            moved.weights[l] = moved.weights[l] + up.dtp1_update(net, h[l - 1], h[l], taus[l])
            errors[l].append(np.linalg.norm(moved.forward(x)[3] - tau_L))
        # all layers in parallel (Sec 7): the output moves by L (τ_L − h_L) to first order
        moved = net.copy()
        for l, dw in enumerate(up.all_layer_updates(net, h, taus, "dtp1")):
            if dw is not None:
                moved.weights[l] = moved.weights[l] + dw
        errors["all"].append(np.linalg.norm(moved.forward(x)[3] - h[3] - 3 * (tau_L - h[3])))
    for key, errs in errors.items():
        # slope 2 ± 0.15: five points over two decades; the β³ term bends the top end a little
        assert slope(betas, errs) == pytest.approx(2.0, abs=0.15), key
        # and the error is small against the change itself (first-order accuracy)
        assert errs[-1] < 1e-2 * betas[-1] * np.linalg.norm(direction)


def test_dtp_is_dtp1_times_influence_factor(rng):
    net = init_network((5, 4, 4, 3), rng)
    x = rng.normal(size=(6, 5))
    h = net.forward(x)
    tau_L = h[3] + 0.1 * rng.normal(size=h[3].shape)
    taus = tg.difference_targets(net, h, tau_L)
    for l in (1, 2, 3):
        s = np.sum((tau_L - h[3]) ** 2, axis=1) / (np.sum((taus[l] - h[l]) ** 2, axis=1) + 1e-12)
        np.testing.assert_allclose(up.influence_factor(h[3], tau_L, h[l], taus[l]), s, rtol=1e-15)
        # one example: exactly the DTP1 update times the factor (Eq 42)
        one = up.dtp_update(net, h[l - 1][:1], h[l][:1], taus[l][:1], h[3][:1], tau_L[:1])
        np.testing.assert_allclose(
            one, s[0] * up.dtp1_update(net, h[l - 1][:1], h[l][:1], taus[l][:1]), rtol=1e-14
        )
        # a batch: the mean of per-example products (the factor varies across examples, Sec 7)
        per = [s[b] * up.dtp1_update(net, h[l - 1][b], h[l][b], taus[l][b]) for b in range(6)]
        np.testing.assert_allclose(
            up.dtp_update(net, h[l - 1], h[l], taus[l], h[3], tau_L), np.mean(per, axis=0),
            rtol=1e-12,
        )
    assert np.allclose(up.influence_factor(h[3], tau_L, h[3], tau_L, eps=0), 1.0)
    # at the top layer the factor is 1 (with ε = 0), so DTP = DTP1 there
    all_dtp = up.all_layer_updates(net, h, taus, "dtp", eps=0)
    np.testing.assert_allclose(all_dtp[3], up.dtp1_update(net, h[2], h[3], tau_L), rtol=1e-13)


def test_delta1_is_gamma_times_delta2(rng):
    # Prop 8 (Eq 60): with τ_{l−1} = γ a_{l−1} + (1 − γ) g_l(u_l) (Eq 49) — float precision
    net = init_network((4, 5, 3), rng)
    a_prev = rng.normal(size=(6, 5))
    u = rng.normal(size=(6, 3))
    for gamma in (0.0, 0.3, 1.0):
        tau_prev = gamma * a_prev + (1 - gamma) * net.g(2, u)
        d1 = up.decoder_update_delta1(net, 2, tau_prev, u)
        d2 = up.decoder_update_delta2(net, 2, a_prev, u)
        np.testing.assert_allclose(d1, gamma * d2, atol=1e-14)


def test_delta1_at_gamma_one_descends_reconstruction_error(rng):
    # Prop 6: with τ_{l−1} = a_{l−1}, u_l = f_l(a_{l−1}), Δ1Ω = −∂/∂Ω of the batch-mean
    # ½‖a − g(f(a))‖². Central differences with step 1e-6 on an O(1) quadratic: truncation is
    # exactly 0 (quadratic in Ω) and round-off ~1e-10 relative.
    net = init_network((4, 5, 3), rng, nonlinearity="tanh")
    a = rng.normal(size=(8, 5))
    d1 = up.decoder_update_delta1(net, 2, a, net.f(2, a))
    grad = np.zeros_like(net.feedback[2])
    eps = 1e-6
    for idx in np.ndindex(grad.shape):
        plus, minus = net.copy(), net.copy()
        plus.feedback[2][idx] += eps
        minus.feedback[2][idx] -= eps
        grad[idx] = (
            up.reconstruction_loss(plus, 2, a).mean() - up.reconstruction_loss(minus, 2, a).mean()
        ) / (2 * eps)
    np.testing.assert_allclose(d1, -grad, rtol=1e-7, atol=1e-10)


def test_normalized_decoder_rule_reconstructs_one_example(rng):
    # Algorithm 1's rule at rate 1 is DTP1 on Ω: after one step g_l(h_l) = h_{l−1} exactly
    net = init_network((4, 5, 3), rng)
    h = net.forward(rng.normal(size=(1, 4)))
    net.feedback[2] = net.feedback[2] + up.decoder_update_normalized(net, 2, h[1], h[2])
    np.testing.assert_allclose(net.g(2, h[2]), h[1], atol=1e-13)
    assert up.reconstruction_loss(net, 2, h[1])[0] < 1e-25


def test_fit_decoder_is_a_fixed_point_of_delta1(rng):
    # the closed-form least-squares decoder zeroes the batch-mean Δ1 at γ = 1 (normal
    # equations); checked against the update rule itself, to round-off of a 200-sample sum
    net = init_network((4, 5, 3), rng)
    a = rng.normal(size=(200, 5))
    net.feedback[2] = up.fit_decoder(net, 2, a)
    d1 = up.decoder_update_delta1(net, 2, a, net.f(2, a))
    assert np.max(np.abs(d1)) < 1e-12
    # and no other decoder does better on that sample
    other = net.copy()
    other.feedback[2] = net.feedback[2] + 1e-3 * rng.normal(size=net.feedback[2].shape)
    assert (up.reconstruction_loss(other, 2, a).mean()
            > up.reconstruction_loss(net, 2, a).mean())


def test_normalized_presynaptic_includes_bias_unit(rng):
    net = init_network((3, 2), rng)
    h = rng.normal(size=(2, 3))
    n = up.normalized_presynaptic(net, h)
    s = with_bias(net.sigma(h), True)
    np.testing.assert_allclose(n, s / np.sum(s * s, axis=1, keepdims=True), rtol=1e-15)
    # n·σ̃ = 1: the defining property that makes Eq 12 exact
    np.testing.assert_allclose(np.sum(n * s, axis=1), 1.0, rtol=1e-15)
