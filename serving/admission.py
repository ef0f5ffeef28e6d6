"""Admission control per model: a bound on its runs at once and a bounded queue before them.

A request for a model runs if fewer than `max_running` of that model's requests run; else it
waits in the model's queue (first come, first served) if fewer than `max_queued` wait; else it is
refused at once with UNAVAILABLE (HTTP 503), as TF Serving's batching queue refuses. A request
whose deadline passes while it waits gets DEADLINE_EXCEEDED without running. So slow requests to
one model hold at most `max_running` workers and cannot starve other models or the health
endpoints.

REST waits on the event loop (`enter_async`, holding no request thread); gRPC waits in its RPC
thread (`enter`).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable

from serving.status import Code, ServingError


class _Model:
    """One model's running count and queue of waiters (callables that hand them the slot)."""

    __slots__ = ("running", "waiters")

    def __init__(self) -> None:
        self.running = 0
        self.waiters: collections.deque[Callable[[], bool]] = collections.deque()


class Slot:
    """A model's admission, to be released exactly once when the request's run has ended."""

    __slots__ = ("_admission", "_model", "_released")

    def __init__(self, admission: Admission, model: str) -> None:
        self._admission, self._model, self._released = admission, model, False

    def release(self) -> None:
        """Give the slot to the next waiter of the model, or free it."""
        if not self._released:
            self._released = True
            self._admission._release(self._model)


class Admission:
    """Per-model limits on running and waiting requests.

    Args:
        max_running: requests of one model run at once; 0 for no limit (no queue either).
        max_queued: requests of one model wait for a run at once; beyond: UNAVAILABLE.
    """

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max(0, max_queued)
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}

    def _full(self, model: str) -> ServingError:
        return ServingError(
            Code.UNAVAILABLE,
            f"model {model!r} is busy: {self.max_running} requests are running and "
            f"{self.max_queued} waiting (--max_concurrent_runs_per_model, "
            "--max_queued_runs_per_model); retry later")

    def _try_enter(self, model: str, waiter: Callable[[], bool] | None) -> bool | None:
        """True: admitted now; False: queued (waiter registered); raises when the queue is full."""
        with self._lock:
            state = self._models.get(model)
            if state is None:
                state = self._models[model] = _Model()
            if state.running < self.max_running and not state.waiters:
                state.running += 1
                return True
            if waiter is None or len(state.waiters) >= self.max_queued:
                if state.running == 0 and not state.waiters:
                    del self._models[model]
                raise self._full(model)
            state.waiters.append(waiter)
            return False

    def _release(self, model: str) -> None:
        with self._lock:
            state = self._models[model]
            while state.waiters:
                # The slot passes to a waiter still waiting (one that gave up answers False).
                if state.waiters.popleft()():
                    return
            state.running -= 1
            if state.running == 0:
                del self._models[model]

    def _forget(self, model: str, waiter: Callable[[], bool]) -> None:
        with self._lock:
            state = self._models.get(model)
            if state is not None and waiter in state.waiters:
                state.waiters.remove(waiter)

    def enter(self, model: str, timeout: float | None) -> Slot | None:
        """Admit a request in this thread, waiting up to `timeout` seconds in the model's queue.

        Returns None when there is no limit. Raises UNAVAILABLE when the queue is full and
        DEADLINE_EXCEEDED when the wait outlasts `timeout`.

        Args:
            model: the model's name.
            timeout: the request's remaining time, or None for no deadline.
        """
        if self.max_running <= 0:
            return None
        admitted = threading.Event()
        state = {"gave_up": False}
        lock = threading.Lock()

        def hand_over() -> bool:
            with lock:
                if state["gave_up"]:
                    return False
                admitted.set()
                return True

        if self._try_enter(model, hand_over):
            return Slot(self, model)
        if admitted.wait(timeout):
            return Slot(self, model)
        with lock:
            if not admitted.is_set():
                state["gave_up"] = True
        if state["gave_up"]:
            self._forget(model, hand_over)
            raise _waited_too_long(model, timeout)
        return Slot(self, model)

    async def enter_async(self, model: str, deadline: float | None) -> Slot | None:
        """Admit a request on the event loop, waiting in the model's queue until `deadline`.

        Args:
            model: the model's name.
            deadline: `time.monotonic()` when the request's time is up, or None.
        """
        if self.max_running <= 0:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        lock = threading.Lock()
        state = {"gave_up": False, "admitted": False}

        def hand_over() -> bool:  # called from any thread, under the admission lock
            with lock:
                if state["gave_up"]:
                    return False
                state["admitted"] = True
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(None))
            return True

        if self._try_enter(model, hand_over):
            return Slot(self, model)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except BaseException as err:  # time is up, or the client went away (cancelled)
            with lock:
                admitted = state["admitted"]
                state["gave_up"] = not admitted
            if admitted:  # handed over just now: give it back
                Slot(self, model).release()
            else:
                self._forget(model, hand_over)
            if isinstance(err, TimeoutError):
                raise _waited_too_long(model, timeout) from None
            raise
        return Slot(self, model)

    def counts(self, model: str) -> tuple[int, int]:
        """(running, waiting) requests of a model, for tests and logs.

        Args:
            model: the model's name.
        """
        with self._lock:
            state = self._models.get(model)
            return (state.running, len(state.waiters)) if state else (0, 0)


def _waited_too_long(model: str, timeout: float | None) -> ServingError:
    return ServingError(Code.DEADLINE_EXCEEDED,
                        f"Deadline exceeded while waiting for model {model!r} "
                        f"({(timeout or 0) * 1000:.0f} ms): its earlier requests are still "
                        "running")
