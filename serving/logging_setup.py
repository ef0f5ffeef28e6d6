"""The one logging configuration for every rnnkit process.

Here, not in app/, so that `python -m serving` sets up logging without importing the app.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile


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


def import_tensorflow(verbose: int = 0) -> None:
    """Import TensorFlow, hiding the C++ start-up lines it writes before its logging is set up.

    TF 2.21 prints its oneDNN and CUDA-stub notices straight to file descriptor 2, ignoring
    TF_CPP_MIN_LOG_LEVEL, so the descriptor is pointed at a temporary file during the import; what
    was captured is replayed if the import fails.

    Args:
        verbose: 2 or more imports with nothing hidden.
    """
    if "tensorflow" in sys.modules or verbose >= 2:
        import tensorflow
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
