"""Times rnnkit's LSTM, GRU and SimpleRNN against their peers on this machine, interleaved.

Peers: keras.layers on TensorFlow (as is, and compiled with XLA), keras.layers on JAX and
PyTorch's nn.LSTM / nn.GRU / nn.RNN. JAX and PyTorch run in child processes (importing torch and
tensorflow into one process crashes here), kept open for the whole run: every repeat times ours
and then each peer once, so a change of load on the shared CPUs hits all of them alike.

Each case times a forward call (last output, training=False) and a training step (loss =
mean(output²), gradients, one SGD update) at the same shape; the B=1 serving shape times the
forward call only. Printed: median ms per peer, ours / each peer, ours / the fastest peer with
its spread over the repeats (ratio of ours to the fastest peer within each repeat, min-max), the
same ratio on CPU time (each process's, steadier when other jobs share the CPUs), and ours as a
share of this machine's measured float32 matmul rate (2048 x 2048 x 2048) for the
work the call does (2·B·T·(I+H)·gates·H flops forward, 3x that for a training step).

Run: `.venv/bin/python bench/layers.py [--quick] [--repeats N] [--kinds LSTM ...]
[--peers keras keras_xla jax torch] [--unknown-length] [--shapes 1,200,256,256] [--threads N]`
(torch and jax from the `bench` extra: `pip install -e .[bench]`; a peer that is not installed
is left out with a note).
`--unknown-length` traces the TensorFlow functions (ours, keras, keras_xla) with the batch
size and length unknown, as model.fit on padded batches and every export trace them.
`--threads N` gives every implementation N threads for one operation (TensorFlow's intra-op
pool, which XLA on TensorFlow uses too; PyTorch's set_num_threads; under JAX, XLA's CPU flags
for N = 1, its default otherwise),
as a server started with `--tensorflow_intra_op_parallelism=N` runs; the default lets each
library use every core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, bench/ would come first on sys.path and bench/serving.py would shadow the
# `serving` package: import from the repo root instead.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

# (batch, time, input, hidden, what): training steps and forward calls, plus the serving shape.
CASES = [(64, 100, 128, 128, ("fwd", "train")), (32, 400, 64, 256, ("fwd", "train")),
         (1, 200, 256, 256, ("fwd",))]
KINDS = ["LSTM", "GRU", "SimpleRNN"]
GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}
PEERS = ["keras", "keras_xla", "jax", "torch"]
CHILD_PEERS = {"jax": "jax", "torch": "torch"}  # peer -> the module it needs


def _inputs(shape: tuple):
    import numpy as np

    batch, steps, features, _ = shape
    return np.random.default_rng(0).normal(size=(batch, steps, features)).astype("float32")


# --- timed functions, one (forward, train_step) pair per implementation -------------------------


def _tf_functions(layer, jit: bool = False, features: int | None = None) -> tuple:
    """Forward and training-step functions of a TensorFlow-backend Keras layer.

    Args:
        layer: a built layer (ours or keras.layers').
        jit: compile both with XLA (what model.compile(jit_compile=True) does).
        features: trace with the batch size and length unknown ([None, None, features]), as
            model.fit on padded batches and every export do; None traces the call's shape.
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(layer.trainable_variables)
    signature = None if features is None else [tf.TensorSpec((None, None, features))]

    @tf.function(jit_compile=jit, input_signature=signature)
    def forward(x):
        return layer(x, training=False)

    @tf.function(jit_compile=jit, input_signature=signature)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, training=True)))
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply(grads, layer.trainable_variables)
        return loss

    return forward, train_step


def _jax_functions(kind: str, shape: tuple) -> tuple:
    """Forward and training-step functions of keras.layers.<kind> on the JAX backend (jitted)."""
    import jax
    import keras

    batch, steps, features, units = shape
    layer = getattr(keras.layers, kind)(units)
    layer.build((batch, steps, features))
    state = {"trainable": [v.value for v in layer.trainable_variables],
             "other": [v.value for v in layer.non_trainable_variables]}

    @jax.jit
    def forward(trainable, other, x):
        return layer.stateless_call(trainable, other, x, training=False)[0]

    def loss_fn(trainable, other, x):
        out, _ = layer.stateless_call(trainable, other, x, training=True)
        return jax.numpy.mean(jax.numpy.square(out))

    @jax.jit
    def train_step(trainable, other, x):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, other, x)
        return loss, [w - 1e-3 * g for w, g in zip(trainable, grads, strict=True)]

    def run_forward(x):
        return forward(state["trainable"], state["other"], x)

    def run_train_step(x):
        loss, state["trainable"] = train_step(state["trainable"], state["other"], x)
        return loss

    return run_forward, run_train_step


