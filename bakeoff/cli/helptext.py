"""Command help as typer's rich formatter should get it: paragraphs on one line each, brackets kept literally.

Typer renders help with rich markup, which reads ``[n, d]`` as a style tag and drops it; and a docstring's
hard line breaks at 110 columns would stay breaks on an 80-column terminal. One function for every command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable


def literal(text: str) -> str:
    """``text`` with everything rich markup would read as a tag escaped: ``[n, d]`` prints as ``[n, d]``."""
    from rich.markup import escape

    return escape(text)


def command_help(func: Callable) -> str:
    """The docstring with each paragraph on one line (rich wraps it to the terminal) and brackets escaped."""
    paragraphs = inspect.cleandoc(func.__doc__ or "").split("\n\n")
    return literal("\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs))
