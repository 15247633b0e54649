"""``tl.rank_features_groups``: the features that mark each group of cells, stored like scanpy's gene ranking."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params

PSEUDO_COUNT = 1e-3
FIELDS = ("names", "scores", "auroc", "logfoldchanges", "pvals", "pvals_adj")


def mann_whitney(x_in: np.ndarray, x_out: np.ndarray) -> dict[str, np.ndarray]:
    """Column-wise Mann-Whitney U test of ``x_in`` against ``x_out`` (the array core of the ranking).

    Ties are corrected for exactly when the only repeated value is zero, as in sparse activations (other ties
    among continuous activations have probability zero).

    Parameters
    ----------
    x_in, x_out
        Cells x features for the two sets of cells.

    Returns
    -------
    ``auroc`` (``U / (n_in n_out)``, the chance that a cell of the group outranks one of the rest), ``z`` (the
    normal score without continuity correction) and ``pvals`` (two-sided, with continuity correction).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._rank import mann_whitney
    >>> mann_whitney(np.array([[3.0], [4.0]]), np.array([[0.0], [1.0], [0.0]]))["auroc"]
    array([1.])
    """
    from scipy import stats  # imported here: scipy.stats is slow to load and large

    n1, n2 = x_in.shape[0], x_out.shape[0]
    n = n1 + n2
    ranks = stats.rankdata(np.vstack([x_in, x_out]), axis=0)
    u1 = ranks[:n1].sum(axis=0) - n1 * (n1 + 1) / 2
    zeros = (x_in == 0).sum(axis=0) + (x_out == 0).sum(axis=0)
    ties = zeros.astype(np.float64) ** 3 - zeros
    sigma = np.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))) if n > 1 else np.zeros_like(u1)
    delta = u1 - n1 * n2 / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sigma > 0, delta / sigma, 0.0)
        z_cc = np.where(sigma > 0, np.maximum(np.abs(delta) - 0.5, 0) / sigma, 0.0)
    return {"auroc": u1 / (n1 * n2), "z": z, "pvals": np.minimum(2 * stats.norm.sf(z_cc), 1.0)}


@doc_params
def rank_features_groups(
    adata: AnnData,
    groupby: str,
    key: str = "sae",
    *,
    method: Literal["auroc", "wilcoxon"] = "auroc",
    groups: Sequence[str] | Literal["all"] = "all",
    reference: str = "rest",
    n_features: int | None = None,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Rank the SAE features that mark each group of cells, like :func:`scanpy.tl.rank_genes_groups` for genes.

    Each feature's activations in a group are compared with the rest (or a reference group) by a Mann-Whitney U
    test; features are ordered by AUROC (``method="auroc"``) or by the test's z-score (``"wilcoxon"``).
    P-values are adjusted per group with Benjamini-Hochberg.

    Parameters
    ----------
    {adata}
    groupby
        A categorical ``obs`` column (cell types, clusters).
    {key}
    method
        Score to order features by: ``"auroc"`` (0.5 = no difference, 1 = the feature separates the group
        perfectly) or ``"wilcoxon"`` (z-score).
    groups
        Groups to rank, or ``"all"``.
    reference
        ``"rest"`` or a group to compare against.
    n_features
        Features stored per group (default all).
    key_added
        ``uns`` key of the result (default ``"rank_features_groups"``).
    {copy}

    {copy_returns}
    Writes ``uns[key_added]`` in the layout of scanpy's gene ranking: structured arrays ``names``, ``scores``,
    ``auroc``, ``logfoldchanges`` (log2 ratio of mean activations, pseudo-count 0.001), ``pvals``,
    ``pvals_adj``, one field per group, and ``params``; so
    ``sc.get.rank_genes_groups_df(adata, group, key=key_added)`` and
    ``sc.pl.rank_genes_groups(adata, key=key_added)`` work on it.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> csk.tl.rank_features_groups(adata, "bulk_labels")
    >>> sc.get.rank_genes_groups_df(adata, "CD19+ B", key="rank_features_groups").columns.tolist()
    ['names', 'scores', 'logfoldchanges', 'pvals', 'pvals_adj']
    """
    if key_added is not None:
        get.check_key(key_added)
    codes = get.codes(adata, key)
    labels = get.groups(adata, groupby)
    categories = [str(c) for c in labels.cat.categories]
    if method not in ("auroc", "wilcoxon"):
        raise ValueError(f"method={method!r} is not known; choose 'auroc' or 'wilcoxon'.")
    if reference != "rest" and reference not in categories:
        raise ValueError(f"reference={reference!r} is not a group of {groupby!r}: {', '.join(categories)}.")
    if isinstance(groups, str) and groups != "all":
        groups = [groups]
    tested = [c for c in categories if c != reference] if isinstance(groups, str) else [str(g) for g in groups]
    if not tested:
        raise ValueError(f"groups={list(groups)!r} names no group; pass 'all' or some of: {', '.join(categories)}.")
    repeated = sorted({g for g in tested if tested.count(g) > 1})
    if repeated:
        raise ValueError(f"groups names {', '.join(map(repr, repeated))} more than once; list each group once.")
    unknown = [g for g in tested if g not in categories]
    if unknown:
        raise ValueError(f"groups {unknown} are not in adata.obs[{groupby!r}]; it has {', '.join(categories)}.")
    if reference in tested:
        raise ValueError(
            f"reference={reference!r} is also a tested group: a group compared with itself has AUROC 0.5; leave it "
            "out of groups or choose another reference."
        )
    labels = labels.astype(str).to_numpy()
    for g in tested:
        if (labels == g).sum() == 0 or (labels != g if reference == "rest" else labels == reference).sum() == 0:
            raise ValueError(f"Group {g!r} or its reference has no cells; there is nothing to compare.")
    n_keep = codes.shape[1] if n_features is None else int(n_features)
    if not 1 <= n_keep <= codes.shape[1]:
        raise ValueError(f"n_features={n_features} must be between 1 and the number of features, {codes.shape[1]}.")

    per_group = {
        g: _rank_one(codes, labels == g, labels != g if reference == "rest" else labels == reference, method, n_keep)
        for g in tested
    }
    result = {field: np.rec.fromarrays([per_group[g][field] for g in tested], names=tested) for field in FIELDS}
    result["params"] = {
        "groupby": groupby,
        "reference": reference,
        "method": method,
        "use_raw": False,
        "corr_method": "benjamini-hochberg",
        "key": key,
    }
    adata = adata.copy() if copy else adata
    adata.uns["rank_features_groups" if key_added is None else key_added] = result
    return adata if copy else None


def _rank_one(codes: sparse.csr_matrix, is_in: np.ndarray, is_out: np.ndarray, method: str, n_keep: int) -> dict:
    from scipy import stats  # imported here: scipy.stats is slow to load and large

    x_in = codes[np.flatnonzero(is_in)].toarray()
    x_out = codes[np.flatnonzero(is_out)].toarray()
    test = mann_whitney(x_in, x_out)
    mean_in, mean_out = x_in.mean(axis=0), x_out.mean(axis=0)
    # Activations are in units where an active value is about 1; the pseudo-count keeps ratios finite.
    lfc = np.log2((mean_in + PSEUDO_COUNT) / (mean_out + PSEUDO_COUNT))
    scores = test["auroc"] if method == "auroc" else test["z"]
    order = np.argsort(-scores, kind="stable")[:n_keep]
    pvals_adj = stats.false_discovery_control(test["pvals"], method="bh")
    return {
        "names": np.array([str(i) for i in order], dtype=object),
        "scores": scores[order].astype(np.float32),
        "auroc": test["auroc"][order].astype(np.float32),
        "logfoldchanges": lfc[order].astype(np.float32),
        "pvals": test["pvals"][order],
        "pvals_adj": pvals_adj[order],
    }
