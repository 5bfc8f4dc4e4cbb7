"""The pipeline's run form as command-line options, derived from ``pipelines.settings.Parameters``.

The same derivation as ``pipelines.factory._signature`` makes for the KFP run form: one ``--kebab-case``
option per field, help from the field's description plus its default, the type from its annotation, Literal
fields as choices, list fields as one comma-separated string. A new field is a new option without touching
the commands. Every option defaults to None ("not given"), so the precedence stays
Parameters defaults < ``--config`` file < command line (``pipelines.settings.load_config``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import get_origin

import typer
from pydantic import BaseModel

from pipelines.settings import Parameters

# Fields whose options have older, shorter names that users rely on; the field's --kebab-case works too.
SHORT_NAMES = {"data_uri": "--data", "label_map_uri": "--label-map"}
PANEL = "Run form: pipeline parameters (override --config)"


def option_names(field: str) -> list[str]:
    """The option spellings of one field: ``--data`` and ``--data-uri`` for data_uri, ``--head-lr`` for head_lr."""
    canonical = "--" + field.replace("_", "-")
    return [SHORT_NAMES[field], canonical] if field in SHORT_NAMES else [canonical]


def field_help(model: type[BaseModel], field: str) -> str:
    """A field's description and its default (an empty or null default is explained by the description)."""
    info = model.model_fields[field]
    default = info.get_default(call_default_factory=True)
    if isinstance(default, list):
        default = ",".join(map(str, default))
    from bakeoff.cli.helptext import literal

    text = f"{info.description} (default: {default})" if default not in ("", None) else str(info.description)
    return literal(text)


def _option_type(annotation):
    """A Literal stays a Literal (Typer turns it into a choice); a list is typed as one comma-separated string."""
    return str if get_origin(annotation) is list else annotation


def with_run_form(command: Callable) -> Callable:
    """Give ``command`` one option per run-form field; it receives them as one dict, ``overrides`` (None: not given).

    Typer reads the returned function's ``__signature__`` and ``__annotations__``; the command's own
    parameters keep their options and come first.
    """
    own = inspect.signature(command, eval_str=True)
    if "overrides" not in own.parameters:
        raise TypeError(f"{command.__name__} needs an `overrides` parameter to receive the run form")
    params = [p.replace(kind=p.KEYWORD_ONLY) for p in own.parameters.values() if p.name != "overrides"]
    clash = set(Parameters.model_fields) & {p.name for p in params}
    if clash:
        raise TypeError(f"{command.__name__}: parameters {sorted(clash)} shadow run-form fields")
    for name, info in Parameters.model_fields.items():
        option = typer.Option(None, *option_names(name), help=field_help(Parameters, name), rich_help_panel=PANEL)
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_option_type(info.annotation) | None
            )
        )

    @functools.wraps(command)
    def with_overrides(**kwargs):
        overrides = {name: kwargs.pop(name) for name in Parameters.model_fields}
        return command(**kwargs, overrides=overrides)

    with_overrides.__signature__ = inspect.Signature(params)
    with_overrides.__annotations__ = {p.name: p.annotation for p in params}
    return with_overrides
