"""Dataset folders exactly as ``bakeoff ingest`` writes them: images/<label>/<sha256>.png + manifest.parquet."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from support.images import write_image


def write_dataset(
    root: Path,
    images: Iterable[np.ndarray],
    labels: Iterable[str],
    splits: Iterable[str],
    groups: Iterable[str] | None = None,
) -> Path:
    """A real dataset folder from uint8 pixel arrays (grey [H, W] or RGB [H, W, 3]); one PNG per image.

    ``groups`` are near-duplicate group ids (default: each image its own group, named by its sha256).
    """
    from bakeoff import manifest

    root = Path(root)
    images, labels, splits = list(images), list(labels), list(splits)
    groups = list(groups) if groups is not None else [None] * len(images)
    rows = []
    for pixels, label, split, group in zip(images, labels, splits, groups):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(pixels)).save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        rel = f"images/{label}/{sha}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        rows.append(
            {
                "uri": rel,
                "label": str(label),
                "split": split,
                "sha256": sha,
                "width": int(pixels.shape[1]),
                "height": int(pixels.shape[0]),
                "group": group or sha,
                "source": f"{label}/{sha[:8]}.png",
            }
        )
    manifest.write_manifest(pd.DataFrame(rows), root)
    return root


def build_tiny_dataset(
    root: Path,
    per_class: int = 6,
    size: tuple[int, int] = (40, 36),
    classes: dict[str, tuple[int, int, int]] | None = None,
) -> Path:
    """A small two-class (cat/dog by default) dataset folder of real PNGs; classes differ by colour, so even a
    random backbone separates them a little; splits cycle train/train/val/test."""
    from bakeoff import manifest

    root = Path(root)
    classes = classes or {"cat": (200, 40, 40), "dog": (40, 60, 200)}
    cycle = ["train", "train", "val", "test"]
    rows = []
    for c, (label, color) in enumerate(sorted(classes.items())):
        for i in range(per_class):
            tmp = write_image(root / "tmp.png", size=size, color=color, seed=100 * c + i, fmt="PNG")
            sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
            rel = Path("images", label, f"{sha}.png")
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(root / rel)
            rows.append(
                {
                    "uri": rel.as_posix(),
                    "label": label,
                    "split": cycle[i % len(cycle)],
                    "sha256": sha,
                    "width": size[0],
                    "height": size[1],
                    "group": sha[:12],
                    "source": f"{label}/{i}.png",
                }
            )
    manifest.write_manifest(pd.DataFrame(rows), root)
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative, '/'-separated) -> its sha256: "same seed, same bytes" in one compare."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }
