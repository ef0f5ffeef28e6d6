"""Times rnnkit's LSTM, GRU and SimpleRNN against keras.layers' built-ins in the same process.

Prints one row per (layer, shape): forward and training-step medians and the ours/keras ratios.
Run: `.venv/bin/python bench/layers.py [--quick] [--repeats N] [--kinds LSTM ...] [--jit]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from app.logging_setup import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from models import layers as ours  # noqa: E402

SHAPES = [(64, 100, 128, 128), (32, 400, 64, 256)]  # (batch, time, input, hidden)
KINDS = ["LSTM", "GRU", "SimpleRNN"]


def _pair(kind: str, shape: tuple) -> tuple:
    """Our layer and Keras's, built, with the same weights."""
    batch, steps, features, units = shape
    mine, theirs = getattr(ours, kind)(units), getattr(keras.layers, kind)(units)
    for layer in (mine, theirs):
        layer.build((batch, steps, features))
    mine.set_weights(theirs.get_weights())
    return mine, theirs


def _functions(layer, jit: bool = False) -> tuple:
    """Compiled forward and training-step (GradientTape + SGD) functions of one layer.

    Args:
        layer: the layer to time.
        jit: compile both functions with XLA (what model.compile(jit_compile=True) does).
    """
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(layer.trainable_variables)

    @tf.function(jit_compile=jit)
    def forward(x):
        return layer(x, training=False)

    @tf.function(jit_compile=jit)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, training=True)))
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply(grads, layer.trainable_variables)
        return loss

    return forward, train_step


def _time(fn, x) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    np.asarray(fn(x))
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(kind: str, shape: tuple, repeats: int, jit: bool = False) -> dict:
    """Per-call seconds of forward and train step for ours and Keras's; repeats interleaved.

    Args:
        kind: "LSTM", "GRU" or "SimpleRNN".
        shape: (batch, time, input, hidden).
        repeats: timed calls per function after two warm-up calls.
        jit: compile both sides' functions with XLA.
    """
    batch, steps, features, _ = shape
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, steps, features)), tf.float32)
    fns = {name: _functions(layer, jit)
           for name, layer in zip(("ours", "keras"), _pair(kind, shape), strict=True)}
    times = {(name, what): [] for name in fns for what in ("fwd", "train")}
    for _ in range(2):
        for forward, train_step in fns.values():
            forward(x)
            train_step(x)
    for _ in range(repeats):
        for name, (forward, train_step) in fns.items():
            times[(name, "fwd")].append(_time(forward, x))
            times[(name, "train")].append(_time(train_step, x))
    return times


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints the table.

    Args:
        argv: command-line arguments (default sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 9")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per function")
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    parser.add_argument("--jit", action="store_true",
                        help="compile ours and Keras's functions with XLA (jit_compile=True)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, {repeats} repeats"
          f"{', XLA (jit_compile=True) on both sides' if args.jit else ''}. ms = median wall-clock "
          "time of one call; ratio = ours/keras of the median wall-clock times, and in brackets "
          "of the median CPU times (steadier when other processes share the CPUs).")
    header = ("| layer     | B, T, I, H        | fwd ours ms | fwd keras ms | fwd ratio   "
              "| train ours ms | train keras ms | train ratio |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for shape in SHAPES:
        for kind in args.kinds:
            times = bench(kind, shape, repeats, args.jit)
            wall = {key: statistics.median(w for w, _ in v) for key, v in times.items()}
            cpu = {key: statistics.median(c for _, c in v) for key, v in times.items()}
            cells = [f"{kind:<9}", f"{', '.join(map(str, shape)):<17}"]
            for what, widths in (("fwd", (11, 12, 11)), ("train", (13, 14, 11))):
                ratio = (f"{wall[('ours', what)] / wall[('keras', what)]:.2f} "
                         f"({cpu[('ours', what)] / cpu[('keras', what)]:.2f})")
                cells += [f"{wall[('ours', what)] * 1e3:{widths[0]}.1f}",
                          f"{wall[('keras', what)] * 1e3:{widths[1]}.1f}",
                          f"{ratio:>{widths[2]}}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
