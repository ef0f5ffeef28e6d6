"""`rnnkit app`: the web page to try every served model and browse training results."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.web.server import WebServer

HELP = "start the web app: try the served models in a browser, browse training results"
EXAMPLES = """examples:
  rnnkit app --server localhost:8500
  rnnkit app --server localhost:8500 --port 8080 --runs-dir runs
  rnnkit app --server localhost:8500 --base-path exports   # also list every model exported there
  rnnkit app --server model-server:8500 --host 0.0.0.0   # reachable from other machines
"""

log = logging.getLogger("app.commands.app")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags.

    Args:
        parser: the sub-command's parser.
    """
    parser.add_argument("--server", default="localhost:8500", metavar="HOST:PORT",
                        help="the model server's gRPC address (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: %(default)s, this machine only)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to listen on (default: %(default)s)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="run directories for the results page "
                             "(default: $RNNKIT_RUNS_DIR or ./runs)")
    parser.add_argument("--base-path", default=None, metavar="DIR",
                        help="an exports folder: its models are listed besides the task "
                             "registry's (TF Serving cannot list the models it serves)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for the model server per call "
                             "(default: %(default)s)")


def _warm_up(server: WebServer) -> None:
    """Check the model server in the background and log whether it answers.

    The first call imports TensorFlow's protos (seconds); doing it now spares the first page that
    wait, and a wrong --server shows in the log at once.

    Args:
        server: the web app.
    """
    from app.web.errors import ApiError

    try:
        server.api.health()
        log.info("model server at %s is reachable", server.api.server)
    except ApiError as err:
        log.warning("%s — %s", err.message, err.fix)


def run(args: argparse.Namespace) -> int:
    """Serve the web app until Ctrl-C.

    Args:
        args: the parsed flags.
    """
    from app.web.server import make_server
    from pipelines.config import runs_dir

    server = make_server(args.server, args.host, args.port,
                         args.runs_dir if args.runs_dir else runs_dir(), args.timeout,
                         args.base_path)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the app "
                    "(it has no authentication)", args.host)
    threading.Thread(target=_warm_up, args=(server,), daemon=True, name="warm-up").start()
    log.info("web app on %s (model server %s, runs in %s); Ctrl-C stops it",
             server.url, args.server, server.api.runs_dir)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        # A second Ctrl-C (or the same signal sent to the whole process group) must not cut the
        # shutdown short and leave the process dying of the signal.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log.info("stopping the web app")
    finally:
        server.server_close()
    return 0
