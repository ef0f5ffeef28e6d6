"""The request batcher: merging, splitting, timeouts, overload, errors and shutdown."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.batching import BatchScheduler, QueueFullError, SchedulerClosedError
from serving.cancellation import RunToken, current_token, request_scope
from serving.config_readers import BatchingParameters
from serving.metrics import Metrics
from serving.status import Code, ServingError

# Wall-clock bounds: `make test` runs this file alone, after the parallel part.
pytestmark = pytest.mark.timing


class Recorder:
    """A model that doubles `x`, remembering the batch sizes it was run with."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.inputs: list[dict[str, np.ndarray]] = []
        self.delay = delay
        self.gate = gate
        self.lock = threading.Lock()
        self.entered = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        with self.lock:
            self.sizes.append(len(inputs["x"]))
            self.inputs.append(inputs)
        time.sleep(self.delay)
        return {"y": inputs["x"] * 2, "row": np.arange(len(inputs["x"]))}


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def params(**overrides) -> BatchingParameters:
    base = dict(max_batch_size=32, batch_timeout_micros=50_000, max_enqueued_batches=100,
                num_batch_threads=1)
    base.update(overrides)
    return BatchingParameters(**base)


def submit_many(scheduler, model, values, key=("m", 1, "serving_default")):
    with ThreadPoolExecutor(len(values)) as pool:
        futures = [pool.submit(scheduler.submit, key, {"x": np.array([[v, v + 0.5]])}, model)
                   for v in values]
        return [f.result(timeout=10) for f in futures]


def test_concurrent_requests_merge_and_each_caller_gets_its_own_rows():
    model = Recorder()
    metrics = Metrics()
    scheduler = BatchScheduler(params(batch_timeout_micros=200_000), metrics)
    try:
        values = [float(v) for v in range(16)]
        results = submit_many(scheduler, model, values)
    finally:
        scheduler.close()
    assert sum(model.sizes) == 16
    assert len(model.sizes) < 16, f"no merging happened: run sizes {model.sizes}"
    for v, result in zip(values, results, strict=True):
        np.testing.assert_allclose(result["y"], [[2 * v, 2 * v + 1]])
        assert result["y"].shape == (1, 2)
    text = metrics.render_prometheus()
    assert f":tensorflow:serving:batching_session:wrapped_run_count {len(model.sizes)}" in text


def test_full_batch_runs_without_waiting_for_the_timeout():
    model = Recorder()
    # A 10 s timeout: only reaching max_batch_size can start this batch in time.
    scheduler = BatchScheduler(params(max_batch_size=4, batch_timeout_micros=10_000_000))
    try:
        started = time.monotonic()
        submit_many(scheduler, model, [1.0, 2.0, 3.0, 4.0])
        elapsed = time.monotonic() - started
    finally:
        scheduler.close()
    assert model.sizes == [4]
    assert elapsed < 3


def test_timeout_flushes_a_partial_batch():
    model = Recorder()
    scheduler = BatchScheduler(params(max_batch_size=64, batch_timeout_micros=100_000))
    try:
        started = time.monotonic()
        result = scheduler.submit("k", {"x": np.ones((3, 2))}, model)
        elapsed = time.monotonic() - started
    finally:
        scheduler.close()
    assert model.sizes == [3]
    assert result["y"].shape == (3, 2)
    assert 0.09 <= elapsed < 2, elapsed


def test_different_keys_and_shapes_never_share_a_batch():
    model = Recorder()
    scheduler = BatchScheduler(params(batch_timeout_micros=100_000, num_batch_threads=2))
    try:
        with ThreadPoolExecutor(4) as pool:
            a = pool.submit(scheduler.submit, "a", {"x": np.ones((1, 2))}, model)
            b = pool.submit(scheduler.submit, "b", {"x": np.ones((1, 2))}, model)
            c = pool.submit(scheduler.submit, "a", {"x": np.ones((1, 3))}, model)
            d = pool.submit(scheduler.submit, "a", {"x": np.ones((1, 2), np.int32)}, model)
            results = [f.result(10) for f in (a, b, c, d)]
    finally:
        scheduler.close()
    assert sorted(model.sizes) == [1, 1, 1, 1]
    assert [r["y"].shape for r in results] == [(1, 2), (1, 2), (1, 3), (1, 2)]
    assert results[3]["y"].dtype == np.int32


