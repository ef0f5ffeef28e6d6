"""The gradient lab: vanishing and exploding gradients, and what LSTM, GRU and clipping do.

For each long-range problem (pipelines.gradient_lab.long_range_tasks), cell type and sequence length
the lab trains a small one-layer model and records whether it learns (against the trivial baseline),
the curve ‖∂L/∂h_t‖ over the time steps before and after training (models.gradient_probe), and the
global gradient norm at every training step, with and without clipping. It writes lab.json,
three PNG plots and report.md into the run directory.

The training here is a measurement loop, not a second trainer: each step is what the shared
trainer's optimizer does (Adam with Keras `clipnorm`, see pipelines.training.trainer.compile_model),
plus the two global norms the trainer's `fit` cannot expose. Batches are drawn fresh from the seeded
problem generators, so no data set, checkpoint or run history is involved.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.gradient_lab.long_range_tasks import (
    ADDING_BASELINE_MSE,
    RecallSpec,
    adding_problem,
    recall_problem,
)
from pipelines.training import plots
from pipelines.training import run_dir as runs
from pipelines.training.run_dir import LAB_FILE, REPORT_FILE

log = logging.getLogger("pipelines.gradient_lab.lab")

GRADIENT_PLOT = "gradient_vs_step.png"
SUCCESS_PLOT = "success_vs_length.png"
NORM_PLOT = "grad_norm_history.png"

CELL_LABELS = {"vanilla": "vanilla RNN", "lstm": "LSTM", "gru": "GRU",
               "ln_lstm": "LayerNormLSTM"}
PROBLEMS = ("adding", "recall")
# Longest sweep length: 400 takes 7 minutes of the lab on 2 cores; 2,000 would take hours.
MAX_LENGTH = 2000


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """What the lab runs; the defaults finish in under 15 minutes on 2 CPU cores.

    Args:
        problems: the long-range problems, from PROBLEMS.
        cells: the cell types, keys of CELL_LABELS.
        lengths: the sequence lengths of the success sweep (trained with clipping).
        unclipped_lengths: lengths also trained without clipping, for the norm-spike comparison.
        units: hidden units of every cell.
        batch_size: sequences per training step.
        train_steps: optimizer steps per run at most.
        check_every: steps between checks of the held-out score; a run stops once its skill
            reaches `stop_skill`.
        learning_rate: Adam's learning rate.
        clipnorm: Keras `clipnorm` of the clipped runs (as the trainer's default config).
        eval_examples: held-out sequences the final score is measured on.
        probe_examples: sequences in the batch ∂L/∂h_t is measured on.
        curve_length: the length whose ∂L/∂h_t curves the main plot shows.
        success_skill: skill (1 = perfect, 0 = trivial baseline) from which a run counts as
            having learned the problem: 0.8 removes 80% of the trivial predictor's error.
        stop_skill: skill at which a run stops training early, leaving the time to others.
        seed: seeds weights and data; the same seed repeats the lab.
        jit_compile: compile the training step with XLA (faster steps, slower start).
    """

    problems: tuple[str, ...] = PROBLEMS
    cells: tuple[str, ...] = tuple(CELL_LABELS)
    # 400 is left out of the defaults to stay within 15 minutes (it alone took 7 of 21 minutes
    # on 2 cores); `rnnkit lab gradients --lengths 10 50 100 200 400` runs it.
    lengths: tuple[int, ...] = (10, 50, 100, 200)
    unclipped_lengths: tuple[int, ...] = (100,)
    units: int = 16
    batch_size: int = 32
    train_steps: int = 1000
    check_every: int = 100
    learning_rate: float = 1e-2
    clipnorm: float = 1.0
    eval_examples: int = 1000
    probe_examples: int = 64
    curve_length: int = 100
    success_skill: float = 0.8
    stop_skill: float = 0.95
    seed: int = 42
    jit_compile: bool = True

    @classmethod
    def quick(cls) -> LabConfig:
        """A few-second variant for tests and smoke runs (too short to learn the problems)."""
        return cls(cells=("lstm",), lengths=(12,), unclipped_lengths=(12,), units=8,
                   batch_size=16, train_steps=6, check_every=3, eval_examples=64,
                   probe_examples=8, curve_length=12, jit_compile=False)

    def check(self) -> None:
        """Raise ValueError naming the first setting that cannot run."""
        unknown = [p for p in self.problems if p not in PROBLEMS]
        unknown += [c for c in self.cells if c not in CELL_LABELS]
        if unknown:
            raise ValueError(f"unknown problems or cells {unknown}; problems are {PROBLEMS}, "
                             f"cells are {list(CELL_LABELS)}")
        if not self.problems or not self.cells or not self.lengths:
            raise ValueError("the lab needs at least one problem, cell and length")
        if min(self.lengths) < 3 or max(self.lengths) > MAX_LENGTH:
            raise ValueError(f"lengths must be from 3 to {MAX_LENGTH}, got {self.lengths}")
        if self.curve_length not in self.lengths:
            raise ValueError(f"curve_length {self.curve_length} must be one of the lengths "
                             f"{self.lengths}")
        if not set(self.unclipped_lengths) <= set(self.lengths):
            raise ValueError(f"unclipped_lengths {self.unclipped_lengths} must be among the "
                             f"lengths {self.lengths} (each is compared with its clipped run)")
        sizes = {"units": self.units, "batch_size": self.batch_size,
                 "train_steps": self.train_steps, "check_every": self.check_every,
                 "eval_examples": self.eval_examples,
                 "probe_examples": self.probe_examples}
        bad = {k: v for k, v in sizes.items() if v < 1}
        if bad:
            raise ValueError(f"these settings must be positive: {bad}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One long-range problem: how to draw it, the model's head and loss, and how to score it.

    Args:
        name: "adding" or "recall".
        input_dim: features per step.
        generate: (n_examples, length, seed) -> (inputs, targets).
        metric: name of the score ("mse" or "accuracy").
        baseline: the score of the trivial predictor (mean / chance).
    """

    name: str
    input_dim: int
    generate: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]
    metric: str
    baseline: float

    def score(self, predictions: np.ndarray, targets: np.ndarray) -> float:
        """MSE for adding, per-symbol accuracy for recall."""
        if self.metric == "mse":
            return float(np.mean((predictions - targets) ** 2))
        return float(np.mean(np.argmax(predictions, axis=-1) == targets))

    def skill(self, score: float) -> float:
        """1 for a perfect score, 0 for the trivial baseline's, negative below it."""
        if self.metric == "mse":
            return 1.0 - score / self.baseline
        return (score - self.baseline) / (1.0 - self.baseline)


