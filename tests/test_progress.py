"""Progress bars: drawn on a terminal (here a fake one, or forced with CDTP_PROGRESS=1) with
count, rate and ETA; nothing at all when stderr is not a terminal or with --quiet."""

import io

import numpy as np
import pytest

from cdtp.study.progress import RunProgress, SweepProgress, enabled


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_run_bar_shows_cycles_rate_and_eta_on_a_terminal(monkeypatch):
    monkeypatch.delenv("CDTP_PROGRESS", raising=False)
    term = _Terminal()
    bar = RunProgress("run quick", stream=term, mininterval=0)  # draw every update
    for done in (0, 3, 7, 10):
        bar(done, 10)
    bar.close()
    text = term.getvalue()
    assert "run quick" in text and "10/10" in text and "3/10" in text
    assert "cycle/s" in text or "s/cycle" in text  # the rate
    assert "<" in text  # elapsed<remaining: the ETA


def test_sweep_bar_shows_running_and_failed(monkeypatch):
    monkeypatch.delenv("CDTP_PROGRESS", raising=False)
    term = _Terminal()
    bar = SweepProgress("sweep fd", stream=term, mininterval=0)
    bar(0, 4, running=2, failed=0)
    bar(3, 4, running=1, failed=1)
    bar.close()
    text = term.getvalue()
    assert "3/4" in text and "running 1, failed 1" in text


def test_silent_off_a_terminal_or_quiet_and_forced_on_by_the_environment(monkeypatch):
    monkeypatch.delenv("CDTP_PROGRESS", raising=False)
    pipe, term = io.StringIO(), _Terminal()
    for stream, quiet in ((pipe, False), (term, True)):
        bar = RunProgress("run", quiet=quiet, stream=stream)
        bar(5, 10)
        bar.close()
    assert pipe.getvalue() == "" and term.getvalue() == ""
    monkeypatch.setenv("CDTP_PROGRESS", "1")
    assert enabled(quiet=True, stream=io.StringIO())
    monkeypatch.setenv("CDTP_PROGRESS", "0")
    assert not enabled(stream=_Terminal())


def test_simulate_ticks_every_cycle_within_a_chunk():
    # the reference map ticks after each cycle: a 5-cycle chunk reports 1, 2, …, 5 before the
    # chunk's own progress call
    from cdtp.brian.simulation import simulate
    from cdtp.model.circuit import circuit_from_dict
    from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
    from cdtp.record.dataset import RecordSpec

    circuit = circuit_from_dict({
        "sizes": [3, 3, 2], "nonlinearity": "tanh", "seed": 2,
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "1 ms", "tau_tau": "0 ms"},
    })
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    schedule = Schedule(GammaSchedule("square", frequency=60.0, duty=0.4), PlasticityGate())
    calls = []
    simulate(circuit, schedule, x, y, dt=1e-3, backend="map",
             record=RecordSpec(variables=(), chunk_cycles=200),
             progress=lambda d, n: calls.append(("chunk", d, n)),
             tick=lambda d, n: calls.append(("tick", d, n)))
    assert calls == [*(("tick", k, 5) for k in range(1, 6)), ("chunk", 5, 5)]


@pytest.mark.brian2
def test_brian2_runs_tick_through_the_report_hook():
    # Brian2 calls the report hook at the start and the end of every run() (and every 0.5 s of
    # wall time in between): the ticks rise to the cycles done, within the chunk
    from cdtp.brian.simulation import simulate
    from cdtp.model.circuit import circuit_from_dict
    from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule
    from cdtp.record.dataset import RecordSpec

    circuit = circuit_from_dict({
        "sizes": [3, 3, 2], "nonlinearity": "tanh", "seed": 2,
        "time_constants": {"tau_h": "0 ms", "tau_a": "1 ms", "tau_u": "1 ms", "tau_tau": "0 ms"},
    })
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 2))
    schedule = Schedule(GammaSchedule("square", frequency=16.0, duty=0.4), PlasticityGate())
    ticks = []
    simulate(circuit, schedule, x, y, dt=1e-3, device="numpy",
             record=RecordSpec(variables=(), chunk_cycles=2),
             tick=lambda d, n: ticks.append((d, n)))
    done = [d for d, _ in ticks]
    assert {n for _, n in ticks} == {4} and done == sorted(done)
    assert 2 in done and done[-1] == 4  # the end of each 2-cycle chunk
