"""Regularized and linearized inversion adapted to f = Wσ + b (seed 002, Secs 2.1–2.2)."""

import numpy as np
import pytest

from cdtp.model.layers import init_network
from cdtp.reference import backprop as bp
from cdtp.reference import regularized as reg


def tanh_net(rng, sizes=(5, 5, 5, 5)):
    """tanh layers with orthogonal square W and small biases (invertible, well conditioned)."""
    net = init_network(sizes, rng, nonlinearity="tanh")
    for l in range(1, len(sizes)):
        if sizes[l] == sizes[l - 1]:
            q, _ = np.linalg.qr(rng.normal(size=(sizes[l], sizes[l])))
            net.weights[l][:, : sizes[l]] = q
        net.weights[l][:, -1] = rng.normal(0, 0.1, sizes[l])
    return net


def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


@pytest.mark.parametrize("sizes", [(6, 4, 3), (3, 4, 6)])
def test_batched_solver_matches_per_example_normal_equations(rng, sizes):
    # both branches (primal WᵀW for tall W, push-through WWᵀ for wide W) against a direct
    # numpy.linalg.solve of (WᵀW + rI) s = Wᵀ(τ − b) + r s̄, example by example
    net = init_network(sizes, rng, nonlinearity="leaky_relu")
    net.weights[2][:, -1] = rng.normal(0, 0.3, sizes[2])
    r = 0.3
    h_prev = rng.normal(size=(4, sizes[1]))
    tau = rng.normal(size=(4, sizes[2]))
    w, b = net.weights[2][:, : sizes[1]], net.weights[2][:, -1]
    for ref in (None, h_prev):
        got = reg.regularized_inverse(net, 2, tau, r, reference=ref)
        for i in range(4):
            s_bar = np.zeros(sizes[1]) if ref is None else net.sigma(h_prev[i])
            s = np.linalg.solve(w.T @ w + r * np.eye(sizes[1]), w.T @ (tau[i] - b) + r * s_bar)
            # well-conditioned (r = 0.3) small systems: agreement to round-off
            np.testing.assert_allclose(got[i], net.sigma.inverse(s), rtol=1e-10, atol=1e-12)


def test_regularized_inverse_is_exact_as_r_vanishes(rng):
    net = tanh_net(rng)
    h = net.forward(0.5 * rng.normal(size=(3, 5)))
    tau = h[2] + 0.05 * rng.normal(size=h[2].shape)
    exact = reg.regularized_inverse(net, 2, tau, 0.0)
    # r = 0 on an invertible layer inverts exactly: f(f⁻¹(τ)) = τ to round-off
    np.testing.assert_allclose(net.f(2, exact), tau, atol=1e-13)
    rs = np.array([1e-1, 1e-2, 1e-3, 1e-4, 1e-5])
    errs = [np.abs(reg.regularized_inverse(net, 2, tau, r) - exact).max() for r in rs]
    # (WᵀW + rI)⁻¹Wᵀ = W⁻¹ − r (WᵀW)⁻¹W⁻¹ + O(r²): error ∝ r, slope 1 ± 0.05 over 4 decades
    assert slope(rs, errs) == pytest.approx(1.0, abs=0.05)


def test_forward_reference_passes_through_the_forward_pair(rng):
    # with s̄ = σ(h_{l−1}) the residual τ − b − W s̄ vanishes at τ = h_l: f⁻¹(h_l) = h_{l−1} for
    # any r, even on a non-invertible (wide) layer — exact up to round-off of σ⁻¹(σ(h))
    net = tanh_net(rng, sizes=(4, 6, 3))
    h = net.forward(0.5 * rng.normal(size=(3, 4)))
    for r in (0.01, 1.0, 100.0):
        np.testing.assert_allclose(
            reg.regularized_inverse(net, 2, h[2], r, reference=h[1]), h[1], atol=1e-12
        )
    taus = reg.regularized_inverse_targets(net, h, h[2] + 0.05, 0.1)
    diff = reg.regularized_inverse_targets(net, h, h[2] + 0.05, 0.1, difference=True)
    np.testing.assert_allclose(taus[1], diff[1], atol=1e-12)
    # with s̄ = 0 the two forms differ (the inverse no longer passes through the pair)
    z = reg.regularized_inverse_targets(net, h, h[2] + 0.05, 0.1, reference="zero")
    zd = reg.regularized_inverse_targets(net, h, h[2] + 0.05, 0.1, reference="zero",
                                         difference=True)
    assert np.abs(z[1] - zd[1]).max() > 1e-3


