"""Frozen backbone -> one pooled bottleneck vector per image, with a content-addressed cache.

Why a cache: heads are cheap and many, the forward pass is the expensive part. Vectors are stored per image under
a key made of everything that changes them (backbone, weights identity, image size, cut point, preprocessing,
resize method) and looked up by the image's sha256, so a rerun on unchanged data does zero forward passes and an
edited or added image (new sha256) is computed fresh, never served a stale vector. Images are re-hashed when read,
so a file edited in place behind the manifest's back is caught rather than served from the cache.

Cache layout (a folder or s3:// prefix; default ``$BAKEOFF_CACHE_URI`` or ``~/.cache/bakeoff/features``)::

    <cache>/<key>/key.json                what the key stands for (for humans)
    <cache>/<key>/shards/<id>.npz         arrays sha256 (U64), features (float32 [n, d]); no pickle

Each run adds one shard with the vectors it computed; shards are immutable, written atomically, and several runs
may add shards concurrently.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from bakeoff import env, manifest, storage
from bakeoff.contract import FEATURES_JSON, FEATURES_NPZ
from bakeoff.errors import BakeoffError

if TYPE_CHECKING:  # pragma: no cover
    from bakeoff.weights import ResolvedWeights

CACHE_FORMAT = 1  # bump when the stored vectors' meaning changes
PRECISIONS = ("auto", "float32", "bfloat16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_bfloat16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16 or AMX): the only place it is faster."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


def resolve_precision(precision: str, backbone: str) -> str:
    """``auto`` -> bfloat16 where it was measured to pay: a CPU with AVX512-BF16/AMX and a backbone whose registry
    entry says ``bfloat16_faster`` (VGG16 ran 2.4-4.4x faster with head accuracy unchanged within noise; MobileNetV2's
    depthwise convolutions ran slower, so it stays float32; docs/benchmarks.md). float32 everywhere else; with a GPU
    too (its mixed float16 is fine-tuning's business)."""
    from bakeoff import backbones

    if precision not in PRECISIONS:
        raise BakeoffError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    fast = backbones.get_backbone(backbone).bfloat16_faster and cpu_has_bfloat16() and not backbones.gpu_visible()
    return "bfloat16" if fast else "float32"


@contextlib.contextmanager
def keras_policy(precision: str) -> Iterator[None]:
    """Build layers under ``mixed_bfloat16`` (float32 weights, bfloat16 arithmetic) or float32; then restore."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def cache_key(
    backbone: str,
    weights: ResolvedWeights,
    image_size: int,
    cut: str | None,
    precision: str = "float32",
    flip: bool = False,
) -> tuple[str, dict]:
    """Hash of everything that changes a vector, and the readable dict it hashes. ``precision`` enters the key only
    when it is not float32 and ``flip`` (vectors of the horizontally mirrored image) only when set, so the vectors
    cached before either existed keep their key."""
    from bakeoff.backbones import get_backbone
    from bakeoff.data import RESIZE_METHOD

    bb = get_backbone(backbone)
    parts = {
        "format": CACHE_FORMAT,
        "backbone": bb.name,
        "application": bb.application,
        "weights": weights.identity(),
        "image_size": int(image_size),
        "cut": cut,
        "preprocessing": "torch" if weights.preprocessing == "torch" else bb.preprocess_mode,
        "bn_epsilon": weights.bn_epsilon,
        "resize": RESIZE_METHOD,
        "pooling": "avg",
    }
    if precision != "float32":
        parts["precision"] = precision
    if flip:
        parts["flip"] = "horizontal"
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32], parts


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _load_npz(uri: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


class FeatureCache:
    """Per-image vectors under one key; reads every shard once, adds one shard per write.

    A shard that cannot be read or fails its checks (arrays, shapes, finite numbers) is skipped with a warning; its
    images are then misses, recomputed into a new shard, and the bad shard is deleted once that shard is written.
    A cache that cannot be written only warns: the run goes on, the next one recomputes.
    """

    def __init__(self, root: str, key: str, key_parts: dict):
        self.dir = storage.join(root, key)
        self.key = key
        self.key_parts = key_parts
        self.corrupt: list[str] = []  # shards load() skipped; removed after the images are stored again

    def load(self) -> dict[str, np.ndarray]:
        shards = storage.join(self.dir, "shards")
        if not storage.is_s3(shards) and not os.path.isdir(shards):
            return {}
        self.corrupt = []
        read: list[tuple[str, np.ndarray, np.ndarray]] = []
        for item in storage.list_files(shards):
            if not item.relpath.endswith(".npz"):
                continue
            try:
                read.append((item.uri, *_read_shard(item.uri)))
            except Exception as exc:  # any failure to read a hint means: skip it, recompute, replace
                self._skip(item.uri, " ".join(str(exc).split()) or type(exc).__name__)
        dims = [vectors.shape[1] for _, _, vectors in read]
        usual = max(set(dims), key=dims.count) if dims else None
        vectors_by_sha: dict[str, np.ndarray] = {}
        for uri, shas, vectors in read:
            if vectors.shape[1] != usual:
                self._skip(uri, f"vectors of {vectors.shape[1]} values where the other shards have {usual}")
                continue
            vectors_by_sha.update(zip((str(s) for s in shas), vectors))
        return vectors_by_sha

    def _skip(self, uri: str, reason: str) -> None:
        import warnings

        warnings.warn(f"corrupt feature cache shard {uri} ({reason}); recomputing its images", stacklevel=3)
        self.corrupt.append(uri)

    def add(self, shas: list[str], features: np.ndarray) -> str | None:
        """Store vectors as one new shard (then drop the corrupt ones); None, with a warning, when it cannot."""
        if not shas:
            return None
        shard_id = hashlib.sha256("\n".join(sorted(shas)).encode()).hexdigest()[:24]
        uri = storage.join(self.dir, "shards", f"{shard_id}.npz")
        try:
            storage.write_bytes(
                uri, _npz_bytes(sha256=np.asarray(shas, dtype="<U64"), features=np.asarray(features, dtype=np.float32))
            )
            key_uri = storage.join(self.dir, "key.json")
            if not storage.exists(key_uri):
                storage.write_json(key_uri, self.key_parts)
        except BakeoffError as exc:
            import warnings

            warnings.warn(f"feature cache not updated: {exc}", stacklevel=2)
            return None
        self.drop_corrupt(keep=uri)
        return uri

    def drop_corrupt(self, keep: str | None = None) -> None:
        """Delete the shards load() found corrupt (a replacement of the same name, ``keep``, stays)."""
        for uri in self.corrupt:
            if uri == keep:
                continue
            try:
                storage.remove(uri)
            except BakeoffError as exc:
                import warnings

                warnings.warn(f"corrupt feature cache shard left in place: {exc}", stacklevel=2)
        self.corrupt = []


def _read_shard(uri: str) -> tuple[np.ndarray, np.ndarray]:
    """(sha256s, vectors) of one shard, or ValueError saying what is wrong with it."""
    arrays = _load_npz(uri)
    missing = {"sha256", "features"} - set(arrays)
    if missing:
        raise ValueError(f"lacks arrays {sorted(missing)}")
    shas, vectors = arrays["sha256"], arrays["features"]
    if vectors.ndim != 2 or shas.ndim != 1 or len(shas) != len(vectors):
        raise ValueError(f"{len(shas)} sha256 values for vectors of shape {list(vectors.shape)}")
    if vectors.dtype != np.float32 or not np.isfinite(vectors).all():
        raise ValueError("vectors are not finite float32 numbers")
    return shas, vectors


def verify_local_hashes(df) -> None:
    """Re-hash local image files: an image edited after ingest must not be served its old cached vector."""
    for uri, sha in zip(df["uri"], df["sha256"]):
        if storage.is_s3(uri):
            continue  # bakeoff.data verifies s3 images when it fetches them
        digest = hashlib.sha256()
        try:
            with open(uri, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise BakeoffError(f"cannot read image {uri}: {exc.strerror}") from exc
        if digest.hexdigest() != sha:
            raise BakeoffError(
                f"{uri} changed since ingest (sha256 differs from the manifest); re-run `bakeoff ingest`"
            )


_INFER: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_function(model):
    """One traced forward function per model (re-tracing per call would cost seconds); XLA stays off: slower on CPU.
    Vectors come out float32 whatever the model computes in (each output of a model with taps)."""
    import tensorflow as tf

    def forward(x):
        result = model(tf.cast(x, tf.float32), training=False)  # decoded tensors arrive as uint8
        if isinstance(result, list | tuple):
            return [tf.cast(r, tf.float32) for r in result]
        return tf.cast(result, tf.float32)

    if model not in _INFER:
        _INFER[model] = tf.function(forward, reduce_retracing=True, jit_compile=False)
    return _INFER[model]


def compute_vectors(model, batches, total: int, description: str = "features") -> np.ndarray | list[np.ndarray]:
    """Run the frozen extractor over a dataset of image batches, with a rich progress bar that shows images/s.

    ``batches`` is what ``bakeoff.decoded.inference_batches`` gives: uint8 batches of the dataset's decoded tensor
    (decoding left the loop, or overlaps it while the tensor is written), or the files decoded in the loop when
    that cache is off. A model with several
    outputs (taps) gives a list of arrays, one per output.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    infer = inference_function(model)
    out = []
    start = time.perf_counter()
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[ips]:>7.1f} img/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True, disable=not env.progress_enabled()) as progress:
        task = progress.add_task(description, total=total, ips=0.0)
        done = 0
        for batch in batches:
            result = infer(batch)
            out.append([r.numpy() for r in result] if isinstance(result, list | tuple) else result.numpy())
            done += int(batch.shape[0])
            progress.update(task, advance=int(batch.shape[0]), ips=done / max(time.perf_counter() - start, 1e-9))
    if out and isinstance(out[0], list):
        return [np.concatenate(parts).astype(np.float32) for parts in zip(*out)]
    return np.concatenate(out).astype(np.float32)


