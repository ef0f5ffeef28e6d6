"""Trains and evaluates a word-level language model, then times its served next_words and
generation from one client.

Quality: test perplexity (exact softmax, the state carried across the whole split) and next-word
top-1/top-5 accuracy, next to the count baselines the evaluation computes on the same tokens
(unigram, Kneser-Ney bigram) and, on WikiText-2, the published LSTM of Grave et al. 2017 (99.3)
and AWD-LSTM of Merity et al. 2017 (65.8); the perplexity with the continuous cache that
evaluation also reports (models/neural_cache.py), next to Grave et al.'s LSTM with its cache
(68.9); the profile's target (issue 18: quick <= 160 in
<= 600 s of training, full <= 100 in <= 5400 s) with ratios.

Latency: the run is exported (serving.export.export_run) and served by `python -m serving` on
free loopback ports; one client (serving.client) makes 5 warm-up then N timed calls, one
prompt each, of `next_words` and of `generate` with words=20, top_k=1 (greedy), temperature 1,
seed 0, over gRPC and over REST; p50/p90/p99 in ms (target: next_words p50 <= 50 ms).

`--run-dir DIR` skips training and benchmarks a finished language_model run (its training wall
time is read from its metrics.json; its profile is not recorded, so the target compared is
--profile's).

Run: `.venv/bin/python bench/language_model.py [--data wikitext2] [--profile quick|full]
[--set KEY=VALUE ...] [--runs-dir DIR | --run-dir DIR] [--calls N]`. Needs RNNKIT_DATA_DIR.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from task_run import cores, cpu_seconds, task_parser

from serving.logging_setup import configure_logging

TASK = "language_model"
# WikiText-2 test perplexity, as published (the data README's anchors).
ANCHORS = {"wikitext2": {"LSTM, Grave et al. 2017": 99.3,
                         "AWD-LSTM, Merity et al. 2017": 65.8}}
# The same LSTM with its continuous cache of 2,000 steps (Grave et al. 2017, table 2).
CACHE_ANCHORS = {"wikitext2": {"LSTM + cache, Grave et al. 2017 (published)": 68.9}}
# profile -> (test perplexity at most, training wall seconds at most), issue 18.
TARGETS = {"wikitext2": {"quick": (160.0, 600.0), "full": (100.0, 5400.0)}}
NEXT_WORDS_P50_MS = 50.0
GENERATE_WORDS = 20
WARMUP_CALLS = 5
# Prompts in WikiText-2's tokenisation, cycled through the timed calls.
PROMPTS = ("The game was released in", "In 1990 , the", "He was born in",
           "The city is located on the", "After the war , the")
SERVER_FLAGS = ["--file_system_poll_wait_seconds=0", "--shutdown_grace_seconds=2"]


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p90/p99 in milliseconds (nearest-rank) of latencies in seconds."""
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"calls": len(ordered), "p50_ms": rank(0.50), "p90_ms": rank(0.90),
            "p99_ms": rank(0.99)}


def time_calls(call: Any, calls: int) -> dict[str, float]:
    """Call `call(i)` WARMUP_CALLS times untimed, then `calls` times one after another."""
    for i in range(WARMUP_CALLS):
        call(i)
    latencies = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - started)
    return percentiles(latencies)


