"""The one exception type for mistakes a user can fix, raised by serving, pipelines and app alike.

It lives in the lowest package that raises it: pipelines and app import serving (export, the
client), serving imports neither, and models raises no UserError.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user caused and can fix; the CLI prints it as one line and exits non-zero.

    Args:
        problem: what is wrong, naming the file, flag or value concerned.
        fix: what to do about it.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class DataUnavailable(UserError):
    """A data set is neither in the offline mirror nor downloadable; jobs over several tasks
    skip the task that needs it instead of stopping."""


def exit_status(command: Callable[[], int | None]) -> int:
    """Run a command-line program's body and return its exit status.

    A UserError prints as one line, `rnnkit: error: ...`, and gives 2; Ctrl-C gives 130; a
    closed stdout (a pipe into `head`) gives 141 without a word.

    Args:
        command: the body; returns its own status (None for 0).
    """
    try:
        return int(command() or 0)
    except UserError as err:
        print(f"rnnkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`rnnkit evaluate ... | head`): stop quietly, as `cat` does,
        # with stdout pointed at /dev/null so the exit's flush finds no pipe either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
