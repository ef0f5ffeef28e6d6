"""Times the model server (gRPC and REST, batching off and on) against the model called in-process.

Starts `python -m serving` on free loopback ports, sends a bounded number of Predict requests
(one example each from 1, 8 and 32 client threads; whole batches of 32 from 1 and 8) and prints
throughput and p50/p99 latency per row, then the ratios: gRPC / in-process with the same
examples per call and clients, and batching on / off at 32 clients. Every row of one run uses the
same model, machine and moment, so the ratios compare like with like.

Model: exports/sentiment if exported, else TF Serving's half_plus_two from RNNKIT_DATA_DIR.
Run: `.venv/bin/python bench/serving.py [--quick] [--model-base-path DIR --model-name NAME]`.
`--baseline-source DIR` also measures the REST rows of another source tree's server in the same
run (rows `rest-before`), e.g. the previous commit: `git archive HEAD~1 | tar -x -C DIR`; both
servers run at once and their rounds alternate (`--rounds`, the median round is reported).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this file would shadow the `serving` package: import from the repo root.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from serving.logging_setup import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

import numpy as np  # noqa: E402

from bench.clients import run_together  # noqa: E402
from bench.server_process import export_untrained_sentiment, model_server  # noqa: E402
from pipelines.config import data_dir  # noqa: E402
from serving.errors import UserError  # noqa: E402
from serving.servable import set_parallelism  # noqa: E402

CLIENTS = (1, 8, 32)
MAX_BATCH = 32
# (clients, examples per request): one example from each client, and whole batches per request.
UNBATCHED = [(clients, 1) for clients in CLIENTS]
AT_BATCH = [(1, MAX_BATCH), (8, MAX_BATCH)]
REVIEWS = [
    "A wonderful, moving film with a cast that gives everything it has.",
    "Two hours I will never get back; the plot makes no sense at all.",
    "The photography is beautiful but the story drags in the middle.",
    "I laughed, I cried, and I will watch it again with my family.",
]
BATCHING_CONFIG = f"""\
max_batch_size {{ value: {MAX_BATCH} }}
batch_timeout_micros {{ value: 2000 }}
max_enqueued_batches {{ value: 1000 }}
num_batch_threads {{ value: {os.cpu_count() or 1} }}
"""


def default_model() -> tuple[str, Path]:
    """exports/sentiment if it holds a version, else TF Serving's half_plus_two test model."""
    sentiment = REPO / "exports" / "sentiment"
    if sentiment.is_dir() and any(p.name.isdigit() for p in sentiment.iterdir()):
        return "sentiment", sentiment
    root = data_dir()
    if root is None:
        raise UserError("no exports/sentiment and RNNKIT_DATA_DIR is not set",
                        "export the sentiment model, set RNNKIT_DATA_DIR, or pass "
                        "--model-base-path and --model-name")
    return "half_plus_two", root / "tfserving-testdata" / "saved_model_half_plus_two_cpu"


def long_review(i: int) -> str:
    """A review of about 230 words (IMDB's mean length), varied by `i`."""
    words = " ".join(REVIEWS[(i + k) % len(REVIEWS)] for k in range(20)).split()
    return " ".join(words[i % 7:][:230])


def example_inputs(signature: dict[str, Any], examples: int) -> dict[str, np.ndarray]:
    """One request's inputs for a signature (from the metadata): `examples` rows of each input."""
    rng = np.random.default_rng(0)
    inputs = {}
    for name, info in signature["inputs"].items():
        dims = [int(d.get("size", -1)) for d in info.get("tensor_shape", {}).get("dim", [])]
        shape = [examples] + [8 if d < 0 else d for d in dims[1:]]
        if info["dtype"] == "DT_STRING":
            texts = [long_review(i).encode() for i in range(int(np.prod(shape)))]
            inputs[name] = np.array(texts, dtype=object).reshape(shape)
        elif info["dtype"] in ("DT_INT32", "DT_INT64"):
            inputs[name] = rng.integers(1, 100, size=shape).astype(
                np.int32 if info["dtype"] == "DT_INT32" else np.int64)
        else:
            inputs[name] = rng.random(shape, dtype=np.float32)
    return inputs


