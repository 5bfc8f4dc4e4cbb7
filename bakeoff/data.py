"""The one image reader every model step uses: tf.data over manifest rows.

Why tf.data: decoding and resizing run in parallel threads and overlap with the model through prefetch, and the
dataset streams batch by batch, so a dataset never has to fit in memory. Features, fine-tuning and evaluation all
decode through ``image_dataset`` so they see identical pixels (same decoder, same resize); ``bakeoff.decoded`` keeps
what it decodes as one tensor per dataset and size, so they decode each image once, not once per step and epoch.
"""

from __future__ import annotations

import hashlib
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
    # whole-number pixels: stored as uint8 in the decoded tensor (bakeoff.decoded), they read back bit-identical
    image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
    image.set_shape((image_size, image_size, 3))
    return image


def check_selection(df: pd.DataFrame, image_size: int, batch_size: int) -> None:
    """The one-line errors every reader gives for an empty selection or a non-positive size."""
    if len(df) == 0:
        raise BakeoffError("no images to read (empty manifest selection)")
    if image_size < 1 or batch_size < 1:
        raise BakeoffError(f"image_size and batch_size must be positive, got {image_size}, {batch_size}")


def label_indexes(df: pd.DataFrame, classes: list[str]) -> list[int]:
    """Each row's label as its index in ``classes``; an unknown label is a one-line error."""
    unknown = sorted(set(df["label"].astype(str)) - set(classes))
    if unknown:
        raise BakeoffError(f"labels {unknown} are not among the model's classes {classes}")
    index = {name: i for i, name in enumerate(classes)}
    return [index[str(label)] for label in df["label"]]


def image_dataset(
    df: pd.DataFrame,
    image_size: int,
    batch_size: int = 32,
    classes: list[str] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of float32 images [b, S, S, 3] in 0..255, or (images, label_index) when ``classes`` is given.

    ``df`` holds manifest rows with resolved URIs (``manifest.read_manifest`` resolves them). Row order is kept
    unless ``shuffle`` (seeded, reshuffled each epoch). Every image is decoded here; the model steps read through
    ``bakeoff.decoded.image_batches``, which decodes a dataset once with this function and serves the stored tensor.
    """
    import tensorflow as tf

    check_selection(df, image_size, batch_size)
    paths = local_paths(df)

    def load(path):
        return decode_and_resize(path, image_size)

    if classes is not None:
        labels = label_indexes(df, classes)
        ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, dtype=tf.int32)))
    else:
        ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if classes is not None:
        ds = ds.map(lambda p, y: (load(p), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
