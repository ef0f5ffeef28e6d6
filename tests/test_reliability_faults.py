"""The model server under faults: broken versions dropped in, a full batching queue, slow and
vanishing clients, and SIGTERM with requests in flight. Loopback only; every wait is bounded."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_harness import export_test_model, free_port, http, running_server, wait_for
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

# Wall-clock bounds: `make test` runs this file alone, after the parallel part.
pytestmark = pytest.mark.timing

GRACE_S = 4
# Refusing a request that finds the queue full must not wait for the queue: well under a second
# even on a busy 2-core machine (a queued request would wait for seconds here).
REFUSAL_LIMIT_S = 1.0
REST_THREADS = 4
READ_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """A server polling the test model's base path fast, with a one-thread, one-batch queue."""
    tmp = tmp_path_factory.mktemp("faults")
    export_test_model(tmp / "exports", "textual")
    batching = tmp / "batching.config"
    batching.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\n"
                        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    args = ["--model_name=textual", f"--model_base_path={tmp / 'exports' / 'textual'}",
            "--file_system_poll_wait_seconds=0.2", "--enable_batching",
            f"--batching_parameters_file={batching}", f"--monitoring_config_file={monitoring}",
            f"--shutdown_grace_seconds={GRACE_S}", "--rest_api_timeout_in_ms=20000",
            "--max_num_load_retries=0"]
    with running_server(args, tmp / "server.log") as server:
        yield {"server": server, "base": tmp / "exports" / "textual"}


def rest_sleep(server, seconds: list[float], timeout: float = 30) -> tuple[int, object]:
    return http("POST", f"{server.url}/v1/models/textual:predict",
                {"signature_name": "sleep", "instances": seconds}, timeout=timeout)


def grpc_sleep(server, seconds: list[float], timeout: float = 30) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "textual"
    request.model_spec.signature_name = "sleep"
    request.inputs["seconds"].CopyFrom(tf.make_tensor_proto(np.array(seconds, np.float32)))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    return stub.Predict(request, timeout=timeout)


def version_status(server, version: int) -> dict:
    status, reply = http("GET", f"{server.url}/v1/models/textual/versions/{version}")
    return reply["model_version_status"][0] if status == 200 else {}


def drop_in(base: Path, version: int, damage) -> None:
    """Copy version 1, damage the copy, and rename it into place (as an exporter publishes)."""
    staging = base / f".staging-{version}"
    shutil.copytree(base / "1", staging)
    damage(staging)
    staging.rename(base / str(version))


def truncate_saved_model(folder: Path) -> None:
    path = folder / "saved_model.pb"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def remove_variables(folder: Path) -> None:
    shutil.rmtree(folder / "variables")


def test_broken_versions_are_reported_while_the_good_one_serves(faulty):
    server, base = faulty["server"], faulty["base"]
    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                reply = grpc_sleep(server, [0.0])
                answered.append(reply.model_spec.version.value)
                status, body = rest_sleep(server, [0.0])
                if status != 200:
                    failures.append(f"REST {status}: {body}")
            except grpc.RpcError as err:
                failures.append(f"gRPC {err.code()}: {err.details()}")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        drop_in(base, 2, truncate_saved_model)
        wait_for(lambda: version_status(server, 2).get("state") == "END", timeout=60)
        drop_in(base, 3, remove_variables)
        wait_for(lambda: version_status(server, 3).get("state") == "END", timeout=60)
        count = len(answered)
        wait_for(lambda: len(answered) > count + 3)
    finally:
        stop.set()
        thread.join()

    truncated = version_status(server, 2)["status"]
    assert truncated["error_code"] == "DATA_LOSS"
    assert "cannot parse the SavedModel" in truncated["error_message"]
    assert str(base / "2") in truncated["error_message"]
    missing = version_status(server, 3)["status"]
    assert missing["error_code"] != "OK"
    assert "variables" in missing["error_message"].lower()
    assert version_status(server, 1) == {"version": "1", "state": "AVAILABLE",
                                         "status": {"error_code": "OK", "error_message": ""}}
    assert failures == [] and set(answered) == {1}
    assert http("GET", f"{server.url}/readyz")[0] == 200
    print(f"\ntruncated saved_model.pb -> {truncated['error_message'][:160]}"
          f"\nmissing variables/ -> {missing['error_message'][:160]}")
    for version in (2, 3):  # leave the base path as the next tests expect it
        shutil.rmtree(base / str(version))


