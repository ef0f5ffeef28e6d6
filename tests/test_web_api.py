"""The web app's JSON API, pages and run-dir files over real HTTP, without a browser."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from web_harness import closed_port, web_app_without_server

from app.cli import main as cli_main
from app.web.server import WebServer, make_server, parse_server
from serving.errors import UserError

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"plot bytes"
SECRET = b"\x89PNG\r\n\x1a\nsecret outside the runs dir"


def _request(server: WebServer, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """Send one raw request (the path exactly as given, no normalisation) and read the answer."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        # Header names are case-insensitive (uvicorn sends them lower-case): look them up so.
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _json(server: WebServer, method: str, path: str, data: object = None) -> tuple[int, dict]:
    body = None if data is None else json.dumps(data).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, raw = _request(server, method, path, body, headers)
    return status, json.loads(raw)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs dir with a training run, a gradient-lab run, and a secret file beside it."""
    tmp_path = tmp_path_factory.mktemp("web")
    root = tmp_path / "runs"
    run = root / "sentiment" / "20250101-120000"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"best_epoch": 3, "val_accuracy": [0.7, 0.81]}))
    (run / "evaluation.json").write_text(json.dumps({"test": {"accuracy": 0.8512}}))
    (run / "curves.png").write_bytes(PNG)
    (run / ".tmp-curves.png-123").write_bytes(PNG)  # a half-written file: never listed
    (run / "checkpoints").mkdir()
    lab = root / "lab" / "20250102-090000"
    lab.mkdir(parents=True)
    (lab / "lab.json").write_text(json.dumps({"adding": {"rnn": {"learned": False}}}))
    (lab / "report.md").write_text("# Gradient lab\nvanilla RNN gradients vanish\n")
    (lab / "gradient_norms.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(SECRET)
    (run / "escape.png").symlink_to(tmp_path / "secret.png")
    return root


@pytest.fixture(scope="module")
def down_app(runs_dir: Path) -> Iterator[WebServer]:
    """The web app on a free port, pointed at a model server that is not running."""
    with web_app_without_server(runs_dir) as server:
        yield server


def test_server_down_gives_503_naming_the_address_and_the_fix(down_app: WebServer) -> None:
    address = down_app.api.server
    for method, path, data in (("POST", "/api/predict", {"model": "sentiment",
                                                          "text": "a fine film"}),
                               ("POST", "/api/predict", {"model": "translator", "text": "hola"}),
                               ("GET", "/api/models", None),
                               ("GET", "/api/health", None)):
        status, body = _json(down_app, method, path, data)
        assert status == 503, (path, body)
        assert body["error"]["code"] == "server_unreachable"
        assert body["error"]["message"] == f"model server not reachable at {address}"
        assert "rnnkit serve" in body["error"]["fix"]
    status, _, raw = _request(down_app, "POST", "/api/caption", PNG,
                              {"Content-Type": "image/png"})
    assert status == 503 and b"not reachable" in raw and b"Traceback" not in raw


def _status_only_server(port: int):
    """A gRPC server on `port` answering GetModelStatus only: every model AVAILABLE."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
    )

    class Status(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            reply = get_model_status_pb2.GetModelStatusResponse()
            version = reply.model_version_status.add()
            version.version = 1
            version.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Status(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def test_a_model_server_started_after_the_app_is_seen_at_once(runs_dir: Path) -> None:
    port = closed_port()
    app = make_server(f"127.0.0.1:{port}", "127.0.0.1", 0, runs_dir, timeout=3.0)
    thread = threading.Thread(target=app.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    grpc_server = None
    try:
        for _ in range(4):  # failures that would grow gRPC's reconnect back-off to seconds
            assert _json(app, "GET", "/api/health")[0] == 503
        grpc_server = _status_only_server(port)
        start = time.monotonic()
        status, body = _json(app, "GET", "/api/health")
        assert (status, body["reachable"]) == (200, True)
        assert time.monotonic() - start < 2.0
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=None)
        app.shutdown()
        app.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("path", [
    "/runs/../secret.png",
    "/runs/%2e%2e/secret.png",
    "/runs/sentiment/..%2f..%2f..%2fsecret.png",
    "/runs/sentiment/20250101-120000/../../../secret.png",
    "/runs/sentiment/20250101-120000/escape.png",  # a symlink pointing outside
    "/runs/%2Fetc/passwd",
    "/runs//etc/hostname",
    "/runs/sentiment/20250101-120000/.tmp-curves.png-123",
    "/runs/sentiment/20250101-120000/metrics.json%00.png",
    "/runs/sentiment/20250101-120000/..%5c..%5csecret.png",
    "/static/../../../pyproject.toml",
    "/static/%2e%2e/server.py",
])
def test_files_outside_the_runs_dir_cannot_be_read(down_app: WebServer, path: str) -> None:
    status, _, raw = _request(down_app, "GET", path)
    assert status == 404
    assert SECRET not in raw and b"root:" not in raw


def test_run_files_are_served_with_their_type(down_app: WebServer) -> None:
    status, headers, raw = _request(down_app, "GET", "/runs/sentiment/20250101-120000/curves.png")
    assert (status, headers["Content-Type"], raw) == (200, "image/png", PNG)
    status, headers, raw = _request(down_app, "GET", "/runs/sentiment/20250101-120000/metrics.json")
    assert status == 200 and json.loads(raw)["best_epoch"] == 3
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_results_api_lists_training_and_lab_runs(down_app: WebServer) -> None:
    status, body = _json(down_app, "GET", "/api/runs")
    assert status == 200
    runs = {run["path"]: run for run in body["runs"]}
    assert set(runs) == {"sentiment/20250101-120000", "lab/20250102-090000"}
    training = runs["sentiment/20250101-120000"]
    assert training["kind"] == "training"
    assert training["images"] == ["sentiment/20250101-120000/curves.png"]
    assert training["summaries"]["evaluation.json"] == {"test": {"accuracy": 0.8512}}
    assert training["files"] == ["evaluation.json", "metrics.json"]
    lab = runs["lab/20250102-090000"]
    assert lab["kind"] == "lab" and "vanish" in lab["report"]
    assert lab["images"] == ["lab/20250102-090000/gradient_norms.png"]
    # The report's facts come from the task registry.
    sentiment = body["tasks"]["sentiment"]
    assert sentiment["headline"][0] == "accuracy" and sentiment["model"] == "sentiment"
    assert {"metric": "accuracy", "value": 0.843,
            "source": "keras.io bidirectional LSTM example"} in sentiment["anchors"]


def test_a_damaged_summary_is_listed_with_a_note(tmp_path: Path) -> None:
    from app.web.runs import list_runs

    run = tmp_path / "classify" / "20250103-100000"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"best_epoch": 3')  # cut short
    (run / "evaluation.json").write_text('{"accuracy": 0.9}')
    [listed] = list_runs(tmp_path)
    assert listed["summaries"] == {
        "metrics.json": {"note": "metrics.json could not be read: it is not valid JSON"},
        "evaluation.json": {"accuracy": 0.9}}


@pytest.fixture()
def job_app(tmp_path: Path) -> Iterator[WebServer]:
    """The web app over an empty runs dir, for the main job's progress."""
    with web_app_without_server(tmp_path) as server:
        yield server


def test_progress_api_follows_the_job_epoch_by_epoch(job_app: WebServer) -> None:
    from app.run_progress import Progress

    root = job_app.api.runs_dir
    assert _json(job_app, "GET", "/api/progress") == (200, {"progress": None})
    progress = Progress(root, {"sentiment": "sentiment", "translation": "translator"}, "quick")
    progress.serving({"app": "http://127.0.0.1:8080"})
    run = root / "sentiment" / "20250101-120000"
    run.mkdir(parents=True)
    progress.task("sentiment", "training", run_dir=str(run), epochs=3)
    _, body = _json(job_app, "GET", "/api/progress")
    first, second = body["progress"]["tasks"]
    assert (first["state"], first["epoch"], first["label"]) == ("training", 0,
                                                                "training: epoch 0 of 3")
    assert second["label"] == "waiting"
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    for epoch, loss in enumerate([0.69, 0.52], start=1):  # what the trainer writes per epoch
        history["loss"].append(loss)
        history["val_loss"].append(loss + 0.05)
        (run / "history.json").write_text(json.dumps(history))
        _, body = _json(job_app, "GET", "/api/progress")
        task = body["progress"]["tasks"][0]
        assert task["epoch"] == epoch and task["history"] == history
        assert task["label"] == f"training: epoch {epoch} of 3, loss {loss:.4f}"
    # Exported first, so it is served while the test split is evaluated.
    progress.task("sentiment", "evaluating", export="exports/sentiment/1")
    _, body = _json(job_app, "GET", "/api/progress")
    assert body["progress"]["tasks"][0]["label"] == "served; evaluating on the test split"
    progress.task("sentiment", "done", test={"accuracy": 0.8712})
    progress.task("translation", "failed", error="spa_eng not found — put it there")
    _, body = _json(job_app, "GET", "/api/progress")
    labels = [t["label"] for t in body["progress"]["tasks"]]
    assert labels == ["served: accuracy 0.871", "failed: spa_eng not found — put it there"]


def test_a_job_killed_without_a_word_reads_as_stopped(job_app: WebServer) -> None:
    from app.run_progress import PROGRESS_FILE

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (job_app.api.runs_dir / PROGRESS_FILE).write_text(json.dumps({
        "pid": int(dead.stdout), "state": "running", "profile": "quick", "started": 0,
        "serving": {"app": "http://127.0.0.1:8080"},
        "tasks": [{"task": "sentiment", "model": "sentiment", "state": "training"},
                  {"task": "translation", "model": "translator", "state": "waiting"}]}))
    _, body = _json(job_app, "GET", "/api/progress")
    job = body["progress"]
    assert job["state"] == "stopped" and job["serving"] is None
    assert [t["state"] for t in job["tasks"]] == ["interrupted", "waiting"]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "code"), [
    ("POST", "/api/predict", b'{"model": "sentiment", "text": "   "}',
     {"Content-Type": "application/json"}, 400, "bad_request"),
    ("POST", "/api/predict", b'{"text": "ok"}', {"Content-Type": "application/json"},
     400, "bad_request"),
    ("POST", "/api/predict", b'{"text": "ok", "model": "../x"}',
     {"Content-Type": "application/json"}, 400, "bad_request"),
    ("POST", "/api/predict", b"{not json", {"Content-Type": "application/json"},
     400, "bad_request"),
    ("POST", "/api/predict", b'["text"]', {"Content-Type": "application/json"},
     400, "bad_request"),
    # A lone surrogate (a 500 from the client's UTF-8 encoding), a number for the text, JSON
    # nested past Python's recursion limit (a 500 RecursionError), a gzip body.
    ("POST", "/api/predict", b'{"model": "sentiment", "text": "a\\ud800b"}',
     {"Content-Type": "application/json"}, 400, "bad_request"),
    ("POST", "/api/predict", b'{"model": "sentiment", "text": 5}',
     {"Content-Type": "application/json"}, 400, "bad_request"),
    ("POST", "/api/predict", b"[" * 100_000, {"Content-Type": "application/json"},
     400, "bad_request"),
    ("POST", "/api/predict", b"\x1f\x8b", {"Content-Type": "application/json",
                                            "Content-Encoding": "gzip"}, 400, "bad_request"),
    ("POST", "/api/predict", b"text=hi", {"Content-Type": "application/x-www-form-urlencoded"},
     415, "unsupported_type"),
    ("POST", "/api/predict", b"x" * 300_000, {"Content-Type": "application/json"},
     413, "too_large"),
    ("POST", "/api/caption", b"GIF89a not a png", {"Content-Type": "image/gif"},
     415, "unsupported_image"),
    ("POST", "/api/caption?model=../x", PNG, {"Content-Type": "image/png"}, 400, "bad_request"),
    ("POST", "/api/caption", b"", {"Content-Type": "image/png"}, 400, "bad_request"),
    ("GET", "/api/predict", None, {}, 405, "method_not_allowed"),
    ("PUT", "/api/predict", b"{}", {"Content-Type": "application/json"}, 405,
     "method_not_allowed"),
    ("OPTIONS", "/api/predict", None, {}, 405, "method_not_allowed"),
    ("DELETE", "/api/models", None, {}, 405, "method_not_allowed"),
    ("PUT", "/try", b"{}", {"Content-Type": "application/json"}, 404, "not_found"),
    ("GET", "/api/nothing", None, {}, 404, "not_found"),
    ("POST", "/api/nothing", b"{}", {"Content-Type": "application/json"}, 404, "not_found"),
])
def test_bad_requests_get_4xx_with_a_message(down_app: WebServer, method: str, path: str,
                                             body: bytes | None, headers: dict[str, str],
                                             status: int, code: str) -> None:
    got, _, raw = _request(down_app, method, path, body, headers)
    error = json.loads(raw)["error"]
    assert (got, error["code"]) == (status, code)
    assert error["message"] and "send gzip" not in error["message"]


