"""components.features: a frozen backbone over the Dataset; the cache makes a second run do no forward pass."""

from __future__ import annotations

import numpy as np
from kfp.dsl import Dataset

from bakeoff import contract, manifest
from components.features import features

SIZE = 32  # the smallest input MobileNetV2 takes


def test_features_writes_vectors_and_reports_the_cache(
    tiny_dataset_dir, weights_mirror, artifact, tmp_path, monkeypatch
):
    monkeypatch.setenv("BAKEOFF_WEIGHTS_URI", weights_mirror)
    monkeypatch.setenv("BAKEOFF_CACHE_URI", str(tmp_path / "cache"))
    n = len(manifest.read_manifest(tiny_dataset_dir))

    first = artifact(Dataset, "features")
    features(Dataset(uri=str(tiny_dataset_dir)), "mobilenet_v2", "imagenet", SIZE, 8, "auto", "off", [], first)
    arrays = np.load(f"{first.path}/{contract.FEATURES_NPZ}")
    assert arrays["features"].shape == (n, 1280) and arrays["features"].dtype == np.float32
    info = contract.FeaturesInfo.read(first.path)
    assert info.backbone == "mobilenet_v2" and info.image_size == SIZE and info.weights["pretrained"]
    meta = first.metadata
    assert meta["backbone"] == "mobilenet_v2" and meta["image_size"] == SIZE and meta["feature_dim"] == 1280
    assert meta["n_images"] == n and meta["cache_misses"] == n and meta["cache_hits"] == 0
    assert meta["weights"] == info.weights["name"] and meta["images_per_s"] > 0
    assert meta["precision"] == "float32"  # auto: MobileNetV2 is not faster in bfloat16 (docs/benchmarks.md)

    assert meta["flip"] is False and "flip_features" not in arrays

    # same data, same backbone: every plain vector from the cache; flip on adds the mirrored images' vectors
    again = artifact(Dataset, "features-again")
    features(Dataset(uri=str(tiny_dataset_dir)), "mobilenet_v2", "imagenet", SIZE, 8, "float32", "on", [], again)
    assert again.metadata["cache_hits"] == n and again.metadata["cache_misses"] == 0 and again.metadata["flip"]
    flipped = np.load(f"{again.path}/{contract.FEATURES_NPZ}")
    np.testing.assert_array_equal(flipped["features"], arrays["features"])
    assert flipped["flip_features"].shape == (n, 1280)
