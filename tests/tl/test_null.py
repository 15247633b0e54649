import itertools

import numpy as np
import pytest
from scipy import sparse, stats

from cellsae_kit.tl._null import expression_strata, matched_pvalues, null_moments, permutation_pvalues, quantile_bins


def _all_permutations(strata):
    """Every relabelling of genes that keeps each gene in its stratum (brute force)."""
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = np.arange(len(strata))
        for genes, permuted in zip(groups, parts, strict=True):
            order[genes] = permuted
        yield order


def test_null_moments_equal_brute_force_enumeration():
    rng = np.random.default_rng(0)
    strata = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    scores = rng.normal(size=(10, 2))
    members = sparse.csr_matrix(np.array([[1, 1, 0, 0, 1, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1, 0, 0, 0]]))
    sums = np.array([members @ scores[order] for order in _all_permutations(strata)])  # 4! 3! 3! = 864
    observed, mean, variance = null_moments(scores, members, strata)
    np.testing.assert_allclose(observed, members @ scores)
    np.testing.assert_allclose(mean, sums.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(variance, sums.var(axis=0), rtol=1e-12)


def test_matched_pvalues_agree_with_exact_and_monte_carlo_tails():
    """Brute force: every way of drawing the set's genes within 3 strata of 10 (252^3 draws)."""
    rng = np.random.default_rng(1)
    strata = np.repeat([0, 1, 2], 10)
    scores = rng.normal(size=(30, 1)) + 0.3 * strata[:, None]
    chosen = np.concatenate([rng.choice(10, 5, replace=False) + 10 * s for s in range(3)])
    members = sparse.csr_matrix(np.isin(np.arange(30), chosen).astype(float)[None, :])
    scores[chosen] += 0.4  # a modest programme
    per_stratum = [
        np.array([scores[10 * s + np.array(c), 0].sum() for c in itertools.combinations(range(10), 5)])
        for s in range(3)
    ]
    sums = per_stratum[0][:, None, None] + per_stratum[1][None, :, None] + per_stratum[2][None, None, :]
    exact = (sums >= (members @ scores)[0, 0] - 1e-12).mean()
    _, p = matched_pvalues(scores, members, strata)
    assert 0.001 < exact < 0.2
    assert p[0, 0] == pytest.approx(exact, rel=0.15)  # the normal tail of the exact moments
    monte_carlo = permutation_pvalues(scores, members, strata, n_permutations=4000)
    assert monte_carlo[0, 0] == pytest.approx(exact, abs=3 * np.sqrt(exact / 4000) + 1e-3)


def test_matched_pvalues_are_uniform_under_the_null():
    rng = np.random.default_rng(2)
    strata = np.repeat(np.arange(10), 50)
    scores = rng.normal(size=(500, 400)) + strata[:, None]  # level differs by stratum, no programme
    members = sparse.csr_matrix(np.isin(np.arange(500), rng.choice(500, 30, replace=False)).astype(float)[None, :])
    _, p = matched_pvalues(scores, members, strata)
    assert stats.kstest(p.ravel(), "uniform").pvalue > 0.01
    _, unmatched = matched_pvalues(scores, members, np.zeros(500, dtype=int))
    assert stats.kstest(unmatched.ravel(), "uniform").pvalue < 0.01  # against all genes the level leaks in


def test_a_set_that_fills_its_strata_cannot_vary():
    z, p = matched_pvalues(np.arange(4.0)[:, None], sparse.csr_matrix([[1, 1, 0, 0]]), np.array([0, 0, 1, 1]))
    assert z[0, 0] == 0 and p[0, 0] == 0.5


def test_strata_follow_mean_then_variance_and_shrink_for_few_genes():
    mean = np.repeat([1.0, 2.0], 50)
    variance = np.tile(np.arange(50.0), 2)
    strata = expression_strata(mean, variance, n_mean=2, n_variance=2)
    assert len(np.unique(strata)) == 4
    assert (strata[:50] < 2).all() and (strata[50:] >= 2).all()
    assert len(np.unique(expression_strata(np.arange(25.0), np.arange(25.0)))) == 2  # about 10 genes each
    assert quantile_bins(np.ones(6), 3).tolist() == [1] * 6  # ties stay together
    with pytest.raises(ValueError, match="one value per gene"):
        expression_strata(np.ones(5), np.ones(4))
