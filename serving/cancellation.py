"""Stop a request's TensorFlow run when its deadline passes or its client goes away.

A protocol adapter gives each request a `RunToken` (`request_scope`) and cancels it when the REST
timeout fires or the gRPC call ends. `cancellable_run` makes the TF2 signature call of that
request cancellable: TensorFlow's CancellationManager aborts the running function at its next op
boundary (a while loop stops within one iteration; measured in docs/reliability.md).

TensorFlow reads the manager of a call from one process-wide variable
(`tensorflow.python.eager.cancellation.context()`), which two threads calling at once would
overwrite for each other; `install` makes that lookup per thread, so concurrent requests each
cancel only their own run.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

from serving.status import Code, ServingError

log = logging.getLogger("serving.cancellation")

_current: contextvars.ContextVar[RunToken | None] = contextvars.ContextVar("rnnkit_run_token",
                                                                         default=None)
_thread = threading.local()
_install_lock = threading.Lock()
_installed: bool | None = None  # None: not tried yet; False: this TensorFlow has no hook


class RunToken:
    """One request's right to run: cancelled once, with the status the request then gets.

    Args:
        what: a few words naming the request, for messages.
        deadline: `time.monotonic()` when the request's time is up, or None; runs that cannot
            be cancelled from outside (TF1 Sessions) are given it as their own timeout.
    """

    def __init__(self, what: str = "the request", deadline: float | None = None) -> None:
        self.what = what
        self.deadline = deadline
        self._lock = threading.Lock()
        self._callbacks: set[Callable[[], object]] = set()
        self.error: ServingError | None = None

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self.error is not None

    def cancel(self, code: Code = Code.CANCELLED, message: str = "") -> None:
        """Stop the request's runs now and refuse new ones (the first call's status is kept).

        Args:
            code: the status the request ends with, e.g. DEADLINE_EXCEEDED.
            message: why.
        """
        with self._lock:
            if self.error is None:
                self.error = ServingError(code, message or f"{self.what} was cancelled")
            callbacks = list(self._callbacks)
            self._callbacks.clear()
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> bool:
        """Call `callback` (once, from the cancelling thread) when the token is cancelled.

        Returns False, without keeping the callback, when the token is cancelled already.

        Args:
            callback: e.g. a CancellationManager's `start_cancel`.
        """
        with self._lock:
            if self.error is not None:
                return False
            self._callbacks.add(callback)
            return True

    def forget(self, callback: Callable[[], object]) -> None:
        """Drop a callback given to `on_cancel` (its run is over)."""
        with self._lock:
            self._callbacks.discard(callback)


@contextlib.contextmanager
def request_scope(token: RunToken | None) -> Iterator[RunToken | None]:
    """Make `token` the current request's token in this thread (for `cancellable_run`).

    Args:
        token: the request's token, or None for runs that cannot be cancelled.
    """
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)


def current_token() -> RunToken | None:
    """The token of the request this thread is working on, if any."""
    return _current.get()


def check_not_cancelled() -> None:
    """Raise the current request's status if it was cancelled (its deadline passed)."""
    token = _current.get()
    if token is not None and token.error is not None:
        raise token.error


def remaining_ms() -> int | None:
    """Milliseconds left before the current request's deadline (at least 1), or None."""
    token = _current.get()
    if token is None or token.deadline is None:
        return None
    return max(1, math.ceil((token.deadline - time.monotonic()) * 1000))


def install() -> bool:
    """Make TensorFlow look up a call's CancellationManager per thread; False if impossible."""
    global _installed
    with _install_lock:
        if _installed is None:
            try:
                from tensorflow.python.eager import cancellation as tf_cancellation
                shared = tf_cancellation.context
                tf_cancellation.CancellationManager  # noqa: B018 (present in this TF?)
            except (ImportError, AttributeError) as err:
                log.warning("this TensorFlow cannot cancel runs (%s); a run past its deadline "
                            "finishes in the background", err)
                _installed = False
            else:
                def per_thread():
                    manager = getattr(_thread, "manager", None)
                    return manager if manager is not None else shared()

                tf_cancellation.context = per_thread
                _installed = True
        return _installed


@contextlib.contextmanager
def cancellable_run() -> Iterator[None]:
    """Run the TF2 function called inside under the current request's cancellation.

    Raises the request's status at once if it was already cancelled; a run cancelled meanwhile
    raises TensorFlow's CancelledError, which `cancelled_error` turns into the request's status.
    """
    token = _current.get()
    if token is None or not install():
        yield
        return
    from tensorflow.python.eager import cancellation as tf_cancellation

    manager = tf_cancellation.CancellationManager()
    if not token.on_cancel(manager.start_cancel):
        raise token.error  # type: ignore[misc]
    _thread.manager = manager
    try:
        yield
    finally:
        _thread.manager = None
        token.forget(manager.start_cancel)


def cancelled_error() -> ServingError | None:
    """The current request's status if it was cancelled, else None."""
    token = _current.get()
    return token.error if token is not None else None
