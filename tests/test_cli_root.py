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
