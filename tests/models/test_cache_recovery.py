"""Caches are hints, never truth: a corrupt feature shard, decoded tensor or local image copy is detected, skipped with a
warning, recomputed and replaced; a cache that cannot be written costs speed, never the run."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from bakeoff import manifest
from bakeoff.features import extract_features, load_features


def _shards(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/shards/*.npz"))


def _damage(path: Path, how: str) -> None:
    """Break a shard the ways a crash, a full disk or a bad copy does."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"\x93NUMPY" + bytes(range(256)) * 4)
    elif how == "bad_crc":  # a flipped byte inside the compressed member: the zip reads, its CRC does not match
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "missing_arrays":
        np.savez(path.with_suffix(""), something=np.zeros(3))  # np.savez appends .npz
    elif how == "ragged":
        with np.load(path) as npz:
            np.savez(path.with_suffix(""), sha256=npz["sha256"], features=npz["features"][:-2])
    elif how == "not_finite":
        with np.load(path) as npz:
            vectors = npz["features"].copy()
            vectors[0, 0] = np.nan
            np.savez(path.with_suffix(""), sha256=npz["sha256"], features=vectors)
    else:
        raise ValueError(how)


DAMAGES = ("truncated", "empty", "garbage", "bad_crc", "missing_arrays", "ragged", "not_finite")


@pytest.mark.parametrize("how", DAMAGES)
def test_each_kind_of_shard_damage_is_detected_and_the_shard_replaced(tmp_path, how):
    """Two shards under one key, one damaged: load() warns naming it and serves only the good one's vectors;
    storing the recomputed vectors deletes the damaged shard; the next load is clean."""
    from bakeoff.features import FeatureCache

    rng = np.random.default_rng(0)
    shas = [f"{i:064x}" for i in range(8)]
    vectors = rng.normal(size=(8, 16)).astype(np.float32)
    cache = FeatureCache(str(tmp_path), "key", {"what": "test"})
    good, bad = cache.add(shas[:4], vectors[:4]), cache.add(shas[4:], vectors[4:])
    _damage(Path(bad), how)
    with pytest.warns(UserWarning, match=rf"corrupt feature cache shard {bad} \(.+\); recomputing its images"):
        loaded = FeatureCache(str(tmp_path), "key", {}).load()
    assert sorted(loaded) == shas[:4]
    np.testing.assert_array_equal(np.stack([loaded[s] for s in shas[:4]]), vectors[:4])
    fresh = FeatureCache(str(tmp_path), "key", {})
    with pytest.warns(UserWarning):
        fresh.load()
    assert fresh.corrupt == [bad]
    assert fresh.add(shas[4:], vectors[4:]) == bad  # same images, same shard name: replaced in place
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = FeatureCache(str(tmp_path), "key", {}).load()
    assert sorted(again) == shas and Path(good).exists()


def test_a_corrupt_shard_breaks_no_run_it_is_recomputed_and_replaced(tiny_dataset, tmp_path, mirror_env):
    """End to end (today: BadZipFile on every later run for this backbone): one warning naming the shard, every
    vector recomputed and equal to the clean ones, the shard replaced, the next run all hits and silent."""
    cache = tmp_path / "cache"
    extract_features(
        str(tiny_dataset), str(tmp_path / "clean"), "mobilenet_v2", image_size=32, cache_uri=str(cache), taps=False
    )
    clean = load_features(str(tmp_path / "clean"))[0]["features"]
    (shard,) = _shards(cache)
    _damage(shard, "truncated")
    with pytest.warns(UserWarning, match=rf"corrupt feature cache shard {shard}.*recomputing"):
        info = extract_features(
            str(tiny_dataset), str(tmp_path / "out"), "mobilenet_v2", image_size=32, cache_uri=str(cache), taps=False
        )
    assert (info["cache_hits"], info["cache_misses"]) == (0, 12)
    np.testing.assert_allclose(load_features(str(tmp_path / "out"))[0]["features"], clean, atol=1e-5)
    (replaced,) = _shards(cache)
    with np.load(replaced, allow_pickle=False) as npz:
        assert npz["features"].shape == (12, 1280)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning any more: the bad shard is gone
        again = extract_features(
            str(tiny_dataset), str(tmp_path / "again"), "mobilenet_v2", image_size=32, cache_uri=str(cache), taps=False
        )
    assert (again["cache_hits"], again["cache_misses"]) == (12, 0)


def test_a_corrupt_shard_of_other_images_is_removed_once_its_images_are_computed_again(
    tiny_dataset, tmp_path, mirror_env
):
    """The damaged shard held 12 images, this dataset now has 6 of them: the 6 are recomputed into a shard of their
    own, and the damaged one (a different name) is deleted rather than warned about forever."""
    cache = tmp_path / "cache"
    extract_features(
        str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=str(cache), taps=False
    )
    (shard,) = _shards(cache)
    _damage(shard, "truncated")
    df = manifest.read_manifest(tiny_dataset, resolve=False)
    manifest.write_manifest(df.iloc[:6].reset_index(drop=True), tiny_dataset)
    with pytest.warns(UserWarning, match="corrupt feature cache shard"):
        info = extract_features(
            str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", image_size=32, cache_uri=str(cache), taps=False
        )
    assert info["cache_misses"] == 6
    assert not shard.exists() and len(_shards(cache)) == 1


def test_a_corrupt_decoded_tensor_is_decoded_again_and_replaced(tiny_dataset, tmp_path, mirror_env):
    """A decoded tensor cut short (a crash, a full disk) is not fed to the model: the images are decoded afresh."""
    extract_features(
        str(tiny_dataset), str(tmp_path / "a"), "mobilenet_v2", image_size=32, cache_uri=str(tmp_path / "c1")
    )
    clean = load_features(str(tmp_path / "a"))[0]["features"]
    (tensor,) = (tmp_path / "decoded").glob("*.npy")
    size = tensor.stat().st_size
    tensor.write_bytes(tensor.read_bytes()[:1000])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = extract_features(
            str(tiny_dataset), str(tmp_path / "b"), "mobilenet_v2", image_size=32, cache_uri=str(tmp_path / "c2")
        )
    found = [str(w.message) for w in caught if "decoded tensor" in str(w.message)]
    assert found == [f"corrupt decoded tensor {tensor} (1000 bytes, expected {size}); decoding the images again"]
    assert info["cache_misses"] == 12
    np.testing.assert_allclose(load_features(str(tmp_path / "b"))[0]["features"], clean, atol=1e-5)
    assert tensor.stat().st_size == size  # replaced, so the next run reads it again


def test_caches_that_cannot_be_written_cost_speed_not_the_run(tiny_dataset, tmp_path, mirror_env, monkeypatch):
    """Feature and decoded-image caches under a path that cannot exist (a file where a folder should be): the features are
    still written, with one warning per cache naming the path and the cause."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file, not a folder")
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(blocker / "decoded"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = extract_features(
            str(tiny_dataset),
            str(tmp_path / "out"),
            "mobilenet_v2",
            image_size=32,
            cache_uri=str(blocker / "features"),
            taps=False,
        )
    assert info["cache_misses"] == 12 and load_features(str(tmp_path / "out"))[0]["features"].shape == (12, 1280)
    messages = [str(w.message) for w in caught if "cannot write" in str(w.message)]
    assert len(messages) == 2, messages
    assert any(m.startswith(f"feature cache not updated: cannot write {blocker / 'features'}") for m in messages)
    assert any(
        m.startswith(f"decoded-image cache off for this run: cannot write {blocker / 'decoded'}") for m in messages
    )
    assert all("Not a directory (errno 20)" in m for m in messages)
