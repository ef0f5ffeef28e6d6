"""Trains and evaluates an IMDB sentiment profile and compares it with published peers.

Prints the test accuracy and wall times of the run next to the anchors (the keras.io
bidirectional LSTM example and the TensorFlow RNN text-classification tutorial, and the profile's
own target), as ratios ours/peer. With --keras-peer it also trains the keras.io example model
(keras.layers' LSTM, 2 epochs) on the same data in the same process, a measured peer.

With --self-train it first trains two teachers, the task's profile and the bag-of-words
control's quick profile, then the measured run on their confident answers to IMDB's 50k
unlabelled reviews (pipelines/tasks/self_training.py); the wall times printed include the teachers'.

Run: `.venv/bin/python bench/sentiment.py [--task sentiment|sentiment_bow] [--profile quick|full]
[--set KEY=VALUE ...] [--keras-peer] [--self-train]`. Needs IMDB (RNNKIT_DATA_DIR offline).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from task_run import task_parser, timed_run

from pipelines.tasks import task_info
from serving.logging_setup import configure_logging

# What each profile must reach (the project's spec).
TARGETS = {("sentiment", "quick"): 0.85, ("sentiment", "full"): 0.90,
           ("sentiment_bow", "quick"): 0.87, ("sentiment_bow", "full"): 0.87}
# The teachers of --self-train: (task, profile); None stands for the measured run's profile.
TEACHERS = (("sentiment", None), ("sentiment_bow", "quick"))
# What a teacher takes from the measured run's settings: the same reviews, split the same way.
SHARED_SETTINGS = ("seed", "validation_fraction", "max_train_examples", "max_eval_examples")


def train_teachers(args: argparse.Namespace) -> tuple[list[str], list[Any]]:
    """Train and evaluate the --self-train teachers; returns their run dirs and timed runs.

    Args:
        args: the benchmark's flags (profile, overrides, runs_dir).
    """
    shared = [o for o in args.overrides if o.partition("=")[0].strip() in SHARED_SETTINGS]
    runs = []
    for task_name, profile in TEACHERS:
        teacher_args = argparse.Namespace(profile=profile or args.profile, overrides=shared,
                                          runs_dir=args.runs_dir)
        run = timed_run(task_name, teacher_args, f"teacher-{task_name}-{teacher_args.profile}")
        print(f"teacher {task_name} / {teacher_args.profile}: test accuracy "
              f"{run.evaluation['accuracy']:.4f}, train {run.timings['train_wall_time_s']:.0f} s, "
              f"total {run.timings['total_wall_time_s']:.0f} s", flush=True)
        runs.append(run)
    return [run.timings["run_dir"] for run in runs], runs


def keras_peer(max_train_examples: int | None, max_eval_examples: int | None,
               seed: int) -> dict[str, float]:
    """Train the keras.io example (2 x BiLSTM(64) on the last 200 tokens, 2 epochs, batch 32).

    Its pad_sequences truncates at the front, so the last 200 tokens are what it reads.
    """
    import keras
    import numpy as np

    from models.sentiment import TruncateTokens, make_vectorizer
    from pipelines.datasets import imdb

    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    train, val = imdb.train_validation(0.1, seed, max_train_examples)
    vectorizer = make_vectorizer(imdb.training_texts(train), 20_000)
    text = keras.Input(shape=(), dtype="string")
    tokens = TruncateTokens(200, "last")(vectorizer(text))
    x = keras.layers.Embedding(20_000, 128, mask_zero=True)(tokens)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64))(x)
    model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    model.fit(imdb.batches(train, 32, 200, shuffle_seed=seed),
              validation_data=imdb.batches(val, 32, 200), epochs=2, verbose=2)
    trained = time.monotonic()
    hits = total = 0
    for texts, labels in imdb.batches(imdb.load_test(max_eval_examples), 256, 200):
        predicted = model(texts, training=False).numpy() >= 0.5
        hits += int(np.sum(predicted == (labels.numpy() >= 0.5)))
        total += len(labels)
    return {"accuracy": hits / total, "train_wall_time_s": trained - started,
            "total_wall_time_s": time.monotonic() - started}


def main() -> int:
    """Run the benchmark and print its table (and one JSON line)."""
    parser = task_parser(__doc__.splitlines()[0])
    parser.add_argument("--task", default="sentiment", choices=("sentiment", "sentiment_bow"))
    parser.add_argument("--keras-peer", action="store_true",
                        help="also train the keras.io example model as a measured peer")
    parser.add_argument("--self-train", action="store_true",
                        help="first train the teachers (this profile and the bag-of-words "
                             "quick profile), then this run on their answers to the "
                             "unlabelled reviews")
    args = parser.parse_args()
    configure_logging()
    teachers: list[Any] = []
    if args.self_train:
        args.runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
        teacher_dirs, teachers = train_teachers(args)
        args.overrides = [*args.overrides, f"teachers={','.join(teacher_dirs)}"]
    run = timed_run(args.task, args)
    evaluation, config = run.evaluation, run.config
    ours = {**run.timings, "accuracy": evaluation["accuracy"], "f1": evaluation["f1"],
            "roc_auc": evaluation["roc_auc"], "n_test": evaluation["n_examples"]}
    if teachers:
        ours["teachers"] = [{**t.timings, "accuracy": t.evaluation["accuracy"]}
                            for t in teachers]
        ours["with_teachers_total_wall_time_s"] = round(
            run.timings["total_wall_time_s"]
            + sum(t.timings["total_wall_time_s"] for t in teachers), 1)
    target = TARGETS.get((args.task, args.profile))
    print(f"\nIMDB {args.task} / {args.profile}: {ours['epochs']} epochs on {ours['cores']} "
          f"cores (load average {ours['load_before']:.1f} before, {ours['load_after']:.1f} "
          "after)")
    print(f"  test accuracy {ours['accuracy']:.4f}  F1 {ours['f1']:.4f}  "
          f"ROC-AUC {ours['roc_auc']:.4f}  on {ours['n_test']} reviews")
    print("\n".join(run.cost_lines()))
    if teachers:
        print(f"  with its teachers: {ours['with_teachers_total_wall_time_s']:.0f} s in all; "
              "ours/teacher accuracy " + ", ".join(
                  f"{t.timings['task']} {ours['accuracy'] / t.evaluation['accuracy']:.3f}"
                  for t in teachers))
    # Published test accuracies on IMDB (25k test reviews), from the task registry.
    peers = {a.source: a.value for a in task_info("sentiment").anchors
             if a.metric == "accuracy"}
    if target is not None:
        peers[f"target of the {args.profile} profile"] = target
    if args.keras_peer:
        measured = keras_peer(config.max_train_examples, config.max_eval_examples, config.seed)
        ours["keras_peer"] = measured
        peers["keras.io example, measured here"] = measured["accuracy"]
        print(f"  measured keras.io peer: accuracy {measured['accuracy']:.4f}, train "
              f"{measured['train_wall_time_s']:.0f} s (ours/peer time "
              f"{ours['train_wall_time_s'] / measured['train_wall_time_s']:.2f})")
    print(f"  {'peer':<46} {'accuracy':>8} {'ours/peer':>9}")
    for name, accuracy in peers.items():
        print(f"  {name:<46} {accuracy:>8.4f} {ours['accuracy'] / accuracy:>9.3f}")
    print(json.dumps(ours))
    if target is not None and ours["accuracy"] < target:
        print(f"below the profile's target accuracy {target}", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
