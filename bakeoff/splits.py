"""Deterministic, group-aware, stratified train/val/test split.

Determinism comes from never looking at file order, file names or the machine: groups are ordered by a
seeded hash of their id (itself a content hash), separately within each class. So the same images and
seed always give the same split, and adding one image moves at most a few others. A near-duplicate
group is assigned as a whole, so copies of one picture never sit on both sides of a split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pandas as pd

from bakeoff.errors import BakeoffError

SPLITS = ("train", "val", "test")


def seeded_key(seed: int, value: str) -> str:
    """A stable pseudo-random sort key for ``value`` (same on every machine and Python)."""
    return hashlib.sha256(f"{seed}:{value}".encode()).hexdigest()


def check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise BakeoffError(f"--val {val} and --test {test} must be >= 0 and add up to less than 1")


def cap_per_class(df: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """Keep at most ``per_class`` rows per label, chosen by seeded order of sha256 (not by file order)."""
    if per_class is None:
        return df
    if per_class < 1:
        raise BakeoffError(f"--per-class must be at least 1, got {per_class}")
    keys = [seeded_key(seed, sha) for sha in df["sha256"]]
    ordered = df.assign(_key=keys).sort_values(["label", "_key"], kind="stable")
    return ordered.groupby("label", sort=True).head(per_class).drop(columns="_key")


def assign_splits(df: pd.DataFrame, *, val: float, test: float, seed: int) -> pd.Series:
    """Return a split name per row of ``df`` (columns ``label``, ``group``).

    Each group gets the label most of its images carry (ties: the smallest name). Within a class,
    groups in seeded order go first one each to test, val and train (for non-zero fractions), then
    each to the split furthest below its target image count.
    """
    check_fractions(val, test)
    fractions = {"train": 1.0 - val - test, "val": val, "test": test}
    wanted = [s for s in ("test", "val", "train") if fractions[s] > 0]

    sizes = df.groupby("group").size()
    group_label = (
        df.groupby(["group", "label"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["group", "n", "label"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("group")
        .set_index("group")["label"]
    )
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, label in group_label.items():
        by_class[label].append(group)

    chosen: dict[str, str] = {}
    for label in sorted(by_class):
        groups = sorted(by_class[label], key=lambda g: seeded_key(seed, g))
        n_images = int(sum(sizes[g] for g in groups))
        if len(groups) < len(wanted):
            raise BakeoffError(
                f"class '{label}' has only {n_images} image(s) in {len(groups)} distinct group(s) but the "
                f"{'/'.join(wanted)} split needs at least {len(wanted)}: add images to it, drop it with --classes, "
                f"or use smaller --val/--test (0 turns a split off)"
            )
        target = {s: fractions[s] * n_images for s in SPLITS}
        have = dict.fromkeys(SPLITS, 0)
        for i, group in enumerate(groups):
            if i < len(wanted):
                split = wanted[i]
            else:
                split = max(wanted, key=lambda s: (target[s] - have[s], -wanted.index(s)))
            chosen[group] = split
            have[split] += int(sizes[group])
    return df["group"].map(chosen)


NEAR_DUPLICATE_MAX_DISTANCE = 16
"""Hashes at most this many bits apart (of 256) are the same picture (resized / re-encoded copies)."""


def near_duplicate_groups(
    shas: list[str], hashes: list[bytes], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
) -> list[str]:
    """Union-find over pairs of perceptual hashes within ``max_distance`` bits.

    Returns, per row, its group id: the smallest sha256 in its group (so ids depend on content only).
    Holds only the hashes (32 bytes per image), and compares one row against the rest with numpy,
    so 10k images take about a second.
    """
    n = len(shas)
    if n == 0:
        return []
    packed = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, -1)
    words = packed.view(np.uint64) if packed.shape[1] % 8 == 0 else packed
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n - 1):
        distance = np.bitwise_count(words[i + 1 :] ^ words[i]).sum(axis=1)
        for j in (np.nonzero(distance <= max_distance)[0] + i + 1).tolist():
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    smallest: dict[int, str] = {}
    for i, sha in enumerate(shas):
        root = find(i)
        if root not in smallest or sha < smallest[root]:
            smallest[root] = sha
    return [smallest[find(i)] for i in range(n)]
