"""The one export function: a SavedModel in TF Serving's `<base>/<name>/<version>/` layout.

A version is written under a hidden temporary name in the same folder and renamed into place, so
TF Serving (and our server's poller), which only look at integer-named folders, never see half a
model, and an existing version is never overwritten.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import UserError

if TYPE_CHECKING:
    from tensorflow_serving.apis import prediction_log_pb2

log = logging.getLogger("serving.export")

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = "tf_serving_warmup_requests"
# The export's metadata (which task, kind and run it came from, plus the task's extras such as
# class names; docs/app.md "Model metadata"); servers ignore it.
PROVENANCE_FILE = "rnnkit_export.json"
ASSETS_EXTRA = "assets.extra"
# A served model's name: what TF Serving accepts in a URL path and a folder name.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def version_number(name: str) -> int | None:
    """A version folder's number, as TF Serving reads one: ASCII digits (leading zeros
    allowed) within int64; None for any other name ("v1", "²", 20 nines).

    Args:
        name: the folder's name.
    """
    if not (name.isascii() and name.isdigit()):
        return None
    number = int(name)
    return number if number < 2**63 else None


def existing_versions(model_dir: Path) -> list[int]:
    """The integer versions already exported under `<base>/<name>/`, ascending.

    Args:
        model_dir: the model's folder, `<base>/<name>`.
    """
    if not model_dir.is_dir():
        return []
    return sorted(n for p in model_dir.iterdir()
                  if p.is_dir() and (n := version_number(p.name)) is not None)


def _set_method_names(export_dir: Path, method_names: Mapping[str, str]) -> None:
    """Rewrite signature method names in saved_model.pb (TF2 saving writes only `predict`)."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = export_dir / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(path.read_bytes())
    for meta_graph in saved.meta_graphs:
        for name, method in method_names.items():
            if name not in meta_graph.signature_def:
                raise ValueError(f"method_names names signature {name!r}, which is not exported "
                                 f"(signatures: {sorted(meta_graph.signature_def)})")
            meta_graph.signature_def[name].method_name = method
    path.write_bytes(saved.SerializeToString())
    try:  # the fingerprint hashes saved_model.pb; keep it true to the rewritten file
        from tensorflow.python.saved_model import fingerprinting_utils

        (export_dir / "fingerprint.pb").unlink(missing_ok=True)
        fingerprinting_utils.write_fingerprint(str(export_dir))
    except (ImportError, AttributeError):
        log.debug("could not rewrite fingerprint.pb; it is optional for loading")


def export_saved_model(module_or_model: Any, signatures: Mapping[str, Any], base_path: Path | str,
                       model_name: str, assets_extra: Mapping[str, bytes] | None = None,
                       method_names: Mapping[str, str] | None = None) -> Path:
    """Export a SavedModel as the next integer version of `<base_path>/<model_name>/`.

    Args:
        module_or_model: what holds the variables and lookup tables (a keras.Model or tf.Module).
        signatures: signature name -> tf.function with an input_signature (or concrete function)
            returning a dict of named tensors; `serving_default` is what Predict calls by default.
        base_path: the folder TF Serving's `--model_base_path` parent points at.
        model_name: the served model's name (letters, digits, `_`, `-`, `.`).
        assets_extra: file name -> contents for `assets.extra/` (e.g. tf_serving_warmup_requests).
        method_names: signature name -> method (CLASSIFY_METHOD, REGRESS_METHOD) for signatures
            TF Serving's Classify/Regress APIs call; the others stay PREDICT_METHOD.

    Returns:
        The new version's folder, `<base_path>/<model_name>/<version>`.
    """
    import tensorflow as tf

    if not MODEL_NAME.match(model_name):
        raise ValueError(f"model name {model_name!r} must be letters, digits, '_', '-' or '.'")
    if not signatures:
        raise ValueError("export needs at least one signature (e.g. serving_default)")
    for name in assets_extra or {}:
        if "/" in name or name.startswith("."):
            raise ValueError(f"assets.extra file name {name!r} must be a plain file name")
    model_dir = Path(base_path) / model_name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create export folder {model_dir}: {err.strerror}",
                        "pass a writable --base-path") from None

    versions = existing_versions(model_dir)
    version = (versions[-1] if versions else 0) + 1
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-{os.getpid()}-", dir=model_dir))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from a server run by another user
        root = module_or_model
        if not isinstance(root, tf.Module):
            # A plain root object keeps the model's variables and tables reachable for saving.
            root = tf.Module()
            root.model = module_or_model
        tf.saved_model.save(root, str(tmp), signatures=dict(signatures))
        if method_names:
            _set_method_names(tmp, method_names)
        if assets_extra:
            (tmp / ASSETS_EXTRA).mkdir()
            for name, data in assets_extra.items():
                (tmp / ASSETS_EXTRA / name).write_bytes(data)
        while True:
            target = model_dir / str(version)
            if not target.exists():
                try:
                    os.rename(tmp, target)
                    break
                except OSError:  # another exporter took this version between check and rename
                    if not target.exists():
                        raise
            version += 1
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s version %d to %s", model_name, version, target)
    return target


def predict_log(inputs: Mapping[str, Any], signature_name: str = "serving_default",
                model_name: str = "") -> prediction_log_pb2.PredictionLog:
    """One warm-up record: a PredictionLog holding a PredictRequest with these inputs.

    Args:
        inputs: input name -> array-like (e.g. {"text": ["a review"]}).
        signature_name: the signature the request calls.
        model_name: the model name in the request's model_spec.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))


def warmup_file(logs: list[prediction_log_pb2.PredictionLog]) -> bytes:
    """The TFRecord bytes of `assets.extra/tf_serving_warmup_requests`.

    Args:
        logs: the PredictionLog records, replayed by the server before it reports ready.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, WARMUP_FILE)
        with tf.io.TFRecordWriter(path) as writer:
            for record in logs:
                writer.write(record.SerializeToString())
        return Path(path).read_bytes()


def export_provenance(version_dir: Path) -> dict[str, Any] | None:
    """An exported version's metadata and its run (`pipelines.training.export.export_run`), or None.

    Args:
        version_dir: `<base>/<name>/<version>`.
    """
    import json

    try:
        return json.loads((Path(version_dir) / ASSETS_EXTRA / PROVENANCE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
