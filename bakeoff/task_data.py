"""A second real task, not derived from the demo data: scikit-learn's handwritten digits as a raw dump.

Why: the demo task (Fashion-MNIST garments) is the one the project was tuned on; a claim about "the best model the
data allows" needs a task no one tuned to. The machine is offline, and scikit-learn ships ``load_digits`` (1,797
real 8x8 handwritten digits, 16 grey levels, from the UCI "Optical Recognition of Handwritten Digits" set) inside
its wheel, so the task can be rebuilt anywhere the project installs. Digits are far from ImageNet photos (a
domain-shifted task), which is where feature depth and head choice matter.

The dump is what a user would hand over: class folders (Italian names, as the demo, with a ``translate.json``
label map to English), dark ink on a light page, upscaled to ``size`` px, PNG and JPEG mixed. Same seed, same
files; every file is written under a temp name and renamed, and listed in
``DIR/.bakeoff-digits-data-written.jsonl`` (``bakeoff.write_record``), so a re-run replaces and prunes only its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bakeoff import storage, write_record
from bakeoff.demo_data import LABEL_MAP_NAME, RAW_DIR, DemoResult, encode_image, resolve_classes
from bakeoff.errors import BakeoffError

# digit -> (folder name in the raw dump, English class name after the label map)
DIGIT_CLASSES: list[tuple[str, str]] = [
    ("zero", "zero"),
    ("uno", "one"),
    ("due", "two"),
    ("tre", "three"),
    ("quattro", "four"),
    ("cinque", "five"),
    ("sei", "six"),
    ("sette", "seven"),
    ("otto", "eight"),
    ("nove", "nine"),
]
RECORD_STEP = "digits-data"


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 ``[n, 8, 8]`` images (dark ink on white) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ink = bunch.images / 16.0  # 0 (paper) .. 16 (ink) in the UCI scans
    return np.round(255.0 * (1.0 - ink)).astype(np.uint8), bunch.target.astype(np.int64)


def _digit_file(pixels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[bytes, str]:
    """One scanned digit as a user's folder would hold it: upscaled, grey, JPEG or PNG."""
    from PIL import Image

    img = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        return encode_image(img, "JPEG", quality=int(rng.integers(85, 96))), "jpeg"
    return encode_image(img, "PNG"), "png"


def make_digits_data(
    out_dir: str,
    *,
    per_class: int = 100,
    classes: list[str] | str | None = None,
    seed: int = 0,
    size: int = 64,
) -> DemoResult:
    """Write ``out_dir/raw-img/<italian digit>/<file>`` and ``out_dir/translate.json``; see the module doc."""
    if per_class < 3:
        raise BakeoffError(f"--per-class must be at least 3 (one image each for train/val/test), got {per_class}")
    if size < 8:
        raise BakeoffError(f"--size must be at least 8 (the scans are 8x8 pixels), got {size}")
    picked = resolve_classes(classes, DIGIT_CLASSES)
    pixels, labels = load_digits_images()
    counts = np.bincount(labels, minlength=len(DIGIT_CLASSES))
    short = [f"{counts[i]} images of {DIGIT_CLASSES[i][0]}" for i in picked if counts[i] < per_class]
    if short:  # checked before anything is written
        raise BakeoffError(f"--per-class {per_class} is more than the {', '.join(short)}")
    out = Path(out_dir)
    record = write_record.WriteRecord(out, RECORD_STEP)
    record.refuse_foreign([RAW_DIR, LABEL_MAP_NAME], "choose an empty --out folder")
    rng = np.random.default_rng(seed)
    written: set[str] = set()
    with record.open():
        for index in picked:
            folder = DIGIT_CLASSES[index][0]
            available = np.flatnonzero(labels == index)
            for row in np.sort(rng.choice(available, size=per_class, replace=False)):
                data, ext = _digit_file(pixels[row], size, rng)
                rel = f"{RAW_DIR}/{folder}/{rng.bytes(8).hex()}.{ext}"
                record.write_bytes(rel, data)
                written.add(rel)
        n_images = len(written)
        record.add(LABEL_MAP_NAME)
        storage.write_json(out / LABEL_MAP_NAME, {DIGIT_CLASSES[i][0]: DIGIT_CLASSES[i][1] for i in picked})
        written.add(LABEL_MAP_NAME)
    record.prune(written)
    return DemoResult(
        raw_dir=str(out / RAW_DIR),
        label_map=str(out / LABEL_MAP_NAME),
        n_images=n_images,
        classes=[DIGIT_CLASSES[i][0] for i in picked],
        broken=[],
    )