def test_pages_share_one_layout_and_link_each_other(down_app: WebServer) -> None:
    status, headers, _ = _request(down_app, "GET", "/")
    assert status == 302 and headers["Location"] == "/try"
    for slug in ("try", "models", "results"):
        status, headers, raw = _request(down_app, "GET", f"/{slug}")
        page = raw.decode()
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert f'<script src="/static/{slug}.js">' in page
        assert all(f'href="/{other}"' in page for other in ("try", "models", "results"))
        assert f'href="/{slug}" class="active"' in page
        status, _, _ = _request(down_app, "GET", f"/static/{slug}.js")
        assert status == 200
    # The try page loads one view script per model kind, before its own.
    page = _request(down_app, "GET", "/try")[2].decode()
    for kind in ("classify", "tag", "seq2seq", "caption"):
        assert page.index(f"/static/{kind}.js") < page.index("/static/try.js")
        assert _request(down_app, "GET", f"/static/{kind}.js")[0] == 200
    status, headers, _ = _request(down_app, "GET", "/static/style.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8"


def test_start_up_does_not_import_tensorflow(tmp_path: Path) -> None:
    code = ("import sys; from app.web.server import make_server; "
            "s = make_server('localhost:8500', '127.0.0.1', 0, 'runs'); s.server_close(); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("text", "expected"), [
    ("localhost:8500", ("localhost", 8500)),
    ("model-server", ("model-server", 8500)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_server_address_is_parsed(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["localhost:http", ":8500", "host:0", "host:70000"])
def test_bad_server_address_is_a_user_error(text: str) -> None:
    with pytest.raises(UserError, match="HOST:PORT"):
        parse_server(text)


def test_cli_reports_a_bad_address_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["app", "--server", "localhost:http", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rnnkit: error: --server 'localhost:http' is not HOST:PORT")
    assert "\n" not in err


@pytest.mark.parametrize(("code", "message", "status", "reason"), [
    ("UNAVAILABLE", "model server not reachable at 127.0.0.1:1 (failed to connect)", 503,
     "server_unreachable"),
    ("NOT_FOUND", "Servable not found for request: Latest(translator)", 503, "model_not_loaded"),
    ("DEADLINE_EXCEEDED", "no answer within 10s", 504, "timeout"),
    ("RESOURCE_EXHAUSTED", "batch queue full", 429, "overloaded"),
    ("INVALID_ARGUMENT", "input size does not match signature", 400, "rejected"),
    ("INTERNAL", "op failed", 502, "server_error"),
])
def test_model_server_errors_map_to_http_statuses(code: str, message: str, status: int,
                                                  reason: str) -> None:
    from app.web.errors import upstream_error
    from serving.client import ServerReplyError
    from serving.status import Code

    error = upstream_error(ServerReplyError(Code[code], message), "translator", "h:1")
    assert (error.status, error.code) == (status, reason)
    if reason == "model_not_loaded":
        assert error.message == "model 'translator' is not loaded" and message in error.fix


def test_an_image_sent_to_a_text_model_or_a_non_string_model_is_named(
        down_app: WebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model server's own answer was TF's 'input size does not match signature'."""
    from app.web.errors import ApiError

    api = down_app.api
    monkeypatch.setattr(api, "_kind", lambda model: ("classify", {"serving_default": {}}))
    with pytest.raises(ApiError, match="model 'q' is a classify model, not a captioner"):
        api.caption(PNG, "q")
    with pytest.raises(ApiError, match="model must be a string, not int"):
        api.predict({"model": 5, "text": "hi"})
