"""Keep secrets out of everything bakeoff shows or logs: URIs, MLflow params and tags, reports.

Why by value as well as by pattern: a token or password can turn up anywhere (a URI someone passed, an error
message), so besides the known shapes (URL ``user:password@``, AWS key ids) every value of an environment variable
whose NAME says it is secret is scrubbed wherever it appears.
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any, TextIO

from bakeoff import env

_SECRET_NAME = re.compile(
    r"(secret|password|passwd|token|credential|access_key|api_key|private_key|session_key)", re.IGNORECASE
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def _secret_values() -> list[str]:
    """Values of environment variables whose NAME says they are secret (long enough to be real)."""
    return sorted(
        {v for k, v in env.snapshot().items() if _SECRET_NAME.search(k) or k.endswith("_KEY_ID") if v and len(v) >= 6},
        key=len,
        reverse=True,
    )


def redact(text: str) -> str:
    """Remove credentials from a string: URL user:password@, AWS key ids, secret env values."""
    text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
    text = _AWS_KEY_ID.sub("***", text)
    for value in _secret_values():
        text = text.replace(value, "***")
    return text


def one_line(message: object, limit: int | None = None) -> str:
    """An error's text redacted, its whitespace (newlines too) collapsed, optionally cut: for one-line messages."""
    text = redact(" ".join(str(message).split()))
    return text[:limit] if limit else text


def has_credentials(text: str) -> bool:
    """True when ``text`` carries a URL ``user:password@`` or an AWS access key id (what a parameter must not)."""
    return bool(_URL_USERINFO.search(text) or _AWS_KEY_ID.search(text))


class RedactingStream(io.TextIOBase):
    """A text stream that redacts every line before passing it on (``pipelines.local`` wraps stdout/stderr in it,
    so the run log never holds a credential whichever library printed it: MLflow's "View run at <URI>", kfp's
    task output, a traceback).

    Whole lines are redacted, so a URI printed in pieces (``print("at", uri)``) is still caught; ``flush`` passes on
    a pending partial line too (progress output, a prompt).
    """

    def __init__(self, target: TextIO):
        super().__init__()
        self.target = target
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.target.write(redact(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(redact(self._pending))
            self._pending = ""
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


class RedactingFormatter(logging.Formatter):
    """A log formatter whose records come out redacted (the CLI's log file gets MLflow's and other libraries' logs)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def safe_params(params: dict[str, Any] | None, prefix: str = "") -> dict[str, str]:
    """Flatten a (nested) dict into MLflow params; keys that name secrets are dropped, values scrubbed."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if _SECRET_NAME.search(str(key)):
            continue
        if isinstance(value, dict):
            out.update(safe_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[name] = redact(str(value))[:MAX_PARAM_CHARS]
    return out
