"""Fixtures for the models tests: a tiny real dataset folder (manifest + image files), Fashion-MNIST samples.

Shared by the backbone/features and the heads/finetune/evaluate tests: add fixtures with distinct names only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from support import build_tiny_dataset, write_dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def tiny_dataset(tmp_path, make_image) -> Path:
    """A 12-image, 2-class (cat/dog) dataset folder with manifest.parquet and real PNG files."""
    return build_tiny_dataset(tmp_path / "dataset")


@pytest.fixture
def mirror_env(weights_mirror, monkeypatch, tmp_path):
    """The real weights mirror, no progress bars, and a decoded-image cache of this test's own."""
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    monkeypatch.setenv("BAKEOFF_NO_PROGRESS", "1")
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(tmp_path / "decoded"))
    return weights_mirror


@pytest.fixture
def make_tiny_dataset(make_image):
    """Factory: make_tiny_dataset(root, per_class=6, size=(40, 36), classes={label: rgb}) -> Path."""
    return build_tiny_dataset


@pytest.fixture(scope="session")
def fashion_mnist_subset():
    """(x_train, y_train, x_test, y_test) uint8 28x28 from Debian's dataset-fashion-mnist.

    Train: the first 30 images of each class (300, a few-shot regime where pretrained features matter most);
    test: the first 1,000 test images (enough for a paired test to separate a real gap from noise).
    """
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (make apt-runtime)")
    from bakeoff.demo_data import load_fashion_mnist

    x_train, y_train = load_fashion_mnist(FASHION_DIR)
    x_test, y_test = load_fashion_mnist(FASHION_DIR, split="test")
    per_class = int(os.environ.get("BAKEOFF_FMNIST_PER_CLASS", 30))
    n_test = int(os.environ.get("BAKEOFF_FMNIST_TEST", 1000))
    chosen = np.concatenate([np.flatnonzero(y_train == c)[:per_class] for c in range(10)])
    return x_train[chosen], y_train[chosen], x_test[:n_test], y_test[:n_test]


# ---------------------------------------------------------------------------------------------------------------
# Heads / fine-tuning / evaluation fixtures (owner: heads/finetune/evaluate). Names start with `hfe_` so they never
# clash with the backbone/features fixtures above.
@pytest.fixture(scope="session")
def hfe_faces_dataset(tmp_path_factory) -> str:
    """Binary dataset of real photos: scikit-image's LFW subset, faces vs non-faces (grey 25x25 PNGs).

    Per class 16 train, 8 val, 8 test images (64 in all).
    """
    from skimage import data as skdata

    pixels = (skdata.lfw_subset() * 255).round().astype(np.uint8)  # 100 faces then 100 non-faces
    rng = np.random.default_rng(3)
    images, labels, splits = [], [], []
    for label, block in (("face", pixels[:100]), ("other", pixels[100:])):
        chosen = rng.permutation(len(block))[:32]
        for i, k in enumerate(chosen):
            images.append(block[k])
            labels.append(label)
            splits.append("train" if i < 16 else "val" if i < 24 else "test")
    return str(write_dataset(tmp_path_factory.mktemp("hfe-faces"), images, labels, splits))


@pytest.fixture(scope="session")
def hfe_mirror_env(weights_mirror):
    """Point BAKEOFF_WEIGHTS_URI at the real imported weights for the whole session (imagenet -> mirror copy)."""
    old = os.environ.get("BAKEOFF_WEIGHTS_URI")
    os.environ["BAKEOFF_WEIGHTS_URI"] = weights_mirror
    yield weights_mirror
    if old is None:
        os.environ.pop("BAKEOFF_WEIGHTS_URI", None)
    else:
        os.environ["BAKEOFF_WEIGHTS_URI"] = old


@pytest.fixture(scope="session")
def hfe_faces_features(hfe_faces_dataset, hfe_mirror_env, tmp_path_factory) -> str:
    """Real MobileNetV2 (imported ImageNet weights) features of the faces dataset at 64 px."""
    from bakeoff.features import extract_features

    out = tmp_path_factory.mktemp("hfe-faces-features")
    cache = tmp_path_factory.mktemp("hfe-feature-cache")
    extract_features(
        hfe_faces_dataset, str(out), "mobilenet_v2", "imagenet", image_size=64, batch_size=32, cache_uri=str(cache)
    )
    return str(out)


@pytest.fixture(scope="session")
def hfe_faces_head(hfe_faces_features, tmp_path_factory) -> str:
    """A dense head trained on the faces features (small, few epochs)."""
    from bakeoff.heads import train_head

    out = tmp_path_factory.mktemp("hfe-faces-head")
    train_head(hfe_faces_features, str(out), epochs=15, hidden=32, patience=3)
    return str(out)


@pytest.fixture(scope="session")
def hfe_faces_finetuned(hfe_faces_dataset, hfe_faces_head, tmp_path_factory) -> tuple[str, str]:
    """(assembled, finetuned) model folders: the same head on MobileNetV2, before (epochs=0) and after 2 epochs
    with the top 2 blocks unfrozen and a learning rate high enough that one step visibly moves the weights."""
    from bakeoff.finetune import finetune

    before = tmp_path_factory.mktemp("hfe-model-before")
    after = tmp_path_factory.mktemp("hfe-model-after")
    finetune(hfe_faces_dataset, hfe_faces_head, str(before), epochs=0, blocks=2)
    finetune(
        hfe_faces_dataset,
        hfe_faces_head,
        str(after),
        epochs=2,
        blocks=2,
        learning_rate=1e-4,
        batch_size=16,
        patience=2,
        keep_if_better=False,  # these tests study what training moved, whatever val says
    )
    return str(before), str(after)
