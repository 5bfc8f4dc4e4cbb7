"""The one image reader every model step uses: tf.data over manifest rows.

Why tf.data: decoding and resizing run in parallel threads and overlap with the model through prefetch, and the
dataset streams batch by batch, so a dataset never has to fit in memory. Features, fine-tuning and evaluation all
read through ``image_dataset`` so they see identical pixels (same decoder, same resize).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from bakeoff import env, storage
from bakeoff.errors import BakeoffError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import tensorflow as tf

RESIZE_METHOD = (
    "jpeg-dct-scale+bilinear-antialias"  # part of the feature cache key: change it and cached vectors are recomputed
)


def _fetch_one(uri: str, sha256: str) -> str:
    """Local copy of an s3:// image, named by its content hash and verified, so a cache entry is never stale.

    A copy already there is re-hashed before use (cheap next to decoding it): a truncated or damaged copy is
    fetched again and replaced, never decoded into wrong pixels.
    """
    suffix = Path(uri.rsplit("/", 1)[-1]).suffix.lower()
    local = env.image_cache_dir() / sha256[:2] / f"{sha256}{suffix}"
    if local.exists():
        if _file_sha256(local) == sha256:
            return str(local)
        warnings.warn(f"corrupt local copy {local} of {uri} (sha256 differs); fetching it again", stacklevel=2)
    data = storage.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BakeoffError(f"{uri} changed since ingest (sha256 differs from the manifest); re-run `bakeoff ingest`")
    storage.write_bytes(local, data)
    return str(local)


def _file_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def local_paths(df: pd.DataFrame) -> list[str]:
    """Resolved manifest URIs as local paths, fetching s3:// images into the local content-addressed cache."""
    uris = [str(u) for u in df["uri"]]
    remote = [i for i, u in enumerate(uris) if storage.is_s3(u)]
    if remote:
        shas = [str(s) for s in df["sha256"]]
        with ThreadPoolExecutor(max_workers=16) as pool:
            fetched = list(pool.map(lambda i: _fetch_one(uris[i], shas[i]), remote))
        for i, path in zip(remote, fetched):
            uris[i] = path
    return uris


def _decode(raw: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decode to uint8 RGB. JPEGs much larger than the target are decoded at 1/2, 1/4 or 1/8 scale by libjpeg's
    DCT scaling (header read first), which is several times cheaper than a full decode followed by a resize."""
    import tensorflow as tf

    def jpeg():
        shape = tf.image.extract_jpeg_shape(raw)
        short = tf.minimum(shape[0], shape[1])
        step = tf.reduce_sum(tf.cast(tf.stack([short >= k * image_size for k in (2, 4, 8)]), tf.int32))
        return tf.switch_case(step, [lambda r=r: tf.io.decode_jpeg(raw, channels=3, ratio=r) for r in (1, 2, 4, 8)])

    def other():
        return tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8)

    return tf.cond(tf.io.is_jpeg(raw), jpeg, other)


def decode_and_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """File -> float32 [S, S, 3] RGB in 0..255 (grey and RGBA become RGB; GIFs use their first frame)."""
    import tensorflow as tf

    image = _decode(tf.io.read_file(path), image_size)
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    # whole-number pixels: a decoded image stored as uint8 in the pixel cache reads back bit-identical
    image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
    image.set_shape((image_size, image_size, 3))
    return image


def pixel_path(cache_dir: str, sha256: str, image_size: int) -> str:
    """Content-addressed raw uint8 [S, S, 3] file of one image at one size (and this reader's resize method)."""
    method = hashlib.sha256(RESIZE_METHOD.encode()).hexdigest()[:8]
    return os.path.join(cache_dir, f"{image_size}-{method}", sha256[:2], f"{sha256}.rgb")


def cached_pixel_mask(df: pd.DataFrame, image_size: int, cache_dir: str | None) -> list[bool]:
    """Which rows have a usable pixel file. One of the wrong size (truncated, empty) is a miss: it is removed with a
    warning, the image is decoded again and the file rewritten, so a damaged entry never reaches the model."""
    if not cache_dir:
        return [False] * len(df)
    expected = image_size * image_size * 3
    mask = []
    for sha in df["sha256"]:
        path = pixel_path(cache_dir, str(sha), image_size)
        try:
            size = os.stat(path).st_size
        except OSError:
            mask.append(False)
            continue
        if size != expected:
            warnings.warn(
                f"corrupt pixel cache file {path} ({size} bytes, expected {expected}); decoding the image again",
                stacklevel=2,
            )
            with contextlib.suppress(OSError):
                os.unlink(path)
        mask.append(size == expected)
    return mask


def write_pixels(cache_dir: str, sha256: str, image_size: int, image) -> None:
    """Store one decoded image (float 0..255 whole numbers) as raw uint8, atomically; not fsynced: a file cut
    short by a crash has the wrong size, which ``cached_pixel_mask`` catches, and decoding again is cheap."""
    import numpy as np

    with storage.atomic_path(pixel_path(cache_dir, sha256, image_size), durable=False) as tmp:
        Path(tmp).write_bytes(np.asarray(image).astype(np.uint8).tobytes())


def image_dataset(
    df: pd.DataFrame,
    image_size: int,
    batch_size: int = 32,
    classes: list[str] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    pixel_cache: str | None = None,
) -> tf.data.Dataset:
    """Batches of float32 images [b, S, S, 3] in 0..255, or (images, label_index) when ``classes`` is given.

    ``df`` holds manifest rows with resolved URIs (``manifest.read_manifest`` resolves them). Row order is kept
    unless ``shuffle`` (seeded, reshuffled each epoch). With ``pixel_cache`` (a local folder), images already
    decoded at this size by an earlier run are read from there instead of being decoded again: decoding once
    per input size serves every backbone (``bakeoff.features`` fills it).
    """
    import tensorflow as tf

    if len(df) == 0:
        raise BakeoffError("no images to read (empty manifest selection)")
    if image_size < 1 or batch_size < 1:
        raise BakeoffError(f"image_size and batch_size must be positive, got {image_size}, {batch_size}")
    paths = local_paths(df)
    cached = cached_pixel_mask(df, image_size, pixel_cache)
    if any(cached):
        paths = [
            pixel_path(pixel_cache, str(sha), image_size) if hit else path
            for path, sha, hit in zip(paths, df["sha256"], cached)
        ]
    flags = tf.constant(cached, dtype=tf.bool)

    def load(path, is_pixels):
        def raw():
            data = tf.io.decode_raw(tf.io.read_file(path), tf.uint8)
            return tf.cast(tf.reshape(data, (image_size, image_size, 3)), tf.float32)

        return tf.cond(is_pixels, raw, lambda: decode_and_resize(path, image_size))

    if classes is not None:
        unknown = sorted(set(df["label"].astype(str)) - set(classes))
        if unknown:
            raise BakeoffError(f"labels {unknown} are not among the model's classes {classes}")
        index = {name: i for i, name in enumerate(classes)}
        labels = [index[str(label)] for label in df["label"]]
        ds = tf.data.Dataset.from_tensor_slices((paths, flags, tf.constant(labels, dtype=tf.int32)))
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, flags))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if classes is not None:
        ds = ds.map(lambda p, c, y: (load(p, c), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