def _torch_functions(kind: str, shape: tuple) -> tuple:
    """Forward (no_grad) and training-step functions of torch.nn.<LSTM|GRU|RNN>."""
    import torch

    _, _, features, units = shape
    module = getattr(torch.nn, {"SimpleRNN": "RNN"}.get(kind, kind))(
        features, units, batch_first=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)

    def forward(x):
        with torch.no_grad():
            return module(x)[0][:, -1]

    def train_step(x):
        optimizer.zero_grad()
        loss = module(x)[0][:, -1].square().mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return forward, train_step


def _timed(fn, x) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of one call, until its result
    is on the host."""
    import numpy as np

    wall, cpu = time.perf_counter(), time.process_time()
    np.asarray(fn(x))
    return time.perf_counter() - wall, time.process_time() - cpu


# --- the child process of a peer: answers one JSON request per line -----------------------------


def serve_peer(peer: str, threads: int = 0) -> int:
    """Child-process loop: reads {"kind", "shape", "what", "warmup"} lines, prints
    {"seconds": [wall, cpu]}.

    Args:
        peer: "jax" or "torch".
        threads: threads one operation may use (0: the library's default).
    """
    import numpy as np

    if peer == "torch" and threads:
        import torch

        torch.set_num_threads(threads)

    functions, inputs = {}, {}
    for line in sys.stdin:
        request = json.loads(line)
        kind, shape = request["kind"], tuple(request["shape"])
        if (kind, shape) not in functions:
            if peer == "torch":
                import torch

                functions[(kind, shape)] = _torch_functions(kind, shape)
                inputs[shape] = torch.from_numpy(_inputs(shape))
            else:
                functions[(kind, shape)] = _jax_functions(kind, shape)
                inputs[shape] = np.asarray(_inputs(shape))
        forward, train_step = functions[(kind, shape)]
        fn = forward if request["what"] == "fwd" else train_step
        for _ in range(request.get("warmup", 0)):
            _timed(fn, inputs[shape])
        print(json.dumps({"seconds": _timed(fn, inputs[shape])}), flush=True)
    return 0


class _Child:
    """A peer's child process (python bench/layers.py --serve-peer PEER)."""

    def __init__(self, peer: str, threads: int = 0):
        env = dict(os.environ)
        if peer == "jax":
            env["KERAS_BACKEND"] = "jax"
            env["JAX_PLATFORMS"] = "cpu"
        if threads:
            # Read by PyTorch (OpenMP, its intra-op pool) and by XLA's CPU backend under JAX.
            env["OMP_NUM_THREADS"] = str(threads)
            if threads == 1:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                    "=false intra_op_parallelism_threads=1").strip()
        # OpenMP threads that spin while they wait would steal the CPUs from the other
        # implementations' turns (PyTorch's forward took 40x longer with the default policy).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-peer", peer,
             "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def time(self, kind: str, shape: tuple, what: str, warmup: int = 0) -> tuple:
        request = {"kind": kind, "shape": list(shape), "what": what, "warmup": warmup}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer process exited (code {self.process.wait()})")
        return tuple(json.loads(line)["seconds"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --- the parent: ours and the TensorFlow peers in process, the others in children ---------------


class MatmulRate:
    """This machine's float32 matmul rate: flops per second of a 2048³ TensorFlow matmul.

    Timed once in every round of the benchmark, next to the layers, and the best call kept:
    under load from other processes a single measurement is too low.
    """

    SIZE = 2048

    def __init__(self):
        import numpy as np
        import tensorflow as tf

        self.a = tf.constant(np.random.default_rng(1).normal(size=(self.SIZE,) * 2), tf.float32)
        self.matmul = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
        self.matmul(self.a)
        self.best = float("inf")

    def measure(self) -> None:
        self.best = min(self.best, _timed(self.matmul, self.a)[0])

    @property
    def flops_per_second(self) -> float:
        return 2 * self.SIZE**3 / self.best


def _flops(kind: str, shape: tuple, what: str) -> float:
    batch, steps, features, units = shape
    forward = 2 * batch * steps * (features + units) * GATES[kind] * units
    return forward if what == "fwd" else 3 * forward


def bench_case(kind: str, shape: tuple, whats: tuple, repeats: int, peers: list,
               children: dict, rate: MatmulRate, unknown_length: bool = False) -> dict:
    """Seconds per call, {(implementation, what): [per repeat]}, all interleaved per repeat.

    Args:
        kind: "LSTM", "GRU" or "SimpleRNN".
        shape: (batch, time, input, hidden).
        whats: ("fwd",) or ("fwd", "train").
        repeats: timed calls per implementation and function.
        peers: the peers to time besides ours.
        children: the open child processes, by peer.
        rate: the matmul rate, measured once per repeat.
        unknown_length: trace the TensorFlow functions with batch and length unknown.
    """
    import keras
    import tensorflow as tf

    from models import layers as ours

    batch, steps, features, units = shape
    x = tf.constant(_inputs(shape))
    local = {"ours": (getattr(ours, kind), False)}
    if "keras" in peers:
        local["keras"] = (getattr(keras.layers, kind), False)
    if "keras_xla" in peers:
        local["keras_xla"] = (getattr(keras.layers, kind), True)
    functions = {}
    for name, (make, jit) in local.items():
        layer = make(units)
        layer.build((batch, steps, features))
        functions[name] = _tf_functions(layer, jit, features if unknown_length else None)
    times = {(name, what): [] for name in [*functions, *children] for what in whats}
    for what in whats:
        index = 0 if what == "fwd" else 1
        for fns in functions.values():
            for _ in range(2):
                _timed(fns[index], x)
        for child in children.values():
            child.time(kind, shape, what, warmup=2)
    for _ in range(repeats):
        rate.measure()
        for what in whats:
            index = 0 if what == "fwd" else 1
            for name, fns in functions.items():
                times[(name, what)].append(_timed(fns[index], x))
            for name, child in children.items():
                times[(name, what)].append(child.time(kind, shape, what))
    return times


def _row(kind: str, shape: tuple, what: str, times: dict, peers: list, rate: float) -> str:
    """One markdown row: medians, ratios, spread of ours / fastest, share of the matmul rate."""
    def medians(clock: int) -> dict:
        return {name: statistics.median(t[clock] for t in times[(name, what)])
                for name in ["ours", *peers]}

    median, cpu = medians(0), medians(1)
    fastest = min(peers, key=median.get) if peers else "ours"
    fastest_cpu = min(peers, key=cpu.get) if peers else "ours"
    per_repeat = [o[0] / min(times[(p, what)][i][0] for p in peers)
                  for i, o in enumerate(times[("ours", what)])] if peers else [1.0]
    cells = [kind, ", ".join(map(str, shape)), what, f"{median['ours'] * 1e3:.1f}"]
    cells += [f"{median[p] * 1e3:.1f} ({median['ours'] / median[p]:.2f})" for p in peers]
    cells += [f"{median['ours'] / median[fastest]:.2f} {fastest} "
              f"[{min(per_repeat):.2f}-{max(per_repeat):.2f}]",
              f"{cpu['ours'] / cpu[fastest_cpu]:.2f} {fastest_cpu}",
              f"{100 * _flops(kind, shape, what) / median['ours'] / rate:.0f}%"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark and prints the table.

    Args:
        argv: command-line arguments (default sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 7")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per function")
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    parser.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    parser.add_argument("--unknown-length", action="store_true",
                        help="trace ours, keras and keras_xla with batch and length unknown, as "
                             "training on padded batches and exports do (JAX compiles per "
                             "shape and PyTorch does not trace: their timings do not change)")
    shapes = [",".join(map(str, case[:4])) for case in CASES]
    parser.add_argument("--shapes", nargs="+", default=shapes, choices=shapes,
                        help="the cases to time, as B,T,I,H (default: all)")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="threads one operation may use, for every implementation "
                             "(default 0: each library's own, every core)")
    parser.add_argument("--serve-peer", choices=sorted(CHILD_PEERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_peer:
        return serve_peer(args.serve_peer, args.threads)

    from serving.logging_setup import quiet_tensorflow

    quiet_tensorflow()
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    repeats = args.repeats or (3 if args.quick else 7)
    peers = list(args.peers)
    for peer, module in CHILD_PEERS.items():
        if peer in peers and not _installed(module):
            print(f"note: {peer} is not installed (pip install -e .[bench]); left out.")
            peers.remove(peer)
    children = {peer: _Child(peer, args.threads) for peer in peers if peer in CHILD_PEERS}
    try:
        rate = MatmulRate()
        print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}, {repeats} repeats"
              f"{', batch and length unknown when traced' if args.unknown_length else ''}"
              f"{f', {args.threads} thread(s) per operation' if args.threads else ''}. "
              "ms = median "
              "wall-clock time of one call; (x) = ours / that peer; best = ours / the fastest "
              "peer [min-max over the repeats]; CPU time: the same on median CPU seconds of "
              "the process (steadier under load, but counts TensorFlow's spinning threads); "
              "% = ours as a share of the matmul rate.")
        results = []
        for batch, steps, features, units, whats in CASES:
            shape = (batch, steps, features, units)
            if ",".join(map(str, shape)) not in args.shapes:
                continue
            for kind in args.kinds:
                print(f"timing {kind} {shape}", file=sys.stderr, flush=True)
                results.append((kind, shape, whats,
                                bench_case(kind, shape, whats, repeats, peers, children, rate,
                                           args.unknown_length)))
        header = ["layer", "B, T, I, H", "step", "ours ms", *[f"{p} ms" for p in peers],
                  "ours / best", "ours / best, CPU time", "% matmul"]
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(" --- " for _ in header) + "|")
        for kind, shape, whats, times in results:
            for what in whats:
                print(_row(kind, shape, what, times, peers, rate.flops_per_second))
        print(f"matmul rate {rate.flops_per_second / 1e9:.0f} GFLOP/s (best 2048³ float32 "
              f"call of the run); load average at the end {os.getloadavg()[0]:.1f}")
    finally:
        for child in children.values():
            child.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
