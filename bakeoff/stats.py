"""Paired significance tests for "is the challenger really better than the champion?".

Both models are scored on the SAME test images, so the right tests are paired ones: they look at
the images where the two models disagree, not at two independent accuracies. Both tests here are
one-sided (H1: the challenger is more accurate), because the gate only ever asks that question.

* McNemar (exact binomial on the discordant pairs, optional mid-p): the textbook test for two
  classifiers on one test set; exact, so it is valid for the small test sets this project sees.
* Paired bootstrap: resample images with replacement, recompute the accuracy difference; the p-value
  is the share of resamples where the challenger is not better. Works for any per-image score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bakeoff.errors import BakeoffError

TESTS = ("mcnemar", "mcnemar-midp", "bootstrap")


@dataclass(frozen=True)
class PairedResult:
    """Outcome of one paired comparison (challenger vs champion)."""

    test: str
    p_value: float
    delta: float  # challenger accuracy - champion accuracy
    accuracy_challenger: float
    accuracy_champion: float
    n: int  # paired images
    challenger_only: int  # images only the challenger gets right
    champion_only: int  # images only the champion gets right

    def as_dict(self) -> dict:
        return asdict(self)


def _as_bool(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise BakeoffError(f"{name} must be a 1-D array of per-image correctness")
    return arr.astype(bool)


def mcnemar_p(challenger_only: int, champion_only: int, mid_p: bool = False) -> float:
    """One-sided exact McNemar p-value: P(X >= b) for X ~ Binomial(b + c, 1/2).

    With ``mid_p`` half the probability of the observed count is removed, which is less
    conservative and still keeps the nominal level closely (Fagerland et al., 2013).
    """
    from scipy.stats import binom, binomtest

    b, c = int(challenger_only), int(champion_only)
    n = b + c
    if n == 0:
        return 1.0
    p = float(binomtest(b, n, 0.5, alternative="greater").pvalue)  # P(X >= b)
    if mid_p:  # scipy has no mid-p binomial test: subtract half the observed count's probability ourselves
        p -= 0.5 * float(binom.pmf(b, n, 0.5))
    return min(max(p, 0.0), 1.0)


def bootstrap_p(
    challenger_correct: np.ndarray, champion_correct: np.ndarray, n_bootstrap: int = 2000, seed: int = 0
) -> float:
    """One-sided paired bootstrap p-value: share of resamples where the challenger is not better."""
    diff = challenger_correct.astype(np.float64) - champion_correct.astype(np.float64)
    n = diff.size
    if n == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_bootstrap)
    # resample in chunks so a big test set never builds an n_bootstrap x n matrix at once
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        deltas[start:stop] = diff[idx].mean(axis=1)
    # +1 smoothing: a finite bootstrap never proves p = 0
    return float((np.sum(deltas <= 0.0) + 1) / (n_bootstrap + 1))


def paired_test(
    challenger_correct, champion_correct, test: str = "mcnemar", n_bootstrap: int = 2000, seed: int = 0
) -> PairedResult:
    """Compare two models' per-image correctness on the same images (same order)."""
    a = _as_bool(challenger_correct, "challenger_correct")
    b = _as_bool(champion_correct, "champion_correct")
    if a.shape != b.shape:
        raise BakeoffError(f"paired test needs the same images for both models ({a.size} vs {b.size})")
    if a.size == 0:
        raise BakeoffError("paired test needs at least one test image; the test split is empty")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    if test == "mcnemar":
        p = mcnemar_p(only_a, only_b)
    elif test == "mcnemar-midp":
        p = mcnemar_p(only_a, only_b, mid_p=True)
    elif test == "bootstrap":
        p = bootstrap_p(a, b, n_bootstrap=n_bootstrap, seed=seed)
    else:
        raise BakeoffError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    acc_a, acc_b = float(a.mean()), float(b.mean())
    return PairedResult(
        test=test,
        p_value=p,
        delta=acc_a - acc_b,
        accuracy_challenger=acc_a,
        accuracy_champion=acc_b,
        n=int(a.size),
        challenger_only=only_a,
        champion_only=only_b,
    )
