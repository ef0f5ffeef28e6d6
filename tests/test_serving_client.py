"""The serving client against stand-in servers speaking TF Serving's gRPC and REST wire formats.

The stand-ins answer as tensorflow_model_server does (its golden metadata reply for half_plus_two,
its columnar REST replies), so these tests check what the client sends and how it reads replies.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import re
import socket
import threading
import time
import urllib.request
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from app.cli import main
from serving.client import ServerReplyError, ServingClient
from serving.errors import UserError
from serving.status import Code

MODEL = "half_plus_two"
TEXT_SIGNATURE = {
    "inputs": {"text": {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]},
                        "name": "text:0"}},
    "outputs": {"upper": {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]},
                          "name": "upper:0"},
                "length": {"dtype": "DT_INT64", "tensor_shape": {"dim": [{"size": "-1"}]},
                           "name": "length:0"}},
    "method_name": "tensorflow/serving/predict",
}


@pytest.fixture(scope="module")
def golden_metadata(shared_data):
    """TF Serving's own GetModelMetadata reply for half_plus_two, plus a text signature."""
    path = shared_data / "tfserving-testdata" / "half_plus_two_model_metadata.json"
    reply = json.loads(path.read_text())
    reply["model_spec"]["name"] = MODEL
    reply["metadata"]["signature_def"]["signature_def"]["echo_text"] = TEXT_SIGNATURE
    return reply


def compute(signature: str, inputs: dict) -> dict:
    """What the stand-in model computes."""
    if signature == "echo_text":
        texts = [t.upper() for t in inputs["text"].reshape(-1)]
        return {"upper": np.array(texts, dtype=object),
                "length": np.array([len(t) for t in texts], dtype=np.int64)}
    return {"y": (0.5 * inputs["x"] + 2).astype(np.float32)}


class StandIn:
    """Counts status calls so tests can make a model become AVAILABLE after a while."""

    def __init__(self, metadata: dict) -> None:
        self.metadata = metadata
        self.status_calls = 0
        self.available_after = 0
        self.delay = 0.0
        self.rest_bodies: list[dict] = []
        self.grpc_requests: list[predict_pb2.PredictRequest] = []

    def status(self) -> dict:
        self.status_calls += 1
        state = "AVAILABLE" if self.status_calls > self.available_after else "LOADING"
        return {"model_version_status": [
            {"version": "123", "state": state, "status": {"error_code": "OK",
                                                          "error_message": ""}}]}


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, standin: StandIn) -> None:
        self.standin = standin

    def Predict(self, request, context):
        self.standin.grpc_requests.append(request)
        time.sleep(self.standin.delay)
        if request.model_spec.name != MODEL:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: Latest({request.model_spec.name})")
        signature = request.model_spec.signature_name or "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        if signature == "serving_default" and inputs["x"].dtype != np.float32:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Expects arg[0] to be float but double is provided")
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = MODEL
        reply.model_spec.signature_name = signature
        reply.model_spec.version.value = 123
        for name, value in compute(signature, inputs).items():
            reply.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return reply

    def GetModelMetadata(self, request, context):
        if request.model_spec.name != MODEL:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: Latest({request.model_spec.name})")
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        json_format.ParseDict(self.standin.metadata["metadata"]["signature_def"], signature_map)
        reply = get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = MODEL
        reply.model_spec.version.value = 123
        reply.metadata["signature_def"].Pack(signature_map)
        return reply


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, standin: StandIn) -> None:
        self.standin = standin

    def GetModelStatus(self, request, context):
        reply = get_model_status_pb2.GetModelStatusResponse()
        json_format.ParseDict(self.standin.status(), reply)
        return reply


