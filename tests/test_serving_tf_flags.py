"""tensorflow_model_server's flags and behaviours, over the wire.

Every flag of TF Serving 2.21 is accepted; the implemented ones are checked by what a client
sees: thread pools, gRPC channel arguments and UNIX socket, CORS, health names, SavedModel tags,
load retries, labels for versions not loaded yet, the signature method_name check (a native TF2
export answering :classify), warmup iterations, a base path that appears after the start, and
TF's model status by label and gRPC message cut.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_harness import (
    REPO,
    TESTDATA,
    ServerProcess,
    export_test_model,
    free_port,
    http,
    running_server,
    wait_for,
)
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.errors import UserError
from serving.flags import FLAGS, NO_EFFECT, TF_FLAGS, parse_flags

# The flags of TF Serving 2.21's tensorflow_serving/model_servers/main.cc, in its order.
TF_221_FLAGS = [
    "port", "grpc_socket_path", "rest_api_port", "rest_api_num_threads", "rest_api_timeout_in_ms",
    "rest_api_enable_cors_support", "enable_batching",
    "allow_version_labels_for_unavailable_models", "batching_parameters_file",
    "enable_per_model_batching_parameters", "model_config_file",
    "model_config_file_poll_wait_seconds", "model_name", "model_base_path", "num_load_threads",
    "num_unload_threads", "max_num_load_retries", "load_retry_interval_micros",
    "file_system_poll_wait_seconds", "flush_filesystem_caches", "tensorflow_session_parallelism",
    "tensorflow_session_config_file", "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism", "use_alts_credentials", "ssl_config_file",
    "platform_config_file", "per_process_gpu_memory_fraction", "saved_model_tags",
    "grpc_channel_arguments", "grpc_max_threads", "enable_model_warmup",
    "num_request_iterations_for_warmup", "version", "monitoring_config_file",
    "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model", "num_tflite_pools",
    "num_tflite_interpreters_per_pool", "enable_signature_method_name_check",
    "xla_cpu_compilation_enabled", "xla_gpu_compilation_enabled", "enable_profiler",
    "thread_pool_factory_config_file", "mixed_precision", "skip_initialize_tpu",
    "enable_grpc_healthcheck_service", "enable_serialization_as_tensor_content"
]


# ---- parsing ---------------------------------------------------------------------------------


def test_all_48_flags_of_tf_serving_221_are_known_in_its_order():
    assert len(TF_221_FLAGS) == 48
    assert [flag.name for flag in TF_FLAGS] == TF_221_FLAGS


def test_flags_parse_as_tensorflow_flags_parse_them():
    parsed = parse_flags([
        "--port=9000", "--rest_api_port", "9001", "--enable_batching", "--model_name=m",
        "--enable_model_warmup=false", "--rest_api_enable_cors_support", "true",
        "--file_system_poll_wait_seconds=0.5", "--xla_cpu_compilation_enabled",
        "--mystery_flag=3", "stray"])
    values = parsed.values
    assert (values["port"], values["rest_api_port"], values["model_name"]) == (9000, 9001, "m")
    assert values["enable_batching"] is True and values["enable_model_warmup"] is False
    assert values["rest_api_enable_cors_support"] is True
    assert values["file_system_poll_wait_seconds"] == 0.5
    assert parsed.unknown == ["--mystery_flag=3", "stray"]
    assert "xla_cpu_compilation_enabled" in parsed.given
    assert FLAGS["xla_cpu_compilation_enabled"].effect == NO_EFFECT
    # TF's defaults where nothing is given.
    defaults = parse_flags([]).values
    assert defaults["max_num_load_retries"] == 5
    assert defaults["load_retry_interval_micros"] == 60_000_000
    assert defaults["enable_signature_method_name_check"] is False
    assert defaults["saved_model_tags"] == "serve"
    with pytest.raises(UserError, match="--port=eight: not an integer"):
        parse_flags(["--port=eight"])
    # gRPC listened on 70000 % 65536 = 4464 while logging 70000; REST failed after loading.
    for bad in ("--port=70000", "--port=-1", "--rest_api_port=65536", "--rest_api_port=-5"):
        with pytest.raises(UserError, match="not a TCP port"):
            parse_flags([bad])
    assert parse_flags(["--port=65535", "--rest_api_port=0"]).values["port"] == 65535
    # A wait beyond TF's int32 killed the polling thread (OverflowError) while serving went on.
    for bad, reason in (("--file_system_poll_wait_seconds=1e12", "more than 2147483647"),
                        ("--model_config_file_poll_wait_seconds=nan", "not a finite number")):
        with pytest.raises(UserError, match=reason):
            parse_flags([bad])
    with pytest.raises(UserError, match="not a boolean"):
        parse_flags(["--enable_batching=maybe"])
    with pytest.raises(UserError, match="--model_name needs a value"):
        parse_flags(["--model_name"])


def test_docs_table_gives_every_flag_its_status():
    rows = [line for line in (REPO / "docs" / "serving.md").read_text().splitlines()
            if line.startswith("| `--")]
    documented = {line.split("`")[1].removeprefix("--"): line for line in rows}
    for flag in FLAGS.values():
        assert flag.name in documented, flag.name
        if flag.effect == NO_EFFECT:
            assert "no effect" in documented[flag.name], flag.name


def test_thread_pool_sizes_follow_tf_servings_precedence(tmp_path):
    from serving.model_server import ServerOptions, thread_pool_sizes

    config = tmp_path / "session.config"
    config.write_text("intra_op_parallelism_threads: 3\ninter_op_parallelism_threads: 5\n")
    assert thread_pool_sizes(ServerOptions()) == (0, 0)
    assert thread_pool_sizes(ServerOptions(tensorflow_session_config_file=str(config))) == (3, 5)
    assert thread_pool_sizes(ServerOptions(tensorflow_session_config_file=str(config),
                                           tensorflow_session_parallelism=2)) == (2, 2)
    assert thread_pool_sizes(ServerOptions(tensorflow_session_parallelism=2,
                                           tensorflow_inter_op_parallelism=1)) == (2, 1)
    config.write_text("intra_op_parallelism_threads: many\n")
    with pytest.raises(UserError, match=r"session\.config:1"):
        thread_pool_sizes(ServerOptions(tensorflow_session_config_file=str(config)))


def test_version_prints_both_versions_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "serving", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: 2.21")
    assert lines[1] == f"TensorFlow Library: {tf.__version__}"


# ---- one server with many flags --------------------------------------------------------------


def _sleep_body(seconds: float) -> dict:
    return {"signature_name": "sleep", "instances": [seconds]}


@pytest.fixture(scope="module")
def flagged(shared_data, tmp_path_factory):
    """A server started with a manifest's worth of TF flags, known, unknown and no-effect."""
    from serving.export import predict_log

    tmp = tmp_path_factory.mktemp("flags")
    exports = tmp / "exports"
    export_test_model(exports, "textual",
                      warmup=[predict_log({"text": np.array([b"warm"], dtype=object)})])
    socket_path = tmp / "grpc.sock"
    args = ["--model_name=textual", f"--model_base_path={exports / 'textual'}",
            f"--grpc_socket_path={socket_path}",
            "--grpc_channel_arguments=grpc.max_receive_message_length=4096,"
            "grpc.max_connection_age_ms=600000",
            "--rest_api_num_threads=1", "--rest_api_enable_cors_support",
            "--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism", "2",
            "--num_request_iterations_for_warmup=3", "--num_load_threads=2",
            "--num_unload_threads=1", "--saved_model_tags=serve",
            "--enable_grpc_healthcheck_service=true",
            "--per_process_gpu_memory_fraction=0.5", "--enable_profiler=false",
            "--xla_cpu_compilation_enabled", "--a_flag_from_the_future=1"]
    with running_server(args, tmp / "server.log") as server:
        yield {"server": server, "socket": socket_path}


