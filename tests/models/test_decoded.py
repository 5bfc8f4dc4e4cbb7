"""The decoded tensor: one uint8 file per dataset content and size, identical to decoding, shared, self-checking."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from bakeoff import decoded, manifest, storage
from bakeoff.data import image_dataset
from bakeoff.errors import BakeoffError

from support.limits import small_filesystem


def _all(ds) -> np.ndarray:
    return np.concatenate([b.numpy() for b in ds])


def test_tensor_batches_are_the_decoded_files_bit_for_bit(tiny_dataset, tmp_path):
    """Any selection, any order, repeated rows: the tensor serves exactly what decoding the files gives."""
    df = manifest.read_manifest(tiny_dataset)
    tensor = decoded.decoded_images(df, 30, folder=str(tmp_path / "dec"))
    assert tensor.array().shape == (12, 30, 30, 3) and tensor.array().dtype == np.uint8
    rows = pd.concat([df.iloc[[7, 2, 3]], df.iloc[[2]]]).reset_index(drop=True)  # out of order, one image twice
    got = _all(tensor.dataset(rows, batch_size=3))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, _all(image_dataset(rows, 30, batch_size=3)))
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in tensor.dataset(df, 5, classes=["dog", "cat"])])
    np.testing.assert_array_equal(np.concatenate(labels), (df["label"] == "cat").astype(int).to_numpy())
    with pytest.raises(BakeoffError, match="not among the model's classes"):
        tensor.dataset(df, 5, classes=["cat"])
    with pytest.raises(BakeoffError, match="no images"):
        decoded.image_batches(df, df.iloc[:0], 30)


def test_shuffled_epochs_are_seeded_and_differ(tiny_dataset, tmp_path):
    df = manifest.read_manifest(tiny_dataset)
    tensor = decoded.decoded_images(df, 24, folder=str(tmp_path / "dec"))
    ds = tensor.dataset(df, 4, classes=["cat", "dog"], shuffle=True, seed=3)
    first, second = ([int(x.numpy().sum()) for x, _ in ds] for _ in range(2))
    again = [int(x.numpy().sum()) for x, _ in tensor.dataset(df, 4, classes=["cat", "dog"], shuffle=True, seed=3)]
    assert first == again and first != second  # same seed: same order; the next epoch: a new order
    assert sorted(_all(x for x, _ in ds).sum(axis=(1, 2, 3))) == sorted(_all(tensor.dataset(df, 4)).sum(axis=(1, 2, 3)))


def test_one_tensor_per_content_and_size_built_once(tiny_dataset, tmp_path, make_image):
    """Reordered rows or new labels reuse the tensor (same images); another size or a changed image makes a new one."""
    folder = str(tmp_path / "dec")
    df = manifest.read_manifest(tiny_dataset)
    first = decoded.decoded_images(df, 32, folder=folder)
    stamp = first.path.stat().st_mtime_ns
    shuffled = df.sample(frac=1, random_state=0).assign(label="x", split="test")
    again = decoded.decoded_images(shuffled, 32, folder=folder)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    assert decoded.decoded_images(df, 28, folder=folder).path != first.path
    changed = df.copy()
    changed.loc[0, "sha256"] = "0" * 64  # another image content
    assert decoded.tensor_key(changed["sha256"], 32) != decoded.tensor_key(df["sha256"], 32)
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["ids"] == list(df["sha256"]) and meta["shape"] == [12, 32, 32, 3]
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == sorted(
        [first.path.name, first.path.with_suffix(".json").name]
        + [decoded.decoded_images(df, 28, folder=folder).path.name]
        + [decoded.decoded_images(df, 28, folder=folder).path.with_suffix(".json").name]
    )  # no temp files left


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "sidecar garbage", "tensor missing"])
def test_a_damaged_tensor_is_warned_about_and_rebuilt(tiny_dataset, tmp_path, damage):
    folder = str(tmp_path / "dec")
    df = manifest.read_manifest(tiny_dataset)
    clean = decoded.decoded_images(df, 32, folder=folder)
    expected = np.array(clean.array())
    if damage == "truncated":
        clean.path.write_bytes(clean.path.read_bytes()[:-500])
    elif damage == "flipped byte":
        data = bytearray(clean.path.read_bytes())
        data[-1] ^= 0xFF
        clean.path.write_bytes(bytes(data))
    elif damage == "sidecar garbage":
        clean.path.with_suffix(".json").write_text("{not json")
    else:
        clean.path.unlink()
    with pytest.warns(UserWarning, match=f"corrupt decoded tensor {clean.path}"):
        rebuilt = decoded.decoded_images(df, 32, folder=folder)
    np.testing.assert_array_equal(np.array(rebuilt.array()), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt one passes its checks
        decoded.decoded_images(df, 32, folder=folder)


def test_off_or_unwritable_falls_back_to_decoding(tiny_dataset, tmp_path, monkeypatch):
    df = manifest.read_manifest(tiny_dataset)
    expected = _all(image_dataset(df, 32))
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", "off")
    assert decoded.decoded_images(df, 32) is None
    np.testing.assert_array_equal(_all(decoded.image_batches(df, df, 32)), expected)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(blocker / "dec"))
    with pytest.warns(UserWarning, match=f"decoded-image cache off for this run: cannot write {blocker / 'dec'}"):
        batches = decoded.image_batches(df, df, 32)
    np.testing.assert_array_equal(_all(batches), expected)


def test_an_s3_dataset_is_decoded_into_a_local_tensor(tiny_dataset, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKEOFF_IMAGE_CACHE", str(tmp_path / "imgcache"))
    storage.upload_tree(tiny_dataset, "s3://bakeoff-test/dec")
    remote = manifest.read_manifest("s3://bakeoff-test/dec")
    tensor = decoded.decoded_images(remote, 32, folder=str(tmp_path / "dec"))
    assert tensor.path.is_relative_to(tmp_path / "dec")
    local = manifest.read_manifest(tiny_dataset)
    np.testing.assert_array_equal(_all(tensor.dataset(remote, 5)), _all(image_dataset(local, 32, batch_size=5)))


def test_a_cold_forward_pass_streams_the_decoding_and_leaves_the_tensor(tiny_dataset, tmp_path, monkeypatch):
    """The first backbone at a size gets uint8 batches straight from the decoder; the tensor is committed after the
    last one, and later readers (any selection, any order) read it without decoding."""
    folder = tmp_path / "dec"
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(folder))
    df = manifest.read_manifest(tiny_dataset)
    batches = decoded.inference_batches(df, df, 32, batch_size=5)
    first = next(batches)
    assert first.dtype == np.uint8 and first.shape == (5, 32, 32, 3)
    assert not list(folder.glob("*.npy"))  # nothing is committed mid-stream
    np.testing.assert_array_equal(np.concatenate([first, *batches]), _all(image_dataset(df, 32, batch_size=5)))
    tensor = decoded.decoded_images(df, 32)
    stamp = tensor.path.stat().st_mtime_ns
    rows = pd.concat([df.iloc[[9, 1]], df.iloc[[1, 4]]]).reset_index(drop=True)
    later = list(decoded.inference_batches(df, rows, 32, batch_size=3))
    assert [len(b) for b in later] == [3, 1]  # bounded batches, the last one partial
    np.testing.assert_array_equal(np.concatenate(later), _all(image_dataset(rows, 32, batch_size=3)))
    assert tensor.path.stat().st_mtime_ns == stamp and sorted(p.suffix for p in folder.iterdir()) == [".json", ".npy"]


def test_a_consumer_that_stops_early_leaves_no_tensor_behind(tiny_dataset, tmp_path, monkeypatch):
    folder = tmp_path / "dec"
    monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(folder))
    df = manifest.read_manifest(tiny_dataset)
    batches = decoded.inference_batches(df, df, 32, batch_size=5)
    next(batches)
    batches.close()  # what an exception in the forward pass does to the generator
    assert list(folder.iterdir()) == []  # no tensor, no sidecar, no temp file
    assert decoded.decoded_images(df, 32).array().shape == (12, 32, 32, 3)  # the next run builds it whole


def test_a_full_disk_mid_stream_still_serves_every_batch(tiny_dataset, tmp_path, monkeypatch):
    """A write that fails after some batches went out costs the tensor (one warning), not the run: the rest of the
    batches keep coming, and nothing half-written is left for a later run to trust."""
    df = manifest.read_manifest(tiny_dataset)
    expected = _all(image_dataset(df, 32, batch_size=5))
    with small_filesystem(tmp_path / "small", 20_000) as (folder, _error):
        monkeypatch.setenv("BAKEOFF_DECODED_CACHE", str(folder / "dec"))
        with pytest.warns(UserWarning, match=f"decoded-image cache off for this run: cannot write {folder / 'dec'}"):
            got = np.concatenate(list(decoded.inference_batches(df, df, 32, batch_size=5)))
        assert list((folder / "dec").iterdir()) == []
    np.testing.assert_array_equal(got, expected)  # 12 images x 3 KB: the second batch's write hit the limit
