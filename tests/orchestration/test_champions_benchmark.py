"""benchmarks.champions: two code versions' default pipelines side by side on a real task, in one report.

Tiny settings (digits only, 8 per class, one backbone at 32 px, no fine-tuning); "before" is HEAD, so the test
needs no particular history, and "after" is this working tree. Runs the tool as a user does, in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(1500)]


def test_champions_runs_both_versions_apart_and_reports_a_paired_table(tmp_path, weights_mirror):
    out, work = tmp_path / "champions.md", tmp_path / "w"
    env = {**os.environ, "BAKEOFF_WEIGHTS_URI": weights_mirror, "BAKEOFF_CACHE_URI": str(tmp_path / "shared")}
    env.pop("MLFLOW_TRACKING_URI", None)
    run_args = "--backbones mobilenet_v2 --weights imagenet --image-size 32 --head-epochs 2 --finetune-epochs 0"
    argv = ["--before", "HEAD", "--tasks", "digits", "--per-class", "8", "--run-args", run_args]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.champions", *argv, "--out", str(out), "--workdir", str(work)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert text in done.stdout  # printed as written

    rows = re.findall(r"^\| digits \| (before|after) \| (\S[^|]*) \| (\S+) \| ([0-9.]+) \| ([0-9.]+) \|$", text, re.M)
    assert [r[0] for r in rows] == ["before", "after"], text
    for _, champion, _, test_acc, wall in rows:
        assert champion.startswith("mobilenet_v2-imagenet") and 0.0 <= float(test_acc) <= 1.0 and float(wall) > 0
    paired = re.search(r"- digits: paired: the same (\d+) test images", text)
    assert paired and int(paired.group(1)) >= 10, text  # 10 classes, at least one test image each
    assert "python -m benchmarks.champions --before HEAD" in text and "--per-class 8" in text
    assert "load average" in text

    # apart: each run has its own MLflow store and fresh caches under its workdir; the shared cache is untouched
    for version in ("before", "after"):
        run = work / "digits" / version
        assert (run / ".bakeoff" / "mlflow" / "mlflow.db").is_file()
        assert any((run / "cache" / "bakeoff" / "features").iterdir())
    assert not (tmp_path / "shared").exists()
    # the checkout of "before" is gone again
    trees = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True).stdout
    assert str(work / "before-tree") not in trees
