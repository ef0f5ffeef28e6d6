"""`rnnkit serve`: the model server, with tensorflow_model_server's flags and protocols."""

from __future__ import annotations

import argparse

HELP = "serve exported SavedModels over TF Serving's REST and gRPC APIs"
EXAMPLES = """examples:
  rnnkit serve --model_name=half_plus_two --model_base_path=/models/half_plus_two
  rnnkit serve --model_config_file=models.config --model_config_file_poll_wait_seconds=60
  rnnkit serve --model_base_path=exports/sentiment --enable_batching \\
      --batching_parameters_file=batching.config --host=0.0.0.0
  curl -d '{"instances": [1.0, 2.0, 5.0]}' localhost:8501/v1/models/half_plus_two:predict
(python -m serving takes the same flags.)
"""


def _bool(text: str) -> bool:
    """Parse a boolean flag value the way TF Serving's flags accept it."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this command's flags (tensorflow_model_server's names and defaults).

    Args:
        parser: the sub-command's parser.
    """
    flag = parser.add_argument
    flag("--port", type=int, default=8500,
         help="gRPC port; 0 turns gRPC off (default: %(default)s)")
    flag("--rest_api_port", type=int, default=8501,
         help="HTTP/REST port; 0 turns REST off (default: %(default)s)")
    flag("--host", default="127.0.0.1",
         help="address to listen on; 0.0.0.0 for other machines (default: %(default)s)")
    flag("--model_name", default="default",
         help="name of the model served from --model_base_path (default: %(default)s)")
    flag("--model_base_path", metavar="DIR",
         help="folder holding the model's numbered version folders (1/, 2/, ...)")
    flag("--model_config_file", metavar="FILE",
         help="text-format ModelServerConfig listing several models, version policies and "
              "labels (instead of --model_base_path)")
    flag("--model_config_file_poll_wait_seconds", type=float, default=0, metavar="SECONDS",
         help="re-read --model_config_file this often; 0 reads it once (default: %(default)s)")
    flag("--file_system_poll_wait_seconds", type=float, default=1, metavar="SECONDS",
         help="look for new model versions this often; 0 only at start (default: %(default)s)")
    flag("--enable_batching", type=_bool, nargs="?", const=True, default=False,
         metavar="BOOL", help="merge concurrent requests into batches (default: %(default)s)")
    flag("--batching_parameters_file", metavar="FILE",
         help="text-format BatchingParameters (max_batch_size, batch_timeout_micros, ...); "
              "used with --enable_batching, as in TF Serving")
    flag("--monitoring_config_file", metavar="FILE",
         help="text-format MonitoringConfig; enables the Prometheus page on the REST port")
    flag("--rest_api_timeout_in_ms", type=int, default=30000, metavar="MS",
         help="REST requests running longer get HTTP 504; 0 for no limit (default: %(default)s)")
    flag("--rest_api_max_body_bytes", type=int, default=64 << 20, metavar="BYTES",
         help="REST request bodies larger than this get HTTP 413 (default: %(default)s)")
    flag("--enable_model_warmup", type=_bool, nargs="?", const=True, default=True,
         metavar="BOOL", help="replay assets.extra/tf_serving_warmup_requests before a "
                              "version serves (default: %(default)s)")
    flag("--grpc_max_threads", type=int, default=0, metavar="N",
         help="gRPC worker threads; 0 for 4 per CPU (default: %(default)s)")
    flag("--shutdown_grace_seconds", type=float, default=10.0, metavar="SECONDS",
         help="after SIGTERM, how long in-flight requests may finish (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C.

    Args:
        args: the parsed flags.
    """
    import dataclasses

    from serving.model_server import ServerOptions, serve

    names = {field.name for field in dataclasses.fields(ServerOptions)}
    return serve(ServerOptions(**{name: getattr(args, name) for name in names}))
