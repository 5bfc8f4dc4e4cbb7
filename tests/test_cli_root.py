"""The root command: version, usage errors and user errors map to exit codes and one-line messages."""

from bakeoff.cli import app, main
from bakeoff.errors import BakeoffError


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("bakeoff ")


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_user_error_prints_one_line_and_exits_2(capsys):

    @app.command("raise-user-error", hidden=True)
    def _boom() -> None:
        raise BakeoffError("the thing is missing; run `bakeoff other` first")

    try:
        assert main(["raise-user-error"]) == 2
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "raise-user-error"]
    err = capsys.readouterr().err
    assert err.strip() == "error: the thing is missing; run `bakeoff other` first"


def _remove_command(name: str) -> None:
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != name]


def test_run_form_options_reach_a_command_as_one_dict(capsys):
    """with_run_form appends one option per Parameters field and hands them over as `overrides` (None: not given)."""
    import json

    import typer

    from bakeoff.cli.run_form import with_run_form
    from pipelines.settings import Parameters

    def _echo(flag: str = typer.Option("x", "--flag"), overrides: dict | None = None) -> None:
        typer.echo(json.dumps({"flag": flag, "overrides": overrides}))

    app.command("echo-run-form", hidden=True)(with_run_form(_echo))
    try:
        argv = ["echo-run-form", "--data", "d", "--per-class", "3", "--head-lr", "0.5", "--backbones", "a,b"]
        assert main([*argv, "--flag", "y"]) == 0
    finally:
        _remove_command("echo-run-form")
    out = json.loads(capsys.readouterr().out)
    assert out["flag"] == "y"
    given = {"data_uri": "d", "per_class": 3, "head_lr": 0.5, "backbones": "a,b"}  # typed; lists stay text
    assert out["overrides"] == {name: given.get(name) for name in Parameters.model_fields}


def test_run_form_refuses_commands_it_cannot_serve():
    import pytest

    from bakeoff.cli.run_form import with_run_form

    def no_overrides(seed: int = 0) -> None: ...

    def shadows(seed: int = 0, overrides: dict | None = None) -> None: ...

    with pytest.raises(TypeError, match="overrides"):
        with_run_form(no_overrides)
    with pytest.raises(TypeError, match="seed"):
        with_run_form(shadows)


def test_tracking_commands_default_to_the_pipelines_names(capsys):
    """compare/promote/predict use the run form's defaults, so the gate by hand is the pipeline's gate."""
    from typer.main import get_command

    from bakeoff import stats
    from pipelines.settings import Parameters

    commands = get_command(app).commands
    defaults = Parameters()

    def option(command: str, name: str):
        return next(p for p in commands[command].params if p.name == name)

    assert option("compare", "experiment").default is None  # the last run's experiment (tests/tracking)
    assert option("predict", "model").default == f"models:/{defaults.model_name}@champion"
    assert option("promote", "test").default == defaults.gate_test
    assert option("promote", "alpha").default == defaults.gate_alpha
    assert main(["promote", "some-run", "--test", "coinflip"]) == 2  # a usage error before MLflow is touched
    assert "'" + "', '".join(stats.TESTS) + "'" in capsys.readouterr().err  # choices: bakeoff.stats.TESTS