def test_full_queue_refuses_at_once_on_both_protocols_and_recovers(faulty):
    server = faulty["server"]
    holders = [threading.Thread(target=rest_sleep, args=(server, [2.0])),
               threading.Thread(target=rest_sleep, args=(server, [0.0] * 4))]
    holders[0].start()
    time.sleep(0.5)  # the only batch thread now sleeps 2 s
    holders[1].start()
    time.sleep(0.3)  # a full batch waits in the one-batch queue
    outcomes: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def flood(protocol: str) -> None:
        started = time.perf_counter()
        if protocol == "rest":
            status, body = rest_sleep(server, [0.0], timeout=10)
            outcome = f"{status} {body.get('error', '') if isinstance(body, dict) else body}"
        else:
            try:
                grpc_sleep(server, [0.0], timeout=10)
                outcome = "OK"
            except grpc.RpcError as err:
                outcome = f"{err.code().name} {err.details()}"
        with lock:
            outcomes.append((protocol, outcome, time.perf_counter() - started))

    flooders = [threading.Thread(target=flood, args=("rest" if i % 2 else "grpc",))
                for i in range(24)]
    for thread in flooders:
        thread.start()
    for thread in flooders + holders:
        thread.join(30)
    assert not any(thread.is_alive() for thread in flooders + holders)

    kinds = {outcome.split(" ", 1)[0] for _, outcome, _ in outcomes}
    assert kinds == {"503", "UNAVAILABLE"}, outcomes  # TF's batcher answers UNAVAILABLE
    assert all("queue" in outcome for _, outcome, _ in outcomes)
    seconds = sorted(elapsed for _, _, elapsed in outcomes)
    assert seconds[-1] < REFUSAL_LIMIT_S, seconds
    print(f"\n{len(outcomes)} refused requests: median {1000 * statistics.median(seconds):.1f} "
          f"ms, slowest {1000 * seconds[-1]:.1f} ms")
    # The load is gone: requests run again.
    assert [rest_sleep(server, [0.0])[0] for _ in range(3)] == [200] * 3
    assert grpc_sleep(server, [0.0]).outputs["slept"].float_val == [0.0]


@pytest.fixture(scope="module")
def short_fuse(tmp_path_factory):
    """An in-process REST server whose requests must arrive within READ_TIMEOUT_S seconds."""
    from tensorflow_serving.config import model_server_config_pb2

    from serving.core import ServingCore
    from serving.model_manager import ModelManager
    from serving.rest_api import RestServer

    tmp = tmp_path_factory.mktemp("slow")
    export_test_model(tmp, "textual")
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="textual", base_path=str(tmp / "textual"),
                                        model_platform="tensorflow")
    manager = ModelManager(poll_wait_seconds=0)
    manager.apply_config(config)
    rest = RestServer(ServingCore(manager), "127.0.0.1", 0, timeout_ms=10000,
                      read_timeout_s=READ_TIMEOUT_S, num_threads=REST_THREADS)
    rest.start()
    try:
        yield rest
    finally:
        rest.stop(2)
        manager.stop()


def _seconds_until_closed(sock: socket.socket, trickle: bytes = b"", every: float = 0.25,
                          limit: float = 20) -> float:
    """Send `trickle` one byte at a time until the server closes the socket; returns when."""
    started = time.monotonic()
    sock.settimeout(every)
    sent = 0
    while time.monotonic() - started < limit:
        try:
            if sent < len(trickle):
                sock.sendall(trickle[sent:sent + 1])
                sent += 1
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    return float("inf")


