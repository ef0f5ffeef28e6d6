"""Trains and evaluates a Flickr8k captioning profile; prints BLEU-1..4 and CIDEr-D against
the frequent-caption baseline, the no-ImageNet ablation and the published numbers.

The peers: the frequent-caption baseline (the most frequent training caption for every test
image) and, with --ablation, the same profile on a frozen *random* encoder (encoder_weights=none,
the no-ImageNet ablation), both measured in the same run on the same test images with the same
code; Show, Attend and Tell (Xu et al. 2015, Flickr8k, an ImageNet VGG encoder) as published.
BLEU is corpus BLEU (sacreBLEU, max_ngram_order n, no smoothing) on lower-cased captions without
punctuation, against all five references, on a 0-1 scale like the paper; CIDEr-D is
pycocoevalcap's Cider. The mirror's images: 1,000 originals re-encoded at 256 px and 7,091
224x224 course copies; its MobileNetV2 weights are derived from an int8 export (see the data
README). Exits 1 when the model does not beat the baseline on BLEU-4.

The encoder's features are cached (pipelines.datasets.feature_cache); the first line says whether
this run computed them (and how long that took) or found them cached. --fresh-cache removes the
cache of this encoder first, to time a first run.

Run: `.venv/bin/python bench/captioning.py [--profile quick|full] [--ablation]
[--fresh-cache] [--set KEY=VALUE ...]`. Needs RNNKIT_DATA_DIR/flickr8k/ and imagenet/ offline.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from task_run import task_parser, timed_run

from serving.logging_setup import configure_logging

SCORES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider_d")


def _row(name: str, scores: dict[str, float], ours: dict[str, float]) -> str:
    """One table row: a peer's scores and ours/peer for each."""
    cells = "".join(f" {scores[k]:>6.3f}" if scores.get(k) is not None else f" {'-':>6}"
                    for k in SCORES)
    ratios = "".join(f" {ours[k] / scores[k]:>6.2f}" if scores.get(k) else f" {'-':>6}"
                     for k in SCORES)
    return f"  {name:<40}{cells}  |{ratios}"


def _features(task, config, fresh: bool) -> tuple[float, bool]:
    """Fill the feature cache for training and validation; (seconds, whether computed)."""
    from pipelines.config import tfds_dir
    from pipelines.datasets import feature_cache

    key = feature_cache.EncoderKey(config.encoder, config.encoder_alpha, config.image_size,
                                   feature_cache.weights_digest(task.encoder(config)))
    folder = tfds_dir() / "features" / key.folder()
    if fresh and folder.exists():
        shutil.rmtree(folder)
    computed = not folder.exists()
    started = time.monotonic()
    task.features(config, "train", config.max_train_examples)
    task.features(config, "validation", config.max_eval_examples)
    return time.monotonic() - started, computed


def main() -> int:
    """Run the benchmark and print its table (and one JSON line)."""
    parser = task_parser(__doc__.splitlines()[0])
    parser.add_argument("--ablation", action="store_true",
                        help="also train on a frozen random encoder (no ImageNet)")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="remove this encoder's feature cache first")
    args = parser.parse_args()
    configure_logging()
    from pipelines.datasets import prepare_dataset
    from pipelines.tasks import get_task

    prepare_dataset("flickr8k")
    task = get_task("captioning")
    config = task.config(args.profile, args.overrides)
    extraction, computed = (_features(task, config, args.fresh_cache)
                            if config.trainable_encoder_blocks == 0 else (0.0, False))
    run = timed_run("captioning", args)
    evaluation = run.evaluation
    ours = {k: evaluation[k] for k in SCORES}
    peers = [("frequent-caption baseline (same run)", evaluation["baseline"])]
    report = {**run.timings, "feature_extraction_s": round(extraction, 1),
              "features_computed": computed, "images": run.splits, **ours,
              "baseline": evaluation["baseline"], "decoding": evaluation["decoding"],
              "distinct_captions": evaluation["distinct_captions"],
              "distinct_fraction": evaluation["distinct_fraction"],
              "gallery": evaluation["gallery"]}
    if args.ablation:
        args.overrides = [*args.overrides, "encoder_weights=none"]
        ablation = timed_run("captioning", args, run_name=f"captioning-{args.profile}-none")
        scores = {k: ablation.evaluation[k] for k in SCORES}
        peers.append(("no ImageNet: frozen random encoder (same run)", scores))
        report["ablation"] = {**scores, **ablation.timings,
                              "distinct_captions": ablation.evaluation["distinct_captions"]}
    print(f"\nflickr8k captioning / {args.profile}: {report['epochs']} epochs, images "
          f"{run.splits} on {report['cores']} cores (load average {report['load_before']:.1f} "
          f"before, {report['load_after']:.1f} after)")
    state = "computed" if computed else "found cached"
    print(f"  encoder features {state} in {extraction:.0f} s; training + evaluation below; "
          f"first-run total {extraction + run.timings['total_wall_time_s']:.0f} s")
    print("\n".join(run.cost_lines()))
    print(f"  {evaluation['test_images']} test images, {evaluation['decoding']}, "
          f"{evaluation['distinct_captions']} distinct captions "
          f"({evaluation['distinct_fraction']:.0%}); baseline caption: "
          f"{evaluation['baseline']['caption']!r}")
    header = "".join(f" {k.replace('bleu_', 'B-').replace('cider_d', 'CIDEr'):>6}"
                     for k in SCORES)
    print(f"  {'':<40}{header}  | ours / peer")
    print(_row("ours", ours, ours))
    for name, scores in peers:
        print(_row(name, scores, ours))
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
