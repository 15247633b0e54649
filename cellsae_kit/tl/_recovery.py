"""``tl.completeness`` and ``tl.recovery``: how much known truth a representation holds and a factorisation finds."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ..models import check_data
from ._shared import Truth, check_truth, correlations, get_truth, moments

THRESHOLD = 0.95


def _dense_or_csr(X: Any, name: str) -> np.ndarray | sparse.csr_matrix:
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    X = sparse.csr_matrix(X) if sparse.issparse(X) else np.asarray(X)
    check_data(X, name)
    return X.astype(np.float64)


def redundant_pairs(codes: np.ndarray | sparse.spmatrix, threshold: float = THRESHOLD) -> pd.DataFrame:
    """Pairs of distinct features whose activations correlate above ``threshold`` (Pearson r, not absolute).

    Only pairs that are active in a common cell can correlate positively, so the products are taken over the
    sparse co-activation matrix: cheap for SAE codes with thousands of features.

    Parameters
    ----------
    codes
        Cells x features.
    threshold
        Minimum r.

    Returns
    -------
    Columns ``feature_a``, ``feature_b`` (column numbers, ``feature_a < feature_b``) and ``r``.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._recovery import redundant_pairs
    >>> redundant_pairs(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0], [3.0, 6.1, 0.0]]))
       feature_a  feature_b         r
    0          0          1  0.999...
    """
    n = codes.shape[0]
    codes = sparse.csr_matrix(codes, dtype=np.float64)
    mean, sd = moments(codes)
    gram = sparse.triu(codes.T @ codes, k=1).tocoo()
    a, b = gram.row, gram.col
    keep = (sd[a] > 0) & (sd[b] > 0)
    a, b = a[keep], b[keep]
    r = (gram.data[keep] / n - mean[a] * mean[b]) / (sd[a] * sd[b])
    hit = r > threshold
    order = np.lexsort((b[hit], a[hit]))
    return pd.DataFrame(
        {"feature_a": a[hit][order].astype(np.int64), "feature_b": b[hit][order].astype(np.int64), "r": r[hit][order]}
    )


def recovery_scores(
    codes: np.ndarray | sparse.spmatrix,
    truth: np.ndarray | pd.DataFrame,
    *,
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """Score how well the features of a factorisation recover known variables (the array core of :func:`recovery`).

    Parameters
    ----------
    codes
        Cells x features (SAE activations, PCA scores, ...), dense or sparse.
    truth
        Cells x true variables.
    threshold
        ``|r|`` above which a feature counts as recovering a variable (and r above which two features count as
        redundant).

    Returns
    -------
    ``variables`` (a DataFrame, one row per true variable), ``summary`` (a dict of numbers) and
    ``redundant_pairs`` (a DataFrame); see :func:`recovery`.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._recovery import recovery_scores
    >>> truth = np.random.default_rng(0).poisson(3.0, size=(100, 3)).astype(float)
    >>> scores = recovery_scores(2 * truth[:, [2, 0, 1]], truth)
    >>> scores["variables"]["best_feature"].tolist(), round(scores["summary"]["matched_score"], 6)
    ([1, 2, 0], 1.0)
    """
    from scipy.optimize import linear_sum_assignment  # imported here: scipy.optimize is large

    codes = _dense_or_csr(codes, "the features")
    truth, names = check_truth(truth, codes.shape[0])
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold} must lie between 0 and 1.")
    r = correlations(codes, truth)
    a = np.abs(r)
    n_features, n_variables = a.shape
    best = a.argmax(axis=0)
    cols = np.arange(n_variables)
    # Hungarian assignment on |r|: each variable gets its own feature; with fewer features than variables the
    # unmatched variables score 0, so a small factorisation cannot look complete.
    var_idx, feat_idx = linear_sum_assignment(a.T, maximize=True)
    matched_feature = np.full(n_variables, -1, dtype=np.int64)
    matched_feature[var_idx] = feat_idx
    matched = np.zeros(n_variables)
    matched[var_idx] = a[feat_idx, var_idx]
    variables = pd.DataFrame(
        {
            "best_abs_r": a[best, cols],
            "best_r": r[best, cols],
            "best_feature": best.astype(np.int64),
            "n_features_above": (a > threshold).sum(axis=0).astype(np.int64),
            "matched_feature": matched_feature,
            "matched_abs_r": matched,
        },
        index=pd.Index(names, name="variable"),
    )
    _, sd = moments(codes)
    active = sd > 0
    nnz = codes.getnnz(axis=1) if sparse.issparse(codes) else (codes != 0).sum(axis=1)
    pairs = redundant_pairs(codes, threshold)
    summary = {
        "median_best_abs_r": float(np.median(variables["best_abs_r"])),
        "mean_best_abs_r": float(variables["best_abs_r"].mean()),
        "matched_score": float(matched.mean()),
        "n_recovered": int((variables["best_abs_r"] > threshold).sum()),
        "n_features_above": int((a > threshold).any(axis=1).sum()),
        "n_redundant_pairs": len(pairs),
        "n_active_features": int(active.sum()),
        "n_features": int(n_features),
        "n_variables": int(n_variables),
        "mean_l0": float(np.mean(nnz)),
        "threshold": float(threshold),
    }
    return {"variables": variables, "summary": summary, "redundant_pairs": pairs}


def completeness_scores(
    rep: np.ndarray | sparse.spmatrix,
    truth: np.ndarray | pd.DataFrame,
    *,
    test_size: float = 0.2,
    random_state: int = 0,
) -> pd.Series:
    """Held-out R^2 of a linear regression from a representation to each true variable (array core).

    Parameters
    ----------
    rep
        Cells x dimensions.
    truth
        Cells x true variables.
    test_size
        Fraction of cells held out to score the regression.
    random_state
        Seed of the split.

    Returns
    -------
    R^2 per variable on the held-out cells (1 = the variable is a linear function of the representation; 0 =
    no better than its mean; negative = worse).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._recovery import completeness_scores
    >>> rng = np.random.default_rng(0)
    >>> rep = rng.normal(size=(200, 5))
    >>> completeness_scores(rep, rep @ rng.normal(size=(5, 2))).round(6).tolist()
    [1.0, 1.0]
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split

    rep = _dense_or_csr(rep, "the representation")
    truth, names = check_truth(truth, rep.shape[0])
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} must lie between 0 and 1.")
    train, test = train_test_split(np.arange(rep.shape[0]), test_size=test_size, random_state=random_state)
    if len(test) < 2:
        raise ValueError(f"test_size={test_size} leaves {len(test)} cell(s) to score on; pass more cells.")
    if len(train) <= rep.shape[1]:
        warnings.warn(
            f"{len(train)} training cells for a regression from {rep.shape[1]} dimensions: the fit is "
            "underdetermined and the held-out R^2 understates the representation; use more cells.",
            stacklevel=2,
        )
    model = LinearRegression().fit(rep[train], truth[train])
    r2 = r2_score(truth[test], model.predict(rep[test]), multioutput="raw_values")
    return pd.Series(r2, index=pd.Index(names, name="variable"), name="r2")


