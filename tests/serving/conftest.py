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
def champion(mlflow_store, photo_model, photo_files, tmp_path_factory) -> Champion:
    """The photo classifier through the pipeline's own MLflow path (what the open_run, evaluate and
    select_and_register components call): evaluated on a dataset of the photo files, logged and verified by
    ``tracking.log_candidate`` (unregistered), registered and aliased ``champion`` by the gate."""
    from bakeoff import registry, tracking
    from bakeoff.evaluate import evaluate

    from support import write_dataset
    from support.photo_model import pixels_of

    root = tmp_path_factory.mktemp("gated")
    folder, labels = photo_files
    names = sorted(labels)
    dataset = write_dataset(
        root / "dataset",
        [pixels_of((folder / n).read_bytes()) for n in names],
        [labels[n] for n in names],
        ["test"] * len(names),
    )
    evaluate(str(photo_model), str(dataset), str(root / "eval"), n_bootstrap=100)
    name = "bakeoff-serving"
    parent = tracking.start_pipeline_run("serving", str(dataset), kfp_run_id="kfp-serving")
    child = tracking.log_candidate(
        parent,
        features_dir=str(root / "features"),  # no features/head JSONs: the photo model was not trained here
        head_dir=str(root / "head"),
        model_dir=str(photo_model),
        eval_dir=str(root / "eval"),
        model_name=name,
        task_key="mobilenet_v2",
    )
    decision = registry.select_and_register(parent, [child], model_name=name, dataset_dir=str(dataset))
    tracking.finish_pipeline_run(parent, tracking.leaderboard("serving", parent_run_id=parent), decision)
    assert decision.promoted, decision.reason
    c = tracking.client()
    version = c.get_model_version_by_alias(name, "champion").version
    model_uri = c.get_run(child).data.tags["bakeoff.model_uri"]
    return Champion(name, str(version), model_uri, mlflow_store, photo_model)


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
