"""Near-duplicate groups: connected components of hashes within the distance, content-only ids, bounded blocks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bakeoff import splits


def _shas(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def _reference_groups(bits: np.ndarray, shas: list[str], max_distance: int) -> list[str]:
    """Plain breadth-first search over the dense distance matrix: slow, obviously right."""
    distance = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    group = [-1] * len(bits)
    for seed in range(len(bits)):
        if group[seed] < 0:
            group[seed], todo = seed, [seed]
            while todo:
                i = todo.pop()
                for j in np.flatnonzero(distance[i] <= max_distance).tolist():
                    if group[j] < 0:
                        group[j] = seed
                        todo.append(j)
    smallest = {}
    for g, sha in zip(group, shas):
        smallest[g] = min(sha, smallest.get(g, sha))
    return [smallest[g] for g in group]


def _planted(n: int, n_bits: int, seed: int) -> np.ndarray:
    """Random hashes; half of them near copies (0-4 flipped bits) of the first 20, so clusters and chains form."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(n, n_bits), dtype=np.uint8)
    for dst in range(20, n, 2):
        bits[dst] = bits[rng.integers(0, 20)]
        bits[dst, rng.choice(n_bits, rng.integers(0, 5), replace=False)] ^= 1
    return bits


@pytest.mark.parametrize("n_bits", [256, 64, 72])  # 72 bits: not whole 64-bit words, compared byte by byte
def test_groups_match_a_brute_force_search(n_bits, monkeypatch):
    bits = _planted(300, n_bits, seed=n_bits)
    shas = _shas(300)
    hashes = [np.packbits(row).tobytes() for row in bits]
    expected = _reference_groups(bits, shas, 6)
    assert 30 < len(set(expected)) < 290  # the case has real groups and real singletons
    assert splits.near_duplicate_groups(shas, hashes, 6) == expected
    thinned = []
    spanning = splits._spanning_edges
    monkeypatch.setattr(splits, "_spanning_edges", lambda *args: thinned.append(1) or spanning(*args))
    monkeypatch.setattr(splits, "_PAIR_BLOCK", 300 * 7)  # 7 rows per block: many blocks, the edges get thinned
    assert splits.near_duplicate_groups(shas, hashes, 6) == expected
    assert thinned  # the spanning-forest step ran and changed nothing


def test_a_chain_is_one_group_even_when_its_ends_are_far_apart():
    a = np.zeros(256, np.uint8)
    b, c = a.copy(), a.copy()
    b[:10] = 1
    c[:20] = 1  # a-b 10 bits, b-c 10 bits, a-c 20 bits
    far = np.ones(256, np.uint8)
    shas = ["c" * 64, "a" * 64, "b" * 64, "0" * 64]
    groups = splits.near_duplicate_groups(shas, [np.packbits(x).tobytes() for x in (a, b, c, far)], 16)
    assert groups == ["a" * 64, "a" * 64, "a" * 64, "0" * 64]


def test_identical_hashes_are_one_group_and_empty_input_is_fine():
    shas = _shas(1000)
    assert set(splits.near_duplicate_groups(shas, [bytes(32)] * 1000, 0)) == {min(shas)}
    assert splits.near_duplicate_groups([], [], 16) == []
