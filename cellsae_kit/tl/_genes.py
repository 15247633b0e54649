"""``tl.feature_genes`` and ``tl.top_genes``: gene loadings of SAE features learnt on any representation."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import linalg, sparse
from tqdm.auto import tqdm

from .. import get
from .._docs import doc_params
from ._shared import (
    CHUNK_ELEMENTS,
    as_float,
    as_matrix,
    column_moments,
    correlation,
    cross,
    gene_chunks,
    get_expression,
)

logger = logging.getLogger("cellsae_kit")

Method = Literal["correlation", "regression", "de"]
METHODS = ("correlation", "regression", "de")
SIGNS = ("positive", "negative", "both")
# Ridge on standardised activations, for numerical safety only: it keeps the fit defined when features are
# exactly collinear or outnumber the cells. Real SAE features can be nearly collinear (smallest eigenvalue 1e-5
# measured on pbmc68k_reduced), so a larger ridge would visibly shrink the least-squares answer.
RIDGE = 1e-10
# A group whose variance is below this fraction of its mean square is constant up to round-off.
CONSTANT_RTOL = 1e-10


def regression(expr: np.ndarray | sparse.spmatrix, codes: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Coefficients of a per-gene linear regression of expression on all feature activations (with intercept).

    Ordinary least squares, with a ridge of ``1e-10`` on standardised activations for numerical safety only: it
    keeps the solution defined when features are exactly collinear or outnumber the cells, and changes an
    identifiable fit by about ``1e-10`` over the smallest eigenvalue of the activations' correlation matrix.
    Dead features are left out of the fit.

    Parameters
    ----------
    expr
        Expression, cells x genes, dense or sparse.
    codes
        Activations, cells x features, dense or sparse.

    Returns
    -------
    Genes x features (float64): the change in expression per unit of activation, the other features held fixed.
    Dead features get zero columns.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._genes import regression
    >>> codes = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [0.0, 2.0]])
    >>> expr = 3.0 + codes @ np.array([[2.0], [-1.0]])
    >>> regression(expr, codes).round(4)
    array([[ 2., -1.]])
    """
    expr = as_matrix(expr)
    codes = sparse.csr_matrix(codes, dtype=np.float64)
    n_cells, n_features = codes.shape
    out = np.zeros((expr.shape[1], n_features))
    codes_sum, codes_sq = column_moments(codes)
    gram = (codes.T @ codes).toarray() - np.outer(codes_sum, codes_sum) / n_cells  # centred: fits an intercept
    alive = np.diag(gram) > CONSTANT_RTOL * codes_sq
    if not alive.any():
        return out
    scale = np.sqrt(np.diag(gram)[alive])
    factor = linalg.cho_factor(gram[np.ix_(alive, alive)] / np.outer(scale, scale) + RIDGE * np.eye(alive.sum()))
    codes_t = codes[:, alive].T.tocsr()
    for block, X in gene_chunks(expr, n_features):
        gene_sum, _ = column_moments(X)
        rhs = cross(codes_t, X) - np.outer(codes_sum[alive], gene_sum) / n_cells
        out[block, alive] = (linalg.cho_solve(factor, rhs / scale[:, None]) / scale[:, None]).T
    return out