def test_allowed_batch_sizes_pad_up_and_results_drop_the_padding():
    model = Recorder()
    scheduler = BatchScheduler(params(max_batch_size=8, allowed_batch_sizes=[2, 4, 8],
                                      batch_timeout_micros=0))
    try:
        result = scheduler.submit("k", {"x": np.arange(6.0).reshape(3, 2)}, model)
    finally:
        scheduler.close()
    assert model.sizes == [4]
    np.testing.assert_allclose(result["y"], np.arange(6.0).reshape(3, 2) * 2)


def test_variable_length_inputs_are_padded_to_share_a_batch():
    seen = []

    def model(inputs):
        seen.append({k: v.copy() for k, v in inputs.items()})
        return {"length": (inputs["tokens"] != 0).sum(axis=1),
                "text": inputs["words"][:, 0]}

    scheduler = BatchScheduler(params(pad_variable_length_inputs=True,
                                      batch_timeout_micros=300_000))
    requests = [
        {"tokens": np.array([[5, 6]]), "words": np.array([[b"a", b"b"]], dtype=object)},
        {"tokens": np.array([[7, 8, 9, 10]]), "words": np.array([[b"c"]], dtype=object)},
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(scheduler.submit, "k", r, model) for r in requests]
            results = [f.result(10) for f in futures]
    finally:
        scheduler.close()
    assert len(seen) == 1, "ragged requests were not merged"
    assert seen[0]["tokens"].shape == (2, 4)
    assert set(seen[0]["words"][:, 1]) >= {b""}
    assert [int(r["length"][0]) for r in results] == [2, 4]
    assert [r["text"][0] for r in results] == [b"a", b"c"]


def test_too_large_request_is_a_clear_value_error():
    scheduler = BatchScheduler(params(max_batch_size=4))
    try:
        with pytest.raises(ValueError, match="max_batch_size 4"):
            scheduler.submit("k", {"x": np.ones((5, 1))}, Recorder())
        with pytest.raises(ValueError, match="first dimension"):
            scheduler.submit("k", {"x": np.ones((2, 1)), "z": np.ones((3, 1))}, Recorder())
    finally:
        scheduler.close()


def test_queue_full_is_raised_at_once_and_the_scheduler_recovers():
    gate = threading.Event()
    model = Recorder(gate=gate)
    # One thread, held by the gate; batches of one; at most 2 may wait.
    scheduler = BatchScheduler(params(max_batch_size=1, batch_timeout_micros=0,
                                      max_enqueued_batches=2))
    pool = ThreadPoolExecutor(8)
    try:
        running = pool.submit(scheduler.submit, "k", {"x": np.ones((1, 2))}, model)
        assert model.entered.wait(5)  # the only thread is now busy
        waiting = [pool.submit(scheduler.submit, "k", {"x": np.ones((1, 2))}, model)
                   for _ in range(2)]
        wait_until(lambda: sum(len(q) for q in scheduler._queues.values()) == 2)
        started = time.monotonic()
        with pytest.raises(QueueFullError, match="max_enqueued_batches 2"):
            scheduler.submit("k", {"x": np.ones((1, 2))}, model)
        assert time.monotonic() - started < 0.5
        gate.set()
        for future in [running, *waiting]:
            assert future.result(10)["y"].shape == (1, 2)
        assert scheduler.submit("k", {"x": np.ones((1, 2))}, model)["y"].shape == (1, 2)
    finally:
        gate.set()
        scheduler.close()
        pool.shutdown()


def test_an_error_in_run_reaches_every_caller_of_the_batch():
    calls = []

    def broken(inputs):
        calls.append(len(inputs["x"]))
        raise RuntimeError("model exploded")

    scheduler = BatchScheduler(params(batch_timeout_micros=200_000))
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(scheduler.submit, "k", {"x": np.ones((1, 2))}, broken)
                       for _ in range(4)]
            for future in futures:
                with pytest.raises(RuntimeError, match="model exploded"):
                    future.result(10)
        assert sum(calls) == 4 and len(calls) < 4
        # The scheduler still works afterwards.
        assert scheduler.submit("k", {"x": np.ones((2, 2))}, Recorder())["y"].shape == (2, 2)
    finally:
        scheduler.close()


