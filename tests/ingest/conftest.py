"""Fixtures for the ingest tests: small raw dumps of distinct real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def make_dump(make_image):
    """Factory: make_dump(root, {"cat": 4, "dog": 4}, start_seed=0, fmt="PNG") writes distinct tiny images.

    Each image gets its own noise seed (from start_seed up), so no two are near-duplicates.
    Returns {label: [paths]}.
    """

    def build(
        root: Path, spec: dict[str, int], start_seed: int = 0, fmt: str = "PNG", ext: str = "png", prefix: str = "img"
    ) -> dict[str, list[Path]]:
        seed = start_seed
        out: dict[str, list[Path]] = {}
        for label, n in spec.items():
            for _ in range(n):
                colour = tuple(int(c) for c in np.random.default_rng(seed + 10_000).integers(0, 255, 3))
                path = Path(root, label, f"{prefix}{seed:04d}.{ext}")
                make_image(path, size=(32, 32), color=colour, fmt=fmt, seed=seed)
                out.setdefault(label, []).append(path)
                seed += 1
        return out

    return build
