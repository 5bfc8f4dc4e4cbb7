"""One short check for a GPU machine: features throughput from the decoded tensor, and what bounds it.

For ResNet50 and MobileNetV2 at 224 px under Keras's ``mixed_float16`` policy, batch 256, on N JPEG crops of
real photos:
  decode     building the dataset's decoded tensor (bakeoff.decoded: tf.data decode + resize on the CPU), img/s
  tensor     files -> features the way `bakeoff features` runs for a 2nd backbone: batches read from the tensor
             (bakeoff.decoded, one batch read ahead) feeding the traced forward function
  forward    the same forward function on batches already on the GPU (the ceiling)
tensor / forward >= 0.9 means compute-bound (the input path keeps up); below, the run is input-bound. decode /
forward < 1 means the first backbone at a size is decode-bound (decoding is paid once per dataset and size).
Never part of CI; random weights (``none``) unless the mirror has ImageNet weights (speed does not depend on them).

    python -m benchmarks.gpu_check                  # 4096 images, 3 rounds; prints a Markdown table and JSON
    python -m benchmarks.gpu_check --images 1024 --repeats 2 --out $OUT/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BAKEOFF_NO_PROGRESS", "1")
CASES = ("resnet50", "mobilenet_v2")
SIZE = 224
BATCH = 256


def _weights(backbone: str) -> str:
    from bakeoff import storage, weights

    mirror = os.environ.get(weights.MIRROR_ENV)
    found = mirror and storage.exists(storage.join(mirror, backbone, "imagenet.weights.h5"))
    return "imagenet" if found else "none"


def check(dataset: Path, repeats: int) -> dict:
    import keras
    import tensorflow as tf

    from bakeoff import manifest
    from bakeoff.backbones import build_feature_extractor
    from bakeoff.decoded import decoded_images
    from bakeoff.features import compute_vectors, inference_function
    from bakeoff.weights import resolve_weights

    df = manifest.read_manifest(dataset)
    folder = tempfile.mkdtemp(prefix="gpu-decoded-")
    t0 = time.perf_counter()
    tensor = decoded_images(df, SIZE, folder=folder)
    decode_ips = len(df) / (time.perf_counter() - t0)
    on_gpu = [tf.constant(tensor.read(np.arange(i, min(i + BATCH, len(df))))) for i in range(0, len(df), BATCH)]
    on_gpu = [tf.cast(b, tf.float32) for b in on_gpu]
    rows = {"gpu": [d.name for d in tf.config.list_physical_devices("GPU")], "n": len(df), "decode_ips": decode_ips}
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for backbone in CASES:
            model = build_feature_extractor(backbone, resolve_weights(backbone, _weights(backbone)), SIZE, None)
            infer = inference_function(model)
            infer(on_gpu[0]).numpy()  # trace
            infer(on_gpu[-1]).numpy()
            forward, from_tensor = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                for batch in on_gpu:
                    infer(batch).numpy()
                forward.append(len(df) / (time.perf_counter() - start))
                start = time.perf_counter()
                compute_vectors(model, tensor.batches(df, BATCH), len(df))
                from_tensor.append(len(df) / (time.perf_counter() - start))
            ratio = float(np.median(np.array(from_tensor) / np.array(forward)))
            rows[backbone] = {
                "forward_ips": float(np.median(forward)),
                "tensor_ips": float(np.median(from_tensor)),
                "ratio": ratio,
                "bound": "compute-bound" if ratio >= 0.9 else "input-bound (reading the tensor)",
                "first_backbone": "decode-bound" if decode_ips < float(np.median(forward)) else "compute-bound",
            }
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    from benchmarks.images import make_jpeg_dataset

    with tempfile.TemporaryDirectory() as tmp:
        result = check(make_jpeg_dataset(Path(tmp, "dataset"), args.images), args.repeats)
    print(f"GPU {result['gpu']}, {result['n']} images @{SIZE}, batch {BATCH}, mixed_float16")
    print(f"decoding into the tensor: {result['decode_ips']:.0f} img/s (CPU, once per dataset and size)")
    print("| backbone | forward only (img/s) | from the decoded tensor (img/s) | ratio | bound | 1st backbone |")
    print("|---|---|---|---|---|---|")
    for backbone in CASES:
        r = result[backbone]
        print(
            f"| {backbone} | {r['forward_ips']:.0f} | {r['tensor_ips']:.0f} | {r['ratio']:.2f} | {r['bound']} | "
            f"{r['first_backbone']} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
