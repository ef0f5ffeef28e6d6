"""TF Serving's REST API over HTTP: a thin adapter from URLs and JSON to the server core.

Routes, as TF Serving has them:
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signatures
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:{predict|classify|regress}
Extensions: GET /v1/models (every model and its versions), GET /healthz (the process answers),
GET /readyz (every configured model has an AVAILABLE version), and the Prometheus page at the
monitoring config's path when monitoring is enabled.

The HTTP work is serving.http_server's (uvicorn); this module is an ASGI app. Requests run on a
pool of --rest_api_num_threads threads (TF's REST thread pool), so the model's work never blocks
the event loop and at most that many run at once; a model request first waits for its model's
admission (serving.admission: 503 when the model's queue is full). A request still running after
--rest_api_timeout_in_ms is answered 504 and its TensorFlow run is cancelled
(serving.cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from tensorflow_serving.apis import model_pb2

from serving import rest_json
from serving.cancellation import RunToken, check_not_cancelled, request_scope
from serving.core import ServingCore, as_serving_error
from serving.errors import UserError
from serving.http_server import BadBody, BodyTooLarge, HttpServer, read_body
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
HEALTH_PATHS = ("/healthz", "/readyz")
JSON_TYPE = "application/json"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INT64_MAX = 2**63 - 1
# Bodies larger than this are parsed one at a time (see RestApi._parsing).
BIG_BODY_BYTES = 4 << 20
# TF Serving's CORS answers (--rest_api_enable_cors_support): every answer allows any origin; a
# preflight (OPTIONS) from a web origin is told which methods and headers it may use.
CORS_ORIGIN = ("Access-Control-Allow-Origin", "*")
CORS_PREFLIGHT = (("Access-Control-Allow-Methods", "POST, GET"),
                  ("Access-Control-Allow-Headers", "Content-Type"))
_WEB_ORIGIN = re.compile(r"https?://")


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



def check_monitoring_path(path: str, config_file: str | None) -> None:
    """Refuse a Prometheus page path the REST API answers itself: the page would be unreachable.

    Args:
        path: the monitoring config's path.
        config_file: the `--monitoring_config_file` it came from, for the message.
    """
    if V1_PATH.fullmatch(path) or path in HEALTH_PATHS:
        raise UserError(f"monitoring config file {config_file}: path {path!r} is the REST "
                        "API's own (/v1/..., /healthz, /readyz), so the metrics page would never "
                        "be reached", 'give it a path of its own, e.g. path: '
                        '"/monitoring/prometheus/metrics"')

class _Reply:
    """One answer: status, body bytes, content type and extra headers."""

    __slots__ = ("body", "close", "content_type", "status")

    def __init__(self, status: int, body: bytes, content_type: str = JSON_TYPE,
                 close: bool = False) -> None:
        self.status, self.body, self.content_type, self.close = status, body, content_type, close


def _error(error: ServingError, status: int | None = None, close: bool = False) -> _Reply:
    return _Reply(status or HTTP_STATUS.get(error.code, 500),
                  rest_json.dumps({"error": error.message}), close=close)


class RestApi:
    """The REST API as an ASGI application.

    Args:
        core: the server core.
        timeout_ms: answer 504 when a request takes longer; 0 for no limit.
        max_body_bytes: answer 413 to bodies (after gzip decompression) larger than this.
        monitoring_path: the Prometheus page's path, or None when monitoring is off.
        num_threads: requests processed at the same time (--rest_api_num_threads).
        cors: add TF Serving's CORS headers and answer preflights.
    """

    def __init__(self, core: ServingCore, *, timeout_ms: int = 30000,
                 max_body_bytes: int = 64 << 20, monitoring_path: str | None = None,
                 num_threads: int = 8, cors: bool = False) -> None:
        self.core = core
        self.timeout_seconds = timeout_ms / 1000 if timeout_ms > 0 else None
        self.max_body_bytes = max_body_bytes
        self.monitoring_path = monitoring_path
        self.cors = cors
        self.executor = ThreadPoolExecutor(max(1, num_threads), thread_name_prefix="rest")
        self._big_parse = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Answer one HTTP request (the ASGI interface)."""
        request = Request(scope, receive)
        # TF matches the raw (still percent-encoded) path; names are unquoted afterwards.
        path = scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or scope["path"]
        reply = await self._answer(request, request.method, path)
        headers = [(b"content-type", reply.content_type.encode()),
                   (b"content-length", str(len(reply.body)).encode())]
        if self.cors:
            cors = [CORS_ORIGIN]
            if request.method == "OPTIONS" and _WEB_ORIGIN.match(request.headers.get("origin",
                                                                                     "")):
                cors += CORS_PREFLIGHT
            headers += [(name.lower().encode(), value.encode()) for name, value in cors]
        if reply.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body",
                    "body": b"" if request.method == "HEAD" else reply.body})

    async def _answer(self, request: Request, method: str, path: str) -> _Reply:
        if self.cors and method == "OPTIONS":
            return _Reply(200, b"", "text/plain")
        if V1_PATH.fullmatch(path):
            try:
                body = (await read_body(request, self.max_body_bytes)
                        if method in ("POST", "PUT", "PATCH") else b"")
            except BodyTooLarge as err:
                # The unread rest of the body must not be taken for a request: close.
                return _error(ServingError(
                    Code.RESOURCE_EXHAUSTED,
                    f"{err} is larger than the limit of {self.max_body_bytes} bytes "
                    "(--rest_api_max_body_bytes); send fewer instances per request"),
                    413, close=True)
            except BadBody as err:
                return _error(invalid_argument(str(err)), close=True)
            return await self._run_v1(method, path, body)
        if path == "/healthz" and method == "GET":
            return _Reply(200, rest_json.dumps({"status": "alive"}))
        if path == "/readyz" and method == "GET":
            waiting = self.core.manager.not_ready()
            return _Reply(200 if not waiting else 503,
                          rest_json.dumps({"ready": not waiting, "not_ready": waiting}))
        if (self.monitoring_path and path == self.monitoring_path and method == "GET"
                and self.core.metrics is not None):
            page = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.core.metrics.render_prometheus)
            return _Reply(200, page.encode(), PROMETHEUS_TYPE)
        return _error(ServingError(
            Code.NOT_FOUND, f"Not found: {method} {path}; the API is under /v1/models"))

    async def _run_v1(self, method: str, path: str, body: bytes) -> _Reply:
        """Run a /v1 request on the thread pool, or answer 504 once its time is up.

        A model request first waits for its model's admission (on the event loop, holding no
        thread); at the timeout its run is cancelled, and the model's slot is freed only when
        the run has really ended.
        """
        deadline = (None if self.timeout_seconds is None
                    else time.monotonic() + self.timeout_seconds)
        slot = None
        admission = self.core.admission
        match = PREDICTION_PATH.fullmatch(path) if method == "POST" else None
        if match and admission is not None:
            started = time.perf_counter()
            try:
                slot = await admission.enter_async(unquote(match.group(1)), deadline)
            except ServingError as err:
                # Refused before it ran: counted here, as gRPC counts its refusals (its
                # admission waits inside `track`), with the method as the URL spells it.
                self.core.record(match.group(4), "REST", unquote(match.group(1)),
                                 err.code.name, time.perf_counter() - started)
                if err.code == Code.DEADLINE_EXCEEDED:
                    return _error(err, close=True)
                return _error(err)
        token = RunToken(f"{method} {path}", deadline)
        future = self.executor.submit(self._v1_reply, method, path, body, token)
        if slot is not None:
            future.add_done_callback(lambda _: slot.release())
        work = asyncio.wrap_future(future)
        if deadline is None:
            return await work
        done, _ = await asyncio.wait({work}, timeout=max(0.0, deadline - time.monotonic()))
        if work in done:
            return work.result()
        error = ServingError(
            Code.DEADLINE_EXCEEDED,
            f"Deadline exceeded: the request took longer than "
            f"{self.timeout_seconds * 1000:.0f} ms (--rest_api_timeout_in_ms)")
        token.cancel(error.code, error.message)  # stops its TensorFlow run (cancellation.py)
        return _error(error, close=True)

    def _v1_reply(self, method: str, path: str, body: bytes, token: RunToken) -> _Reply:
        try:
            with request_scope(token):
                check_not_cancelled()  # waited for a thread past its deadline
                return _Reply(200, rest_json.dumps(self._v1(method, path, body)))
        except BaseException as err:
            return _error(as_serving_error(err))

    def close(self) -> None:
        """Stop the thread pool (requests still running finish in the background)."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- the v1 API ------------------------------------------------------------------------

    def _v1(self, http_method: str, path: str, body: bytes) -> Any:
        core = self.core
        match = PREDICTION_PATH.fullmatch(path) if http_method == "POST" else None
        if match:
            name, version, label, method = match.groups()
            spec = model_spec(name, version, label)
            handler = {"predict": self._predict, "classify": self._classify,
                       "regress": self._regress}[method.lower()]
            # TF's REST entry point labels latency with the method as the URL spells it.
            with core.track(method, "REST", spec.name):
                return handler(spec, body)
        match = STATUS_PATH.fullmatch(path) if http_method == "GET" else None
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
        raise invalid_argument(f"Malformed request: {http_method} {path}")

    def _parsing(self, body: bytes) -> Any:
        """One big body parsed at a time: json.loads of tens of MB holds the GIL in one C call,
        and several back to back would keep the event loop (and /healthz) waiting for seconds."""
        return self._big_parse if len(body) > BIG_BODY_BYTES else contextlib.nullcontext()

    def _predict(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        core = self.core
        with self._parsing(body):
            document = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(document)
        with core.acquire(spec) as servable:
            name = signature_name or "serving_default"
            signature = servable.signature_defs.get(name)
            if signature is None:
                raise invalid_argument(f"Serving signature name: \"{name}\" not found in "
                                       f"signature def. This model has: "
                                       f"{', '.join(sorted(servable.signature_defs))}")
            with self._parsing(body):
                inputs, request_format = rest_json.predict_inputs(document, signature, name)
            _, outputs = core.predict(servable, signature_name, inputs)
        return rest_json.predict_response(outputs, request_format)

    def _classify(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        return self._on_examples(spec, body, "classify", self.core.classify,
                                 rest_json.classify_response)

    def _regress(self, spec: model_pb2.ModelSpec, body: bytes) -> Any:
        return self._on_examples(spec, body, "regress", self.core.regress,
                                 rest_json.regress_response)

    def _on_examples(self, spec: model_pb2.ModelSpec, body: bytes, kind: str,
                     run: Callable[..., tuple[str, Any]], render: Callable[[Any], Any]) -> Any:
        """Classify or regress the body's examples with a signature; the JSON answer.

        Args:
            spec: the model (and version) the URL names.
            body: the request body.
            kind: "classify" or "regress", as the URL says.
            run: `ServingCore.classify` or `ServingCore.regress`.
            render: the JSON form of its result.
        """
        document = rest_json.parse_body(body)
        signature_name = rest_json.signature_name(document)
        request_input = rest_json.examples_input(document, kind)
        with self.core.acquire(spec) as servable:
            _, result = run(servable, signature_name, request_input)
        return render(result)

    def _metadata(self, spec: model_pb2.ModelSpec) -> Any:
        core = self.core
        with core.acquire(spec) as servable:
            return {
                "model_spec": rest_json.proto_json(core.response_spec(servable, None)),
                "metadata": {"signature_def": rest_json.proto_json(
                    core.signature_def_map(servable))},
            }

    def _list_models(self) -> Any:
        core = self.core
        models = []
        for name in core.manager.model_names():
            try:
                status = rest_json.proto_json(core.model_status(model_pb2.ModelSpec(name=name)))
            except ServingError:
                status = {"model_version_status": []}
            models.append({"name": name, **status})
        return {"models": models}


class RestServer(HttpServer):
    """The REST API on its port.

    Args:
        core: the server core.
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        timeout_ms: answer 504 when a request takes longer; 0 for no limit.
        max_body_bytes: answer 413 to bodies (after gzip decompression) larger than this.
        monitoring_path: the Prometheus page's path, or None when monitoring is off.
        read_timeout_s: a whole request must arrive within this many seconds of the connection
            opening or of the previous answer; then the connection is closed.
        num_threads: requests processed at the same time (--rest_api_num_threads).
        cors: TF Serving's CORS support (--rest_api_enable_cors_support).
        ssl_context: serve HTTPS with this context, or None.
    """

    def __init__(self, core: ServingCore, host: str, port: int, *, timeout_ms: int = 30000,
                 max_body_bytes: int = 64 << 20, monitoring_path: str | None = None,
                 read_timeout_s: float = 120.0, num_threads: int = 8, cors: bool = False,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.api = RestApi(core, timeout_ms=timeout_ms, max_body_bytes=max_body_bytes,
                           monitoring_path=monitoring_path, num_threads=num_threads, cors=cors)
        super().__init__(self.api, host, port, read_timeout_s=read_timeout_s,
                         ssl_context=ssl_context, server_name="rnnkit-model-server")

    def stop(self, grace_seconds: float) -> bool:
        """See `HttpServer.stop`; also ends the request thread pool."""
        try:
            return super().stop(grace_seconds)
        finally:
            self.api.close()