def tap_key(name: str) -> str:
    """The features.npz array of one tap's pooled vectors (``features`` holds the top's, or the cut's)."""
    return f"tap_{name}"


def flip_key(array: str) -> str:
    """The features.npz array of the same vectors computed on horizontally flipped images (``flip_features``)."""
    return f"flip_{array}"


def _flipped(batches):
    """The same batches mirrored left-right (width is axis 2 of [b, S, S, 3]): no second decode, no new pixels.
    ``inference_batches`` gives uint8 arrays (a tf.data dataset only with the decoded cache off)."""
    import tensorflow as tf

    if isinstance(batches, tf.data.Dataset):
        return batches.map(lambda x: tf.reverse(x, axis=[2]))
    return (np.ascontiguousarray(batch[:, :, ::-1]) for batch in batches)


def _cached_tables(
    df, caches: list[FeatureCache], extractor, size: int, batch_size: int, description: str, flip: bool
) -> tuple[list[np.ndarray], int, int, float]:
    """One table per cache (rows in manifest order): cached vectors, the misses computed in one forward pass and
    stored as a new shard. Returns (tables, manifest rows missed, images computed, forward seconds).
    ``extractor()`` builds the model only when something is missing."""
    from bakeoff.decoded import inference_batches

    cached = [cache.load() for cache in caches]
    shas = [str(s) for s in df["sha256"]]
    miss_mask = np.array([any(s not in found for found in cached) for s in shas])
    misses = df[miss_mask].drop_duplicates("sha256")
    computed: list[dict[str, np.ndarray]] = [{} for _ in caches]
    forward_seconds = 0.0
    if len(misses):
        model = extractor()
        t0 = time.perf_counter()
        batches = inference_batches(df, misses, size, batch_size)  # decodes the dataset once per size, if not yet
        vectors = compute_vectors(model, _flipped(batches) if flip else batches, len(misses), description)
        forward_seconds = time.perf_counter() - t0
        miss_shas = [str(s) for s in misses["sha256"]]
        for cache, found, part in zip(caches, computed, vectors if len(caches) > 1 else [vectors]):
            found.update(zip(miss_shas, part))
            cache.add(miss_shas, part)
    else:
        for cache in caches:
            cache.drop_corrupt()
    tables = [
        np.stack([fresh[s] if s in fresh else old[s] for s in shas]).astype(np.float32)
        for fresh, old in zip(computed, cached)
    ]
    return tables, int(miss_mask.sum()), int(len(misses)), forward_seconds


