"""`rnnkit serve`: the model server, with tensorflow_model_server's flags and protocols."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("app.serve")

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


def _version() -> str:
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return (f"TensorFlow ModelServer: {version('tensorflow-serving-api')}-rnnkit"
            f"{version('rnnkit')}\nTensorFlow Library: {version('tensorflow')}\n")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C.

    Args:
        args: the parsed command line.
    """
    import dataclasses

    from serving.flags import FLAGS, NO_EFFECT, parse_flags, usage
    from serving.model_server import ServerOptions, serve

    parsed = parse_flags(args.flags)
    if parsed.help:
        sys.stdout.write(usage())
        return 0
    if parsed.values["version"]:
        sys.stdout.write(_version())
        return 0
    for argument in parsed.unknown:
        log.warning("unknown argument: %s (ignored, as tensorflow_model_server does; see "
                    "`rnnkit serve --help`)", argument)
    for name in sorted(parsed.given):
        if FLAGS[name].effect == NO_EFFECT:
            # ALTS asked for transport security: not getting it deserves more than a note.
            level = logging.WARNING if name == "use_alts_credentials" else logging.INFO
            log.log(level, "--%s has no effect here: %s", name, FLAGS[name].help)
    names = {field.name for field in dataclasses.fields(ServerOptions)}
    values = {name: value for name, value in parsed.values.items() if name in names}
    for name, value in values.items():  # TF's "" means "not given" for file flags
        if value == "" and (name.endswith("_file") or name == "model_base_path"):
            values[name] = None
    return serve(ServerOptions(**values))
