"""components.train_head: a head on cached features; head.keras + head.json out, the val accuracy in metadata."""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Model

from bakeoff import contract
from components.train_head import train_head


def test_train_head_writes_the_head_folder_and_metadata(tiny_features_dir, artifact):
    import keras

    head = artifact(Model, "head")
    train_head(Dataset(uri=str(tiny_features_dir)), "logreg", 5, 0.01, 8, 0, head)

    info = contract.HeadInfo.read(head.path)
    assert info.kind == "logreg" and info.backbone == "mobilenet_v2" and info.classes == ("cat", "dog")
    model = keras.models.load_model(f"{head.path}/{contract.HEAD_KERAS}")
    assert model.input.shape[-1] == 1280 and model.output.shape[-1] == 1  # two classes: one sigmoid unit
    with open(f"{head.path}/{contract.HEAD_JSON}") as handle:
        saved = json.load(handle)
    assert head.metadata == {"kind": "logreg", "backbone": "mobilenet_v2", "val_accuracy": saved["val_accuracy"]}
    assert 0.0 <= head.metadata["val_accuracy"] <= 1.0