def size_key(size: int, array: str) -> str:
    """The features.npz array of the same vectors at an extra input size (``features`` at 128 px: ``s128_features``)."""
    return f"s{int(size)}_{array}"


def array_key(meta: dict, cut: str | None, size: int | None = None, flipped: bool = False) -> str:
    """The features.npz array of one feature set, given the folder's features.json ``meta``: the top (or the
    folder's own cut) is ``features``, another layer its ``tap_<layer>``; mirrored images ``flip_``; an extra input
    size ``s<size>_``. The one place that spells the naming, for the head search and the insight step."""
    name = "features" if not cut or cut == meta.get("cut") else tap_key(cut)
    name = flip_key(name) if flipped else name
    return size_key(size, name) if size and size != meta.get("image_size") else name


def _arrays_at(df, bb, resolved, size: int, cut, tap_names, precision: str, flip: bool, batch_size: int, root: str):
    """Every array of one input size ({name: table}, features/tap_*/flip_*) and its cache numbers: one forward pass
    per orientation over the misses, one extractor built at most."""
    from bakeoff.backbones import build_feature_extractor

    model = []  # built once, on the first miss, shared by the plain and the flipped pass

    def extractor():
        if not model:
            with keras_policy(precision):
                model.append(build_feature_extractor(bb, resolved, size, cut, tap_names))
        return model[0]

    names = ["features", *(tap_key(name) for name in tap_names)]
    arrays: dict[str, np.ndarray] = {}
    stats: dict = {"forward_images": 0, "forward_seconds": 0.0}
    for mirrored in (False, True) if flip else (False,):
        caches = [
            FeatureCache(root, *cache_key(bb.name, resolved, size, layer, precision, flip=mirrored))
            for layer in (cut, *tap_names)
        ]
        label = f"{bb.name} features @{size}{' (flipped)' if mirrored else ''}"
        tables, missed_rows, misses, seconds = _cached_tables(df, caches, extractor, size, batch_size, label, mirrored)
        arrays.update({flip_key(n) if mirrored else n: t for n, t in zip(names, tables)})
        stats["forward_images"] += misses
        stats["forward_seconds"] += seconds
        if not mirrored:
            stats.update(missed_rows=missed_rows, misses=misses, cache=caches[0])
    return arrays, stats


