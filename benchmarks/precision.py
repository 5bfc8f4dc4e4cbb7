"""bfloat16 against float32 feature extraction: speed, and what it does to a head's accuracy on cached features.

Paired on the same images: Fashion-MNIST (Debian's dataset-fashion-mnist, what the tests use), N train images per
class and the first M test images, resized to the backbone's input like every bakeoff image (bilinear, antialias,
whole numbers). For each precision the frozen extractor makes the vectors, a logistic regression (scikit-learn)
is fitted on the train vectors and scored on the test vectors; the two heads are compared image by image
(exact McNemar, two-sided, and a bootstrap 95% interval of the accuracy difference). Speed: forward passes over
the same tensors, both precisions in each round (rotating order), median of the per-round ratios.

    python -m benchmarks.precision                      # mobilenet_v2 @96 (imagenet) and vgg16 @64 (hed)
    python -m benchmarks.precision --per-class 30 --test 300 --repeats 2   # a short check
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CASES = [("mobilenet_v2", "imagenet", 96), ("vgg16", "hed", 64)]


def fashion_mnist(per_class: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) uint8 28x28: ``per_class`` train images of each class, ``n_test`` test."""
    from bakeoff.demo_data import load_fashion_mnist
    from bakeoff.errors import BakeoffError

    try:
        x, y = load_fashion_mnist(FASHION_DIR)
        x_test, y_test = load_fashion_mnist(FASHION_DIR, split="test")
    except BakeoffError as exc:
        raise SystemExit(str(exc)) from exc
    chosen = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    return x[chosen], y[chosen], x_test[:n_test], y_test[:n_test]


def _resize(grey: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    out = tf.image.resize(rgb, (size, size), method="bilinear", antialias=True)
    return np.round(np.clip(out.numpy(), 0, 255)).astype(np.float32)


def _vectors(model, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    from bakeoff.features import inference_function

    infer = inference_function(model)
    start = time.perf_counter()
    out = [infer(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out), len(images) / (time.perf_counter() - start)


def _head_correct(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    head.fit(train, y_train)
    return head.predict(test) == y_test


def compare(backbone: str, weights: str, size: int, per_class: int, n_test: int, repeats: int, batch: int) -> dict:
    """Speed ratio and accuracy effect of bfloat16 for one backbone, on the same images."""
    from bakeoff.backbones import build_feature_extractor
    from bakeoff.features import keras_policy
    from bakeoff.stats import bootstrap_p, mcnemar_p
    from bakeoff.weights import resolve_weights

    x_train, y_train, x_test, y_test = fashion_mnist(per_class, n_test)
    train, test = _resize(x_train, size), _resize(x_test, size)
    resolved = resolve_weights(backbone, weights)
    models = {}
    for precision in ("float32", "bfloat16"):
        with keras_policy(precision):
            models[precision] = build_feature_extractor(backbone, resolved, size)
        _vectors(models[precision], test[: batch + 1], batch)  # trace full and partial batches
    speed: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    vectors = {}
    for r in range(repeats):
        for precision in ("float32", "bfloat16")[:: 1 if r % 2 == 0 else -1]:
            v_test, ips = _vectors(models[precision], test, batch)
            speed[precision].append(ips)
            vectors.setdefault(precision, v_test)
    correct = {}
    for precision in ("float32", "bfloat16"):
        v_train, _ = _vectors(models[precision], train, batch)
        correct[precision] = _head_correct(v_train, y_train, vectors[precision], y_test)
    a, b = correct["bfloat16"], correct["float32"]
    only_bf16, only_f32 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    diff = a.astype(float) - b.astype(float)
    rng = np.random.default_rng(0)
    boot = diff[rng.integers(0, len(diff), size=(2000, len(diff)))].mean(axis=1)
    relative = np.abs(vectors["bfloat16"] - vectors["float32"]).mean() / np.abs(vectors["float32"]).mean()
    return {
        "backbone": backbone,
        "weights": weights,
        "size": size,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "float32_ips": float(np.median(speed["float32"])),
        "bfloat16_ips": float(np.median(speed["bfloat16"])),
        "speedup": float(np.median(np.array(speed["bfloat16"]) / np.array(speed["float32"]))),
        "acc_float32": float(b.mean()),
        "acc_bfloat16": float(a.mean()),
        "delta": float(diff.mean()),
        "delta_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "mcnemar_p": min(1.0, 2 * min(mcnemar_p(only_bf16, only_f32), mcnemar_p(only_f32, only_bf16))),
        "bootstrap_p_worse": bootstrap_p(b, a, seed=0),
        "only_bf16": only_bf16,
        "only_f32": only_f32,
        "vector_rel_diff": float(relative),
    }


def line(r: dict) -> str:
    """One Markdown table row of :func:`compare`'s result."""
    low, high = r["delta_ci"]
    return (
        f"| {r['backbone']} | {r['weights']} | {r['size']} | {r['float32_ips']:.0f} | {r['bfloat16_ips']:.0f} | "
        f"{r['speedup']:.2f}x | {r['acc_float32']:.3f} | {r['acc_bfloat16']:.3f} | {r['delta'] * 100:+.1f} "
        f"[{low * 100:+.1f}, {high * 100:+.1f}] | {r['only_f32']}/{r['only_bf16']} | {r['mcnemar_p']:.2f} | "
        f"{r['vector_rel_diff'] * 100:.2f}% |"
    )


HEADER = (
    "| backbone | weights | size | float32 (img/s) | bfloat16 (img/s) | speed-up | head acc. float32 | "
    "head acc. bfloat16 | difference, points [95% CI] | right only in f32/bf16 | McNemar p | mean vector change |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    print(HEADER)
    for backbone, weights, size in CASES:
        r = compare(backbone, weights, size, args.per_class, args.test, args.repeats, args.batch_size)
        print(line(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
