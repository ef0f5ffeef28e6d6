"""The one HTTP layer under the model server's REST API and the web app: uvicorn serving ASGI apps.

uvicorn (with httptools' parser) does the HTTP/1.1 work: keep-alive, chunked bodies, pipelining,
TLS, refusing malformed framing with 400, and a graceful stop that closes idle connections and
lets requests in progress finish. This module adds what both apps need on top of it:

- a read deadline: a request (line, headers and body) must arrive whole within `read_timeout_s`
  of the connection opening or of the previous answer, so slow or silent clients (slowloris)
  cannot hold the server; the connection is closed at the deadline;
- `read_body`: the body with a size limit (before and after gzip decompression);
- JSON answers for the shutdown window and for anything an app lets escape, and fixed headers
  (the web app's security headers) on every answer;
- a socketserver-like face (`serve_forever`, `shutdown`, `server_close`, `server_address`) and a
  background-thread one (`start`, `stop(grace)`).

It imports neither TensorFlow nor gRPC: the web app starts without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import tempfile
import threading
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import uvicorn
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("serving.http_server")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]],
                   Awaitable[None]]
JSON_TYPE = "application/json"


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (not on Windows), else asyncio's own.

    uvloop (libuv) does less Python work per request than asyncio's selector loop, and each
    REST request makes two trips (loop -> thread pool -> loop): with it REST answers 1.1-1.2x
    the requests a second at 1 to 32 clients (docs/serving.md).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class BodyTooLarge(Exception):
    """A request body exceeds the limit (HTTP 413)."""


class BadBody(Exception):
    """A request body that cannot be read: bad Content-Length, bad gzip, unknown encoding."""


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=31)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as err:
        raise BadBody(f"request body is not valid gzip data: {err}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise BodyTooLarge(f"request body of more than {limit} bytes once decompressed")
    if not decompressor.eof:
        raise BadBody("request body is truncated gzip data")
    return data


async def read_body(request: Request, limit: int, *, gzip: bool = True) -> bytes:
    """The request body, at most `limit` bytes (also after gzip decompression).

    Args:
        request: the request.
        limit: the largest body accepted, in bytes.
        gzip: accept `Content-Encoding: gzip` bodies (decompressed here).

    Raises:
        BodyTooLarge: the body (or its decompressed form) is larger than `limit`.
        BadBody: a Content-Length that is no number, bad gzip data or another encoding.
        ClientDisconnect: the client left before the body came.
    """
    length = request.headers.get("content-length")
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            raise BadBody("Content-Length is not a number") from None
        if size > limit:
            raise BodyTooLarge(f"request body of {size} bytes")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(f"request body of more than {limit} bytes")
        parts.append(chunk)
    body = b"".join(parts)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding == "gzip" and gzip:
        return _gunzip(body, limit)
    accepted = "gzip or none" if gzip else "no Content-Encoding (an uncompressed body)"
    raise BadBody(f"unsupported Content-Encoding: {encoding}; send {accepted}")


def json_bytes(document: Any) -> bytes:
    """A JSON document as UTF-8 bytes."""
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


async def send_json(send: Callable[[dict], Awaitable[None]], status: int, document: Any,
                    close: bool = False) -> None:
    """Answer with a JSON body straight over ASGI.

    Args:
        send: the ASGI send callable.
        status: the HTTP status.
        document: the JSON body.
        close: ask the client to close the connection afterwards.
    """
    body = json_bytes(document)
    headers = [(b"content-type", JSON_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _deadline_protocol(read_timeout_s: float) -> type:
    """uvicorn's httptools protocol with a deadline for each whole request to arrive."""

    class DeadlineProtocol(HttpToolsProtocol):
        # Armed when the connection opens and after each answer; disarmed once a whole
        # request has arrived. uvicorn's own keep-alive timer restarts on every byte, which a
        # client trickling its headers exploits; this one does not.
        _read_deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._read_deadline = self.loop.call_later(read_timeout_s, self._read_expired)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_expired(self) -> None:
            self._read_deadline = None
            if not self.transport.is_closing():
                log.info("closing a connection from %s: no whole request within %.0f s",
                         "{}:{}".format(*self.client) if self.client else "?", read_timeout_s)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

    return DeadlineProtocol