def make_problem(name: str) -> Problem:
    """The Problem called `name`.

    Args:
        name: one of PROBLEMS.
    """
    if name == "adding":
        return Problem("adding", 2, adding_problem, "mse", ADDING_BASELINE_MSE)
    if name == "recall":
        spec = RecallSpec()
        return Problem("recall", spec.input_dim,
                       lambda n, length, seed: recall_problem(n, length, seed, spec),
                       "accuracy", spec.chance_accuracy)
    raise ValueError(f"unknown problem {name!r}; choose one of {PROBLEMS}")


def build_model(problem: Problem, cell: str, length: int, units: int):
    """A one-layer many-to-one model: our recurrent layer, then a dense head.

    Args:
        problem: decides the input width and the head (1 number, or recall logits).
        cell: a key of CELL_LABELS.
        length: the sequence length (fixed, so the time loop can be compiled).
        units: hidden units.
    """
    import keras

    from models.layers import CELLS, RNN

    # The lab's "vanilla" is the registry's "rnn"; every other name is the registry's own.
    cell_class = CELLS["rnn" if cell == "vanilla" else cell]
    inputs = keras.Input((length, problem.input_dim))
    hidden = RNN(cell_class(units), name=cell)(inputs)
    if problem.name == "adding":
        outputs = keras.layers.Dense(1, name="sum")(hidden)
    else:
        spec = RecallSpec()
        logits = keras.layers.Dense(spec.recall_length * spec.n_symbols, name="logits")(hidden)
        outputs = keras.layers.Reshape((spec.recall_length, spec.n_symbols))(logits)
    return keras.Model(inputs, outputs, name=f"{problem.name}_{cell}_{length}")


