"""How commands write their results: ``-`` as stdout for ``--out``, ``--output table|json``, tables that never
truncate when piped.

One module so every command follows the same conventions (``bakeoff backbones | grep``, ``bakeoff compare
--output json | jq``, ``bakeoff compile --out - | kubectl ...``) instead of each choosing its own.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from typing import Literal

import typer

STDOUT = "-"  # the conventional name of standard output for an --out option
PIPED_WIDTH = 100_000  # piped tables get all the width they need: no ellipsis, no wrapped cells


Format = Literal["table", "json"]  # what a list command prints: a table for people, JSON for programs
OUTPUT = typer.Option("table", "--output", help="table (for people) or json (a list of objects, for programs).")


def console():
    """A rich Console for stdout: the terminal's width on a tty, otherwise wide enough that nothing is cut."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH, soft_wrap=not sys.stdout.isatty())


def print_rows(rows: list[dict], fmt: Format, table: Callable[[list[dict]], object]) -> None:
    """``rows`` as JSON (NaN as null), or as the rich table that ``table(rows)`` builds."""
    if fmt == "json":
        typer.echo(json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], indent=2))
    else:
        console().print(table(rows))


def _plain(value):
    """JSON has no NaN, timestamps or numpy scalars: null, ISO text and Python numbers instead."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item() if getattr(value, "ndim", 0) == 0 else value
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, tuple | set):
        return list(value)
    return value


def write_text(out: str, text: str) -> str:
    """Write ``text`` to ``out`` (``-``: stdout); returns where it went, for the command's message."""
    if out == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return "stdout"
    from bakeoff import storage

    storage.write_bytes(out, text.encode())  # atomic: temp name then rename (or one S3 PUT)
    return out


def status(message: str, out: str) -> None:
    """A command's "wrote ..." line: on stdout, unless stdout carries the result itself (``--out -``)."""
    typer.echo(message, err=out == STDOUT)


def table_of(title: str, columns: Iterable[str], rows: list[dict], keys: Iterable[str] | None = None):
    """A plain rich table: one column per title, cells from ``keys`` (the titles by default) of each row."""
    from rich.table import Table

    columns, keys = list(columns), list(keys or columns)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(k)) for k in keys))
    return table


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value)