def extract_features(
    dataset_dir: str,
    out_dir: str,
    backbone: str,
    weights: str = "imagenet",
    *,
    image_size: int | None = None,
    cut: str | None = None,
    batch_size: int = 32,
    cache_uri: str | None = None,
    weights_sha256: str | None = None,
    taps: bool = True,
    precision: str = "auto",
    flip: bool = False,
    extra_sizes: tuple[int, ...] | list[int] = (),
) -> dict:
    """Pooled vectors for every manifest row -> ``out_dir/features.npz`` + ``features.json`` (returned).

    With ``taps`` the registry's intermediate layers (``Backbone.taps``) are pooled in the same forward pass and
    stored as ``tap_<layer>`` arrays beside ``features``; each output has its own cache key (the cut is in it).
    With ``flip`` a second pass over the same decoded pixels mirrored left-right adds ``flip_<array>`` for each
    array (cached under keys that say flip): the head search's flip augmentation and flip test-time averaging.
    Each of ``extra_sizes`` (input sizes besides ``image_size``) adds every array again as ``s<size>_<array>``,
    from the dataset's decoded tensor at that size, so the head search can choose the input size on val.
    """
    from bakeoff.backbones import get_backbone
    from bakeoff.weights import resolve_weights

    started = time.perf_counter()
    bb = get_backbone(backbone)
    size = int(image_size or bb.default_size)
    if size < bb.min_size:
        raise BakeoffError(f"{bb.name} needs --image-size >= {bb.min_size}, got {size}")
    cut = cut or bb.cut_layer
    precision = resolve_precision(precision, bb.name)
    resolved = resolve_weights(bb.name, weights, sha256=weights_sha256)
    df = manifest.read_manifest(dataset_dir)
    if len(df) == 0:
        raise BakeoffError(f"manifest in {dataset_dir} has no images")
    verify_local_hashes(df)
    tap_names = tuple(t for t in bb.taps if t != cut) if taps else ()
    root = cache_uri or env.feature_cache_uri()
    sizes = [size, *sorted({int(s) for s in extra_sizes} - {size})]
    for extra in sizes[1:]:
        if extra < bb.min_size:
            raise BakeoffError(f"{bb.name} needs extra image sizes >= {bb.min_size}, got {extra}")
    found = {s: _arrays_at(df, bb, resolved, s, cut, tap_names, precision, flip, batch_size, root) for s in sizes}
    arrays, stats = found[size]
    for extra in sizes[1:]:
        arrays.update({size_key(extra, name): table for name, table in found[extra][0].items()})
    forward_images = sum(st["forward_images"] for _, st in found.values())
    forward_seconds = sum(st["forward_seconds"] for _, st in found.values())
    shas = [str(s) for s in df["sha256"]]
    storage.write_bytes(
        storage.join(out_dir, FEATURES_NPZ),
        _npz_bytes(
            sha256=np.asarray(shas, dtype="<U64"),
            split=np.asarray(df["split"].astype(str).tolist(), dtype="<U5"),
            label=np.asarray(df["label"].astype(str).tolist(), dtype=str),
            **arrays,
        ),
    )
    elapsed = time.perf_counter() - started
    info = {
        "backbone": bb.name,
        "weights": {**resolved.to_json(), "preprocessing": resolved.preprocessing, "bn_epsilon": resolved.bn_epsilon},
        "image_size": size,
        "cut": cut,
        "precision": precision,
        "flip": bool(flip),
        "extra_image_sizes": sizes[1:],
        "feature_dim": int(arrays["features"].shape[1]),
        "taps": {name: int(arrays[tap_key(name)].shape[1]) for name in tap_names},
        "n_images": len(df),
        "images_per_s": round(forward_images / forward_seconds, 2) if forward_seconds else round(len(df) / elapsed, 2),
        "cache_hits": int(len(df) - stats["missed_rows"]),
        "cache_misses": stats["misses"],
        "forward_images": forward_images,
        "seconds": round(elapsed, 3),
        "dataset_hash": manifest.dataset_hash(df),
        "classes": manifest.class_names(df),
        "cache_key": stats["cache"].key,
        "cache_uri": stats["cache"].dir,
    }
    storage.write_json(storage.join(out_dir, FEATURES_JSON), info)
    return info


