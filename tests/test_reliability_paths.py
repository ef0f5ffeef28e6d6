"""Names and paths from requests never reach files outside the configured folders: model names,
version labels and versions on the model server (REST and gRPC), and the web app's static and
run-dir files; generated traversal paths (`../`, absolute, percent-encoded, double-encoded,
backslashes, NUL bytes, symlinks). Also the safe defaults: loopback binding, no pickle or eval."""

from __future__ import annotations

import re
import shutil
import socket
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_harness import export_test_model, free_port
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

REPO = Path(__file__).resolve().parent.parent
SECRET = b"\x89PNG\r\n\x1a\nSECRET-OUTSIDE-THE-SERVED-FOLDERS"
PATHS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])

# Path pieces that try to climb out of a folder, in the spellings servers get wrong.
SEGMENTS = ["..", ".", "%2e%2e", "%2E%2E", ".%2e", "%252e%252e", "..%2f", "..%2F", "%2f", "/",
            "\\", "..\\", "%5c", "%00", "\x00", "%c0%ae%c0%ae", "....//", "~", "etc", "passwd",
            "secret.png", "outside", "textual", "1", "stable", "sentiment", "r1", "curves.png",
            "link.png", "metrics.json"]
segments = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6)


def _get(port: int, path: str) -> tuple[int, bytes]:
    """GET a raw path (sent exactly as given) and return status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET " + path.encode("utf-8", "surrogateescape") +
                     b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Served folders, a valid SavedModel outside them, and secret files beside them."""
    tmp = tmp_path_factory.mktemp("paths")
    export_test_model(tmp / "served", "textual")
    shutil.copytree(tmp / "served" / "textual", tmp / "outside")  # a model nobody configured
    (tmp / "secret.png").write_bytes(SECRET)
    (tmp / "served" / "secret.png").write_bytes(SECRET)
    run = tmp / "runs" / "sentiment" / "r1"
    run.mkdir(parents=True)
    (run / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\ncurves")
    (run / "metrics.json").write_text('{"accuracy": 0.5}')
    (run / "link.png").symlink_to(tmp / "secret.png")
    return {"tmp": tmp, "runs": tmp / "runs"}


@pytest.fixture(scope="module")
def model_server(folders):
    """The model server in this process, serving only `served/textual`, with a label."""
    from serving.model_server import ModelServer, ServerOptions

    config = folders["tmp"] / "models.config"
    config.write_text('model_config_list { config { name: "textual" base_path: "served/textual" '
                      'model_platform: "tensorflow" version_labels { key: "stable" value: 1 } '
                      "} }\n")
    options = ServerOptions(port=free_port(), rest_api_port=free_port(),
                            model_config_file=str(config), file_system_poll_wait_seconds=0,
                            enable_model_warmup=False)
    server = ModelServer(options)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{options.port}")
    try:
        yield {"rest_port": options.rest_api_port, "channel": channel}
    finally:
        channel.close()
        server.stop()


def test_model_server_rest_paths_never_reach_other_files(model_server, folders):
    port = model_server["rest_port"]
    counts: Counter[int] = Counter()
    outside = str(folders["tmp"] / "outside").lstrip("/")

    @PATHS
    @given(pieces=segments, where=st.sampled_from(["name", "label", "version", "raw"]),
           verb=st.sampled_from(["", "/metadata"]))
    def check(pieces: list[str], where: str, verb: str) -> None:
        name = "".join(pieces)
        path = {"name": f"/v1/models/{name}", "label": f"/v1/models/textual/labels/{name}",
                "version": f"/v1/models/textual/versions/{name}",
                "raw": "/" + "/".join(pieces)}[where] + verb
        status, body = _get(port, path)
        counts[status] += 1
        assert status in (200, 400, 404), (path, status, body)
        assert b"SECRET" not in body
        if status == 200:  # only the configured model answers
            assert b'"textual"' in body or b'"version":"1"' in body or b'"models"' in body, body

    check()
    for name in ("..%2Foutside", "%2F" + outside.replace("/", "%2F"), "outside",
                 "textual%00", "textual%2F..%2F..%2Foutside"):
        assert _get(port, f"/v1/models/{name}")[0] == 404
    print(f"\nmodel server REST paths: {sum(counts.values())} cases, statuses {dict(counts)}")


def test_model_server_grpc_names_never_reach_other_models(model_server, folders):
    prediction = prediction_service_pb2_grpc.PredictionServiceStub(model_server["channel"])
    models = model_service_pb2_grpc.ModelServiceStub(model_server["channel"])
    text = tf.make_tensor_proto(np.array([b"x"], dtype=object))
    counts: Counter[str] = Counter()
    outside = str(folders["tmp"] / "outside")

    @PATHS
    @given(pieces=segments, as_label=st.booleans())
    def check(pieces: list[str], as_label: bool) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "textual" if as_label else "".join(pieces)
        if as_label:
            request.model_spec.version_label = "".join(pieces)
        request.inputs["text"].CopyFrom(text)
        try:
            prediction.Predict(request, timeout=20)
            counts["OK"] += 1
            assert "".join(pieces) == ("stable" if as_label else "textual")
        except grpc.RpcError as err:
            counts[err.code().name] += 1
            assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)

    check()
    for name in (outside, "../outside", "outside", "textual\x00", "textual/../../outside"):
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = name
        with pytest.raises(grpc.RpcError) as refused:
            models.GetModelStatus(status, timeout=20)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    print(f"\nmodel server gRPC names: {sum(counts.values())} cases, {dict(counts)}")


