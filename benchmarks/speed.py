"""Speed of the CDTP circuit: the engine vs a straightforward Brian2 build vs the numpy map.

For the reference family (L = 3 computed layers, every layer n units, tanh, squared error, Δ1
feedback learning, finite time constants so every variable is a real ODE), this measures in one
process, for n in {32, 64, 128, 256, 512}:

(a) ``engine``: :func:`cdtp.brian.engine.build` on the cython target (code compiled once and cached;
    compile time excluded, reported separately), and ``standalone``: the same on
    cpp_standalone, timed by the binary's own clock over all its cycles (one run per build);
(b) ``baseline``: the build a Brian2 user would write first — the same equations as
    differential equations with ``method="euler"``, σ evaluated per synapse inside the summed
    variables, plasticity and the normalization ‖σ(a)‖² computed per synapse every step,
    parameters as plain namespace values (see :func:`baseline_network`);
(c) ``numpy``: the reference map :func:`cdtp.reference.cdtp_map.step`, a vectorized numpy
    Euler integrator of the same equations.

Each is timed over whole γ cycles after a warm-up cycle. The runtime variants report the marginal
cost of a step (a long run minus a short one, minimum of ``--repeats``), and the fixed cost of a
``run()`` call separately: Brian2 prepares its code objects on every call, ~0.1–0.2 s, which
over a 300-step run would triple the apparent cost of a step. Peak memory is the resident set
size of a fresh subprocess per (variant, n). Results: µs per simulated step, cycles per second,
and the ratios engine/numpy and baseline/engine. With ``--write`` the table goes to
``benchmarks/RESULTS.md``.

Run ``python -m benchmarks.speed [--write] [--sizes 32 64 ...]`` (``make bench``; the first run
compiles the cython code of both Brian2 builds, several minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = (32, 64, 128, 256, 512)
DT = 1e-4
FREQUENCY = 100.0  # 100 steps per γ cycle
TAU = {"tau_h": 3e-4, "tau_a": 3e-4, "tau_u": 1e-3, "tau_tau": 3e-4}


# engine run options of the variants beyond the defaults
VARIANT_OPTIONS = {
    "standalone_p10": {"plasticity_every": 10},
    "engine_p10": {"plasticity_every": 10},
}


def circuit_of(n: int):
    from cdtp.model.circuit import CircuitConfig

    return CircuitConfig(
        sizes=(n, n, n, n), name=f"bench_{n}", nonlinearity="tanh", loss="squared_error",
        feedback_rule="delta1", feedback_init="pinv", eta_w=0.01, eta_omega=1.0, beta=0.1,
        seed=0, **TAU,
    )


def schedule():
    from cdtp.model.gating import GammaSchedule, PlasticityGate, Schedule

    return Schedule(GammaSchedule("square", frequency=FREQUENCY, duty=0.5),
                    PlasticityGate("descending"))


def stream(n: int, cycles: int):
    rng = np.random.default_rng(0)
    return 0.5 * rng.normal(size=(cycles, n)), 0.5 * rng.normal(size=(cycles, n))


# -- (b) the straightforward Brian2 build ---------------------------------------------------------
def baseline_network(n: int, cycles: int):
    """Eqs 46–51 as a first Brian2 model: ODEs with ``method="euler"``, σ inside the synapses,
    plasticity and normalization per synapse every step, parameters in the namespace."""
    import brian2 as b2

    from cdtp.brian.engine import initial_network

    circuit = circuit_of(n)
    net0 = initial_network(circuit)
    x, y = stream(n, cycles)
    period = 1 / FREQUENCY
    ns = {
        "tau_h": TAU["tau_h"] * b2.second, "tau_a": TAU["tau_a"] * b2.second,
        "tau_u": TAU["tau_u"] * b2.second, "tau_tau": TAU["tau_tau"] * b2.second,
        "beta": circuit.beta, "eta_w": circuit.eta_w, "eta_omega": circuit.eta_omega * b2.Hz,
        "period": period * b2.second, "duty": 0.5, "eps": 0.02,
        "stim": b2.TimedArray(x, dt=period * b2.second),
        "label": b2.TimedArray(y, dt=period * b2.second),
    }
    gamma = "gamma = int((t % period) < duty*period) : 1"
    hold = "hold = int(gamma >= 1 - eps) : 1"
    plast = "p = int((t % period) >= duty*period) : 1"
    clock = b2.Clock(dt=DT * b2.second)
    layers = [b2.NeuronGroup(n, "a = stim(t, i) : 1\nm = a : 1", clock=clock, namespace=ns,
                             name="base_0")]
    for l in range(1, 4):
        top = l == 3
        eqs = f"""
        dh/dt = (h_in - h)/tau_h : 1
        da/dt = hold*(h - a)/tau_a : 1
        du/dt = (target - u + (1 - hold)*(u - h))/tau_u : 1
        dtarget/dt = dtau_dt : 1
        dtau_dt = ({'a - (1 - gamma)*beta*(a - label(t, i))' if top else
                    'gamma*a + (1 - gamma)*fb'} - target)/tau_tau : 1/second
        m = gamma*a + (1 - gamma)*fb : 1
        h_in : 1
        fb : 1
        sq : 1
        {gamma}
        {hold}
        {plast}
        """
        layers.append(b2.NeuronGroup(n, eqs, method="euler", clock=clock, namespace=ns,
                                     name=f"base_{l}"))
    syns = []
    for l in range(1, 4):
        ff = b2.Synapses(layers[l - 1], layers[l], """
            W : 1
            h_in_post = W*tanh(m_pre) + b_post_dummy : 1 (summed)
            b_post_dummy : 1
            """, clock=clock, namespace=ns, name=f"base_ff_{l}")
        ff.connect()
        ff.W = net0.weights[l][:, :n].T.ravel()
        ff.b_post_dummy = np.repeat(net0.weights[l][:, n], 1)[np.asarray(ff.j[:])] / n
        # normalization ‖σ(a_{l−1})‖² pooled per synapse, then the DTP rule every step
        ff.run_regularly("W += eta_w*p_post*dtau_dt_post*dt*tanh(a_pre)/(sq_post + 1)",
                         when="groups")
        norm = b2.Synapses(layers[l - 1], layers[l], "sq_post = tanh(a_pre)**2 : 1 (summed)",
                           clock=clock, namespace=ns, name=f"base_norm_{l}")
        norm.connect()
        syns += [ff, norm]
    for l in range(2, 4):
        fb = b2.Synapses(layers[l], layers[l - 1], """
            Omega : 1
            fb_post = Omega*tanh(u_pre) : 1 (summed)
            """, clock=clock, namespace=ns, name=f"base_fb_{l}")
        fb.connect()
        fb.Omega = net0.feedback[l][:, :n].T.ravel()
        fb.run_regularly("Omega += eta_omega*dt*(m_post - fb_post)*tanh(u_pre)", when="groups")
        syns.append(fb)
    return b2.Network(*layers, *syns)


# -- timing ---------------------------------------------------------------------------------------
def _marginal(run_cycles, cycles: int, repeats: int) -> tuple[float, float]:
    """Seconds per cycle and per call of ``run_cycles(k)`` (simulate k more cycles): each
    repeat times a 1-cycle call and a (1 + cycles)-cycle call; the difference is the cost of
    ``cycles`` cycles without the fixed cost of a call (Brian2's ``Network.run`` prepares its
    code objects on every call, ~0.1–0.2 s), which is reported separately."""
    short, long = [], []
    for _ in range(repeats):
        t1 = time.perf_counter()
        run_cycles(1)
        short.append(time.perf_counter() - t1)
        t1 = time.perf_counter()
        run_cycles(1 + cycles)
        long.append(time.perf_counter() - t1)
    per_cycle = (min(long) - min(short)) / cycles
    return per_cycle, min(short) - per_cycle


def time_variant(variant: str, n: int, cycles: int, repeats: int) -> dict:
    spc = round(1 / (FREQUENCY * DT))
    total = (cycles + 2) * (repeats + 1) + 1
    t0 = time.perf_counter()
    call = float("nan")
    if variant.startswith("engine"):
        from cdtp.brian.engine import build

        x, y = stream(n, total)
        run = build(circuit_of(n), schedule(), x, y, dt=DT, device="cython",
                    **VARIANT_OPTIONS.get(variant, {}))
        run.run(1)
        setup = time.perf_counter() - t0
        per_cycle, call = _marginal(run.run, cycles, repeats)
    elif variant.startswith("standalone"):
        import tempfile

        import brian2 as b2

        from cdtp.brian.engine import build

        x, y = stream(n, total)
        with tempfile.TemporaryDirectory() as tmp:
            run = build(circuit_of(n), schedule(), x, y, dt=DT, device="cpp_standalone",
                        standalone_directory=tmp, **VARIANT_OPTIONS.get(variant, {}))
            run.run(total)
            setup = time.perf_counter() - t0
            # the simulation loop's own time, measured inside the binary (no build, no I/O)
            per_cycle = b2.get_device()._last_run_time / total
    elif variant == "baseline":
        import brian2 as b2

        b2.prefs.codegen.target = "cython"
        net = baseline_network(n, total)
        net.run(spc * DT * b2.second)
        setup = time.perf_counter() - t0
        per_cycle, call = _marginal(lambda k: net.run(k * spc * DT * b2.second), cycles, repeats)
    else:
        from cdtp.brian.engine import initial_network
        from cdtp.reference import cdtp_map

        c = circuit_of(n)
        params = cdtp_map.CDTPParameters(
            dt=DT, eta_w=c.eta_w, eta_omega=c.eta_omega, beta=c.beta,
            feedback_rule=c.feedback_rule, hold=c.hold, loss=c.loss, **TAU,
        )
        state = cdtp_map.CDTPState.initial(initial_network(c))
        gates = schedule().sample(spc, DT, 3, c.hold)
        x, y = stream(n, total)
        rows = [{k: gates[k][r] for k in ("gamma", "hold", "plasticity")} for r in range(spc)]
        done = [0]

        def run_cycles(k):
            for _ in range(k):
                for r in range(spc):
                    cdtp_map.step(state, params, rows[r], x[done[0]][None], y[done[0]][None])
                done[0] += 1

        run_cycles(1)
        setup = time.perf_counter() - t0
        per_cycle, call = _marginal(run_cycles, cycles, repeats)
    return {"variant": variant, "n": n, "us_per_step": 1e6 * per_cycle / spc,
            "cycles_per_s": 1 / per_cycle, "setup_s": setup, "call_overhead_s": call}


def _child(variant: str, n: int, cycles: int, repeats: int) -> dict:
    """Time one (variant, n) in a fresh process and read its peak memory.

    ``engine_before`` is the ``engine`` variant of another source tree, named by
    ``CDTP_BEFORE_TREE`` (e.g. ``git worktree add /tmp/before REV``): its own
    ``benchmarks.speed`` and ``cdtp`` time it, in this run, interleaved with the current engine,
    so a change's speed is measured under the same load."""
    cwd, env, timed = HERE.parent, None, variant
    if variant == "engine_before":
        tree = os.environ.get("CDTP_BEFORE_TREE")
        if not tree or not (Path(tree) / "benchmarks" / "speed.py").is_file():
            raise SystemExit("variant engine_before needs CDTP_BEFORE_TREE=<a source tree of"
                             " cdtp, e.g. a git worktree of the revision to compare with>")
        cwd, env, timed = Path(tree), {**os.environ, "PYTHONPATH": str(tree)}, "engine"
    code = (
        "import json, resource, sys; from benchmarks.speed import time_variant;"
        f" r = time_variant({timed!r}, {n}, {cycles}, {repeats});"
        " r['peak_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        " print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=cwd, env=env, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "variant": variant}