class _Plumbing:
    """ASGI middleware: counts requests in flight, refuses new ones while stopping, adds fixed
    headers to every answer, and turns an escaped exception into a JSON 500."""

    def __init__(self, app: ASGIApp, server: HttpServer, headers: Mapping[str, str]) -> None:
        self.app = app
        self.server = server
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, v in headers.items()]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.server.stopping:
            await send_json(send, 503, {"error": "the server is shutting down"}, close=True)
            return
        started = False

        async def send_with_headers(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if self.headers:
                    message = {**message, "headers": [*message.get("headers", ()),
                                                      *self.headers]}
            await send(message)

        self.server.in_flight += 1
        try:
            await self.app(scope, receive, send_with_headers)
        except asyncio.CancelledError:
            self.server.abandoned += 1  # cut off by a stop whose grace ran out
            raise
        except ClientDisconnect:
            pass
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(send_with_headers, 500,
                                {"error": "the server failed on this request; see its log"},
                                close=True)
        finally:
            self.server.in_flight -= 1


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; OSError if the port is taken (a second server never starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio's own loop turns Nagle's algorithm off (TCP_NODELAY) only
    # on sockets that say they are TCP (uvloop always does), and accepted sockets inherit this
    # one's protocol. With Nagle on, an answer written as headers then body waits ~40 ms for
    # the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart past TIME_WAIT
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """An ASGI app served by uvicorn on one port.

    Args:
        app: the ASGI application.
        host: the address to bind.
        port: the port to bind; 0 picks a free one.
        read_timeout_s: a whole request must arrive within this many seconds of the connection
            opening or of the previous answer (also the keep-alive idle limit).
        ssl_context: serve HTTPS with this context, or None for plain HTTP.
        headers: fixed headers added to every answer.
        server_name: the Server header.
    """

    def __init__(self, app: ASGIApp, host: str, port: int, *, read_timeout_s: float = 120.0,
                 ssl_context: ssl.SSLContext | None = None,
                 headers: Mapping[str, str] | None = None,
                 server_name: str = "rnnkit") -> None:
        self.stopping = False
        self.in_flight = 0
        self.abandoned = 0
        self.ssl_context = ssl_context
        self.socket = _bind(host, port)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            _Plumbing(app, self, headers or {}), http=_deadline_protocol(read_timeout_s),
            lifespan="off", log_config=None, access_log=False, server_header=False,
            headers=[("server", server_name)], timeout_keep_alive=max(1, int(read_timeout_s)))
        config.load()
        config.ssl = ssl_context  # uvicorn would only take file names; we hold an SSLContext
        self._server = uvicorn.Server(config)
        self._done = threading.Event()
        self._done.set()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL the server answers on."""
        host, port = self.server_address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve in this thread until `shutdown` or `stop` (socketserver's interface).

        Args:
            poll_interval: unused; uvicorn checks for a stop request every 0.1 s.
        """
        self._done.clear()
        try:
            with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[self.socket]))
        finally:
            self._done.set()

    def start(self) -> None:
        """Serve in a background thread."""
        self._done.clear()
        self._thread = threading.Thread(target=self.serve_forever, name="http-server",
                                        daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and wait until `serve_forever` returned (requests get 5 s to finish)."""
        self.stop(5.0)

    def stop(self, grace_seconds: float) -> bool:
        """Stop accepting connections and let requests in progress finish.

        Args:
            grace_seconds: the longest wait for requests in progress; then they are cut off.

        Returns:
            True when every request in progress was answered in time.
        """
        self.stopping = True
        self._server.config.timeout_graceful_shutdown = max(0.1, grace_seconds)
        self._server.should_exit = True
        self._done.wait(grace_seconds + 5)
        if self._thread is not None:
            self._thread.join(1)
        self.server_close()
        return self.abandoned == 0 and self.in_flight == 0

    def server_close(self) -> None:
        """Close the listening socket (socketserver's interface)."""
        with contextlib.suppress(OSError):
            self.socket.close()


def ssl_context(server_key: str, server_cert: str, custom_ca: str = "",
                client_verify: bool = False) -> ssl.SSLContext:
    """A server TLS context from PEM text, as an SSLConfig holds it.

    Args:
        server_key: the private key, PEM.
        server_cert: the certificate (chain), PEM.
        custom_ca: CAs that sign client certificates, PEM; '' for none.
        client_verify: require a client certificate signed by `custom_ca` (mutual TLS).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # load_cert_chain reads files only: write the PEM text to a private temporary folder.
    with tempfile.TemporaryDirectory(prefix="rnnkit-tls-") as folder:
        key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        for path, text in ((key, server_key), (cert, server_cert)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as file:
                file.write(text)
        context.load_cert_chain(cert, key)
    if custom_ca:
        context.load_verify_locations(cadata=custom_ca)
    context.verify_mode = ssl.CERT_REQUIRED if client_verify else ssl.CERT_NONE
    return context
