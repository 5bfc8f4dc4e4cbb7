"""Deterministic, group-aware, stratified train/val/test split.

Determinism comes from never looking at file order, file names or the machine: groups are ordered by a
seeded hash of their id (itself a content hash), separately within each class. So the same images and
seed always give the same split, and adding one image moves at most a few others. A near-duplicate
group is assigned as a whole, so copies of one picture never sit on both sides of a split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator

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


_PAIR_BLOCK = 1 << 21
"""Hash pairs compared per numpy step (about 16 MB of temporaries), so memory does not grow with n squared."""


def _near_pairs(words: np.ndarray, max_distance: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i < j) whose hashes are at most ``max_distance`` bits apart, one block of rows at a time.

    ``words`` is [n, w] unsigned ints; each block of rows is compared with every later row, one word at a time.
    """
    n = len(words)
    for start in range(0, n, max(1, _PAIR_BLOCK // n)):
        block = words[start : start + max(1, _PAIR_BLOCK // n)]
        later = words[start:]
        distance = np.zeros((len(block), len(later)), dtype=np.uint16)
        for w in range(words.shape[1]):
            distance += np.bitwise_count(block[:, w, None] ^ later[None, :, w])
        rows, cols = np.nonzero(distance <= max_distance)
        rows, cols = rows + start, cols + start
        above = cols > rows  # each pair once, no self-pairs
        yield rows[above], cols[above]


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected-component label per node of the undirected graph with these edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adjacency = coo_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n, n))
    return connected_components(adjacency, directed=False)[1]


def _spanning_edges(n: int, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fewer edges, same components: each node linked to its component's first node (at most n edges)."""
    labels = _components(n, rows, cols)
    _, first = np.unique(labels, return_index=True)
    root = first[labels]
    linked = np.flatnonzero(root != np.arange(n))
    return linked, root[linked]


def near_duplicate_groups(
    shas: list[str], hashes: list[bytes], max_distance: int = NEAR_DUPLICATE_MAX_DISTANCE
) -> list[str]:
    """Connected components (scipy) of the graph joining perceptual hashes within ``max_distance`` bits.

    Returns, per row, its group id: the smallest sha256 in its group (so ids depend on content only).
    Holds only the hashes (32 bytes per image) and compares the distinct ones in blocks of rows with numpy;
    the pairs found are kept as sparse edges, thinned to a spanning forest whenever they outnumber the hashes,
    so memory stays bounded even when most images look alike. 20k images take about two seconds.
    """
    n = len(shas)
    if n == 0:
        return []
    packed = np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, -1)
    # equal hashes (blank or pixel-identical images) are one node: a dump of them costs nothing extra
    distinct, node = np.unique(packed, axis=0, return_inverse=True)
    words = distinct.view(np.uint64) if distinct.shape[1] % 8 == 0 else distinct
    m = len(words)
    rows, cols = np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    for new_rows, new_cols in _near_pairs(words, max_distance):
        rows, cols = np.concatenate([rows, new_rows]), np.concatenate([cols, new_cols])
        if len(rows) > m:
            rows, cols = _spanning_edges(m, rows, cols)
    labels = _components(m, rows, cols)[node.ravel()]
    return pd.Series(shas).groupby(labels).transform("min").tolist()
