"""Figures of a recorded run: each function draws what it says from the Dataset."""



import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from cdtp.analysis import plots
from cdtp.analysis.propositions import check_all
from cdtp.brian.simulation import simulate
from cdtp.model.circuit import circuit_from_dict
from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule


@pytest.fixture(scope="module")
def run():
    circuit = circuit_from_dict({
        "sizes": [3, 4, 4, 3], "nonlinearity": "tanh", "seed": 1,
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "1 ms", "tau_tau": "0 ms"},
        "plasticity": {"eta_w": 0.05, "beta": 0.2},
    })
    rng = np.random.default_rng(0)
    x, y = 0.3 * rng.normal(size=(25, 3)), 0.3 * rng.normal(size=(25, 3))
    schedule = Schedule(GammaSchedule("square", frequency=50.0, duty=0.3), PlasticityGate())
    return simulate(circuit, schedule, x, y, dt=1e-3, backend="map")


def test_cycle_anatomy_draws_the_gates_and_the_traces(run):
    fig = plots.plot_cycle(run, cycle=1)
    top, bottom = fig.axes
    gamma = top.lines[0].get_ydata()
    # γ of a square wave with duty 0.3 over 20 steps: 6 ones then 14 zeros
    np.testing.assert_array_equal(gamma, run.gamma.sel(gate_layer=3).values[20:40])
    assert gamma.sum() == 6
    assert len(bottom.lines) >= 6  # a, h, τ, u of two units (u exists on the top layer)
    assert bottom.get_xlabel() == "time within the cycle [ms]"
    plt.close(fig)


def test_learning_curve_plots_the_loss_per_cycle(run):
    fig = plots.plot_learning_curve(run, window=5)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), run.loss.values)
    assert ax.get_ylabel() == run.loss.attrs["long_name"]
    plt.close(fig)


def test_residual_and_weight_change_figures(run):
    checks = check_all(run)
    fig = plots.plot_residuals(checks)
    assert sum(ax.get_visible() for ax in fig.axes) == len(checks)
    plt.close(fig)
    fig = plots.plot_weight_change(run)
    x, y = fig.axes[0].lines[0].get_data()
    # the discrete-limit circuit telescopes exactly (P5): recorded = predicted
    np.testing.assert_allclose(y, x, atol=1e-12)
    plt.close(fig)


def test_sweep_heatmap_and_its_errors():
    da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("duty", "frequency"),
                      coords={"duty": [0.2, 0.5], "frequency": [4.0, 8.0, 16.0]},
                      name="loss", attrs={"long_name": "final loss", "units": "1"})
    fig = plots.plot_sweep_heatmap(da, "frequency", "duty")
    mesh = fig.axes[0].collections[0]
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).ravel(), da.values.ravel())
    plt.close(fig)
    with pytest.raises(ValueError, match="reduce"):
        plots.plot_sweep_heatmap(da.expand_dims(seed=[0, 1]), "frequency", "duty")


def test_premise_figure_places_every_cell_by_state(run):
    from cdtp.analysis.propositions import HOLDS, NOT_APPLICABLE, VIOLATED

    res = check_all(run, ["P1"])["P1"].copy(deep=True)
    # one cell of each drawn state, set by hand: holds, violated, premise not met
    res["state"].values[:] = NOT_APPLICABLE
    res["state"].values[0, 0], res["state"].values[1, 0] = HOLDS, VIOLATED
    res["state"].values[2, 0] = 3
    res["premise_ratio"].values[:3, 0] = [0.1, 0.5, 40.0]
    res["residual"].values[:3, 0] = [1e-4, 0.3, 0.02]
    fig = plots.plot_premise(res)
    ax = fig.axes[0]
    points = {c.get_label().split(" (")[0]: c.get_offsets().data for c in ax.collections}
    # x = worst premise value / its tolerance, y = the conclusion's residual
    np.testing.assert_allclose(points["holds"], [[0.1, 1e-4]])
    np.testing.assert_allclose(points["violated"], [[0.5, 0.3]])
    np.testing.assert_allclose(points["premise not met"], [[40.0, 0.02]])
    assert f"{res.sizes['cycle'] * res.sizes['layer'] - 3} cells n/a" in ax.get_title()
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"] == [1.0]
    plt.close(fig)


def test_save_all_writes_the_standard_figures(run, tmp_path):
    paths = plots.save_all(run, tmp_path)
    checks = check_all(run)
    assert {p.name for p in paths} == {"learning_curve.png", "cycle.png", "propositions.png",
                                       "weight_change.png",
                                       *(f"premise_{name}.png" for name in checks)}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_cycle_figure_draws_every_layers_gamma_so_a_travelling_wave_shows():
    # a 3 ms lag per layer: γ_2 and γ_3 are γ_1 delayed by 3 and 6 steps
    circuit = circuit_from_dict({
        "sizes": [3, 4, 4, 3], "nonlinearity": "tanh", "seed": 1,
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "1 ms", "tau_tau": "0 ms"},
    })
    rng = np.random.default_rng(0)
    x, y = 0.3 * rng.normal(size=(3, 3)), 0.3 * rng.normal(size=(3, 3))
    schedule = Schedule(GammaSchedule("square", frequency=50.0, duty=0.3, lag=3e-3),
                        PlasticityGate())
    ds = simulate(circuit, schedule, x, y, dt=1e-3, backend="map")
    fig = plots.plot_cycle(ds, cycle=1)
    top = fig.axes[0]
    gammas = {line.get_label(): line.get_ydata() for line in top.lines
              if line.get_label().startswith("γ_")}
    assert set(gammas) == {"γ_1", "γ_2", "γ_3"}
    g1 = gammas["γ_1"]
    np.testing.assert_array_equal(gammas["γ_2"][3:], g1[:-3])
    np.testing.assert_array_equal(gammas["γ_3"][6:], g1[:-6])
    plt.close(fig)


def _text_inside(fig):
    """Every title, suptitle and axis label lies inside the figure once drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [t for ax in fig.axes if ax.get_visible()
             for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label,
                       ax.yaxis.label) if t.get_text()]
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    outside = []
    for t in texts:
        ext = t.get_window_extent(renderer)
        # half a pixel of slack for antialiasing at the edge
        if ext.x0 < box.x0 - 0.5 or ext.x1 > box.x1 + 0.5 or ext.y0 < box.y0 - 0.5 \
                or ext.y1 > box.y1 + 0.5:
            outside.append(t.get_text())
    return outside


def test_no_title_or_label_is_cut_in_the_saved_figures(run):
    checks = check_all(run)
    figures = [plots.plot_residuals(checks), plots.plot_cycle(run, cycle=1),
               plots.plot_learning_curve(run, window=5), plots.plot_weight_change(run),
               *[plots.plot_premise(res) for res in checks.values()]]
    for fig in figures:
        assert _text_inside(fig) == []
        plt.close(fig)
