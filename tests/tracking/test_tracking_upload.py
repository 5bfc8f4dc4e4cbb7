"""Never a logged model that is silently truncated: a model upload that fails (full artifact store) or that does not
read back byte for byte ends the candidate FAILED with one line, no registered version and no half model left.

Two real stores fill up: an `mlflow server` whose local artifact folder is capped by the kernel's file-size limit
on the server process (RLIMIT_FSIZE), and the embedded SQLite store on a small tmpfs (a process file-size limit
when this machine does not allow mounting).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bakeoff import tracking
from bakeoff.errors import BakeoffError

from support import free_port, limit_file_size, server_command, small_filesystem, stop_process_group, wait_http

STORE_LIMIT = 3_000_000  # bytes per file on the server: the SQLite database (~1 MB) fits, a 11 MB model does not


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    """`mlflow server` with artifacts in a local folder and every file it writes capped at STORE_LIMIT bytes."""
    work = tmp_path_factory.mktemp("capped-mlflow")
    port = free_port()
    log = work / "mlflow.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    proc = subprocess.Popen(
        server_command(port, work, str(work / "artifacts")),
        env=env,
        cwd=work,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=limit_file_size(STORE_LIMIT),
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 300, log)
        yield f"http://127.0.0.1:{port}", work / "artifacts"
    finally:
        stop_process_group(proc)


@pytest.fixture
def capped_env(capped_server, monkeypatch):
    url, artifacts = capped_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow retries a server's 500s for ~4 minutes
    tracking.configure()
    yield artifacts
    tracking.reset()


def _big_candidate(small, root: Path) -> dict:
    """The candidate's step folders with a real 11 MB model.keras (a wide dense layer): bigger than the store takes."""
    import keras

    shutil.copytree(small.root, root)
    inputs = keras.Input((32, 32, 3))
    hidden = keras.layers.Dense(900)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden)).save(root / "model" / "model.keras")
    assert (root / "model" / "model.keras").stat().st_size > 3 * STORE_LIMIT
    return {f"{k}_dir": str(root / k) for k in ("features", "head", "model", "eval")}


def _assert_failed_cleanly(parent: str, model_name: str, store: Path) -> None:
    """The candidate run FAILED, no version exists, its logged models are FAILED and hold no files."""
    c = tracking.client()
    (child,) = c.search_runs(
        [c.get_run(parent).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert child.info.status == "FAILED"
    assert c.search_model_versions(f"name = '{model_name}'") == []
    models = c.search_logged_models(
        experiment_ids=[child.info.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'"
    )
    assert models and all(str(m.status).endswith("FAILED") for m in models), [m.status for m in models]
    for model in models:
        assert not [p for p in store.rglob("*") if p.is_file() and model.model_id in str(p)], model.model_id


def test_a_full_server_artifact_store_fails_the_candidate_with_no_version_and_no_half_model(
    capped_env, dataset, candidates, model_name, tmp_path
):
    dirs = _big_candidate(candidates(127.5), tmp_path / "big")
    parent = tracking.start_pipeline_run("capped-store", str(dataset), run_name="p", kfp_run_id="kfp-full", params={})
    with pytest.raises(BakeoffError) as info:
        tracking.log_candidate(parent, model_name=model_name, **dirs)
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot log the model of run "), message
    assert "artifact store" in message and "nothing was registered" in message
    _assert_failed_cleanly(parent, model_name, capped_env)


def test_a_full_embedded_store_leaves_no_truncated_model(dataset, candidates, model_name, tmp_path, monkeypatch):
    """Today's failure: a full workdir left a truncated model.keras in the embedded store and the run RUNNING."""
    dirs = _big_candidate(candidates(127.5), tmp_path / "big")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with small_filesystem(tmp_path / "work", 8_000_000) as (work, errno_text):
        tracking.configure(f"sqlite:///{work / 'mlflow.db'}")
        try:
            parent = tracking.start_pipeline_run("full-disk", str(dataset), run_name="p", kfp_run_id="k", params={})
            with pytest.raises(BakeoffError) as info:
                tracking.log_candidate(parent, model_name=model_name, **dirs)
            message = str(info.value)
            assert "\n" not in message and errno_text in message, message
            _assert_failed_cleanly(parent, model_name, work / "artifacts")
            assert not list((work / "artifacts").rglob("model.keras"))
        finally:
            tracking.reset()


def test_a_logged_model_that_does_not_read_back_whole_is_caught(capped_env, dataset, candidates, model_name):
    """The read-back check itself: a stored model.keras cut short, or of the right size with a changed byte, is
    named with what differs (the run cannot be trusted to serve it)."""
    from bakeoff.tracking.models import verify_logged_model

    small = candidates(160.46)
    parent = tracking.start_pipeline_run("verify", str(dataset), run_name="p", kfp_run_id="kfp-v", params={})
    child = tracking.log_candidate(parent, model_name=model_name, **small.dirs)  # whole: verified, not registered
    c = tracking.client()
    assert c.search_model_versions(f"name = '{model_name}'") == []  # only the gate registers
    model_id = c.get_run(child).data.tags["bakeoff.model_uri"].removeprefix("models:/")
    local = {"artifacts/model.keras": small.root / "model" / "model.keras"}
    verify_logged_model(model_id, local)
    (stored,) = [p for p in capped_env.rglob("model.keras") if model_id in str(p)]
    data = stored.read_bytes()
    stored.write_bytes(data[:1000])
    with pytest.raises(
        BakeoffError, match=rf"logged model {model_id} .*artifacts/model.keras: 1000 of {len(data)} bytes"
    ):
        verify_logged_model(model_id, local)
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(BakeoffError, match=r"artifacts/model.keras: sha256 .* differs from the local copy"):
        verify_logged_model(model_id, local)