@pytest.fixture(scope="module")
def web_app(folders):
    """The web app on loopback, its model server unreachable (files need none)."""
    from web_harness import web_app_without_server

    with web_app_without_server(folders["runs"]) as server:
        yield server


def test_web_app_files_never_come_from_outside(web_app):
    port = web_app.server_address[1]
    counts: Counter[int] = Counter()

    @PATHS
    @given(prefix=st.sampled_from(["/static/", "/runs/", "/runs/sentiment/r1/", "/"]),
           pieces=segments)
    def check(prefix: str, pieces: list[str]) -> None:
        status, body = _get(port, prefix + "/".join(pieces))
        counts[status] += 1
        assert status in (200, 302, 400, 404, 405), status
        assert b"SECRET" not in body

    check()
    assert _get(port, "/runs/sentiment/r1/curves.png") == (200, b"\x89PNG\r\n\x1a\ncurves")
    assert _get(port, "/runs/sentiment/r1/link.png")[0] == 404
    print(f"\nweb app paths: {sum(counts.values())} cases, statuses {dict(counts)}")


def test_servers_bind_loopback_by_default():
    from app.cli import build_parser
    from serving.flags import parse_flags
    from serving.model_server import ServerOptions

    parser = build_parser()
    assert ServerOptions().host == "127.0.0.1"
    assert parse_flags(parser.parse_args(["serve"]).flags).values["host"] == "127.0.0.1"
    assert parser.parse_args(["app"]).host == "127.0.0.1"


# Ways to run code hidden in data: none may appear in the packages that read requests,
# configs, checkpoints or exports.
UNSAFE = re.compile(r"\bimport pickle\b|\bpickle\.|\bcPickle\b|\bmarshal\.|\bshelve\.|"
                    r"(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\(|yaml\.unsafe_load|"
                    r"allow_pickle\s*=\s*True|safe_mode\s*=\s*False|shell\s*=\s*True")


def test_no_pickle_eval_or_unsafe_loading_in_the_code():
    found = []
    for package in ("app", "models", "pipelines", "serving", "bench"):
        for path in sorted((REPO / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if UNSAFE.search(line):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert found == []
    assert UNSAFE.search("data = pickle.loads(body)") and UNSAFE.search("x = eval(text)")
