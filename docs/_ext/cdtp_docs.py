"""Sphinx directives that read the reference pages off the code, so that they cannot go stale.

- ``.. cdtp-cli::`` — every subcommand, argument and option of ``cdtp`` from
  :func:`cdtp.study.cli.build_parser`;
- ``.. cdtp-toml:: circuit`` / ``scenario`` / ``rnn`` — every key of the circuit, scenario and
  RNN-experiment files from the key tables of :mod:`cdtp.model.circuit`, :mod:`cdtp.study.scenario` and
  :class:`cdtp.rnn.experiment.RNNExperimentConfig`, with the defaults of the
  dataclasses they load into and the allowed names of the modules' own lists;
- ``.. cdtp-dataset::`` — the dimensions, coordinates, variables and attributes of a results
  file, read from a real (two-cycle) run made during the build;
- :func:`run_examples` (at ``builder-inited``): that run, and the notebooks of ``analysis/``
  executed into ``docs/_generated/analysis/``, where MyST-NB renders them with their outputs;
- :func:`plain_text_docstrings`: the code's docstrings are written to read well as plain text
  (``|a|`` for an absolute value, tables and equations laid out by hand); it escapes the bars
  and shows indented blocks and hand-made tables that reStructuredText cannot parse as written.

The meaning of a key or option comes from the code when the code has it (argparse ``help``, the
numpydoc ``Attributes`` of the RNN config); the rest is written in :data:`KEY_DOCS` and
:data:`CLI_DOCS` below. A key or option that has neither, or a description of one that no longer
exists, is a Sphinx warning — an error in ``make docs`` and in the test suite (``-W``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import time
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

#: The repository (``CDTP_DOCS_REPO`` when the docs folder was copied elsewhere, as the test
#: suite does to keep generated files out of the source tree).
REPO = Path(os.environ.get("CDTP_DOCS_REPO", Path(__file__).resolve().parents[2]))

# ---------------------------------------------------------------------------------------------
# What a key means, where the code does not say it. "default" overrides the dataclass default
# (for keys whose default is decided elsewhere), "allowed" adds a range the validation checks.
KEY_DOCS: dict[str, dict[str, dict[str, str]]] = {
    "circuit": {
        "name": {"text": "A name for the circuit (recorded in the results file)."},
        "sizes": {"text": "Layer widths n_0 (input) … n_L (output).",
                  "type": "list of int", "allowed": "at least two integers ≥ 1; with "
                  "``pinv`` or ``regularized_inverse`` decoders no layer above the input may be "
                  "wider than the one below it", "default": "— (required)"},
        "nonlinearity": {"text": "σ, applied elementwise to every layer."},
        "leaky_slope": {"text": "Negative-side slope of the leaky ReLU.", "allowed": "(0, 1]"},
        "bias": {"text": "Append a constant-1 unit to σ of every layer (the paper's bias)."},
        "loss": {"text": "ℓ(a_L, y) of the output target; softmax cross-entropy needs ≥ 2 "
                 "output units."},
        "seed": {"text": "Seed of the initial weights W and Ω (the same as ``init.seed``).",
                 "allowed": "≥ 0"},
        "time_constants.tau_h": {"text": "τ_h of the feedforward drive h (Eq 46); 0 makes h "
                                 "algebraic.", "allowed": "0, or ≥ the scenario's dt"},
        "time_constants.tau_a": {"text": "τ_a of the held activity a (Eq 47).",
                                 "allowed": "0, or ≥ the scenario's dt"},
        "time_constants.tau_u": {"text": "τ_u of the decoder input u (Eq 48); dt/τ_u is the "
                                 "inversion loop's rate.", "allowed": "0, or ≥ the scenario's dt"},
        "time_constants.tau_tau": {"text": "τ_τ of the target τ (Eq 49); 0 makes it algebraic.",
                                   "allowed": "0, or ≥ the scenario's dt"},
        "hold_gate.kind": {"text": "c(γ), the paper's 1_{γ=1}: ``hard`` (c = 1 iff γ ≥ 1 − ε) "
                           "or ``smooth`` (a logistic of γ)."},
        "hold_gate.epsilon": {"text": "ε of the threshold 1 − ε.", "allowed": "(0, 1)"},
        "hold_gate.width": {"text": "Width of the ``smooth`` gate's logistic.", "allowed": "> 0"},
        "feedback.rule": {"text": "How Ω learns: ``delta1`` (Eq 51), ``delta2`` (Eq 52), "
                          "``fixed`` (never) or ``mirror`` (Ω follows the transpose of W's "
                          "changes, model §2.3)."},
        "feedback.init": {"text": "Ω at t = 0: ``random``, ``pinv`` (pseudo-inverse of W's "
                          "linear part), ``regularized_inverse`` (seed 002), ``transpose`` "
                          "(gain·Wᵀ/‖W‖₂²) or ``zeros``."},
        "feedback.regularization": {"text": "r of the ``regularized_inverse`` start.",
                                    "allowed": "≥ 0"},
        "feedback.gain": {"text": "Gain of transpose-type feedback (``transpose`` init and "
                          "``mirror`` rule).", "allowed": "≥ 0"},
        "feedback.leak": {"text": "λ of the leaky inversion loop (model §2.3); 0 is the "
                          "paper's Eq 48.", "allowed": "≥ 0"},
        "feedback.difference": {"text": "Feed back the change of g_l(u_l) since the "
                                "feedforward phase (model §2.3)."},
        "feedback.normalize": {"text": "Divide the feedback Ω_l sends down by "
                               "‖W_l‖_F² / ‖W_l(0)‖_F², summed by one normalization unit per "
                               "layer (model §2.3 item 7; needs the ``mirror`` rule).",
                               "default": "``false``"},
        "feedback.decoder": {"text": "What the feedback synapses send: ``sigma``, Ω σ̃(u) (the "
                             "paper's decoder), or ``slope_gated``, Ω ũ with each receiving "
                             "neuron gating the change of its feedback input by its own σ′(a) "
                             "(needs ``difference``; model §2.3).",
                             "allowed": "sigma, slope_gated"},
        "plasticity.eta_w": {"text": "η_W, the feedforward learning rate (dimensionless: "
                             "ΔW = η_W p s Δτ nᵀ).", "allowed": "≥ 0"},
        "plasticity.eta_w_hidden": {"text": "η_W of the hidden layers' feedforward synapses "
                                    "(W_l, l < L), when it should differ from the output "
                                    "layer's ``eta_w`` (model §2.3).", "allowed": "≥ 0",
                                    "default": "``eta_w``"},
        "plasticity.consolidation": {"text": "When W changes: ``step``, on every step of the "
                                     "plasticity window (Eq 50); ``cycle``, each neuron sums "
                                     "its drive over the γ cycle and the synapses apply the "
                                     "sum at the next cycle's start (model §2.3 item 6; needs "
                                     "a whole number of steps per cycle and no lag).",
                                     "allowed": "step, cycle", "default": "``step``"},
        "plasticity.eta_omega": {"text": "η_Ω, the rate of Δ1 / Δ2.", "allowed": "≥ 0"},
        "integration.method": {"text": "How Brian2 integrates the layers' differential "
                               "equations (docs/model.md §2.4): ``euler`` reproduces the "
                               "discrete map; ``exact`` and ``exponential_euler`` solve the "
                               "relaxations exactly over a step and accept dt above a time "
                               "constant; ``rk4``.", "default": "``euler``"},
        "neurons": {"text": "What a unit is (docs/model.md §2.5): ``rate``, a rate variable "
                    "(the paper's circuit); ``spiking``, each unit sends σ(m) up and σ(u) "
                    "down as the spikes of Poisson populations read out by a synaptic "
                    "filter, converging to the rate circuit as N grows "
                    "(benchmarks/SPIKING.md). Not in a batch.", "default": "``rate``"},
        "spiking.neurons_per_unit": {"text": "N, the Poisson neurons of one population (one "
                                     "population per unit and direction); the read-out's "
                                     "error falls like N^(−1/2).", "default": "100"},
        "spiking.rate_offset": {"text": "r_0 of a neuron's rate r = r_0 + r_1 σ (clipped to "
                                "[0, 1/dt]): the rate at σ = 0.", "default": "``\"500 Hz\"``"},
        "spiking.rate_gain": {"text": "r_1 of r = r_0 + r_1 σ; σ̂ = (r̂ − r_0)/r_1. Only "
                              "N·r enters the read-out's variance.", "default": "``\"500 Hz\"``"},
        "spiking.synapse_tau": {"text": "τ_s of the exponential synaptic filter that reads a "
                                "population's rate out (its variance ∝ 1/(N r τ_s); its lag "
                                "must be short against the γ phases).",
                                "default": "``\"2 ms\"``"},
        "plasticity.beta": {"text": "β, how far the output target is nudged down the loss "
                            "gradient.", "allowed": "≥ 0"},
        "plasticity.influence": {"text": "Scale W_l's update by the DTP influence factor s_l "
                                 "(Eqs 41–43)."},
        "plasticity.influence_eps": {"text": "ε in s_l's denominator.", "allowed": "≥ 0"},
        "init.weight_scale": {"text": "Scale of the random initial W.", "allowed": "≥ 0"},
        "init.feedback_scale": {"text": "Scale of a ``random`` initial Ω.", "allowed": "≥ 0"},
        "init.seed": {"text": "Seed of the initial weights (the same as the top-level "
                      "``seed``).", "allowed": "≥ 0"},
        "divergence.activity_bound": {"text": "The run stops as diverged when any |a|, |u| or "
                                      "|τ| exceeds this.", "allowed": "> 0"},
    },
    "scenario": {
        "name": {"text": "The run's name: the default output is ``results/<name>.nc``.",
                 "default": "the file's stem", "allowed": "a plain file name (no ``/``, "
                 "``\\``, ``:`` or leading ``.``)"},
        "circuit": {"text": "The circuit: a path relative to the scenario file, or an inline "
                    "``[circuit]`` table with the keys of a circuit file.",
                    "type": "str or table", "default": "— (required)"},
        "cycles": {"text": "γ cycles to run, one example per cycle. Give exactly one of "
                   "``cycles`` and ``epochs``.", "default": "—"},
        "epochs": {"text": "Passes over the task's training set (one example per cycle).",
                   "default": "—"},
        "dt": {"text": "The time step of the simulation.", "default": '``"1 ms"``',
               "allowed": "> 0; time constants 0 or ≥ dt"},
        "device": {"text": "Brian2's target: ``numpy`` (nothing to compile), ``cython``, or "
                   "``cpp_standalone`` (one compiled binary per run, 10–100× faster per step on "
                   "the learning benchmark; records the per-cycle output, label and loss and the "
                   "held-out evaluation only).",
                   "default": '``"numpy"``'},
        "seed": {"text": "Seed of the example stream (order of the examples; the task's seed "
                 "when ``task.seed`` is not given).", "default": "``0``", "allowed": "≥ 0"},
        "kind": {"text": "``circuit`` (this table), or ``rnn`` for an RNN experiment file "
                 "(its own keys, below).", "default": '``"circuit"``'},
        "task": {"text": "The ``[task]`` table: which examples the circuit sees.",
                 "type": "table", "default": '``name = "teacher_student"``'},
        "gamma": {"text": "The ``[gamma]`` table: the γ rhythm.", "type": "table",
                  "default": "see below"},
        "plasticity_gate": {"text": "The ``[plasticity_gate]`` table: when W may change.",
                            "type": "table", "default": "see below"},
        "record": {"text": "The ``[record]`` table: what is recorded.", "type": "table",
                   "default": "see below"},
        "sweep": {"text": "A ``[sweep]`` table turns the file into a grid: dotted keys → lists "
                  "of values, one run per point (``cdtp sweep``; ignored by ``cdtp run``).",
                  "type": "table", "default": "none"},
        "task.name": {"text": "``teacher_student`` (regression on a random teacher network of "
                      "the circuit's shape), ``teacher_classes`` (classes from a random tanh "
                      "teacher), ``digits`` (8×8 digits, needs sizes 64 … 10), ``mnist1d`` "
                      "(MNIST-1D generated offline, needs sizes 40 … 10) or ``npz`` (your own "
                      "arrays).", "default": "teacher_student"},
        "task.seed": {"text": "Seed of the task's data (the teachers, ``digits``' and "
                      "``npz``'s split, MNIST-1D's generation).",
                      "default": "the scenario's ``seed``", "allowed": "≥ 0"},
        "task.n_train": {"text": "Training examples of ``teacher_student``, "
                         "``teacher_classes`` and ``mnist1d``.",
                         "default": "``cycles`` (teacher_student), 6000, 4000"},
        "task.n_test": {"text": "Held-out examples of ``teacher_student``, ``teacher_classes`` "
                        "and ``mnist1d``.", "default": "256, 1000, 1000"},
        "task.noise": {"text": "Output noise of ``teacher_student``.", "default": "``0``"},
        "task.margin": {"text": "``teacher_classes``: how far the teacher's winning class must "
                        "lead for an example to be kept.", "default": "``0``"},
        "task.hidden": {"text": "``teacher_classes``: the teacher's hidden widths.",
                        "default": "the circuit's hidden widths"},
        "task.nonlinearity": {"text": "``teacher_classes``: the teacher's σ.",
                              "default": "``tanh``"},
        "task.test_fraction": {"text": "``digits`` / ``npz``: the share of the examples held "
                               "out for testing (a seeded split, stratified by class).",
                               "default": "digits' own split; none for npz",
                               "allowed": "(0, 1)"},
        "task.problem": {"text": "``npz``: ``classification`` or ``regression``; by default a "
                         "classification when the labels are integers or one-hot rows.",
                         "default": "from the labels"},
        "task.scale": {"text": "Input scale of ``digits`` and ``mnist1d`` (σ also acts on the "
                       "input: MNIST-1D's ±5 peaks saturate tanh at 1; the learning benchmark "
                       "uses 0.25).", "default": "``1.0``",
                       "allowed": "> 0"},
        "task.path": {"text": "The ``.npz`` file of an ``npz`` task, relative to the scenario "
                      "file (arrays ``x`` and ``y``; nothing is unpickled).", "default": "—"},
        "gamma.shape": {"text": "``square``, ``sinusoid``, ``raised_cosine``, "
                        "``smoothed_square`` or ``array`` (your own cycle in ``values``)."},
        "gamma.frequency": {"text": "Cycles per second.", "allowed": "> 0"},
        "gamma.duty": {"text": "Fraction of the cycle in the feedforward plateau (unused by "
                       "``sinusoid``).", "allowed": "(0, 1)"},
        "gamma.ramp": {"text": "Edge width of ``smoothed_square``, a fraction of the cycle.",
                       "allowed": "(0, 0.5), duty + 2·ramp ≤ 1"},
        "gamma.lag": {"text": "Travelling-wave lag Δ: layer l sees γ(t − (l − 1)Δ).",
                      "allowed": "≥ 0"},
        "gamma.values": {"text": "One cycle of γ for ``shape = \"array\"``, sampled uniformly.",
                         "type": "list of float", "allowed": "≥ 2 numbers in [0, 1]"},
        "plasticity_gate.kind": {"text": "``descending`` (open from the start of the γ descent "
                                 "to the trough), ``paper`` (1_{γ<1}), ``window`` (phases "
                                 "[start, end)), ``always`` or ``off``."},
        "plasticity_gate.start": {"text": "Start phase of a ``window`` gate.",
                                  "allowed": "[0, 1), < end"},
        "plasticity_gate.end": {"text": "End phase of a ``window`` gate.", "allowed": "(0, 1]"},
        "record.variables": {"text": "Traced variables (empty: no traces).",
                             "type": "list of str"},
        "record.layers": {"text": "Layers whose neurons are traced.", "type": "list of int",
                          "default": "all", "allowed": "layer indices 0 … L"},
        "record.neurons": {"text": "At most this many neurons per traced layer (the first "
                           "ones).", "default": "all"},
        "record.every": {"text": "Steps between trace samples."},
        "record.trace_cycles": {"text": "``[start, stop]``: trace only cycles start ≤ k < stop; "
                                "snapshots and per-cycle records cover every cycle.",
                                "type": "list of 2 int", "default": "all cycles",
                                "allowed": "0 ≤ start < stop"},
        "record.gates": {"text": "Record γ, c(γ) and p of every layer with the traces."},
        "record.snapshots": {"text": "Snapshot every neuron at each cycle's phase boundaries "
                             "(what ``cdtp check`` reads)."},
        "record.weights": {"text": "Snapshot W and Ω at the phase boundaries (P5, P6)."},
        "record.chunk_cycles": {"text": "Cycles simulated and written per chunk (bounds "
                                "memory)."},
        "record.spikes": {"text": "Spiking circuits: record the spikes of the first this many "
                          "neurons of every population, in the traced cycles, as the ragged "
                          "pair ``spike_time`` / ``spike_neuron`` (docs/model.md §5); kept "
                          "in memory until the run ends.", "allowed": "≥ 0"},
    },
}

#: What each global attribute of a results file means (checked against a real run).
ATTRIBUTE_DOCS = {
    "title": "a one-line description of the run",
    "circuit": "the resolved circuit: JSON of :class:`cdtp.model.circuit.CircuitConfig` (times in s, "
               "rates in 1/s)",
    "schedule": "the γ schedule and the plasticity gate (JSON)",
    "record": "what was requested to be recorded: JSON of :class:`cdtp.record.dataset.RecordSpec`",
    "cdtp_version": "the version of cdtp that made the file",
    "seed": "the circuit's seed (initial weights)",
    "dt": "the time step (s)",
    "steps_per_cycle": "time steps in one γ cycle (only when the period is a whole number of "
                       "steps)",
    "period_steps": "the γ period in time steps, 1/(f dt) (a float; cycles are ⌊·⌋ or ⌈·⌉ steps"
                    " long when it is not whole)",
    "boundary_steps": "the step of each phase boundary within a cycle (JSON)",
    "device": "Brian2's target (``numpy``, ``cython``, ``cpp_standalone``), or the numpy "
              "reference map",
    "backend": "``brian2`` (the circuit) or ``map`` (the discrete reference map)",
    "scenario": "the scenario's table after the ``--set`` overrides (JSON)",
    "scenario_file": "the scenario file the run was read from",
    "task": "the examples shown: the task and its parameters (JSON)",
    "diverged": "empty, or the divergence message (the cycles before it are kept)",
    "interrupted": "empty, or how Ctrl-C cut the run short",
    "cycles_completed": "γ cycles recorded",
    "cycles_planned": "γ cycles the run was to have; the run is complete when both are equal",
    "held_out": "where the held-out examples of the per-epoch evaluation came from",
}

#: Arguments and options whose argparse definition has no ``help``: (subcommand, dest) → text.
CLI_DOCS = {
    ("run", "scenario"): "the scenario file (TOML)",
    ("sweep", "scenario"): "the scenario file with a ``[sweep]`` table",
    ("sweep", "set"): "override a scenario key by dotted path before the grid is expanded "
                      "(repeatable)",
    ("check", "file"): "a results file (one run or a combined sweep)",
    ("check", "json"): "print the checks as JSON instead of the text report",
    ("plot", "file"): "a results file (one run or a combined sweep)",
    ("plot", "output"): "folder for the figures (default: next to the file)",
    ("info", "file"): "a results file (one run or a combined sweep)",
}

_KIND = {"str": "str", "float": "float", "bool": "bool", "int": "int", "seed": "int",
         "count": "int", "time": "time", "rate": "rate"}
_RANGE = {"seed": "≥ 0", "count": "≥ 1"}


# ---------------------------------------------------------------------------------------------
def _rst_table(header: list[str], rows: list[list[str]], widths: list[int]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: " + " ".join(map(str, widths)),
             ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            text = escape_bars(str(cell).replace("\n", " ")) or "\\ "
            lines.append(("   * - " if i == 0 else "     - ") + text)
    lines.append("")
    return lines


class _GeneratedDirective(SphinxDirective):
    has_content = False

    def _parse(self, lines: list[str]) -> list[nodes.Node]:
        node = nodes.section() if self.allow_titles else nodes.container()
        node.document = self.state.document
        source = f"<generated by {self.name}>"
        content = StringList(lines, source=source)
        if self.allow_titles:
            nested_parse_with_titles(self.state, content, node)
        else:
            self.state.nested_parse(content, self.content_offset, node)
        return list(node.children)

    allow_titles = False

    def warn(self, message: str) -> None:
        logger.warning(message, location=(self.env.docname, self.lineno))


# --- the CLI ---------------------------------------------------------------------------------
def _option_row(command: str, action: argparse.Action, warn) -> list[str] | None:
    if isinstance(action, argparse._HelpAction):
        return None
    if action.option_strings:
        metavar = ""
        if action.nargs != 0:
            metavar = " " + (action.metavar or action.dest.upper())
        name = ", ".join(f"``{o}{metavar}``" for o in action.option_strings)
    else:
        name = f"``{action.metavar or action.dest}``"
    text = action.help or CLI_DOCS.get((command, action.dest))
    if not text:
        warn(f"cdtp {command}: {name} has no help in cdtp/study/cli.py and none in CLI_DOCS")
        text = ""
    if action.help and (command, action.dest) in CLI_DOCS:
        warn(f"cdtp {command}: {name} has help in cdtp/study/cli.py; remove it from CLI_DOCS")
    extra = []
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        extra.append("repeatable")
    if action.type is not None and action.type is not str:
        extra.append(f"type {action.type.__name__}")
    if (action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS)):
        extra.append(f"default {action.default!r}")
    return [name, text + (f" ({'; '.join(extra)})" if extra else "")]


class CliDirective(_GeneratedDirective):
    """Every ``cdtp`` subcommand: its usage line, help, and a table of its arguments."""

    allow_titles = True

    def run(self):
        from cdtp.study.cli import build_parser

        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        helps = {a.dest: a.help for a in sub._choices_actions}
        seen = {(c, d) for c, d in CLI_DOCS}
        lines: list[str] = []
        for command, p in sub.choices.items():
            title = f"cdtp {command}"
            lines += [title, "-" * len(title), "", helps.get(command) or "", "",
                      ".. code-block:: text", ""]
            lines += ["   " + line for line in p.format_usage().strip().splitlines()]
            lines.append("")
            groups = [g for g in p._mutually_exclusive_groups]
            rows = []
            for action in p._actions:
                row = _option_row(command, action, self.warn)
                if row:
                    rows.append(row)
                    seen.discard((command, action.dest))
            lines += _rst_table(["argument / option", "what"], rows, [30, 70])
            for g in groups:
                names = " and ".join(f"``{a.option_strings[0]}``" for a in g._group_actions)
                lines += [f"{names} exclude each other.", ""]
        for command, dest in sorted(seen):
            self.warn(f"CLI_DOCS describes cdtp {command} {dest}, which the parser does not have")
        return self._parse(lines)


# --- TOML keys -------------------------------------------------------------------------------
def _format_default(value, kind, key: str = "") -> str:
    """A default as it would be written in the file."""
    if value is None:
        return "—"
    return f"``{_toml_value(value, kind, key)}``"


def _toml_value(value, kind, key: str = "") -> str:
    if kind == "rate" and key.endswith("frequency"):
        return f'"{value:g} Hz"'
    if kind == "time":
        return f'"{value * 1e3:g} ms"'
    if kind == "rate":
        return f'"{value:g} /s"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v, None) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _unit(kind) -> str:
    return {"time": "time (e.g. ``\"2 ms\"``, ``\"100 us\"``)",
            "rate": "1/time (e.g. ``\"5 /s\"``, ``\"8 Hz\"``)"}.get(kind, "")


def _circuit_keys():
    """(section, key, kind, default, allowed names) of every circuit-file key."""
    from cdtp.model import circuit as c
    from cdtp.model.gating import HOLD_GATES, HoldGate
    from cdtp.model.losses import LOSSES
    from cdtp.model.nonlinearities import NONLINEARITIES

    defaults = {f.name: f.default for f in dataclasses.fields(c.CircuitConfig)}
    hold, spiking = HoldGate(), c.SpikingParameters()
    names = {"nonlinearity": tuple(NONLINEARITIES), "loss": tuple(LOSSES),
             "feedback.rule": c.FEEDBACK_RULES, "feedback.init": c.FEEDBACK_INITS,
             "hold_gate.kind": HOLD_GATES, "neurons": c.NEURON_MODELS}
    out = []
    for key, kind in c._TOP.items():
        out.append(("", key, kind, defaults.get(key), names.get(key)))
    for section, spec in c._SECTIONS.items():
        for key, kind in spec.items():
            if section == "hold_gate":
                default = getattr(hold, key)
            elif section == "spiking":
                default = getattr(spiking, key)
            else:
                default = defaults[c._RENAME.get((section, key), key)]
            out.append((section, key, kind, default, names.get(f"{section}.{key}")))
    return out


def _scenario_keys():
    from cdtp.study import scenario as s
    from cdtp.model.gating import GAMMA_SHAPES, PLASTICITY_GATES, GammaSchedule, PlasticityGate
    from cdtp.record.dataset import TRACE_VARIABLES, RecordSpec

    names = {"device": s.DEVICES, "task.name": s.TASKS, "gamma.shape": GAMMA_SHAPES,
             "plasticity_gate.kind": PLASTICITY_GATES, "record.variables": TRACE_VARIABLES,
             "kind": ("circuit", "rnn")}
    out = [("", key, kind, None, names.get(key)) for key, kind in s._TOP.items()]
    # the [task] keys: the union of every task's keys (which task takes which is in the text)
    task_keys = {"name": "str"}
    for keys in s.TASK_KEYS.values():
        for key, kind in keys.items():
            task_keys.setdefault(key, kind)
    for section, spec, obj in (("task", task_keys, None), ("gamma", s._GAMMA, GammaSchedule()),
                               ("plasticity_gate", s._GATE, PlasticityGate()),
                               ("record", s._RECORD, RecordSpec())):
        for key, kind in spec.items():
            default = getattr(obj, key) if obj is not None else None
            out.append((section, key, kind, default, names.get(f"{section}.{key}")))
    return out


def _rnn_keys():
    from numpydoc.docscrape import NumpyDocString

    from cdtp.rnn.experiment import RNNExperimentConfig

    doc = NumpyDocString(RNNExperimentConfig.__doc__ or "")
    texts = {p.name: " ".join(p.desc) or "\\ " for p in doc["Attributes"]}
    types = {p.name: p.type for p in doc["Attributes"]}
    rows = []
    for f in dataclasses.fields(RNNExperimentConfig):
        rows.append((f.name, types.get(f.name, ""), f.default, texts.get(f.name)))
    return rows


class TomlDirective(_GeneratedDirective):
    """A table of every key of one kind of file (``circuit``, ``scenario`` or ``rnn``)."""

    required_arguments = 1

    def run(self):
        which = self.arguments[0]
        if which == "rnn":
            return self._rnn()
        keys = {"circuit": _circuit_keys, "scenario": _scenario_keys}[which]()
        docs = KEY_DOCS[which]
        described = set(docs)
        by_section: dict[str, list] = {}
        for section, key, kind, default, allowed_names in keys:
            dotted = f"{section}.{key}" if section else key
            doc = docs.get(dotted)
            described.discard(dotted)
            if doc is None:
                self.warn(f"{which} key {dotted!r} is not described in KEY_DOCS "
                          "(docs/_ext/cdtp_docs.py)")
                doc = {"text": ""}
            allowed = doc.get("allowed") or _RANGE.get(kind, "")
            if allowed_names:
                allowed = ", ".join(f"``{n}``" for n in allowed_names) + (
                    f"; {allowed}" if allowed else "")
            type_ = doc.get("type") or _KIND.get(kind, "table")
            default_text = doc.get("default") or _format_default(default, kind, dotted)
            by_section.setdefault(section, []).append(
                [f"``{dotted}``", type_, _unit(kind), default_text, allowed, doc["text"]])
        for dotted in sorted(described):
            self.warn(f"KEY_DOCS describes {which} key {dotted!r}, which the loader does not "
                      "accept")
        lines: list[str] = []
        for section, rows in by_section.items():
            lines += [f"**{'[' + section + ']' if section else 'top level'}**", ""]
            lines += _rst_table(["key", "type", "unit", "default", "allowed", "meaning"], rows,
                                [18, 8, 14, 10, 20, 30])
        return self._parse(lines)

    def _rnn(self):
        rows = []
        for name, type_, default, text in _rnn_keys():
            if not text:
                self.warn(f"RNN key {name!r} has no entry in RNNExperimentConfig's Attributes")
            rows.append([f"``{name}``", type_.replace("{", "").replace("}", ""),
                         _format_default(default, None), text or ""])
        return self._parse(_rst_table(["key", "type / allowed", "default", "meaning"], rows,
                                      [15, 25, 10, 50]))


# --- the results file ------------------------------------------------------------------------
#: The run the data-model page describes: the quickstart scenario, 2 cycles (a few seconds).
DATASET_CYCLES = 2


def write_example_dataset(path: str | Path) -> None:
    """The run the data-model page reads: the quickstart scenario for :data:`DATASET_CYCLES`
    cycles, written to ``path``."""
    from cdtp.study.scenario import load_scenario

    scenario = load_scenario(REPO / "scenarios" / "quickstart.toml",
                             [f"cycles={DATASET_CYCLES}"])
    scenario.simulate(path=Path(path)).close()


class DatasetDirective(_GeneratedDirective):
    """Tables of a real results file's dimensions, coordinates, variables and attributes."""

    def run(self):
        from cdtp.record.dataset import load

        with load(Path(self.env.app.srcdir) / GENERATED / "example.nc") as ds:
            ds = ds.load()
        lines = ["**Dimensions** (sizes of this run)", ""]
        lines += _rst_table(["dimension", "size"],
                            [[f"``{d}``", str(n)] for d, n in ds.sizes.items()], [30, 70])
        lines += ["**Coordinates**", ""]
        lines += _rst_table(
            ["name", "dims", "dtype", "units", "long_name"],
            [[f"``{k}``", ", ".join(v.dims), str(v.dtype), v.attrs.get("units", ""),
              v.attrs.get("long_name", "")] for k, v in ds.coords.items()], [18, 22, 10, 10, 40])
        lines += ["**Data variables**", ""]
        lines += _rst_table(
            ["name", "dims", "dtype", "units", "long_name"],
            [[f"``{k}``", ", ".join(v.dims), str(v.dtype), v.attrs.get("units", ""),
              v.attrs.get("long_name", "")] for k, v in ds.data_vars.items()],
            [18, 22, 10, 10, 40])
        lines += ["**Global attributes**", ""]
        rows = []
        for k, v in ds.attrs.items():
            if k not in ATTRIBUTE_DOCS:
                self.warn(f"the results file has an attribute {k!r} that ATTRIBUTE_DOCS "
                          "(docs/_ext/cdtp_docs.py) does not describe")
            text = str(v)
            if isinstance(v, str) and text.startswith("{"):
                with contextlib.suppress(ValueError):
                    text = "JSON: " + ", ".join(list(json.loads(text))[:6]) + ", …"
            text = text if len(text) <= 50 else text[:47] + "…"
            if k == "scenario_file":
                text = Path(text).name
            rows.append([f"``{k}``", type(v).__name__, ATTRIBUTE_DOCS.get(k, ""),
                         f"``{text.replace('`', chr(39))}``" if text.strip() else "(empty)"])
        for k in sorted(set(ATTRIBUTE_DOCS) - set(ds.attrs)):
            self.warn(f"ATTRIBUTE_DOCS describes an attribute {k!r} that a results file does "
                      "not have")
        lines += _rst_table(["attribute", "type", "meaning", "in this run"], rows,
                            [18, 8, 44, 30])
        return self._parse(lines)


