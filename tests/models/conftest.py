"""Fixtures for the models tests: a tiny real dataset folder (manifest + image files), Fashion-MNIST samples.

Shared by the backbone/features and the heads/finetune/evaluate tests: add fixtures with distinct names only.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def build_tiny_dataset(write_image, root: Path, per_class: int = 6, size: tuple[int, int] = (40, 36),
                       classes: dict[str, tuple[int, int, int]] | None = None) -> Path:
    """A dataset folder as ingest writes it: images/<label>/<sha>.png + manifest.parquet (relative URIs).

    Classes differ by colour, so even a random backbone separates them a little; splits cycle train/train/val/test...
    """
    from bakeoff import manifest

    classes = classes or {"cat": (200, 40, 40), "dog": (40, 60, 200)}
    splits = ["train", "train", "val", "test"]
    rows = []
    for c, (label, color) in enumerate(sorted(classes.items())):
        for i in range(per_class):
            tmp = write_image(root / "tmp.png", size=size, color=color, seed=100 * c + i, fmt="PNG")
            sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
            rel = Path("images", label, f"{sha}.png")
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(root / rel)
            rows.append({"uri": rel.as_posix(), "label": label, "split": splits[i % len(splits)], "sha256": sha,
                         "width": size[0], "height": size[1], "group": sha[:12], "source": f"{label}/{i}.png"})
    manifest.write_manifest(pd.DataFrame(rows), root)
    return root


@pytest.fixture
def tiny_dataset(tmp_path, make_image) -> Path:
    """A 12-image, 2-class (cat/dog) dataset folder with manifest.parquet and real PNG files."""
    return build_tiny_dataset(make_image, tmp_path / "dataset")


@pytest.fixture
def make_tiny_dataset(make_image):
    """Factory: make_tiny_dataset(root, per_class=6, size=(40, 36), classes={label: rgb}) -> Path."""
    return functools.partial(build_tiny_dataset, make_image)


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def fashion_mnist_subset():
    """(x_train, y_train, x_test, y_test) uint8 28x28 from Debian's dataset-fashion-mnist: a class-balanced slice."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (make apt-runtime)")
    x_train, y_train = _idx(FASHION_DIR / "train-images-idx3-ubyte.gz"), _idx(FASHION_DIR / "train-labels-idx1-ubyte.gz")
    x_test, y_test = _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"), _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    n_train, n_test = int(os.environ.get("BAKEOFF_FMNIST_TRAIN", 600)), int(os.environ.get("BAKEOFF_FMNIST_TEST", 300))
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]
