"""CLI command ``bakeoff lock``: who holds a model's promotion lock, and breaking it when its holder is dead.

Why a command: the lock is a short lease that lapses by itself within a minute of its holder's death, but an
operator who knows the holder is gone (a deleted pod, a killed job) should not have to find a registered model
named ``<model>.lock`` in the MLflow UI to free it.
"""

from __future__ import annotations

import typer

from bakeoff.cli.tracking import DEFAULTS, TRACKING_URI


def lock(
    model_name: str = typer.Argument(DEFAULTS.model_name, help="Registered model whose promotion lock to show."),
    break_: bool = typer.Option(
        False, "--break", help="Delete the lock whoever holds it (a live holder then moves no alias)."
    ),
    tracking_uri: str = TRACKING_URI,
) -> None:
    """Show who holds the promotion lock of MODEL (pipeline run, host, pid, until when), or break it with --break.

    The gate holds `<MODEL>.lock` while it moves aliases; its lease is renewed every ttl/4 (ttl 60 s) and lapses
    by itself about a minute after its holder died. Break it only when you know the holder is dead and cannot
    wait: a holder that is still alive notices, moves no alias and fails its gate step.

    Example: `bakeoff lock bakeoff-classifier --break`
    """
    from bakeoff import promotion_lock, tracking

    tracking.configure(tracking_uri, read_only=True)  # no store, no lock: never create an empty store here
    name = promotion_lock.lock_name(model_name)
    if break_:
        holder = promotion_lock.break_lock(model_name)
        typer.echo(f"broke {name}, held by {holder.describe()}" if holder else f"{name} is free: nothing to break")
        return
    holder = promotion_lock.read_holder(model_name)
    if holder is None:
        typer.echo(f"{name} is free")
    else:
        typer.echo(f"{name} is held by {holder.describe()}")


def register(app: typer.Typer) -> None:
    """Attach this module's command to the root app."""
    from bakeoff.cli.helptext import command_help

    app.command("lock", help=command_help(lock))(lock)
