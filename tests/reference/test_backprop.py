"""Back-propagation and Gauss-Newton references (seed 000, Sec 4)."""

import numpy as np
import pytest

from cdtp.model.layers import init_network
from cdtp.model.losses import get_loss
from cdtp.reference import backprop as bp
from cdtp.reference import regularized as reg
from cdtp.reference import targets as tg


def tanh_net(rng, n=5, depth=3):
    """Orthogonal tanh layers, small biases, r = 0 regularized decoders (see test_targets)."""
    net = init_network((n,) * (depth + 1), rng, nonlinearity="tanh")
    for l in range(1, depth + 1):
        q, _ = np.linalg.qr(rng.normal(size=(n, n)))
        net.weights[l][:, :n] = q
        net.weights[l][:, -1] = rng.normal(0, 0.1, n)
    for l in range(2, depth + 1):
        net.feedback[l] = reg.regularized_decoder(net, l, 0.0)
    return net


def angle(a, b):
    c = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.arccos(np.clip(c, -1.0, 1.0))


@pytest.mark.parametrize(
    ("nonlinearity", "loss"),
    [
        ("tanh", "softmax_cross_entropy"),
        ("leaky_relu", "squared_error"),
        ("softplus", "squared_error"),
    ],
)
def test_backprop_matches_central_differences(rng, nonlinearity, loss):
    net = init_network((4, 6, 5, 3), rng, nonlinearity=nonlinearity)
    for l in (1, 2, 3):
        net.weights[l][:, -1] = rng.normal(0, 0.2, net.sizes[l])
    x = rng.normal(size=(5, 4))
    y = np.eye(3)[rng.integers(0, 3, 5)]
    grads = bp.backprop_gradients(net, x, y, loss)
    lossf = get_loss(loss)
    eps = 1e-5
    for l in (1, 2, 3):
        fd = np.zeros_like(net.weights[l])
        for idx in np.ndindex(fd.shape):
            plus, minus = net.copy(), net.copy()
            plus.weights[l][idx] += eps
            minus.weights[l][idx] -= eps
            up_, down = (lossf.value(n.forward(x)[3], y).mean() for n in (plus, minus))
            fd[idx] = (up_ - down) / (2 * eps)
        # central differences: truncation O(eps²) ~ 1e-10 relative on smooth maps, round-off
        # ~1e-16/eps ~ 1e-11; leaky ReLU is piecewise linear and no unit sits within 1e-5 of its
        # kink for Gaussian inputs (probability ~1e-5), so 1e-6 has a wide margin
        rel = np.linalg.norm(grads[l] - fd) / np.linalg.norm(fd)
        assert rel < 1e-6, (l, rel)


def test_activation_gradients_and_output_jacobian_match_differences(rng):
    net = init_network((4, 6, 5, 3), rng, nonlinearity="tanh")
    x = rng.normal(size=(2, 4))
    y = rng.normal(size=(2, 3))
    h = net.forward(x)
    deltas = bp.activation_gradients(net, h, y, "squared_error")
    eps = 1e-6
    for l in (1, 2):
        jac = bp.output_jacobian(net, h, l)
        for b in range(2):
            fd_jac = np.zeros((3, net.sizes[l]))
            fd_grad = np.zeros(net.sizes[l])
            for i in range(net.sizes[l]):
                outs = []
                for sgn in (1, -1):
                    hh = h[l][b : b + 1].copy()
                    hh[0, i] += sgn * eps
                    for k in range(l + 1, 4):
                        hh = net.f(k, hh)
                    outs.append(hh[0])
                fd_jac[:, i] = (outs[0] - outs[1]) / (2 * eps)
                fd_grad[i] = (0.5 * np.sum((outs[0] - y[b]) ** 2)
                              - 0.5 * np.sum((outs[1] - y[b]) ** 2)) / (2 * eps)
            # O(eps²) truncation + O(1e-16/eps) round-off: 1e-8 relative is safe
            np.testing.assert_allclose(jac[b], fd_jac, rtol=1e-8, atol=1e-9)
            np.testing.assert_allclose(deltas[l][b], fd_grad, rtol=1e-8, atol=1e-9)
            # the chain rule of Eq 20: ∂ℓ/∂h_l = J_lᵀ ∂ℓ/∂h_L
            np.testing.assert_allclose(deltas[l][b], jac[b].T @ deltas[3][b], rtol=1e-12)
    np.testing.assert_array_equal(bp.output_jacobian(net, h, 3)[0], np.eye(3))


