"""The web app's JSON API: each call checks its input, asks the model server, shapes the answer.

Models are found, not named: every task's served model name in the task registry, plus every
model exported under the app's --base-path, is asked for; each one's kind (classifier, tagger,
text-to-text, captioner) is read from its signatures (app.model_kinds), and the answer is shaped
for that kind's view.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app import model_kinds
from app.run_progress import read_progress
from app.web import runs as run_dirs
from app.web.errors import ApiError, bad_request, unreachable, upstream_error
from serving.errors import UserError

log = logging.getLogger("app.web.api")

MAX_TEXT_CHARS = 20_000
# JPEG, PNG: what the captioner's decode_image accepts and what the page offers.
IMAGE_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
# What TF Serving and serving.export accept as a model name.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The kinds the page has a view for; a model of another kind is listed without one.
VIEWS = ("classify", "tag", "seq2seq", "caption", "language_model")


def known_model_names(base_path: Path | None) -> list[str]:
    """The model names to ask the server about: the registry's, then those exported.

    TF Serving's APIs cannot list models, so the app asks for these names.

    Args:
        base_path: an exports folder in TF Serving's layout (`<base>/<name>/<version>/`), or
            None for the registry's names only.
    """
    from pipelines.tasks import served_model_names
    from serving.models_config_writer import exported_models

    names = served_model_names()
    if base_path is not None:
        names += sorted(exported_models(base_path))
    return list(dict.fromkeys(names))


class WebApi:
    """What the pages ask for, answered through the model server's gRPC API.

    Args:
        client_factory: builds the serving client on first use (importing it pulls in the
            TensorFlow Serving protos, so the web server starts without waiting for that).
        server: the model server's address as the user gave it, for messages.
        runs_dir: where the run dirs are, for the results page.
        base_path: the exports folder whose models are listed besides the registry's; None
            for the registry's only.
    """

    def __init__(self, client_factory: Callable[[], Any], server: str, runs_dir: Path,
                 base_path: Path | None = None) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self.server = server
        self.runs_dir = runs_dir
        self.base_path = base_path

    def model_names(self) -> list[str]:
        """The models the app asks the server about (read again on every call)."""
        return known_model_names(self.base_path)

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
        name = self.model_names()[0]
        try:
            self._call(name, "status", name)
        except ApiError as err:
            if err.code == "server_unreachable":
                raise
        return {"server": self.server, "reachable": True}

    def models(self) -> dict[str, Any]:
        """Every known model with its versions, states, signatures and kind."""
        job = read_progress(self.runs_dir) or {"tasks": []}
        # A model `rnnkit run` is still training says so instead of "not served".
        coming = {t["model"]: t["label"] for t in job["tasks"] if t["state"] != "done"}
        models = [self._model_status(n) for n in self.model_names()]
        for model in models:
            if model["state"] == "NOT_LOADED" and model["name"] in coming:
                model["message"] = f"not served yet: rnnkit run: {coming[model['name']]}"
        return {"server": self.server, "views": list(VIEWS), "models": models}

    def _model_status(self, name: str) -> dict[str, Any]:
        """One model's versions, state and kind; NOT_LOADED when the server does not know it."""
        try:
            status = self._call(name, "status", name)
        except ApiError as err:
            if err.code != "model_not_loaded":
                raise
            return {"name": name, "state": "NOT_LOADED", "versions": [], "signatures": [],
                    "kind": None, "message": "not served: export it and add it to the model "
                                             "config"}
        versions = _versions(status)
        state = "AVAILABLE" if any(v["state"] == "AVAILABLE" for v in versions) else (
            versions[0]["state"] if versions else "UNKNOWN")
        signatures: dict[str, Any] = {}
        if state == "AVAILABLE":
            try:
                signatures = self._signatures(name)
            except ApiError as err:
                if err.code == "server_unreachable":
                    raise
                log.debug("no metadata for %s: %s", name, err.message)
        kind = model_kinds.model_kind(signatures)
        message = "" if kind or state != "AVAILABLE" else (
            "its signatures match no view; call it with `rnnkit predict`")
        return {"name": name, "state": state, "versions": versions,
                "signatures": sorted(signatures), "kind": kind, "message": message}

    def _signatures(self, model: str) -> dict[str, Any]:
        """The served version's signatures (inputs and outputs by name)."""
        return model_kinds.signature_defs(self._call(model, "metadata", model))

    def _kind(self, model: str) -> tuple[str | None, dict[str, Any]]:
        """A served model's kind and signatures."""
        signatures = self._signatures(model)
        return model_kinds.model_kind(signatures), signatures

    def predict(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Run a text model and answer in its kind's shape.

        Args:
            body: `{"model": name, "text": the input text}`.

        Returns:
            `model`, `kind`, `version`, `elapsed_ms` and, by kind: classify: `label`,
            `probability`, `classes` ([{"name", "probability"}], most likely first); tag:
            `tokens`, `tags`; seq2seq: `output_text`, `attention` (or None and
            `attention_note`); language_model: `next_words` ([{"word", "probability"}]) for
            the body's `mode` "next" (the default), `continuation` for "continue".
        """
        model = _model_field(body)
        text = _text_field(body, "text")
        kind, signatures = self._kind(model)
        if kind == "caption":
            raise bad_request(f"model '{model}' captions images",
                              f"send the image's bytes to /api/caption?model={model}")
        if kind not in VIEWS:
            raise bad_request(f"model '{model}' is not a classifier, tagger or text-to-text "
                              "model the page knows", "call it with `rnnkit predict`")
        started = time.perf_counter()
        if kind == "language_model":
            return self._language_model(model, text, body.get("mode", "next"), started)
        outputs, _ = self._predict(model, {model_kinds.TEXT_INPUT: [text]})
        result: dict[str, Any] = {"model": model, "kind": kind, "version": _version(outputs)}
        if kind == "classify":
            result.update(self._classes(model, text, outputs, signatures))
        elif kind == "tag":
            result.update(_tagged(outputs))
        else:
            name = model_kinds.text_output(outputs, kind) or model_kinds.TEXT_OUTPUTS[0]
            result.update(output_text=_as_text(_first(outputs, name, model)),
                          **self._attention(model, text, signatures))
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    def _language_model(self, model: str, text: str, mode: Any, started: float
                        ) -> dict[str, Any]:
        """A language model's likeliest next words (mode `next`) or its greedy continuation
        (mode `continue`)."""
        if mode not in ("next", "continue"):
            raise bad_request(f"mode {mode!r} is not one a language model answers",
                              "send mode 'next' or 'continue'")
        signature = model_kinds.NEXT_WORDS_SIGNATURE if mode == "next" else None
        outputs, _ = self._predict(model, {model_kinds.TEXT_INPUT: [text]}, signature)
        result: dict[str, Any] = {"model": model, "kind": "language_model",
                                  "version": _version(outputs)}
        if mode == "next":
            words = _to_list(_output(outputs, "words", model))[0]
            probabilities = _to_list(_output(outputs, "probabilities", model))[0]
            result["next_words"] = [{"word": w, "probability": float(p)}
                                    for w, p in zip(words, probabilities, strict=True)]
        else:
            result["continuation"] = _as_text(_first(outputs, "continuation", model))
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    def _classes(self, model: str, text: str, outputs: Mapping[str, Any],
                 signatures: Mapping[str, Any]) -> dict[str, Any]:
        """A classifier's label, its probability and every class with its probability.

        The class names come from the `classify` signature (TF Serving's Classify API shape)
        when the model has one, else from a `classes` output beside `probabilities`.
        """
        names: list[str] = []
        scores: list[float] = []
        if model_kinds.CLASSIFY_SIGNATURE in signatures:
            answer, _ = self._predict(model, {"inputs": [_text_example(text)]},
                                      model_kinds.CLASSIFY_SIGNATURE)
            names = [_as_text(n) for n in _to_list(_output(answer, "classes", model))[0]]
            scores = _to_list(_output(answer, "scores", model))[0]
        elif "probabilities" in outputs:
            scores = _to_list(outputs["probabilities"])[0]
            names = ([_as_text(n) for n in _to_list(outputs["classes"])[0]]
                     if "classes" in outputs else [f"class {i}" for i in range(len(scores))])
        classes = sorted(({"name": n, "probability": round(float(p), 6)}
                          for n, p in zip(names, scores, strict=True)),
                         key=lambda c: -c["probability"])
        if "label" in outputs:
            label = _as_text(_first(outputs, "label", model))
        elif classes:
            label = classes[0]["name"]
        else:
            raise ApiError(502, "unexpected_output", f"model '{model}' returned no label",
                           "serve a model exported by `rnnkit export`")
        if "probability" in outputs:
            probability = float(_first(outputs, "probability", model))
        else:
            probability = next((c["probability"] for c in classes if c["name"] == label), 0.0)
        return {"label": label, "probability": round(probability, 6), "classes": classes}

    def _attention(self, model: str, text: str, signatures: Mapping[str, Any]
                   ) -> dict[str, Any]:
        """A text-to-text model's attention weights, when it exports them."""
        if model_kinds.ATTENTION_SIGNATURE not in signatures:
            return {"attention": None,
                    "attention_note": "this model exports no attention weights"}
        try:
            answer, _ = self._predict(model, {model_kinds.TEXT_INPUT: [text]},
                                      model_kinds.ATTENTION_SIGNATURE)
            return {"attention": _attention(answer), "attention_note": None}
        except ApiError as err:
            if err.code == "server_unreachable":
                raise
            return {"attention": None, "attention_note": f"no attention heat map: {err.message}"}

    def caption(self, image: bytes, model: str | None = None) -> dict[str, Any]:
        """A caption for an image, sent to a captioner as its raw bytes.

        Args:
            image: the JPEG or PNG file's contents.
            model: the captioner's name; None for the registry's captioner.
        """
        if model is None:
            from pipelines.tasks import REGISTRY

            model = next(i.export_name for i in REGISTRY if i.kind == "caption")
        model = _model_field({"model": model})
        if not image:
            raise bad_request("the request holds no image", "choose a JPEG or PNG file")
        if not any(image.startswith(magic) for magic in IMAGE_SIGNATURES):
            raise ApiError(415, "unsupported_image", "the file is not a JPEG or PNG image",
                           "choose a .jpg or .png file")
        kind, signatures = self._kind(model)
        if kind != "caption":
            what = f"a {kind} model" if kind else "no model the page knows"
            raise bad_request(f"model '{model}' is {what}, not a captioner",
                              "send text to /api/predict, or name a captioner")
        # A captioner that exports its attention answers caption and maps in one call.
        with_maps = model_kinds.CAPTION_ATTENTION_SIGNATURE in signatures
        outputs, elapsed = self._predict(
            model, {model_kinds.IMAGE_INPUT: [image]},
            model_kinds.CAPTION_ATTENTION_SIGNATURE if with_maps else
            model_kinds.DEFAULT_SIGNATURE)
        name = model_kinds.text_output(outputs, "caption") or "caption"
        text = _as_text(_first(outputs, name, model))
        return {"model": model, "kind": "caption", "elapsed_ms": elapsed,
                "version": _version(outputs), "caption": text, "output_text": text,
                "attention": _caption_attention(outputs) if with_maps else None,
                "attention_note": None if with_maps else
                "this model exports no attention maps"}

    def runs(self) -> dict[str, Any]:
        """Every run dir's summaries and plots, and each task's headline metrics and published
        anchors, for the results page."""
        from pipelines.tasks import REGISTRY

        tasks = {info.name: {"kind": info.kind, "model": info.export_name,
                             "headline": list(info.headline),
                             "anchors": [dataclasses.asdict(a) for a in info.anchors]}
                 for info in REGISTRY}
        return {"runs_dir": str(self.runs_dir), "runs": run_dirs.list_runs(self.runs_dir),
                "tasks": tasks}

    def progress(self) -> dict[str, Any]:
        """What the last `rnnkit run` is doing: each task's state, epoch and curves."""
        return {"progress": read_progress(self.runs_dir)}


def _model_field(body: Mapping[str, Any]) -> str:
    """The request's model name, checked to be one (it goes into the server's paths)."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request(f"model must be a string, not {type(model).__name__}",
                          'name it, e.g. {"model": "sentiment", ...}')
    if not model:
        raise bad_request("no model given", 'name one, e.g. {"model": "sentiment", ...}; '
                          "GET /api/models lists them")
    if not MODEL_NAME.match(model):
        raise bad_request(f"{model!r} is not a model name",
                          "use a name from GET /api/models")
    return model


def _text_example(text: str) -> bytes:
    """A serialized tf.Example holding `text`, what a Classify signature takes as `inputs`."""
    from tensorflow.core.example import example_pb2  # loaded with the serving client already

    example = example_pb2.Example()
    example.features.feature["text"].bytes_list.value.append(text.encode("utf-8"))
    return example.SerializeToString()


def _tagged(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """A tagger's tokens and tags for its one sentence, without the padding."""
    for name in model_kinds.TAG_OUTPUTS:
        if name not in outputs:
            raise ApiError(502, "unexpected_output", f"the tagger returned no '{name}' output",
                           "serve a tagger exported by `rnnkit export tag`")
    tokens = _to_list(outputs["tokens"])[0]
    tags = _to_list(outputs["tags"])[0]
    pairs = [(t, g) for t, g in zip(tokens, tags, strict=False) if t != ""]
    return {"tokens": [t for t, _ in pairs], "tags": [g for _, g in pairs]}


def _output(outputs: Mapping[str, Any], name: str, model: str) -> Any:
    """One named output, or a clear error when the model lacks it."""
    if name not in outputs:
        raise ApiError(502, "unexpected_output",
                       f"model '{model}' returned no '{name}' output (it has {sorted(outputs)})",
                       "serve a model exported by `rnnkit export`")
    return outputs[name]


def _text_field(body: Mapping[str, Any], what: str) -> str:
    """The request's non-empty `text`, within MAX_TEXT_CHARS."""
    text = body.get("text")
    if text is not None and not isinstance(text, str):
        raise bad_request(f"the {what} must be a JSON string, not {type(text).__name__}",
                          'send {"text": "..."}')
    if not text or not text.strip():
        raise bad_request(f"no {what} given", f"type a {what} and try again")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON's \ud800 escapes decode to lone surrogates
        raise bad_request(f"the {what} is not valid Unicode (it holds a lone surrogate)",
                          "send the text as UTF-8") from None
    if len(text) > MAX_TEXT_CHARS:
        raise bad_request(f"the {what} is {len(text):,} characters long",
                          f"keep it under {MAX_TEXT_CHARS:,}")
    return text.strip()


def _first(outputs: Mapping[str, Any], name: str, model: str) -> Any:
    """The first element of a batch output (the page always sends a batch of one)."""
    value = _output(outputs, name, model)
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
                           f"the {model_kinds.ATTENTION_SIGNATURE} signature returned no "
                           f"'{name}' output", "serve a model exported by `rnnkit export seq2seq`")
    return {"weights": _to_list(outputs["attention"])[0],
            "source_tokens": _to_list(outputs["source_tokens"])[0],
            "output_tokens": _to_list(outputs["output_tokens"])[0]}


def _caption_attention(outputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The caption's words and each word's attention map ([h][w] weights), or None."""
    if "attention" not in outputs or "output_tokens" not in outputs:
        return None
    words = [_as_text(w) for w in _to_list(outputs["output_tokens"])[0]]
    maps = _to_list(outputs["attention"])[0]
    kept = [(w, m) for w, m in zip(words, maps, strict=False) if w]
    return {"words": [w for w, _ in kept], "maps": [m for _, m in kept]}


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
