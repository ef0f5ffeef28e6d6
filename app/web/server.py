"""The web app's HTTP server: pages, static files, run-dir plots and the JSON API."""

from __future__ import annotations

import json
import logging
import mimetypes
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from app.errors import UserError
from app.web import runs as run_dirs
from app.web.api import WebApi
from app.web.errors import ApiError, bad_request
from app.web.pages import PAGE_BY_SLUG, PAGES, render_page

log = logging.getLogger("app.web.server")

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 256 * 1024
MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Scripts and styles only from this app; uploaded images are shown through blob: URLs.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}


def _static_files() -> dict[str, Path]:
    """URL name -> file for every file the app ships in static/ (nothing else is served)."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and not p.name.startswith(".")}


class WebHandler(BaseHTTPRequestHandler):
    """Routes one request; the server's `api` attribute answers the JSON calls."""

    server: WebServer
    server_version = "rnnkit-web"
    protocol_version = "HTTP/1.1"
    # A client that stops sending mid-request frees its thread after this many seconds.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to our logger instead of stderr."""
        log.debug("%s %s", self.address_string(), format % args)

    # -- responses ------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any) -> None:
        body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", {"Cache-Control": "no-store"})

    def _send_error(self, err: ApiError) -> None:
        self._send_json(err.status, err.payload())

    def _not_found(self) -> None:
        self._send_error(ApiError(404, "not_found", f"nothing at {urlsplit(self.path).path}",
                                  "see the pages in the navigation bar"))

    def _send_file(self, path: Path, content_type: str | None = None) -> None:
        kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith(("javascript", "json")):
            kind = kind.split(";")[0] + "; charset=utf-8"
        self._send(200, path.read_bytes(), kind, {"Cache-Control": "no-cache"})

    # -- requests -------------------------------------------------------------------------------

    def _read_body(self, limit: int) -> bytes:
        """The request body, refusing bodies without a length or longer than `limit`."""
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True  # a chunked body would be left unread
            raise ApiError(411, "length_required", "the request has no Content-Length",
                           "send the body with a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            self.close_connection = True
            raise bad_request(f"Content-Length {length!r} is not a byte count")
        if size > limit:
            self.close_connection = True  # the unread body must not be taken for a request
            raise ApiError(413, "too_large", f"the request body is {size:,} bytes",
                           f"send at most {limit:,} bytes")
        return self.rfile.read(size)

    def _read_json(self) -> dict[str, Any]:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._read_body(MAX_JSON_BYTES)
        if kind != "application/json":
            raise ApiError(415, "unsupported_type", "the API takes JSON",
                           "send Content-Type: application/json")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise bad_request(f"the body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise bad_request("the body must be a JSON object", 'send {"text": "..."}')
        return data

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            self._get(path)
        except ApiError as err:
            self._send_error(err)
        except Exception:
            log.exception("GET %s failed", path)
            self._send_error(ApiError(500, "internal", "the web app failed on this request",
                                      "see the app's log (run it with -v for more)"))

    def _get(self, path: str) -> None:
        api = self.server.api
        if path == "/":
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", f"/{PAGES[0].slug}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.strip("/") in PAGE_BY_SLUG:
            self._send(200, self.server.page(path.strip("/")), "text/html; charset=utf-8",
                       {"Cache-Control": "no-cache"})
        elif path.startswith("/static/"):
            file = self.server.static.get(path.removeprefix("/static/"))
            self._send_file(file) if file else self._not_found()
        elif path.startswith("/runs/"):
            file = run_dirs.resolve_run_file(api.runs_dir, unquote(path.removeprefix("/runs/")))
            if file is None:
                self._not_found()
            else:
                self._send_file(file, run_dirs.CONTENT_TYPES[file.suffix.lower()])
        elif path == "/api/health":
            self._send_json(200, api.health())
        elif path == "/api/models":
            self._send_json(200, api.models())
        elif path == "/api/runs":
            self._send_json(200, api.runs())
        elif path in POST_ROUTES:
            raise ApiError(405, "method_not_allowed", f"{path} takes POST", "send a POST request")
        else:
            self._not_found()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path not in POST_ROUTES:
                self.close_connection = True  # its body is left unread
                self._not_found()
                return
            self._send_json(200, POST_ROUTES[path](self))
        except ApiError as err:
            self._send_error(err)
        except Exception:
            log.exception("POST %s failed", path)
            self._send_error(ApiError(500, "internal", "the web app failed on this request",
                                      "see the app's log (run it with -v for more)"))

    def _post_predict(self) -> dict[str, Any]:
        return self.server.api.predict(self._read_json())

    def _post_caption(self) -> dict[str, Any]:
        model = parse_qs(urlsplit(self.path).query).get("model", [None])[0]
        return self.server.api.caption(self._read_body(MAX_IMAGE_BYTES), model)


POST_ROUTES = {
    "/api/predict": WebHandler._post_predict,
    "/api/caption": WebHandler._post_caption,
}


class WebServer(ThreadingHTTPServer):
    """A threading HTTP server holding the app's API, pages and static files.

    Args:
        address: (host, port) to bind; port 0 picks a free one.
        api: answers the JSON calls.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: WebApi) -> None:
        super().__init__(address, WebHandler)
        self.api = api
        self.static = _static_files()
        self._pages = {slug: render_page(slug, api.server) for slug in PAGE_BY_SLUG}

    def page(self, slug: str) -> bytes:
        """The rendered HTML of one page."""
        return self._pages[slug]

    @property
    def url(self) -> str:
        """The base URL the server answers on."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def parse_server(address: str) -> tuple[str, int]:
    """Split `HOST:PORT` (the model server's gRPC address) into its parts.

    Args:
        address: e.g. `localhost:8500`; a bare host means port 8500.
    """
    host, sep, port = address.strip().rpartition(":")
    if not sep:
        host, port = address.strip(), "8500"
    host = host.strip("[]")  # [::1]:8500
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--server {address!r} is not HOST:PORT",
                        "pass the model server's gRPC address, e.g. --server localhost:8500")
    return host, int(port)


def make_server(server: str, host: str = "127.0.0.1", port: int = 8080,
                runs_dir: Path | str = "runs", timeout: float = 10.0,
                base_path: Path | str | None = None) -> WebServer:
    """Build the web app, bound and ready for serve_forever().

    Args:
        server: the model server's gRPC address, `HOST:PORT`.
        host: the interface to listen on (127.0.0.1 keeps it to this machine).
        port: the port to listen on; 0 picks a free one.
        runs_dir: where the run dirs are, for the results page.
        timeout: seconds to wait for the model server on each call.
        base_path: an exports folder whose models the app lists besides the registry's.
    """
    grpc_host, grpc_port = parse_server(server)

    def client_factory() -> Any:
        from serving.client import ServingClient  # imports the TF Serving protos: slow

        # No REST port: the app speaks gRPC only, as it would to tensorflow/serving.
        return ServingClient(host=grpc_host, grpc_port=grpc_port, rest_port=None, timeout=timeout)

    api = WebApi(client_factory, server, Path(runs_dir),
                 Path(base_path) if base_path is not None else None)
    try:
        return WebServer((host, port), api)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror}",
                        "pick another --port, or stop what is using it") from None
