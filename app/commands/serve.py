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
Every flag of tensorflow_model_server 2.21 is taken (`rnnkit serve --help` lists them);
python -m serving takes the same flags.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Take the whole command line as tensorflow_model_server's flags (serving.flags parses it).

    argparse would stop at the first flag it does not know; TF Serving warns about unknown
    arguments and starts anyway, so argparse is told that nothing here is an option.

    Args:
        parser: the sub-command's parser.
    """
    parser.prefix_chars = "\0"
    parser.add_argument("flags", nargs=argparse.REMAINDER,
                        help="tensorflow_model_server's flags, --name=value or --name value")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C.

    Args:
        args: the parsed command line.
    """
    from serving.command_line import run_server

    return run_server(args.flags)
