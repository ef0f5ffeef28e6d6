"""The `rnnkit` command line: one parser, one command module per sub-command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from app.commands import COMMANDS
from serving.errors import UserError
from serving.logging_setup import configure_logging, import_tensorflow

log = logging.getLogger("app")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every command's sub-parser."""
    parser = argparse.ArgumentParser(
        prog="rnnkit",
        description="Recurrent neural networks from real data to a served model.",
        epilog="Run `rnnkit COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv also shows TensorFlow's own logs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name, help=module.HELP, description=module.HELP,
            epilog=getattr(module, "EXAMPLES", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(_module=module)
        module.add_arguments(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        if getattr(args._module, "USES_TENSORFLOW", True):
            import_tensorflow(args.verbose)
        return int(args._module.run(args) or 0)
    except UserError as err:
        print(f"rnnkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
