"""Trains and evaluates a Flickr8k captioning profile; prints BLEU-1..4 against baseline and papers.

The peers: the frequent-caption baseline (the most frequent training caption for every test
image), measured in the same run on the same test images, and Show, Attend and Tell (Xu et al.
2015, Flickr8k, full 6k training images and an ImageNet encoder) as published. BLEU is corpus
BLEU (sacreBLEU, max_ngram_order n, no smoothing) on lower-cased captions without punctuation,
against all five references, on a 0-1 scale like the paper. Exits 1 when the model does not beat
the baseline on BLEU-4.

Run: `.venv/bin/python bench/captioning.py [--profile quick|full] [--set KEY=VALUE ...]`.
Needs Flickr8k_Dataset.zip and Flickr8k_text.zip (RNNKIT_DATA_DIR/flickr8k/ offline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, bench/ would come first on sys.path: import from the repo root instead.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from app.logging_setup import configure_logging  # noqa: E402

QUICK_BUDGET_S = 300  # the quick profile's training wall-time budget on 2 cores


def _cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _row(name: str, scores: dict[str, float], ours: dict[str, float]) -> str:
    """One table row: a peer's BLEU-1..4 and ours/peer for each."""
    cells = "".join(f" {scores[f'bleu_{n}']:>6.3f}" for n in range(1, 5))
    ratios = "".join(f" {ours[f'bleu_{n}'] / scores[f'bleu_{n}']:>6.2f}"
                     if scores[f"bleu_{n}"] > 0 else f" {'inf':>6}" for n in range(1, 5))
    return f"  {name:<34}{cells}  |{ratios}"


def main() -> int:
    """Run the benchmark and print its table (and one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the run goes (default: a temporary folder)")
    args = parser.parse_args()
    configure_logging()

    from pipelines.evaluation import evaluate_run
    from pipelines.flickr8k import prepare
    from pipelines.tasks import get_task
    from pipelines.trainer import train

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg()[0]
    cpu_started = _cpu_seconds()
    splits = {s: i.num_examples for s, i in prepare().info.splits.items()}
    prepared = time.monotonic()
    task = get_task("captioning")
    config = task.config(args.profile, args.overrides)
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
    result = train(task, config, runs_dir / f"captioning-{args.profile}")
    trained = time.monotonic()
    cpu_trained = _cpu_seconds()
    evaluation = evaluate_run(task, result.run_dir)
    done = time.monotonic()

    ours = {n: evaluation[n] for n in ("bleu_1", "bleu_2", "bleu_3", "bleu_4")}
    report = {
        "task": "captioning", "profile": args.profile, "overrides": args.overrides,
        "images": splits, **ours, "baseline": evaluation["baseline"],
        "decoding": evaluation["decoding"], "distinct_captions": evaluation["distinct_captions"],
        "epochs": result.metrics["epochs_finished"],
        "train_wall_time_s": round(trained - prepared, 1),
        "eval_wall_time_s": round(done - trained, 1),
        "train_cpu_time_s": round(cpu_trained - cpu_started, 1),
        "cores": cores, "load_before": load_before, "load_after": os.getloadavg()[0],
        "run_dir": str(result.run_dir), "gallery": evaluation["gallery"],
    }
    print(f"\nflickr8k captioning / {args.profile}: {report['epochs']} epochs, images "
          f"{splits} on {cores} cores (load average {load_before:.1f} before, "
          f"{report['load_after']:.1f} after)")
    print(f"  wall time: train {report['train_wall_time_s']:.0f} s"
          + (f" (budget {QUICK_BUDGET_S} s: ratio "
             f"{report['train_wall_time_s'] / QUICK_BUDGET_S:.2f})"
             if args.profile == "quick" else "")
          + f", evaluate {report['eval_wall_time_s']:.0f} s; training CPU time "
          f"{report['train_cpu_time_s']:.0f} s (at least "
          f"{report['train_cpu_time_s'] / cores:.0f} s on {cores} dedicated cores)")
    print(f"  {evaluation['test_images']} test images, {evaluation['decoding']}, "
          f"{evaluation['distinct_captions']} distinct captions; baseline caption: "
          f"{evaluation['baseline']['caption']!r}")
    header = "".join(f" {'B-' + str(n):>6}" for n in range(1, 5))
    print(f"  {'':<34}{header}  | ours / peer")
    print(_row("ours", ours, ours))
    print(_row("frequent-caption baseline (same run)", evaluation["baseline"], ours))
    for name, scores in evaluation["published"].items():
        print(_row(f"{name} (published)", scores, ours))
    print(f"  gallery: {evaluation['gallery']}")
    print(json.dumps(report))
    if ours["bleu_4"] <= evaluation["baseline"]["bleu_4"]:
        print("the model does not beat the frequent-caption baseline on BLEU-4", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
