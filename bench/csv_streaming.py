"""Streams a ~1 GB CSV through `classify` and shows memory does not grow with the file's size.

Writes two CSV files of the same kind of rows (quoted text with commas, a label), ~10 MB and
~1 GB (`--big-mb`), then for each, in its own process: scans it (label set, empty rows), adapts
the vocabulary over all of it, and runs 200 training steps streaming from it. Prints rows/s of
each stage and the process's peak resident memory; the big file's peak must stay within 1.5x of
the small file's.

Run: `.venv/bin/python bench/csv_streaming.py [--big-mb 1000] [--steps 200] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

LABELS = ("sports", "science", "politics", "arts")
WORDS = [f"w{i}" for i in range(5000)]
SETTINGS = ["max_tokens=20000", "embedding_dim=32", "units=32", "dense_units=32",
            "max_length=40", "batch_size=64"]


def write_csv(path: Path, megabytes: float, seed: int = 0) -> int:
    """Write a CSV of about this size: `text,label` rows whose words hint at the label.

    Args:
        path: the file to write.
        megabytes: its approximate size.
        seed: the rows' random seed.
    """
    rng = random.Random(seed)
    # Pre-made sentence pieces keep generation fast; each label prefers its own quarter of words.
    pieces = {label: [" ".join(rng.choice(WORDS[i * 1250:(i + 1) * 1250] + WORDS)
                               for _ in range(6)) for _ in range(500)]
              for i, label in enumerate(LABELS)}
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        while handle.tell() < megabytes * 1e6:
            for _ in range(10_000):
                label = rng.choice(LABELS)
                text = ", ".join(rng.choice(pieces[label]) for _ in range(rng.randint(1, 3)))
                writer.writerow([rows, f'{text} "quoted"', label])
                rows += 1
    return rows


def child(path: Path, steps: int) -> dict:
    """Scan, adapt and train in this process; returns rates and peak memory."""
    from serving.logging_setup import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from pipelines.tasks import get_task
    from pipelines.training.trainer import compile_model

    task = get_task("classify")
    # Validation rows from the small file: holding them out of the big one would add a whole
    # pass over it that measures nothing new.
    config = task.config("quick", [f"data={path}", f"validation_data={path.parent / 'small.csv'}",
                                   *SETTINGS])
    keras.utils.set_random_seed(config.seed)
    started = time.monotonic()
    scan = task.train_scan(config)
    scanned = time.monotonic()
    model = task.build_model(config)  # adapts the vocabulary over every training row
    adapted = time.monotonic()
    train, _ = task.datasets(config)
    compile_model(model, task, config)
    fit_started = time.monotonic()
    model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    done = time.monotonic()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"file": str(path), "bytes": path.stat().st_size, "rows": scan.rows,
            "scan_rows_per_s": scan.rows / (scanned - started),
            "adapt_rows_per_s": scan.rows / (adapted - scanned),
            "train_rows_per_s": steps * config.batch_size / (done - fit_started),
            "train_steps": steps, "peak_rss_mb": peak_kb / 1024,
            "wall_time_s": done - started}


def main() -> int:
    """Write the files, measure each in its own process, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=float, default=1000)
    parser.add_argument("--small-mb", type=float, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--keep", type=Path, default=None, help="write the files here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return 0
    folder = args.keep or Path(tempfile.mkdtemp(prefix="rnnkit-csv-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for name, size in (("small", args.small_mb), ("big", args.big_mb)):
        path = folder / f"{name}.csv"
        if not path.exists():
            started = time.monotonic()
            rows = write_csv(path, size)
            print(f"wrote {path}: {path.stat().st_size / 1e6:.0f} MB, {rows} rows in "
                  f"{time.monotonic() - started:.0f} s", flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(path),
                              "--steps", str(args.steps)], capture_output=True, text=True,
                             cwd=REPO, check=False)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{name:5s} {result['bytes'] / 1e6:7.0f} MB {result['rows']:>10d} rows: scan "
              f"{result['scan_rows_per_s']:,.0f} rows/s, adapt {result['adapt_rows_per_s']:,.0f}"
              f" rows/s, {args.steps} training steps {result['train_rows_per_s']:,.0f} rows/s, "
              f"peak memory {result['peak_rss_mb']:,.0f} MB, {result['wall_time_s']:.0f} s",
              flush=True)
    ratio = results[1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    print(f"peak memory big/small: {ratio:.2f} (must be <= 1.5): "
          f"{'met' if ratio <= 1.5 else 'NOT met'}")
    print(json.dumps({"results": results, "peak_memory_ratio": ratio}))
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
