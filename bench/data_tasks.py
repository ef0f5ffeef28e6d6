"""Trains and evaluates the generic tasks on named data sets, against published numbers.

`--data trec`: `classify` on TREC-6 question classification (5,452 training / 500 test
questions), next to Kim 2014's CNNs (random embeddings 91.2, word2vec 93.6).
`--data ud_en_ewt`: `tag` on Universal Dependencies English EWT UPOS (25,094 test tokens), next to
Plank et al. 2016's BiLSTM with word and character features (94.6).
Both read their data through the same path as a user's `--data FILE`
(pipelines.datasets.data_files).

Run: `.venv/bin/python bench/data_tasks.py --data trec|ud_en_ewt [--profile quick|full]
[--set KEY=VALUE ...]`. Needs the data in RNNKIT_DATA_DIR (or the internet).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from task_run import cores, cpu_seconds, task_parser

from serving.logging_setup import configure_logging

# data set -> (task, published test accuracies, targets per profile: (accuracy, wall seconds))
BENCHES = {
    "trec": ("classify", {"Kim 2014, CNN from random embeddings": 0.912,
                          "Kim 2014, CNN with word2vec": 0.936},
             {"quick": (0.88, 180), "full": (0.92, 900)}),
    "ud_en_ewt": ("tag", {"Plank et al. 2016, BiLSTM words + characters (UD 1.3)": 0.946,
                          "UDPipe 1 (UD 2.5)": 0.944},
                  {"quick": (0.90, 300), "full": (0.95, 1800)}),
}


def main() -> int:
    """Train, evaluate and print the comparison; returns 0."""
    parser = task_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(BENCHES), required=True)
    args = parser.parse_args()
    configure_logging()
    from pipelines.tasks import get_task
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.trainer import train

    task_name, anchors, targets = BENCHES[args.data]
    task = get_task(task_name)
    load_before = os.getloadavg()[0]
    started, cpu_started = time.monotonic(), cpu_seconds()
    config = task.config(args.profile, [f"data={args.data}", *args.overrides])
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
    result = train(task, config, runs_dir / f"{task_name}-{args.data}-{args.profile}")
    trained, cpu_trained = time.monotonic(), cpu_seconds()
    evaluation = evaluate_run(task, result.run_dir)
    done = time.monotonic()

    accuracy = evaluation["accuracy"]
    target, budget = targets.get(args.profile, (float("nan"), float("nan")))
    total = done - started
    print(f"{task_name} on {args.data}, profile {args.profile} {args.overrides or ''}")
    print(f"  test accuracy {accuracy:.4f} (macro-F1 {evaluation['macro_f1']:.4f}, majority "
          f"class {evaluation['majority_baseline']:.4f}), best epoch "
          f"{result.metrics['best_epoch']} of {result.metrics['epochs_finished']}")
    for name, value in anchors.items():
        print(f"  vs {name} {value:.3f}: ratio {accuracy / value:.3f}")
    print(f"  target {target:.2f} in {budget:.0f} s: accuracy "
          f"{'met' if accuracy >= target else 'NOT met'}, wall time "
          f"{'met' if total <= budget else 'NOT met'}")
    print(f"  wall time: train {trained - started:.0f} s, evaluate {done - trained:.0f} s, "
          f"total {total:.0f} s; training CPU time {cpu_trained - cpu_started:.0f} s on "
          f"{cores()} cores; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(json.dumps({"data": args.data, "task": task_name, "profile": args.profile,
                      "overrides": args.overrides, "accuracy": accuracy,
                      "macro_f1": evaluation["macro_f1"], "train_wall_time_s": trained - started,
                      "total_wall_time_s": total, "run_dir": str(result.run_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
