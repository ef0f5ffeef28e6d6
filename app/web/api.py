"""The web app's JSON API: each call checks its input, asks the model server, shapes the answer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.errors import UserError
from app.web import runs as run_dirs
from app.web.errors import ApiError, bad_request, unreachable, upstream_error

log = logging.getLogger("app.web.api")

SENTIMENT_MODELS = ("sentiment", "sentiment_bow")
TRANSLATOR_MODEL = "translator"
CAPTIONER_MODEL = "captioner"
# What the models page asks the server about.
KNOWN_MODELS = (*SENTIMENT_MODELS, TRANSLATOR_MODEL, CAPTIONER_MODEL)

MAX_TEXT_CHARS = 20_000
# JPEG, PNG: what the captioner's decode_image accepts and what the page offers.
IMAGE_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


class WebApi:
    """What the pages ask for, answered through the model server's gRPC API.

    Args:
        client_factory: builds the serving client on first use (importing it pulls in the
            TensorFlow Serving protos, so the web server starts without waiting for that).
        server: the model server's address as the user gave it, for messages.
        runs_dir: where the run dirs are, for the results page.
    """

    def __init__(self, client_factory: Callable[[], Any], server: str, runs_dir: Path) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self.server = server
        self.runs_dir = runs_dir

    def client(self) -> Any:
        """The serving client, built once."""
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    # -- calls to the model server ---------------------------------------------------------------

    def _call(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call one client method, turning every failure into an ApiError."""
        client = self.client()
        try:
            return getattr(client, method)(*args, **kwargs)
        except UserError as err:  # the client's ServerReplyError carries the gRPC status code
            error = upstream_error(err, model, self.server)
        except ValueError as err:
            if "closed channel" not in str(err):
                raise
            error = unreachable(self.server)  # another request closed the channel, see below
        if error.code == "server_unreachable":
            # gRPC waits out a growing back-off (up to minutes) before it tries a failed
            # connection again; closing the channel makes the next call try at once, so a model
            # server started after the app is seen on the next click.
            client.close()
        raise error

    def _predict(self, model: str, inputs: Mapping[str, Any],
                 signature_name: str | None = None) -> tuple[Mapping[str, Any], float]:
        """Run one Predict call; returns the outputs and the milliseconds it took."""
        start = time.perf_counter()
        outputs = self._call(model, "predict", model, dict(inputs), signature_name=signature_name)
        return outputs, round((time.perf_counter() - start) * 1000, 1)

    # -- endpoints ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Whether the model server answers; raises the unreachable error when it does not."""
        try:
            self._call(KNOWN_MODELS[0], "status", KNOWN_MODELS[0])
        except ApiError as err:
            if err.code == "server_unreachable":
                raise
        return {"server": self.server, "reachable": True}

    def models(self) -> dict[str, Any]:
        """The known models with their versions, states and signatures.

        TF Serving's gRPC API has no call listing models, so each known name is asked for.
        """
        return {"server": self.server, "models": [self._model_status(n) for n in KNOWN_MODELS]}

    def _model_status(self, name: str) -> dict[str, Any]:
        """One model's versions and state; NOT_LOADED when the server does not know it."""
        try:
            status = self._call(name, "status", name)
        except ApiError as err:
            if err.code != "model_not_loaded":
                raise
            return {"name": name, "state": "NOT_LOADED", "versions": [], "signatures": [],
                    "message": "not served: export it and add it to the model config"}
        versions = _versions(status)
        state = "AVAILABLE" if any(v["state"] == "AVAILABLE" for v in versions) else (
            versions[0]["state"] if versions else "UNKNOWN")
        signatures: list[str] = []
        if state == "AVAILABLE":
            try:
                signatures = _signature_names(self._call(name, "metadata", name))
            except ApiError as err:
                log.debug("no metadata for %s: %s", name, err.message)
        return {"name": name, "state": state, "versions": versions, "signatures": signatures,
                "message": ""}

    def sentiment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A review's probability of being positive and its label.

        Args:
            body: `{"text": review, "model": one of SENTIMENT_MODELS (default sentiment)}`.
        """
        text = _text_field(body, "review")
        model = body.get("model") or SENTIMENT_MODELS[0]
        if model not in SENTIMENT_MODELS:
            raise bad_request(f"unknown sentiment model {model!r}",
                              f"use one of {', '.join(SENTIMENT_MODELS)}")
        outputs, elapsed = self._predict(model, {"text": [text]})
        probability = round(float(_first(outputs, "probability", model)), 6)
        label = _first(outputs, "label", model)
        return {"model": model, "probability": probability, "label": _as_text(label),
                "elapsed_ms": elapsed, "version": _version(outputs)}

    def translate(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """An English translation of a Spanish sentence, with its attention weights.

        Args:
            body: `{"text": Spanish sentence}`.
        """
        text = _text_field(body, "sentence")
        outputs, elapsed = self._predict(TRANSLATOR_MODEL, {"text": [text]})
        result = {"model": TRANSLATOR_MODEL, "elapsed_ms": elapsed, "version": _version(outputs),
                  "translation": _as_text(_first(outputs, "translation", TRANSLATOR_MODEL)),
                  "attention": None, "attention_note": None}
        try:
            attention, _ = self._predict(TRANSLATOR_MODEL, {"text": [text]}, ATTENTION_SIGNATURE)
            result["attention"] = _attention(attention)
        except ApiError as err:
            if err.code == "server_unreachable":
                raise
            result["attention_note"] = f"no attention heat map: {err.message}"
        return result

    def caption(self, image: bytes) -> dict[str, Any]:
        """A caption for an image, sent to the captioner as its raw bytes.

        Args:
            image: the JPEG or PNG file's contents.
        """
        if not image:
            raise bad_request("the request holds no image", "choose a JPEG or PNG file")
        if not any(image.startswith(magic) for magic in IMAGE_SIGNATURES):
            raise ApiError(415, "unsupported_image", "the file is not a JPEG or PNG image",
                           "choose a .jpg or .png file")
        outputs, elapsed = self._predict(CAPTIONER_MODEL, {"image_bytes": [image]})
        return {"model": CAPTIONER_MODEL, "elapsed_ms": elapsed, "version": _version(outputs),
                "caption": _as_text(_first(outputs, "caption", CAPTIONER_MODEL))}

    def runs(self) -> dict[str, Any]:
        """Every run dir's summaries and plots, for the results page."""
        return {"runs_dir": str(self.runs_dir), "runs": run_dirs.list_runs(self.runs_dir)}


