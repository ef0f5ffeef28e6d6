"""Model server lifecycle over the wire: new versions by polling, broken versions, warmup,
config reloads, batching's queue limit, readiness, and a clean SIGTERM shutdown."""

from __future__ import annotations

import shutil
import signal
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from serving_harness import (
    TESTDATA,
    export_test_model,
    http,
    running_server,
    wait_for,
)
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

TWO_VERSIONS = "saved_model_half_plus_two_2_versions"


def config_text(models: dict[str, str], extra: str = "") -> str:
    entries = "".join(f'  config {{ name: "{name}" base_path: "{path}" '
                      f'model_platform: "tensorflow" {extra if name == "hp" else ""} }}\n'
                      for name, path in models.items())
    return f"model_config_list {{\n{entries}}}\n"


@pytest.fixture(scope="module")
def world(shared_data, tmp_path_factory):
    """A server polling a temporary copy of the two-version model, with batching on."""
    from serving.export import predict_log

    tmp = tmp_path_factory.mktemp("lifecycle")
    source = shared_data / TESTDATA / TWO_VERSIONS
    hp = tmp / "hp"
    hp.mkdir()
    shutil.copytree(source / "00000123", hp / "123")
    exports = tmp / "exports"
    export_test_model(exports, "textual",
                      warmup=[predict_log({"text": np.array([b"warm"], dtype=object)})])
    config = tmp / "models.config"
    config.write_text(config_text({"hp": str(hp), "textual": str(exports / "textual")}))
    batching = tmp / "batching.config"
    batching.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\n"
                        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    args = [f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=0.5",
            "--file_system_poll_wait_seconds=0.3", "--enable_batching",
            f"--batching_parameters_file={batching}", f"--monitoring_config_file={monitoring}",
            "--rest_api_timeout_in_ms=0", "--max_num_load_retries=0"]
    with running_server(args, tmp / "server.log") as server:
        yield {"server": server, "tmp": tmp, "hp": hp, "source": source, "config": config,
               "exports": exports}


def versions(server, model: str) -> dict[str, tuple[str, str]]:
    status, reply = http("GET", f"{server.url}/v1/models/{model}")
    if status != 200:
        return {}
    return {entry["version"]: (entry["state"], entry["status"]["error_code"])
            for entry in reply["model_version_status"]}


def grpc_predict(server, model: str, x: float) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[x]], np.float32)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    return stub.Predict(request, timeout=30)


def publish(source, target) -> None:
    """Copy a version in atomically, as an exporter should (rename into place)."""
    staging = target.parent / f".staging-{target.name}"
    shutil.copytree(source, staging)
    staging.rename(target)


def test_new_version_is_served_without_a_failed_request(world):
    server, hp = world["server"], world["hp"]
    answered: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                reply = grpc_predict(server, "hp", 2.0)
                answered.append(reply.model_spec.version.value)
                if tf.make_ndarray(reply.outputs["y"]).tolist() != [[3.0]]:
                    failures.append("wrong value")
            except grpc.RpcError as err:
                failures.append(f"{err.code()}: {err.details()}")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_for(lambda: len(answered) > 5)
        publish(world["source"] / "00000124", hp / "124")
        wait_for(lambda: versions(server, "hp") == {"124": ("AVAILABLE", "OK"),
                                                    "123": ("END", "OK")})
        count = len(answered)
        wait_for(lambda: len(answered) > count + 5)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert set(answered) == {123, 124} and answered[-1] == 124


def test_broken_version_is_reported_while_the_previous_serves(world):
    server, hp = world["server"], world["hp"]
    broken = hp / "125"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    wait_for(lambda: versions(server, "hp").get("125", ("", ""))[0] == "END")
    _, reply = http("GET", f"{server.url}/v1/models/hp/versions/125")
    status = reply["model_version_status"][0]["status"]
    assert status["error_code"] == "DATA_LOSS" and "cannot parse" in status["error_message"]
    assert grpc_predict(server, "hp", 2.0).model_spec.version.value == 124
    assert http("GET", f"{server.url}/readyz")[0] == 200
    # Rewriting the broken folder makes the server try it again.
    shutil.rmtree(broken)
    publish(world["source"] / "00000124", broken)
    wait_for(lambda: versions(server, "hp").get("125") == ("AVAILABLE", "OK"))
    assert grpc_predict(server, "hp", 2.0).model_spec.version.value == 125


def test_failed_warmup_keeps_a_version_from_serving(world):
    from serving.export import predict_log

    server = world["server"]
    bad_request = predict_log({"text": np.array([b"x"], dtype=object)}, signature_name="nope")
    export_test_model(world["exports"], "textual", offset=1.0, warmup=[bad_request])
    wait_for(lambda: versions(server, "textual").get("2", ("", ""))[0] == "END")
    _, reply = http("GET", f"{server.url}/v1/models/textual/versions/2")
    assert "warmup request 1 of 1 failed" in reply["model_version_status"][0]["status"][
        "error_message"]
    assert versions(server, "textual")["1"] == ("AVAILABLE", "OK")
    _, page = http("GET", f"{server.url}/monitoring/prometheus/metrics")
    assert 'status="success"' in page and 'status="fail"' in page  # load attempts