def test_outputs_without_a_batch_dimension_are_rejected():
    scheduler = BatchScheduler(params(batch_timeout_micros=0))
    try:
        with pytest.raises(ValueError, match="batch dimension"):
            scheduler.submit("k", {"x": np.ones((2, 2))}, lambda inputs: {"total": np.float32(1)})
    finally:
        scheduler.close()


def test_close_fails_waiting_requests_and_does_not_hang():
    gate = threading.Event()
    scheduler = BatchScheduler(params(max_batch_size=1, batch_timeout_micros=0))
    pool = ThreadPoolExecutor(4)
    try:
        blocked = Recorder(gate=gate)
        running = pool.submit(scheduler.submit, "k", {"x": np.ones((1, 1))}, blocked)
        assert blocked.entered.wait(5)
        waiting = pool.submit(scheduler.submit, "k", {"x": np.ones((1, 1))}, Recorder())
        wait_until(lambda: sum(len(q) for q in scheduler._queues.values()) == 1)
        closer = threading.Thread(target=scheduler.close, kwargs={"timeout": 5})
        started = time.monotonic()
        closer.start()
        with pytest.raises(SchedulerClosedError):
            waiting.result(5)
        gate.set()
        closer.join(5)
        assert not closer.is_alive()
        assert time.monotonic() - started < 5
        assert running.result(5)["y"].shape == (1, 1)  # the batch already running finished
        with pytest.raises(SchedulerClosedError):
            scheduler.submit("k", {"x": np.ones((1, 1))}, Recorder())
    finally:
        gate.set()
        pool.shutdown()


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="must equal max_batch_size"):
        BatchScheduler(params(max_batch_size=8, allowed_batch_sizes=[2, 4]))
    with pytest.raises(ValueError, match="num_batch_threads"):
        BatchScheduler(params(num_batch_threads=0))


def test_request_threads_are_enough_to_fill_batches_and_a_lone_file_is_refused(
        shared_data, tmp_path):
    import os

    from serving.errors import UserError
    from serving.grpc_api import default_grpc_threads
    from serving.model_server import ModelServer, ServerOptions

    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 40 }\nnum_batch_threads { value: 3 }\n")
    model = str(shared_data / "tfserving-testdata" / "saved_model_half_plus_two_cpu")

    def threads(**options) -> tuple[int, int]:
        server = ModelServer(ServerOptions(model_base_path=model, **options))
        try:
            return server._grpc_threads(), server._rest_threads()
        finally:
            if server.core.batcher is not None:
                server.core.batcher.close()

    four_per_cpu = 4 * (os.cpu_count() or 1)
    assert threads() == (default_grpc_threads(), four_per_cpu)
    # A waiting request holds its thread (an RPC's, or a REST request's in the pool that
    # --rest_api_num_threads sizes): 40 per batch thread must be able to wait at once.
    assert threads(enable_batching=True, batching_parameters_file=str(batching)) == (
        max(default_grpc_threads(), 120), max(four_per_cpu, 120))
    assert threads(enable_batching=True, batching_parameters_file=str(batching),
                   grpc_max_threads=5, rest_api_num_threads=6) == (5, 6)
    # A batching file without --enable_batching is a startup error, as in TF Serving.
    with pytest.raises(UserError, match="without --enable_batching"):
        threads(batching_parameters_file=str(batching))


