"""Paired tests: checked against scipy's exact binomial test and against known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from bakeoff import stats
from bakeoff.errors import BakeoffError


def _pairs(both: int, only_a: int, only_b: int, neither: int):
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


@pytest.mark.parametrize("only_a,only_b", [(4, 0), (10, 2), (7, 7), (0, 5), (30, 12)])
def test_mcnemar_matches_scipy_exact_binomial(only_a, only_b):
    a, b = _pairs(50, only_a, only_b, 8)
    result = stats.paired_test(a, b, "mcnemar")
    n = only_a + only_b
    assert result.p_value == pytest.approx(binomtest(only_a, n, 0.5, alternative="greater").pvalue)
    assert result.challenger_only == only_a and result.champion_only == only_b
    assert result.delta == pytest.approx((only_a - only_b) / a.size)


@pytest.mark.parametrize("b,c", [(0, 1), (1, 0), (3, 3), (9, 1), (40, 25), (200, 170)])
def test_mid_p_is_the_exact_p_minus_half_the_observed_count(b, c):
    """mid-p = P(X > b) + P(X = b)/2, checked against scipy's binomial distribution and exact test."""
    n = b + c
    exact = binomtest(b, n, 0.5, alternative="greater").pvalue
    assert stats.mcnemar_p(b, c) == pytest.approx(exact)
    assert stats.mcnemar_p(b, c, mid_p=True) == pytest.approx(binom.sf(b, n, 0.5) + binom.pmf(b, n, 0.5) / 2)
    assert stats.mcnemar_p(b, c, mid_p=True) < stats.mcnemar_p(b, c)


def test_mid_p_is_less_conservative_and_bootstrap_agrees_in_direction():
    a, b = _pairs(60, 4, 0, 10)
    exact = stats.paired_test(a, b, "mcnemar").p_value
    mid = stats.paired_test(a, b, "mcnemar-midp").p_value
    assert exact == pytest.approx(0.0625) and mid == pytest.approx(0.03125)
    clear = stats.paired_test(*_pairs(60, 25, 1, 10), test="bootstrap", n_bootstrap=1000)
    worse = stats.paired_test(*_pairs(60, 1, 25, 10), test="bootstrap", n_bootstrap=1000)
    assert clear.p_value < 0.01 < 0.99 < worse.p_value


def test_identical_models_are_never_significant():
    a, b = _pairs(40, 0, 0, 10)
    for test in stats.TESTS:
        result = stats.paired_test(a, b, test, n_bootstrap=200)
        assert result.delta == 0 and result.p_value >= 0.5


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(BakeoffError, match="same images"):
        stats.paired_test([1, 0], [1, 0, 1])
    with pytest.raises(BakeoffError, match="unknown test"):
        stats.paired_test([1], [0], "wilcoxon")
    with pytest.raises(BakeoffError, match="empty"):
        stats.paired_test([], [])