def test_gauss_newton_direction_solves_the_linearized_problem(rng):
    # square J: J_l d = τ_L − h_L exactly (Eq 19 with d = (J_lᵀJ_l)⁻¹ Δ_SGD); wide J (n_l > n_L):
    # the minimum-norm solution, cross-checked with numpy.linalg.lstsq
    for sizes in [(5, 5, 5, 5), (4, 7, 6, 3)]:
        net = init_network(sizes, rng, nonlinearity="tanh")
        x = rng.normal(size=(3, sizes[0]))
        y = rng.normal(size=(3, sizes[-1]))
        h = net.forward(x)
        beta = 0.1
        d_out = -beta * (h[3] - y)
        for l in (1, 2):
            gn = bp.gauss_newton_direction(net, h, y, "squared_error", beta, l)
            jac = bp.output_jacobian(net, h, l)
            for b in range(3):
                ref = np.linalg.lstsq(jac[b], d_out[b], rcond=None)[0]
                # both are SVD-based solves of a well-conditioned ≤ 7×7 system
                np.testing.assert_allclose(gn[b], ref, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(jac[b] @ gn[b], d_out[b], rtol=1e-9, atol=1e-12)
            # (J_lᵀJ_l) GN = Δ_SGD h_l (Eq 22 rearranged), with Δ_SGD from back-propagation
            sgd = bp.sgd_direction(net, h, y, "squared_error", beta, l)
            lhs = np.einsum("bji,bjk,bk->bi", jac, jac, gn)
            np.testing.assert_allclose(lhs, sgd, rtol=1e-8, atol=1e-12)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # every inversion must converge
def test_dtp1_target_change_aligns_with_gauss_newton_as_beta_vanishes(rng):
    # Eq 22: with exact (converged input-correction) inversion, τ_l − h_l → (J_lᵀJ_l)⁻¹ Δ_SGD h_l;
    # the angle falls like β, while the angle to the gradient direction stays finite.
    net = tanh_net(rng, depth=4)
    # heterogeneous layer gains make J_lᵀJ_l far from a multiple of I, so GN ≠ SGD direction
    # (mild enough that the inversion loops still contract)
    for l in (2, 3, 4):
        net.weights[l][:, :5] = net.weights[l][:, :5] @ np.diag([1.6, 1.2, 1.0, 0.8, 0.6])
        net.feedback[l] = reg.regularized_decoder(net, l, 0.0)
    x = 0.3 * rng.normal(size=(3, 5))
    y = rng.normal(size=(3, 5))
    h = net.forward(x)
    betas = np.array([1e-1, 3e-2, 1e-2, 3e-3, 1e-3])
    to_gn, to_sgd = [], []
    for beta in betas:
        tau_L = tg.output_target(h[4], y, "squared_error", beta)
        taus = tg.inversion_targets(net, h, tau_L, "input", tol=1e-15, max_iter=2000)
        gn = bp.gauss_newton_direction(net, h, y, "squared_error", beta, 1)
        sgd = bp.sgd_direction(net, h, y, "squared_error", beta, 1)
        to_gn.append(angle(taus[1] - h[1], gn).max())
        to_sgd.append(angle(taus[1] - h[1], sgd).min())
    fit = np.polyfit(np.log(betas), np.log(to_gn), 1)[0]
    # first-order agreement: the angle is O(β) (slope 1 ± 0.2 from a 5-point fit)
    assert fit == pytest.approx(1.0, abs=0.2)
    assert to_gn[-1] < 1e-3
    # the gradient direction differs by a finite angle that does not shrink with β
    assert min(to_sgd) > 0.1
    assert to_sgd[-1] == pytest.approx(to_sgd[-2], rel=0.05)