def server_flags(batching: bool, workdir: Path, intra_op_threads: int = 0) -> list[str]:
    """The server's flags beyond model and ports, with or without request batching.

    Args:
        batching: turn request batching on.
        workdir: where the batching parameters file goes.
        intra_op_threads: threads one TensorFlow op may use; 0 lets TensorFlow choose.
    """
    flags = ["--file_system_poll_wait_seconds=0", "--shutdown_grace_seconds=2"]
    if intra_op_threads:  # only when asked: a --baseline-source server may predate the flag
        flags.append(f"--tensorflow_intra_op_parallelism={intra_op_threads}")
    if batching:
        config = workdir / "batching.config"
        config.write_text(BATCHING_CONFIG)
        flags += ["--enable_batching", f"--batching_parameters_file={config}"]
    return flags


def measure(call: Callable[[], Any], clients: int, requests: int, max_seconds: float
            ) -> dict[str, float]:
    """Run `call` from `clients` threads until `requests` calls are done (or time is up)."""
    for _ in range(min(clients * 2, 64)):  # warm-up: load paths, connections, graph caches
        call()
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.monotonic() + max_seconds
    errors: list[BaseException] = []

    def worker() -> None:
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                call()
            except Exception as err:  # report it once the run is over
                errors.append(err)
                return
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    wall = run_together([threading.Thread(target=worker) for _ in range(clients)])
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    ordered = sorted(latencies)
    return {"requests": len(ordered), "throughput": len(ordered) / wall,
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def in_process_rows(name: str, base_path: Path, inputs: dict[int, dict], args) -> list[tuple]:
    """The peer: the same SavedModel loaded in this process, called without any server."""
    from serving.servable import load_servable

    version_dir = max((p for p in base_path.iterdir() if p.name.isdigit()),
                      key=lambda p: int(p.name))
    servable = load_servable(name, int(version_dir.name), version_dir)
    outputs = list(servable.signature_defs["serving_default"].outputs)
    rows = []
    try:
        for clients, examples in UNBATCHED + AT_BATCH:
            def call(x=inputs[examples]):
                return servable.run("serving_default", x, outputs)
            result = measure(call, clients, args.requests * clients, args.max_seconds)
            rows.append(("in-process", "-", clients, examples, result))
    finally:
        servable.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-name", help="served model name (with --model-base-path)")
    parser.add_argument("--model-base-path", type=Path, help="the model's versions folder")
    parser.add_argument("--requests", type=int, default=40,
                        help="requests per client thread in each row (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="stop a row after this long (default: %(default)s)")
    parser.add_argument("--untrained-sentiment", action="store_true",
                        help="bench the sentiment architecture exported untrained to a temp dir "
                             "(when exports/sentiment does not exist yet)")
    parser.add_argument("--quick", action="store_true", help="10 requests per client, 10 s rows")
    parser.add_argument("--baseline-source", type=Path, metavar="DIR",
                        help="another rnnkit source tree whose REST server is measured too, in "
                             "the same run (rows rest-before)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --baseline-source, alternating rounds per REST row; the "
                             "median round is reported (default: %(default)s)")
    parser.add_argument("--intra-op-threads", type=int, default=0, metavar="N",
                        help="threads one TensorFlow op may use, in the servers "
                             "(--tensorflow_intra_op_parallelism) and in process; 0 (default) "
                             "lets TensorFlow choose (all cores)")
    args = parser.parse_args(argv)
    set_parallelism(args.intra_op_threads, 0)  # the in-process rows', before any op runs
    if args.quick:
        args.requests, args.max_seconds = 10, 10.0
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="rnnkit-bench-") as tmp:
        if args.model_base_path:
            name = args.model_name or args.model_base_path.name
            base_path = args.model_base_path
        elif args.untrained_sentiment:
            exports = Path(tmp) / "exports"
            export_untrained_sentiment(exports, [long_review(i) for i in range(16)])
            name, base_path = "sentiment", exports / "sentiment"
        else:
            name, base_path = default_model()
        base_path = base_path.resolve()
        sources = [("", REPO)] + ([("-before", args.baseline_source.resolve())]
                                  if args.baseline_source else [])
        for batching in (False, True):
            mode = "batching" if batching else "plain"
            with contextlib.ExitStack() as running:
                # With a baseline, both servers run at once and their REST rows alternate round
                # by round, so that load from elsewhere on the machine hits both alike.
                servers = {suffix: running.enter_context(model_server(
                    name, base_path, Path(tmp) / f"server-{mode}{suffix}.log",
                    server_flags(batching, Path(tmp), args.intra_op_threads),
                    source=source))
                    for suffix, source in sources}
                client = servers[""].client
                metadata = client.metadata(name)
                signature = metadata["metadata"]["signature_def"]["signature_def"][
                    "serving_default"]
                inputs = {n: example_inputs(signature, n) for n in (1, MAX_BATCH)}
                # Requests that are whole batches have nothing to merge: measured unbatched only.
                plan = UNBATCHED if batching else UNBATCHED + AT_BATCH
                for protocol, (clients, examples) in itertools.product(("grpc", "rest"), plan):
                    targets = list(servers) if protocol == "rest" else [""]
                    rounds = args.rounds if len(targets) > 1 else 1
                    results: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
                    for _ in range(rounds):
                        for suffix in targets:
                            def call(c=servers[suffix].client, p=protocol, x=inputs[examples]):
                                return c.predict(name, x, protocol=p)
                            results[suffix].append(measure(call, clients, args.requests * clients,
                                                           args.max_seconds))
                    for suffix, measured in results.items():
                        # The round with the median throughput, with its own latencies.
                        middle = sorted(measured, key=lambda r: r["throughput"])[len(measured) // 2]
                        rows.append((protocol + suffix, "on" if batching else "off", clients,
                                     examples, middle))
        rows = in_process_rows(name, base_path, inputs, args) + rows

    print(f"model {name} ({base_path}), {os.cpu_count()} CPUs, intra-op threads "
          f"{args.intra_op_threads or 'TensorFlow default'}, batching: max_batch_size "
          f"{MAX_BATCH}, batch_timeout_micros 2000; loopback")
    print("| path       | batching | clients | examples/call | requests | examples/s | "
          "p50 ms | p99 ms |")
    print("|------------|----------|---------|---------------|----------|------------|"
          "--------|--------|")
    for path, batching, clients, examples, r in rows:
        print(f"| {path:<10} | {batching:<8} | {clients:>7} | {examples:>13} | "
              f"{r['requests']:>8} | {r['throughput'] * examples:>10.1f} | "
              f"{r['p50_ms']:>6.2f} | {r['p99_ms']:>6.2f} |")

    def rate(path: str, batching: str, clients: int, examples: int = 1) -> float:
        for p, b, c, e, r in rows:
            if (p, b, c, e) == (path, batching, clients, examples):
                return r["throughput"] * e
        return float("nan")

    print("\nratios (examples/s, same clients and examples per call):")
    for clients, examples in AT_BATCH:
        ratio = rate("grpc", "off", clients, examples) / rate("in-process", "-", clients, examples)
        print(f"  grpc / in-process at {examples} examples per call, {clients} clients: "
              f"{ratio:.2f}x (target >= 0.8x)")
    for clients in CLIENTS:
        print(f"  grpc (batching off) / in-process, 1 example per call, {clients:>2} clients: "
              f"{rate('grpc', 'off', clients) / rate('in-process', '-', clients):.2f}x")
    print(f"  grpc (batching on) / in-process, 1 example per call, 32 clients: "
          f"{rate('grpc', 'on', 32) / rate('in-process', '-', 32):.2f}x")
    if args.baseline_source:
        for batching in ("off", "on"):
            for clients in CLIENTS:
                ratio = rate("rest", batching, clients) / rate("rest-before", batching, clients)
                print(f"  rest / rest-before, batching {batching}, 1 example per call, "
                      f"{clients:>2} clients: {ratio:.2f}x")
    for protocol in ("grpc", "rest"):
        print(f"  {protocol} batching on / off, 1 example per call, 32 clients: "
              f"{rate(protocol, 'on', 32) / rate(protocol, 'off', 32):.2f}x "
              "(target >= 3x for sentiment)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