def served_latency(task: Any, run_dir: Path, calls: int) -> dict[str, Any]:
    """Export the run, serve it and time next_words and 20-word generation per protocol."""
    from bench.server_process import model_server
    from pipelines.training.export import export_run

    report: dict[str, Any] = {"calls": calls, "warmup_calls": WARMUP_CALLS,
                              "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-") as tmp:
        started = time.monotonic()
        version_dir = export_run(task, run_dir, Path(tmp) / "exports")
        report["export_wall_time_s"] = round(time.monotonic() - started, 1)
        name = version_dir.parent.name
        with model_server(name, version_dir.parent, Path(tmp) / "server.log",
                          SERVER_FLAGS) as server:
            client = server.client
            sample = client.predict(name, {
                "text": [PROMPTS[0]], "temperature": [1.0], "top_k": [1], "seed": [0],
                "words": [GENERATE_WORDS]}, signature_name="generate")
            report["sample"] = {"prompt": PROMPTS[0],
                                "continuation": sample["continuation"][0].decode()}
            top = client.predict(name, {"text": [PROMPTS[0]]}, signature_name="next_words")
            report["sample"]["next_words"] = [w.decode() for w in top["words"][0]]
            for protocol in ("grpc", "rest"):
                def next_words(i: int, p: str = protocol) -> None:
                    client.predict(name, {"text": [PROMPTS[i % len(PROMPTS)]]},
                                   signature_name="next_words", protocol=p)

                def generate(i: int, p: str = protocol) -> None:
                    client.predict(name, {"text": [PROMPTS[i % len(PROMPTS)]],
                                          "temperature": [1.0], "top_k": [1], "seed": [0],
                                          "words": [GENERATE_WORDS]},
                                   signature_name="generate", protocol=p)

                report[f"next_words_{protocol}"] = time_calls(next_words, calls)
                report[f"generate_{protocol}"] = time_calls(generate, calls)
    report["load_after"] = os.getloadavg()[0]
    return report