# --- what the build runs: the notebooks and the example run -----------------------------------
GENERATED = "_generated"
NOTEBOOK_DIR = f"{GENERATED}/analysis"


def execute_notebook(source: str | Path, target: str | Path) -> None:
    """Run a notebook of ``analysis/`` in ``analysis/`` (so its relative paths resolve) and
    store it with its outputs at ``target``; a cell that raises raises here."""
    import nbformat
    from nbclient import NotebookClient

    source = Path(source)
    nb = nbformat.read(source, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(source.parent)}}).execute()
    nbformat.write(nb, target)


def run_examples(app) -> None:
    """Execute every notebook of ``analysis/`` (their short versions, ``CDTP_NOTEBOOK_SMALL=1``,
    which the test suite runs too) into ``docs/_generated/analysis/``, where MyST-NB renders
    them, and make the example results file of the data-model page. Each is a process of its
    own, run side by side on the machine's cores; any failure fails the build."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    out = Path(app.srcdir) / GENERATED
    if os.environ.get("CDTP_DOCS_REUSE_EXAMPLES") == "1" and (out / "example.nc").is_file():
        logger.info("CDTP_DOCS_REUSE_EXAMPLES=1: the notebooks and run of the last build")
        return
    if out.exists():
        shutil.rmtree(out)
    (out / "analysis").mkdir(parents=True)
    jobs = {f"notebook {p.name}": ("notebook", str(p), str(out / "analysis" / p.name))
            for p in sorted((REPO / "analysis").glob("*.ipynb"))}
    jobs["example run"] = ("dataset", str(out / "example.nc"))
    env = {**os.environ, "CDTP_NOTEBOOK_SMALL": "1", "CDTP_DOCS_REPO": str(REPO)}
    # the kernels draw figures as outputs (inline), whatever the caller's MPLBACKEND (the
    # Makefile exports Agg, which would leave the rendered notebooks without figures)
    backends = {"notebook": "module://matplotlib_inline.backend_inline", "dataset": "Agg"}

    def run(job):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, *job],
                              env={**env, "MPLBACKEND": backends[job[0]]},
                              capture_output=True, text=True)
        return done, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = dict(zip(jobs, pool.map(run, jobs.values())))
    failed = []
    for name, (done, seconds) in results.items():
        logger.info(f"{name}: {seconds:.1f} s")
        if done.returncode:
            failed.append(f"{name} failed:\n{done.stderr[-3000:]}")
    if failed:
        from sphinx.errors import ExtensionError

        raise ExtensionError("\n\n".join(failed))


# --- docstrings written as plain text ---------------------------------------------------------
#: ``|x|`` (an absolute value or a norm) outside inline code; reStructuredText would read it as a
#: substitution reference
_BARS = re.compile(r"(?<![\\`|\w])\|(?=[^\s|])([^|`\n]*?[^\s|\\])\|(?![|`\w])")
_TABLE_BORDER = re.compile(r"^\s*=+( +=+)+\s*$")


def escape_bars(text: str) -> str:
    """``|x|`` → ``\\|x\\|`` outside double-backquoted code."""
    parts = text.split("``")
    return "``".join(p if i % 2 else _BARS.sub(r"\\|\1\\|", p) for i, p in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _parses_as_table(lines: list[str]) -> bool:
    from docutils.core import publish_doctree

    text = "\n".join(line[_indent(lines[0]):] for line in lines)
    # only the layout matters here: roles such as :mod:`x` need Sphinx's environment
    text = re.sub(r":[\w.:+-]+:`", lambda m: " " * (len(m.group(0)) - 1) + "`", text)
    tree = publish_doctree(text, settings_overrides={"report_level": 5, "halt_level": 5,
                                                     "warning_stream": False})
    return bool(list(tree.findall(nodes.table))) and not [
        m for m in tree.findall(nodes.system_message) if m["level"] >= 2]


def _literal(lines: list[str], start: int, end: int, indent: int) -> None:
    """Show ``lines[start:end]`` as written: a literal block after a ``::`` of its own."""
    block = [" " * (indent + 4) + line[indent:] if line.strip() else "" for line in
             lines[start:end]]
    lines[start:end] = [" " * indent + "::", "", *block]


def plain_text_docstrings(app, what, name, obj, options, lines: list[str]) -> None:
    """Make a docstring written as plain text valid reStructuredText without changing what it
    says: escape ``|x|``; show a hand-made table that does not parse (text in a column margin)
    and an indented block that follows an ordinary paragraph (a usage line, an equation) as
    literal blocks."""
    lines[:] = [escape_bars(line) for line in lines]
    i = 0
    while i < len(lines):
        line = lines[i]
        if _TABLE_BORDER.match(line):  # a simple table: border, header, border, rows, border
            # it ends with a border followed by a blank line (or the end)
            indent, j, end = _indent(line), i + 1, None
            while j < len(lines) and end is None:
                if _TABLE_BORDER.match(lines[j]) and (j + 1 == len(lines)
                                                      or not lines[j + 1].strip()):
                    end = j + 1
                j += 1
            j = end or j
            if end is not None and not _parses_as_table(lines[i:j]):
                _literal(lines, i, j, indent)
                j += 2
            i = j
            continue
        # an indented block after a blank line, below a paragraph that does not announce it
        if (line.strip() and i >= 2 and not lines[i - 1].strip() and lines[i - 2].strip()
                and _indent(line) > _indent(lines[i - 2])):
            k = i - 2
            while k > 0 and lines[k - 1].strip():
                k -= 1
            para = lines[k].strip()
            announced = lines[i - 2].rstrip().endswith("::") or para.startswith(("..", "- ",
                                                                                  "* ", ">>>"))
            if not announced:
                base, j = _indent(lines[i - 2]), i
                while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                    j += 1
                while j > i and not lines[j - 1].strip():
                    j -= 1
                _literal(lines, i, j, base)
                i = j + 2
                continue
        i += 1


def setup(app):
    app.connect("autodoc-process-docstring", plain_text_docstrings, priority=100)
    app.add_directive("cdtp-cli", CliDirective)
    app.add_directive("cdtp-toml", TomlDirective)
    app.add_directive("cdtp-dataset", DatasetDirective)
    app.connect("builder-inited", run_examples)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # the processes of run_examples
    import sys

    if sys.argv[1] == "notebook":
        execute_notebook(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "dataset":
        write_example_dataset(sys.argv[2])
    else:
        raise SystemExit(f"unknown job {sys.argv[1]!r}")
