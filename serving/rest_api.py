"""TF Serving's REST API over HTTP: a thin adapter from URLs and JSON to the server core.

Routes, as TF Serving has them:
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signatures
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:{predict|classify|regress}
Extensions: GET /v1/models (every model and its versions), GET /healthz (the process answers),
GET /readyz (every configured model has an AVAILABLE version), and the Prometheus page at the
monitoring config's path when monitoring is enabled.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from tensorflow_serving.apis import model_pb2

from serving import rest_json
from serving.server import ServingCore, as_serving_error
from serving.status import Code, ServingError, invalid_argument

log = logging.getLogger("serving.rest_api")

# TF Serving's ToHTTPStatusCode.
HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}
_MODEL = r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
PREDICTION_PATH = re.compile(_MODEL + r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?"
                         r"(?:/(metadata))?", re.IGNORECASE)
V1_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
JSON_TYPE = "application/json"
INT64_MAX = 2**63 - 1


class BodyTooLarge(Exception):
    """A request body exceeds the configured limit (HTTP 413)."""


def model_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    """Build the ModelSpec a URL names.

    Args:
        name: the (percent-encoded) model name.
        version: the version digits, or None.
        label: the (percent-encoded) version label, or None.
    """
    spec = model_pb2.ModelSpec(name=unquote(name))
    if version is not None:
        number = int(version)
        if number > INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        spec.version.value = number
    if label is not None:
        spec.version_label = unquote(label)
    return spec


class Watchdog:
    """One thread that fires callbacks for requests still running at their deadline."""

    def __init__(self) -> None:
        # Entries are [deadline, sequence, callback]; a cancelled entry's callback is None.
        self._heap: list[list[Any]] = []
        self._dead = 0
        self._sequence = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._run, name="rest-deadlines", daemon=True).start()

    def watch(self, deadline: float, on_expiry: Callable[[], None]) -> list[Any]:
        """Call `on_expiry` at `deadline` (time.monotonic()) unless cancelled; returns a token.

        Args:
            deadline: when to fire.
            on_expiry: what to call then.
        """
        entry = [deadline, next(self._sequence), on_expiry]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    def cancel(self, token: list[Any]) -> None:
        """Stop watching a request (it finished).

        Args:
            token: what `watch` returned.
        """
        with self._cond:
            if token[2] is None:
                return
            token[2] = None
            self._dead += 1
            if self._dead > 1000 and self._dead * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2] is not None]
                heapq.heapify(self._heap)
                self._dead = 0

    def close(self) -> None:
        """Stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    while self._heap and self._heap[0][2] is None:
                        heapq.heappop(self._heap)
                        self._dead -= 1
                    left = self._heap[0][0] - time.monotonic() if self._heap else None
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                entry = heapq.heappop(self._heap)
                on_expiry, entry[2] = entry[2], None
            with contextlib.suppress(OSError):  # the client may be gone
                on_expiry()


class RestServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection, HTTP/1.1 keep-alive.

    Args:
        core: the server core.
        host: the address to bind.
        port: the port to bind.
        timeout_ms: answer 504 when a request takes longer; 0 for no limit.
        max_body_bytes: answer 413 to bodies (after gzip decompression) larger than this.
        monitoring_path: the Prometheus page's path, or None when monitoring is off.
        read_timeout_s: a request (line, headers and body) must arrive within this many seconds
            of the connection opening or the previous answer; then the connection is closed.
    """

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, core: ServingCore, host: str, port: int, *, timeout_ms: int = 30000,
                 max_body_bytes: int = 64 << 20, monitoring_path: str | None = None,
                 read_timeout_s: float = 120.0) -> None:
        self.core = core
        self.timeout_seconds = timeout_ms / 1000 if timeout_ms > 0 else None
        self.read_timeout_seconds = read_timeout_s
        self.max_body_bytes = max_body_bytes
        self.monitoring_path = monitoring_path
        self.stopping = False
        self._in_flight = 0
        self._idle = threading.Condition()
        self.watchdog = Watchdog()  # request deadlines and read deadlines
        self._thread: threading.Thread | None = None
        super().__init__((host, port), RestHandler)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="rest-server",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace_seconds: float) -> bool:
        """Stop accepting connections and wait for requests in progress to be answered.

        Args:
            grace_seconds: the longest wait for in-flight requests.

        Returns:
            True when every in-flight request was answered in time.
        """
        self.stopping = True
        self.shutdown()
        self.server_close()
        deadline = time.monotonic() + grace_seconds
        with self._idle:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle.wait(left)
            drained = self._in_flight == 0
        self.watchdog.close()
        return drained

    def begin_request(self) -> None:
        """Count a request being processed (for a graceful stop)."""
        with self._idle:
            self._in_flight += 1

    def end_request(self) -> None:
        """Count a request answered."""
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()


class RestHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests."""

    protocol_version = "HTTP/1.1"
    server_version = "rnnkit-model-server"
    disable_nagle_algorithm = True
    timeout = 120  # seconds a socket read may wait (the read deadline is usually shorter)
    server: RestServer

    def log_message(self, format: str, *args: Any) -> None:
        """Route the access log to debug logging instead of stderr."""
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        """Answer a GET."""
        self._handle()

    def do_POST(self) -> None:
        """Answer a POST."""
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_POST

    # ---- plumbing ------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        """Read and answer one request, which must arrive whole before the read deadline.

        A client that goes quiet or trickles its headers or body (slowloris) would otherwise
        hold this connection's thread; at the deadline its socket is shut down, which ends the
        blocked read.
        """
        self._dropped = False
        self._read_deadline = self.server.watchdog.watch(
            time.monotonic() + self.server.read_timeout_seconds, self._drop_connection)
        try:
            super().handle_one_request()
        finally:
            self.server.watchdog.cancel(self._read_deadline)

    def _drop_connection(self) -> None:
        self._dropped = True
        self.close_connection = True
        log.info("closing a connection from %s: no whole request within %.0f s",
                 self.address_string(), self.server.read_timeout_seconds)
        self.connection.shutdown(socket.SHUT_RDWR)

    def _reply(self, status: int, body: bytes, content_type: str = JSON_TYPE) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reply_error(self, error: ServingError, status: int | None = None) -> None:
        self._reply(status or HTTP_STATUS.get(error.code, 500),
                    rest_json.dumps({"error": error.message}))

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(limit)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise invalid_argument("Content-Length is not a number") from None
            if length > limit:
                raise BodyTooLarge(f"request body of {length} bytes")
            body = self.rfile.read(length) if length > 0 else b""
            if len(body) < length:
                raise ConnectionResetError("the connection closed before the whole body came")
        encoding = self.headers.get("Content-Encoding", "identity").lower()
        if encoding == "gzip":
            return self._gunzip(body, limit)
        if encoding not in ("identity", ""):
            raise invalid_argument(f"unsupported Content-Encoding: {encoding}; send gzip or none")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise invalid_argument("malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                raise BodyTooLarge(f"chunked request body of more than {limit} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)

    @staticmethod
    def _gunzip(body: bytes, limit: int) -> bytes:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            data = decompressor.decompress(body, limit + 1)
        except zlib.error as err:
            raise invalid_argument(f"request body is not valid gzip data: {err}") from None
        if len(data) > limit or decompressor.unconsumed_tail:
            raise BodyTooLarge(f"request body of more than {limit} bytes once decompressed")
        if not decompressor.eof:
            raise invalid_argument("request body is truncated gzip data")
        return data

    def _finish(self) -> None:
        """Count this request answered, once (the deadline and the work may both finish it)."""
        with self._finish_lock:
            if self._pending:
                self._pending = False
                self.server.end_request()

    def _handle(self) -> None:
        server = self.server
        server.begin_request()
        self._finish_lock = threading.Lock()
        self._pending = True
        try:
            if server.stopping:
                self.close_connection = True
                self._reply_error(ServingError(Code.UNAVAILABLE, "the server is shutting down"))
                return
            path = urlsplit(self.path).path
            try:
                body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else b""
                server.watchdog.cancel(self._read_deadline)  # the request is in: run it
                if self._dropped:
                    raise ConnectionResetError("the read deadline passed")
            except BodyTooLarge as err:
                self.close_connection = True  # the unread body must not be taken for a request
                self._reply_error(ServingError(
                    Code.RESOURCE_EXHAUSTED,
                    f"{err} is larger than the limit of {server.max_body_bytes} bytes "
                    "(--rest_api_max_body_bytes); send fewer instances per request"),
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                return
            except ServingError as err:
                self.close_connection = True
                self._reply_error(err)
                return
            self._route(path, body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        finally:
            self._finish()

    def _answer_v1(self, path: str, body: bytes) -> None:
        """Answer a /v1 request, or 504 once --rest_api_timeout_in_ms passed without an answer."""
        server = self.server
        answered = threading.Lock()  # whoever takes it first (the work or the deadline) replies
        token = None
        if server.timeout_seconds:
            def expire() -> None:
                if answered.acquire(blocking=False):
                    self.close_connection = True  # the late answer must not reach the client
                    try:
                        self._reply_error(ServingError(
                            Code.DEADLINE_EXCEEDED,
                            f"Deadline exceeded: the request took longer than "
                            f"{server.timeout_seconds * 1000:.0f} ms (--rest_api_timeout_in_ms)"))
                    finally:
                        self._finish()  # a graceful stop need not wait for the abandoned run
            token = server.watchdog.watch(time.monotonic() + server.timeout_seconds, expire)
        try:
            status, reply = 200, rest_json.dumps(self._v1(path, body))
        except BaseException as err:
            error = as_serving_error(err)
            status, reply = HTTP_STATUS.get(error.code, 500), rest_json.dumps(
                {"error": error.message})
        finally:
            if token is not None:
                server.watchdog.cancel(token)
        if answered.acquire(blocking=False):
            self._reply(status, reply)

    def _route(self, path: str, body: bytes) -> None:
        server = self.server
        if V1_PATH.fullmatch(path):
            self._answer_v1(path, body)
        elif path == "/healthz" and self.command == "GET":
            self._reply(200, rest_json.dumps({"status": "alive"}))
        elif path == "/readyz" and self.command == "GET":
            waiting = server.core.manager.not_ready()
            document = {"ready": not waiting, "not_ready": waiting}
            self._reply(200 if not waiting else 503, rest_json.dumps(document))
        elif (server.monitoring_path and path == server.monitoring_path
              and self.command == "GET" and server.core.metrics is not None):
            page = server.core.metrics.render_prometheus().encode()
            self._reply(200, page, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._reply_error(ServingError(
                Code.NOT_FOUND, f"Not found: {self.command} {path}; the API is under /v1/models"))

    # ---- the v1 API ------------------------------------------------------------------------

    def _v1(self, path: str, body: bytes) -> Any:
        core = self.server.core
        match = PREDICTION_PATH.fullmatch(path) if self.command == "POST" else None
        if match:
            name, version, label, method = match.groups()
            spec = model_spec(name, version, label)
            api = method.lower()
            handler = {"predict": self._predict, "classify": self._classify,
                       "regress": self._regress}[api]
            with core.track(api.capitalize(), "REST", spec.name):
                return handler(spec, body)
        match = STATUS_PATH.fullmatch(path) if self.command == "GET" else None
        if match:
            name, version, label, metadata = match.groups()
            if name is None:
                if version is not None or label is not None or metadata is not None:
                    raise invalid_argument("Missing model name in request.")
                return self._list_models()
            spec = model_spec(name, version, label)
            if metadata:
                with core.track("GetModelMetadata", "REST", spec.name):
                    return self._metadata(spec)
            with core.track("GetModelStatus", "REST", spec.name):
                return rest_json.proto_json(core.model_status(spec))
        raise invalid_argument(f"Malformed request: {self.command} {path}")

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        core = self.server.core
        document = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(document)
        with core.acquire(spec) as servable:
            name = signature_name or "serving_default"
            signature = servable.signature_defs.get(name)
            if signature is None:
                raise invalid_argument(f"Serving signature name: \"{name}\" not found in "
                                       f"signature def. This model has: "
                                       f"{', '.join(sorted(servable.signature_defs))}")
            inputs, request_format = rest_json.predict_inputs(document, signature, name)
            _, outputs = core.predict(servable, signature_name, inputs)
        return rest_json.predict_response(outputs, request_format)

    def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        core = self.server.core
        document = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(document)
        request_input = rest_json.examples_input(document, "classify")
        with core.acquire(spec) as servable:
            _, result = core.classify(servable, signature_name, request_input)
        return rest_json.classify_response(result)

    def _regress(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        core = self.server.core
        document = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(document)
        request_input = rest_json.examples_input(document, "regress")
        with core.acquire(spec) as servable:
            _, result = core.regress(servable, signature_name, request_input)
        return rest_json.regress_response(result)

    def _metadata(self, spec: model_pb2.ModelSpec) -> Any:
        core = self.server.core
        with core.acquire(spec) as servable:
            return {
                "model_spec": rest_json.proto_json(core.response_spec(servable, None)),
                "metadata": {"signature_def": rest_json.proto_json(
                    core.signature_def_map(servable))},
            }

    def _list_models(self) -> Any:
        core = self.server.core
        models = []
        for name in core.manager.model_names():
            try:
                status = rest_json.proto_json(core.model_status(model_pb2.ModelSpec(name=name)))
            except ServingError:
                status = {"model_version_status": []}
            models.append({"name": name, **status})
        return {"models": models}
