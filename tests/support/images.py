"""Small REAL image files and photos for tests (no download: scikit-image and scikit-learn ship the photos)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(
    path: Path,
    size: tuple[int, int] = (32, 32),
    color: tuple[int, int, int] = (200, 30, 30),
    fmt: str | None = None,
    seed: int = 0,
    mode: str = "RGB",
) -> Path:
    """Write a small real image: a colour field with seeded noise and a diagonal bar, so images differ."""
    rng = np.random.default_rng(seed)
    width, height = size
    base = np.empty((height, width, 3), dtype=np.float32)
    base[:] = color
    base += rng.normal(0, 25, size=base.shape)
    for i in range(min(width, height)):
        base[i, i] = (255 - np.array(color)) * 0.8
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def photo(name: str) -> Image.Image:
    """A real photo shipped with scikit-image (chelsea, coffee, astronaut, rocket) or scikit-learn (china.jpg, ...)."""
    if name in ("chelsea", "coffee", "astronaut", "rocket"):
        from skimage import data

        return Image.fromarray(getattr(data, name)())
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    index = [Path(f).name for f in bunch.filenames].index(name)
    return Image.fromarray(bunch.images[index])


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    """The encoded bytes of ``img`` in ``fmt``."""
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def exif_jpeg(orientation: int) -> bytes:
    """A 40x20 JPEG (left half red, right half blue) stored unrotated with an EXIF orientation tag."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
