"""Feature-extraction benchmarks, measured side by side in one run, written to docs/benchmarks.md.

For each (backbone, input size), on the same JPEG files:
  forward   the backbone's forward pass alone on in-memory tensors (the ceiling)
  pipeline  bakeoff's whole path, image files on disk -> features (tf.data decode/resize + the same forward)
  keras_gen the notebooks' way: ImageDataGenerator.flow_from_directory + model.predict
  cold/warm `extract_features` end to end with an empty cache, then the rerun served from the cache
Each round runs one pass of every method back to back; ratios are medians of per-round ratios (a paired design:
the shared host's load swings hit both sides of a ratio alike).

    python -m benchmarks.run            # full: 256 images x 5 rounds, MobileNetV2 @128/@224, VGG16-HED @64
    python -m benchmarks.run --quick    # 256 images x 3 rounds, MobileNetV2 @128 only (a few minutes)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BAKEOFF_NO_PROGRESS", "1")

FULL_CASES = [("mobilenet_v2", "imagenet", 128), ("mobilenet_v2", "imagenet", 224), ("vgg16", "hed", 64)]
QUICK_CASES = [("mobilenet_v2", "imagenet", 128)]


def _forward(model, images: np.ndarray, batch_size: int) -> float:
    from bakeoff.features import inference_function

    infer = inference_function(model)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        infer(images[i : i + batch_size]).numpy()
    return len(images) / (time.perf_counter() - start)


def _pipeline(model, df, size: int, batch_size: int, pixel_cache: str | None = None) -> float:
    from bakeoff.features import compute_vectors

    start = time.perf_counter()
    compute_vectors(model, df, size, batch_size, pixel_cache=pixel_cache)
    return len(df) / (time.perf_counter() - start)


def _keras_generator(model, folder: Path, size: int, batch_size: int, n: int) -> float:
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    start = time.perf_counter()
    gen = ImageDataGenerator().flow_from_directory(
        str(folder), target_size=(size, size), batch_size=batch_size, class_mode=None, shuffle=False
    )
    out = model.predict(gen, verbose=0)
    assert len(out) == n
    return n / (time.perf_counter() - start)


def _in_memory(df, size: int) -> np.ndarray:
    """Decode once with the same reader, so the forward-only pass sees identical pixels."""
    from bakeoff.data import image_dataset

    return np.concatenate([b.numpy() for b in image_dataset(df, size, batch_size=64)])


def bench_case(dataset: Path, backbone: str, weights: str, size: int, repeats: int, batch_size: int) -> dict:
    import contextlib
    import io

    from bakeoff import manifest
    from bakeoff.backbones import build_feature_extractor
    from bakeoff.features import extract_features
    from bakeoff.weights import resolve_weights

    df = manifest.read_manifest(dataset)
    model = build_feature_extractor(backbone, resolve_weights(backbone, weights), size)
    images = _in_memory(df, size)
    # warm-up: trace the forward function for full and partial batches, start tf.data's thread pools
    _forward(model, images[: batch_size + 1], batch_size)
    _pipeline(model, df.iloc[: batch_size + 1], size, batch_size)
    model.predict(images[:batch_size], verbose=0)
    pixels = tempfile.mkdtemp(prefix="bench-pixels-")
    _pipeline(model, df, size, batch_size, pixel_cache=pixels)  # fills the pixel cache (as an earlier backbone would)
    runs: dict[str, list[float]] = {"forward": [], "pipeline": [], "pipeline_pixels": [], "keras_gen": []}
    measure = {
        "forward": lambda: _forward(model, images, batch_size),
        "pipeline": lambda: _pipeline(model, df, size, batch_size),
        "pipeline_pixels": lambda: _pipeline(model, df, size, batch_size, pixels),
        "keras_gen": lambda: _keras_generator(model, dataset / "images", size, batch_size, len(df)),
    }
    order = list(measure)
    for r in range(repeats):  # one pass of each, back to back, in a rotating order: a paired design
        for name in order[r % len(order) :] + order[: r % len(order)]:
            with contextlib.redirect_stdout(io.StringIO()):
                runs[name].append(measure[name]())
    best = {name: float(np.median(values)) for name, values in runs.items()}
    for name in ("pipeline", "pipeline_pixels", "keras_gen"):  # median of the per-round ratios
        best[f"{name}_ratio"] = float(np.median(np.array(runs[name]) / np.array(runs["forward"])))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BAKEOFF_PIXEL_CACHE"] = f"{tmp}/pixels"  # cold means cold: no decoded pixels either
        t0 = time.perf_counter()
        cold = extract_features(
            str(dataset),
            f"{tmp}/a",
            backbone,
            weights,
            image_size=size,
            batch_size=batch_size,
            cache_uri=f"{tmp}/cache",
        )
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = extract_features(
            str(dataset),
            f"{tmp}/b",
            backbone,
            weights,
            image_size=size,
            batch_size=batch_size,
            cache_uri=f"{tmp}/cache",
        )
        warm_s = time.perf_counter() - t0
    assert warm["cache_misses"] == 0 and cold["cache_misses"] == len(df)
    return {
        "backbone": backbone,
        "weights": weights,
        "size": size,
        "n": len(df),
        **best,
        "cold_s": cold_s,
        "warm_s": warm_s,
    }


def render(results: list[dict], args, elapsed: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks: feature extraction",
        "",
        f"Measured {now} with `python -m benchmarks.run{' --quick' if args.quick else ''}` "
        f"({elapsed:.0f} s) on {platform.machine()}, {os.cpu_count()} cores, TensorFlow CPU, batch "
        f"{args.batch_size}, {args.repeats} rounds. Each round runs one pass of every method back to back (rotating "
        "order); throughputs are medians over rounds and each ratio is the median of the per-round ratios, so "
        "load from other jobs on this shared 2-core host hits both sides of a ratio alike. Absolute numbers "
        "still swing 1.2-2.6x between runs.",
        "",
        f"Data: {results[0]['n']} distinct JPEG crops (256x256) of real photos, read from disk.",
        "",
        "| backbone | weights | size | forward only (img/s) | files->features, decoding (img/s) | ratio | "
        "files->features, pixels cached (img/s) | ratio | ImageDataGenerator + predict (img/s) | "
        "bakeoff / generator | cold extract (s) | cached rerun (s) | rerun speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['backbone']} | {r['weights']} | {r['size']} | {r['forward']:.0f} | {r['pipeline']:.0f} | "
            f"{r['pipeline_ratio']:.2f} | {r['pipeline_pixels']:.0f} | "
            f"{r['pipeline_pixels_ratio']:.2f} | {r['keras_gen']:.0f} | {r['pipeline_ratio'] / r['keras_gen_ratio']:.2f} | "
            f"{r['cold_s']:.1f} | {r['warm_s']:.2f} | {r['cold_s'] / r['warm_s']:.0f}x |"
        )
    lines += [
        "",
        "- **forward only**: the frozen extractor (preprocessing inside) on tensors already in memory: the ceiling.",
        "- **bakeoff files->features**: `bakeoff.features.compute_vectors`, the path `bakeoff features` runs: "
        "tf.data parallel decode + resize + batch + prefetch feeding the same traced forward function. "
        "**ratio** = files->features / forward only (target >= 0.9: input pipeline hidden behind the model). "
        "*decoding*: every JPEG decoded and resized in the loop (the first backbone at a size); *pixels cached*: "
        "the decoded, resized pixels that the first backbone left in the pixel cache (`$BAKEOFF_PIXEL_CACHE`) are "
        "read instead: what every further backbone at the same size gets.",
        "- **ImageDataGenerator + predict**: the notebooks' way, `keras.src.legacy.preprocessing.image."
        "ImageDataGenerator().flow_from_directory(...)` + `model.predict`, same files, same model.",
        "- **bakeoff / generator**: files->features (decoding) against the notebooks' way, as the ratio of the two "
        "paired ratios.",
        "- **cold extract / cached rerun**: `extract_features` end to end (manifest read, image re-hashing, model "
        "build, forward, writing features.npz) with an empty cache, then again on unchanged data: the rerun does no "
        "forward pass and never builds the model.",
        "",
        "## Reading",
        "",
    ]
    for r in results:
        verdict = "meets" if r["pipeline_ratio"] >= 0.9 else "misses"
        cached = "meets" if r["pipeline_pixels_ratio"] >= 0.9 else "misses"
        lines.append(
            f"- {r['backbone']} @{r['size']}: decoding in the loop {verdict} the 0.9 target "
            f"({r['pipeline_ratio']:.2f}); with pixels cached it {cached} it ({r['pipeline_pixels_ratio']:.2f})."
        )
    lines += [
        "- On 2 cores there is no spare core: every cycle spent decoding is taken from the model, so the input "
        "pipeline can only be hidden when the forward pass is expensive per image (larger inputs, VGG) or when "
        "decoding leaves the loop (the pixel cache). Small, cheap forward passes (MobileNetV2 @128) show the "
        "input cost most.",
        "- The cached rerun is the big win for a bake-off: unchanged data costs manifest reading and image "
        "re-hashing only.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="256 images, one case")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"))
    parser.add_argument(
        "--mirror", default=None, help="weights mirror (default $BAKEOFF_WEIGHTS_URI, else a temp import)"
    )
    args = parser.parse_args(argv)
    args.images = args.images or 256
    args.repeats = args.repeats or (3 if args.quick else 5)
    cases = QUICK_CASES if args.quick else FULL_CASES

    from bakeoff import storage, weights, weights_import
    from benchmarks.images import make_jpeg_dataset

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        mirror = args.mirror or os.environ.get(weights.MIRROR_ENV)
        if not mirror or not storage.exists(storage.join(mirror, weights.IMPORTED_MARKER)):
            mirror = f"{tmp}/mirror"
            for name in ("mobilenet_v2", "vgg16_hed"):
                weights_import.run(name, mirror)
        os.environ[weights.MIRROR_ENV] = mirror
        dataset = make_jpeg_dataset(Path(tmp, "dataset"), args.images)
        results = []
        for backbone, spec, size in cases:
            r = bench_case(dataset, backbone, spec, size, args.repeats, args.batch_size)
            print(
                f"{backbone}@{size}: forward {r['forward']:.0f} img/s, pipeline {r['pipeline']:.0f} "
                f"({r['pipeline_ratio']:.2f}), pixels cached {r['pipeline_pixels']:.0f} "
                f"({r['pipeline_pixels_ratio']:.2f}), generator ({r['keras_gen_ratio']:.2f}) {r['keras_gen']:.0f}, "
                f"cold {r['cold_s']:.1f}s, cached {r['warm_s']:.2f}s",
                flush=True,
            )
            results.append(r)
    from bakeoff.storage import write_bytes

    write_bytes(args.out, render(results, args, time.perf_counter() - started).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
