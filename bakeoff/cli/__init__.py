"""The ``bakeoff`` command: one entry point over the core steps and the pipelines.

Each sub-module owns one group of commands and registers them on the shared Typer app.
Commands import heavy libraries (TensorFlow, MLflow, kfp) inside their bodies so
``bakeoff --help`` stays fast.
"""

from __future__ import annotations

import sys
import traceback

import typer

from bakeoff import __version__
from bakeoff.errors import BakeoffError
from bakeoff.redaction import one_line, redact

app = typer.Typer(
    name="bakeoff",
    help=(
        "Transfer-learning bake-off: structure a raw image dump, extract bottleneck features from "
        "ImageNet backbones, train heads, fine-tune, evaluate, track everything in MLflow and promote "
        "the best model only when it really beats the champion. Run `bakeoff COMMAND --help` for details."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bakeoff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """bakeoff: pick the best pretrained backbone for your images, reproducibly."""


def _register_all() -> None:
    from bakeoff.cli import data, export, lock, models, orchestration, tracking, training

    for module in (data, models, training, tracking, lock, export, orchestration):
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line on stderr and exit 2 (usage) or 1 (a failed pipeline); an MLflow
    error is one line too (exit 1).

    Every message is redacted (``bakeoff.redaction``): a credential in a URI never reaches the terminal.
    """
    if argv is None:  # the real command line (tests pass argv and read stderr themselves)
        from bakeoff.cli.logs import route_library_noise

        route_library_noise()  # before any command imports TensorFlow or MLflow
    try:
        code = app(args=argv, prog_name="bakeoff", standalone_mode=False)
    except BakeoffError as exc:
        typer.secho(f"error: {redact(str(exc))}", err=True, fg=typer.colors.RED)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except _click_exceptions() as exc:  # usage errors arrive here in non-standalone mode
        exc.show()
        return exc.exit_code
    except Exception as exc:  # not a user error: say it without leaking a credential from a URI in it
        if type(exc).__module__.startswith("mlflow."):  # a server that is down, refuses, or answers oddly
            typer.secho(f"error: MLflow: {_mlflow_message(exc)}", err=True, fg=typer.colors.RED)
        else:
            typer.echo(redact("".join(traceback.format_exception(exc))), err=True)
        return 1
    return code if isinstance(code, int) else 0  # click hands a command's typer.Exit(N) back as N


def _mlflow_message(exc: Exception) -> str:
    """MLflow's error on one line, redacted; a refusal (403) says which page lists the permissions needed."""
    text = one_line(exc)
    if "403" in text or "PERMISSION_DENIED" in text:
        text += "; this MLflow user lacks a permission: docs/tracking.md, 'Least privilege', lists what it needs"
    return text


def _click_exceptions() -> tuple[type[BaseException], ...]:
    """Typer >= 0.20 vendors click as typer._click; older versions use click itself. Catch both."""
    import click

    classes: list[type[BaseException]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        classes.append(VendoredClickException)
    except ImportError:
        pass
    return tuple(classes)


if __name__ == "__main__":
    sys.exit(main())