def _row_stats(expr: Any, rows: np.ndarray, center: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Sum, sum of squares (about ``center`` when given) and number of non-zero values per gene over ``rows``."""
    n_genes = expr.shape[1]
    total, squares, nonzero = np.zeros(n_genes), np.zeros(n_genes), np.zeros(n_genes, dtype=np.int64)
    step = max(1, CHUNK_ELEMENTS // n_genes)
    for start in range(0, len(rows), step):
        X = as_float(expr[rows[start : start + step]])
        if sparse.issparse(X):
            nonzero += np.bincount(X.indices, minlength=n_genes)
            X = X.toarray() if center is not None else X
        else:
            nonzero += np.count_nonzero(X, axis=0)
        if center is not None:
            X = X - center
        s, q = column_moments(X)
        total += s
        squares += q
    return total, squares, nonzero


def welch_de(
    expr: np.ndarray | sparse.spmatrix,
    codes: np.ndarray | sparse.spmatrix,
    *,
    top_fraction: float = 0.01,
    min_cells: int = 3,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Per feature, Welch's t-test of its most active cells against the cells where it is zero, for every gene.

    The rule of the reference study (Schuster 2024): the ``top_fraction`` most active cells (at least
    ``min_cells``, at most those active) against the cells where the feature is exactly zero; Welch's unequal
    variance t-test per gene; Benjamini-Hochberg over the genes of each feature. The inactive group is
    summarised as all cells minus the active ones, so each feature costs a pass over its active cells only.

    Parameters
    ----------
    expr
        Expression, cells x genes, dense or sparse.
    codes
        Activations, cells x features, dense or sparse.
    top_fraction
        Fraction of all cells compared as the most active.
    min_cells
        Fewest cells in either group for a feature to be tested (at least 2).
    progress
        Show a progress bar over the features.

    Returns
    -------
    ``t`` (genes x features; positive = higher in the most active cells), ``pvals`` and ``pvals_adj``
    (genes x features) and ``tested`` (one boolean per feature). Untested features get zero ``t`` and NaN
    p-values. Genes constant in both groups get ``t = 0`` and ``p = 1`` (the test is undefined; scipy gives NaN,
    or an infinite ``t`` when the two constants differ).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._genes import welch_de
    >>> rng = np.random.default_rng(0)
    >>> codes = np.zeros((300, 1))
    >>> codes[:30, 0] = np.arange(30, 0, -1)
    >>> expr = rng.normal(size=(300, 2))
    >>> expr[:30, 0] += 5
    >>> result = welch_de(expr, codes, top_fraction=0.05)
    >>> bool(result["pvals_adj"][0, 0] < 1e-5), bool(result["pvals_adj"][1, 0] > 0.01)
    (True, True)
    """
    from scipy import stats  # imported here: scipy.stats is slow to load and large

    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction={top_fraction} must be in (0, 1]; the reference study uses 0.01.")
    if int(min_cells) < 2:
        raise ValueError(f"min_cells={min_cells} must be at least 2: a t-test needs a variance in each group.")
    expr = as_matrix(expr)
    codes = sparse.csc_matrix(codes, dtype=np.float64)
    codes.eliminate_zeros()
    codes.sort_indices()  # ties in activation are broken by cell order, as a stable sort would
    n_cells, n_features = codes.shape
    n_genes = expr.shape[1]
    n_top = max(math.ceil(top_fraction * n_cells), int(min_cells))
    all_sum, all_sq, all_nonzero = _row_stats(expr, np.arange(n_cells))
    t = np.zeros((n_genes, n_features))
    pvals = np.full((n_genes, n_features), np.nan)
    pvals_adj = np.full((n_genes, n_features), np.nan)
    tested = np.zeros(n_features, dtype=bool)
    for j in tqdm(range(n_features), desc="feature DE", unit="feature", disable=not progress, leave=False):
        cells = codes.indices[codes.indptr[j] : codes.indptr[j + 1]]
        values = codes.data[codes.indptr[j] : codes.indptr[j + 1]]
        top = cells[np.argsort(-values, kind="stable")[:n_top]]
        n_zero = n_cells - len(cells)
        if len(top) < min_cells or n_zero < min_cells:
            continue
        # Most active cells: two passes (mean, then squares about it) so that constant genes give exact zeros.
        top_mean = _row_stats(expr, top)[0] / len(top)
        top_var = _row_stats(expr, top, center=top_mean)[1] / (len(top) - 1)
        # Inactive cells: everything minus the active cells; a gene without non-zero values there is exactly 0.
        act_sum, act_sq, act_nonzero = _row_stats(expr, cells)
        has_values = (all_nonzero - act_nonzero) > 0
        zero_sum = np.where(has_values, all_sum - act_sum, 0.0)
        zero_sq = np.where(has_values, all_sq - act_sq, 0.0)
        zero_mean = zero_sum / n_zero
        zero_ss = zero_sq - zero_sum * zero_mean
        zero_var = np.where(zero_ss > CONSTANT_RTOL * zero_sq, zero_ss, 0.0) / (n_zero - 1)
        a, b = top_var / len(top), zero_var / n_zero
        se2 = a + b
        varies = se2 > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            t_j = np.where(varies, (top_mean - zero_mean) / np.sqrt(se2), 0.0)
            dof = np.where(varies, se2**2 / (a**2 / (len(top) - 1) + b**2 / (n_zero - 1)), 1.0)
        p_j = np.where(varies, 2 * stats.t.sf(np.abs(t_j), dof), 1.0)
        t[:, j], pvals[:, j] = t_j, p_j
        pvals_adj[:, j] = stats.false_discovery_control(p_j, method="bh")
        tested[j] = True
    return {"t": t, "pvals": pvals, "pvals_adj": pvals_adj, "tested": tested}


@doc_params
def feature_genes(
    adata: AnnData,
    key: str = "sae",
    *,
    layer: str | None = None,
    method: Method = "correlation",
    use_raw: bool | None = None,
    mod: str | None = None,
    top_fraction: float = 0.01,
    min_cells: int = 3,
    key_added: str | None = None,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Compute gene loadings of every SAE feature from the data, for representations without a map to genes.

    :func:`cellsae_kit.tl.sae` writes gene loadings itself when the input is expression or a PCA (a linear map
    exists). For nonlinear embeddings (scVI, a foundation model) this tool relates each feature's activations
    to the measured expression instead. It also works for any SAE, to compare with the composed loadings.

    Parameters
    ----------
    {adata}
    {key}
    layer
        Use this layer of expression (log-normalised counts are best) instead of ``adata.raw`` or ``X``.
    method
        - ``"correlation"``: Pearson r of each feature's activation with each gene (-1 to 1; marginal: a gene
          shared by two co-firing features loads on both).
        - ``"regression"``: coefficients of a per-gene least-squares fit of expression on all activations with
          an intercept: the change in expression per unit of activation, the other features held fixed. A ridge of
          ``1e-10`` on standardised activations only keeps the fit defined when features are collinear or
          outnumber the cells. Features that co-fire make these coefficients unstable; ``"correlation"`` is
          the robust default.
        - ``"de"``: the reference study's rule: the ``top_fraction`` most active cells against the cells where
          the feature is zero, Welch's t-test per gene; the loading is the t statistic (signed, comparable
          between genes whatever their expression level, and unchanged by per-gene scaling). Benjamini-Hochberg
          adjusted p-values (over the genes of each feature) are written too. Slowest: one pass per feature.
    use_raw
        Use ``adata.raw`` (restricted to ``adata.var_names``, since ``varm`` has one row per gene of ``adata``).
        ``None``: ``adata.raw`` when it exists and no ``layer`` is given, as in scanpy.
    {mod}
    top_fraction
        ``"de"`` only: fraction of all cells taken as a feature's most active cells (at least ``min_cells``).
    min_cells
        ``"de"`` only: a feature active in fewer cells, or inactive in fewer, is not tested (zero loadings, NaN
        p-values; a warning says how many).
    key_added
        ``varm`` key of the loadings (default ``"<key>_loadings"``, replacing what :func:`cellsae_kit.tl.sae`
        wrote there).
    progress
        Show a progress bar (``"de"``).
    {copy}

    {copy_returns}
    Writes

    - ``varm[key_added]``: genes x features (float32); dead features and constant genes get zeros;
    - ``varm[key_added + "_pvals_adj"]`` (``"de"`` only; an older one is removed for other methods);
    - ``uns[key]["params"]["loadings"] = "feature_genes:<method>"`` when writing ``"<key>_loadings"``, and
      ``uns[key]["params"]["feature_genes"][key_added]``: method, expression source and settings.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_umap", n_features=32, k=4, n_epochs=10, progress=False)
    >>> "sae_loadings" in adata.varm  # no linear map from a UMAP to genes
    False
    >>> csk.tl.feature_genes(adata)  # correlations with the log-normalised adata.raw
    >>> adata.varm["sae_loadings"].shape, adata.uns["sae"]["params"]["loadings"]
    ((765, 32), 'feature_genes:correlation')
    """
    if key_added is not None:
        get.check_key(key_added)
    get.check_adata(adata)
    codes = get.codes(adata, key)
    if key not in adata.uns:
        raise KeyError(f"adata.uns has no {key!r} next to obsm['X_{key}']; run cellsae_kit.tl.sae(adata, ...).")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; choose one of {', '.join(map(repr, METHODS))}.")
    target = f"{key}_loadings" if key_added is None else key_added
    genes = get.genes(adata, key, mod)
    mod = get.modality_name(adata, genes)
    expr, source = get_expression(genes, layer, use_raw)

    pvals_adj = None
    if method == "correlation":
        loadings = correlation(expr, codes)
    elif method == "regression":
        loadings = regression(expr, codes)
    else:
        result = welch_de(expr, codes, top_fraction=top_fraction, min_cells=min_cells, progress=progress)
        loadings, pvals_adj = result["t"], result["pvals_adj"]
        n_untested = int((~result["tested"]).sum())
        if n_untested:
            warnings.warn(
                f"{n_untested} of {codes.shape[1]} features are active in fewer than min_cells={min_cells} cells "
                f"(or inactive in fewer) and were not tested: zero loadings, NaN p-values in varm[{target!r} + "
                "'_pvals_adj'].",
                UserWarning,
                stacklevel=2,
            )

    # Everything succeeded: only now touch the user's object.
    adata = adata.copy() if copy else adata
    genes = adata if mod is None else adata.mod[mod]
    genes.varm[target] = loadings.astype(np.float32)
    if pvals_adj is not None:
        genes.varm[f"{target}_pvals_adj"] = pvals_adj
    elif f"{target}_pvals_adj" in genes.varm:
        del genes.varm[f"{target}_pvals_adj"]  # from an earlier "de" run: would no longer match the loadings
    params = adata.uns[key].setdefault("params", {})
    if target == f"{key}_loadings":
        rule = f"feature_genes:{method}"
        previous = params.get("loadings")
        params["loadings"] = rule if mod is None else (previous if isinstance(previous, dict) else {}) | {mod: rule}
    record = {"method": method, "expression": source}
    if method == "de":
        record |= {"top_fraction": float(top_fraction), "min_cells": int(min_cells)}
    params.setdefault("feature_genes", {})[target if mod is None else f"{mod}:{target}"] = record
    return adata if copy else None


@doc_params
def top_genes(
    adata: AnnData,
    feature: int | str,
    key: str = "sae",
    *,
    n: int = 20,
    sign: Literal["positive", "negative", "both"] = "positive",
    loadings: str | None = None,
    mod: str | None = None,
) -> pd.DataFrame:
    """List the genes with the largest loadings on one SAE feature.

    Parameters
    ----------
    {adata}
    feature
        Feature number, as an integer or a string (``17`` or ``"17"``).
    {key}
    n
        Number of genes (fewer when fewer genes load with the requested sign).
    sign
        ``"positive"`` (genes the feature raises, largest first), ``"negative"`` (genes it lowers, most negative
        first) or ``"both"`` (largest absolute loading first). Genes with zero loading are never listed.
    loadings
        ``varm`` key of the loadings (default ``"<key>_loadings"``, written by :func:`cellsae_kit.tl.sae` or
        :func:`cellsae_kit.tl.feature_genes`).
    {mod}

    Returns
    -------
    A DataFrame with columns ``gene``, ``loading``, ``sign`` (``"positive"`` or ``"negative"``) and, when the
    loadings come from ``feature_genes(method="de")``, ``pval_adj``; rows ordered as described for ``sign``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    >>> csk.tl.top_genes(adata, 0, n=5).columns.tolist()
    ['gene', 'loading', 'sign']
    """
    get.check_adata(adata)
    genes = get.genes(adata, key, mod)
    name = f"{key}_loadings" if loadings is None else loadings
    if name not in genes.varm:
        raise KeyError(
            f"genes.varm has no {name!r} (genes x features loadings). cellsae_kit.tl.sae fills it when trained on "
            f"expression or on a representation with a linear map to genes (PCA); for any other run "
            f"cellsae_kit.tl.feature_genes(adata, key={key!r})."
        )
    if sign not in SIGNS:
        raise ValueError(f"sign={sign!r} is not known; choose one of {', '.join(map(repr, SIGNS))}.")
    if int(n) < 1:
        raise ValueError(f"n={n} must be at least 1.")
    matrix = np.asarray(genes.varm[name])
    index = get.feature_index(feature, matrix.shape[1], key)
    column = np.asarray(matrix[:, index], dtype=np.float64).ravel()
    if sign == "positive":
        order = np.argsort(-column, kind="stable")
        order = order[column[order] > 0]
    elif sign == "negative":
        order = np.argsort(column, kind="stable")
        order = order[column[order] < 0]
    else:
        order = np.argsort(-np.abs(column), kind="stable")
        order = order[column[order] != 0]
    order = order[: int(n)]
    table = pd.DataFrame(
        {
            "gene": genes.var_names[order].to_numpy(),
            "loading": column[order],
            "sign": np.where(column[order] > 0, "positive", "negative"),
        }
    )
    if f"{name}_pvals_adj" in genes.varm:
        table["pval_adj"] = np.asarray(genes.varm[f"{name}_pvals_adj"])[order, index]
    return table
