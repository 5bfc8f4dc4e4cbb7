"""Secrets stay secret (issue 8 item 8): a credential in MLFLOW_TRACKING_URI never reaches the terminal, the run log,
result.json or the errors of `ui`, `compare`, `promote`.

Reproduced on main: `bakeoff ui` printed `open http://alice:<password>@host ...`, `promote` said `no MLflow run 'x' at
http://alice:<password>@...`, and an unreachable server gave a traceback with the URI in it. The real test server
ignores the basic-auth header, so a credentialed URI works against it like a team server's would.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from bakeoff.cli import main
from bakeoff.redaction import RedactingStream, has_credentials, redact

from support import free_port

PASSWORD = "Pw-9f3kX7q2zz"


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@")


@pytest.fixture
def credentialed_uri(tracking_env, monkeypatch) -> str:
    from bakeoff import tracking

    uri = _with_password(tracking_env.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure(uri)
    return uri


def test_ui_compare_promote_never_show_the_password(credentialed_uri, capsys, model_name):
    assert main(["ui"]) == 0
    out = capsys.readouterr().out
    assert "http://***@127.0.0.1" in out and PASSWORD not in out

    assert main(["promote", "no-such-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no MLflow run 'no-such-run' at http://***@127.0.0.1") and PASSWORD not in err

    assert main(["compare", "--experiment", "no-such-experiment"]) == 2
    assert PASSWORD not in capsys.readouterr().err

    assert main(["lock", model_name, "--tracking-uri", credentialed_uri]) == 0
    assert PASSWORD not in "".join(capsys.readouterr())


def test_an_unreachable_server_is_one_line_without_the_password(monkeypatch, capsys):
    """MLflow's own exception text carries the URI: it becomes one redacted line, not a traceback."""
    from bakeoff import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{PASSWORD}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        for argv in (["compare"], ["promote", "some-run"]):
            code = main(argv)
            err = capsys.readouterr().err.strip()
            assert code in (1, 2) and "\n" not in err, err
            assert err.startswith("error: ") and "http://***@127.0.0.1" in err and PASSWORD not in err
    finally:
        tracking.reset()


def test_the_terminal_and_the_cli_log_of_a_subprocess_never_show_the_password(credentialed_uri, tmp_path):
    """The same through a real `python -m bakeoff` process: what a user's terminal gets (stdout and stderr), and the
    CLI's own log file, which records each command line (here with the URI given as `--tracking-uri`)."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": credentialed_uri,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    for argv in (["ui"], ["promote", "no-such-run", "--tracking-uri", credentialed_uri]):
        done = subprocess.run(
            [sys.executable, "-m", "bakeoff", *argv], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert "***@127.0.0.1" in done.stdout + done.stderr
        assert PASSWORD not in done.stdout + done.stderr
    log = (tmp_path / "cache" / "bakeoff" / "logs" / "bakeoff.log").read_text()
    assert "promote no-such-run --tracking-uri http://***@127.0.0.1" in log and PASSWORD not in log


def test_redacting_stream_redacts_whole_lines_even_when_printed_in_pieces():
    target = io.StringIO()
    stream = RedactingStream(target)
    print("View run at", f"http://bob:{PASSWORD}@mlflow:5000/#/runs/1", file=stream)  # four writes
    stream.write("partial http://bob:")
    stream.write(f"{PASSWORD}@host")
    stream.flush()
    assert PASSWORD not in target.getvalue()
    assert target.getvalue() == "View run at http://***@mlflow:5000/#/runs/1\npartial http://***@host"
    assert has_credentials(f"s3://k:{PASSWORD}@bucket/x") and not has_credentials("s3://bucket/x")
    assert redact(f"https://u:{PASSWORD}@h") == "https://***@h"


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_bakeoff_run_keeps_the_password_out_of_terminal_log_and_result(credentialed_uri, tmp_path, model_name):
    """A whole `bakeoff run` against the server through a credentialed URI: MLflow prints "View run ... at <URI>" in
    every task, the result records the tracking URI, the last line prints the UI command; none holds the password."""
    from bakeoff.demo_data import make_demo_data

    raw = make_demo_data(str(tmp_path / "raw"), per_class=12, classes="sneaker,bag,trouser")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "MLFLOW_TRACKING_URI": credentialed_uri,
        "BAKEOFF_CACHE_URI": str(tmp_path / "feature-cache"),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # the CLI's log file lands there (read below)
    }
    argv = [sys.executable, "-m", "bakeoff", "run", "--data", raw.raw_dir, "--label-map", raw.label_map]
    argv += ["--classes", "sneaker,bag,trouser", "--backbones", "mobilenet_v2", "--weights", "none"]
    argv += ["--image-size", "32", "--head-epochs", "1", "--finetune-epochs", "0", "--experiment", "secrets"]
    argv += ["--model-name", model_name, "--workdir", str(tmp_path / "w")]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=850)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal[-3000:]
    [run_dir] = list((tmp_path / "w" / "runs").iterdir())
    log = (run_dir / "pipeline.log").read_text(errors="replace")
    result = (run_dir / "result.json").read_text()
    assert json.loads(result)["tracking_uri"].startswith("http://***@127.0.0.1")
    assert "***@127.0.0.1" in log and "***@127.0.0.1" in terminal  # the URI was shown, redacted
    for name, text in {"terminal": terminal, "pipeline.log": log, "result.json": result}.items():
        assert PASSWORD not in text, name
    written = [p for p in [*(tmp_path / "w").rglob("*"), *(tmp_path / "cache").rglob("*")] if p.is_file()]
    assert any(p.name == "bakeoff.log" for p in written)  # the CLI's log file is among them
    assert [p for p in written if PASSWORD.encode() in p.read_bytes()] == []
