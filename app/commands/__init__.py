"""One module per `rnnkit` command.

Each module defines `HELP` (one line for `rnnkit --help`), `EXAMPLES`, `add_arguments(parser)` and
`run(args) -> int`. Modules must not import TensorFlow at the top: the CLI imports it quietly
before `run` (after logging is configured), unless the module sets `USES_TENSORFLOW = False`.
"""
# (command name, module) in the order `rnnkit --help` lists them.
COMMANDS: list[tuple[str, str]] = [
    ("run", "app.commands.run"),
    ("data", "app.commands.data"),
    ("train", "app.commands.train"),
    ("evaluate", "app.commands.evaluate"),
    ("export", "app.commands.export"),
    ("runs", "app.commands.runs"),
    ("app", "app.commands.app"),
    ("serve", "app.commands.serve"),
    ("predict", "app.commands.predict"),
    ("caption", "app.commands.caption"),
    ("translate", "app.commands.translate"),
    ("generate", "app.commands.generate"),
    ("lab", "app.commands.lab"),
    ("bench", "app.commands.bench"),
]
