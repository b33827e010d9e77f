"""Circuit files: the shipped examples load, and bad files are rejected with the file, the key,
the value and what is allowed."""

from pathlib import Path

import numpy as np
import pytest

from cdtp.model.circuit import CircuitConfig, ConfigError, circuit_from_dict, load_circuit

CIRCUITS = Path(__file__).resolve().parent.parent / "circuits"


@pytest.mark.parametrize("path", sorted(CIRCUITS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_circuits_load(path):
    circuit = load_circuit(path)
    assert isinstance(circuit, CircuitConfig)
    assert circuit.depth >= 1


def test_units_are_parsed_to_seconds(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('sizes = [3, 3]\n[time_constants]\ntau_u = "250 us"\ntau_a = "2 ms"\n'
                 '[plasticity]\neta_omega = "5 /s"\n')
    c = load_circuit(f)
    assert c.tau_u == 250e-6 and c.tau_a == 2e-3 and c.eta_omega == 5.0


def test_hidden_learning_rate_is_read_and_recorded_only_when_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('sizes = [3, 3, 2]\n[plasticity]\neta_w = 0.05\neta_w_hidden = 0.2\n')
    c = load_circuit(f)
    assert (c.eta_w_at(1), c.eta_w_at(2)) == (0.2, 0.05)
    assert c.to_dict()["eta_w_hidden"] == 0.2
    # a file without it records what it recorded before the key existed
    assert "eta_w_hidden" not in CircuitConfig(sizes=(3, 3, 2)).to_dict()
    with pytest.raises(ValueError, match="not one of 1 … 2"):
        c.eta_w_at(3)


def test_consolidation_is_read_and_recorded_only_when_not_every_step(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('sizes = [3, 3, 2]\n[plasticity]\nconsolidation = "cycle"\n')
    c = load_circuit(f)
    assert c.consolidation == "cycle" and c.to_dict()["consolidation"] == "cycle"
    assert "consolidation" not in CircuitConfig(sizes=(3, 3, 2)).to_dict()


def test_feedback_normalization_is_read_and_recorded_only_when_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('sizes = [3, 3, 2]\n[feedback]\nrule = "mirror"\ninit = "transpose"\n'
                 'normalize = true\n')
    c = load_circuit(f)
    assert c.normalize_feedback and c.to_dict()["normalize_feedback"] is True
    assert "normalize_feedback" not in CircuitConfig(sizes=(3, 3, 2)).to_dict()


def _write(tmp_path, text):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    return f


BAD = {
    "sizes_do_not_chain": ('sizes = [4, 3, 5]\n[feedback]\ninit = "pinv"\n', "sizes",
                           "wider than layer 1"),
    "sizes_not_integers": ("sizes = [4, 2.5]\n", "sizes", "positive integers"),
    "unknown_nonlinearity": ('sizes = [3, 3]\nnonlinearity = "relu6"\n', "nonlinearity",
                             "allowed: leaky_relu"),
    "negative_time_constant": ('sizes = [3, 3]\n[time_constants]\ntau_a = "-1 ms"\n',
                               "time_constants.tau_a", "must be ≥ 0"),
    "unit_does_not_parse": ('sizes = [3, 3]\n[time_constants]\ntau_a = "2 mV"\n',
                            "time_constants.tau_a", "unknown time unit 'mV'"),
    "bare_number_time": ('sizes = [3, 3]\n[time_constants]\ntau_a = 2\n',
                         "time_constants.tau_a", "has no unit"),
    "unknown_key": ('sizes = [3, 3]\n[plasticity]\neta_W = 0.1\n', "plasticity.eta_W",
                    "did you mean 'eta_w'"),
    "unknown_section": ('sizes = [3, 3]\n[plasticty]\neta_w = 0.1\n', "plasticty",
                        "did you mean 'plasticity'"),
    "wrong_type": ('sizes = [3, 3]\nbias = "yes"\n', "bias", "expected bool"),
    "unknown_feedback_rule": ('sizes = [3, 3]\n[feedback]\nrule = "delta3"\n', "feedback.rule",
                              "allowed: delta1, delta2, fixed"),
    "missing_sizes": ('nonlinearity = "tanh"\n', "sizes", "missing"),
    "unknown_decoder": ('sizes = [3, 3]\n[feedback]\ndecoder = "linear"\n', "feedback.decoder",
                        "allowed: sigma, slope_gated"),
    "slope_gated_without_difference": (
        'sizes = [3, 3, 3]\n[feedback]\ndecoder = "slope_gated"\n', "feedback.decoder",
        "needs feedback.difference = true"),
    "slope_gated_spiking": (
        'sizes = [3, 3, 3]\nneurons = "spiking"\n[feedback]\ndecoder = "slope_gated"\n'
        'difference = true\n', "feedback.decoder", "use decoder = 'sigma'"),
    "toml_syntax": ('sizes = [3, 3\n', "<syntax>", "not valid TOML"),
    "negative_hidden_rate": ('sizes = [3, 3, 3]\n[plasticity]\neta_w_hidden = -0.1\n',
                             "plasticity.eta_w_hidden", "or left out"),
    "normalize_without_mirror": ('sizes = [3, 3, 3]\n[feedback]\nrule = "delta1"\n'
                                 'normalize = true\n', "feedback.normalize",
                                 "needs feedback.rule = 'mirror'"),
    "unknown_consolidation": ('sizes = [3, 3, 3]\n[plasticity]\nconsolidation = "epoch"\n',
                              "plasticity.consolidation", "allowed: step, cycle"),
    "normalize_not_bool": ('sizes = [3, 3, 3]\n[feedback]\nnormalize = 1\n',
                           "feedback.normalize", "expected bool"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_circuit_files_are_rejected_with_file_key_and_allowed(tmp_path, case):
    text, key, fragment = BAD[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_circuit(path)
    message = str(info.value)
    assert str(path) in message
    assert info.value.key == key
    assert fragment in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such circuit file"):
        load_circuit(tmp_path / "nope.toml")


def test_config_is_frozen_and_serializable():
    c = circuit_from_dict({"sizes": [3, 2]})
    with pytest.raises(AttributeError):
        c.eta_w = 1.0
    d = c.to_dict()
    assert d["sizes"] == [3, 2] and d["hold"]["kind"] == "hard"


@pytest.mark.parametrize("r", [0.1, 1e-3])
def test_regularized_inverse_feedback_init(r):
    # feedback.init = "regularized_inverse": Ω_l = [A_r, −A_r b] with A_r = (WᵀW + rI)⁻¹Wᵀ of
    # W_l's linear part W and bias column b (seed 002, Sec 2.1), computed here from its
    # definition by a dense solve. Both are O(1)-conditioned 6×6 solves: 1e-10 is float64
    # round-off with room.
    import numpy as np

    from cdtp.brian.engine import initial_network

    circuit = circuit_from_dict({
        "sizes": [5, 6, 6, 4], "nonlinearity": "tanh", "seed": 3,
        "feedback": {"init": "regularized_inverse", "regularization": r},
    })
    net = initial_network(circuit)
    for l in (2, 3):
        w, b = net.weights[l][:, :-1], net.weights[l][:, -1]
        a_r = np.linalg.solve(w.T @ w + r * np.eye(w.shape[1]), w.T)
        np.testing.assert_allclose(net.feedback[l][:, :-1], a_r, atol=1e-10)
        np.testing.assert_allclose(net.feedback[l][:, -1], -a_r @ b, atol=1e-10)


@pytest.mark.parametrize("name", ["tanh", "leaky_relu", "softplus", "identity"])
def test_brian2_slope_expression_is_the_derivative(name):
    """σ′ as the Brian2 expression the slope-gated decoder uses equals the numpy derivative
    (evaluated by numpy with Brian2's function names; exact up to rounding, 1e-12)."""
    from cdtp.model.nonlinearities import get_nonlinearity

    nl = get_nonlinearity(name)
    x = np.linspace(-3, 3, 61)
    value = eval(nl.brian2_slope.format(x="x"),
                 {"tanh": np.tanh, "exp": np.exp, "int": lambda v: np.asarray(v, dtype=float),
                  "x": x})
    np.testing.assert_allclose(np.broadcast_to(value, x.shape), nl.derivative(x), atol=1e-12)