def factor_key(adata: AnnData, key: str) -> str:
    """Return the ``obsm`` key of a factorisation: ``key`` itself when it is in ``obsm``, else ``"X_<key>"``."""
    get.check_adata(adata)
    if key in adata.obsm:
        return key
    if f"X_{key}" in adata.obsm:
        return f"X_{key}"
    available = ", ".join(repr(k) for k in adata.obsm) or "none"
    raise KeyError(
        f"key={key!r}: neither adata.obsm[{key!r}] nor adata.obsm['X_{key}'] exists (available: {available}). "
        "Train an SAE with cellsae_kit.tl.sae or a baseline with cellsae_kit.tl.factorize first."
    )


@doc_params
def completeness(
    adata: AnnData,
    use_rep: str,
    *,
    truth: Truth = "true_programs",
    test_size: float = 0.2,
    random_state: int = 0,
    key_added: str = "completeness",
    inplace: bool = True,
) -> pd.DataFrame:
    """How completely a representation holds the true variables: held-out R^2 of a linear regression.

    The reference study's measure: a linear regression from the representation to each true variable is fitted
    on most cells and scored (R^2) on the held-out rest. An SAE on a representation can only find what the
    representation holds linearly.

    Parameters
    ----------
    {adata}
    use_rep
        The representation: an ``obsm`` key (``"X_pca"``, ``"X_autoencoder"``, ...).
    truth
        An ``obsm`` key of the true variables (cells x variables), or such an array or DataFrame.
    test_size
        Fraction of cells held out.
    random_state
        Seed of the split.
    key_added
        The table is stored in ``uns[key_added][use_rep]``.
    inplace
        Store the table in ``adata`` (it is returned either way).

    Returns
    -------
    One row per true variable with its held-out ``r2``.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> adata = csk.datasets.simulate(300, 10, 4, n_genes=100)
    >>> csk.tl.embed(adata, "pca", 20)
    >>> table = csk.tl.completeness(adata, "X_pca")
    >>> table.shape, bool(table["r2"].median() > 0.5)
    ((10, 1), True)
    """
    get.check_key(key_added)
    get.check_adata(adata)
    if use_rep not in adata.obsm:
        available = ", ".join(repr(k) for k in adata.obsm) or "none"
        raise KeyError(f"use_rep={use_rep!r} is not in adata.obsm. Available representations: {available}.")
    values, names, _ = get_truth(adata, truth)
    r2 = completeness_scores(
        _dense_or_csr(adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]"),
        pd.DataFrame(values, columns=names),
        test_size=test_size,
        random_state=random_state,
    )
    table = r2.to_frame()
    if inplace:
        adata.uns.setdefault(key_added, {})[use_rep] = table.copy()
    return table


