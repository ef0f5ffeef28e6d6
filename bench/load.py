"""The load run: Predict requests from many concurrent clients, REST and gRPC mixed, against the
sentiment model, while a new version is dropped into the base path.

Starts `python -m serving` on loopback ports (batching on, polling the base path every 0.2 s),
sends --requests one-review Predict calls from --clients threads (even threads REST, odd threads
gRPC, through serving.client.ServingClient), and once --swap-at of them are answered publishes a
copy of the served version as the next version (a staging folder renamed into place, as the export
does). Every reply is checked (a probability in [0, 1] and a label). Prints and optionally writes
as JSON: errors by kind, p50/p95/p99/max latency, throughput, the versions that answered, and
whether the old version was released. Exits 1 when a request failed or the swap did not complete.

Model: --model-base-path DIR (its newest version is copied into a temporary base path, so DIR is
never written), else exports/sentiment when exported, else the sentiment task's model built
untrained (the same graph; speed does not depend on the weights; its vocabulary is adapted on the
reviews the run sends).
Run: `.venv/bin/python bench/load.py [--requests 10000] [--clients 64] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, bench/ would come first on sys.path: import from the repo root instead.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from serving.logging_setup import quiet_tensorflow  # noqa: E402

quiet_tensorflow()

from bench.server_process import export_untrained_sentiment, model_server  # noqa: E402
from serving.client import ServerReplyError, ServingClient  # noqa: E402

MODEL = "sentiment"
LABELS = {b"negative", b"positive"}
# Loads the server fails (a version that could not load), from its Prometheus page.
LOAD_FAILURES = re.compile(r':tensorflow:cc:saved_model:load_attempt_count\{[^}]*status="fail"'
                           r'[^}]*\} (\d+)')


def versions_in(base_path: Path) -> list[int]:
    """The integer version folders under a base path, ascending.

    Args:
        base_path: the model's folder.
    """
    return sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit() and p.is_dir())


def prepare_base_path(workdir: Path, source: Path | None = None) -> Path:
    """A base path holding one version of the sentiment model, which the run may write into.

    Args:
        workdir: a scratch folder.
        source: a base path to copy the newest version from; None for exports/sentiment if it
            holds a version, else the untrained sentiment model.
    """
    base = workdir / MODEL
    if source is None:
        exported = REPO / "exports" / MODEL
        source = exported if exported.is_dir() and versions_in(exported) else None
    if source is None:
        export_untrained_sentiment(workdir, sample_reviews())
        return base
    newest = versions_in(source)
    if not newest:
        raise SystemExit(f"{source} holds no version folder (1/, 2/, ...)")
    base.mkdir(parents=True)
    shutil.copytree(source / str(newest[-1]), base / "1")
    return base


def publish_next_version(base: Path) -> int:
    """Copy the newest version to the next number: staging folder first, then one rename.

    Args:
        base: the model's base path.
    """
    newest = versions_in(base)[-1]
    staging = base / f".staging-{newest + 1}"
    shutil.copytree(base / str(newest), staging)
    os.rename(staging, base / str(newest + 1))
    return newest + 1


def sample_reviews(count: int = 256) -> list[str]:
    """Real IMDB test reviews when the data is prepared, else varied long synthetic ones.

    Args:
        count: how many reviews.
    """
    from serving.errors import UserError

    with contextlib.suppress(UserError, OSError):
        from pipelines.datasets import imdb

        return [text.decode() for text, _ in imdb.load_test(count).as_numpy_iterator()]
    from pipelines.tasks.sentiment import WARMUP_REVIEWS

    words = " ".join(WARMUP_REVIEWS * 12).split()
    return [" ".join(words[i % 17:][:230]) for i in range(count)]


def _check_reply(reply: Any) -> str | None:
    """What is wrong with a Predict reply for one review, or None."""
    probability, label = reply.get("probability"), reply.get("label")
    if probability is None or label is None or probability.shape != (1,) or label.shape != (1,):
        return f"bad reply shape: { {k: getattr(v, 'shape', None) for k, v in reply.items()} }"
    if not 0.0 <= float(probability[0]) <= 1.0 or label[0] not in LABELS:
        return f"bad reply values: {probability[0]!r}, {label[0]!r}"
    return None


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of sorted values.

    Args:
        ordered: the values, ascending.
        q: 0..100.
    """
    index = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _states(client: ServingClient) -> dict[int, str]:
    try:
        status = client.status(MODEL, protocol="rest")
    except ServerReplyError:
        return {}
    return {int(v["version"]): v["state"] for v in status.get("model_version_status", [])}