def test_large_batch_splitting_runs_a_big_request_in_execution_sized_pieces():
    model = Recorder()
    scheduler = BatchScheduler(params(max_batch_size=10, enable_large_batch_splitting=True,
                                      max_execution_batch_size=4, batch_timeout_micros=0))
    try:
        x = np.arange(20, dtype=np.float32).reshape(10, 2)
        result = scheduler.submit(("m", 1, "serving_default"), {"x": x}, model)
        np.testing.assert_array_equal(result["y"], x * 2)  # the pieces come back in order
        assert sorted(model.sizes) == [2, 4, 4] and max(model.sizes) <= 4
        with pytest.raises(ValueError, match="more than max_batch_size 10"):
            scheduler.submit(("m", 1, "serving_default"), {"x": np.zeros((11, 2))}, model)
    finally:
        scheduler.close()
    with pytest.raises(ValueError, match="must equal max_execution_batch_size"):
        BatchScheduler(params(max_batch_size=8, enable_large_batch_splitting=True,
                              max_execution_batch_size=4, allowed_batch_sizes=[2, 8]))


def _submit_as(token, scheduler, key, x, model):
    with request_scope(token):
        return scheduler.submit(key, {"x": x}, model)


def test_a_cancelled_request_leaves_its_waiting_batch_at_once():
    gate = threading.Event()
    model = Recorder(gate=gate)
    scheduler = BatchScheduler(params(max_batch_size=8, batch_timeout_micros=0))
    pool = ThreadPoolExecutor(4)
    try:
        blocker = pool.submit(scheduler.submit, "k", {"x": np.zeros((1, 2))}, model)
        assert model.entered.wait(5)  # the only thread is busy: the next two wait together
        doomed, kept = RunToken("doomed", time.monotonic() + 60), RunToken("kept")
        doomed_future = pool.submit(_submit_as, doomed, scheduler, "k", np.ones((3, 2)), model)
        kept_future = pool.submit(_submit_as, kept, scheduler, "k", np.full((2, 2), 5.0), model)
        wait_until(lambda: sum(b.size for q in scheduler._queues.values() for b in q) == 5)
        started = time.monotonic()
        doomed.cancel(Code.DEADLINE_EXCEEDED, "past its deadline")
        with pytest.raises(ServingError, match="past its deadline"):
            doomed_future.result(5)
        assert time.monotonic() - started < 1.0  # not after the batch ahead of it
        assert not blocker.done()
        gate.set()
        assert kept_future.result(5)["y"].tolist() == [[10.0, 10.0]] * 2
        blocker.result(5)
        assert model.sizes == [1, 2]  # the cancelled request's 3 rows never ran
    finally:
        gate.set()
        scheduler.close()
        pool.shutdown()


def test_a_running_batch_is_stopped_only_when_all_its_requests_are_cancelled():
    seen: list = []
    release = threading.Event()

    def model(inputs):
        token = current_token()  # the batch's own token, which the scheduler may cancel
        seen.append(token)
        while not token.cancelled and not release.is_set():
            time.sleep(0.01)
        if token.cancelled:
            raise token.error
        return {"y": inputs["x"] * 2}

    scheduler = BatchScheduler(params(max_batch_size=8, batch_timeout_micros=200_000))
    pool = ThreadPoolExecutor(4)
    try:
        tokens = [RunToken(f"r{i}", time.monotonic() + 30 + i) for i in range(3)]
        futures = [pool.submit(_submit_as, token, scheduler, "k", np.ones((1, 2)), model)
                   for token in tokens]
        wait_until(lambda: len(seen) == 1)  # the three run as one batch
        assert seen[0].deadline == tokens[2].deadline  # TF1 runs get the latest deadline
        tokens[0].cancel(Code.CANCELLED, "client left")
        tokens[1].cancel(Code.DEADLINE_EXCEEDED, "too late")
        with pytest.raises(ServingError, match="client left"):
            futures[0].result(5)
        with pytest.raises(ServingError, match="too late"):
            futures[1].result(5)
        time.sleep(0.1)
        assert not seen[0].cancelled and not futures[2].done()  # one request still wants it
        tokens[2].cancel(Code.DEADLINE_EXCEEDED, "late too")
        with pytest.raises(ServingError, match="late too"):
            futures[2].result(5)
        wait_until(lambda: seen[0].cancelled)  # nobody is left: the run is stopped
        release.set()
        # The scheduler goes on: a new request runs.
        assert scheduler.submit("k", {"x": np.ones((1, 2))}, model)["y"].tolist() == [[2, 2]]
    finally:
        release.set()
        scheduler.close()
        pool.shutdown()