def main() -> int:
    """Train (unless --run-dir), evaluate, time the served model and print; returns 0, or 1
    when the model does not beat the Kneser-Ney bigram."""
    parser = task_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", default="wikitext2",
                        help="training text: wikitext2 (default), imdb or a file")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="benchmark this finished language_model run instead of training")
    parser.add_argument("--calls", type=int, default=50,
                        help="timed calls per signature and protocol (default: %(default)s)")
    args = parser.parse_args()
    configure_logging()
    from pipelines.tasks import get_task
    from pipelines.training.evaluation import evaluate_run
    from pipelines.training.run_dir import load_config

    task = get_task(TASK)
    load_before = os.getloadavg()[0]
    cpu_started = cpu_seconds()
    train_cpu: float | None = None
    if args.run_dir is None:
        from pipelines.training.trainer import train

        config = task.config(args.profile, [f"data={args.data}", *args.overrides])
        runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="rnnkit-bench-"))
        result = train(task, config, runs_dir / f"{TASK}-{Path(args.data).name}-{args.profile}")
        run_dir, metrics = result.run_dir, result.metrics
        train_cpu = cpu_seconds() - cpu_started
    else:
        run_dir = args.run_dir
        config = load_config(run_dir, task.config_class)
        metrics = json.loads((run_dir / "metrics.json").read_text())
    data = str(config.data)
    train_wall = float(metrics["train_wall_time_s"])
    eval_started, eval_cpu_started = time.monotonic(), cpu_seconds()
    evaluation = evaluate_run(task, run_dir)
    eval_wall = time.monotonic() - eval_started
    eval_cpu = cpu_seconds() - eval_cpu_started
    load_after_eval = os.getloadavg()[0]
    latency = served_latency(task, run_dir, args.calls)

    perplexity = evaluation["perplexity"]
    baselines = evaluation["baselines"]
    target = TARGETS.get(data, {}).get(args.profile)
    model = (f"{config.layers} x {config.cell} {config.units}/{config.embedding_dim}, "
             f"vocabulary {evaluation['vocabulary']}")
    print(f"\n{TASK} on {evaluation['data']}, {model}; "
          f"{'run ' + str(run_dir) if args.run_dir else 'profile ' + args.profile} "
          f"{args.overrides or ''}")
    print(f"  test perplexity {perplexity:.1f} (validation "
          f"{evaluation['validation_perplexity']:.1f}), next-word top-1 "
          f"{evaluation['top1_accuracy']:.3f}, top-5 {evaluation['top5_accuracy']:.3f}; "
          f"{evaluation['tokens']} test tokens, {evaluation['unknown_rate']:.1%} <unk>; best "
          f"epoch {metrics['best_epoch']} of {metrics['epochs_finished']}")
    print("  perplexity vs (ours / peer, lower is better):")
    peers = {"unigram (same run)": baselines["unigram_perplexity"],
             "Kneser-Ney bigram (same run)": baselines["kneser_ney_bigram_perplexity"],
             **{f"{name} (published)": value
                for name, value in ANCHORS.get(data, {}).items()}}
    for name, value in peers.items():
        print(f"    {name:<40} {value:>7.1f}  ratio {perplexity / value:.2f}")
    cache = evaluation.get("cache")
    if cache:
        print(f"  with the continuous cache (size {cache['size']}, theta {cache['theta']}, "
              f"lambda {cache['lambda']}, picked on validation): test {cache['perplexity']:.1f} "
              f"(validation {cache['validation_perplexity']:.1f}), ratio "
              f"{cache['perplexity'] / perplexity:.2f} of the model alone")
        for name, value in CACHE_ANCHORS.get(data, {}).items():
            print(f"    {name:<40} {value:>7.1f}  ratio {cache['perplexity'] / value:.2f}")
    if target:
        limit, budget = target
        print(f"  target ({args.profile}) perplexity <= {limit:.0f}: {perplexity:.1f}, ratio "
              f"{perplexity / limit:.2f} {'met' if perplexity <= limit else 'NOT met'}; "
              f"training <= {budget:.0f} s: {train_wall:.0f} s, ratio {train_wall / budget:.2f} "
              f"{'met' if train_wall <= budget else 'NOT met'}")
    cpu_note = (f", training CPU time {train_cpu:.0f} s (at least {train_cpu / cores():.0f} s "
                f"of wall time on {cores()} dedicated cores)" if train_cpu is not None
                else " (from the run's metrics.json)")
    print(f"  wall time: train {train_wall:.0f} s{cpu_note}; evaluate {eval_wall:.0f} s "
          f"(CPU {eval_cpu:.0f} s); load average {load_before:.1f} before, "
          f"{load_after_eval:.1f} after evaluation, on {cores()} cores")
    print(f"  served, 1 client, one prompt a call ({latency['calls']} calls after "
          f"{WARMUP_CALLS} warm-up; load average {latency['load_before']:.1f} -> "
          f"{latency['load_after']:.1f}):")
    for signature in ("next_words", "generate"):
        for protocol in ("grpc", "rest"):
            r = latency[f"{signature}_{protocol}"]
            label = f"generate {GENERATE_WORDS} words" if signature == "generate" else signature
            print(f"    {label:<18} {protocol:<4}  p50 {r['p50_ms']:7.1f}  p90 {r['p90_ms']:7.1f}"
                  f"  p99 {r['p99_ms']:7.1f} ms")
    worst = max(latency["next_words_grpc"]["p50_ms"], latency["next_words_rest"]["p50_ms"])
    print(f"  target next_words p50 <= {NEXT_WORDS_P50_MS:.0f} ms: {worst:.1f} ms (worse "
          f"protocol), ratio {worst / NEXT_WORDS_P50_MS:.2f} "
          f"{'met' if worst <= NEXT_WORDS_P50_MS else 'NOT met'}")
    sample = latency["sample"]
    print(f"  sample: {sample['prompt']!r} -> next words {sample['next_words']}; greedy "
          f"{GENERATE_WORDS} words: {sample['continuation']!r}")
    report = {
        "task": TASK, "data": data, "profile": None if args.run_dir else args.profile,
        "overrides": args.overrides, "run_dir": str(run_dir), "model": model,
        **{k: evaluation[k] for k in ("perplexity", "validation_perplexity", "top1_accuracy",
                                      "top5_accuracy", "tokens", "unknown_rate", "vocabulary")},
        "cache": cache, "cache_anchors": CACHE_ANCHORS.get(data, {}),
        "baselines": baselines, "anchors": ANCHORS.get(data, {}),
        "target": {"profile": args.profile, "perplexity": target[0], "train_wall_time_s":
                   target[1]} if target else None,
        "epochs": metrics["epochs_finished"], "best_epoch": metrics["best_epoch"],
        "train_wall_time_s": train_wall,
        "train_cpu_time_s": None if train_cpu is None else round(train_cpu, 1),
        "eval_wall_time_s": round(eval_wall, 1), "eval_cpu_time_s": round(eval_cpu, 1),
        "cores": cores(), "load_before": load_before, "load_after_eval": load_after_eval,
        "latency": latency,
    }
    print(json.dumps(report))
    if perplexity >= baselines["kneser_ney_bigram_perplexity"]:
        print("the model does not beat the Kneser-Ney bigram", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