def test_regularized_inverse_jacobian_matches_differences(rng):
    net = tanh_net(rng, sizes=(4, 6, 3))
    h = net.forward(0.5 * rng.normal(size=(2, 4)))
    tau = h[2] + 0.02 * rng.normal(size=h[2].shape)
    jac = reg.regularized_inverse_jacobian(net, 2, tau, 0.1, reference=h[1])
    eps = 1e-6
    for i in range(3):
        e = np.zeros(3)
        e[i] = eps
        fd = (reg.regularized_inverse(net, 2, tau + e, 0.1, reference=h[1])
              - reg.regularized_inverse(net, 2, tau - e, 0.1, reference=h[1])) / (2 * eps)
        # central differences: O(eps²) truncation, O(1e-16/eps) round-off
        np.testing.assert_allclose(jac[:, :, i], fd, rtol=1e-7, atol=1e-9)


def test_linearized_equals_difference_up_to_second_order(rng):
    # seed 002 Sec 2.2: f⁻¹(τ) − f⁻¹(h) = ∂f⁻¹(h)(τ − h) + O(‖τ − h‖²); slope 2 ± 0.1
    net = tanh_net(rng)
    h = net.forward(0.5 * rng.normal(size=(2, 5)))
    direction = rng.normal(size=h[3].shape)
    eps = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3])
    for ref in ("forward", "zero"):
        errs = []
        for e in eps:
            tau_L = h[3] + e * direction
            lin = reg.linearized_targets(net, h, tau_L, 0.1, reference=ref)
            dif = reg.regularized_inverse_targets(net, h, tau_L, 0.1, difference=True,
                                                  reference=ref)
            errs.append(np.abs(lin[2] - dif[2]).max())
        assert slope(eps, errs) == pytest.approx(2.0, abs=0.1), ref


def test_linearized_exact_inverse_is_the_gauss_newton_target(rng):
    # r = 0, square invertible layers: τ_l − h_l = J_l⁻¹(τ_L − h_L) exactly, J_l from dense
    # per-layer Jacobians (backprop.output_jacobian) and numpy.linalg.solve
    net = tanh_net(rng)
    h = net.forward(0.5 * rng.normal(size=(3, 5)))
    tau_L = h[3] + 0.1 * rng.normal(size=h[3].shape)
    taus = reg.linearized_targets(net, h, tau_L, 0.0)
    for l in (1, 2):
        jac = bp.output_jacobian(net, h, l)
        gn = np.linalg.solve(jac, (tau_L - h[3])[:, :, None])[:, :, 0]
        np.testing.assert_allclose(taus[l] - h[l], gn, rtol=1e-9, atol=1e-13)


def test_regularized_decoder(rng):
    # identity σ: g_l(y) = A_r(y − b) is the regularized inverse (s̄ = 0) itself
    net = init_network((4, 5, 3), rng, nonlinearity="identity")
    net.weights[2][:, -1] = rng.normal(0, 0.3, 3)
    net.feedback[2] = reg.regularized_decoder(net, 2, 0.2)
    y = rng.normal(size=(4, 3))
    np.testing.assert_allclose(net.g(2, y), reg.regularized_inverse(net, 2, y, 0.2), atol=1e-13)
    # r → 0 on a square layer: the pseudo-inverse (feedback_init="pinv")
    sq = init_network((4, 4, 4), rng, nonlinearity="identity", bias=False)
    np.testing.assert_allclose(
        reg.regularized_decoder(sq, 2, 0.0), np.linalg.inv(sq.weights[2]), rtol=1e-10
    )
    # tanh with b = 0: σ(y) = y − y³/3 + …, σ⁻¹(s) = s + s³/3 + …, so g and the inverse agree
    # to first order at 0 and differ by O(‖y‖³): slope 3 ± 0.1
    th = init_network((4, 4, 4), rng, nonlinearity="tanh")
    th.feedback[2] = reg.regularized_decoder(th, 2, 0.05)
    d = rng.normal(size=(1, 4))
    scales = np.array([1e-1, 3e-2, 1e-2, 3e-3])
    errs = [np.abs(th.g(2, s * d) - reg.regularized_inverse(th, 2, s * d, 0.05)).max()
            for s in scales]
    assert slope(scales, errs) == pytest.approx(3.0, abs=0.1)


def test_rank_deficient_layer_needs_regularization(rng):
    net = init_network((5, 6, 3), rng)  # W_2 is 3 × 6: WᵀW (6 × 6) singular, WWᵀ fine
    net_tall = init_network((5, 3, 6), rng)
    h = net_tall.forward(rng.normal(size=(2, 5)))
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        net_tall.weights[2][:, 1] = net_tall.weights[2][:, 0]  # duplicate column: rank 2
        reg.regularized_inverse(net_tall, 2, h[2], 0.0)
    # the wide layer solves through WWᵀ and works even at r = 0 (minimum-norm inverse)
    y = rng.normal(size=(2, 3))
    v = reg.regularized_inverse(net, 2, y, 0.0)
    np.testing.assert_allclose(net.f(2, v), y, atol=1e-12)
