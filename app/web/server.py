"""The web app's HTTP server: pages, static files, run-dir plots and the JSON API.

It runs on the model server's HTTP layer (serving.http_server: uvicorn), which gives it
keep-alive, read deadlines for slow clients, body limits, the security headers below on every
answer and a graceful stop. This module only routes requests to the pages and to WebApi.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from app.web import runs as run_dirs
from app.web.api import WebApi
from app.web.errors import ApiError, bad_request
from app.web.pages import PAGE_BY_SLUG, PAGES, render_page
from serving.errors import UserError
from serving.http_server import BadBody, BodyTooLarge, HttpServer, read_body

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


def _json_response(status: int, data: Any) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(body, status, {"Cache-Control": "no-store"},
                    media_type="application/json; charset=utf-8")


def _error_response(err: ApiError, close: bool = False) -> Response:
    response = _json_response(err.status, err.payload())
    if close:  # a body left unread must not be taken for the next request
        response.headers["Connection"] = "close"
    return response


def _file_response(path: Path, content_type: str | None = None) -> Response:
    kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind.endswith(("javascript", "json")):
        kind = kind.split(";")[0] + "; charset=utf-8"
    return Response(path.read_bytes(), 200, {"Cache-Control": "no-cache"}, media_type=kind)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing bodies longer than `limit` bytes."""
    try:
        return await read_body(request, limit, gzip=False)
    except BodyTooLarge:
        length = request.headers.get("content-length")
        size = f"{int(length):,} bytes" if length and length.isdigit() else "too large"
        raise ApiError(413, "too_large", f"the request body is {size}",
                       f"send at most {limit:,} bytes") from None
    except BadBody as err:
        raise bad_request(str(err)) from None


async def _read_json(request: Request) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await _read_body(request, MAX_JSON_BYTES)
    if kind != "application/json":
        raise ApiError(415, "unsupported_type", "the API takes JSON",
                       "send Content-Type: application/json")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad_request(f"the body is not valid JSON: {err}") from None
    except RecursionError:  # e.g. 100,000 nested [: within the size limit, past Python's stack
        raise bad_request("the body nests JSON too deeply", 'send {"text": "..."}') from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object", 'send {"text": "..."}')
    return data


# The JSON API's calls: (method, path) -> the WebApi method answering it, with the request's
# body as its arguments. The WebApi calls block (gRPC to the model server): they run on
# Starlette's thread pool.
async def _get_health(app: WebServer, request: Request) -> Any:
    return await run_in_threadpool(app.api.health)


async def _get_models(app: WebServer, request: Request) -> Any:
    return await run_in_threadpool(app.api.models)


async def _get_runs(app: WebServer, request: Request) -> Any:
    return await run_in_threadpool(app.api.runs)


async def _get_progress(app: WebServer, request: Request) -> Any:
    return await run_in_threadpool(app.api.progress)


async def _post_predict(app: WebServer, request: Request) -> Any:
    return await run_in_threadpool(app.api.predict, await _read_json(request))


async def _post_caption(app: WebServer, request: Request) -> Any:
    model = request.query_params.get("model")
    return await run_in_threadpool(app.api.caption,
                                   await _read_body(request, MAX_IMAGE_BYTES), model)


API_ROUTES: dict[tuple[str, str], Callable[[Any, Request], Awaitable[Any]]] = {
    ("GET", "/api/health"): _get_health,
    ("GET", "/api/models"): _get_models,
    ("GET", "/api/runs"): _get_runs,
    ("GET", "/api/progress"): _get_progress,
    ("POST", "/api/predict"): _post_predict,
    ("POST", "/api/caption"): _post_caption,
}


class WebServer(HttpServer):
    """The web app on the shared HTTP layer (serving.http_server): API, pages, static files.

    Args:
        address: (host, port) to bind; port 0 picks a free one.
        api: answers the JSON calls.
    """

    def __init__(self, address: tuple[str, int], api: WebApi) -> None:
        self.api = api
        self.static = _static_files()
        self._pages = {slug: render_page(slug, api.server) for slug in PAGE_BY_SLUG}
        # A client that stops sending mid-request frees its connection after 30 s.
        super().__init__(self._asgi, address[0], address[1], read_timeout_s=30.0,
                         headers=SECURITY_HEADERS, server_name="rnnkit-web")

    def page(self, slug: str) -> bytes:
        """The rendered HTML of one page."""
        return self._pages[slug]

    async def _asgi(self, scope: dict, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        path = request.url.path
        try:
            route = API_ROUTES.get((method, path))
            if route is not None:
                return _json_response(200, await route(self, request))
            allowed = sorted({m for m, p in API_ROUTES if p == path})
            if allowed:  # an API path asked with another method (PUT, DELETE, OPTIONS, ...)
                raise ApiError(405, "method_not_allowed",
                               f"{path} takes {' or '.join(allowed)}",
                               f"send a {allowed[0]} request")
            if method == "GET":
                return self._get(path)
            return _error_response(self._not_found(path), close=True)
        except ApiError as err:
            return _error_response(err, close=err.status in (411, 413))
        except Exception:
            log.exception("%s %s failed", request.method, path)
            return _error_response(ApiError(500, "internal", "the web app failed on this request",
                                            "see the app's log (run it with -v for more)"))

    @staticmethod
    def _not_found(path: str) -> ApiError:
        return ApiError(404, "not_found", f"nothing at {path}",
                        "see the pages in the navigation bar")

    def _get(self, path: str) -> Response:
        if path == "/":
            return Response(b"", 302, {"Location": f"/{PAGES[0].slug}"})
        if path.strip("/") in PAGE_BY_SLUG:
            return Response(self.page(path.strip("/")), 200, {"Cache-Control": "no-cache"},
                            media_type="text/html; charset=utf-8")
        if path.startswith("/static/"):
            file = self.static.get(path.removeprefix("/static/"))
            if file is not None:
                return _file_response(file)
        elif path.startswith("/runs/"):
            file = run_dirs.resolve_run_file(self.api.runs_dir, path.removeprefix("/runs/"))
            if file is not None:
                return _file_response(file, run_dirs.CONTENT_TYPES[file.suffix.lower()])
        raise self._not_found(path)


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
