"""Benchmarks of the input path, measured side by side in one run, written to docs/benchmarks.md.

For each (backbone, input size), on the same JPEG files:
  forward      the backbone's forward pass alone on in-memory tensors (the ceiling)
  first        files -> features for the 1st backbone at a size: the dataset is decoded into its tensor
               (bakeoff.decoded), then the forward pass reads the tensor
  later        files -> features for the 2nd and later backbone at that size: the tensor is there already
  decoding     the files decoded in the loop (BAKEOFF_DECODED_CACHE=off: the path before decoded tensors)
  keras_gen    the notebooks' way: ImageDataGenerator.flow_from_directory + model.predict
  cold/warm    `extract_features` end to end with empty caches, then the rerun served from the feature cache
Then, once: a fine-tuning epoch from the decoded tensor against decoding every epoch; peak RSS of
`extract_features` at 1x and 10x the images; bfloat16 against float32 with the head-accuracy effect
(benchmarks.precision). Each round runs one pass of every method back to back in a rotating order; ratios are
medians of per-round ratios (a paired design: the shared host's load swings hit both sides of a ratio alike), and
the spread column gives the smallest and largest per-round ratio.

    python -m benchmarks.run            # full: 256 images x 5 rounds, MobileNetV2 @128/@224, VGG16-HED @64
    python -m benchmarks.run --quick    # 128 images x 2 rounds, MobileNetV2 @128 only, small RSS/bf16 checks
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BAKEOFF_NO_PROGRESS", "1")

FULL_CASES = [("mobilenet_v2", "imagenet", 128), ("mobilenet_v2", "imagenet", 224), ("vgg16", "hed", 64)]
QUICK_CASES = [("mobilenet_v2", "imagenet", 128)]
DECODED_ENV = "BAKEOFF_DECODED_CACHE"  # = bakeoff.env.DECODED_CACHE.name; set per measurement below


@contextlib.contextmanager
def _decoded_cache(value: str):
    previous = os.environ.get(DECODED_ENV)
    os.environ[DECODED_ENV] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DECODED_ENV, None)
        else:
            os.environ[DECODED_ENV] = previous


def _forward(model, images: np.ndarray, batch_size: int) -> float:
    from bakeoff.features import inference_function

    infer = inference_function(model)
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        infer(images[i : i + batch_size]).numpy()
    return len(images) / (time.perf_counter() - start)


def _files_to_features(model, df, size: int, batch_size: int, decoded: str) -> float:
    """What `bakeoff features` runs after its cache lookup: inference_batches (tensor, or decoding into it, or
    decoding only) + the forward loop."""
    from bakeoff.decoded import inference_batches
    from bakeoff.features import compute_vectors

    start = time.perf_counter()
    with _decoded_cache(decoded):
        compute_vectors(model, inference_batches(df, df, size, batch_size), len(df))
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


def _paired(measure: dict, repeats: int) -> dict[str, list[float]]:
    """One pass of each method per round, back to back, in a rotating order."""
    runs: dict[str, list[float]] = {name: [] for name in measure}
    order = list(measure)
    for r in range(repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            with contextlib.redirect_stdout(io.StringIO()):
                runs[name].append(measure[name]())
    return runs


def _ratios(runs: dict[str, list[float]], base: str) -> dict:
    out: dict = {name: float(np.median(values)) for name, values in runs.items()}
    for name in runs:
        if name != base:
            per_round = np.array(runs[name]) / np.array(runs[base])
            out[f"{name}_ratio"] = float(np.median(per_round))
            out[f"{name}_spread"] = (float(per_round.min()), float(per_round.max()))
    return out


def bench_case(dataset: Path, backbone: str, weights: str, size: int, repeats: int, batch_size: int) -> dict:
    from bakeoff import manifest
    from bakeoff.backbones import build_feature_extractor
    from bakeoff.features import extract_features
    from bakeoff.weights import resolve_weights

    df = manifest.read_manifest(dataset)
    model = build_feature_extractor(backbone, resolve_weights(backbone, weights), size, None)
    images = _in_memory(df, size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-decoded-"))
    shared = str(tmp / "shared")
    # warm-up: trace the forward function for full and partial batches, start tf.data's thread pools
    _forward(model, images[: batch_size + 1], batch_size)
    _files_to_features(model, df.iloc[: batch_size + 1], size, batch_size, "off")
    model.predict(images[:batch_size], verbose=0)
    _files_to_features(model, df, size, batch_size, shared)  # the tensor an earlier backbone at this size left
    fresh = iter(range(1_000_000))
    runs = _paired(
        {
            "forward": lambda: _forward(model, images, batch_size),
            "first": lambda: _files_to_features(model, df, size, batch_size, str(tmp / f"fresh{next(fresh)}")),
            "later": lambda: _files_to_features(model, df, size, batch_size, shared),
            "decoding": lambda: _files_to_features(model, df, size, batch_size, "off"),
            "keras_gen": lambda: _keras_generator(model, dataset / "images", size, batch_size, len(df)),
        },
        repeats,
    )
    best = _ratios(runs, "forward")
    best["forward_spread"] = (min(runs["forward"]), max(runs["forward"]))
    best["vs_generator"] = float(np.median(np.array(runs["first"]) / np.array(runs["keras_gen"])))
    best["later_vs_generator"] = float(np.median(np.array(runs["later"]) / np.array(runs["keras_gen"])))
    # the most any input path could gain over the generator here: the forward pass alone against it
    best["ceiling_vs_generator"] = float(np.median(np.array(runs["forward"]) / np.array(runs["keras_gen"])))
    with tempfile.TemporaryDirectory() as cold_tmp, _decoded_cache(f"{cold_tmp}/decoded"):  # cold means cold
        times = []
        for out in ("a", "b"):
            t0 = time.perf_counter()
            info = extract_features(
                str(dataset), f"{cold_tmp}/{out}", backbone, weights, image_size=size, batch_size=batch_size,
                cache_uri=f"{cold_tmp}/cache", precision="float32",
            )  # fmt: skip
            times.append((time.perf_counter() - t0, info["cache_misses"]))
    assert times[0][1] == len(df) and times[1][1] == 0
    shutil.rmtree(tmp, ignore_errors=True)
    return {"backbone": backbone, "weights": weights, "size": size, "n": len(df), **best,
            "cold_s": times[0][0], "warm_s": times[1][0]}  # fmt: skip


def bench_finetune_epoch(dataset: Path, size: int, repeats: int, batch_size: int) -> dict:
    """One training epoch of MobileNetV2 (last block open, augmentation on) + a dense head, fed from the decoded
    tensor against decoding the files every epoch; the same model and data, paired rounds."""
    import keras

    from bakeoff import manifest
    from bakeoff.backbones import build_feature_extractor, finetune_layers, get_backbone
    from bakeoff.data import image_dataset
    from bakeoff.decoded import decoded_images
    from bakeoff.finetune import augmentation_layers
    from bakeoff.weights import resolve_weights

    df = manifest.read_manifest(dataset)
    classes = sorted(set(df["label"]))
    bb = get_backbone("mobilenet_v2")
    extractor = build_feature_extractor(bb, resolve_weights(bb.name, "imagenet"), size, None)
    base = extractor.get_layer("backbone")
    base.trainable = True
    open_layers = {id(layer) for layer in finetune_layers(bb, base, 1)}
    for layer in base.layers:
        layer.trainable = id(layer) in open_layers and not isinstance(layer, keras.layers.BatchNormalization)
    inputs = keras.Input((size, size, 3))
    x = inputs
    for layer in augmentation_layers(0):
        x = layer(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax")(extractor(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy")
    with tempfile.TemporaryDirectory() as tmp:
        tensor = decoded_images(df, size, folder=tmp)
        datasets = {
            "tensor": tensor.dataset(df, batch_size, classes=classes, shuffle=True, seed=0),
            "decoding": image_dataset(df, size, batch_size, classes=classes, shuffle=True, seed=0),
        }
        model.fit(datasets["tensor"].take(2), epochs=1, verbose=0)  # trace the train step

        def epoch(name: str) -> float:
            start = time.perf_counter()
            model.fit(datasets[name], epochs=1, verbose=0)
            return len(df) / (time.perf_counter() - start)

        runs = _paired({"decoding": lambda: epoch("decoding"), "tensor": lambda: epoch("tensor")}, repeats)
    return {"size": size, "n": len(df), **_ratios(runs, "decoding")}


_RSS_CHILD = """
import json, resource, sys
from bakeoff.features import extract_features
info = extract_features(sys.argv[1], sys.argv[2], "mobilenet_v2", image_size=int(sys.argv[3]), cache_uri=sys.argv[4],
                        precision="float32")
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "n": info["n_images"]}))
"""


def bench_peak_rss(root: Path, n: int, size: int) -> dict:
    """Peak RSS of `extract_features` (cold: decode into the tensor, then the forward pass) in a fresh process, at
    ``n`` and 10 x ``n`` images: memory must not grow with the dataset."""
    from benchmarks.images import make_jpeg_dataset

    out = {}
    for factor in (1, 10):
        dataset = make_jpeg_dataset(root / f"rss{factor}", n * factor, seed=factor)
        child_env = {**os.environ, DECODED_ENV: str(root / f"rss{factor}-decoded")}
        done = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(dataset), str(root / f"rss{factor}-out"), str(size),
             str(root / f"rss{factor}-cache")],
            capture_output=True, text=True, check=True, env=child_env,
        )  # fmt: skip
        out[factor] = json.loads(done.stdout.strip().splitlines()[-1])
        assert out[factor]["n"] == n * factor  # the child really read every image
    return {"size": size, "n": n, "rss_1x": out[1]["rss_mb"], "rss_10x": out[10]["rss_mb"],
            "ratio": out[10]["rss_mb"] / out[1]["rss_mb"]}  # fmt: skip


def machine() -> str:
    """CPU model, cores, RAM and the load when the run started (the host is shared)."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        model = next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), model
        )
    from bakeoff.features import cpu_has_bfloat16

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    bf16 = "with AVX512-BF16/AMX" if cpu_has_bfloat16() else "without bfloat16 hardware"
    return f"{model} ({platform.machine()}, {bf16}), {os.cpu_count()} cores, {ram:.0f} GiB RAM; load average {load}"


