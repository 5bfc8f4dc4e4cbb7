"""Step folders of REAL candidates with known accuracies, for tracking, registry and component tests.

The dataset is red-vs-blue colour fields with known red values; the models are exact "redness" classifiers:
GlobalAveragePooling -> Dense(softmax) with hand-set weights, so a model with threshold ``t`` calls an image red when
its mean red channel exceeds ``t``. Each model's test accuracy, and which images two models disagree on, are known
beforehand: that is what lets the gate tests assert decisions in both directions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from support.datasets import write_dataset

IMAGE_SIZE = 32
CLASSES = ["blue", "red"]
EPOCH_0_MS = 1_764_000_000_000  # the head's first epoch ended then (2025-11-24): the JSONs' epoch_end_ms start here


# ------------------------------------------------------------------------------------------------ data


def _colour_pixels(red: float, seed: int) -> np.ndarray:
    """A flat colour field with the given mean red value and a little seeded noise."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    pixels[..., 0] = red
    pixels[..., 1] = 60.0
    pixels[..., 2] = 90.0
    pixels += rng.normal(0, 4, size=pixels.shape)
    return np.rint(np.clip(pixels, 0, 255)).astype(np.uint8)


def build_red_blue_dataset(root: Path, n_test: int = 100) -> Path:
    """A bakeoff dataset folder: manifest.parquet + images/<label>/<sha>.png, labels by red channel (>=128)."""
    reds = {"train": np.linspace(5, 250, 10), "val": np.linspace(8, 247, 10), "test": np.linspace(2, 253, n_test)}
    images, labels, splits = [], [], []
    for split, values in reds.items():
        for red in values:
            images.append(_colour_pixels(float(red), seed=len(images) + 1))
            labels.append("red" if red >= 128 else "blue")
            splits.append(split)
    write_dataset(root, images, labels, splits)
    (root / "card.md").write_text("# Dataset card\n\nRed vs blue colour fields for tracking tests.\n")
    (root / "card.json").write_text(json.dumps({"n_images": len(images), "classes": CLASSES}))
    return root


def red_values(n_test: int = 100) -> np.ndarray:
    return np.linspace(2, 253, n_test)


def expected_accuracy(threshold: float) -> float:
    reds = red_values()
    return float(np.mean((reds >= 128) == (reds > threshold)))


def threshold_model(threshold: float):
    """A real Keras model: mean red channel > threshold -> 'red' (softmax over [blue, red])."""
    import keras

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(pooled)
    model = keras.Model(inputs, outputs)
    k = 0.5
    kernel = np.zeros((3, 2), dtype=np.float32)
    kernel[0, 1] = k
    bias = np.array([0.0, -k * threshold], dtype=np.float32)
    model.get_layer("head").set_weights([kernel, bias])
    return model


@dataclass
class Candidate:
    root: Path
    threshold: float
    pretrained: bool

    @property
    def dirs(self) -> dict:
        return {f"{k}_dir": str(self.root / k) for k in ("features", "head", "model", "eval")}


def build_candidate(
    root: Path, dataset_dir: Path, threshold: float, *, pretrained: bool = True, backbone: str = "mobilenet_v2"
) -> Candidate:
    """Write features/, head/, model/ (model.keras + model.json) and run the REAL evaluate step into eval/."""
    from bakeoff.evaluate import evaluate

    write_candidate_folders(root, threshold, pretrained=pretrained, backbone=backbone)
    evaluate(str(root / "model"), str(dataset_dir), str(root / "eval"), n_bootstrap=100)
    return Candidate(root, threshold, pretrained)


def write_candidate_folders(
    root: Path, threshold: float, *, pretrained: bool = True, backbone: str = "mobilenet_v2"
) -> Candidate:
    """features/ and head/ (their JSONs, as the steps write them) and model/ (model.keras + model.json); no eval/."""
    weights = {
        "spec": "imagenet" if pretrained else "none",
        "name": "imagenet" if pretrained else "none",
        "sha256": ("ab" * 32) if pretrained else None,
        "pretrained": pretrained,
        "source": "test mirror" if pretrained else "random init",
    }
    for sub in ("features", "head", "model", "eval"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "features" / "features.json").write_text(
        json.dumps(
            {
                "backbone": backbone,
                "weights": weights,
                "image_size": IMAGE_SIZE,
                "cut": None,
                "feature_dim": 3,
                "n_images": 120,
                "images_per_s": 812.5,
                "cache_hits": 0,
                "cache_misses": 120,
                "classes": CLASSES,
            }
        )
    )
    (root / "head" / "head.json").write_text(
        json.dumps(
            {
                "kind": "dense",
                "hyperparameters": {"epochs": 3, "learning_rate": 0.001, "hidden": 8, "dropout": 0.5},
                "classes": CLASSES,
                "backbone": backbone,
                "weights": weights,
                "image_size": IMAGE_SIZE,
                "history": {
                    "loss": [0.9, 0.6, 0.4],
                    "accuracy": [0.5, 0.7, 0.9],
                    "val_loss": [0.8, 0.6, 0.5],
                    "val_accuracy": [0.6, 0.7, 0.8],
                },
                "epoch_end_ms": [EPOCH_0_MS + 1000 * k for k in range(3)],
            }
        )
    )
    threshold_model(threshold).save(root / "model" / "model.keras")
    (root / "model" / "model.json").write_text(
        json.dumps(
            {
                "backbone": backbone,
                "weights": weights,
                "image_size": IMAGE_SIZE,
                "cut": None,
                "classes": CLASSES,
                "unfrozen_layers": ["head"],
                "hyperparameters": {"blocks": 1, "epochs": 2, "learning_rate": 1e-5},
                "history": {
                    "loss": [0.5, 0.45],
                    "accuracy": [0.85, 0.88],
                    "val_loss": [0.5, 0.48],
                    "val_accuracy": [0.8, 0.82],
                },
                "epoch_end_ms": [EPOCH_0_MS + 60_000 + 1000 * k for k in range(2)],
                "finetuned": True,
                "threshold": threshold,
            }
        )
    )
    return Candidate(root, threshold, pretrained)
