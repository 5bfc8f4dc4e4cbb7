"""The tf.data reader: pixels, order, labels, streaming, odd image modes, s3:// manifests."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from bakeoff import manifest, storage
from bakeoff.data import image_dataset
from bakeoff.errors import BakeoffError


def test_batches_are_float_rgb_in_manifest_order(tiny_dataset):
    from PIL import Image

    df = manifest.read_manifest(tiny_dataset)
    ds = image_dataset(df, 36, batch_size=5)
    assert ds.element_spec.shape.as_list() == [None, 36, 36, 3]  # streamed in batches, never one big array
    batches = list(ds)
    assert [int(b.shape[0]) for b in batches] == [5, 5, 2]
    images = np.concatenate([b.numpy() for b in batches])
    assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 255 and images.max() > 100
    for i, uri in enumerate(df["uri"]):
        original = np.asarray(Image.open(uri).convert("RGB"), dtype=np.float32)
        np.testing.assert_allclose(images[i].mean(axis=(0, 1)), original.mean(axis=(0, 1)), atol=3.0)


def test_labels_follow_the_given_class_order(tiny_dataset):
    df = manifest.read_manifest(tiny_dataset)
    labels = np.concatenate([y.numpy() for _, y in image_dataset(df, 32, batch_size=4, classes=["dog", "cat"])])
    assert labels.tolist() == [{"dog": 0, "cat": 1}[name] for name in df["label"]]
    with pytest.raises(BakeoffError, match="not among the model's classes"):
        image_dataset(df, 32, classes=["cat"])


def test_shuffle_is_seeded(tiny_dataset):
    df = manifest.read_manifest(tiny_dataset)
    first = [float(x.numpy().sum()) for x in image_dataset(df, 32, batch_size=1, shuffle=True, seed=3)]
    again = [float(x.numpy().sum()) for x in image_dataset(df, 32, batch_size=1, shuffle=True, seed=3)]
    plain = [float(x.numpy().sum()) for x in image_dataset(df, 32, batch_size=1)]
    assert first == again and first != plain and sorted(first) == pytest.approx(sorted(plain))


def test_grey_rgba_gif_and_jpeg_become_rgb(tmp_path, make_image):
    rows = []
    for i, (mode, fmt) in enumerate([("L", "PNG"), ("RGBA", "PNG"), ("P", "GIF"), ("RGB", "JPEG"), ("RGB", "BMP")]):
        path = make_image(tmp_path / f"img{i}.{fmt.lower()}", size=(50, 20), mode=mode, fmt=fmt, seed=i)
        rows.append(
            {
                "uri": str(path),
                "label": "a",
                "split": "train",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "width": 50,
                "height": 20,
                "group": str(i),
                "source": path.name,
            }
        )
    images = np.concatenate([b.numpy() for b in image_dataset(pd.DataFrame(rows), 24, batch_size=8)])
    assert images.shape == (5, 24, 24, 3)
    assert np.allclose(images[0, ..., 0], images[0, ..., 1])  # grey replicated to RGB


def test_s3_manifest_is_fetched_and_cached_by_content(tiny_dataset, s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKEOFF_IMAGE_CACHE", str(tmp_path / "imgcache"))
    storage.upload_tree(tiny_dataset, "s3://bakeoff-test/ds")
    remote = manifest.read_manifest("s3://bakeoff-test/ds")
    assert remote["uri"].str.startswith("s3://").all()
    local = manifest.read_manifest(tiny_dataset)
    a = np.concatenate([b.numpy() for b in image_dataset(remote, 32)])
    b = np.concatenate([b.numpy() for b in image_dataset(local, 32)])
    np.testing.assert_array_equal(a, b)
    assert len(list((tmp_path / "imgcache").rglob("*.png"))) == len(local)


def test_s3_image_changed_since_ingest_is_refused(tiny_dataset, s3_server, tmp_path, monkeypatch, make_image):
    monkeypatch.setenv("BAKEOFF_IMAGE_CACHE", str(tmp_path / "imgcache"))
    storage.upload_tree(tiny_dataset, "s3://bakeoff-test/ds2")
    remote = manifest.read_manifest("s3://bakeoff-test/ds2")
    other = make_image(tmp_path / "other.png", seed=99)
    storage.upload(other, remote["uri"].iloc[0])
    with pytest.raises(BakeoffError, match="changed since ingest"):
        image_dataset(remote, 32)


def test_empty_selection_is_an_error(tiny_dataset):
    df = manifest.read_manifest(tiny_dataset)
    with pytest.raises(BakeoffError, match="no images"):
        image_dataset(df.iloc[:0], 32)


def test_a_damaged_local_copy_of_an_s3_image_is_fetched_again(tiny_dataset, s3_server, tmp_path, monkeypatch):
    """The local image cache is re-hashed before use: a truncated copy is replaced, never decoded (today it was served
    as is and the reader failed, or worse, decoded a partial image)."""
    from bakeoff.data import local_paths

    monkeypatch.setenv("BAKEOFF_IMAGE_CACHE", str(tmp_path / "imgcache"))
    storage.upload_tree(tiny_dataset, "s3://bakeoff-test/ds3")
    remote = manifest.read_manifest("s3://bakeoff-test/ds3")
    first = local_paths(remote)
    damaged = first[2]
    good = open(damaged, "rb").read()
    with open(damaged, "wb") as handle:
        handle.write(good[: len(good) // 3])
    with pytest.warns(UserWarning, match=rf"corrupt local copy {damaged} of s3://bakeoff-test/ds3/.*fetching it again"):
        again = local_paths(remote)
    assert again == first
    assert hashlib.sha256(open(damaged, "rb").read()).hexdigest() == remote["sha256"].iloc[2]