def _spread(pair: tuple[float, float], digits: int = 2) -> str:
    return f"{pair[0]:.{digits}f}-{pair[1]:.{digits}f}"


def render(results: dict, args, elapsed: float, load_before: str, load_after: str) -> str:
    from benchmarks.precision import HEADER, line

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cases = results["cases"]
    lines = [
        "# Benchmarks: the input path",
        "",
        f"Measured {now} with `python -m benchmarks.run{''.join(' ' + a for a in args.argv)}` ({elapsed:.0f} s), "
        f"TensorFlow CPU, batch {args.batch_size}, {args.repeats} rounds, on {load_before}; load average at the end "
        f"{load_after}. Each round runs one pass of every method back to back (rotating order); throughputs are "
        "medians over rounds, each ratio is the median of the per-round ratios (load from other jobs on a shared "
        "host hits both sides of a ratio alike) and *spread* is the smallest-largest per-round ratio.",
        "",
        f"Data: {cases[0]['n']} distinct JPEG crops (256x256) of real photos, read from disk.",
        "",
        "## Files -> features against the forward pass alone",
        "",
        "| backbone | weights | size | forward only (img/s) | 1st backbone at the size (img/s) | ratio (spread) | "
        "2nd+ backbone (img/s) | ratio (spread) | decoding in the loop (img/s) | ratio | ImageDataGenerator + "
        "predict (img/s) | 1st / generator | 2nd+ / generator | cold extract (s) | cached rerun (s) | rerun / cold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in cases:
        lines.append(
            f"| {r['backbone']} | {r['weights']} | {r['size']} | {r['forward']:.0f} | {r['first']:.0f} | "
            f"{r['first_ratio']:.2f} ({_spread(r['first_spread'])}) | {r['later']:.0f} | {r['later_ratio']:.2f} "
            f"({_spread(r['later_spread'])}) | {r['decoding']:.0f} | {r['decoding_ratio']:.2f} | "
            f"{r['keras_gen']:.0f} | {r['vs_generator']:.2f}x | {r['later_vs_generator']:.2f}x | {r['cold_s']:.1f} | "
            f"{r['warm_s']:.2f} | {r['warm_s'] / r['cold_s'] * 100:.1f}% |"
        )
    ft, rss = results["finetune"], results["rss"]
    lines += [
        "",
        "- **forward only**: the frozen extractor (preprocessing inside) on tensors already in memory: the ceiling. "
        f"Its throughput varied {_spread(cases[0]['forward_spread'], 0)} img/s between rounds in the first row.",
        "- **1st backbone at the size**: `inference_batches` + `compute_vectors`, what `bakeoff features` runs on "
        "a cache miss, with no decoded tensor yet: tf.data decodes and resizes every image once, each uint8 batch "
        "goes to the forward pass as it is written into the dataset's tensor (`bakeoff.decoded`), committed after "
        "the last batch. Target >= 0.9.",
        "- **2nd+ backbone**: the same with the tensor already there (any earlier backbone, fine-tuning epoch or "
        "evaluation at this size made it): uint8 batches read with `preadv`, one batch ahead in a thread, cast to "
        "float inside the traced forward function. Target >= 0.95.",
        "- **decoding in the loop**: `BAKEOFF_DECODED_CACHE=off`: tf.data decodes every file in the loop (the path "
        "before decoded tensors, and what every fine-tuning epoch and evaluation did).",
        "- **ImageDataGenerator + predict**: the notebooks' way, `keras.src.legacy.preprocessing.image."
        "ImageDataGenerator().flow_from_directory(...)` + `model.predict`, same files, same model; target for the "
        "MobileNetV2 @128 row >= 2.5x. *forward / generator* is the most any input path could gain over it on "
        "this host.",
        "- **cold extract / cached rerun**: `extract_features` end to end (manifest, image re-hashing, model build, "
        "decoding, forward, features.npz) with empty caches, then again on unchanged data (no forward pass, no "
        "model build). Target: rerun <= 2% of cold.",
        "",
        "## Fine-tuning epoch, peak memory",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| one fine-tuning epoch, MobileNetV2 @{ft['size']} (last block open, augmentation), {ft['n']} images: "
        f"decoding every epoch | {ft['decoding']:.1f} img/s |",
        f"| the same epoch from the decoded tensor | {ft['tensor']:.1f} img/s: **{ft['tensor_ratio']:.2f}x** "
        f"(spread {_spread(ft['tensor_spread'])}) |",
        f"| peak RSS of `extract_features` (cold: decode + forward, MobileNetV2 @{rss['size']}), {rss['n']} images "
        f"| {rss['rss_1x']:.0f} MB |",
        f"| the same at {rss['n'] * 10} images | {rss['rss_10x']:.0f} MB: **{rss['ratio']:.2f}x** (target <= 1.2x) |",
        "",
        "## bfloat16 against float32 (feature extraction)",
        "",
        f"`python -m benchmarks.precision` as called by this run (Fashion-MNIST, {results['precision'][0]['n_train']} "
        f"train / {results['precision'][0]['n_test']} test images, logistic-regression head on the cached vectors "
        "of each precision, paired on the same images; speed is forward-only on the same tensors, median of "
        "per-round ratios):",
        "",
        HEADER,
        *[line(r) for r in results["precision"]],
        "",
        "## On a GPU (prepared, not run)",
        "",
        "`python -m benchmarks.gpu_check` (ResNet50 and MobileNetV2 @224, `mixed_float16`, batch 256: features from "
        "the decoded tensor against the forward pass on batches already on the GPU, and the CPU's decoding rate "
        "into the tensor; it says whether each is compute- or input-bound). No GPU was lent to the session that "
        "wrote it, so it has not run yet; it is never part of CI.",
        "",
        "## Reading",
        "",
    ]
    for r in cases:
        first = "meets" if r["first_ratio"] >= 0.9 else "misses"
        later = "meet" if r["later_ratio"] >= 0.95 else "miss"
        lines.append(
            f"- {r['backbone']} @{r['size']}: the 1st backbone {first} its 0.9 target ({r['first_ratio']:.2f}), "
            f"later backbones {later} 0.95 ({r['later_ratio']:.2f}); {r['vs_generator']:.2f}x / "
            f"{r['later_vs_generator']:.2f}x the notebooks' generator, whose ceiling here (the forward pass alone "
            f"against it) is {r['ceiling_vs_generator']:.2f}x."
        )
    lines += [
        "- On 2 shared cores there is no spare core: decoding cannot hide behind the model, it can only leave the "
        "loop. The 1st backbone at a size pays for decoding once: streamed, the decoding overlaps the forward pass, "
        "but both share the two cores, so its ratio is bounded by about forward / (forward + decode) in CPU time. "
        "Every later backbone, fine-tuning epoch, evaluation and the gate's re-scoring reads the tensor.",
        "- A 2.5x gain over the generator needs a generator that is at most 0.4 of the forward pass, as on a GPU "
        "host whose model outruns one CPU thread of PIL decoding; on this CPU host the generator's decoding runs "
        "beside the same model on the same cores, so the ceiling column is the honest bound.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128 images, 2 rounds, one case, small RSS/bf16 checks")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"))
    parser.add_argument(
        "--mirror", default=None, help="weights mirror (default $BAKEOFF_WEIGHTS_URI, else a temp import)"
    )
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    args.argv = [a for i, a in enumerate(given) if not a.startswith("--out") and (i == 0 or given[i - 1] != "--out")]
    args.images = args.images or (128 if args.quick else 256)
    args.repeats = args.repeats or (2 if args.quick else 5)
    cases = QUICK_CASES if args.quick else FULL_CASES

    from bakeoff import storage, weights, weights_import
    from benchmarks import precision
    from benchmarks.images import make_jpeg_dataset

    started = time.perf_counter()
    load_before = machine()
    results: dict = {"cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        mirror = args.mirror or os.environ.get(weights.MIRROR_ENV)
        if not mirror or not storage.exists(storage.join(mirror, weights.IMPORTED_MARKER)):
            mirror = f"{tmp}/mirror"
            for name in ("mobilenet_v2", "vgg16_hed"):
                weights_import.run(name, mirror)
        os.environ[weights.MIRROR_ENV] = mirror
        dataset = make_jpeg_dataset(Path(tmp, "dataset"), args.images)
        for backbone, spec, size in cases:
            r = bench_case(dataset, backbone, spec, size, args.repeats, args.batch_size)
            print(
                f"{backbone}@{size}: forward {r['forward']:.0f} img/s, 1st {r['first']:.0f} ({r['first_ratio']:.2f}), "
                f"2nd+ {r['later']:.0f} ({r['later_ratio']:.2f}), decoding {r['decoding']:.0f} "
                f"({r['decoding_ratio']:.2f}), generator {r['keras_gen']:.0f} -> {r['vs_generator']:.2f}x, "
                f"cold {r['cold_s']:.1f}s, cached {r['warm_s']:.2f}s",
                flush=True,
            )
            results["cases"].append(r)
        results["finetune"] = bench_finetune_epoch(dataset, 128, args.repeats, args.batch_size)
        print(f"finetune epoch: {results['finetune']['tensor_ratio']:.2f}x from the tensor", flush=True)
        results["rss"] = bench_peak_rss(Path(tmp), 64 if args.quick else args.images, 128)
        print(f"peak RSS: {results['rss']['rss_1x']:.0f} -> {results['rss']['rss_10x']:.0f} MB", flush=True)
        per_class, n_test = (30, 300) if args.quick else (100, 1000)
        results["precision"] = []
        for backbone, spec, size in precision.CASES:
            p = precision.compare(backbone, spec, size, per_class, n_test, max(2, args.repeats), args.batch_size)
            print(precision.line(p), flush=True)
            results["precision"].append(p)
    load_after = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    from bakeoff.storage import write_bytes

    write_bytes(args.out, render(results, args, time.perf_counter() - started, load_before, load_after).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
