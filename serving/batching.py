"""Server-side request batching: concurrent requests for one model merge into one model run.

Works as TF Serving's BasicBatchScheduler behind a BatchingSession: requests for the same key
(model, version, signature) whose inputs can be concatenated along axis 0 join an open batch;
a batch runs when it is full, when a request no longer fits, or when its oldest request has waited
batch_timeout_micros, on one of num_batch_threads threads shared by all keys. With the default
timeout of 0 a batch runs as soon as a thread is free, so batches only grow while every thread is
busy: batching never delays an idle server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from serving.cancellation import RunToken, current_token, request_scope
from serving.config_readers import BatchingParameters
from serving.metrics import Metrics
from serving.status import Code

log = logging.getLogger("serving.batching")

Tensors = dict[str, np.ndarray]
RunFn = Callable[[Tensors], Tensors]


class QueueFullError(Exception):
    """max_enqueued_batches batches already wait for a key (TF Serving answers UNAVAILABLE)."""


class SchedulerClosedError(Exception):
    """The scheduler was closed before the request ran (the server is shutting down)."""


class _Task:
    """One caller's request, waiting for its slice of a merged batch's outputs."""

    __slots__ = ("batch", "done", "enqueued", "error", "inputs", "result", "size", "token")

    def __init__(self, inputs: Tensors, size: int, token: RunToken | None) -> None:
        self.inputs = inputs
        self.size = size
        self.token = token  # the caller's request: its cancellation drops the task
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.batch: _Batch | None = None
        self.result: Tensors | None = None
        self.error: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        return self.token is not None and self.token.cancelled


class _Batch:
    """Tasks with the same key and signature that will run as one call."""

    __slots__ = ("closed", "created", "key", "run", "signature", "size", "tasks", "token")

    def __init__(self, key: Hashable, signature: tuple, run: RunFn) -> None:
        self.key = key
        self.signature = signature
        self.run = run
        self.tasks: list[_Task] = []
        self.size = 0
        self.created = time.monotonic()
        self.closed = False  # a later task did not fit: run it without waiting
        self.token: RunToken | None = None  # set when the batch starts running

    def start(self) -> None:
        """Mark the batch as running, under a token of its own that stops its run once every
        one of its requests is cancelled (deadline: the latest of theirs, None if one has none)."""
        deadlines = [task.token.deadline if task.token is not None else None
                     for task in self.tasks]
        deadline = None if None in deadlines else max(deadlines)  # type: ignore[type-var]
        self.token = RunToken(f"a batch of {len(self.tasks)} requests", deadline)


def _fill_value(array: np.ndarray) -> Any:
    """Padding value: zero for numbers (our models' mask id), empty for strings."""
    if array.dtype.kind == "S":
        return b""
    if array.dtype.kind == "U":
        return ""
    if array.dtype.kind == "O":
        return "" if array.size and isinstance(array.flat[0], str) else b""
    return 0


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Return `array` enlarged to `shape` (no dimension shrinks), padded at the end."""
    if array.shape == shape:
        return array
    out = np.full(shape, _fill_value(array), dtype=array.dtype)
    out[tuple(slice(0, s) for s in array.shape)] = array
    return out


def _model_name(key: Hashable) -> str:
    """The model name for metrics: the key's first item when it is a tuple."""
    if isinstance(key, tuple) and key:
        return str(key[0])
    return str(key)


class BatchScheduler:
    """Merges concurrent requests into batches and runs them on a small thread pool.

    Args:
        params: batching settings (TF Serving's BatchingParameters).
        metrics: where batch sizes and queuing times are recorded, if given.
    """

    def __init__(self, params: BatchingParameters, metrics: Metrics | None = None) -> None:
        params.validate()
        self.params = params
        self.metrics = metrics
        self._timeout = params.batch_timeout_micros / 1e6
        # Rows per model run; requests up to max_batch_size rows are split to fit when
        # enable_large_batch_splitting is on (TF's max_execution_batch_size).
        self._limit = params.execution_batch_size
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[_Batch]] = {}
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{params.thread_pool_name}_{i}",
                             daemon=True)
            for i in range(params.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def submit(self, key: Hashable, inputs: dict[str, np.ndarray], run: RunFn) -> Tensors:
        """Run `inputs` as part of a merged batch and return this request's rows of the outputs.

        Args:
            key: requests with equal keys may merge, e.g. (model, version, signature).
            inputs: input name -> array whose first dimension is this request's batch size.
            run: computes outputs (name -> array with the same first dimension) for merged inputs;
                the first request's `run` of a batch is the one called.

        Raises:
            ValueError: inputs without a shared batch dimension, more rows than max_batch_size
                (split into several runs when enable_large_batch_splitting is on), or outputs
                that do not keep the batch dimension.
            QueueFullError: max_enqueued_batches batches already wait for this key.
            SchedulerClosedError: the scheduler is closed.
            Exception: whatever `run` raised, for every request of that batch.
        """
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        size = self._batch_size(arrays)
        if size == 0:
            return run(arrays)
        signature = self._signature(arrays)
        limit = self._limit
        token = current_token()
        if size <= limit:
            tasks = [_Task(arrays, size, token)]
        else:  # enable_large_batch_splitting: one request spreads over several model runs
            tasks = [_Task({name: array[start:start + limit] for name, array in arrays.items()},
                           min(limit, size - start), token) for start in range(0, size, limit)]
        with self._cond:
            if self._closed:
                raise SchedulerClosedError("the batch scheduler is closed; the server is stopping")
            for task in tasks:
                self._enqueue(key, signature, run, task)

        def cancelled() -> None:  # the request's deadline passed or its client went away
            for task in tasks:
                self._drop(task)

        if token is not None and not token.on_cancel(cancelled):
            cancelled()
        try:
            for task in tasks:
                task.done.wait()
        finally:
            if token is not None:
                token.forget(cancelled)
        for task in tasks:
            if task.error is not None:
                raise task.error
        if len(tasks) == 1:
            assert tasks[0].result is not None
            return tasks[0].result
        return {name: np.concatenate([task.result[name] for task in tasks])  # type: ignore[index]
                for name in tasks[0].result or {}}

    def _enqueue(self, key: Hashable, signature: tuple, run: RunFn, task: _Task) -> None:
        """Put a task into an open batch of its key, or a new one (holding the lock)."""
        queue = self._queues.setdefault(key, deque())
        batch = next((b for b in queue if b.signature == signature and not b.closed), None)
        if batch is not None and batch.size + task.size > self._limit:
            batch.closed = True
            batch = None
        if batch is None:
            if len(queue) >= self.params.max_enqueued_batches:
                raise QueueFullError(
                    "The batch scheduling queue to which this task was submitted is full "
                    f"({len(queue)} batches wait for {_model_name(key)!r}, "
                    f"max_enqueued_batches {self.params.max_enqueued_batches}); retry "
                    "later, or raise max_enqueued_batches or num_batch_threads")
            batch = _Batch(key, signature, run)
            queue.append(batch)
            self._cond.notify()
        batch.tasks.append(task)
        batch.size += task.size
        task.batch = batch
        if batch.size >= self._limit:
            self._cond.notify()

    def _drop(self, task: _Task) -> None:
        """End a cancelled request's task now with the request's status: out of its batch while
        that waits; once it runs, the run is stopped when none of its requests is left."""
        with self._cond:
            batch = task.batch
            if task.done.is_set() or batch is None:
                return
            if batch.token is None:  # still queued
                batch.tasks.remove(task)
                batch.size -= task.size
                queue = self._queues.get(batch.key)
                if not batch.tasks and queue is not None and batch in queue:
                    queue.remove(batch)
                    if not queue:
                        del self._queues[batch.key]
                stop_batch = None
            else:
                stop_batch = batch.token if all(t.cancelled for t in batch.tasks) else None
            task.error = task.token.error if task.token is not None else None
            task.done.set()
        if stop_batch is not None:
            stop_batch.cancel(Code.CANCELLED, "every request of the batch was cancelled")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads; requests still queued fail with SchedulerClosedError.

        Args:
            timeout: seconds to wait for batches already running to finish.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pending = [t for q in self._queues.values() for b in q for t in b.tasks]
            self._queues.clear()
            self._cond.notify_all()
        for task in pending:
            task.error = SchedulerClosedError(
                "the model server stopped before this request ran; send it again")
            task.done.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            log.warning("batch threads still running a batch after %.1fs", timeout)

    def _batch_size(self, arrays: Tensors) -> int:
        if not arrays:
            raise ValueError("a batched request needs at least one input tensor")
        sizes = {}
        for name, array in arrays.items():
            if array.ndim == 0:
                raise ValueError(f"input {name!r} is a scalar; batching needs every input to have "
                                 "a batch (first) dimension — send it with shape [1]")
            sizes[name] = array.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batched inputs must share their first dimension, got sizes {sizes}")
        size = next(iter(sizes.values()))
        if size > self.params.max_batch_size:
            raise ValueError(
                f"request has {size} examples, more than max_batch_size "
                f"{self.params.max_batch_size}; send at most {self.params.max_batch_size} per "
                "request or raise max_batch_size in the batching parameters file")
        return size

    def _signature(self, arrays: Tensors) -> tuple:
        """What must match for requests to share a batch: names, dtypes, shapes unless padded."""
        parts = []
        for name in sorted(arrays):
            array = arrays[name]
            kind = "str" if array.dtype.kind in "SUO" else array.dtype.str
            shape = array.ndim if self.params.pad_variable_length_inputs else array.shape[1:]
            parts.append((name, kind, shape))
        return tuple(parts)

    def _next_ready(self) -> tuple[_Batch | None, float | None]:
        """The oldest batch ready to run (removed from its queue), else how long to wait."""
        now = time.monotonic()
        best: tuple[Hashable, _Batch] | None = None
        wait: float | None = None
        for key, queue in self._queues.items():
            for batch in queue:
                deadline = batch.created + self._timeout
                ready = batch.closed or batch.size >= self._limit or now >= deadline
                if ready:
                    if best is None or batch.created < best[1].created:
                        best = (key, batch)
                else:
                    wait = deadline - now if wait is None else min(wait, deadline - now)
        if best is None:
            return None, wait
        key, batch = best
        queue = self._queues[key]
        queue.remove(batch)
        if not queue:
            del self._queues[key]
        batch.start()
        return batch, None

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    batch, wait = self._next_ready()
                    if batch is not None:
                        if self._queues:
                            # Hand the remaining batches (and their deadlines) to an idle thread.
                            self._cond.notify()
                        break
                    self._cond.wait(wait)
            self._execute(batch)

    def _merge(self, batch: _Batch) -> tuple[Tensors, int]:
        """Concatenate the tasks' inputs (padding if configured); returns inputs and batch size."""
        tasks = batch.tasks
        target = batch.size
        for allowed in self.params.allowed_batch_sizes:
            if allowed >= batch.size:
                target = allowed
                break
        if len(tasks) == 1 and target == batch.size:
            return tasks[0].inputs, target
        merged = {}
        for name in tasks[0].inputs:
            parts = [t.inputs[name] for t in tasks]
            if self.params.pad_variable_length_inputs:
                longest = tuple(max(p.shape[d] for p in parts) for d in range(1, parts[0].ndim))
                parts = [_pad_to(p, (p.shape[0], *longest)) for p in parts]
            if target > batch.size:
                parts.append(np.repeat(parts[0][:1], target - batch.size, axis=0))
            merged[name] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return merged, target

    def _split(self, batch: _Batch, outputs: Tensors, padded: int) -> None:
        """Give every task its rows of the outputs."""
        if not isinstance(outputs, dict):
            raise TypeError(f"the batched run returned {type(outputs).__name__}, expected a dict "
                            "of output name -> array")
        arrays = {name: np.asarray(value) for name, value in outputs.items()}
        for name, array in arrays.items():
            if array.ndim == 0 or array.shape[0] != padded:
                raise ValueError(
                    f"output {name!r} has shape {list(array.shape)} but the merged batch has "
                    f"{padded} rows; batching needs every output to keep the batch dimension — "
                    "turn batching off for this model")
        if len(batch.tasks) == 1:
            task = batch.tasks[0]
            task.result = arrays if padded == task.size else {
                name: array[: task.size] for name, array in arrays.items()}
            return
        start = 0
        for task in batch.tasks:
            end = start + task.size
            task.result = {name: array[start:end] for name, array in arrays.items()}
            start = end

    def _execute(self, batch: _Batch) -> None:
        started = time.monotonic()
        padded = batch.size
        try:
            inputs, padded = self._merge(batch)
            with request_scope(batch.token):  # so that _drop can stop the run
                outputs = batch.run(inputs)
            self._split(batch, outputs, padded)
        except BaseException as err:  # every caller of the batch gets the batch's error
            with self._cond:
                for task in batch.tasks:
                    if not task.done.is_set():  # a cancelled one keeps its own status
                        task.error = err
        finally:
            with self._cond:  # with _drop's lock: a task is ended by one of the two
                for task in batch.tasks:
                    task.done.set()
        if self.metrics is not None:
            self.metrics.observe_batch(_model_name(batch.key), batch.size, padded)
            for task in batch.tasks:
                self.metrics.observe_queuing(self.params.thread_pool_name, started - task.enqueued)
