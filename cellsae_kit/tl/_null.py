"""A gene-set null matched to expression: gene labels permuted within strata of mean expression and variance.

Highly expressed genes have the largest loadings of most features (their correlations with anything are measured
with the least noise, and they dominate PCA-derived loadings), so a set of highly expressed genes such as the
ribosomal proteins is "enriched" in almost every feature against all genes. Against other genes of the same
expression stratum it is enriched only where the feature really raises it.

The statistic of a set is the sum of its genes' (rank-transformed) loadings. Permuting gene labels within strata
keeps the number of the set's genes in each stratum, so the statistic's permutation distribution is a sum of
independent draws without replacement, one per stratum: its mean and variance are exact (as in the stratified
rank-sum test of van Elteren), and the p-value is the normal tail beyond them. This gives p-values small enough
for Benjamini-Hochberg over thousands of terms, which Monte Carlo permutations would need millions of draws for;
:func:`permutation_pvalues` draws them to check the approximation.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

# Strata: genes are cut into quantile bins of mean expression (each bin can be cut by variance too). Variance bins
# are off by default: within a bin of mean expression the most variable genes are the cell-type markers, so
# matching on variance tests a programme's markers against other markers. On pbmc68k_reduced (64 features, GO BP,
# half the cells) 10 x 3 strata named 25% of features, 10 x 1 61% (all genes as one stratum: 69%).
N_MEAN_BINS = 10
N_VARIANCE_BINS = 1


def quantile_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin number (0 .. n_bins - 1) of each value by its rank, ties kept together.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._null import quantile_bins
    >>> quantile_bins(np.array([5.0, 1.0, 3.0, 3.0, 9.0, 0.0]), 3).tolist()
    [2, 0, 1, 1, 2, 0]
    """
    from scipy import stats

    ranks = stats.rankdata(values, method="average")
    return np.minimum(((ranks - 0.5) / len(values) * n_bins).astype(np.int64), n_bins - 1)


def expression_strata(
    mean: np.ndarray, variance: np.ndarray, n_mean: int = N_MEAN_BINS, n_variance: int = N_VARIANCE_BINS
) -> np.ndarray:
    """Stratum of each gene: its bin of mean expression, then its bin of variance within that bin.

    Parameters
    ----------
    mean, variance
        Per gene, over the cells used for the loadings.
    n_mean, n_variance
        Bins of mean expression, and of variance within each of them; fewer when there are few genes (each
        stratum keeps about 10 genes or more, so that a permutation has something to draw from).

    Returns
    -------
    Integer stratum per gene, numbered from 0.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._null import expression_strata
    >>> mean = np.arange(200.0)
    >>> strata = expression_strata(mean, mean**2, n_mean=10, n_variance=2)
    >>> len(np.unique(strata)), int(np.bincount(strata).min())
    (20, 10)
    """
    mean, variance = np.asarray(mean, dtype=np.float64), np.asarray(variance, dtype=np.float64)
    if mean.shape != variance.shape or mean.ndim != 1:
        raise ValueError(f"mean and variance need one value per gene; got shapes {mean.shape} and {variance.shape}.")
    n_genes = len(mean)
    n_mean = max(1, min(n_mean, n_genes // 10))
    n_variance = max(1, min(n_variance, n_genes // (10 * n_mean)))
    by_mean = quantile_bins(mean, n_mean)
    strata = np.zeros(n_genes, dtype=np.int64)
    for b in range(n_mean):
        inside = by_mean == b
        strata[inside] = b * n_variance + quantile_bins(variance[inside], n_variance)
    return np.unique(strata, return_inverse=True)[1]


def _stratum_matrix(strata: np.ndarray) -> sparse.csr_matrix:
    n = len(strata)
    return sparse.csr_matrix((np.ones(n), (np.arange(n), strata)), shape=(n, int(strata.max()) + 1))


def null_moments(
    scores: np.ndarray, members: sparse.spmatrix, strata: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each set's score sum and its exact mean and variance when gene labels are permuted within strata.

    Parameters
    ----------
    scores
        Genes x features (e.g. rank-transformed loadings).
    members
        Sets x genes, 1 where a gene is in a set.
    strata
        Stratum of each gene (:func:`expression_strata`).

    Returns
    -------
    ``observed``, ``mean`` and ``variance``, each sets x features.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._null import null_moments
    >>> scores = np.array([[1.0], [2.0], [3.0], [4.0]])
    >>> members = sparse.csr_matrix([[1, 0, 1, 0]])
    >>> [float(v[0, 0]) for v in null_moments(scores, members, np.array([0, 0, 1, 1]))]
    [4.0, 5.0, 0.5]
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = sparse.csr_matrix(members, dtype=np.float64)
    onehot = _stratum_matrix(np.asarray(strata))
    size = np.asarray(onehot.sum(axis=0)).ravel()  # genes per stratum
    mean = (onehot.T @ scores) / size[:, None]  # strata x features
    variance = (onehot.T @ scores**2) / size[:, None] - mean**2  # population variance
    count = np.asarray((members @ onehot).todense())  # sets x strata
    # A sum of c draws without replacement from n values has variance c (n - c) / (n - 1) times theirs.
    spread = np.divide(count * (size - count), size - 1, out=np.zeros_like(count), where=size > 1)
    return members @ scores, count @ mean, spread @ np.maximum(variance, 0.0)


def matched_pvalues(scores: np.ndarray, members: sparse.spmatrix, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p-values (larger than matched genes) and z-scores of each set and feature under the matched null.

    Returns
    -------
    ``z`` and ``pvalue``, sets x features; a set whose sum cannot vary (every gene of its strata in it) gets z 0
    and p 1.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._null import matched_pvalues
    >>> scores = np.arange(40.0)[:, None]
    >>> members = sparse.csr_matrix(np.eye(40)[30:].sum(axis=0, keepdims=True))
    >>> z, p = matched_pvalues(scores, members, np.zeros(40, dtype=int))
    >>> bool(p[0, 0] < 1e-4), bool(matched_pvalues(scores, members, np.arange(40) // 10)[1][0, 0] > 0.01)
    (True, True)
    """
    from scipy import stats

    observed, mean, variance = null_moments(scores, members, strata)
    sd = np.sqrt(variance)
    z = np.divide(observed - mean, sd, out=np.zeros_like(observed), where=sd > 1e-12 * (1 + np.abs(mean)))
    return z, stats.norm.sf(z)


def permutation_pvalues(
    scores: np.ndarray,
    members: sparse.spmatrix,
    strata: np.ndarray,
    n_permutations: int = 1000,
    random_state: int = 0,
) -> np.ndarray:
    """Monte Carlo p-values of each set and feature: gene labels permuted within strata, ``(1 + hits) / (1 + n)``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._null import permutation_pvalues
    >>> scores = np.arange(40.0)[:, None]
    >>> members = sparse.csr_matrix(np.eye(40)[30:].sum(axis=0, keepdims=True))
    >>> float(permutation_pvalues(scores, members, np.zeros(40, dtype=int), 99)[0, 0])
    0.01
    """
    rng = np.random.default_rng(random_state)
    scores = np.asarray(scores, dtype=np.float64)
    members = sparse.csr_matrix(members, dtype=np.float64)
    strata = np.asarray(strata)
    observed = members @ scores
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    order = np.arange(len(strata))
    hits = np.zeros_like(observed)
    for _ in range(int(n_permutations)):
        for genes in groups:
            order[genes] = rng.permutation(genes)
        hits += members @ scores[order] >= observed - 1e-9 * (1 + np.abs(observed))
    return (1 + hits) / (1 + int(n_permutations))
