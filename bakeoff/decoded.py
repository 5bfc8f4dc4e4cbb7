"""Decode once, share everywhere: one contiguous uint8 tensor per (dataset content, input size, resize method).

Why: features for every backbone at a size, every fine-tuning epoch, evaluation and the gate's re-scoring of the
champion all need the same decoded, resized pixels. Decoding JPEGs again for each of them cost more than the model
on small inputs, and a per-image pixel file (one small file, one ``tf.cond`` per element, Python writes in the hot
loop) was slower still. So the images are decoded once, by the one reader (``bakeoff.data.image_dataset``, same
decoder, same resize, whole-number pixels, so uint8 holds them exactly), into one ``.npy`` file that every consumer
reads in bounded batches.

Layout (a local folder; default ``$XDG_CACHE_HOME/bakeoff/decoded``, ``$BAKEOFF_DECODED_CACHE``, ``off`` disables)::

    <dir>/<key>.npy     uint8 [n, S, S, 3], row i = the image whose sha256 is ids[i]
    <dir>/<key>.json    format, image size, resize method, shape, ids (row order), bytes, the file's sha256

``key`` hashes the set of image sha256s (the dataset's content: labels and splits do not change pixels), the size
and the resize method, so a re-ingest with the same images reuses the tensor and a changed image makes a new one.
s3:// datasets are fetched into the local image cache and decoded here once. The tensor is written under a temp
name and renamed, then the sidecar (the commit mark). A tensor whose size, shape, ids or sha256 disagree with its
sidecar is warned about and rebuilt; a folder that cannot be written costs speed (decoding from the files, one
warning), not the run.

Reads: the file is opened with ``np.load(mmap_mode="r")`` (header, shape, dtype checked) and batches are copied out
with ``os.preadv`` rather than through the mapping, so the process's resident memory stays flat in dataset size
(the OS page cache still keeps a hot tensor in RAM, outside the process). Forward-only readers get plain uint8 batches
(``inference_batches``, one read ahead; a cold run streams them from the decoder while the tensor is written);
``model.fit``/``predict`` get a tf.data dataset (``image_batches``) that prefetches two.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import warnings
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bakeoff import env, storage
from bakeoff.errors import BakeoffError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import tensorflow as tf

FORMAT = 1  # bump when the stored pixels' meaning changes
_BUILD_BATCH = 64


def tensor_key(shas: Iterable[str], image_size: int) -> str:
    """Content address of one tensor: the set of images, the input size and the resize method."""
    from bakeoff.data import RESIZE_METHOD

    parts = {"format": FORMAT, "images": sorted(set(shas)), "image_size": int(image_size), "resize": RESIZE_METHOD}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class DecodedImages:
    """A verified tensor on disk: where it is, which image each row holds, where its rows start in the file."""

    path: Path
    ids: tuple[str, ...]
    image_size: int
    offset: int

    @property
    def row_bytes(self) -> int:
        return self.image_size * self.image_size * 3

    def array(self) -> np.memmap:
        """The whole tensor, memory-mapped read-only (random access without reading the file)."""
        return np.load(self.path, mmap_mode="r")

    def rows(self, shas: Iterable[str]) -> np.ndarray:
        """Row numbers of these images (manifest rows may repeat an image; each gets its row)."""
        where = {sha: i for i, sha in enumerate(self.ids)}
        try:
            return np.fromiter((where[str(s)] for s in shas), dtype=np.int64)
        except KeyError as exc:
            raise BakeoffError(f"image {exc.args[0]} is not in the decoded tensor {self.path}") from None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 [k, S, S, 3] for these rows; one read per run of consecutive rows, no mapping kept."""
        size = self.image_size
        out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            start = 0
            while start < len(rows):
                end = start + 1
                while end < len(rows) and rows[end] == rows[end - 1] + 1:
                    end += 1
                want = (end - start) * self.row_bytes
                got = os.preadv(
                    fd, [memoryview(flat[start:end]).cast("B")], self.offset + int(rows[start]) * self.row_bytes
                )
                if got != want:
                    raise BakeoffError(f"{self.path} is shorter than its sidecar says; delete it to decode again")
                start = end
        finally:
            os.close(fd)
        return out

    def batches(self, df: pd.DataFrame, batch_size: int) -> Iterator[np.ndarray]:
        """uint8 batches of manifest rows ``df`` in order. The next batch is read in a thread while the caller
        computes on this one (``preadv`` releases the GIL), so at most two batches are in memory."""
        rows = self.rows(df["sha256"])
        starts = range(0, len(rows), batch_size)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bakeoff-decoded") as pool:
            ahead = pool.submit(self.read, rows[:batch_size])
            for start in starts:
                batch = ahead.result()
                following = rows[start + batch_size : start + 2 * batch_size]
                if len(following):
                    ahead = pool.submit(self.read, following)
                yield batch

    def dataset(
        self,
        df: pd.DataFrame,
        batch_size: int,
        classes: list[str] | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> tf.data.Dataset:
        """Batches of float32 [b, S, S, 3] (or (images, label_index)) for manifest rows ``df``, as
        ``bakeoff.data.image_dataset`` yields them; ``shuffle`` draws a new seeded order every epoch."""
        import tensorflow as tf

        from bakeoff.data import check_selection, label_indexes

        check_selection(df, self.image_size, batch_size)
        labels = None if classes is None else np.asarray(label_indexes(df, classes), dtype=np.int32)
        rows = self.rows(df["sha256"])
        epochs = itertools.count()

        def batches() -> Iterator:
            order = np.arange(len(rows))
            if shuffle:
                order = np.random.default_rng([seed, next(epochs)]).permutation(len(rows))
            for start in range(0, len(order), batch_size):
                pick = order[start : start + batch_size]
                images = self.read(rows[pick])
                yield images if labels is None else (images, labels[pick])

        image_spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.uint8)
        if labels is None:
            ds = tf.data.Dataset.from_generator(batches, output_signature=image_spec)
            ds = ds.map(lambda x: tf.cast(x, tf.float32))
        else:
            spec = (image_spec, tf.TensorSpec((None,), tf.int32))
            ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
            ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
        n_batches = -(-len(rows) // batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(2)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _verify(path: Path, ids: set[str], image_size: int) -> DecodedImages:
    """The tensor at ``path`` if it matches its sidecar and holds exactly ``ids``; else ValueError saying why."""
    meta = json.loads(_sidecar(path).read_text())
    stored = tuple(str(s) for s in meta["ids"])
    shape = (len(stored), image_size, image_size, 3)
    if meta.get("format") != FORMAT or set(stored) != ids or tuple(meta["shape"]) != shape:
        raise ValueError("its sidecar describes other images or another size")
    actual = path.stat().st_size
    if actual != meta["bytes"]:
        raise ValueError(f"{actual} bytes, expected {meta['bytes']}")
    array = np.load(path, mmap_mode="r")
    if array.shape != shape or array.dtype != np.uint8:
        raise ValueError(f"holds {array.dtype} {list(array.shape)}, expected uint8 {list(shape)}")
    if _file_sha256(path) != meta["sha256"]:
        raise ValueError("sha256 differs from its sidecar")
    return DecodedImages(path, stored, image_size, int(array.offset))


def _decode_into(
    path: Path, df: pd.DataFrame, image_size: int, batch_size: int
) -> Generator[np.ndarray, None, DecodedImages | None]:
    """Decode ``df``'s images (one row each) through the one reader, yielding each uint8 batch and storing it.

    The consumer's forward pass overlaps the decoding (tf.data decodes ahead in its own threads), so the first
    reader of a dataset at a size does not wait for a separate decoding pass. The tensor is committed (renamed,
    then the sidecar written) only after the last batch, and returned; a consumer that stops early leaves nothing
    behind. A folder that cannot be written costs one warning, and the batches keep coming.
    """
    from bakeoff.data import RESIZE_METHOD, image_dataset

    ids = tuple(str(s) for s in df["sha256"])
    shape = (len(ids), image_size, image_size, 3)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    )
    digest = hashlib.sha256(header.getvalue())
    import tensorflow as tf

    # the cast to uint8 runs in tf.data's threads (exact: the reader yields whole numbers in 0..255)
    batches = iter(image_dataset(df, image_size, batch_size=batch_size).map(lambda x: tf.cast(x, tf.uint8)))
    written = 0
    try:
        # no fsync (durable=False): a cache entry, and every open re-checks it against its sidecar's sha256
        with storage.atomic_path(path, durable=False) as tmp, open(tmp, "wb") as handle:
            handle.write(header.getvalue())
            for batch in batches:
                block = batch.numpy()
                yield block
                handle.write(memoryview(block).cast("B"))
                digest.update(block)
                written += len(block)
            if written != len(ids):
                raise BakeoffError(f"decoded {written} images for {len(ids)} manifest rows")
        meta = {
            "format": FORMAT,
            "image_size": image_size,
            "resize": RESIZE_METHOD,
            "shape": list(shape),
            "bytes": path.stat().st_size,
            "sha256": digest.hexdigest(),
            "ids": list(ids),
        }
        storage.write_json(_sidecar(path), meta)
        return DecodedImages(path, ids, image_size, len(header.getvalue()))
    except BakeoffError as exc:
        if not str(exc).startswith("cannot write"):
            raise  # a bad image or a changed s3 object is the data's problem, not the cache's
        warnings.warn(f"decoded-image cache off for this run: {exc}", stacklevel=2)
        for batch in batches:
            yield batch.numpy()
        return None


