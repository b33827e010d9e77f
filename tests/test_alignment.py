"""The learning diagnostics (cdtp.reference.alignment) against analytic limits."""

import numpy as np

from cdtp.model.layers import init_network
from cdtp.reference.alignment import reconstruction_errors, update_alignment
from cdtp.reference.trainer import recipe_targets


def test_reconstruction_of_an_exact_linear_inverse_is_zero():
    # σ = identity, square layers, Ω_l = W_l⁻¹ and no bias: g_l(f_l(x)) = x exactly, so both
    # errors are round-off (1e-12 allows for the condition number of random 5×5 matrices)
    net = init_network((5, 5, 5), np.random.default_rng(0), nonlinearity="identity", bias=False,
                       feedback_init="pinv")
    x = np.random.default_rng(1).standard_normal((20, 5))
    rec = reconstruction_errors(net, x)
    assert rec["regular"][2] < 1e-12 and rec["difference"][2] < 1e-12
    assert np.isnan(rec["regular"][:2]).all()
    # a decoder at half the inverse reconstructs half: relative error exactly 0.5
    net.feedback[2] *= 0.5
    rec = reconstruction_errors(net, x)
    np.testing.assert_allclose([rec["regular"][2], rec["difference"][2]], 0.5, rtol=1e-9)


def test_recipe_targets_follow_gauss_newton_as_the_output_step_vanishes():
    # Square layers and no leak: a converged difference loop puts τ_{l−1} at the exact
    # preimage of τ_l, whose first-order term is the Gauss-Newton step J_l⁻¹(τ_L − h_L), so the
    # angle to it is O(β). Small weights and pseudo-inverse decoders keep every loop contracting
    # at these β (at β = 1e-3 one of 30 targets already leaves f's bounded image and its loop
    # cycles), which the test checks first.
    net = init_network((6, 6, 6, 6), np.random.default_rng(0), nonlinearity="tanh",
                       feedback_init="pinv", weight_scale=0.5)
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((30, 6)), rng.standard_normal((30, 6))
    angles = []
    for beta in (1e-4, 1e-5):
        assert recipe_targets(net, x, y, "squared_error", beta, 0.0)[2] == 0  # all converged
        angles.append(update_alignment(net, x, y, "squared_error", beta, leak=0.0)["gn"][1:3])
    assert np.all(angles[1] < 0.05)   # degrees
    ratio = angles[0] / angles[1]
    # first order: the angle falls 10× per decade of β (measured 10.0–10.02)
    assert np.all((ratio > 9) & (ratio < 11)), ratio
    # …while backprop's step is another direction: the comparison can tell them apart
    ang = update_alignment(net, x, y, "squared_error", 1e-5, leak=0.0)
    assert np.all(ang["bp_gn"][1:3] > 10) and np.all(ang["bp"][1:3] > 10)


def _exact_linear_inverse():
    """σ = identity, square layers, Ω_l = W_l⁻¹, and 10 examples."""
    net = init_network((5, 5, 5, 5), np.random.default_rng(0), nonlinearity="identity",
                       bias=False, feedback_init="pinv")
    rng = np.random.default_rng(2)
    return net, rng.standard_normal((10, 5)), rng.standard_normal((10, 5))


def test_inversion_residual_is_the_damping_share_of_a_linear_loop():
    # σ = identity, square layers, Ω_l = W_l⁻¹: the leaky loop's fixed point is
    # u − h_l = (W_l Ω_l + λ)⁻¹ δ_l = δ_l / (1 + λ), so the target handed down misses by
    # f_l(τ_{l−1}) − τ_l = −λ δ_l / (1 + λ): the residual is λ / (1 + λ) exactly, at every
    # layer and example (the loops are iterated to 1e-10, hence rtol 1e-8); λ = 0 inverts
    # exactly.
    net, x, y = _exact_linear_inverse()
    for leak in (0.0, 0.2, 1.0):
        out = update_alignment(net, x, y, "squared_error", 0.5, leak=leak)
        res = out["inversion"]
        assert np.isnan(res[:2]).all()
        np.testing.assert_allclose(res[2:], leak / (1 + leak), rtol=1e-8, atol=1e-10)
        # the same value for every example, so the median equals the mean, and none misses by
        # more than its displacement
        np.testing.assert_allclose(out["inversion_median"][2:], leak / (1 + leak), rtol=1e-8,
                                   atol=1e-10)
        assert np.all(out["inversion_missed"][2:] == 0.0)


def test_inversion_residual_counts_loops_that_do_not_converge():
    """A loop whose gain is past the explicit step's limit (rate 1.75 with an exact inverse:
    u − h is multiplied by 1 − 1.75 (1 + λ) = −1.1 per iteration, 1.1^1000 ≈ 3e41 after the
    1 000 iterations, large but finite) hands down a target that misses by more than it was
    given: counted as missed, on every example."""
    net, x, y = _exact_linear_inverse()
    stable = update_alignment(net, x, y, "squared_error", 0.5, leak=0.2, rate=0.5)
    unstable = update_alignment(net, x, y, "squared_error", 0.5, leak=0.2, rate=1.75)
    assert np.all(stable["inversion_missed"][2:] == 0.0)
    assert np.all(unstable["inversion_missed"][2:] == 1.0), unstable["inversion_missed"]
