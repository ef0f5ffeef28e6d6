"""The model server over the wire: TF Serving's REST and gRPC APIs on TF Serving's own test models.

One server process serves half_plus_two (TF1, Session path), half_plus_three (TF1 that
tf.saved_model.load cannot load), the two-version model (all versions, labels) and a TF2 test
model; expected values come from TF Serving's documentation and golden metadata files.
"""

from __future__ import annotations

import base64
import gzip
import json
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_harness import TESTDATA, export_test_model, gzipped, http, running_server
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"
MAX_BODY = 100_000


@pytest.fixture(scope="module")
def server(shared_data, tmp_path_factory):
    """One server for the module, configured through --model_config_file."""
    from serving.export import predict_log

    tmp = tmp_path_factory.mktemp("api")
    data = shared_data / TESTDATA
    export_test_model(tmp / "exports", "textual",
                      warmup=[predict_log({"text": np.array([b"warm"], dtype=object)})])
    config = tmp / "models.config"
    config.write_text(f"""
model_config_list {{
  config {{ name: "half_plus_two" base_path: "{data / 'saved_model_half_plus_two_cpu'}"
           model_platform: "tensorflow" }}
  config {{ name: "half_plus_three" base_path: "{data / 'saved_model_half_plus_three'}"
           model_platform: "tensorflow" }}
  config {{ name: "{TWO_VERSIONS}" base_path: "{data / TWO_VERSIONS}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }}
           version_labels {{ key: "stable" value: 123 }}
           version_labels {{ key: "canary" value: 124 }} }}
  config {{ name: "textual" base_path: "exports/textual" model_platform: "tensorflow" }}
}}
""")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    args = [f"--model_config_file={config}", f"--monitoring_config_file={monitoring}",
            "--rest_api_timeout_in_ms=2000", f"--rest_api_max_body_bytes={MAX_BODY}",
            "--file_system_poll_wait_seconds=0"]
    with running_server(args, tmp / "server.log") as process:
        yield process


def golden(shared_data, name: str, model_name: str) -> dict:
    reply = json.loads((shared_data / TESTDATA / name).read_text())
    reply["model_spec"]["name"] = model_name
    return reply


def post(server, path: str, body) -> tuple[int, object]:
    return http("POST", f"{server.url}/v1/models/{path}", body)


# ---- REST ------------------------------------------------------------------------------------


