"""Times two production HTTP stacks with the REST API's shape, to choose one by measurement.

Both serve the same handler as serving/rest_api.py does: read a small JSON body, run the work on
a thread pool (a stand-in for the model: parse the JSON, compute, write JSON), answer JSON over
keep-alive connections. Compared: uvicorn (httptools) serving an ASGI app through
serving.http_server — the stack the model server and the web app use — and aiohttp's web server.
Clients are threads with one keep-alive http.client connection each, at 1, 8 and 32 clients.

Run: `.venv/bin/python bench/http_stack.py [--requests N]` (aiohttp must be installed; it is not
a dependency of rnnkit).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from bench.clients import run_together  # noqa: E402

BODY = json.dumps({"instances": [[float(i), float(i) / 2] for i in range(8)]}).encode()
CLIENTS = (1, 8, 32)


def work(body: bytes) -> bytes:
    """The stand-in for a model run: parse, compute, serialize."""
    rows = json.loads(body)["instances"]
    return json.dumps({"predictions": [[0.5 * x + 2 for x in row] for row in rows]}).encode()


def uvicorn_server(pool: ThreadPoolExecutor):
    """The model server's stack: serving.http_server (uvicorn, httptools) and an ASGI app."""
    from starlette.requests import Request

    from serving.http_server import HttpServer, read_body

    async def app(scope, receive, send):
        body = await read_body(Request(scope, receive), 1 << 20)
        reply = await asyncio.get_running_loop().run_in_executor(pool, work, body)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})

    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    return server.server_address[1], server.shutdown


def aiohttp_server(pool: ThreadPoolExecutor):
    """aiohttp's web server with the same handler, on its own event-loop thread."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        reply = await asyncio.get_running_loop().run_in_executor(pool, work, body)
        return web.Response(body=reply, content_type="application/json")

    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict = {}

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/models/m:predict", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = site._server.sockets[0].getsockname()[1]
        state["runner"] = runner
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(main()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    started.wait(10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)

    return state["port"], stop


def measure(port: int, clients: int, requests: int) -> dict[str, float]:
    """Send `requests` per client from `clients` keep-alive connections."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(requests):
            started = time.perf_counter()
            conn.request("POST", "/v1/models/m:predict", BODY,
                         {"Content-Type": "application/json"})
            reply = conn.getresponse()
            reply.read()
            assert reply.status == 200
            mine.append(time.perf_counter() - started)
        conn.close()
        with lock:
            latencies.extend(mine)

    for _ in range(2):  # warm up connections and code paths
        measure_once = threading.Thread(target=client)
        measure_once.start()
        measure_once.join()
    latencies.clear()
    wall = run_together([threading.Thread(target=client) for _ in range(clients)])
    ordered = sorted(latencies)
    return {"throughput": len(ordered) / wall, "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def main(argv: list[str] | None = None) -> int:
    """Run both stacks in turn, twice, and print one table.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    args = parser.parse_args(argv)
    stacks = {"uvicorn": uvicorn_server, "aiohttp": aiohttp_server}
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(2):  # alternate the stacks so that machine noise hits both alike
        for name, start in stacks.items():
            with ThreadPoolExecutor(8) as pool:
                port, stop = start(pool)
                try:
                    for clients in CLIENTS:
                        results.setdefault((name, clients), []).append(
                            measure(port, clients, args.requests))
                finally:
                    stop()
    print("| stack   | clients | requests/s (best of 2) | p50 ms | p99 ms |")
    print("|---------|---------|------------------------|--------|--------|")
    for (name, clients), runs in results.items():
        best = max(runs, key=lambda r: r["throughput"])
        print(f"| {name:<7} | {clients:>7} | {best['throughput']:>22.0f} | "
              f"{best['p50_ms']:>6.2f} | {best['p99_ms']:>6.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
