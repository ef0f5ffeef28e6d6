"""Bounded work per request, measured on a real export: what one huge request and several
largest-body requests cost the model server, and what it does once they are answered.

Starts `python -m serving` for one text model (input `text`), then:
1. sends one sentence of --words words (issue 24's 1.2 MB request is 200,000 words): status,
   seconds, and the server's CPU in each of the 5 seconds after the answer (a run that went on
   after a 504 shows here);
2. sends --clients concurrent requests, each a body of --body-bytes (the server gets that as
   --rest_api_max_body_bytes), while /healthz is asked every 0.05 s: statuses, seconds, the
   slowest /healthz, CPU after the last answer, and the server's peak RSS.

Run: `.venv/bin/python bench/bounds.py --base-path exports/translator --model translator
[--timeout-ms 5000] [--words 200000] [--clients 8] [--body-bytes 8388608]`. Linux only (reads
/proc). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_process import model_server


def post(url: str, body: bytes, timeout: float = 300) -> tuple[int, float]:
    """POST a JSON body; returns the HTTP status and the seconds it took."""
    started = time.monotonic()
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
            status = reply.status
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    return status, time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_after(pid: int, seconds: int = 5) -> list[float]:
    """The process's CPU use (cores) in each of the next `seconds` seconds."""
    used = []
    for _ in range(seconds):
        before = cpu_seconds(pid)
        time.sleep(1.0)
        used.append(round(cpu_seconds(pid) - before, 2))
    return used


def text_body(words: int, target_bytes: int | None = None) -> bytes:
    """A predict body with one sentence of `words` words (or of `target_bytes` bytes)."""
    head, tail = b'{"instances": ["', b'"]}'
    if target_bytes is not None:
        words = (target_bytes - len(head) - len(tail)) // 6
    return head + b"hola " * words + b"hola" + tail


def measure(base_path: Path, model: str, timeout_ms: int, words: int, clients: int,
            body_bytes: int) -> dict:
    """Run both measurements against one export (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        flags = [f"--rest_api_timeout_in_ms={timeout_ms}",
                 f"--rest_api_max_body_bytes={body_bytes}", "--file_system_poll_wait_seconds=0"]
        with model_server(model, base_path, Path(tmp) / "server.log", flags) as server:
            pid = server.process.pid
            url = f"{server.rest_url}/v1/models/{model}:predict"
            report: dict = {"model": model, "base_path": str(base_path),
                            "timeout_ms": timeout_ms, "rss_at_start_mib": peak_rss_mib(pid)}
            body = text_body(words)
            status, seconds = post(url, body)
            report["one"] = {"words": words, "bytes": len(body), "status": status,
                             "seconds": round(seconds, 2), "cpu_after": cpu_after(pid)}

            body = text_body(0, body_bytes)
            results: list = [None] * clients
            health: list[float] = []
            done = threading.Event()

            def send(index: int) -> None:
                results[index] = post(url, body)

            began = time.monotonic()
            probed_at: list[float] = []

            def probe() -> None:
                while not done.is_set():
                    started = time.monotonic()
                    with urllib.request.urlopen(f"{server.rest_url}/healthz", timeout=30):
                        health.append(time.monotonic() - started)
                        probed_at.append(started - began)
                    time.sleep(0.05)

            threads = [threading.Thread(target=send, args=(i,)) for i in range(clients)]
            prober = threading.Thread(target=probe)
            prober.start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            done.set()
            prober.join()
            report["concurrent"] = {
                "clients": clients, "bytes_each": len(body),
                "statuses": sorted(status for status, _ in results),
                "seconds": sorted(round(seconds, 2) for _, seconds in results),
                "healthz_probes": len(health),
                "healthz_slowest_s": round(max(health), 3) if health else None,
                "healthz_median_s": round(statistics.median(health), 3) if health else None,
                # (seconds after the first request was sent, seconds the probe took)
                "healthz_slowest_five": sorted(
                    ((round(at, 2), round(took, 3))
                     for at, took in zip(probed_at, health, strict=True)),
                    key=lambda probe: -probe[1])[:5],
                "cpu_after": cpu_after(pid), "peak_rss_mib": round(peak_rss_mib(pid))}
            return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-path", type=Path, required=True,
                        help="the model's base path (numbered version folders inside)")
    parser.add_argument("--model", required=True, help="the model name to serve it as")
    parser.add_argument("--timeout-ms", type=int, default=5000,
                        help="--rest_api_timeout_in_ms (default: %(default)s)")
    parser.add_argument("--words", type=int, default=200_000,
                        help="words of the single huge sentence (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent largest-body requests (default: %(default)s)")
    parser.add_argument("--body-bytes", type=int, default=8 << 20,
                        help="body size of each, also the server's body limit "
                             "(default: %(default)s)")
    args = parser.parse_args()
    print(json.dumps(measure(args.base_path, args.model, args.timeout_ms, args.words,
                             args.clients, args.body_bytes), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