def as_json_string(value: bytes):
    """Text as a JSON string, other bytes as {"b64": ...}."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def rest_handler(standin: StandIn):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            # The client may have given up waiting (the timeout test).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_GET(self):
            if self.path == f"/v1/models/{MODEL}/metadata":
                self.reply(200, standin.metadata)
            elif self.path == f"/v1/models/{MODEL}":
                self.reply(200, standin.status())
            elif self.path == "/v1/models":
                self.reply(200, {"models": [{"name": MODEL}]})
            else:
                self.reply(404, {"error": f"Servable not found for request: {self.path}"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            standin.rest_bodies.append(body)
            time.sleep(standin.delay)
            if not self.path.startswith(f"/v1/models/{MODEL}"):
                return self.reply(404, {"error": "Servable not found for request: Latest(x)"})
            signature = body.get("signature_name", "serving_default")
            inputs = {}
            for name, value in body["inputs"].items():
                if signature == "echo_text":
                    value = [base64.b64decode(v["b64"]) if isinstance(v, dict) else v.encode()
                             for v in value]
                    inputs[name] = np.array(value, dtype=object)
                else:
                    inputs[name] = np.asarray(value, dtype=np.float32)
            outputs = {k: [as_json_string(x) for x in v.tolist()] if v.dtype == object
                       else v.tolist() for k, v in compute(signature, inputs).items()}
            # TF Serving leaves a single output unnamed in a columnar reply.
            self.reply(200, {"outputs": outputs if len(outputs) > 1 else next(iter(
                outputs.values()))})

    return Handler


@pytest.fixture(scope="module")
def servers(golden_metadata):
    standin = StandIn(copy.deepcopy(golden_metadata))
    grpc_server = grpc.server(futures.ThreadPoolExecutor(4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(standin), grpc_server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(standin), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    http = ThreadingHTTPServer(("127.0.0.1", 0), rest_handler(standin))
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield standin, grpc_port, http.server_address[1]
    http.shutdown()
    http.server_close()
    grpc_server.stop(0)


@pytest.fixture
def client(servers):
    standin, grpc_port, rest_port = servers
    standin.delay = 0.0
    with ServingClient("127.0.0.1", grpc_port, rest_port, timeout=5.0) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_predict_numbers_casts_to_the_signature_dtype(client, protocol):
    # Python floats would be DT_DOUBLE; the signature says DT_FLOAT, as TF Serving insists.
    result = client.predict(MODEL, {"x": [[1.0], [2.0], [5.0]]}, protocol=protocol)
    assert list(result) == ["y"]
    assert result["y"].dtype == np.float32
    np.testing.assert_allclose(result["y"], [[2.5], [3.0], [4.5]])
    assert result.signature_name == "serving_default"


def test_grpc_reports_the_version_that_answered(client):
    result = client.predict(MODEL, [[3.0]])  # a list: the signature's only input
    assert result.version == 123
    np.testing.assert_allclose(result["y"], [[3.5]])


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_predict_text_and_bytes_with_several_outputs(client, servers, protocol):
    standin = servers[0]
    result = client.predict(MODEL, {"text": ["héllo", b"\xff\x00raw"]},
                            signature_name="echo_text", protocol=protocol)
    assert sorted(result) == ["length", "upper"]
    assert result["length"].dtype == np.int64
    if protocol == "rest":
        # bytes go as {"b64": ...}, as TF Serving's JSON requires for binary strings.
        sent = standin.rest_bodies[-1]["inputs"]["text"]
        assert sent[0] == {"b64": base64.b64encode("héllo".encode()).decode()}
        assert standin.rest_bodies[-1]["signature_name"] == "echo_text"
    else:
        assert standin.grpc_requests[-1].inputs["text"].dtype == tf.string.as_datatype_enum
    # The stand-in upper-cases bytes (ASCII letters only); both protocols return bytes.
    assert list(result["upper"]) == ["héllo".encode().upper(), b"\xff\x00RAW"]
    assert result["length"].tolist() == [6, 5]


def test_grpc_metadata_matches_tf_servings_rest_json(client, golden_metadata):
    metadata = client.metadata(MODEL)
    expected = golden_metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    got = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert got == expected
    assert metadata["model_spec"]["version"] == "123"


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_status_and_unknown_models(client, protocol):
    status = client.status(MODEL, protocol=protocol)
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert status["model_version_status"][0]["version"] == "123"
    with pytest.raises(ServerReplyError) as info:
        client.predict("nope", {"x": [[1.0]]}, protocol=protocol)
    assert info.value.code() == Code.NOT_FOUND
    assert "nope" in str(info.value)


def test_list_models_and_unknown_signature(client):
    assert [m["name"] for m in client.list_models()] == [MODEL]
    with pytest.raises(ServerReplyError, match="no signature 'nope'"):
        client.predict(MODEL, {"x": [[1.0]]}, signature_name="nope")


def test_wait_until_available_polls_until_a_version_is_loaded(client, servers):
    standin = servers[0]
    standin.available_after = standin.status_calls + 2
    status = client.wait_until_available(MODEL, timeout=10)
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert standin.status_calls >= standin.available_after + 1
    standin.available_after = 10**9
    started = time.monotonic()
    with pytest.raises(UserError, match="not available after"):
        client.wait_until_available(MODEL, timeout=0.5)
    assert time.monotonic() - started < 3
    standin.available_after = 0


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_unreachable_server_is_a_clear_user_error(protocol):
    port = free_port()
    client = ServingClient("127.0.0.1", port, port, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        client.predict(MODEL, {"x": [[1.0]]}, protocol=protocol)
    assert f"model server not reachable at 127.0.0.1:{port}" in str(info.value)
    assert "rnnkit serve" in str(info.value)
    assert info.value.code() == Code.UNAVAILABLE
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_slow_server_times_out(servers, protocol):
    standin, grpc_port, rest_port = servers
    client = ServingClient("127.0.0.1", grpc_port, rest_port, timeout=0.3)
    client.metadata(MODEL, protocol=protocol)
    standin.delay = 1.0
    try:
        with pytest.raises(ServerReplyError) as info:
            client.predict(MODEL, {"x": [[1.0]]}, protocol=protocol)
        assert info.value.code() == Code.DEADLINE_EXCEEDED
    finally:
        standin.delay = 0.0
        client.close()


@pytest.mark.parametrize("protocol", ["--grpc", "--rest"])
def test_predict_command_prints_json(servers, capsys, protocol):
    _, grpc_port, rest_port = servers
    port = grpc_port if protocol == "--grpc" else rest_port
    code = main(["predict", "--model", MODEL, protocol, "--server", f"127.0.0.1:{port}",
                 "1.0", "2.0", "5.0"])
    assert code == 0
    reply = json.loads(capsys.readouterr().out)
    # half_plus_two's input has shape [-1, 1]: three numbers become a batch of three rows.
    assert reply["outputs"]["y"] == [[2.5], [3.0], [4.5]]
    assert reply["model"] == MODEL and reply["signature_name"] == "serving_default"


def test_predict_command_sends_files_as_bytes(servers, capsys, tmp_path):
    standin, grpc_port, _ = servers
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"\xff\xd8\xffjpeg")
    code = main(["predict", "--model", MODEL, "--server", f"127.0.0.1:{grpc_port}",
                 "--signature", "echo_text", f"@{image}", "@@handle", "plain"])
    assert code == 0
    sent = tf.make_ndarray(standin.grpc_requests[-1].inputs["text"]).tolist()
    assert sent == [b"\xff\xd8\xffjpeg", b"@handle", b"plain"]
    reply = json.loads(capsys.readouterr().out)
    assert reply["outputs"]["upper"] == [
        {"b64": base64.b64encode(b"\xff\xd8\xffJPEG").decode()}, "@HANDLE", "PLAIN"]
    assert reply["version"] == 123


def test_predict_command_errors_are_one_line(servers, capsys):
    _, grpc_port, _ = servers
    assert main(["predict", "--model", MODEL, "--server", f"127.0.0.1:{grpc_port}",
                 "many"]) == 2
    assert "is not a number" in capsys.readouterr().err
    assert main(["predict", "--model", MODEL, "--server", f"127.0.0.1:{free_port()}",
                 "1.0"]) == 2
    err = capsys.readouterr().err
    assert "model server not reachable" in err and err.count("\n") == 1


def test_predict_command_takes_urls_and_names_a_wrong_port_or_address(servers, capsys):
    standin, grpc_port, rest_port = servers
    assert main(["predict", "--model", MODEL, "--rest", "--server",
                 f"http://127.0.0.1:{rest_port}/", "1.0"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["y"] == [[2.5]]
    assert main(["predict", "--model", MODEL, "--server", f"grpc://127.0.0.1:{grpc_port}",
                 "1.0"]) == 0
    capsys.readouterr()
    # HTTP/1.1 to the gRPC port: one line, not http.client's traceback.
    assert main(["predict", "--model", MODEL, "--rest", "--server", f"127.0.0.1:{grpc_port}",
                 "1.0"]) == 2
    err = capsys.readouterr().err
    assert "model server not reachable" in err and err.count("\n") == 1, err
    # And gRPC to the REST port: the hint names the mix-up.
    assert main(["predict", "--model", MODEL, "--server", f"127.0.0.1:{rest_port}",
                 "1.0"]) == 2
    err = capsys.readouterr().err
    assert "is it the REST port?" in err and err.count("\n") == 1, err
    assert main(["predict", "--model", MODEL, "--rest", "--server", "localhost:abc",
                 "1.0"]) == 2
    assert "pass the model server's REST address" in capsys.readouterr().err
    # `rnnkit generate` against a model that is no language model says so, in one line.
    assert main(["generate", "The movie was", "--model", MODEL, "--server",
                 f"127.0.0.1:{grpc_port}"]) == 2
    err = capsys.readouterr().err
    assert "it is not a language model export" in err and "--temperature" not in err, err
    # A command-line argument that is not UTF-8 (Python sees surrogates) goes as its bytes.
    assert main(["predict", "--model", MODEL, "--server", f"127.0.0.1:{grpc_port}",
                 "--signature", "echo_text", "caf\udce9"]) == 0
    assert tf.make_ndarray(standin.grpc_requests[-1].inputs["text"]).tolist() == [b"caf\xe9"]


@pytest.fixture(scope="module")
def real_server(shared_data, tmp_path_factory):
    """Our model server on half_plus_two, with batching and the Prometheus page on."""
    from serving.model_server import ModelServer, ServerOptions

    folder = tmp_path_factory.mktemp("real_server")
    batching = folder / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 50000 }\n"
                        "num_batch_threads { value: 1 }\n")
    monitoring = folder / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    options = ServerOptions(
        port=free_port(), rest_api_port=free_port(), model_name=MODEL,
        model_base_path=str(shared_data / "tfserving-testdata" / "saved_model_half_plus_two_cpu"),
        enable_batching=True, batching_parameters_file=str(batching),
        monitoring_config_file=str(monitoring),
        file_system_poll_wait_seconds=0, shutdown_grace_seconds=1)
    server = ModelServer(options)
    server.start()
    yield options
    server.stop()


def test_against_our_server_batching_and_metrics(real_server, golden_metadata):
    options = real_server
    client = ServingClient("127.0.0.1", options.port, options.rest_api_port, timeout=10)
    with client:
        for protocol in ("grpc", "rest"):
            reply = client.metadata(MODEL, protocol=protocol)
            assert reply["metadata"]["signature_def"]["signature_def"]["serving_default"] == (
                golden_metadata["metadata"]["signature_def"]["signature_def"]["serving_default"])
        values = [float(v) for v in range(12)]
        with futures.ThreadPoolExecutor(len(values)) as pool:
            replies = list(pool.map(
                lambda v: client.predict(MODEL, {"x": [[v]]}, protocol="grpc"), values))
        for value, reply in zip(values, replies, strict=True):
            np.testing.assert_allclose(reply["y"], [[0.5 * value + 2]])
            assert reply.version == 123
        request = urllib.request.Request(f"http://127.0.0.1:{options.rest_api_port}/metrics")
        with urllib.request.urlopen(request, timeout=10) as page:
            text = page.read().decode()
    # prometheus_client writes every value as a float ("12.0").
    runs = re.search(r"^:tensorflow:serving:batching_session:wrapped_run_count ([\d.]+)$", text,
                     re.M)
    assert runs is not None, text[:500]
    assert float(runs.group(1)) < len(values), "concurrent requests were not batched"
    count = re.search(r'^:tensorflow:serving:request_count\{model_name="half_plus_two",'
                      r'status="OK"\} ([\d.]+)$', text, re.M)
    assert count is not None and float(count.group(1)) >= len(values) + 2


def test_predict_command_says_a_several_input_signature_needs_the_python_client():
    """--input-name cannot help: a signature runs only with all its inputs."""
    from app.commands.predict import build_inputs

    io = {"text": {"dtype": "DT_STRING"}, "temperature": {"dtype": "DT_FLOAT"}}
    with pytest.raises(UserError, match="rnnkit predict sends one") as err:
        build_inputs(["The movie was"], io, None)
    assert "--input-name" not in err.value.fix and "ServingClient.predict" in err.value.fix
