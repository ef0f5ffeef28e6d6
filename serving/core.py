"""The one server core behind REST and gRPC: find the model, run the request, report status.

The protocol adapters (rest_api, grpc_api) only translate their wire formats to the calls here
and `ServingError` codes back to HTTP or gRPC statuses, so both protocols behave the same.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.admission import Admission
from serving.batching import QueueFullError, SchedulerClosedError
from serving.export import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD
from serving.model_manager import ModelManager
from serving.servable import Servable
from serving.status import Code, ServingError, invalid_argument
from serving.tensors import datatype_of, dtype_name

log = logging.getLogger("serving.core")

DEFAULT_SIGNATURE = "serving_default"
# The runtime label of TF's runtime_latency metric for SavedModels run as TF graphs.
RUNTIME = "TF1"
CLASSES_OUTPUT, SCORES_OUTPUT, REGRESS_OUTPUT = "classes", "scores", "outputs"


def as_serving_error(err: BaseException) -> ServingError:
    """Turn anything a request raised into a ServingError; unexpected ones become INTERNAL.

    Args:
        err: the exception.
    """
    if isinstance(err, ServingError):
        return err
    log.error("request failed unexpectedly", exc_info=err)
    return ServingError(Code.INTERNAL, f"{type(err).__name__}: {err}")


def serialized_examples(request_input: input_pb2.Input, request_kind: str) -> np.ndarray:
    """Serialize a classify/regress Input into the string batch its signature takes.

    With a context, each example is merged with it (the context first, so the example's own
    features win), as TF Serving does.

    Args:
        request_input: the request's `input`.
        request_kind: "ClassificationRequest" or "RegressionRequest", for messages.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        records = [example.SerializeToString() for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        records = [context + example.SerializeToString() for example in listed.examples]
    else:
        raise invalid_argument(f"{request_kind}::input is empty: set example_list or "
                               "example_list_with_context")
    if not records:
        raise invalid_argument(f"{request_kind}::input is empty.")
    batch = np.empty(len(records), dtype=object)
    batch[:] = records
    return batch


class ServingCore:
    """Resolves models and runs predict, classify, regress, multi-inference, metadata, status.

    Args:
        manager: the loaded models.
        batcher: a serving.batching.BatchScheduler merging concurrent runs, or None.
        metrics: a serving.metrics.Metrics receiving one observation per request, or None.
        check_method_name: refuse classify/regress on signatures whose method_name is not
            classify/regress (TF's --enable_signature_method_name_check, off by default so that
            native TF2 exports, whose signatures all say predict, answer Classify and Regress).
        admission: per-model limits on running and waiting requests, which the protocol
            adapters apply to predict/classify/regress; None for none.
    """

    def __init__(self, manager: ModelManager, batcher: Any = None, metrics: Any = None, *,
                 check_method_name: bool = False, admission: Admission | None = None) -> None:
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics
        self.check_method_name = check_method_name
        self.admission = admission

    # ---- requests around the model ---------------------------------------------------------

    @contextlib.contextmanager
    def track(self, api: str, entrypoint: str, model: str) -> Iterator[None]:
        """Record one request's latency and final status in the metrics.

        Args:
            api: TF Serving's API name ("Predict", "Classify", ...).
            entrypoint: "REST" or "GRPC".
            model: the model name asked for.
        """
        started = time.perf_counter()
        status = "OK"
        try:
            yield
        except BaseException as err:
            status = err.code.name if isinstance(err, ServingError) else "INTERNAL"
            raise
        finally:
            self.record(api, entrypoint, model, status, time.perf_counter() - started)

    def record(self, api: str, entrypoint: str, model: str, status: str,
               seconds: float) -> None:
        """Count one answered request in the metrics (`track` does this around a request).

        Args:
            api: TF Serving's API name ("Predict", "Classify", ...).
            entrypoint: "REST" or "GRPC".
            model: the model name asked for.
            status: the answer's gRPC status code name ("OK", "UNAVAILABLE", ...).
            seconds: wall time from receiving the request to answering it.
        """
        if self.metrics is not None:
            self.metrics.observe_request(model, api, entrypoint, status, seconds)

    @contextlib.contextmanager
    def acquire(self, spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """Hold the model version a ModelSpec names (its version or label, else the latest).

        Args:
            spec: name plus optional version or version_label.
        """
        choice = spec.WhichOneof("version_choice")
        version = spec.version.value if choice == "version" else None
        label = spec.version_label if choice == "version_label" else None
        with self.manager.acquire(spec.name, version, label) as servable:
            yield servable

    @staticmethod
    def response_spec(servable: Servable, signature_name: str | None) -> model_pb2.ModelSpec:
        """The ModelSpec a response carries: name, the version that answered, the signature.

        Args:
            servable: the version that answered.
            signature_name: the signature used, or None for metadata.
        """
        spec = model_pb2.ModelSpec(name=servable.name)
        spec.version.value = servable.version
        if signature_name is not None:
            spec.signature_name = signature_name
        return spec

    def _run(self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray],
             output_keys: Sequence[str], api: str = "Predict") -> dict[str, np.ndarray]:
        def run(merged: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            started = time.perf_counter()
            try:
                return servable.run(signature_name, merged, output_keys)
            finally:
                if self.metrics is not None:
                    self.metrics.observe_runtime(servable.name, api, RUNTIME,
                                                 time.perf_counter() - started)

        if self.batcher is None:
            return run(inputs)
        key = (servable.name, servable.version, signature_name, tuple(output_keys))
        try:
            return self.batcher.submit(key, dict(inputs), run)
        except QueueFullError as err:  # TF's batching queue answers UNAVAILABLE too
            raise ServingError(Code.UNAVAILABLE, str(err)) from None
        except SchedulerClosedError as err:
            raise ServingError(Code.UNAVAILABLE, str(err)) from None
        except ValueError as err:
            raise invalid_argument(str(err)) from None

    # ---- predict ------------------------------------------------------------------------------

    @staticmethod
    def signature(servable: Servable, signature_name: str) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef a predict request names ('' means serving_default).

        Args:
            servable: the model version.
            signature_name: the requested signature name.
        """
        name = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise ServingError(
                Code.FAILED_PRECONDITION,
                f"Serving signature key \"{name}\" not found. This model has: "
                f"{', '.join(sorted(servable.signature_defs))}")
        return signature

    def predict(self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray],
                output_filter: Sequence[str] = ()) -> tuple[str, dict[str, np.ndarray]]:
        """Run a signature on named inputs; returns the signature name used and the outputs.

        Args:
            servable: the model version.
            signature_name: the signature ('' for serving_default).
            inputs: input alias -> array.
            output_filter: the outputs wanted; empty for all.
        """
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(servable, name)
        if signature.method_name not in (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(
                Code.INTERNAL,
                f"Expected prediction signature method_name to be one of {{{PREDICT_METHOD}, "
                f"{CLASSIFY_METHOD}, {REGRESS_METHOD}}}. Was: {signature.method_name}")
        expected = set(signature.inputs)
        sent = set(inputs)
        if sent != expected:
            raise invalid_argument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        dtypes = servable.input_dtypes(name)
        for alias, array in inputs.items():
            if datatype_of(array) != dtypes[alias]:
                raise invalid_argument(
                    f"input '{alias}' of signature '{name}' takes {dtype_name(dtypes[alias])} "
                    f"but the request sent {dtype_name(datatype_of(array))}")
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to be "
                    f"in the set {{{','.join(sorted(signature.outputs))}}}.")
            if alias in seen:
                raise invalid_argument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        output_keys = list(output_filter) or list(signature.outputs)
        return name, self._run(servable, name, inputs, output_keys)

    # ---- classify and regress -------------------------------------------------------------

    def _example_signature(self, servable: Servable, signature_name: str, method: str,
                           outputs: tuple[str, ...],
                           ) -> tuple[str, meta_graph_pb2.SignatureDef, str]:
        """The signature a classify/regress request names, checked as TF's classifier.cc does.

        Returns the signature's name, its definition and the alias of its one input.
        """
        name = signature_name or DEFAULT_SIGNATURE
        signature = servable.signature_defs.get(name)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {name}. This model "
                                   f"has: {', '.join(sorted(servable.signature_defs))}")
        kind = "classification" if method == CLASSIFY_METHOD else "regression"
        if self.check_method_name and signature.method_name != method:
            raise invalid_argument(f"Expected {kind} signature method_name to be {method}. "
                                   f"Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        if not any(key in signature.outputs for key in outputs):
            raise ServingError(Code.FAILED_PRECONDITION,
                               f"Expected {kind} signature outputs to contain "
                               f"{' or '.join(repr(key) for key in outputs)}. Signature {name} "
                               f"has: {', '.join(sorted(signature.outputs))}")
        return name, signature, next(iter(signature.inputs))

    def _count_examples(self, servable: Servable, count: int) -> None:
        if self.metrics is not None:
            self.metrics.observe_examples(servable.name, count)

    def classify(self, servable: Servable, signature_name: str, request_input: input_pb2.Input,
                 ) -> tuple[str, classification_pb2.ClassificationResult]:
        """Classify tf.Examples with a classify signature (outputs 'classes' and/or 'scores').

        Args:
            servable: the model version.
            signature_name: the signature ('' for serving_default).
            request_input: the examples, with an optional context.
        """
        name, signature, alias = self._example_signature(
            servable, signature_name, CLASSIFY_METHOD, (CLASSES_OUTPUT, SCORES_OUTPUT))
        examples = serialized_examples(request_input, "ClassificationRequest")
        self._count_examples(servable, len(examples))
        keys = [key for key in (CLASSES_OUTPUT, SCORES_OUTPUT) if key in signature.outputs]
        outputs = self._run(servable, name, {alias: examples}, keys, "Classify")
        return name, self._classification_result(outputs, len(examples))

    @staticmethod
    def _classification_result(outputs: Mapping[str, np.ndarray],
                               count: int) -> classification_pb2.ClassificationResult:
        classes, scores = outputs.get(CLASSES_OUTPUT), outputs.get(SCORES_OUTPUT)
        for key, array in ((CLASSES_OUTPUT, classes), (SCORES_OUTPUT, scores)):
            if array is None:
                continue
            if array.ndim != 2:
                raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got "
                                       f"{list(array.shape)} for output '{key}'")
            if array.shape[0] != count:
                raise invalid_argument(f"Expected {key} output batch size of {count}. "
                                       f"Got: {array.shape[0]}")
        if classes is not None and classes.dtype != object:
            raise invalid_argument(f"Expected classes Tensor of DT_STRING. Got: "
                                   f"{dtype_name(datatype_of(classes))}")
        if scores is not None and scores.dtype != np.float32:
            raise invalid_argument(f"Expected scores Tensor of DT_FLOAT. Got: "
                                   f"{dtype_name(datatype_of(scores))}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got "
                                   f"{classes.shape[1]} vs. {scores.shape[1]}")
        num_classes = (classes if classes is not None else scores).shape[1]
        labels = None if classes is None else [
            [label.decode("utf-8", "replace") for label in row] for row in classes.tolist()]
        values = None if scores is None else scores.tolist()
        result = classification_pb2.ClassificationResult()
        for row in range(count):
            classifications = result.classifications.add()
            for column in range(num_classes):
                entry = classifications.classes.add()
                if labels is not None:
                    entry.label = labels[row][column]
                if values is not None:
                    entry.score = values[row][column]
        return result

    def regress(self, servable: Servable, signature_name: str,
                request_input: input_pb2.Input) -> tuple[str, regression_pb2.RegressionResult]:
        """Regress tf.Examples with a regress signature (output 'outputs').

        Args:
            servable: the model version.
            signature_name: the signature ('' for serving_default).
            request_input: the examples, with an optional context.
        """
        name, _, alias = self._example_signature(servable, signature_name, REGRESS_METHOD,
                                                 (REGRESS_OUTPUT,))
        examples = serialized_examples(request_input, "RegressionRequest")
        self._count_examples(servable, len(examples))
        outputs = self._run(servable, name, {alias: examples}, [REGRESS_OUTPUT], "Regress")
        return name, self._regression_result(outputs[REGRESS_OUTPUT], len(examples))

    @staticmethod
    def _regression_result(values: np.ndarray, count: int) -> regression_pb2.RegressionResult:
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or "
                                   f"[batch_size, 1] but got {list(values.shape)}")
        if values.shape[0] != count:
            raise invalid_argument(f"Input batch size did not match output batch size: {count} "
                                   f"vs. {values.shape[0]}")
        if values.dtype != np.float32:
            raise invalid_argument(f"Expected output Tensor of DT_FLOAT. Got: "
                                   f"{dtype_name(datatype_of(values))}")
        result = regression_pb2.RegressionResult()
        for value in values.reshape(-1).tolist():
            result.regressions.add().value = value
        return result

    def multi_inference(self, servable: Servable, tasks: Sequence[inference_pb2.InferenceTask],
                        request_input: input_pb2.Input) -> inference_pb2.MultiInferenceResponse:
        """Run several classify/regress signatures of one model on the same examples.

        Args:
            servable: the model version (the one the first task names).
            tasks: the signatures to run, each with method_name classify or regress.
            request_input: the examples, with an optional context.
        """
        if not tasks:
            raise invalid_argument("MultiInferenceRequest has no tasks")
        seen: set[str] = set()
        for task in tasks:
            if not task.model_spec.name:
                raise invalid_argument("Found ModelSpec with an empty model name.")
            if task.model_spec.name != tasks[0].model_spec.name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access "
                                       "the same model name.")
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise ServingError(Code.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {task.method_name}")
        response = inference_pb2.MultiInferenceResponse()
        for task in tasks:
            result = response.results.add()
            if task.method_name == CLASSIFY_METHOD:
                name, classified = self.classify(servable, task.model_spec.signature_name,
                                                 request_input)
                result.classification_result.CopyFrom(classified)
            else:
                name, regressed = self.regress(servable, task.model_spec.signature_name,
                                               request_input)
                result.regression_result.CopyFrom(regressed)
            result.model_spec.CopyFrom(self.response_spec(servable, name))
        return response

    # ---- metadata, status, config ----------------------------------------------------------

    @staticmethod
    def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
        """The model's signatures as GetModelMetadata's 'signature_def' entry holds them.

        Args:
            servable: the model version.
        """
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
        return signature_map

    def model_status(self, spec: model_pb2.ModelSpec,
                     ) -> get_model_status_pb2.GetModelStatusResponse:
        """The state of the version a ModelSpec names, or of all versions.

        As TF Serving's GetModelStatusImpl: only a version number narrows the answer; a
        version label is not looked at (every version is reported).

        Args:
            spec: name plus optional version (a version_label is ignored).
        """
        choice = spec.WhichOneof("version_choice")
        statuses = self.manager.status(spec.name,
                                       spec.version.value if choice == "version" else None)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in statuses:
            entry = response.model_version_status.add(version=status.version, state=status.state)
            entry.status.SetInParent()  # TF Serving always sends a status, OK included
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Switch to a new model list (HandleReloadConfigRequest); waits for new models to load.

        Args:
            config: a ModelServerConfig with a model_config_list.
        """
        self.manager.apply_config(config)
        failed = self.manager.not_ready()
        wanted = {model.name for model in config.model_config_list.config}
        failed = {name: why for name, why in failed.items() if name in wanted}
        if failed:
            raise ServingError(
                Code.UNKNOWN,
                f"{len(failed)} model(s) did not become available: " +
                "; ".join(f"{name}: {why}" for name, why in failed.items()))
