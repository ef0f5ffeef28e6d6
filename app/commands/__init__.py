"""One module per `rnnkit` command.

Each module defines `HELP` (one line for `rnnkit --help`), `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `rnnkit --help` stays
fast and TensorFlow is imported after logging is configured.
"""

# (command name, module) in the order `rnnkit --help` lists them.
COMMANDS: list[tuple[str, str]] = [
]
