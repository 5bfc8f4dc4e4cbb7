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


def build_tiny_dataset(
    write_image,
    root: Path,
    per_class: int = 6,
    size: tuple[int, int] = (40, 36),
    classes: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
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
            rows.append(
                {
                    "uri": rel.as_posix(),
                    "label": label,
                    "split": splits[i % len(splits)],
                    "sha256": sha,
                    "width": size[0],
                    "height": size[1],
                    "group": sha[:12],
                    "source": f"{label}/{i}.png",
                }
            )
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
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def fashion_mnist_subset():
    """(x_train, y_train, x_test, y_test) uint8 28x28 from Debian's dataset-fashion-mnist.

    Train: the first 30 images of each class (300, a few-shot regime where pretrained features matter most);
    test: the first 1,000 test images (enough for a paired test to separate a real gap from noise).
    """
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist (make apt-runtime)")
    x_train, y_train = (
        _idx(FASHION_DIR / "train-images-idx3-ubyte.gz"),
        _idx(FASHION_DIR / "train-labels-idx1-ubyte.gz"),
    )
    x_test, y_test = _idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"), _idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    per_class = int(os.environ.get("BAKEOFF_FMNIST_PER_CLASS", 30))
    n_test = int(os.environ.get("BAKEOFF_FMNIST_TEST", 1000))
    chosen = np.concatenate([np.flatnonzero(y_train == c)[:per_class] for c in range(10)])
    return x_train[chosen], y_train[chosen], x_test[:n_test], y_test[:n_test]


# ---------------------------------------------------------------------------------------------------------------
# Heads / fine-tuning / evaluation fixtures (owner: heads/finetune/evaluate). Names start with `hfe_` so they never
# clash with the backbone/features fixtures above.
def _hfe_write_dataset(root, images, labels, splits):
    """A real dataset folder: PNG files under images/<label>/<sha256>.png plus manifest.parquet (relative uris)."""
    import hashlib
    import io

    import pandas as pd
    from PIL import Image

    from bakeoff import manifest

    rows = []
    for pixels, label, split in zip(images, labels, splits):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        rel = f"images/{label}/{sha}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        rows.append(
            {
                "uri": rel,
                "label": label,
                "split": split,
                "sha256": sha,
                "width": pixels.shape[1],
                "height": pixels.shape[0],
                "group": sha,
                "source": f"{label}/{sha[:8]}.png",
            }
        )
    manifest.write_manifest(pd.DataFrame(rows), root)
    return str(root)


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
    return _hfe_write_dataset(tmp_path_factory.mktemp("hfe-faces"), images, labels, splits)


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
        hfe_faces_dataset, hfe_faces_head, str(after), epochs=2, blocks=2, learning_rate=1e-4, batch_size=16, patience=2
    )
    return str(before), str(after)
