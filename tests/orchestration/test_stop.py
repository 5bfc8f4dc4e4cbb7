"""Stopping `bakeoff run` stops the pipeline (issue 8, item 4): every process of the run ends within seconds, its
MLflow runs end FAILED, and nothing it started moves an alias afterwards.

Reproduced on main: SIGTERM or SIGKILL of `bakeoff run` left `pipelines.local` running under PID 1; it finished and
promoted a champion while the user's rerun ran beside it. Here `bakeoff run` is a real subprocess on the tiny demo
dump, signalled while the features task runs; /proc is scanned for every process that mentions the run's folder
(the pipeline process and every kfp.local task carry it in their command lines).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import processes_mentioning, stop_process_group, wait_until_gone

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

STOPPED_WITHIN_S = 20  # measured 4.0-5.7 s here (2 cores, load average 10-20); the margin is for CI noise
RUNNING_TASK = "Executing task 'features'"


def _start(tmp_path: Path, demo_raw, weights_mirror, model_name: str) -> tuple[subprocess.Popen, Path, str]:
    workdir = tmp_path / "w"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "BAKEOFF_WEIGHTS_URI": weights_mirror,
        "BAKEOFF_CACHE_URI": str(tmp_path / "feature-cache"),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    argv = [sys.executable, "-m", "bakeoff", "run", "--data", demo_raw.raw_dir, "--label-map", demo_raw.label_map]
    argv += ["--classes", "sneaker,bag,trouser", "--backbones", "mobilenet_v2", "--image-size", "32"]
    argv += ["--head-epochs", "1", "--finetune-epochs", "0", "--experiment", "stop", "--model-name", model_name]
    proc = subprocess.Popen(
        [*argv, "--workdir", str(workdir)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: the test signals bakeoff run alone, as a user or CI would
    )
    return proc, workdir, tracking_uri


def _wait_for_running_task(proc: subprocess.Popen, workdir: Path, timeout_s: float = 400) -> str:
    """Block until the features task runs and the MLflow parent run exists (open-run finished); returns the log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        logs = list(workdir.glob("runs/*/pipeline.log"))
        text = re.sub(r"\x1b\[[0-9;]*m", "", logs[0].read_text(errors="replace")) if logs else ""  # no colours
        if RUNNING_TASK in text and "Task 'open-run' finished" in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"no running features task within {timeout_s} s")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopping_bakeoff_run_ends_every_process_and_moves_no_alias(
    sig, tmp_path, demo_raw, weights_mirror, model_name
):
    from mlflow import MlflowClient

    proc, workdir, tracking_uri = _start(tmp_path, demo_raw, weights_mirror, model_name)
    try:
        _wait_for_running_task(proc, workdir)
        running = processes_mentioning(str(workdir))
        assert len(running) >= 2, running  # the pipeline process and at least the running task

        os.kill(proc.pid, sig)  # bakeoff run alone: its pipeline lives in another session
        took, left = wait_until_gone(str(workdir), STOPPED_WITHIN_S)
        assert not left, f"still running {took:.1f} s after {sig.name}: {left}"
        print(f"{sig.name}: every process of the run gone after {took:.1f} s")
        out, err = proc.communicate(timeout=30)
    finally:
        stop_process_group(proc)
        for pid in processes_mentioning(str(workdir)):  # never leave a stray behind for the next test
            os.kill(pid, signal.SIGKILL)

    if sig == signal.SIGTERM:  # caught: one line, exit 128 + 15
        assert proc.returncode == 143
        assert err.strip().startswith("error: stopped by SIGTERM: every process of the run ended; ended ")
    else:
        assert proc.returncode == -signal.SIGKILL
    log = next(workdir.glob("runs/*/pipeline.log")).read_text(errors="replace")
    assert "stopped by SIGTERM: ended " in log  # the pipeline process got SIGTERM either way (forwarded / PDEATHSIG)

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "stop"]
    runs = client.search_runs([experiment.experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}
    assert {r.data.tags["bakeoff.failure"] for r in runs} == {"stopped by SIGTERM (bakeoff run)"}
    time.sleep(5)  # nothing of the run is left to move an alias; make sure nothing did
    assert client.search_model_versions(f"name = '{model_name}'") == []