def table(rows: list[dict]) -> str:
    by = {(r["variant"], r["n"]): r for r in rows}

    def f(variant, n, key, fmt="{:.0f}"):
        r = by.get((variant, n))
        return fmt.format(r[key]) if r else "—"

    def ratio(num, den, n):
        a, b = by.get((num, n)), by.get((den, n))
        return f"{a['us_per_step'] / b['us_per_step']:.2f}" if a and b else "—"

    lines = [
        "| n | engine (cython) µs/step | engine (standalone) µs/step |"
        " standalone, W every 10 steps µs/step | baseline µs/step |"
        " numpy µs/step | cython / numpy | standalone / numpy | standalone W/10 / numpy |"
        " baseline / cython | baseline / standalone |"
        " peak MiB cython / standalone / baseline / numpy |"
        " setup s cython / standalone / baseline | per run() call s cython / baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["n"] for r in rows}):
        lines.append(
            f"| {n} | {f('engine', n, 'us_per_step')} | {f('standalone', n, 'us_per_step')}"
            f" | {f('standalone_p10', n, 'us_per_step')}"
            f" | {f('baseline', n, 'us_per_step')} | {f('numpy', n, 'us_per_step')}"
            f" | {ratio('engine', 'numpy', n)} | {ratio('standalone', 'numpy', n)}"
            f" | {ratio('standalone_p10', 'numpy', n)}"
            f" | {ratio('baseline', 'engine', n)} | {ratio('baseline', 'standalone', n)}"
            f" | {f('engine', n, 'peak_mib')} / {f('standalone', n, 'peak_mib')}"
            f" / {f('baseline', n, 'peak_mib')} / {f('numpy', n, 'peak_mib')}"
            f" | {f('engine', n, 'setup_s', '{:.1f}')} / {f('standalone', n, 'setup_s', '{:.1f}')}"
            f" / {f('baseline', n, 'setup_s', '{:.1f}')}"
            f" | {f('engine', n, 'call_overhead_s', '{:.2f}')}"
            f" / {f('baseline', n, 'call_overhead_s', '{:.2f}')} |"
        )
    return "\n".join(lines)


def provenance(command: str) -> str:
    """The first words of a generated table: the command, the machine, the time and the load
    average at the end of the measurements."""
    load = os.getloadavg()
    return (
        f"Generated by `{command}` on {platform.platform()}, {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        f" load average at the end {load[0]:.2f}."
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+",
                        default=["numpy", "engine", "standalone", "standalone_p10", "baseline"])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        for variant in args.variants:
            r = _child(variant, n, args.cycles, args.repeats)
            print(json.dumps(r), flush=True)
            rows.append(r)
    text = "\n".join([
        "# Speed: engine vs straightforward Brian2 vs numpy",
        "",
        provenance("python -m benchmarks.speed --write")
        + " L = 3, all layers n units, tanh, Δ1 feedback learning, dt = 0.1 ms,"
        f" {round(1 / (FREQUENCY * DT))} steps per γ cycle. Runtime variants (cython, baseline,"
        " numpy): after a warm-up cycle, the marginal cost of a step — (min over"
        f" {args.repeats} repeats of a {1 + args.cycles}-cycle run − min of a 1-cycle run) /"
        f" {args.cycles} cycles — so the fixed cost of each `run()` call (Brian2 prepares its"
        " code objects on every call) is not spread over the steps; it is its own column."
        " Standalone: the binary's own clock over all its cycles. Setup = build + code"
        " generation + compilation + the warm-up cycle.",
        "",
        table(rows),
        "",
        "Targets (issue 6): engine ≤ 1.0× numpy at n = 64 and ≤ 1.5× at n = 256; engine ≥ 3×"
        " faster than the baseline at n = 128. The engine's best device is cpp_standalone;"
        " 'W every 10 steps' is the run option `plasticity_every=10` (the feedforward weight"
        " update on a slower clock, exact for held phases: tests/test_engine_speed.py); the"
        " other columns update W every step, as the reference map does.",
    ])
    before = {r["n"]: r for r in rows if r["variant"] == "engine_before"}
    now = {r["n"]: r for r in rows if r["variant"] == "engine"}
    if before:
        tree = os.environ.get("CDTP_BEFORE_TREE")
        rev = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or "?"
        lines = ["", "", f"Before / after, the same run: `engine_before` is the engine of"
                 f" revision {rev} (CDTP_BEFORE_TREE, a git worktree of it), timed as `engine`"
                 " in a process of its own, interleaved with it by n.",
                 "", "| n | engine before µs/step | engine µs/step | after / before |",
                 "|---|---|---|---|"]
        for n in sorted(before):
            b, a = before[n]["us_per_step"], now[n]["us_per_step"] if n in now else float("nan")
            lines.append(f"| {n} | {b:.0f} | {a:.0f} | {a / b:.2f} |")
        text += "\n".join(lines)
    print(text)
    if args.write:
        (HERE / "RESULTS.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
