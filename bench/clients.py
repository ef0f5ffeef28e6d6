"""Concurrent clients for the serving benchmarks: start them together and time them."""

from __future__ import annotations

import threading
import time


def run_together(threads: list[threading.Thread]) -> float:
    """Start every client thread, wait for all of them, and return the wall time in seconds.

    Args:
        threads: the not yet started client threads.
    """
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
