"""The CLI's log file: what TensorFlow, absl and MLflow print while starting goes there, not to the terminal.

TensorFlow's C++ side writes straight to file descriptor 2 (``oneDNN custom operations are on``, absl's
``WARNING: All log messages before absl::InitializeLog()``) and ignores ``TF_CPP_MIN_LOG_LEVEL`` for some of
it, so routing Python's loggers is not enough: descriptor 2 itself becomes the log file, and Python's
``sys.stderr`` (error lines, progress bars, typer's messages) keeps writing to the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from bakeoff import env
from bakeoff.redaction import RedactingFormatter

_terminal: list[int] = []  # the descriptor that was 2 before routing, while routed
ROTATE_BYTES = 5_000_000  # the log starts afresh (the old one kept as bakeoff.log.1) once it has grown past this


class _BestEffortFileHandler(logging.FileHandler):
    """The log is a convenience: a full disk or a file-size limit must not print logging's own tracebacks into the
    terminal (the command's one-line error is what the user needs there)."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def rotate_if_large(path: Path) -> None:
    """Keep the log bounded: one previous generation, renamed (an atomic step: no half file)."""
    try:
        if path.stat().st_size > ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    except OSError:
        pass  # no log yet, or one we cannot rename: appending is still fine


def give_terminal_back() -> None:
    """Descriptor 2 back to the terminal: before ``exec`` of a program whose output the user must see (mlflow ui)."""
    if _terminal:
        sys.stderr.flush()
        os.dup2(_terminal[0], 2)


def route_library_noise() -> Path | None:
    """Send descriptor 2 and Python's loggers/warnings to the log file; returns it (None if it cannot be opened)."""
    env.quiet_libraries()
    path = env.cli_log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rotate_if_large(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError:
        return None  # a read-only home: the noise stays on the terminal rather than the command failing
    sys.stderr.flush()
    terminal = os.dup(2)
    _terminal[:] = [terminal]
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    handler = _BestEffortFileHandler(path, encoding="utf-8")
    handler.setFormatter(RedactingFormatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # library warnings (Keras, MLflow, pydantic) go to the log as well
    logging.getLogger("bakeoff").info("bakeoff %s", " ".join(sys.argv[1:]))
    return path
