"""Command help as typer's rich formatter should get it: paragraphs on one line each, brackets kept literally.

Typer renders help with rich markup, which reads ``[n, d]`` as a style tag and drops it; and in that mode it keeps
a docstring's hard line breaks, so text broken at 110 columns came out ragged on an 80-column terminal. One
function for every command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable


def literal(text: str) -> str:
    """``text`` with everything rich markup would read as a tag escaped: ``[n, d]`` prints as ``[n, d]``."""
    from rich.markup import escape

    return escape(text)


def reflow(text: str) -> str:
    """Each paragraph's lines joined into one, except indented lines (examples), which keep their own line."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line[:1].isspace() and not lines[-1][:1].isspace():
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def command_help(source: Callable | str, markup: bool = False) -> str:
    """The help of a command from its docstring (or a text): reflowed, and escaped unless it uses rich ``markup``."""
    text = reflow(source if isinstance(source, str) else source.__doc__ or "")
    return text if markup else literal(text)