@doc_params
def recovery(
    adata: AnnData,
    key: str = "sae",
    *,
    truth: Truth = "true_programs",
    threshold: float = THRESHOLD,
    key_added: str = "recovery",
    inplace: bool = True,
) -> dict[str, Any]:
    """How well the features of an SAE (or any factorisation) recover the true variables.

    The reference study's measures, computed with Pearson r between every feature's activations and every true
    variable over all cells: per variable the best ``|r|`` over features and the feature that reaches it; features
    with ``|r|`` above ``threshold``; redundant feature pairs; plus a one-to-one score: features and variables are
    matched by the Hungarian assignment on ``|r|`` (:func:`scipy.optimize.linear_sum_assignment`) and the matched
    ``|r|`` averaged over the variables (0 for variables left without a feature). The best ``|r|`` lets one feature
    serve several variables; the matched score does not.

    Parameters
    ----------
    {adata}
    key
        The factorisation: ``adata.obsm[key]`` when it exists, else ``adata.obsm["X_<key>"]``. So ``"sae"``
        scores :func:`cellsae_kit.tl.sae`'s ``obsm["X_sae"]``, ``"ica_pca"`` scores
        :func:`cellsae_kit.tl.factorize`'s ``obsm["X_ica_pca"]``, and ``"X_pca"`` scores the PCA itself.
    truth
        An ``obsm`` key of the true variables (cells x variables), or such an array or DataFrame.
    threshold
        ``|r|`` above which a feature recovers a variable, and r above which two features are redundant.
    key_added
        The result is stored in ``uns[key_added][key]``.
    inplace
        Store the result in ``adata`` (it is returned either way).

    Returns
    -------
    A dict with

    - ``variables``: one row per true variable: ``best_abs_r``, ``best_r`` (signed), ``best_feature`` (column
      number), ``n_features_above`` (features with ``|r|`` > ``threshold``), ``matched_feature`` (-1 when none)
      and ``matched_abs_r``;
    - ``summary``: ``median_best_abs_r``, ``mean_best_abs_r``, ``matched_score`` (mean matched ``|r|``),
      ``n_recovered`` (variables with a feature above ``threshold``), ``n_features_above`` (features above
      ``threshold`` for some variable), ``n_redundant_pairs``, ``n_active_features`` (features that vary),
      ``n_features``, ``n_variables``, ``mean_l0`` (non-zero features per cell) and ``threshold``;
    - ``redundant_pairs``: ``feature_a``, ``feature_b`` and their ``r``.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> adata = csk.datasets.simulate(300, 10, 4, n_genes=100)
    >>> csk.tl.embed(adata, "pca", 20)
    >>> result = csk.tl.recovery(adata, "pca")
    >>> sorted(result), result["variables"].shape
    (['redundant_pairs', 'summary', 'variables'], (10, 6))
    """
    get.check_key(key_added)
    obsm_key = factor_key(adata, key)
    values, names, _ = get_truth(adata, truth)
    result = recovery_scores(
        _dense_or_csr(adata.obsm[obsm_key], f"adata.obsm[{obsm_key!r}]"),
        pd.DataFrame(values, columns=names),
        threshold=threshold,
    )
    if inplace:
        adata.uns.setdefault(key_added, {})[key] = {
            "variables": result["variables"].copy(),
            "summary": dict(result["summary"]),
            "redundant_pairs": result["redundant_pairs"].copy(),
        }
    return result
