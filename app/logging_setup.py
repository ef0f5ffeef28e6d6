"""The one logging configuration for every rnnkit process."""

from __future__ import annotations

import logging
import os
import sys


def quiet_tensorflow(verbose: int = 0) -> None:
    """Hide TensorFlow's start-up noise unless asked for; must run before TensorFlow is imported.

    Args:
        verbose: 0 hides TF's C++ info and warnings, 2 or more shows everything.
    """
    if verbose < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def configure_logging(verbose: int = 0) -> None:
    """Send rnnkit's logs to stderr (stdout stays clean for JSON results).

    Args:
        verbose: 0 for INFO from rnnkit and WARNING from libraries, 1 for DEBUG from rnnkit,
            2 for DEBUG from everything.
    """
    quiet_tensorflow(verbose)
    level = logging.DEBUG if verbose >= 1 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    for name in ("app", "models", "pipelines", "serving"):
        logging.getLogger(name).setLevel(level)
    if verbose < 2:
        logging.getLogger("absl").setLevel(logging.ERROR)
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