def _existing(path: Path, ids: set[str], image_size: int) -> DecodedImages | None:
    """The stored tensor at ``path`` if it passes every check; None (with a warning if it was damaged) if not."""
    if not (_sidecar(path).exists() or path.exists()):
        return None
    try:
        return _verify(path, ids, image_size)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a hint that fails a check: rebuild it
        reason = " ".join(str(exc).split()) or type(exc).__name__
        warnings.warn(f"corrupt decoded tensor {path} ({reason}); decoding the images again", stacklevel=3)
        return None


def _tensor_path(unique: pd.DataFrame, image_size: int, folder: str) -> tuple[Path, set[str]]:
    ids = {str(s) for s in unique["sha256"]}
    return Path(folder) / f"{tensor_key(ids, image_size)}.npy", ids


def decoded_images(df: pd.DataFrame, image_size: int, folder: str | None = None) -> DecodedImages | None:
    """The tensor of every image in ``df`` (a whole manifest: one tensor serves all its splits) at this size,
    built on first use; None when the cache is off or cannot be written (callers then decode from the files)."""
    folder = folder or env.decoded_cache_dir()
    if not folder:
        return None
    unique = df.drop_duplicates("sha256")
    path, ids = _tensor_path(unique, image_size, folder)
    found = _existing(path, ids, image_size)
    if found is not None:
        return found
    build = _decode_into(path, unique, image_size, _BUILD_BATCH)
    while True:
        try:
            next(build)
        except StopIteration as done:
            return done.value


