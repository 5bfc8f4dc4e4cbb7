"""Fixtures for the component tests: real kfp.dsl artifacts on tmp_path, a real MLflow store, tiny step folders.

Each component function is called as plain Python, the way kfp.local's executor calls it: kfp.local gives every
artifact a local ``uri`` (``os.path.join(task_root, name)``, kfp/local/executor_input_utils.py) and
``Artifact.path`` returns a local uri unchanged (only gs://, s3://, minio://, oci:// uris map to /gcs/, /s3/, ...
mounts). So ``Dataset(uri=str(tmp_path / "x")).path`` is exactly what a component sees in a local run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import build_tiny_dataset

IMAGE_SIZE = 32  # the smallest input MobileNetV2 takes: fast


@pytest.fixture
def artifact(tmp_path):
    """Factory: artifact(Dataset, "name", **metadata) -> a kfp.dsl artifact whose .path is tmp_path/name."""

    def make(kind, name: str, **metadata):
        return kind(name=name, uri=str(tmp_path / name), metadata=dict(metadata))

    return make


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """An embedded SQLite MLflow store (database created once per session; each test uses its own names)."""
    return f"sqlite:///{tmp_path_factory.mktemp('component-mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracking_store(mlflow_store, monkeypatch) -> str:
    """Components call ``tracking.configure()``, which reads $MLFLOW_TRACKING_URI: point it at the store."""
    from bakeoff import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    tracking.reset()
    yield mlflow_store
    tracking.reset()


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> Path:
    """12 real 32 px PNGs, cat/dog by colour (6 train, 3 val, 3 test)."""
    return build_tiny_dataset(tmp_path_factory.mktemp("component-dataset"), size=(IMAGE_SIZE, IMAGE_SIZE))


@pytest.fixture(scope="session")
def tiny_features_dir(tiny_dataset_dir, weights_mirror, tmp_path_factory) -> Path:
    """Real MobileNetV2 (ImageNet weights from the mirror) features of the tiny dataset, by the core step."""
    from bakeoff.features import extract_features

    out = tmp_path_factory.mktemp("component-features")
    cache = tmp_path_factory.mktemp("component-feature-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
        extract_features(
            str(tiny_dataset_dir), str(out), "mobilenet_v2", "imagenet", image_size=IMAGE_SIZE, cache_uri=str(cache)
        )
    return out


@pytest.fixture(scope="session")
def tiny_head_dir(tiny_features_dir, tmp_path_factory) -> Path:
    """A small dense head trained on those features, by the core step."""
    from bakeoff.heads import train_head

    out = tmp_path_factory.mktemp("component-head")
    train_head(str(tiny_features_dir), str(out), epochs=3, hidden=8, patience=1)
    return out