def test_config_file_changes_are_applied(world):
    server, config = world["server"], world["config"]
    models = {"hp": str(world["hp"]), "textual": str(world["exports"] / "textual")}
    half_plus_three = world["source"].parent / "saved_model_half_plus_three"
    config.write_text(config_text({**models, "three": str(half_plus_three)},
                                  'model_version_policy { specific { versions: 123 } } '
                                  'version_labels { key: "old" value: 123 }'))
    wait_for(lambda: versions(server, "three") == {"123": ("AVAILABLE", "OK")})
    wait_for(lambda: versions(server, "hp").get("123") == ("AVAILABLE", "OK"))
    wait_for(lambda: versions(server, "hp").get("125") == ("END", "OK"))
    reply = wait_for(lambda: http("POST", f"{server.url}/v1/models/hp/labels/old:predict",
                                  {"instances": [[2.0]]}))
    assert reply == (200, {"predictions": [[3.0]]})
    config.write_text(config_text(models))
    wait_for(lambda: versions(server, "three") == {})
    assert http("GET", f"{server.url}/v1/models/three")[0] == 404
    # A file that stays broken is logged once, not at every poll (every 0.5 s here), and the
    # models go on serving.
    config.write_text("model_config_list { config { name: ")
    time.sleep(3)
    assert server.log_text().count(f"reloading {config} failed") == 1
    assert versions(server, "textual")
    config.write_text(config_text(models))


def reload(server, text: str) -> tuple[grpc.StatusCode, str]:
    """Send HandleReloadConfigRequest; returns the gRPC status code and details."""
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    stub = model_service_pb2_grpc.ModelServiceStub(server.channel)
    try:
        reply = stub.HandleReloadConfigRequest(request, timeout=60)
    except grpc.RpcError as err:
        return err.code(), err.details()
    assert reply.status.error_code == 0
    return grpc.StatusCode.OK, ""


def test_handle_reload_config_request(world):
    server, hp = world["server"], world["hp"]
    textual = str(world["exports"] / "textual")
    policy = "model_version_policy { latest { num_versions: 2 } }"
    assert reload(server, config_text({"hp": str(hp), "textual": textual}, policy)) == (
        grpc.StatusCode.OK, "")
    wait_for(lambda: {v for v, (state, _) in versions(server, "hp").items()
                      if state == "AVAILABLE"} == {"124", "125"})
    code, details = reload(server, config_text({"hp": "relative/path"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "absolute path" in details
    code, details = reload(server, config_text({"hp": str(hp), "textual": textual},
                                               'version_labels { key: "gone" value: 999 }'))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "version 999 of model hp" in details


def test_readyz_reports_a_model_without_versions(world, tmp_path):
    server = world["server"]
    models = {"hp": str(world["hp"]), "textual": str(world["exports"] / "textual")}
    empty = tmp_path / "empty"
    empty.mkdir()
    code, details = reload(server, config_text({**models, "empty": str(empty)}))
    assert code == grpc.StatusCode.UNKNOWN and "did not become available: empty" in details
    status, ready = http("GET", f"{server.url}/readyz")
    assert status == 503 and "no version directories" in ready["not_ready"]["empty"]
    assert reload(server, config_text(models)) == (grpc.StatusCode.OK, "")
    assert http("GET", f"{server.url}/readyz")[0] == 200


def test_full_batch_queue_answers_503_as_tf_serving(world):
    server = world["server"]
    url = f"{server.url}/v1/models/textual/versions/1:predict"
    results: dict[str, int] = {}

    def send(name: str, seconds: list[float]) -> None:
        results[name] = http("POST", url, {"signature_name": "sleep", "instances": seconds})[0]

    busy = threading.Thread(target=send, args=("busy", [1.5]))
    busy.start()
    time.sleep(0.5)  # the only batch thread is now sleeping
    queued = threading.Thread(target=send, args=("queued", [0.0] * 4))
    queued.start()
    time.sleep(0.3)  # a full batch waits in the queue (max_enqueued_batches 1)
    status, reply = http("POST", url, {"signature_name": "sleep", "instances": [0.0]})
    busy.join()
    queued.join()
    assert status == 503 and "queue" in reply["error"]  # UNAVAILABLE, as TF's batcher
    assert results == {"busy": 200, "queued": 200}


def test_sigterm_lets_the_request_in_flight_finish(world):
    server = world["server"]
    result: list[tuple[int, object]] = []
    request = threading.Thread(target=lambda: result.append(http(
        "POST", f"{server.url}/v1/models/textual/versions/1:predict",
        {"signature_name": "sleep", "instances": [1.0]})))
    request.start()
    time.sleep(0.5)
    server.process.send_signal(signal.SIGTERM)
    request.join()
    assert result == [(200, {"predictions": [1.0]})]
    assert server.process.wait(30) == 0
    assert "model server stopped" in server.log_text()


def test_startup_fails_clearly_when_the_only_version_is_broken(tmp_path):
    from serving.errors import UserError
    from serving.model_server import ModelServer, ServerOptions

    (tmp_path / "model" / "1").mkdir(parents=True)
    (tmp_path / "model" / "1" / "saved_model.pb").write_bytes(b"garbage")
    server = ModelServer(ServerOptions(model_base_path=str(tmp_path / "model"), port=0,
                                       rest_api_port=0, max_num_load_retries=0))
    with pytest.raises(UserError, match=r"model\(s\) failed to load: default: version 1: "):
        server.start()


def test_config_errors_are_user_errors(tmp_path):
    from serving.errors import UserError
    from serving.model_server import ServerOptions, model_server_config

    with pytest.raises(UserError, match="no model to serve"):
        model_server_config(ServerOptions())
    with pytest.raises(UserError, match="is not a folder"):
        model_server_config(ServerOptions(model_base_path=str(tmp_path / "missing"),
                                          file_system_poll_wait_seconds=0))
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "m" base_path: "rel" } }')
    (tmp_path / "rel").mkdir()
    parsed = model_server_config(ServerOptions(model_config_file=str(config)))
    expected = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path / "rel"}" '
                      "} }", expected)
    assert parsed == expected
