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

import json
import sys

from task_run import task_parser, timed_run

from app.logging_setup import configure_logging


def _row(name: str, scores: dict[str, float], ours: dict[str, float]) -> str:
    """One table row: a peer's BLEU-1..4 and ours/peer for each."""
    cells = "".join(f" {scores[f'bleu_{n}']:>6.3f}" for n in range(1, 5))
    ratios = "".join(f" {ours[f'bleu_{n}'] / scores[f'bleu_{n}']:>6.2f}"
                     if scores[f"bleu_{n}"] > 0 else f" {'inf':>6}" for n in range(1, 5))
    return f"  {name:<34}{cells}  |{ratios}"


def main() -> int:
    """Run the benchmark and print its table (and one JSON line)."""
    args = task_parser(__doc__.splitlines()[0]).parse_args()
    configure_logging()
    run = timed_run("captioning", args)
    evaluation = run.evaluation
    ours = {n: evaluation[n] for n in ("bleu_1", "bleu_2", "bleu_3", "bleu_4")}
    report = {
        **run.timings, "images": run.splits, **ours, "baseline": evaluation["baseline"],
        "decoding": evaluation["decoding"], "distinct_captions": evaluation["distinct_captions"],
        "gallery": evaluation["gallery"],
    }
    print(f"\nflickr8k captioning / {args.profile}: {report['epochs']} epochs, images "
          f"{run.splits} on {report['cores']} cores (load average {report['load_before']:.1f} "
          f"before, {report['load_after']:.1f} after)")
    print("\n".join(run.cost_lines()))
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