def test_unknown_and_no_effect_flags_are_logged_and_the_server_starts(flagged):
    log = flagged["server"].log_text()
    assert "unknown argument: --a_flag_from_the_future=1" in log
    for name in ("per_process_gpu_memory_fraction", "enable_profiler",
                 "xla_cpu_compilation_enabled"):
        assert log.count(f"--{name} has no effect here") == 1, name
    assert "TensorFlow thread pools: intra-op 2, inter-op 2" in log
    status, _ = http("POST", f"{flagged['server'].url}/v1/models/textual:predict",
                     {"instances": ["ok"]})
    assert status == 200


def test_warmup_requests_are_replayed_num_request_iterations_times(flagged):
    assert "warmed up textual version 1 with 3 requests" in flagged["server"].log_text()


def test_rest_api_num_threads_bounds_concurrent_rest_work(flagged):
    url = f"{flagged['server'].url}/v1/models/textual:predict"
    results: list[int] = []
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(
        http("POST", url, _sleep_body(0.6))[0])) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One REST thread: the three sleeps run one after another.
    assert results == [200, 200, 200] and time.monotonic() - started >= 1.7


def test_grpc_on_a_unix_socket_with_the_channel_arguments(flagged):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "textual"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"via socket"],
                                                                   dtype=object)))
    with grpc.insecure_channel(f"unix:{flagged['socket']}") as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                                   timeout=30)
        assert tf.make_ndarray(reply.outputs["upper"]).tolist() == [b"VIA SOCKET"]
        # grpc.max_receive_message_length=4096 from --grpc_channel_arguments replaced ours.
        big = predict_pb2.PredictRequest()
        big.CopyFrom(request)
        big.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"x" * 10000],
                                                                   dtype=object)))
        with pytest.raises(grpc.RpcError) as caught:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(big, timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_cors_headers_and_preflight_as_tf_serving(flagged):
    url = f"{flagged['server'].url}/v1/models/textual:predict"
    preflight = urllib.request.Request(url, method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(preflight, timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert reply.headers["Access-Control-Allow-Methods"] == "POST, GET"
        assert reply.headers["Access-Control-Allow-Headers"] == "Content-Type"
    request = urllib.request.Request(url, data=json.dumps({"instances": ["x"]}).encode(),
                                     headers={"Origin": "https://app.example"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["Access-Control-Allow-Origin"] == "*"


def test_grpc_health_answers_for_tf_serving_service_names(flagged):
    stub = health_pb2_grpc.HealthStub(flagged["server"].channel)
    for service in ("", "tensorflow.serving.PredictionService",
                    "tensorflow.serving.ModelService"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_grpc_error_messages_are_cut_after_1024_characters_as_tf_does(flagged):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "textual"
    request.inputs["y" * 1500].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
    with pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(flagged["server"].channel).Predict(
            request, timeout=30)
    details = caught.value.details()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(details) == 1024 + len("...TRUNCATED") and details.endswith("...TRUNCATED")


# ---- TF2 exports and the signature method_name check -----------------------------------------


def _export_native_tf2_classifier(base: Path) -> Path:
    """A Keras-style TF2 export: every signature says predict; the input is not 'inputs'."""

    class Scorer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            spec = {"x": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
            positive = tf.sigmoid(tf.io.parse_example(examples, spec)["x"])
            return {"scores": tf.concat([1 - positive, positive], axis=1)}

    module = Scorer()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


@pytest.mark.parametrize("check", [False, True])
def test_native_tf2_export_answers_classify_unless_the_check_is_on(tmp_path, check):
    base = _export_native_tf2_classifier(tmp_path / "scorer")
    args = ["--model_name=scorer", f"--model_base_path={base}"]
    if check:
        args.append("--enable_signature_method_name_check")
    with running_server(args, tmp_path / "server.log") as server:
        status, reply = http("POST", f"{server.url}/v1/models/scorer:classify",
                             {"examples": [{"x": 0.0}, {"x": 4.0}]})
    if check:
        assert status == 400 and "method_name to be tensorflow/serving/classify" in reply["error"]
    else:
        assert status == 200, reply
        # Scores without classes: TF answers empty labels.
        assert [[label for label, _ in row] for row in reply["results"]] == [["", ""]] * 2
        assert reply["results"][0][1][1] == pytest.approx(0.5)
        assert reply["results"][1][1][1] == pytest.approx(1 / (1 + np.exp(-4.0)), rel=1e-5)


# ---- loading: tags, retries, labels, a base path that appears later -------------------------


def _copy_half_plus_two(shared_data: Path, target: Path) -> None:
    shutil.copytree(shared_data / TESTDATA / "saved_model_half_plus_two_cpu" / "00000123",
                    target)


def _export_tagged_tf1_model(path: Path, tags: list[str]) -> None:
    """A TF1-style SavedModel (y = 2x) whose one MetaGraph carries `tags`."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y = tf.identity(2.0 * x, name="y")
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, tags, signature_def_map={
            "serving_default": tf.compat.v1.saved_model.predict_signature_def({"x": x},
                                                                              {"y": y})})
        builder.save()


def test_saved_model_tags_name_the_metagraph_to_load(tmp_path):
    base = tmp_path / "tagged"
    _export_tagged_tf1_model(base / "1", ["serve", "custom"])
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--port=0", "--rest_api_port=0",
         f"--model_base_path={base}", "--max_num_load_retries=0"],
        cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    assert "no MetaGraph with tags ['serve']" in done.stderr
    with running_server([f"--model_base_path={base}", "--saved_model_tags=custom,serve"],
                        tmp_path / "server.log") as server:
        assert http("POST", f"{server.url}/v1/models/default:predict",
                    {"instances": [1.5]}) == (200, {"predictions": [3.0]})


def test_batching_file_without_enable_batching_is_a_startup_error(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\n")
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--port=0", "--rest_api_port=0",
         f"--model_base_path={tmp_path}", f"--batching_parameters_file={batching}"],
        cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    assert "without --enable_batching" in done.stderr.splitlines()[-1]


def test_late_base_path_failed_load_retried_and_label_for_a_version_not_loaded(
        shared_data, tmp_path):
    late, flaky = tmp_path / "late", tmp_path / "flaky"
    (flaky / "1").mkdir(parents=True)
    (flaky / "1" / "saved_model.pb").write_bytes(b"not yet a SavedModel")
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{\n'
        f'  config {{ name: "late" base_path: "{late}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "flaky" base_path: "{flaky}" model_platform: "tensorflow"\n'
        f'    model_version_policy {{ all {{}} }}\n'
        f'    version_labels {{ key: "next" value: 2 }} }}\n}}\n')
    server = ServerProcess([f"--model_config_file={config}",
                            "--file_system_poll_wait_seconds=0.3", "--max_num_load_retries=20",
                            "--load_retry_interval_micros=400000",
                            "--allow_version_labels_for_unavailable_models"],
                           tmp_path / "server.log")
    try:
        # The server waits for the missing base path (as TF does) instead of exiting...
        wait_for(lambda: "base path" in server.log_text() and "waiting for it"
                 in server.log_text(), timeout=90)
        time.sleep(1.0)
        assert server.process.poll() is None
        _copy_half_plus_two(shared_data, late / "7")
        # ... then retries the broken version on its timer until it can be loaded.
        wait_for(lambda: "retrying in 0.4 s" in server.log_text(), timeout=60)
        shutil.rmtree(flaky / "1")
        _copy_half_plus_two(shared_data, flaky / "1")
        server.wait_ready()
        for name in ("late", "flaky"):
            status, reply = http("POST", f"{server.url}/v1/models/{name}:predict",
                                 {"instances": [2.0]})
            assert (status, reply) == (200, {"predictions": [3.0]}), name
        # The label names version 2, not there yet: allowed by the flag, not servable yet.
        status, reply = http("POST", f"{server.url}/v1/models/flaky/labels/next:predict",
                             {"instances": [2.0]})
        assert status == 404 and "Specific(flaky, 2)" in reply["error"]
        _copy_half_plus_two(shared_data, flaky / "2")
        wait_for(lambda: http("POST", f"{server.url}/v1/models/flaky/labels/next:predict",
                              {"instances": [2.0]})[0] == 200)
        # Status by label: TF ignores the label and reports every version.
        status, reply = http("GET", f"{server.url}/v1/models/flaky/labels/next")
        assert status == 200
        assert {v["version"] for v in reply["model_version_status"]} == {"1", "2"}
    finally:
        server.stop()


# ---- TLS and mutual TLS ----------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """Throw-away certificates: a CA, a server certificate for localhost and a client's."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=rnnkit test CA", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={'localhost' if name == 'server' else name}",
                 cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                 f"{name}.ext", cwd=folder)
    return folder


def test_mutual_tls_on_grpc_and_rest(shared_data, certificates, tmp_path):
    import ssl

    pem = {name: (certificates / name).read_text() for name in
           ("ca.pem", "server.key", "server.pem", "client.key", "client.pem")}
    config = tmp_path / "ssl.config"
    config.write_text(f"server_key: {json.dumps(pem['server.key'])}\n"
                      f"server_cert: {json.dumps(pem['server.pem'])}\n"
                      f"custom_ca: {json.dumps(pem['ca.pem'])}\nclient_verify: true\n")
    base = tmp_path / "hp"
    _copy_half_plus_two(shared_data, base / "1")
    server = ServerProcess([f"--model_base_path={base}", f"--ssl_config_file={config}",
                            f"--rest_api_ssl_config_file={config}"], tmp_path / "server.log")
    try:
        wait_for(lambda: server.process.poll() is not None or "serving default" in
                 server.log_text(), timeout=120)
        assert server.process.poll() is None, server.log_text()[-2000:]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "default"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
        target = f"localhost:{server.grpc_port}"

        def grpc_predict(with_client_cert: bool, timeout: float) -> predict_pb2.PredictResponse:
            credentials = grpc.ssl_channel_credentials(
                pem["ca.pem"].encode(),
                *((pem["client.key"].encode(), pem["client.pem"].encode())
                  if with_client_cert else ()))
            with grpc.secure_channel(target, credentials) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                return stub.Predict(request, timeout=timeout)

        reply = grpc_predict(with_client_cert=True, timeout=15)
        assert tf.make_ndarray(reply.outputs["y"]).tolist() == [[3.0]]
        with pytest.raises(grpc.RpcError) as refused:
            grpc_predict(with_client_cert=False, timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        url = f"https://localhost:{server.rest_port}/v1/models/default:predict"
        body = json.dumps({"instances": [[2.0]]}).encode()
        context = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=15,
                                   context=context).read()
        context.load_cert_chain(str(certificates / "client.pem"),
                                str(certificates / "client.key"))
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=15,
                                    context=context) as answer:
            assert json.loads(answer.read()) == {"predictions": [[3.0]]}
    finally:
        server.stop()


@pytest.mark.parametrize("threads", [1, 2])
def test_num_load_threads_bounds_versions_loading_at_once(tmp_path, monkeypatch, threads):
    from tensorflow_serving.config import model_server_config_pb2

    from serving import model_manager

    loading, most = [0], [0]
    lock = threading.Lock()

    class Loaded:
        def __init__(self, name: str, version: int) -> None:
            self.name, self.version = name, version

        def wait_idle(self, timeout: float) -> bool:
            return True

        def close(self) -> None:
            pass

    def slow_load(name, version, path, tags):
        with lock:
            loading[0] += 1
            most[0] = max(most[0], loading[0])
        time.sleep(0.4)
        with lock:
            loading[0] -= 1
        return Loaded(name, version)

    monkeypatch.setattr(model_manager, "load_servable", slow_load)
    config = model_server_config_pb2.ModelServerConfig()
    for name in ("a", "b", "c"):
        (tmp_path / name / "1").mkdir(parents=True)
        config.model_config_list.config.add(name=name, base_path=str(tmp_path / name))
    manager = model_manager.ModelManager(poll_wait_seconds=0, load_threads=threads,
                                         unload_threads=1)
    try:
        manager.apply_config(config)
        assert manager.not_ready() == {}
    finally:
        manager.stop()
    assert most[0] == threads


def test_rest_port_equal_to_grpc_port_skips_rest_as_tf_does(shared_data, tmp_path, caplog):
    from serving.model_server import ModelServer, ServerOptions

    base = tmp_path / "hp"
    _copy_half_plus_two(shared_data, base / "1")
    port = free_port()
    server = ModelServer(ServerOptions(model_base_path=str(base), port=port, rest_api_port=port,
                                       file_system_poll_wait_seconds=0))
    assert server.start()
    try:
        assert server.rest is None and server.grpc is not None
        assert "--rest_api_port cannot be same as --port" in caplog.text
    finally:
        server.stop()


@pytest.mark.parametrize("threads", [1, 2])
def test_num_unload_threads_bounds_versions_unloading_at_once(tmp_path, monkeypatch, threads):
    from tensorflow_serving.config import model_server_config_pb2

    from serving import model_manager

    closing, most = [0], [0]
    lock = threading.Lock()

    class Loaded:
        def wait_idle(self, timeout: float) -> bool:
            return True

        def close(self) -> None:
            with lock:
                closing[0] += 1
                most[0] = max(most[0], closing[0])
            time.sleep(0.4)
            with lock:
                closing[0] -= 1

    monkeypatch.setattr(model_manager, "load_servable", lambda *args: Loaded())
    config = model_server_config_pb2.ModelServerConfig()
    for name in ("a", "b", "c"):
        (tmp_path / name / "1").mkdir(parents=True)
        config.model_config_list.config.add(name=name, base_path=str(tmp_path / name))
    manager = model_manager.ModelManager(poll_wait_seconds=0, load_threads=3,
                                         unload_threads=threads)
    try:
        manager.apply_config(config)
        manager.apply_config(model_server_config_pb2.ModelServerConfig(
            model_config_list=model_server_config_pb2.ModelConfigList()))
    finally:
        manager.stop()  # waits for the unloads
    assert most[0] == threads
