"""Model warmup: replay a version's assets.extra/tf_serving_warmup_requests before it serves.

The file is a TFRecord file of tensorflow.serving.PredictionLog protos, as TF Serving reads it;
each logged Predict, Classify, Regress or MultiInference request is run (once, or
--num_request_iterations_for_warmup times) against the new
version, so its first real request does not pay for graph tracing and memory allocation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.core import ServingCore, as_serving_error
from serving.export import ASSETS_EXTRA, WARMUP_FILE
from serving.servable import Servable
from serving.status import Code, ServingError, invalid_argument
from serving.tensors import to_numpy

log = logging.getLogger("serving.warmup")

MAX_RECORDS = 1000  # TF Serving refuses larger warmup files


def warmup_records(version_dir: Path) -> list[prediction_log_pb2.PredictionLog]:
    """Read a version's warmup requests; an empty list when it has none.

    Args:
        version_dir: the SavedModel version directory.
    """
    path = version_dir / ASSETS_EXTRA / WARMUP_FILE
    if not path.is_file():
        return []
    records = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            if len(records) == MAX_RECORDS:
                raise invalid_argument(f"Number of warmup records in {path} exceeds the maximum "
                                       f"({MAX_RECORDS}); keep at most {MAX_RECORDS}")
            records.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    except tf.errors.OpError as err:
        raise ServingError(Code.DATA_LOSS, f"warmup file {path} is not a valid TFRecord file: "
                                           f"{err.message}") from None
    except ValueError as err:  # protobuf's DecodeError
        raise ServingError(Code.DATA_LOSS, f"warmup file {path} holds a record that is not a "
                                           f"PredictionLog: {err}") from None
    return records


def _replay(core: ServingCore, servable: Servable,
            record: prediction_log_pb2.PredictionLog) -> None:
    kind = record.WhichOneof("log_type")
    if kind == "predict_log":
        request = record.predict_log.request
        inputs = {alias: to_numpy(proto, alias) for alias, proto in request.inputs.items()}
        core.predict(servable, request.model_spec.signature_name, inputs,
                     list(request.output_filter))
    elif kind == "classify_log":
        request = record.classify_log.request
        core.classify(servable, request.model_spec.signature_name, request.input)
    elif kind == "regress_log":
        request = record.regress_log.request
        core.regress(servable, request.model_spec.signature_name, request.input)
    elif kind == "multi_inference_log":
        request = record.multi_inference_log.request
        core.multi_inference(servable, list(request.tasks), request.input)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")


def run_warmup(core: ServingCore, servable: Servable, iterations: int = 1) -> int:
    """Replay every warmup request against a servable; any failure fails its load.

    Args:
        core: the server core (runs the requests exactly as clients' requests run).
        servable: the version being loaded.
        iterations: times each request is replayed (--num_request_iterations_for_warmup; values
            below 1 mean 1, as in TF Serving).

    Returns:
        How many requests were replayed (records times iterations).
    """
    records = warmup_records(servable.path)
    if not records:
        return 0
    started = time.perf_counter()
    status = "OK"
    try:
        for index, record in enumerate(records):
            try:
                for _ in range(max(1, iterations)):
                    _replay(core, servable, record)
            except Exception as err:
                error = as_serving_error(err)
                status = error.code.name
                raise ServingError(error.code, f"warmup request {index + 1} of {len(records)} "
                                               f"failed: {error.message}") from None
    finally:
        if core.metrics is not None:
            core.metrics.observe_warmup(str(servable.path), status,
                                        time.perf_counter() - started)
    replayed = len(records) * max(1, iterations)
    log.info("warmed up %s version %d with %d requests in %.2f s", servable.name,
             servable.version, replayed, time.perf_counter() - started)
    return replayed
