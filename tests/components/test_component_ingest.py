"""components.ingest: a raw dump in, a self-contained Dataset folder out, with its identity in the metadata."""

from __future__ import annotations

import os

import pandas as pd
from kfp.dsl import Dataset

from bakeoff import manifest
from components.ingest import ingest


def test_ingest_writes_the_dataset_folder_and_its_metadata(tmp_path, artifact, capsys):
    from bakeoff.demo_data import make_demo_data

    raw = make_demo_data(str(tmp_path / "raw"), per_class=6, classes="sneaker,bag")
    dataset = artifact(Dataset, "dataset")
    ingest(raw.raw_dir, raw.label_map, "", 0, 0.2, 0.2, 0, "fp-123", dataset)

    df = manifest.read_manifest(dataset.path)
    assert sorted(set(df["label"])) == ["bag", "sneaker"]  # Italian folders mapped through translate.json
    assert set(df["split"]) == {"train", "val", "test"}
    assert all(os.path.exists(uri) for uri in df["uri"])  # materialised copies
    rejected = pd.read_csv(f"{dataset.path}/rejected.csv")
    assert rejected["reason"].str.len().gt(0).all()
    bad_images = [name for name in raw.broken if not name.endswith(".DS_Store")]  # litter is skipped silently
    assert all(rejected["uri"].str.endswith(name.split("/", 1)[1]).any() for name in bad_images), rejected

    meta = dataset.metadata
    assert meta["dataset_hash"] == manifest.dataset_hash(manifest.read_manifest(dataset.path, resolve=False))
    assert meta["classes"] == ["bag", "sneaker"]
    assert meta["n_images"] == len(df) and meta["n_rejected"] == len(rejected)
    assert meta["data_version"] == "fp-123"
    assert '"data_version": "fp-123"' in capsys.readouterr().out


def test_per_class_cap_and_class_filter(tmp_path, artifact):
    from bakeoff.demo_data import make_demo_data

    raw = make_demo_data(str(tmp_path / "raw"), per_class=8, classes="sneaker,bag,trouser")
    dataset = artifact(Dataset, "dataset")
    ingest(raw.raw_dir, raw.label_map, "sneaker,trouser", 5, 0.2, 0.2, 0, "", dataset)
    counts = manifest.read_manifest(dataset.path)["label"].value_counts().to_dict()
    assert counts == {"sneaker": 5, "trouser": 5}
    assert dataset.metadata["classes"] == ["sneaker", "trouser"]
