"""tensorflow_model_server's command line: its flags in, the model server run until stopped.

`rnnkit serve FLAGS` and `python -m serving FLAGS` both end here; `python -m serving` needs no
training or app code, so a serving image carries only this package.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from serving.errors import UserError
from serving.logging_setup import configure_logging, import_tensorflow

log = logging.getLogger("serving.command_line")


def version_text() -> str:
    """What `--version` prints, in tensorflow_model_server's two lines."""

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return (f"TensorFlow ModelServer: {version('tensorflow-serving-api')}-rnnkit"
            f"{version('rnnkit')}\nTensorFlow Library: {version('tensorflow')}\n")


def run_server(flags: Sequence[str]) -> int:
    """Parse tensorflow_model_server's flags and serve until SIGTERM or Ctrl-C.

    Args:
        flags: the command line after the program name, `--name=value` or `--name value`.

    Returns:
        The process exit code.
    """
    from serving.flags import FLAGS, NO_EFFECT, parse_flags, usage
    from serving.model_server import ServerOptions, serve

    parsed = parse_flags(list(flags))
    if parsed.help:
        sys.stdout.write(usage())
        return 0
    if parsed.values["version"]:
        sys.stdout.write(version_text())
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving`: the same logging and one-line errors as `rnnkit serve`.

    Args:
        argv: tensorflow_model_server's flags; None for sys.argv[1:].
    """
    flags = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    try:
        import_tensorflow()
        return int(run_server(flags) or 0)
    except UserError as err:
        print(f"rnnkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
