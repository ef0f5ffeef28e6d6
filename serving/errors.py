"""The one exception type for mistakes a user can fix, raised by serving, pipelines and app alike.

It lives in the lowest package that raises it: pipelines and app import serving (export, the
client), serving imports neither, and models raises no UserError.
"""

from __future__ import annotations


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
