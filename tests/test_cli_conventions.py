"""The CLI's conventions (issue 11 item 5): JSON for list commands, tables that survive a pipe, exit codes, help
that keeps its brackets, library start-up noise in the log file instead of the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bakeoff.cli import app, main
from bakeoff.errors import BakeoffError, PipelineFailed

ROOT = Path(__file__).resolve().parents[1]
TF_BANNER = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "TensorFlow binary is optimized")


def _bakeoff(*argv: str, tmp_path: Path, columns: int | None = None, **env) -> subprocess.CompletedProcess:
    """The real command line (stdout a pipe, not a tty), as a user's shell runs it."""
    child_env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env}
    child_env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # tests/conftest.py quiets TF for pytest; the CLI must do it alone
    if columns:
        child_env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "bakeoff", *argv], env=child_env, capture_output=True, text=True, timeout=600
    )


def test_backbones_json_and_a_piped_table_that_keeps_every_character(tmp_path):
    from bakeoff.backbones import REGISTRY

    done = _bakeoff("backbones", "--output", "json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["name"] for r in rows] == list(REGISTRY)
    assert rows[0]["finetune_blocks"] == list(next(iter(REGISTRY.values())).finetune_blocks)

    table = _bakeoff("backbones", tmp_path=tmp_path)  # piped: a terminal's 80 columns would ellipsise the notes
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    for bb in REGISTRY.values():
        [line] = [line for line in lines if f" {bb.name} " in line]
        assert bb.description in line and bb.application in line
    assert "…" not in table.stdout
    assert max(map(len, lines)) > 120  # wider than any terminal default: nothing was cut to fit


def test_weights_list_json(weights_mirror, tmp_path):
    done = _bakeoff("weights", "list", "--mirror", weights_mirror, "--output", "json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    found = {(r["backbone"], r["name"]): r for r in rows}
    assert ("mobilenet_v2", "imagenet") in found and ("vgg16", "hed") in found
    assert len(found[("mobilenet_v2", "imagenet")]["sha256"]) == 64  # whole, not the table's 12 characters


def test_output_rejects_unknown_formats(capsys):
    assert main(["backbones", "--output", "yaml"]) == 2
    assert "'table'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, code", [(BakeoffError("bad value for --x"), 2), (PipelineFailed("task 'a' failed"), 1)]
)
def test_exit_codes_usage_2_failed_pipeline_1(error, code, capsys):
    @app.command("raise-for-exit-code", hidden=True)
    def _boom() -> None:
        raise error

    try:
        assert main(["raise-for-exit-code"]) == code
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "raise-for-exit-code"]
    assert capsys.readouterr().err.strip() == f"error: {error}"
    assert main(["backbones", "--no-such-option"]) == 2  # click's usage error


def test_help_keeps_brackets_and_wraps_to_the_terminal(tmp_path):
    """Rich markup would eat `[n, d]`; docstring line breaks must not survive as breaks in the help."""
    wide = _bakeoff("features", "--help", tmp_path=tmp_path, columns=200)
    assert wide.returncode == 0
    assert "features float32 [n, d], manifest row order" in wide.stdout  # joined across the docstring's break
    narrow = _bakeoff("features", "--help", tmp_path=tmp_path, columns=70)
    assert max(map(len, narrow.stdout.splitlines())) <= 70
    assert "[n," in narrow.stdout  # kept, wherever the line breaks
    ingest = _bakeoff("ingest", "--help", tmp_path=tmp_path, columns=200).stdout  # rich markup of its own, kept
    assert "EXIF rotation is applied, grey/palette/CMYK/RGBA/16-bit images become RGB" in ingest
    assert "\n   bakeoff demo-data --out demo" in ingest and "[bold]" not in ingest  # examples keep their lines


def test_tensorflow_start_up_noise_goes_to_the_log_not_the_terminal(dataset, tmp_path):
    """A command that runs TensorFlow: its stderr has no TF banner; the CLI's log file has it."""
    done = _bakeoff(
        "features", str(dataset), "--out", str(tmp_path / "feats"), "--backbone", "mobilenet_v2", "--weights",
        "none", "--image-size", "32", "--cache", str(tmp_path / "cache"), tmp_path=tmp_path, BAKEOFF_NO_PROGRESS="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "images ->" in done.stdout
    assert not [line for line in done.stderr.splitlines() if any(b in line for b in TF_BANNER)], done.stderr
    log = (tmp_path / "xdg" / "bakeoff" / "logs" / "bakeoff.log").read_text()
    assert "bakeoff features" in log  # each command starts its section
    assert any(b in log for b in TF_BANNER)  # what TensorFlow printed is kept, in the log


def test_the_cli_log_stays_bounded(tmp_path, monkeypatch):
    """A log past its size limit starts afresh at the next command; one previous generation is kept whole."""
    from bakeoff.cli import logs

    log = tmp_path / "bakeoff.log"
    log.write_text("old\n" * 10)
    monkeypatch.setattr(logs, "ROTATE_BYTES", 20)
    logs.rotate_if_large(log)
    assert not log.exists() and (tmp_path / "bakeoff.log.1").read_text() == "old\n" * 10
    log.write_text("new\n")
    logs.rotate_if_large(log)  # under the limit: kept, appended to
    assert log.read_text() == "new\n"
    logs.rotate_if_large(tmp_path / "missing.log")  # no log yet: nothing to do, no error