def image_batches(
    dataset: pd.DataFrame,
    rows: pd.DataFrame,
    image_size: int,
    batch_size: int = 32,
    classes: list[str] | None = None,
    shuffle: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """What every model step reads: ``rows`` (a selection of the manifest ``dataset``) from the dataset's decoded
    tensor, or decoded from the files when the cache is off. Same pixels either way (a test)."""
    from bakeoff.data import check_selection, image_dataset

    check_selection(rows, image_size, batch_size)
    tensor = decoded_images(dataset, image_size)
    if tensor is None:
        return image_dataset(rows, image_size, batch_size, classes=classes, shuffle=shuffle, seed=seed)
    return tensor.dataset(rows, batch_size, classes=classes, shuffle=shuffle, seed=seed)


def inference_batches(
    dataset: pd.DataFrame, rows: pd.DataFrame, image_size: int, batch_size: int = 32
) -> Iterator[np.ndarray] | tf.data.Dataset:
    """What a forward-only pass reads (features, the frozen-feature paths): uint8 [b, S, S, 3] batches of ``rows``
    in order, cast to float inside the traced forward function.

    No tf.data here: a batch is one ``preadv`` of a few MB (a fraction of a millisecond), while a tf.data
    generator costs milliseconds per batch and a thread that competes with the model for the cores. When the
    tensor is not there yet and ``rows`` are the dataset's images in order (a cold feature run), the batches come
    straight from the decoder while the tensor is written, so the first backbone at a size overlaps decoding
    with its forward pass. With the cache off, the files are decoded in the loop (float32 batches).
    """
    from bakeoff.data import check_selection, image_dataset

    check_selection(rows, image_size, batch_size)
    folder = env.decoded_cache_dir()
    if not folder:
        return image_dataset(rows, image_size, batch_size)
    unique = dataset.drop_duplicates("sha256")
    path, ids = _tensor_path(unique, image_size, folder)
    tensor = _existing(path, ids, image_size)
    if tensor is None and rows["sha256"].astype(str).tolist() == unique["sha256"].astype(str).tolist():
        return _decode_into(path, unique, image_size, batch_size)
    tensor = tensor or decoded_images(dataset, image_size, folder)
    if tensor is None:
        return image_dataset(rows, image_size, batch_size)
    return tensor.batches(rows, batch_size)
