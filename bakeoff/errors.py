"""Exceptions for problems the user can fix: the CLI prints the message on one line and exits with ``exit_code``.

Exit codes follow the shell's conventions: 2 for a usage error (a bad value, a missing file: the command was
wrong, as click reports bad options), 1 for work that was started and failed (a pipeline task).
"""


class BakeoffError(Exception):
    """A user-facing, actionable error. The message is a single line that says what to do."""

    exit_code = 2  # the request was wrong: the same code click gives a bad option


class PipelineFailed(BakeoffError):
    """The request was valid and the pipeline started, but a task failed: the command failed (exit code 1)."""

    exit_code = 1
