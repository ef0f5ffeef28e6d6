"""A small client for TF Serving's gRPC and REST APIs (our server or tensorflow_model_server).

Used by `rnnkit predict`, the web app, the tests and the benchmark. TensorFlow and gRPC are
imported on first use of the gRPC API, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.errors import UserError
from serving.status import Code

GRPC, REST = "grpc", "rest"
START_HINT = "start it with `rnnkit serve --model_config_file exports/models.config`"
# gRPC messages carry whole batches (images, long texts); the default 4 MiB limit is too small.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# TensorFlow DataType names -> numpy dtypes, for REST replies (JSON loses the dtype).
_NUMPY_DTYPES = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_HALF": np.float16,
    "DT_INT8": np.int8, "DT_INT16": np.int16, "DT_INT32": np.int32, "DT_INT64": np.int64,
    "DT_UINT8": np.uint8, "DT_UINT16": np.uint16, "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64, "DT_BOOL": np.bool_, "DT_STRING": object,
}
# TF Serving's HTTP status for each error code (tensorflow_serving/model_servers/http_server.cc).
_HTTP_CODES = {400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
               404: Code.NOT_FOUND, 409: Code.ABORTED, 412: Code.FAILED_PRECONDITION,
               429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED, 500: Code.INTERNAL,
               501: Code.UNIMPLEMENTED, 503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED}


class ServerReplyError(UserError):
    """A call the model server failed, or could not take; shaped like grpc.RpcError.

    Args:
        code: the TF Serving / gRPC status code.
        message: the server's message (or what went wrong reaching it).
        fix: what the user can do, if known.
    """

    def __init__(self, code: Code, message: str, fix: str = "") -> None:
        self._code = code
        self._details = message
        super().__init__(f"{code.name}: {message}", fix)

    def code(self) -> Code:
        """The status code (its .name is e.g. NOT_FOUND, as grpc.StatusCode's is)."""
        return self._code

    def details(self) -> str:
        """The message without the code."""
        return self._details


class Prediction(dict):
    """Output name -> array, plus which model version and signature answered.

    Args:
        outputs: output name -> array.
        model: the model name.
        version: the version that answered (gRPC replies say so; over REST it is the version
            asked for, None if none was).
        signature_name: the signature run.
    """

    def __init__(self, outputs: Mapping[str, np.ndarray], model: str, version: int | None,
                 signature_name: str) -> None:
        super().__init__(outputs)
        self.model = model
        self.version = version
        self.signature_name = signature_name


def _join_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _as_array(value: Any) -> np.ndarray:
    """A request value as an array; text becomes UTF-8 bytes in an object array."""
    if not isinstance(value, np.ndarray):
        value = np.array(value, dtype=object) if _holds_text(value) else np.asarray(value)
    if value.dtype.kind not in "SUO":
        return value
    encoded = np.empty(value.shape, dtype=object)
    # surrogateescape: a command-line argument that is not UTF-8 goes as the bytes typed.
    encoded.reshape(-1)[:] = [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
                              for v in value.reshape(-1).tolist()]
    return encoded


def _holds_text(value: Any) -> bool:
    while isinstance(value, list | tuple) and value:
        value = value[0]
    return isinstance(value, str | bytes)


def _to_json(array: np.ndarray) -> Any:
    """An array as TF Serving's JSON: nested lists, bytes as {"b64": ...}."""
    def encode(v: Any) -> Any:
        if isinstance(v, list):
            return [encode(x) for x in v]
        if isinstance(v, bytes):
            return {"b64": base64.b64encode(v).decode("ascii")}
        return v
    return encode(array.tolist()) if array.dtype == object else array.tolist()


def _from_json(value: Any, dtype_name: str | None) -> np.ndarray:
    """A JSON tensor back as an array: strings and {"b64"} as bytes, numbers in `dtype_name`."""
    def decode(v: Any) -> Any:
        if isinstance(v, list):
            return [decode(x) for x in v]
        if isinstance(v, dict) and set(v) == {"b64"}:
            return base64.b64decode(v["b64"])
        return v.encode("utf-8") if isinstance(v, str) else v
    decoded = decode(value)
    if dtype_name == "DT_STRING" or _holds_text(decoded):
        return np.array(decoded, dtype=object)
    target = _NUMPY_DTYPES.get(dtype_name or "")
    return np.asarray(decoded, dtype=target) if target is not None else np.asarray(decoded)


def _signature_io(metadata: Mapping[str, Any], signature_name: str) -> dict[str, dict[str, str]]:
    """{"inputs": {alias: dtype name}, "outputs": {...}} of one signature in a metadata reply."""
    defs = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    if signature_name not in defs:
        raise ServerReplyError(
            Code.INVALID_ARGUMENT,
            f"model {metadata.get('model_spec', {}).get('name', '?')!r} has no signature "
            f"{signature_name!r} (it has {sorted(n for n in defs if not n.startswith('__'))})",
            "pass one of those signature names")
    signature = defs[signature_name]
    return {part: {alias: info.get("dtype", "") for alias, info in signature.get(part, {}).items()}
            for part in ("inputs", "outputs")}


class ServingClient:
    """Calls a model server speaking TF Serving's gRPC and REST APIs; safe to share by threads.

    Predict looks up the signature's input and output dtypes once per model, signature and
    version (one GetModelMetadata call) to send numbers in the dtypes the model takes and to name
    and type REST replies.

    Args:
        host: the server's host name or address.
        grpc_port: its gRPC port (TF Serving's --port).
        rest_port: its REST port (--rest_api_port); None if it has none.
        timeout: seconds to wait for each call.
    """

    def __init__(self, host: str = "localhost", grpc_port: int = 8500,
                 rest_port: int | None = 8501, timeout: float = 10.0) -> None:
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.timeout = timeout
        self._lock = threading.Lock()
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}
        self._signatures: dict[tuple, dict[str, dict[str, str]]] = {}

    # -- public API ---------------------------------------------------------------------------

    def predict(self, model: str, inputs: Mapping[str, Any] | Sequence[Any],
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None, protocol: str = GRPC) -> Prediction:
        """Run the Predict API.

        Args:
            model: the model name.
            inputs: input alias -> values (lists, arrays, str or bytes), or the values of the
                signature's only input.
            signature_name: the signature to run (default serving_default).
            version: a version number to ask for (default: the latest served).
            label: a version label to ask for instead of a number.
            protocol: "grpc" or "rest".

        Returns:
            Output alias -> array (strings as bytes), with .version and .signature_name.
        """
        protocol = self._check_protocol(protocol)
        signature_name = signature_name or "serving_default"
        io = self._signature_io(model, signature_name, version, label, protocol)
        if not isinstance(inputs, Mapping):
            if len(io["inputs"]) != 1:
                raise UserError(f"model {model!r} signature {signature_name!r} takes inputs "
                                f"{sorted(io['inputs'])}, not one list of values",
                                "pass a dict of input name -> values")
            inputs = {next(iter(io["inputs"])): inputs}
        arrays = {name: self._cast(_as_array(value), io["inputs"].get(name))
                  for name, value in inputs.items()}
        try:
            if protocol == GRPC:
                return self._predict_grpc(model, arrays, signature_name, version, label)
            return self._predict_rest(model, arrays, signature_name, version, label, io)
        except ServerReplyError as err:
            if err.code() in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.NOT_FOUND):
                # A new version may have changed the signature: look it up again next time.
                with self._lock:
                    self._signatures.pop((model, signature_name, version, label), None)
            raise

    def status(self, model: str, version: int | None = None, protocol: str = GRPC
               ) -> dict[str, Any]:
        """The GetModelStatus answer, in TF Serving's REST JSON shape.

        Args:
            model: the model name.
            version: only this version's status (default: every version).
            protocol: "grpc" or "rest".
        """
        if self._check_protocol(protocol) == REST:
            suffix = f"/versions/{version}" if version is not None else ""
            return self._rest("GET", f"/v1/models/{urllib.parse.quote(model)}{suffix}")
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        reply = self._grpc("model", "GetModelStatus", request)
        return self._to_dict(reply)

    def metadata(self, model: str, version: int | None = None, label: str | None = None,
                 protocol: str = GRPC) -> dict[str, Any]:
        """The GetModelMetadata answer (signature defs), in TF Serving's REST JSON shape.

        Args:
            model: the model name.
            version: a version number (default: the latest served).
            label: a version label instead of a number.
            protocol: "grpc" or "rest".
        """
        if self._check_protocol(protocol) == REST:
            return self._rest("GET", self._rest_path(model, version, label, "metadata"))
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec, model, None, version, label)
        request.metadata_field.append("signature_def")
        reply = self._grpc("prediction", "GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        reply.metadata["signature_def"].Unpack(signature_map)
        return {"model_spec": self._to_dict(reply.model_spec),
                "metadata": {"signature_def": self._to_dict(signature_map)}}

    def list_models(self) -> list[dict[str, Any]]:
        """Every model the server knows (GET /v1/models, our server's REST extension).

        tensorflow_model_server has no such endpoint: it answers NOT_FOUND.
        """
        reply = self._rest("GET", "/v1/models")
        models = reply.get("models", reply) if isinstance(reply, Mapping) else reply
        return list(models) if isinstance(models, list) else []

    def wait_until_available(self, model: str, timeout: float = 60.0,
                             protocol: str = GRPC) -> dict[str, Any]:
        """Poll the model's status until a version is AVAILABLE; returns that status.

        Args:
            model: the model name.
            timeout: seconds to keep trying.
            protocol: "grpc" or "rest".

        Raises:
            UserError: no version became available in time (says what the server last said).
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            try:
                status = self.status(model, protocol=protocol)
                states = [v.get("state") for v in status.get("model_version_status", [])]
                if "AVAILABLE" in states:
                    return status
                last = f"version states {states}"
            except ServerReplyError as err:
                if err.code() not in (Code.UNAVAILABLE, Code.NOT_FOUND):
                    raise
                last = str(err)
            if time.monotonic() >= deadline:
                raise UserError(f"model {model!r} is not available after {timeout:g}s: {last}",
                                "check the server's log; is the model exported and listed in "
                                "its model config?")
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Close the gRPC channel (a later call opens a new one)."""
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._stubs.clear()

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- shared helpers ------------------------------------------------------------------------

    def _check_protocol(self, protocol: str) -> str:
        protocol = protocol.lower()
        if protocol not in (GRPC, REST):
            raise UserError(f"unknown protocol {protocol!r}", "use 'grpc' or 'rest'")
        if protocol == REST and self.rest_port is None:
            raise UserError("this client has no REST port", "pass rest_port= or use gRPC")
        return protocol

    def _signature_io(self, model: str, signature_name: str, version: int | None,
                      label: str | None, protocol: str) -> dict[str, dict[str, str]]:
        """The signature's input and output dtypes, fetched once per model/version/signature."""
        key = (model, signature_name, version, label)
        with self._lock:
            cached = self._signatures.get(key)
        if cached is None:
            cached = _signature_io(self.metadata(model, version, label, protocol), signature_name)
            with self._lock:
                self._signatures[key] = cached
        return cached

    @staticmethod
    def _cast(array: np.ndarray, dtype_name: str | None) -> np.ndarray:
        """Numbers in the signature's dtype (Python floats would otherwise be DT_DOUBLE)."""
        target = _NUMPY_DTYPES.get(dtype_name or "")
        if target is None or target is object or array.dtype.kind not in "biuf":
            return array
        return array.astype(target, copy=False)

    @staticmethod
    def _to_dict(message: Any) -> dict[str, Any]:
        from google.protobuf import json_format

        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    def _timed_out(self) -> ServerReplyError:
        return ServerReplyError(Code.DEADLINE_EXCEEDED, f"no answer within {self.timeout:g}s",
                                "try again, or give a longer timeout")

    def _unreachable(self, port: int, detail: str) -> ServerReplyError:
        address = _join_host(self.host, port)
        hint = START_HINT
        last_error = detail.lower()
        if "http1" in last_error or "parsing http/2" in last_error:  # an HTTP/1.1 server
            hint = ("that port answers HTTP/1.1: is it the REST port? Call it with REST "
                    "(`--rest`), or give the gRPC port (--port, 8500 by default)")
        return ServerReplyError(Code.UNAVAILABLE, f"model server not reachable at {address} "
                                f"({detail.split(';')[0]})", hint)

    # -- gRPC ----------------------------------------------------------------------------------

    @staticmethod
    def _model_spec(spec: Any, model: str, signature_name: str | None, version: int | None,
                    label: str | None) -> None:
        spec.name = model
        if signature_name:
            spec.signature_name = signature_name
        if version is not None and label is not None:
            raise UserError("both a version and a version label were given", "pass only one")
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label

    def _stub(self, service: str) -> Any:
        with self._lock:
            if self._channel is None:
                import grpc

                self._channel = grpc.insecure_channel(
                    _join_host(self.host, self.grpc_port),
                    options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                             ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
            if service not in self._stubs:
                from tensorflow_serving.apis import (
                    model_service_pb2_grpc,
                    prediction_service_pb2_grpc,
                )

                if service == "prediction":
                    stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
                else:
                    stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
                self._stubs[service] = stub
            return self._stubs[service]

    def _grpc(self, service: str, method: str, request: Any) -> Any:
        import grpc

        try:
            return getattr(self._stub(service), method)(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code = Code(err.code().value[0])
            details = err.details() or ""
            if code == Code.UNAVAILABLE and ("connect" in details or "resolv" in details
                                             or "Socket closed" in details):
                raise self._unreachable(self.grpc_port, details) from None
            if code == Code.DEADLINE_EXCEEDED:
                raise self._timed_out() from None
            raise ServerReplyError(code, details) from None

    def _predict_grpc(self, model: str, arrays: Mapping[str, np.ndarray], signature_name: str,
                      version: int | None, label: str | None) -> Prediction:
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, model, signature_name, version, label)
        for name, array in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        reply = self._grpc("prediction", "Predict", request)
        outputs = {name: tf.make_ndarray(proto) for name, proto in reply.outputs.items()}
        spec = reply.model_spec
        answered = spec.version.value if spec.HasField("version") else None
        return Prediction(outputs, model, answered, spec.signature_name or signature_name)

    # -- REST ----------------------------------------------------------------------------------

    @staticmethod
    def _rest_path(model: str, version: int | None, label: str | None, verb: str = "") -> str:
        if version is not None and label is not None:
            raise UserError("both a version and a version label were given", "pass only one")
        path = f"/v1/models/{urllib.parse.quote(model)}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{urllib.parse.quote(label)}"
        if verb == "metadata":
            return path + "/metadata"
        return path + (f":{verb}" if verb else "")

    def _rest(self, method: str, path: str, body: Any = None) -> Any:
        assert self.rest_port is not None
        url = f"http://{_join_host(self.host, self.rest_port)}{path}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text.strip() or err.reason
            raise ServerReplyError(_HTTP_CODES.get(err.code, Code.UNKNOWN),
                                   f"{message} (HTTP {err.code})") from None
        except TimeoutError:
            raise self._timed_out() from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise self._timed_out() from None
            raise self._unreachable(self.rest_port, str(err.reason)) from None
        except ConnectionError as err:
            raise self._unreachable(self.rest_port, str(err)) from None
        except http.client.HTTPException as err:  # e.g. the gRPC port, which speaks HTTP/2
            raise self._unreachable(
                self.rest_port, f"it does not answer HTTP/1.1 ({type(err).__name__}); is that "
                "the REST port (--rest_api_port, 8501 by default)?") from None

    def _predict_rest(self, model: str, arrays: Mapping[str, np.ndarray], signature_name: str,
                      version: int | None, label: str | None,
                      io: dict[str, dict[str, str]]) -> Prediction:
        body = {"signature_name": signature_name,
                "inputs": {name: _to_json(array) for name, array in arrays.items()}}
        reply = self._rest("POST", self._rest_path(model, version, label, "predict"), body)
        if "outputs" not in reply:
            raise ServerReplyError(Code.INTERNAL, f"reply without 'outputs': {str(reply)[:200]}")
        outputs = reply["outputs"]
        names = list(io["outputs"])
        # TF Serving's columnar reply names its outputs only when there are several.
        if len(names) == 1:
            outputs = {names[0]: outputs}
        elif not isinstance(outputs, dict):
            raise ServerReplyError(Code.INTERNAL, f"expected outputs {names}, got one tensor")
        arrays_out = {name: _from_json(value, io["outputs"].get(name))
                      for name, value in outputs.items()}
        return Prediction(arrays_out, model, version, signature_name)
