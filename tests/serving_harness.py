"""Helpers for the model server tests: run `python -m serving` on free ports, talk HTTP/gRPC,
and build small TF2 SavedModels with plain TensorFlow."""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parent.parent
TESTDATA = "tfserving-testdata"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """Send one HTTP request; returns the status and the parsed JSON reply (text if not JSON).

    Args:
        method: GET or POST.
        url: the full URL.
        body: a JSON-serializable body, or None.
        raw: raw body bytes instead of `body`.
        headers: extra headers.
        timeout: seconds to wait.
    """
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, payload = reply.status, reply.read()
    except urllib.error.HTTPError as err:
        status, payload = err.code, err.read()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode()


def gzipped(body: Any) -> bytes:
    """A JSON body, gzip-compressed."""
    return gzip.compress(json.dumps(body).encode())


class ServerProcess:
    """A `python -m serving` subprocess on free ports; stderr goes to a log file.

    Args:
        args: server flags besides --port and --rest_api_port.
        log_path: where the server's stderr is written.
    """

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", f"--port={self.grpc_port}",
             f"--rest_api_port={self.rest_port}", *args],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._log)
        self.channel: grpc.Channel | None = None

    @property
    def url(self) -> str:
        """The REST base URL."""
        return f"http://127.0.0.1:{self.rest_port}"

    def log_text(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until the REST port answers /healthz; fail with the server log if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n"
                                     f"{self.log_text()[-3000:]}")
            with contextlib.suppress(OSError):
                status, _ = http("GET", f"{self.url}/healthz", timeout=2)
                if status == 200:
                    self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
                    return
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the server and wait for it; returns its exit code."""
        if self.channel is not None:
            self.channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def running_server(args: list[str], log_path: Path) -> Iterator[ServerProcess]:
    """Start a server, wait until it answers, and stop it afterwards."""
    server = ServerProcess(args, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def wait_for(condition: Any, timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met after {timeout} s (last value {value!r})")
        time.sleep(interval)


def export_test_model(base_path: Path, name: str, *, offset: float = 0.0,
                      warmup: list[Any] | None = None) -> Path:
    """Export a small TF2 model (text, arithmetic, classify, regress and sleep signatures).

    Signatures:
        serving_default: text (string [-1]) -> upper, text_bytes (the input), length (int64).
        add: a, b (float [-1, 2]) -> sum, diff (each plus `offset`).
        classify: serialized tf.Examples with float x -> classes ["neg", "pos"], scores.
        regress: serialized tf.Examples with float x (and optional bias) -> outputs 2x + bias.
        sleep: seconds (float [-1]) -> slept (the input), after sleeping max(seconds).

    Args:
        base_path: the exports folder; the model goes to base_path/name/<next version>.
        name: the model name.
        offset: added to `add`'s outputs, to tell versions apart.
        warmup: PredictionLog records for assets.extra/tf_serving_warmup_requests.
    """
    import tensorflow as tf

    from serving.export import (
        CLASSIFY_METHOD,
        REGRESS_METHOD,
        WARMUP_FILE,
        export_saved_model,
        warmup_file,
    )

    class TestModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def echo(self, text):
            return {"upper": tf.strings.upper(text), "text_bytes": text,
                    "length": tf.cast(tf.strings.length(text), tf.int64)}

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a"),
                                      tf.TensorSpec([None, 2], tf.float32, name="b")])
        def add(self, a, b):
            return {"sum": a + b + offset, "diff": a - b + offset}

        @staticmethod
        def _x(inputs, name="x"):
            spec = {name: tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
            return tf.io.parse_example(inputs, spec)[name]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            positive = tf.sigmoid(self._x(inputs))
            classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(positive)[0], 1])
            return {"classes": classes, "scores": tf.concat([1 - positive, positive], axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": 2 * self._x(inputs) + self._x(inputs, "bias")}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="seconds")])
        def sleep(self, seconds):
            micros = tf.cast(tf.reduce_max(seconds) * 1e6, tf.int64)
            tick = tf.data.Dataset.range(1)
            slept = tf.raw_ops.SleepDataset(
                input_dataset=tf.data.experimental.to_variant(tick), sleep_microseconds=micros,
                output_types=[tf.int64], output_shapes=[[]])
            done = tf.data.experimental.from_variant(slept, tick.element_spec).take(1).reduce(
                tf.constant(0, tf.int64), lambda total, item: total + item)
            return {"slept": seconds + tf.cast(done, tf.float32)}

    model = TestModel()
    signatures = {"serving_default": model.echo, "add": model.add, "classify": model.classify,
                  "regress": model.regress, "sleep": model.sleep}
    assets = {WARMUP_FILE: warmup_file(warmup)} if warmup else None
    return export_saved_model(model, signatures, base_path, name, assets_extra=assets,
                              method_names={"classify": CLASSIFY_METHOD,
                                            "regress": REGRESS_METHOD})
