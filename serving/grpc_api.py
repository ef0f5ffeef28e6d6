"""TF Serving's gRPC API: PredictionService and ModelService over the server core, plus health.

The servicers only convert TensorProtos and translate `ServingError` codes into gRPC statuses
(which use the same numbers as TensorFlow's codes); everything else is the core's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.cancellation import RunToken, request_scope
from serving.core import ServingCore, as_serving_error
from serving.status import Code, ServingError, invalid_argument
from serving.tensors import to_numpy, to_proto

log = logging.getLogger("serving.grpc_api")

SIGNATURE_DEF_FIELD = "signature_def"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# TF Serving's ToGRPCStatus cuts longer error messages to this many characters.
ERROR_MESSAGE_LIMIT = 1024
# The calls that run a model, and so wait for its admission (serving.admission).
ADMITTED_APIS = frozenset({"Predict", "Classify", "Regress", "MultiInference"})
T = TypeVar("T")


def grpc_message(message: str) -> str:
    """An error message as TF Serving sends it over gRPC: cut after 1024 characters.

    Args:
        message: the full message.
    """
    if len(message) > ERROR_MESSAGE_LIMIT:
        return message[:ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """Parse --grpc_channel_arguments: `key=value` pairs separated by commas.

    As in TF Serving, a value that is a 32-bit integer is passed as one, anything else as a
    string.

    Args:
        text: e.g. "grpc.max_connection_age_ms=2000,grpc.http2.max_pings_without_data=0".
    """
    options: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--grpc_channel_arguments entry {item!r} is not KEY=VALUE")
        try:
            number = int(value)
        except ValueError:
            options.append((key, value))
        else:
            options.append((key, number) if -2**31 <= number < 2**31 else (key, value))
    return options


def _answer(core: ServingCore, api: str, model: str, context: grpc.ServicerContext,
            work: Callable[[], T]) -> T:
    """Run one RPC: record it in the metrics, and abort with the error's code if it failed.

    A model call waits for its model's admission first; when the call ends early (its deadline
    passed or the client cancelled it) its TensorFlow run is cancelled.
    """
    remaining = context.time_remaining()
    token = RunToken(api, None if remaining is None else time.monotonic() + remaining)

    def ended() -> None:  # gRPC calls this when the RPC ends, also after a normal answer
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            token.cancel(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
        else:
            token.cancel(Code.CANCELLED, "the client cancelled the call")

    try:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded before the request ran")
        context.add_callback(ended)
        with core.track(api, "GRPC", model), request_scope(token):
            slot = None
            if core.admission is not None and api in ADMITTED_APIS:
                slot = core.admission.enter(model, context.time_remaining())
            try:
                return work()
            finally:
                if slot is not None:
                    slot.release()
    except Exception as err:
        error = as_serving_error(err)
        context.abort(grpc.StatusCode[error.code.name], grpc_message(error.message))  # raises
        raise


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService.

    Args:
        core: the server core.
    """

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    def Predict(self, request: predict_pb2.PredictRequest,
                context: grpc.ServicerContext) -> predict_pb2.PredictResponse:
        """Run a signature on named input tensors."""
        def work() -> predict_pb2.PredictResponse:
            inputs = {alias: to_numpy(proto, alias) for alias, proto in request.inputs.items()}
            with self.core.acquire(request.model_spec) as servable:
                name, outputs = self.core.predict(servable, request.model_spec.signature_name,
                                                  inputs, list(request.output_filter))
                response = predict_pb2.PredictResponse(
                    model_spec=self.core.response_spec(servable, name))
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(to_proto(array))
            return response
        return _answer(self.core, "Predict", request.model_spec.name, context, work)

    def Classify(self, request: classification_pb2.ClassificationRequest,
                 context: grpc.ServicerContext) -> classification_pb2.ClassificationResponse:
        """Classify tf.Examples."""
        def work() -> classification_pb2.ClassificationResponse:
            with self.core.acquire(request.model_spec) as servable:
                name, result = self.core.classify(servable, request.model_spec.signature_name,
                                                  request.input)
                return classification_pb2.ClassificationResponse(
                    model_spec=self.core.response_spec(servable, name), result=result)
        return _answer(self.core, "Classify", request.model_spec.name, context, work)

    def Regress(self, request: regression_pb2.RegressionRequest,
                context: grpc.ServicerContext) -> regression_pb2.RegressionResponse:
        """Regress tf.Examples."""
        def work() -> regression_pb2.RegressionResponse:
            with self.core.acquire(request.model_spec) as servable:
                name, result = self.core.regress(servable, request.model_spec.signature_name,
                                                 request.input)
                return regression_pb2.RegressionResponse(
                    model_spec=self.core.response_spec(servable, name), result=result)
        return _answer(self.core, "Regress", request.model_spec.name, context, work)

    def MultiInference(self, request: inference_pb2.MultiInferenceRequest,
                       context: grpc.ServicerContext) -> inference_pb2.MultiInferenceResponse:
        """Run several classify/regress signatures of one model on the same examples."""
        spec = request.tasks[0].model_spec if request.tasks else None

        def work() -> inference_pb2.MultiInferenceResponse:
            if spec is None:
                raise invalid_argument("MultiInferenceRequest has no tasks")
            with self.core.acquire(spec) as servable:
                return self.core.multi_inference(servable, list(request.tasks), request.input)
        return _answer(self.core, "MultiInference", spec.name if spec else "", context, work)

    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                         context: grpc.ServicerContext,
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """Describe a model version's signatures."""
        def work() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one "
                                       f"metadata_field: add \"{SIGNATURE_DEF_FIELD}\"")
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise invalid_argument(f"Metadata field {field} is not supported; the only "
                                           f"field is \"{SIGNATURE_DEF_FIELD}\"")
            with self.core.acquire(request.model_spec) as servable:
                response = get_model_metadata_pb2.GetModelMetadataResponse(
                    model_spec=self.core.response_spec(servable, None))
                response.metadata[SIGNATURE_DEF_FIELD].Pack(self.core.signature_def_map(servable))
            return response
        return _answer(self.core, "GetModelMetadata", request.model_spec.name, context, work)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService.

    Args:
        core: the server core.
    """

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest,
                       context: grpc.ServicerContext,
                       ) -> get_model_status_pb2.GetModelStatusResponse:
        """Report the state of a model's versions."""
        def work() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            return self.core.model_status(request.model_spec)
        return _answer(self.core, "GetModelStatus", request.model_spec.name, context, work)

    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest,
                                  context: grpc.ServicerContext,
                                  ) -> model_management_pb2.ReloadConfigResponse:
        """Switch to a new model list; the reply's status says whether it fully applied."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.core.reload_config(request.config)
        except Exception as err:
            error = as_serving_error(err)
            log.error("config reload failed: %s", error.message)
            response.status.error_code = int(error.code)
            response.status.error_message = error.message
            context.set_code(grpc.StatusCode[error.code.name])
            context.set_details(grpc_message(error.message))
        return response


class HealthServicer(health.HealthServicer):
    """grpc.health.v1.Health whose overall status follows the models' readiness.

    Args:
        core: the server core (readiness: every model has an AVAILABLE version).
    """

    def __init__(self, core: ServingCore) -> None:
        super().__init__()
        self.core = core
        self.shutting_down = False

    def _overall(self) -> int:
        if self.shutting_down:
            return health_pb2.HealthCheckResponse.NOT_SERVING
        ready = not self.core.manager.not_ready()
        return (health_pb2.HealthCheckResponse.SERVING if ready
                else health_pb2.HealthCheckResponse.NOT_SERVING)

    def Check(self, request: health_pb2.HealthCheckRequest,
              context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        """Answer for "" (overall readiness) and the two TF Serving services."""
        if request.service in ("", PREDICTION_SERVICE, MODEL_SERVICE):
            return health_pb2.HealthCheckResponse(status=self._overall())
        return super().Check(request, context)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext,
              send_response_callback: Any = None) -> Iterator[health_pb2.HealthCheckResponse]:
        """Send the current status; watching for changes is not supported."""
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch is not supported; poll Check")

    def shutdown(self) -> None:
        """Report NOT_SERVING from now on (the server is stopping)."""
        self.shutting_down = True


def default_grpc_threads() -> int:
    """RPC threads when --grpc_max_threads is 0: 4 per CPU, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


