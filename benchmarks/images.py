"""Benchmark images: real photos (scikit-image, scikit-learn samples) cut into many distinct JPEG crops on disk.

Why real photos: JPEG decode cost depends on content; flat synthetic images decode unrealistically fast.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd


def _photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    photos += list(load_sample_images().images)
    return [p[..., :3] for p in photos]


def make_jpeg_dataset(root: Path, n_images: int, side: int = 256, seed: int = 0) -> Path:
    """``n_images`` random crops (resized to ``side``) in class folders + manifest.parquet (2 classes)."""
    from PIL import Image

    from bakeoff import manifest

    rng = np.random.default_rng(seed)
    photos = _photos()
    rows = []
    for i in range(n_images):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        crop = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        img = Image.fromarray(photo[y : y + crop, x : x + crop]).resize((side, side), Image.BILINEAR)
        label = "even" if i % 2 == 0 else "odd"
        path = root / "images" / label / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
        rows.append(
            {
                "uri": path.relative_to(root).as_posix(),
                "label": label,
                "split": "train",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "width": side,
                "height": side,
                "group": str(i),
                "source": path.name,
            }
        )
    manifest.write_manifest(pd.DataFrame(rows), root)
    return root