def test_rest_predict_half_plus_two_as_in_tf_serving_docs(server):
    assert post(server, "half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})
    assert post(server, "half_plus_two:predict", {"inputs": [[1.0], [2.0], [5.0]]}) == (
        200, {"outputs": [[2.5], [3.0], [4.5]]})
    status, reply = http("POST", f"{server.url}/v1/models/half_plus_two:predict",
                         raw=gzipped({"instances": [1.0, 2.0, 5.0]}),
                         headers={"Content-Encoding": "gzip"})
    assert (status, reply) == (200, {"predictions": [2.5, 3.0, 4.5]})


def test_rest_half_plus_three_regress_and_predict(server):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert post(server, "half_plus_three:regress", body) == (200, {"results": [3.5, 4.0]})
    assert post(server, "half_plus_three:predict", {"instances": [[1.0], [2.0], [5.0]]}) == (
        200, {"predictions": [[3.5], [4.0], [5.5]]})


def test_rest_classify_and_regress_tf_examples(server):
    examples = {"examples": [{"x": 1.0}, {"x": 2.0}]}
    assert post(server, "half_plus_two:classify",
                {"signature_name": "classify_x_to_y", **examples}) == (
        200, {"results": [[["", 2.5]], [["", 3.0]]]})
    assert post(server, "half_plus_two:regress",
                {"signature_name": "regress_x_to_y", **examples}) == (200, {"results": [2.5, 3.0]})
    # regress_x_to_y2 computes 0.5 * x + 3 in the same graph.
    assert post(server, "half_plus_two:regress",
                {"signature_name": "regress_x_to_y2", **examples}) == (200, {"results": [3.5, 4.0]})
    # TF2 model: classes and scores, and a context merged into every example.
    status, reply = post(server, "textual:classify", {"signature_name": "classify",
                                                      "examples": [{"x": 0.0}, {"x": 2.0}]})
    assert status == 200
    assert reply["results"][0] == [["neg", 0.5], ["pos", 0.5]]
    assert [label for label, _ in reply["results"][1]] == ["neg", "pos"]
    assert reply["results"][1][1][1] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
    assert post(server, "textual:regress", {"signature_name": "regress", "context": {"bias": 1.0},
                                            "examples": [{"x": 1.0}, {"x": 2.0}]}) == (
        200, {"results": [3.0, 5.0]})


def test_rest_metadata_equals_tf_serving_golden_files(server, shared_data):
    status, reply = http("GET", f"{server.url}/v1/models/{TWO_VERSIONS}/versions/123/metadata")
    assert status == 200
    assert reply == golden(shared_data, f"{TWO_VERSIONS}_metadata.json", TWO_VERSIONS)
    status, reply = http("GET", f"{server.url}/v1/models/half_plus_two/metadata")
    assert status == 200
    assert reply == golden(shared_data, "half_plus_two_model_metadata.json", "half_plus_two")
    status, reply = http("GET", f"{server.url}/v1/models/{TWO_VERSIONS}/labels/canary/metadata")
    assert status == 200 and reply["model_spec"]["version"] == "124"


def test_rest_status_versions_and_labels(server):
    ok = {"error_code": "OK", "error_message": ""}
    status, reply = http("GET", f"{server.url}/v1/models/{TWO_VERSIONS}")
    assert status == 200
    assert reply == {"model_version_status": [
        {"version": "124", "state": "AVAILABLE", "status": ok},
        {"version": "123", "state": "AVAILABLE", "status": ok}]}
    status, reply = http("GET", f"{server.url}/v1/models/{TWO_VERSIONS}/versions/123")
    assert [entry["version"] for entry in reply["model_version_status"]] == ["123"]
    # As TF Serving's GetModelStatusImpl: a label does not narrow the status, all versions come.
    status, reply = http("GET", f"{server.url}/v1/models/{TWO_VERSIONS}/labels/stable")
    assert [entry["version"] for entry in reply["model_version_status"]] == ["124", "123"]
    for path in ("versions/123", "labels/stable", "labels/canary"):
        assert post(server, f"{TWO_VERSIONS}/{path}:predict", {"instances": [[2.0]]}) == (
            200, {"predictions": [[3.0]]})


def test_rest_text_model_base64_in_and_out(server):
    binary = b"\xff\x00ab"
    status, reply = post(server, "textual:predict",
                         {"instances": ["héllo", {"b64": base64.b64encode(binary).decode()}]})
    assert status == 200
    first, second = reply["predictions"]
    assert first == {"upper": "HéLLO", "length": len("héllo".encode()),
                     "text_bytes": {"b64": base64.b64encode("héllo".encode()).decode()}}
    assert second["length"] == 4
    assert base64.b64decode(second["text_bytes"]["b64"]) == binary
    # Not UTF-8 and not a *_bytes output: still sent intact, as base64.
    assert base64.b64decode(second["upper"]["b64"]) == b"\xff\x00AB"
    status, reply = post(server, "textual:predict", {"inputs": ["x", "yz"]})
    assert status == 200
    assert reply["outputs"]["upper"] == ["X", "YZ"] and reply["outputs"]["length"] == [1, 2]


def test_rest_multiple_inputs_row_and_columnar(server):
    status, reply = post(server, "textual:predict", {
        "signature_name": "add",
        "instances": [{"a": [0.1, 1.0], "b": [0.2, 2.0]}, {"a": [3.0, 4.0], "b": [1.0, 1.0]}]})
    assert status == 200
    # float32 results are written with float32's shortest digits: 0.1f + 0.2f is 0.3.
    assert reply == {"predictions": [{"sum": [0.3, 3.0], "diff": [-0.1, -1.0]},
                                     {"sum": [4.0, 5.0], "diff": [2.0, 3.0]}]}
    status, reply = post(server, "textual:predict", {
        "signature_name": "add", "inputs": {"a": [[1.0, 2.0]], "b": [[3.0, 4.0]]}})
    assert (status, reply) == (200, {"outputs": {"sum": [[4.0, 6.0]], "diff": [[-2.0, -2.0]]}})


@pytest.mark.parametrize(("path", "body", "code", "message"), [
    ("half_plus_two:predict", "not json", 400, "JSON Parse error"),
    ("half_plus_two:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
    ("half_plus_two:predict", {"instances": [1.0], "inputs": [1.0]}, 400, "only one of"),
    ("half_plus_two:predict", {"instances": []}, 400, "No values in 'instances'"),
    ("half_plus_two:predict", {"instances": [[1.0], [2.0, 3.0]]}, 400, "same shape"),
    ("half_plus_two:predict", {"instances": ["a"]}, 400, "is not of expected type: float"),
    ("half_plus_two:predict", {"instances": [1e39]}, 400, "without loss of precision"),
    ("half_plus_two:predict", {"signature_name": 7, "instances": [1.0]}, 400, "must be a string"),
    ("half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found'),
    ("textual:predict", {"signature_name": "add", "instances": [[1.0, 2.0]]}, 400,
     "expecting list of objects"),
    ("textual:predict", {"signature_name": "add", "instances": [{"a": [1.0, 2.0]}]}, 400,
     "keys must be equal to: a,b"),
    ("textual:predict", {"signature_name": "add", "inputs": {"a": [[1.0, 2.0]]}}, 400,
     "Missing named input: b"),
    ("textual:predict", {"signature_name": "__saved_model_init_op", "inputs": {}}, 400,
     "Failed to get input map for signature: __saved_model_init_op"),
    ("textual:predict", {"instances": [{"b64": "%%%"}]}, 400, "Unable to base64 decode"),
    # A rank or fixed size other than the signature's: named, before TensorFlow runs it.
    ("textual:predict", {"inputs": "one text"}, 400,
     "input 'text' has shape [], but signature 'serving_default' takes shape [-1]"),
    ("textual:predict", {"signature_name": "add", "inputs": {"a": [[1.0, 2.0, 3.0]],
                                                             "b": [[1.0, 2.0]]}}, 400,
     "input 'a' has shape [1, 3], but signature 'add' takes shape [-1, 2]"),
    # Bytes that are no tf.Example and no UTF-8: TensorFlow's error quotes them.
    ("textual:predict", {"signature_name": "classify", "instances": [{"b64": "eP/+"}]}, 400,
     "the model could not read the input"),
    ("half_plus_two:regress", {"signature_name": "regress_x_to_y"}, 400,
     "key 'examples' is expected"),
    ("half_plus_two:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]},
     400, "Unexpected element type in feature: x"),
    ("half_plus_two:classify", {"examples": [{"x": 1.0}]}, 400,
     # TF's default --enable_signature_method_name_check=false checks the outputs instead.
     "Expected classification signature outputs to contain 'classes' or 'scores'"),
    ("nope:predict", {"instances": [1.0]}, 404, "Servable not found for request: Latest(nope)"),
    ("half_plus_two/versions/7:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(half_plus_two, 7)"),
    # As in TF Serving, a label the config does not define is INVALID_ARGUMENT (400).
    ("half_plus_two/labels/nope:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: nope"),
])
def test_rest_errors(server, path, body, code, message):
    raw = body.encode() if isinstance(body, str) else None
    status, reply = http("POST", f"{server.url}/v1/models/{path}", body, raw=raw)
    assert status == code, reply
    assert message in reply["error"]


@pytest.mark.parametrize(("path", "code", "message"), [
    ("/v1/models/nope", 404, "Could not find any versions of model nope"),
    ("/v1/models/half_plus_two/versions/7", 404, "Could not find version 7 of model"),
    ("/v1/models/half_plus_two/versions/7/metadata", 404, "Servable not found"),
    ("/v1/models/half_plus_two:predict", 400, "Malformed request: GET"),
    ("/v1/something", 400, "Malformed request"),
    ("/nothing/here", 404, "Not found"),
])
def test_rest_get_errors(server, path, code, message):
    status, reply = http("GET", f"{server.url}{path}")
    assert status == code, reply
    assert message in reply["error"]


def test_rest_body_limit_and_gzip_errors(server):
    url = f"{server.url}/v1/models/half_plus_two:predict"
    big = {"instances": [1.0] * (MAX_BODY // 4)}
    status, reply = http("POST", url, big)
    assert status == 413 and "larger than the limit" in reply["error"]
    bomb = gzip.compress(b" " * (MAX_BODY * 20))  # small on the wire, too large unpacked
    status, reply = http("POST", url, raw=bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in reply["error"]
    status, reply = http("POST", url, raw=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in reply["error"]


def test_rest_timeout_answers_504(server):
    started = time.monotonic()
    status, reply = post(server, "textual:predict", {"signature_name": "sleep",
                                                     "instances": [4.0]})
    assert status == 504 and "rest_api_timeout_in_ms" in reply["error"]
    assert time.monotonic() - started < 3.5


def test_extensions_list_health_ready(server):
    status, reply = http("GET", f"{server.url}/v1/models")
    assert status == 200
    listed = {model["name"]: [v["version"] for v in model["model_version_status"]]
              for model in reply["models"]}
    assert listed == {"half_plus_two": ["123"], "half_plus_three": ["123"],
                      TWO_VERSIONS: ["124", "123"], "textual": ["1"]}
    assert http("GET", f"{server.url}/healthz") == (200, {"status": "alive"})
    assert http("GET", f"{server.url}/readyz") == (200, {"ready": True, "not_ready": {}})


def test_prometheus_metrics_page(server):
    post(server, "half_plus_two:predict", {"instances": [1.0]})
    status, page = http("GET", f"{server.url}/metrics")
    assert status == 200
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",status="OK"}' in page
    assert 'entrypoint="REST"' in page
    # The TF2 model's warmup request ran before it became AVAILABLE.
    warmup = [line for line in page.splitlines()
              if line.startswith(":tensorflow:serving:model_warmup_latency_count")]
    assert any("textual" in line and 'status="OK"' in line for line in warmup), warmup


# ---- gRPC ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prediction(server):
    return prediction_service_pb2_grpc.PredictionServiceStub(server.channel)


@pytest.fixture(scope="module")
def model_service(server):
    return model_service_pb2_grpc.ModelServiceStub(server.channel)


def predict_request(model: str, inputs: dict, signature: str = "",
                    **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_grpc_predict(prediction):
    reply = prediction.Predict(predict_request(
        "half_plus_two", {"x": np.array([[1.0], [2.0], [5.0]], np.float32)}), timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["y"]), [[2.5], [3.0], [4.5]])
    # As TF Serving, values travel in the typed field that clients often read directly.
    assert list(reply.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert (reply.model_spec.name, reply.model_spec.version.value,
            reply.model_spec.signature_name) == ("half_plus_two", 123, "serving_default")
    for spec, version in (({"version": 123}, 123), ({"label": "canary"}, 124), ({}, 124)):
        reply = prediction.Predict(predict_request(
            TWO_VERSIONS, {"x": np.array([[2.0]], np.float32)}, **spec), timeout=30)
        assert reply.model_spec.version.value == version
    request = predict_request("textual", {"a": np.ones((1, 2), np.float32),
                                          "b": np.ones((1, 2), np.float32)}, "add")
    request.output_filter.append("sum")
    reply = prediction.Predict(request, timeout=30)
    assert list(reply.outputs) == ["sum"]
    np.testing.assert_array_equal(tf.make_ndarray(reply.outputs["sum"]), [[2.0, 2.0]])
    reply = prediction.Predict(predict_request(
        "textual", {"text": np.array([b"a\xffb"], dtype=object)}), timeout=30)
    assert tf.make_ndarray(reply.outputs["upper"]).tolist() == [b"A\xffB"]


def examples(*values: float, feature: str = "x") -> list[tf.train.Example]:
    return [tf.train.Example(features=tf.train.Features(feature={
        feature: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))})) for v in values]


def test_grpc_classify_regress_multi_inference(prediction):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend(examples(1.0, 2.0))
    reply = prediction.Classify(request, timeout=30)
    assert [[c.score for c in row.classes] for row in reply.result.classifications] == [
        [2.5], [3.0]]
    assert reply.model_spec.version.value == 123
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_three"
    request.model_spec.signature_name = "tensorflow/serving/regress"
    request.input.example_list.examples.extend(examples(1.0, 2.0))
    reply = prediction.Regress(request, timeout=30)
    assert [r.value for r in reply.result.regressions] == [3.5, 4.0]
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y2", "tensorflow/serving/regress")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
    request.input.example_list.examples.extend(examples(4.0))
    reply = prediction.MultiInference(request, timeout=30)
    assert reply.results[0].classification_result.classifications[0].classes[0].score == 4.0
    assert reply.results[1].regression_result.regressions[0].value == 5.0
    assert reply.results[1].model_spec.signature_name == "regress_x_to_y2"


def test_grpc_metadata_equals_golden_file(prediction, shared_data):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = TWO_VERSIONS
    request.model_spec.version.value = 123
    reply = prediction.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signatures)
    as_json = {
        "model_spec": json_format.MessageToDict(
            reply.model_spec, preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True),
        "metadata": {"signature_def": json_format.MessageToDict(
            signatures, preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True)}}
    assert as_json == golden(shared_data, f"{TWO_VERSIONS}_metadata.json", TWO_VERSIONS)


def test_grpc_model_status(model_service):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = TWO_VERSIONS
    reply = model_service.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in reply.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]
    request.model_spec.version_label = "stable"  # TF reports every version for a label
    reply = model_service.GetModelStatus(request, timeout=30)
    assert [s.version for s in reply.model_version_status] == [124, 123]


def grpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_grpc_errors(prediction, model_service):
    x = {"x": np.array([[1.0]], np.float32)}
    cases = [
        (prediction.Predict, predict_request("nope", x), grpc.StatusCode.NOT_FOUND,
         "Servable not found"),
        (prediction.Predict, predict_request("half_plus_two", x, version=9),
         grpc.StatusCode.NOT_FOUND, "Specific(half_plus_two, 9)"),
        (prediction.Predict, predict_request("half_plus_two", x, label="nope"),
         grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"),
        (prediction.Predict, predict_request("half_plus_two", x, "nope"),
         grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found'),
        (prediction.Predict, predict_request("half_plus_two", {"x": np.array([[1]], np.int32)}),
         grpc.StatusCode.INVALID_ARGUMENT, "takes DT_FLOAT but the request sent DT_INT32"),
        (prediction.Predict, predict_request("half_plus_two", {"z": np.ones(1, np.float32)}),
         grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {x}"),
        (prediction.Predict, predict_request("textual", {}, "__saved_model_init_op"),
         grpc.StatusCode.INTERNAL, "Expected prediction signature method_name"),
        (prediction.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "half_plus_two"}), grpc.StatusCode.INVALID_ARGUMENT,
         "metadata_field"),
        (model_service.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(),
         grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        (model_service.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
            model_spec={"name": "nope"}), grpc.StatusCode.NOT_FOUND,
         "Could not find any versions of model nope"),
    ]
    for call, request, code, message in cases:
        error = grpc_error(call, request)
        assert error.code() == code, (request, error.details())
        assert message in error.details()
    request = predict_request("half_plus_two", x)
    request.output_filter.extend(["y", "y"])
    assert "duplicate output tensor alias" in grpc_error(prediction.Predict, request).details()


def test_grpc_health(server):
    stub = health_pb2_grpc.HealthStub(server.channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "tensorflow.serving.PredictionService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        assert reply.status == serving
    error = grpc_error(stub.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_the_http_layer_runs_on_uvloop():
    """uvloop is a dependency (outside Windows): REST and the web app are answered from its loop,
    which the one-client latency in docs/serving.md depends on."""
    import asyncio
    import urllib.request

    from serving.http_server import HttpServer

    async def app(scope, receive, send):
        loop = type(asyncio.get_running_loop())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body",
                    "body": f"{loop.__module__}.{loop.__name__}".encode()})

    server = HttpServer(app, "127.0.0.1", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/", timeout=10) as answer:
            name = answer.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert name.startswith("uvloop"), name