def load_run(base: Path, workdir: Path, requests: int = 10_000, clients: int = 64,
             swap_at: float | None = 0.5, max_seconds: float = 600.0,
             server_flags: list[str] | None = None) -> dict[str, Any]:
    """Serve `base`, send the requests, drop in a new version, and report.

    Args:
        base: the sentiment model's base path (the run writes the new version into it).
        workdir: scratch folder for the server log and config.
        requests: Predict calls to send (one review each); more are sent only while the new
            version has not answered yet.
        clients: concurrent client threads; even ones use REST, odd ones gRPC.
        swap_at: publish the next version when this fraction of requests is answered; None
            for no swap.
        max_seconds: stop sending after this long, whatever is left.
        server_flags: more flags for the server.
    """
    reviews = sample_reviews()
    lock = threading.Lock()
    issued = [0]
    results: list[tuple[str, float, int | None, str | None]] = []
    swap: dict[str, Any] = {}
    new_version_answered = threading.Event()
    monitoring = workdir / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    flags = ["--file_system_poll_wait_seconds=0.2", "--enable_batching",
             f"--monitoring_config_file={monitoring}", *(server_flags or [])]
    with model_server(MODEL, base, workdir / "server.log", flags) as server:
        client, url = server.client, server.rest_url
        old_version = versions_in(base)[-1]
        new_version = old_version + 1
        swap_after = None if swap_at is None else max(1, int(requests * swap_at))
        deadline = time.monotonic() + max_seconds

        def take_ticket() -> int | None:
            with lock:
                swapping = swap_after is not None and not new_version_answered.is_set()
                if issued[0] >= requests and not swapping:
                    return None
                if time.monotonic() > deadline:
                    return None
                issued[0] += 1
                return issued[0]

        def worker(index: int) -> None:
            protocol = "rest" if index % 2 == 0 else "grpc"
            while (ticket := take_ticket()) is not None:
                review = reviews[ticket % len(reviews)]
                started = time.perf_counter()
                error = version = None
                try:
                    reply = client.predict(MODEL, {"text": [review]}, protocol=protocol)
                    version = reply.version
                    error = _check_reply(reply)
                except ServerReplyError as err:
                    error = f"{err.code().name}: {err.details()[:200]}"
                except Exception as err:  # anything else is a failed request too
                    error = f"{type(err).__name__}: {err}"[:200]
                elapsed = time.perf_counter() - started
                with lock:
                    results.append((protocol, elapsed, version, error))
                    answered = len(results)
                if version == new_version and error is None:
                    new_version_answered.set()
                if swap_after is not None and answered == swap_after:
                    swap["published_s"] = time.monotonic()
                    swap["version"] = publish_next_version(base)

        for protocol in ("rest", "grpc"):  # the client looks up the signature once per protocol
            client.predict(MODEL, {"text": [reviews[0]]}, protocol=protocol)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started

        states: dict[int, str] = {}
        if swap:
            wait_until = time.monotonic() + 60
            while time.monotonic() < wait_until:
                states = _states(client)
                if states.get(new_version) == "AVAILABLE" and states.get(old_version) == "END":
                    break
                time.sleep(0.2)
        else:
            states = _states(client)
        with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=10) as page:
            load_failures = sum(int(n) for n in LOAD_FAILURES.findall(page.read().decode()))
        server_pid = server.process.pid

    latencies = sorted(elapsed for _, elapsed, _, _ in results)
    errors = Counter(error for _, _, _, error in results if error is not None)
    by_protocol = Counter(protocol for protocol, _, _, _ in results)
    answered_by = Counter(version for protocol, _, version, error in results
                          if protocol == "grpc" and error is None)
    grpc_versions = [version for protocol, _, version, error in results
                     if protocol == "grpc" and error is None]
    report = {
        "model": MODEL, "base_path": str(base), "server_pid": server_pid,
        "requests": len(results), "clients": clients, "by_protocol": dict(by_protocol),
        "errors": sum(errors.values()), "error_kinds": dict(errors.most_common(5)),
        "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 1),
        "latency_ms": {name: round(1000 * percentile(latencies, q), 1)
                       for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
        "latency_ms_by_protocol": {
            protocol: {name: round(1000 * percentile(ordered, q), 1)
                       for name, q in (("p50", 50), ("p99", 99))}
            for protocol in sorted(by_protocol)
            if (ordered := sorted(e for p, e, _, _ in results if p == protocol))},
        "cpus": os.cpu_count(), "load_failures": load_failures,
        "grpc_answered_by_version": {str(k): v for k, v in sorted(answered_by.items())},
        "version_states_after": {str(k): v for k, v in sorted(states.items())},
    }
    if swap:
        report["swap"] = {
            "old_version": old_version, "new_version": swap["version"],
            "after_requests": swap_after,
            "new_version_took_over": bool(grpc_versions) and grpc_versions[-1] == new_version,
            "old_version_released": states.get(old_version) == "END",
        }
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the load and print the report.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000,
                        help="Predict requests to send (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=64,
                        help="concurrent clients, half REST, half gRPC (default: %(default)s)")
    parser.add_argument("--swap-at", type=float, default=0.5,
                        help="drop a new version in after this fraction of the requests; "
                             "negative for none (default: %(default)s)")
    parser.add_argument("--model-base-path", type=Path, default=None,
                        help="copy the newest version from here (default: exports/sentiment, "
                             "else the untrained sentiment model)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="stop sending after this long (default: %(default)s)")
    parser.add_argument("--server-flag", action="append", default=[], metavar="FLAG",
                        help="another server flag, e.g. --server-flag=--grpc_max_threads=64")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rnnkit-load-") as tmp:
        base = prepare_base_path(Path(tmp), args.model_base_path)
        report = load_run(base, Path(tmp), args.requests, args.clients,
                          args.swap_at if args.swap_at >= 0 else None, args.max_seconds,
                          args.server_flag)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    swap = report.get("swap", {})
    ok = report["errors"] == 0 and report["load_failures"] == 0 and (
        not swap or (swap["new_version_took_over"] and swap["old_version_released"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
