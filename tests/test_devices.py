"""The Brian2 device set-up of cdtp/brian/devices.py, measured on Brian2 itself."""

import pytest


@pytest.mark.brian2
def test_standalone_clocks_tick_together_as_in_runtime(standalone_project):
    """A clock of 0.2 s (one 5 Hz γ cycle) beside the 1 ms step clock: at every one of its
    ticks it runs in the same time slot as the step clock, before the step (by ``order``), for
    the 100 s simulated here. Brian2's standalone network compares clock times to 1e-14 s, and
    t = i·dt rounded drifts further apart than that from t ≈ 60 s on (measured without the
    device set-up: the slow clock then reads counts one step late); the runtime targets' rule,
    which cdtp gives the standalone network, compares to 1e-4 of the smaller dt."""
    import brian2 as b2

    from cdtp.brian.devices import configure_device

    project = standalone_project("clocks")  # one directory (a second call would make another)
    configure_device("cpp_standalone", project)
    try:
        fast = b2.Clock(dt=1 * b2.ms, name="step_clock")
        slow = b2.Clock(dt=200 * b2.ms, name="slow_clock")
        g = b2.NeuronGroup(1, "steps : 1\nseen : 1\nlate : 1", clock=fast, name="counter")
        g.run_regularly("steps += 1", clock=fast, when="groups", order=1, name="count")
        # at slow tick j the step clock has made 200·j steps, if this runs before its step j·200
        g.run_regularly("late += int(abs(steps - seen - 200) > 0.5) * int(steps > 0)\n"
                        "seen = steps", clock=slow, when="groups", order=0, name="check")
        net = b2.Network(g)
        net.run(100 * b2.second)
        b2.get_device().build(directory=project, compile=True, run=True, with_output=False)
        # 500 slow ticks, the first at t = 0 (steps 0, nothing to compare): every later one
        # must have seen exactly 200 more steps than the one before
        assert float(g.seen[0]) == 99_800.0
        assert float(g.late[0]) == 0.0
    finally:
        configure_device("numpy", None)
