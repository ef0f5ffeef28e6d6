"""`python -m serving` as a child process on free loopback ports, for the serving benchmarks.

bench/serving.py and bench/load.py both measure the real server, so both start it here: the same
flags, the same wait until the model is AVAILABLE, the same SIGTERM (then kill) on the way out.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serving.client import ServingClient

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    """A started model server.

    Args:
        process: the `python -m serving` child process.
        client: a client connected to its gRPC and REST ports.
        rest_url: the REST API's base URL.
    """

    process: subprocess.Popen
    client: ServingClient
    rest_url: str


@contextlib.contextmanager
def model_server(name: str, base_path: Path, log_path: Path, flags: list[str] | None = None,
                 source: Path = REPO) -> Iterator[RunningServer]:
    """Run `python -m serving` for one model on loopback until the block ends.

    Waits until the model is AVAILABLE (printing the server's log tail if it never is), and
    SIGTERMs the server afterwards, killing it if it has not stopped within 30 s.

    Args:
        name: the model name.
        base_path: the model's base path (version folders inside).
        log_path: where the server's stdout and stderr go.
        flags: more tensorflow_model_server flags.
        source: the source tree whose `serving` package runs (another checkout, to compare).
    """
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "serving", "--host=127.0.0.1", f"--port={grpc_port}",
               f"--rest_api_port={rest_port}", f"--model_name={name}",
               f"--model_base_path={base_path}", *(flags or [])]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=source, stdout=log, stderr=subprocess.STDOUT)
    client = ServingClient("127.0.0.1", grpc_port, rest_port, timeout=60.0)
    try:
        try:
            client.wait_until_available(name, timeout=180)
        except Exception:
            sys.stderr.write(log_path.read_text()[-3000:])
            raise
        yield RunningServer(process, client, f"http://127.0.0.1:{rest_port}")
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def export_untrained_sentiment(base: Path, texts: list[str]) -> Path:
    """Export the sentiment task's model (quick profile), untrained, as base/sentiment/<version>.

    Throughput does not depend on the weights, so this stands in where no trained export exists.

    Args:
        base: the exports folder.
        texts: reviews the vocabulary is adapted on.
    """
    import tensorflow as tf

    from models.sentiment import make_vectorizer
    from pipelines.tasks import get_task
    from serving.export import export_saved_model

    task = get_task("sentiment")
    config = task.config("quick")
    vectorizer = make_vectorizer(tf.data.Dataset.from_tensor_slices(texts).batch(64),
                                 config.max_tokens)
    model = task.model_on(vectorizer, config)
    return export_saved_model(model, task.serving_signatures(model, config), base,
                              task.export_name, method_names=task.signature_methods())
