"""components.finetune: backbone + head as one raw-pixels-in model; model.keras + model.json, identity in metadata."""

from __future__ import annotations

import numpy as np
from kfp.dsl import Dataset, Model

from bakeoff import contract
from components.finetune import finetune


def test_finetune_writes_a_raw_pixels_model(tiny_dataset_dir, tiny_head_dir, weights_mirror, artifact, monkeypatch):
    import keras

    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    model = artifact(Model, "model")
    # epochs 0: assemble backbone + head only (training itself is tests/models/test_finetune.py's job)
    finetune(Dataset(uri=str(tiny_dataset_dir)), Model(uri=str(tiny_head_dir)), 1, 0, 3e-4, 8, 5, 1, model)

    info = contract.ModelInfo.read(model.path)
    assert info.backbone == "mobilenet_v2" and info.classes == ("cat", "dog") and not info.finetuned
    assert info.unfrozen_layers  # the top block is open for training
    assert {k: info.hyperparameters[k] for k in ("blocks", "epochs", "learning_rate", "batch_size", "seed")} == {
        "blocks": 1,
        "epochs": 0,
        "learning_rate": 3e-4,
        "batch_size": 8,
        "seed": 5,
    }
    assert model.metadata == {
        "backbone": "mobilenet_v2",
        "image_size": info.image_size,
        "cut": None,
        "finetuned": False,
        "finetune_val_gain": None,
    }

    net = keras.models.load_model(f"{model.path}/{contract.MODEL_KERAS}")
    pixels = np.full((2, info.image_size, info.image_size, 3), 127.0, dtype=np.float32)
    probs = net.predict(pixels, verbose=0)
    assert probs.shape == (2, 1) and np.all((probs >= 0) & (probs <= 1))


def test_top_k_zero_skips_fine_tuning(tiny_dataset_dir, tiny_head_dir, weights_mirror, artifact, monkeypatch):
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    model = artifact(Model, "model")
    finetune(Dataset(uri=str(tiny_dataset_dir)), Model(uri=str(tiny_head_dir)), 1, 3, 1e-5, 8, 0, 0, model)

    info = contract.ModelInfo.read(model.path)
    assert not info.finetuned and info.hyperparameters["epochs"] == 0 and info.history["loss"] == []
    assert model.metadata["finetune_val_gain"] is None  # nothing was tried
