"""Helpers shared by the ingest tests (a module, not a conftest, so tests can import it by name)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from PIL import Image

from bakeoff import manifest


def photo(name: str) -> Image.Image:
    """A real photo shipped with scikit-image or scikit-learn (no download)."""
    if name in ("chelsea", "coffee", "astronaut", "rocket"):
        from skimage import data

        return Image.fromarray(getattr(data, name)())
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    index = [Path(f).name for f in bunch.filenames].index(name)
    return Image.fromarray(bunch.images[index])


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def read(out: Path) -> pd.DataFrame:
    """The manifest with URIs resolved to absolute paths."""
    return manifest.read_manifest(out)
