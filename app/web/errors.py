"""The web app's errors: what the JSON API answers when a request cannot be served."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("app.web.errors")


class ApiError(Exception):
    """A request the API answers with an error status and a message the page shows as it is.

    Args:
        status: the HTTP status code.
        code: a short machine-readable reason (`server_unreachable`, `model_not_loaded`, ...).
        message: what went wrong.
        fix: what the user can do about it.
    """

    def __init__(self, status: int, code: str, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fix = fix

    def payload(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": {"code": self.code, "message": self.message, "fix": self.fix}}


def bad_request(message: str, fix: str = "") -> ApiError:
    """An ApiError for invalid input (HTTP 400).

    Args:
        message: what is wrong with the request.
        fix: how to send a valid one.
    """
    return ApiError(400, "bad_request", message, fix)


def _rpc_code(err: BaseException) -> str | None:
    """The status name of a failed call (e.g. NOT_FOUND), or None for other errors."""
    code = getattr(err, "code", None)
    return getattr(code(), "name", None) if callable(code) else None


def _rpc_details(err: BaseException) -> str:
    """The message a failed call carries, without the status code."""
    details = getattr(err, "details", None)
    return str(details() if callable(details) else err)


def unreachable(server: str) -> ApiError:
    """The error every page shows while the model server is down.

    Args:
        server: the model server's address as the user gave it.
    """
    return ApiError(
        503, "server_unreachable", f"model server not reachable at {server}",
        "start it with `rnnkit serve --model_config_file exports/models.config` "
        "(or `make run`), or point the app at it with `rnnkit app --server HOST:PORT`")


def upstream_error(err: BaseException, model: str, server: str) -> ApiError:
    """What the page should say about a failed call to the model server.

    Args:
        err: the serving client's error (it carries the gRPC status code and message).
        model: the model the call was for.
        server: the model server's address as the user gave it.
    """
    code = _rpc_code(err)
    text = _rpc_details(err)
    # CANCELLED: the channel was closed under a call in flight (see WebApi._call).
    if (code == "UNAVAILABLE" and "not reachable" in text) or code == "CANCELLED":
        return unreachable(server)
    if code == "UNAVAILABLE":
        return ApiError(503, "server_unavailable",
                        f"the model server cannot answer for '{model}' now: {text}",
                        "try again in a moment")
    if code == "NOT_FOUND":
        return ApiError(503, "model_not_loaded", f"model '{model}' is not loaded",
                        f"export it (`rnnkit export ...`) and add it to the model config of the "
                        f"server at {server}; the server says: {text}")
    if code == "DEADLINE_EXCEEDED":
        return ApiError(504, "timeout", f"model '{model}' did not answer in time: {text}",
                        "try again; a first request after loading can be slow")
    if code == "RESOURCE_EXHAUSTED":
        return ApiError(429, "overloaded", f"the model server is busy: {text}",
                        "try again in a moment")
    if code == "INVALID_ARGUMENT":
        return ApiError(400, "rejected", f"model '{model}' rejected the request: {text}")
    log.warning("model server call for %s failed: %s", model, text)
    return ApiError(502, "server_error", f"the model server failed on '{model}': {text}")
