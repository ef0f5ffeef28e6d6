"""The web app in a test: on a free port, in a thread, pointed at a model server that is down."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from app.web.server import WebServer, make_server


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def web_app_without_server(runs_dir: Path) -> Iterator[WebServer]:
    """The web app over `runs_dir`, whose model server address has nothing listening.

    Args:
        runs_dir: the runs folder the app's Results tab and progress API read.
    """
    server = make_server(f"127.0.0.1:{closed_port()}", "127.0.0.1", 0, runs_dir, timeout=3.0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