def create_grpc_server(core: ServingCore, host: str, port: int,
                       max_workers: int | None = None, *,
                       channel_arguments: Sequence[tuple[str, int | str]] = (),
                       socket_path: str = "", credentials: grpc.ServerCredentials | None = None,
                       ) -> tuple[grpc.Server, HealthServicer]:
    """Build (not start) the gRPC server with TF Serving's services and health checking.

    Args:
        core: the server core.
        host: the address to bind.
        port: the TCP port to bind; 0 for no TCP port (with `socket_path`).
        max_workers: RPC threads; None for 4 per CPU (at least 8).
        channel_arguments: extra gRPC server options (--grpc_channel_arguments); they override
            ours.
        socket_path: also listen on this UNIX socket (--grpc_socket_path), if not ''.
        credentials: TLS credentials (--ssl_config_file) for the TCP port, or None for plain.
    """
    workers = max_workers or default_grpc_threads()
    # TF Serving accepts messages of any size; gRPC's default would cap them at 4 MB.
    # Without so_reuseport 0, a second server on a busy port would start silently.
    options = dict([("grpc.max_receive_message_length", -1),
                    ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    options.update(dict(channel_arguments))
    server = grpc.server(ThreadPoolExecutor(workers, thread_name_prefix="grpc-worker"),
                         options=list(options.items()))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
    health_servicer = HealthServicer(core)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    addresses = ([f"{host}:{port}"] if port else []) + (
        [f"unix:{socket_path}"] if socket_path else [])
    for address in addresses:
        try:
            if credentials is not None and not address.startswith("unix:"):
                bound = server.add_secure_port(address, credentials)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:  # newer grpcio raises where older ones returned 0
            bound = 0
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {address} (is it in use?)")
    return server, health_servicer


def server_credentials(ssl_config: Any) -> grpc.ServerCredentials:
    """gRPC TLS credentials from an SSLConfig, as TF Serving builds them.

    Args:
        ssl_config: a serving.config_readers.SSLConfig.
    """
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify)
