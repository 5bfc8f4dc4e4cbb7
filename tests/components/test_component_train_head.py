"""components.train_head: a head on cached features; head.keras + head.json out, the val accuracy in metadata."""

from __future__ import annotations

import json

from kfp.dsl import Dataset, Markdown, Model

from bakeoff import contract
from components.train_head import train_head


def test_train_head_writes_the_head_folder_and_metadata(tiny_features_dir, artifact):
    import keras

    head, search = artifact(Model, "head"), artifact(Markdown, "search")
    train_head(Dataset(uri=str(tiny_features_dir)), "logreg", 5, 0.01, 8, 0, 16, 0.5, head, search)

    info = contract.HeadInfo.read(head.path)
    assert info.kind == "logreg" and info.backbone == "mobilenet_v2" and info.classes == ("cat", "dog")
    model = keras.models.load_model(f"{head.path}/{contract.HEAD_KERAS}")
    assert model.input.shape[-1] == 1280 and model.output.shape[-1] == 1  # two classes: one sigmoid unit
    with open(f"{head.path}/{contract.HEAD_JSON}") as handle:
        saved = json.load(handle)
    assert head.metadata == {
        "kind": "logreg",
        "cut": None,
        "backbone": "mobilenet_v2",
        "val_accuracy": saved["val_accuracy"],
    }
    assert 0.0 <= head.metadata["val_accuracy"] <= 1.0
    assert "no search" in open(search.path).read()


def test_train_head_search_shows_its_table_in_the_kfp_ui(tiny_features_dir, artifact):
    head, search = artifact(Model, "head"), artifact(Markdown, "search")
    train_head(Dataset(uri=str(tiny_features_dir)), "search", 5, 0.01, 8, 0, 16, 0.5, head, search)

    info = contract.HeadInfo.read(head.path)
    table = open(search.path).read()
    assert table.startswith("# Head search (chosen on val)") and table.count("**yes**") == 1
    assert "| top | 32 | plain | logreg |" in table and "| block_13_expand_relu | 32 | plain | logreg |" in table
    assert table.count("| dense |") == 1  # on the feature set logreg ranked first
    assert head.metadata["kind"] == info.kind in ("logreg", "dense") and head.metadata["cut"] == info.cut
