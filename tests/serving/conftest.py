"""Fixtures for the serving tests: a real photo classifier folder, real photo files, a real MLflow store (SQLite +
artifact folder) with the classifier registered as ``champion``, and `mlflow models serve` on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import VENV_BIN, free_port, stop_process_group, wait_http
from support.photo_model import write_photo_files, write_photo_model


@dataclass
class Champion:
    name: str
    version: str
    model_uri: str  # models:/m-<id> of the logged model
    tracking_uri: str
    model_dir: Path  # the bakeoff model folder it was logged from

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@champion"


@pytest.fixture(scope="session")
def photo_model(tmp_path_factory, weights_mirror) -> Path:
    """The four-class ImageNet-subset MobileNetV2 (support.photo_model) as a model folder."""
    return write_photo_model(tmp_path_factory.mktemp("photo-model"), weights_mirror)


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(folder, {file name: expected label}) of real photo files: PNG, JPEG, EXIF-rotated, RGBA, grey, large."""
    folder = tmp_path_factory.mktemp("photos")
    return folder, write_photo_files(folder)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A fresh SQLite tracking/registry store for this module, set as MLFLOW_TRACKING_URI; yields the URI."""
    from bakeoff import tracking

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.reset()
        tracking.configure(uri)
        yield uri
        tracking.reset()


@pytest.fixture(scope="module")
def champion(mlflow_store, photo_model) -> Champion:
    """The photo classifier logged with ``bakeoff.serving.log``, registered, aliased ``champion``."""
    from bakeoff import tracking
    from bakeoff.tracking.models import log_model_folder

    c = tracking.client()
    run_id = c.create_run(tracking.ensure_experiment("serving")).info.run_id
    name = "bakeoff-serving"
    version, model_uri = log_model_folder(run_id, str(photo_model), name)
    c.set_terminated(run_id, "FINISHED")
    c.set_registered_model_alias(name, "champion", version)
    return Champion(name, version, model_uri, mlflow_store, photo_model)


@dataclass
class Served:
    url: str
    log: Path
    startup_s: float


@pytest.fixture(scope="module")
def served(champion, tmp_path_factory) -> Served:
    """`mlflow models serve -m models:/NAME@champion --env-manager local` on 127.0.0.1 (the venv's bin/ on PATH:
    the scoring server is uvicorn, found on PATH)."""
    import time

    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": champion.tracking_uri,
    }
    cmd = [
        str(VENV_BIN / "mlflow"),
        "models",
        "serve",
        "-m",
        champion.alias_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, cwd=log.parent, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, 240, log)
        yield Served(f"http://127.0.0.1:{port}", log, time.monotonic() - start)
    finally:
        stop_process_group(proc)