def test_slow_and_vanishing_clients_do_not_hold_the_server(short_fuse):
    host, port = short_fuse.server_address[:2]
    url = f"http://{host}:{port}/v1/models/textual:predict"
    body = b'{"instances": ["a slow review"]}'
    slow_kinds = {
        "idle": (b"", b""),
        "headers trickle": (b"POST /v1/models/textual:predict HTTP/1.1\r\n",
                            b"Host: x\r\nContent-Type: application/json\r\n" * 20),
        "body trickle": (b"POST /v1/models/textual:predict HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body * 20), body * 20),
    }
    baseline = threading.active_count()
    closed_after: dict[str, list[float]] = {kind: [] for kind in slow_kinds}
    lock = threading.Lock()

    def slow_client(kind: str) -> None:
        opening, trickle = slow_kinds[kind]
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(opening)
            seconds = _seconds_until_closed(sock, trickle)
        with lock:
            closed_after[kind].append(seconds)

    def vanishing_client(after_body: bool) -> None:
        with socket.create_connection((host, port), timeout=5) as sock:
            head = (b"POST /v1/models/textual:predict HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n")
            if after_body:  # the whole request, then gone while the model runs
                sleep = b'{"signature_name": "sleep", "instances": [0.5]}'
                sock.sendall(head % len(sleep) + sleep)
            else:  # half the body, then gone
                sock.sendall(head % len(body) + body[: len(body) // 2])

    clients = [threading.Thread(target=slow_client, args=(kind,))
               for kind in slow_kinds for _ in range(5)]
    clients += [threading.Thread(target=vanishing_client, args=(i % 2 == 0,)) for i in range(6)]
    for thread in clients:
        thread.start()
    time.sleep(0.3)
    served = []
    while any(thread.is_alive() for thread in clients):
        started = time.monotonic()
        status, _ = http("POST", url, {"instances": ["still served?"]}, timeout=10)
        served.append((status, time.monotonic() - started))
        time.sleep(0.1)
    for thread in clients:
        thread.join()

    limit = READ_TIMEOUT_S + 1.5
    for kind, seconds in closed_after.items():
        assert len(seconds) == 5 and max(seconds) < limit, (kind, seconds)
    assert len(served) >= 5 and {status for status, _ in served} == {200}
    assert max(seconds for _, seconds in served) < 2.0
    # Connections hold no thread (the event loop reads them): at most the REST pool's fixed
    # threads started meanwhile, and none waits on a client that left.
    wait_for(lambda: threading.active_count() <= baseline + REST_THREADS, timeout=10)
    print(f"\nslow connections closed after (s): "
          f"{ {k: round(max(v), 2) for k, v in closed_after.items()} }; {len(served)} normal "
          f"requests answered meanwhile, slowest {max(s for _, s in served):.2f} s")


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(faulty):
    server = faulty["server"]
    results: dict[str, object] = {}

    def in_flight(protocol: str) -> None:
        if protocol == "rest":
            results[protocol] = rest_sleep(server, [0.8])
        else:
            try:
                results[protocol] = list(grpc_sleep(server, [0.8]).outputs["slept"].float_val)
            except grpc.RpcError as err:
                results[protocol] = f"{err.code()}: {err.details()}"

    threads = [threading.Thread(target=in_flight, args=(p,)) for p in ("rest", "grpc")]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    signalled = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # the REST port no longer accepts connections
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=2).close()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "textual"
    fresh = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(grpc.RpcError) as refused:
        prediction_service_pb2_grpc.PredictionServiceStub(fresh).Predict(request, timeout=5)
    fresh.close()
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for thread in threads:
        thread.join(30)
    assert results == {"rest": (200, {"predictions": [0.8]}), "grpc": [pytest.approx(0.8)]}
    assert server.process.wait(30) == 0
    exited = time.monotonic() - signalled
    assert exited < GRACE_S + 5
    assert "model server stopped" in server.log_text()
    assert "Traceback" not in server.log_text()
    print(f"\nSIGTERM -> exit 0 after {exited:.2f} s (grace {GRACE_S} s)")



def test_stop_does_not_wait_past_the_grace_for_a_long_batch(tmp_path):
    from serving.model_server import ModelServer, ServerOptions

    export_test_model(tmp_path, "textual")
    options = ServerOptions(port=0, rest_api_port=free_port(), model_name="textual",
                            model_base_path=str(tmp_path / "textual"), enable_batching=True,
                            shutdown_grace_seconds=1, file_system_poll_wait_seconds=0,
                            enable_model_warmup=False)
    server = ModelServer(options)
    server.start()
    url = f"http://127.0.0.1:{options.rest_api_port}/v1/models/textual:predict"

    def send_long_request() -> None:
        with contextlib.suppress(OSError):  # the stopping server drops it
            http("POST", url, {"signature_name": "sleep", "instances": [8.0]}, timeout=30)

    abandoned = threading.Thread(target=send_long_request, daemon=True)
    abandoned.start()
    time.sleep(0.5)  # the batch thread is now inside an 8 s run
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < options.shutdown_grace_seconds + 2


def test_a_signal_stops_the_start_while_a_broken_version_waits_to_retry(tmp_path):
    """A version folder without a SavedModel is retried a minute apart (TF's default, five
    times): a signal during that wait stops the server then, not five minutes later."""
    from serving.model_server import ModelServer, ServerOptions

    (tmp_path / "broken" / "1").mkdir(parents=True)
    options = ServerOptions(port=0, rest_api_port=free_port(), model_name="broken",
                            model_base_path=str(tmp_path / "broken"),
                            file_system_poll_wait_seconds=0, max_num_load_retries=5,
                            load_retry_interval_micros=60_000_000)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()  # what serve()'s SIGINT handler does
    started = time.monotonic()
    assert ModelServer(options).start(stop) is False
    assert time.monotonic() - started < 10
