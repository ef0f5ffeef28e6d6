"""Bounded work per request: a deadline stops the run, admission control per model, clean run
errors, and over the wire the issue's check (8 largest bodies at an expensive model while
/healthz and another model keep answering, CPU idle soon after, RSS bounded)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import os
import re
import threading
import time
import weakref
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from serving_harness import export_test_model, http, running_server, wait_for
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from models.text_bounds import cut_characters
from serving.admission import Admission
from serving.cancellation import RunToken, request_scope
from serving.servable import FunctionServable, clean_run_message, read_meta_graph
from serving.status import Code, ServingError

# Wall-clock bounds: `make test` runs this file alone, after the parallel part.
pytestmark = pytest.mark.timing

# The stand-in expensive model reads at most this many tokens (cut inside its graph, as the
# exports do); each token costs one step of a small recurrent loop.
MAX_TOKENS = 20_000
TIMEOUT_MS = 6000
# Bodies in the wire test: the server is started with this as --rest_api_max_body_bytes, and
# each of the 8 requests sends a body just under it (64 MiB bodies x 8 would take the shared
# 2-core machine's memory; the bound scales with the body limit, see docs/reliability.md).
BODY_LIMIT = 8 << 20
# Peak RSS of the server process over the whole wire test (measured about 1.0-1.3 GB).
RSS_BOUND_BYTES = 2_500 << 20


def export_slow_model(base_path: Path, name: str = "slow") -> Path:
    """Export a stand-in for an expensive text model: one recurrent step per word.

    Signatures (input text: string [-1]):
        serving_default: the words cut to MAX_TOKENS in the graph -> steps (int32 [batch]).
        uncut: every word, however many (a run a long body keeps going for minutes).
    """
    from serving.export import export_saved_model

    class Slow(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([64, 64], [1, 2]) * 0.1)

        def _steps(self, words):
            def body(i, state):
                return i + 1, tf.tanh(tf.matmul(state, self.kernel) + 0.01)

            batch = tf.cast(words.nrows(), tf.int32)
            length = tf.cast(tf.reduce_max(words.row_lengths()), tf.int32)
            start = (tf.constant(0), tf.ones(tf.stack([batch, 64])))
            steps, _ = tf.while_loop(lambda i, _: i < length, body, start)
            return {"steps": tf.fill(tf.reshape(batch, [1]), steps)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def cut(self, text):
            return self._steps(tf.strings.split(cut_characters(text, MAX_TOKENS))[:, :MAX_TOKENS])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def uncut(self, text):
            return self._steps(tf.strings.split(text))

    model = Slow()
    return export_saved_model(model, {"serving_default": model.cut, "uncut": model.uncut},
                              base_path, name)


@pytest.fixture(scope="module")
def slow_export(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bounds") / "exports"
    export_slow_model(base)
    export_test_model(base, "small")
    return base


# ---- clean run errors ----------------------------------------------------------------------

@pytest.mark.parametrize(("message", "expected"), [
    ("Graph execution error:\n\nDetected at node map/while/decode_image/DecodeImage defined at "
     "(most recent call last):\n  File \"x.py\", line 7, in <module>\n\n  File \"x.py\", line 4, "
     "in f\n\njpeg::Uncompress failed. Invalid JPEG data or crop window.\n\t [[{{node "
     "map/while/decode_image/DecodeImage}}]] [Op:__inference_signature_wrapper_123]",
     "jpeg::Uncompress failed. Invalid JPEG data or crop window."),
    ("Graph execution error:\n\nDetected at node while defined at (most recent call last):\n"
     "<stack traces unavailable>\nLoop execution was cancelled.\n\t [[{{node while}}]] "
     "[Op:__inference_signature_wrapper_run_1]", "Loop execution was cancelled."),
    ("Graph execution error:\n\nDetected at node Assert defined at (most recent call last):\n"
     "<stack traces unavailable>\nassertion failed: [text holds] [300] [sentences; at most] "
     "[256]\n\t [[{{node Assert}}]] [Op:x]", "text holds 300 sentences; at most 256."),
    ("input must be a vector, got shape: [1,2]\n\t [[{{function_node __inference_f_5}}"
     "{{node StringSplit}}]] [Op:__inference_signature_wrapper_1]",
     "input must be a vector, got shape: [1,2]."),
    ("2 root error(s) found.\n  (0) INVALID_ARGUMENT: the first\n\t [[{{node a}}]]\n  (1) "
     "INVALID_ARGUMENT: the second\n0 successful operations.", "the first."),
])
def test_run_errors_are_one_clean_sentence(message, expected):
    assert clean_run_message(message) == expected


def test_a_real_decode_failure_answers_without_graph_internals(tmp_path):
    from serving.export import export_saved_model

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image")])
        def decode(self, image):
            return {"shape": tf.shape(tf.io.decode_image(image[0], channels=3,
                                                         expand_animations=False))}

    module = Decoder()
    version = export_saved_model(module, {"serving_default": module.decode}, tmp_path, "d")
    servable = FunctionServable("d", 1, version, read_meta_graph(version))
    with pytest.raises(ServingError) as caught:
        servable.run("serving_default", {"image": np.array([b"\xff\xd8\xff\xe0broken"],
                                                           dtype=object)}, ["shape"])
    message = caught.value.message
    assert caught.value.code == Code.INVALID_ARGUMENT
    for internal in ("Graph execution error", "Detected at node", "[[", "[Op:", "\n"):
        assert internal not in message
    assert "JPEG" in message or "jpeg" in message


# ---- cancellation in process ---------------------------------------------------------------

def _long_text(words: int) -> np.ndarray:
    return np.array([" ".join(["w"] * words).encode()], dtype=object)


def _run_in_thread(servable, token, signature, text):
    result: dict = {}

    def work():
        started = time.monotonic()
        try:
            with request_scope(token):
                result["value"] = servable.run(signature, {"text": text}, ["steps"])
        except ServingError as err:
            result["error"] = err
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=work)
    thread.start()
    return thread, result


def test_cancelling_a_token_stops_its_run_and_only_its_run(slow_export):
    version = slow_export / "slow" / "1"
    servable = FunctionServable("slow", 1, version, read_meta_graph(version))
    endless = _long_text(3_000_000)  # minutes of steps
    doomed, survivor = RunToken("doomed"), RunToken("survivor")
    doomed_thread, doomed_result = _run_in_thread(servable, doomed, "uncut", endless)
    survivor_thread, survivor_result = _run_in_thread(servable, survivor, "serving_default",
                                                      _long_text(2000))
    time.sleep(1.0)
    cancelled_at = time.monotonic()
    doomed.cancel(Code.DEADLINE_EXCEEDED, "past its deadline")
    doomed_thread.join(10)
    stopped_after = time.monotonic() - cancelled_at
    survivor_thread.join(60)
    assert not doomed_thread.is_alive(), "the cancelled run kept going"
    assert stopped_after < 2.0, stopped_after
    assert doomed_result["error"].code == Code.DEADLINE_EXCEEDED
    assert doomed_result["error"].message == "past its deadline"
    assert survivor_result.get("value") is not None, survivor_result
    assert int(survivor_result["value"]["steps"][0]) == 2000
    # A cancelled token refuses a new run at once.
    with request_scope(doomed), pytest.raises(ServingError) as caught:
        servable.run("serving_default", {"text": _long_text(3)}, ["steps"])
    assert caught.value.code == Code.DEADLINE_EXCEEDED


def export_slow_session_model(path: Path) -> Path:
    """A TF1-style SavedModel (no object graph, run in a Session): `steps` loop iterations."""
    graph = tf.Graph()
    with graph.as_default():
        steps = tf.compat.v1.placeholder(tf.int32, [None], name="steps")

        def body(i, state):
            return i + 1, tf.tanh(tf.matmul(state, state) * 0.01)

        done, _ = tf.while_loop(lambda i, _: i < tf.reduce_max(steps), body,
                                (tf.constant(0), tf.ones([64, 64])))
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def(
                {"steps": steps}, {"done": done})
            builder.add_meta_graph_and_variables(session, ["serve"],
                                                 {"serving_default": signature})
            builder.save()
    return path


def test_a_session_run_stops_at_the_requests_deadline(tmp_path):
    from serving.servable import SessionServable

    version = export_slow_session_model(tmp_path / "session" / "1")
    servable = SessionServable("session", 1, version, read_meta_graph(version))
    quick = servable.run("serving_default", {"steps": np.array([10], np.int32)}, ["done"])
    assert int(quick["done"]) == 10
    started = time.monotonic()
    with request_scope(RunToken("slow", time.monotonic() + 0.5)), \
            pytest.raises(ServingError) as caught:
        servable.run("serving_default", {"steps": np.array([2**30], np.int32)}, ["done"])
    # The timeout is the remaining 0.5 s rounded up to 512 ms; allow for the busy machine.
    assert time.monotonic() - started < 3.0
    assert caught.value.code == Code.DEADLINE_EXCEEDED, caught.value
    servable.close()


# ---- admission control ---------------------------------------------------------------------

def test_admission_bounds_running_and_queued_requests_per_model():
    admission = Admission(max_running=2, max_queued=1)
    first, second = admission.enter("a", None), admission.enter("a", None)
    other = admission.enter("b", None)  # another model is not affected
    assert admission.counts("a") == (2, 0) and admission.counts("b") == (1, 0)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    waiting = pool.submit(admission.enter, "a", 10)
    wait_for(lambda: admission.counts("a") == (2, 1), timeout=5, interval=0.01)
    started = time.monotonic()
    with pytest.raises(ServingError) as full:
        admission.enter("a", 10)
    assert full.value.code == Code.UNAVAILABLE and time.monotonic() - started < 0.5
    assert "--max_queued_runs_per_model" in full.value.message
    first.release()
    third = waiting.result(5)  # the waiter got the freed slot
    assert admission.counts("a") == (2, 0)
    with pytest.raises(ServingError) as late:
        admission.enter("a", 0.2)  # queued, then its time is up
    assert late.value.code == Code.DEADLINE_EXCEEDED
    assert admission.counts("a") == (2, 0)
    for slot in (second, third, other):
        slot.release()
    second.release()  # a second release changes nothing
    assert admission.counts("a") == (0, 0) and admission._models == {}
    pool.shutdown()


def test_admission_on_the_event_loop_waits_without_a_thread_and_gives_up_at_the_deadline():
    admission = Admission(max_running=1, max_queued=4)

    async def scenario():
        held = await admission.enter_async("m", None)
        waiter = asyncio.ensure_future(admission.enter_async("m", time.monotonic() + 5))
        expired = asyncio.ensure_future(admission.enter_async("m", time.monotonic() + 0.1))
        await asyncio.sleep(0.3)
        assert expired.done() and expired.exception().code == Code.DEADLINE_EXCEEDED
        assert not waiter.done()
        threading.Thread(target=held.release).start()  # released from another thread
        slot = await asyncio.wait_for(waiter, 5)
        assert admission.counts("m") == (1, 0)
        slot.release()

    asyncio.run(scenario())
    assert admission._models == {}


# ---- over the wire -------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _cpu_use(pid: int, seconds: float) -> float:
    before = _cpu_seconds(pid)
    time.sleep(seconds)
    return (_cpu_seconds(pid) - before) / seconds


def _largest_body(signature: str = "serving_default") -> bytes:
    head = json.dumps({"signature_name": signature, "instances": [""]})[:-3].encode()
    words = (BODY_LIMIT - len(head) - 4) // 2
    body = head + b"w " * words + b'"]}'
    assert len(body) <= BODY_LIMIT
    return body


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_eight_largest_bodies_at_an_expensive_model_are_bounded(slow_export, tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f"  config {{ name: '{name}' base_path: '{slow_export / name}' "
        "model_platform: 'tensorflow' }\n" for name in ("slow", "small")) + "}\n")
    args = [f"--model_config_file={config}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
            f"--rest_api_max_body_bytes={BODY_LIMIT}", "--file_system_poll_wait_seconds=0",
            "--max_concurrent_runs_per_model=2", "--max_queued_runs_per_model=8"]
    with running_server(args, tmp_path / "server.log") as server:
        pid = server.process.pid
        body = _largest_body()
        slow_url = f"{server.url}/v1/models/slow:predict"
        small_url = f"{server.url}/v1/models/small:predict"
        results: list = [None] * 8
        done = threading.Event()

        def send(index: int) -> None:
            started = time.monotonic()
            status, reply = http("POST", slow_url, raw=body, timeout=60)
            results[index] = (status, reply, time.monotonic() - started)

        clients = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        probes: list[tuple[str, int, float]] = []

        def probe() -> None:
            while not done.is_set():
                for what, method, url, payload in (
                        ("healthz", "GET", f"{server.url}/healthz", None),
                        ("small", "POST", small_url, {"instances": ["hi"]})):
                    started = time.monotonic()
                    status, _ = http(method, url, payload, timeout=30)
                    probes.append((what, status, time.monotonic() - started))
                time.sleep(0.2)

        prober = threading.Thread(target=probe)
        for client in clients:
            client.start()
        prober.start()
        for client in clients:
            client.join(60)
        last_answer = time.monotonic()
        done.set()
        prober.join(30)

        print("\nanswers:", [(r[0], round(r[2], 2)) for r in results])
        for status, reply, seconds in results:
            assert status == 200, (status, reply)
            assert reply["predictions"] == [MAX_TOKENS]  # the bounded result
            assert seconds < TIMEOUT_MS / 1000, seconds
        assert probes and {what for what, _, _ in probes} == {"healthz", "small"}
        assert all(status == 200 for _, status, _ in probes), probes
        slowest = max(seconds for _, _, seconds in probes)
        assert slowest < 1.0, sorted(probes, key=lambda p: -p[2])[:5]
        # Back near idle within 5 s of the last answer.
        time.sleep(max(0.0, last_answer + 4.0 - time.monotonic()))
        assert _cpu_use(pid, 1.0) < 0.25

        # A run without the cut is stopped at the deadline, REST and gRPC alike.
        started = time.monotonic()
        status, reply = http("POST", slow_url, raw=_largest_body("uncut"), timeout=60)
        assert status == 504, (status, reply)
        assert time.monotonic() - started < TIMEOUT_MS / 1000 + 2
        stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = "slow", "uncut"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto(
            np.array([b"w " * 2_000_000], dtype=object)))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=3)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(2.0)  # cancellation takes effect within one loop step; allow for the load
        assert _cpu_use(pid, 1.0) < 0.25, "a run went on after its deadline"
        peak = _peak_rss(pid)
        assert peak < RSS_BOUND_BYTES, peak
        print(f"\n8 x {len(body)} B: answers in {sorted(round(r[2], 2) for r in results)} s; "
              f"probes {len(probes)}, slowest {slowest:.3f} s; peak RSS {peak >> 20} MiB")


def test_a_full_model_queue_answers_503_and_the_refusal_is_counted(slow_export, tmp_path):
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    args = [f"--model_base_path={slow_export / 'slow'}", "--model_name=slow",
            f"--monitoring_config_file={monitoring}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
            "--file_system_poll_wait_seconds=0", "--max_concurrent_runs_per_model=1",
            "--max_queued_runs_per_model=0"]
    with running_server(args, tmp_path / "server.log") as server:
        url = f"{server.url}/v1/models/slow:predict"
        held: list = []
        busy = threading.Thread(target=lambda: held.append(
            http("POST", url, raw=_largest_body("uncut"), timeout=60)))
        busy.start()  # holds the model's only run until its deadline stops it
        # Until its 8 MiB body is sent and parsed (longer on loaded cores) the slot is free
        # and a small request is simply answered; once the run holds it, one is refused.
        answered = 0
        while True:
            time.sleep(0.5)
            status, reply = http("POST", url, {"instances": ["w"]}, timeout=10)
            if status != 200 or not busy.is_alive():
                break
            answered += 1
        busy.join(60)
        assert status == 503 and "--max_queued_runs_per_model" in reply["error"], reply
        assert held[0][0] == 504, held  # the run holding the slot, stopped at its deadline
        status, page = http("GET", f"{server.url}/metrics", timeout=10)
    assert status == 200
    refused = re.search(r'^:tensorflow:serving:request_count\{model_name="slow",'
                        r'status="UNAVAILABLE"\} (\S+)$', page, re.MULTILINE)
    assert refused and float(refused.group(1)) == 1, page
    latency_counts = re.findall(r'^:tensorflow:serving:request_latency_count\{(.*)\} (\S+)$',
                                page, re.MULTILINE)
    assert [float(count) for labels, count in latency_counts
            if 'entrypoint="REST"' in labels and 'model_name="slow"' in labels] == [
                2 + answered], page


def test_a_loaded_version_is_kept_out_of_collections_and_freed_once_retired(tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    from serving.model_manager import AVAILABLE, ModelManager

    export_test_model(tmp_path, "m")
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="m", base_path=str(tmp_path / "m"),
                                        model_platform="tensorflow")
    manager = ModelManager(poll_wait_seconds=0, unload_grace_seconds=1)
    try:
        gc.unfreeze()
        manager.apply_config(config)
        wait_for(lambda: manager.status("m")[0].state == AVAILABLE, timeout=60)
        # Full collections no longer scan the loaded model's objects (nor what came before).
        assert gc.get_freeze_count() > 10_000
        with manager.acquire("m") as servable:
            loaded = weakref.ref(servable._loaded)  # a SavedModel object graph: full of cycles
        del servable
        manager.apply_config(model_server_config_pb2.ModelServerConfig(
            model_config_list=model_server_config_pb2.ModelConfigList()))
        # Closed by the unloader within its grace; its cycles then go with a collection.
        wait_for(lambda: gc.collect() >= 0 and loaded() is None, timeout=30, interval=0.5)
    finally:
        manager.stop()
        gc.unfreeze()
