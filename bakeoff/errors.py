"""One exception type for problems the user can fix: the CLI prints its message on one line and exits 2."""


class BakeoffError(Exception):
    """A user-facing, actionable error. The message is a single line that says what to do."""