def load_features(out_dir: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read a features folder back (arrays, features.json) without pickle; one-line errors when incomplete."""
    npz_uri = storage.join(out_dir, FEATURES_NPZ)
    if not storage.exists(npz_uri):
        raise BakeoffError(f"missing {npz_uri}; run `bakeoff features DATASET --out {out_dir}` first")
    try:
        arrays = _load_npz(npz_uri)
    except BakeoffError:  # unreadable (permissions, S3): already one line naming the file
        raise
    except Exception as exc:  # BadZipFile, EOFError, zlib/CRC errors, ValueError: a truncated or damaged file
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise BakeoffError(f"{npz_uri} is damaged ({detail}); re-run `bakeoff features` to write it again") from exc
    missing = {"features", "split", "label"} - set(arrays)
    if missing:
        raise BakeoffError(f"{npz_uri} lacks arrays {sorted(missing)}; re-run `bakeoff features`")
    lengths = {name: len(arrays[name]) for name in ("features", "split", "label")}
    if len(set(lengths.values())) > 1 or arrays["features"].ndim != 2:
        raise BakeoffError(
            f"{npz_uri} is damaged (array lengths {lengths}, features shape {arrays['features'].shape}); "
            "re-run `bakeoff features` to write it again"
        )
    info = storage.read_json(storage.join(out_dir, FEATURES_JSON))
    return arrays, info