def problem_loss(problem: Problem):
    """MSE for adding, cross-entropy on logits for recall."""
    import keras

    if problem.metric == "mse":
        return keras.losses.MeanSquaredError()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _curve(values: np.ndarray) -> list[float]:
    """A gradient-norm curve as JSON-able floats with 4 significant digits."""
    return [float(f"{v:.4g}") for v in values]


def train_run(problem: Problem, cell: str, length: int, clipped: bool,
              config: LabConfig) -> dict[str, Any]:
    """Train one model and measure it; returns the run's record for lab.json.

    Args:
        problem: the problem to learn.
        cell: the cell type.
        length: the sequence length.
        clipped: whether the optimizer clips (Keras clipnorm=config.clipnorm).
        config: the lab settings.
    """
    import keras
    import tensorflow as tf

    from models.gradient_probe import HiddenStateProbe, clipping_norms

    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    model = build_model(problem, cell, length, config.units)
    loss_fn = problem_loss(problem)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate,
                                      clipnorm=config.clipnorm if clipped else None)
    # Fixed held-out data, the same for every cell at this length.
    eval_x, eval_y = problem.generate(config.eval_examples, length, config.seed + 1_000_003)
    probe_x, probe_y = problem.generate(config.probe_examples, length, config.seed + 2_000_003)

    optimizer.build(model.trainable_variables)  # variables cannot be created inside the loop

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return tf.stack([tf.cast(loss, tf.float32), *clipping_norms(grads, optimizer)])

    @tf.function(jit_compile=config.jit_compile)
    def train_block(xs, ys):
        # Many steps per call: Python is visited once per block, not once per step.
        steps = tf.shape(xs)[0]
        rows = tf.TensorArray(tf.float32, size=steps)
        for i in tf.range(steps):
            rows = rows.write(i, train_step(xs[i], ys[i]))
        return rows.stack()

    @tf.function(jit_compile=config.jit_compile)
    def predict(x):
        return model(x, training=False)

    probe = HiddenStateProbe(model, loss_fn)
    curve_before = probe.norms(probe_x, probe_y)
    blocks = []
    for first in range(0, config.train_steps, config.check_every):
        steps = min(config.check_every, config.train_steps - first)
        xs, ys = problem.generate(steps * config.batch_size, length, config.seed + first)
        blocks.append(train_block(xs.reshape(steps, config.batch_size, *xs.shape[1:]),
                                  ys.reshape(steps, config.batch_size, *ys.shape[1:])).numpy())
        if not np.isfinite(blocks[-1]).all():
            break
        if problem.skill(problem.score(predict(eval_x).numpy(), eval_y)) >= config.stop_skill:
            break
    losses, norms, clipped_norms = np.concatenate(blocks).T
    curve_after = probe.norms(probe_x, probe_y)
    score = problem.score(predict(eval_x).numpy(), eval_y)
    skill = problem.skill(score)
    finite = bool(np.isfinite(losses).all())
    record = {
        "problem": problem.name, "cell": cell, "length": length, "clipped": clipped,
        "metric": problem.metric, "score": score, "baseline": problem.baseline,
        "skill": skill, "learned": bool(finite and skill >= config.success_skill),
        "steps": len(losses), "weights": len(model.trainable_variables),
        "final_loss": float(losses[-1]), "loss_history": _curve(losses),
        "grad_norm_history": _curve(norms), "clipped_norm_history": _curve(clipped_norms),
        "grad_norm_max": float(np.nanmax(norms)), "grad_norm_median": float(np.nanmedian(norms)),
        "dhdt_init": _curve(curve_before), "dhdt_trained": _curve(curve_after),
        "dhdt_ratio_init": _decay(curve_before), "dhdt_ratio_trained": _decay(curve_after),
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("%s %s T=%d %s: %s=%.4f (baseline %.4f, skill %.2f) in %.1f s", problem.name,
             CELL_LABELS[cell], length, "clipped" if clipped else "unclipped", problem.metric,
             score, problem.baseline, skill, record["seconds"])
    return record


def _decay(curve: np.ndarray) -> float:
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖: how much of the gradient reaches the first step (1 = all)."""
    last = float(curve[-1])
    return float(curve[0]) / last if last > 0 else 0.0


def run_lab(config: LabConfig, run_dir: Path) -> dict[str, Any]:
    """Run every configured experiment and write lab.json, the plots and report.md.

    Args:
        config: what to run.
        run_dir: the directory the outputs go to (created if missing).
    """
    config.check()
    run_dir.mkdir(parents=True, exist_ok=True)
    started, cpu_started = time.monotonic(), time.process_time()
    records = []
    for name in config.problems:
        problem = make_problem(name)
        for cell in config.cells:
            for length in config.lengths:
                records.append(train_run(problem, cell, length, True, config))
            for length in config.unclipped_lengths:
                records.append(train_run(problem, cell, length, False, config))
    lab = {"config": _config_json(config), "runs": records,
           "summary": summarize(records, config),
           "wall_time_s": round(time.monotonic() - started, 1),
           "cpu_time_s": round(time.process_time() - cpu_started, 1),
           "cpu_count": os.cpu_count()}
    runs.write_json(run_dir / LAB_FILE, lab)
    plot_gradients(records, config, run_dir / GRADIENT_PLOT)
    plot_success(records, config, run_dir / SUCCESS_PLOT)
    plot_norm_history(records, config, run_dir / NORM_PLOT)
    (run_dir / REPORT_FILE).write_text(report(lab))
    log.info("gradient lab finished in %.1f s: %s", lab["wall_time_s"], run_dir)
    return lab


def _config_json(config: LabConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}


def summarize(records: list[dict[str, Any]], config: LabConfig) -> dict[str, Any]:
    """The claims the lab checks, as numbers: gradient decay and who learns at which length.

    Args:
        records: the runs' records.
        config: the lab settings.
    """
    summary: dict[str, Any] = {"learned": {}, "dhdt_ratio": {}, "spikes": {}}
    for record in records:
        key = f"{record['problem']}/{record['cell']}"
        if record["clipped"]:
            summary["learned"].setdefault(key, {})[str(record["length"])] = record["learned"]
            if record["length"] == config.curve_length:
                summary["dhdt_ratio"][key] = {"init": record["dhdt_ratio_init"],
                                              "trained": record["dhdt_ratio_trained"]}
    for record in records:
        if record["length"] in config.unclipped_lengths:
            key = f"{record['problem']}/{record['cell']}/T={record['length']}"
            side = "clipped" if record["clipped"] else "unclipped"
            summary["spikes"].setdefault(key, {})[side] = {
                "max_norm": record["grad_norm_max"], "median_norm": record["grad_norm_median"],
                "max_applied_norm": float(np.nanmax(record["clipped_norm_history"])),
                "skill": record["skill"]}
    return summary




def _find(records, problem: str, cell: str, length: int, clipped: bool = True):
    for record in records:
        if (record["problem"], record["cell"], record["length"], record["clipped"]) == (
                problem, cell, length, clipped):
            return record
    return None


def plot_gradients(records: list[dict[str, Any]], config: LabConfig, path: Path) -> None:
    """‖∂L/∂h_t‖ against t on a log scale, one line per cell; rows: problems, columns:
    at initialisation and after training.

    Args:
        records: the runs' records.
        config: the lab settings (curve_length picks the runs).
        path: the PNG to write.
    """
    plt = plots.pyplot()
    rows = len(config.problems)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.6 * rows), squeeze=False)
    for row, problem in enumerate(config.problems):
        for col, (field, when) in enumerate((("dhdt_init", "at initialisation"),
                                             ("dhdt_trained", "after training"))):
            ax = axes[row][col]
            for cell in config.cells:
                record = _find(records, problem, cell, config.curve_length)
                if record is None:
                    continue
                curve = np.maximum(np.array(record[field]), 1e-45)
                ax.plot(np.arange(1, len(curve) + 1), curve, label=CELL_LABELS[cell])
            ax.set_yscale("log")
            ax.set_xlabel("time step t")
            ax.set_ylabel("‖∂L/∂h_t‖")
            ax.set_title(f"{problem} problem, T={config.curve_length}, {when}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    plots.save_figure(fig, path)


def plot_success(records: list[dict[str, Any]], config: LabConfig, path: Path) -> None:
    """Skill (1 = solved, 0 = trivial baseline) against sequence length, one line per cell.

    Args:
        records: the runs' records.
        config: the lab settings.
        path: the PNG to write.
    """
    plt = plots.pyplot()
    cols = len(config.problems)
    fig, axes = plt.subplots(1, cols, figsize=(5.5 * cols, 3.8), squeeze=False)
    for ax, problem in zip(axes[0], config.problems, strict=True):
        for cell in config.cells:
            points = [(r["length"], r["skill"]) for r in records
                      if r["problem"] == problem and r["cell"] == cell and r["clipped"]]
            points.sort()
            ax.plot([p[0] for p in points], [max(p[1], -0.5) for p in points], marker="o",
                    label=CELL_LABELS[cell])
        ax.axhline(config.success_skill, color="grey", linestyle="--", linewidth=1,
                   label="learned threshold")
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xticks(list(config.lengths), [str(n) for n in config.lengths])
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("skill (1 − MSE/baseline)" if problem == "adding"
                      else "skill ((acc − chance)/(1 − chance))")
        ax.set_ylim(-0.55, 1.05)
        ax.set_title(f"{problem} problem: who learns it")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    plots.save_figure(fig, path)


def plot_norm_history(records: list[dict[str, Any]], config: LabConfig, path: Path) -> None:
    """Global gradient norm at every training step, without and with clipping.

    Args:
        records: the runs' records.
        config: the lab settings (unclipped_lengths picks the runs).
        path: the PNG to write.
    """
    plt = plots.pyplot()
    panels = [(p, n) for p in config.problems for n in config.unclipped_lengths]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 3.4 * len(panels)), squeeze=False)
    for row, (problem, length) in enumerate(panels):
        for col, clipped in enumerate((False, True)):
            ax = axes[row][col]
            for cell in config.cells:
                record = _find(records, problem, cell, length, clipped)
                if record is None:
                    continue
                norms = np.array(record["grad_norm_history"])
                ax.plot(np.arange(1, len(norms) + 1), np.maximum(norms, 1e-12),
                        label=CELL_LABELS[cell], linewidth=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel("global gradient norm (before clipping)")
            label = f"clipnorm={config.clipnorm}" if clipped else "no clipping"
            ax.set_title(f"{problem} problem, T={length}, {label}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    plots.save_figure(fig, path)


def _cell_by_length(lab: dict[str, Any], heading: Callable[[str], str],
                    entry: Callable[[dict[str, Any]], str]) -> str:
    """One Markdown table per problem: a row per cell, a column per length.

    Args:
        lab: the lab.json content.
        heading: problem -> the paragraph above its table.
        entry: a run's record -> its table entry.
    """
    config = lab["config"]
    lines = []
    for problem in config["problems"]:
        lines.append(heading(problem))
        lines.append("| cell | " + " | ".join(f"T={n}" for n in config["lengths"]) + " |")
        lines.append("| --- |" + " --- |" * len(config["lengths"]))
        for cell in config["cells"]:
            records = [_find(lab["runs"], problem, cell, n) for n in config["lengths"]]
            entries = ["—" if record is None else entry(record) for record in records]
            lines.append(f"| {CELL_LABELS[cell]} | " + " | ".join(entries) + " |")
        lines.append("")
    return "\n".join(lines)


def results_table(lab: dict[str, Any]) -> str:
    """The clipped sweep as a Markdown table: score (skill) per cell and length.

    Args:
        lab: the lab.json content.
    """
    skill = lab["config"]["success_skill"]

    def heading(problem: str) -> str:
        metric = "MSE" if problem == "adding" else "accuracy"
        return (f"**{problem} problem** — {metric} on held-out sequences (trivial baseline "
                f"{make_problem(problem).baseline:.3f}); ✓ = learned (skill ≥ {skill})\n")

    return _cell_by_length(lab, heading,
                           lambda r: f"{r['score']:.3f}{' ✓' if r['learned'] else ''}")


def gradient_table(lab: dict[str, Any]) -> str:
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ per cell and length, at initialisation → after training (Markdown).

    Args:
        lab: the lab.json content.
    """
    return _cell_by_length(
        lab, lambda problem: f"**{problem} problem** — ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖, at "
                             "initialisation → after training (0 = below float32's range)\n",
        lambda r: f"{r['dhdt_ratio_init']:.0e} → {r['dhdt_ratio_trained']:.0e}")


def spike_table(lab: dict[str, Any]) -> str:
    """Global gradient norms with and without clipping (Markdown).

    Args:
        lab: the lab.json content.
    """
    lines = ["| problem / cell / length | clipping | max norm | median norm | max applied norm "
             "| skill |", "| --- | --- | --- | --- | --- | --- |"]
    for key, sides in lab["summary"]["spikes"].items():
        problem, cell, length = key.split("/")
        for side, values in sides.items():
            lines.append(f"| {problem} / {CELL_LABELS[cell]} / {length} | {side} | "
                         f"{values['max_norm']:.3g} | {values['median_norm']:.3g} | "
                         f"{values['max_applied_norm']:.3g} | {values['skill']:.2f} |")
    return "\n".join(lines) + "\n"


def findings(lab: dict[str, Any]) -> list[str]:
    """The lab's results in a few Markdown bullets of numbers, one per question it asks.

    Args:
        lab: the lab.json content.
    """
    config, runs = lab["config"], lab["runs"]
    lines = []
    for problem in config["problems"]:
        parts = []
        for cell in config["cells"]:
            learned = [n for n in config["lengths"]
                       if (r := _find(runs, problem, cell, n)) is not None and r["learned"]]
            parts.append(f"{CELL_LABELS[cell]} " + (
                "at T = " + ", ".join(map(str, learned)) if learned else "at no length"))
        lines.append(f"- **{problem}** — learned by " + "; ".join(parts) + ".")
    length = config["curve_length"]
    for problem in config["problems"]:
        parts = []
        for cell in config["cells"]:
            ratio = lab["summary"]["dhdt_ratio"].get(f"{problem}/{cell}")
            if ratio is not None:
                parts.append(f"{CELL_LABELS[cell]} {ratio['init']:.1e} → {ratio['trained']:.1e}")
        lines.append(f"- **gradient reach, {problem}, T={length}** (‖∂L/∂h_1‖/‖∂L/∂h_T‖, at "
                     "initialisation → after training): " + "; ".join(parts) + ".")
    for problem in config["problems"]:
        for length in config["unclipped_lengths"]:
            parts = []
            for cell in config["cells"]:
                sides = lab["summary"]["spikes"].get(f"{problem}/{cell}/T={length}", {})
                if {"clipped", "unclipped"} <= set(sides):
                    free, clipped = sides["unclipped"], sides["clipped"]
                    parts.append(f"{CELL_LABELS[cell]} peak {free['max_norm']:.3g} (median "
                                 f"{free['median_norm']:.3g}), skill {free['skill']:.2f} → "
                                 f"applied ≤ {clipped['max_applied_norm']:.3g}, skill "
                                 f"{clipped['skill']:.2f}")
            if parts:
                lines.append(f"- **spikes, {problem}, T={length}** (global gradient norm without "
                             f"clipping → with clipnorm={config['clipnorm']}): "
                             + "; ".join(parts) + ".")
    return lines


def report(lab: dict[str, Any]) -> str:
    """The short Markdown report of a lab run.

    Args:
        lab: the lab.json content.
    """
    config = lab["config"]
    return "\n".join([
        "# Gradient lab",
        "",
        f"{len(lab['runs'])} runs in {lab['wall_time_s']:.0f} s: {config['units']} units, "
        f"{config['train_steps']} Adam steps (lr {config['learning_rate']}) of "
        f"{config['batch_size']} fresh sequences, seed {config['seed']}.",
        "",
        "## Findings",
        "",
        *findings(lab),
        "",
        "## Who learns the long-range problems",
        "",
        f"![success]({SUCCESS_PLOT})",
        "",
        results_table(lab),
        "## How far back the gradient reaches",
        "",
        f"![gradients]({GRADIENT_PLOT})",
        "",
        gradient_table(lab),
        "## Gradient-norm spikes and clipping",
        "",
        f"![norms]({NORM_PLOT})",
        "",
        spike_table(lab),
    ])