# The translator's second signature (pipelines/translation.py): text [1] in; translation [1],
# source_tokens [1, source_len], output_tokens [1, out_len], attention [1, out_len, source_len] out.
ATTENTION_SIGNATURE = "translate_with_attention"


def _text_field(body: Mapping[str, Any], what: str) -> str:
    """The request's non-empty `text`, within MAX_TEXT_CHARS."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad_request(f"no {what} given", f"type a {what} and try again")
    if len(text) > MAX_TEXT_CHARS:
        raise bad_request(f"the {what} is {len(text):,} characters long",
                          f"keep it under {MAX_TEXT_CHARS:,}")
    return text.strip()


def _first(outputs: Mapping[str, Any], name: str, model: str) -> Any:
    """The first element of a batch output (the page always sends a batch of one)."""
    if name not in outputs:
        raise ApiError(502, "unexpected_output",
                       f"model '{model}' returned no '{name}' output (it has {sorted(outputs)})",
                       "serve a model exported by `rnnkit export`")
    value = outputs[name]
    while hasattr(value, "__len__") and not isinstance(value, str | bytes):
        value = value[0]
    return value.item() if hasattr(value, "item") else value


def _as_text(value: Any) -> str:
    """A string output as text (TensorFlow hands strings over as UTF-8 bytes)."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _to_list(value: Any) -> Any:
    """Numpy arrays and scalars as plain JSON-able lists and numbers, bytes as text."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        return [_to_list(v) for v in value]
    return _as_text(value) if isinstance(value, bytes) else value


def _attention(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The attention signature's outputs for its one sentence: weights rows and their tokens."""
    for name in ("attention", "source_tokens", "output_tokens"):
        if name not in outputs:
            raise ApiError(502, "unexpected_output",
                           f"the {ATTENTION_SIGNATURE} signature returned no '{name}' output",
                           "serve a translator exported by `rnnkit export translation`")
    return {"weights": _to_list(outputs["attention"])[0],
            "source_tokens": _to_list(outputs["source_tokens"])[0],
            "output_tokens": _to_list(outputs["output_tokens"])[0]}


def _version(outputs: Any) -> str | None:
    """The model version that answered, when the client reports it."""
    version = getattr(outputs, "version", None)
    return str(version) if version is not None else None


def _versions(status: Any) -> list[dict[str, Any]]:
    """Version rows from a GetModelStatus answer (TF Serving's REST JSON shape)."""
    rows = []
    entries = status.get("model_version_status", []) if isinstance(status, Mapping) else []
    for entry in entries:
        detail = entry.get("status") or {}
        message = detail.get("error_message") or ""
        if detail.get("error_code") not in (None, "", "OK") and not message:
            message = str(detail.get("error_code"))
        rows.append({"version": str(entry.get("version", "")),
                     "state": str(entry.get("state", "UNKNOWN")), "message": message})
    rows.sort(key=lambda r: int(r["version"]) if r["version"].isdigit() else -1, reverse=True)
    return rows


def _signature_names(metadata: Any) -> list[str]:
    """Signature names from a GetModelMetadata answer (TF Serving's REST JSON shape)."""
    if not isinstance(metadata, Mapping):
        return []
    defs = metadata.get("metadata", {}).get("signature_def", {})
    defs = defs.get("signature_def", defs) if isinstance(defs, Mapping) else {}
    return sorted(name for name in defs if not name.startswith("__"))
