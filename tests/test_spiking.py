"""The spiking variant (docs/model.md §2.5): its circuit-file keys, the Poisson read-out's
error against the binomial prediction, and the spiking circuit's convergence to the rate
circuit as N grows."""

from __future__ import annotations

import numpy as np
import pytest

from cdtp.model.circuit import ConfigError, circuit_from_dict


@pytest.mark.parametrize("table, key, allowed", [
    ({"neurons": "spikes"}, "neurons", "allowed: rate, spiking"),
    ({"spiking": {"neurons_per_unit": 0}}, "spiking.neurons_per_unit", "an integer ≥ 1"),
    ({"spiking": {"neurons_per_unit": 2.5}}, "spiking.neurons_per_unit", "expected int"),
    ({"spiking": {"rate_gain": "0 Hz"}}, "spiking.rate_gain", "> 0 Hz"),
    ({"spiking": {"rate_offset": "-1 Hz"}}, "spiking.rate_offset", "≥ 0 Hz"),
    ({"spiking": {"synapse_tau": "2 Hz"}}, "spiking.synapse_tau", "expected a time"),
    ({"spiking": {"tau": "2 ms"}}, "spiking.tau", "allowed: neurons_per_unit"),
])
def test_bad_spiking_keys_name_file_key_and_allowed(table, key, allowed):
    with pytest.raises(ConfigError) as err:
        circuit_from_dict({"sizes": [3, 3], **table}, source="c.toml")
    assert str(err.value).startswith(f"c.toml: {key}: ")
    assert allowed in str(err.value)


def test_spiking_keys_load_in_si_units():
    c = circuit_from_dict({"sizes": [3, 3], "neurons": "spiking", "spiking": {
        "neurons_per_unit": 40, "rate_offset": "0.2 kHz", "rate_gain": "150 Hz",
        "synapse_tau": "3 ms"}})
    assert (c.neurons, c.spiking.neurons_per_unit) == ("spiking", 40)
    assert (c.spiking.rate_offset, c.spiking.rate_gain, c.spiking.synapse_tau) == (200.0, 150.0,
                                                                                    3e-3)
    # a rate circuit records no spiking parameters (its results file is unchanged)
    assert "spiking" not in circuit_from_dict({"sizes": [3, 3]}).to_dict()


def test_readout_error_matches_the_binomial_prediction_and_falls_like_sqrt_n():
    """One layer of units holding fixed σ: the filtered population read-out's relative RMS
    error against the prediction √(k/(2−k) r(1 − r dt)/(N dt))/r_1 of a binomial count through
    the filter (docs/model.md §2.5)."""
    from cdtp.brian.spiking import readout_error

    neurons = [10, 40, 160, 640]
    res = readout_error(np.linspace(-0.9, 0.9, 6), neurons, duration=0.15, settle=0.01)
    measured = np.array([res["measured"][n] for n in neurons])
    predicted = np.array([res["predicted"][n] for n in neurons])
    # 6 units × 0.14 s / τ_s (2 ms) ≈ 420 independent samples per N: the RMS has a relative
    # standard error of ≈ 1/√(2·420) ≈ 3.5 %; 15 % is four of them
    np.testing.assert_allclose(measured, predicted, rtol=0.15)
    slope = np.polyfit(np.log(neurons), np.log(measured), 1)[0]
    # the four errors are each within ~4 %, so the slope is within ±0.04 of −0.5
    assert -0.58 < slope < -0.42
