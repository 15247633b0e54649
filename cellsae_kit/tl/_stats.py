"""``tl.feature_stats``: one row per feature describing how and where it fires."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._docs import doc_params
from ..models._metrics import DENSE_THRESHOLD
from ._input import get_codes, get_groups

LOCAL_MAX_GROUPS = 1.5


def feature_table(codes: sparse.csr_matrix, groups: pd.Categorical | None = None) -> pd.DataFrame:
    """Per-feature statistics of a cells x features activation matrix (the array core of :func:`feature_stats`).

    Parameters
    ----------
    codes
        Activations, cells x features.
    groups
        Optional group of each cell.

    Returns
    -------
    One row per feature; see :func:`feature_stats` for the columns.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._stats import feature_table
    >>> feature_table(sparse.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0]])))[["frequency", "mean_active", "dead"]]
             frequency  mean_active   dead
    feature
    0              1.0          2.0  False
    1              0.0          0.0   True
    """
    codes = sparse.csc_matrix(codes)
    n_cells = codes.shape[0]
    nnz = np.diff(codes.indptr)
    total = np.asarray(codes.sum(axis=0)).ravel()
    frequency = nnz / n_cells
    table = pd.DataFrame(
        {
            "frequency": frequency,
            "mean_active": np.divide(total, nnz, out=np.zeros(len(nnz)), where=nnz > 0),
            "max": codes.max(axis=0).toarray().ravel() if codes.nnz else np.zeros(codes.shape[1]),
            "dead": nnz == 0,
            "dense": frequency > DENSE_THRESHOLD,
        },
        index=pd.Index([str(i) for i in range(codes.shape[1])], name="feature"),
    )
    if groups is None:
        return table
    groups = pd.Categorical(groups)
    onehot = sparse.csr_matrix(
        (np.ones(n_cells), (groups.codes, np.arange(n_cells))), (len(groups.categories), n_cells)
    )
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    # Mean activation per group, so that a large group does not look like a feature's home just by its size.
    means = np.asarray((onehot @ codes).todense()) / np.maximum(sizes, 1)[:, None]
    mass = means.sum(axis=0)
    p = np.divide(means, mass, out=np.zeros_like(means), where=mass > 0)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=0)
    effective = np.where(mass > 0, np.exp(entropy), 0.0)
    table["best_group"] = pd.Categorical(
        np.where(mass > 0, np.asarray(groups.categories)[means.argmax(axis=0)], None), categories=groups.categories
    )
    table["best_group_share"] = p.max(axis=0)
    table["n_groups_effective"] = effective
    table["locality"] = pd.Categorical(
        np.select([mass == 0, effective <= LOCAL_MAX_GROUPS], ["dead", "local"], "global"),
        categories=["local", "global", "dead"],
    )
    return table


@doc_params
def feature_stats(
    adata: AnnData,
    key: str = "sae",
    groupby: str | None = None,
    *,
    copy: bool = False,
) -> AnnData | None:
    """Describe every feature: how often, how strongly and (with ``groupby``) where it fires.

    Parameters
    ----------
    {adata}
    {key}
    groupby
        A categorical ``obs`` column (cell types, clusters). Adds where each feature is most active and how
        local it is.
    {copy}

    {copy_returns}
    Writes ``uns[key]["features"]``, a DataFrame with one row per feature (dead ones included), indexed by the
    feature number as a string, with columns

    - ``frequency``: fraction of cells where the feature is active;
    - ``mean_active``: mean activation over the cells where it is active; ``max``: its largest activation;
    - ``dead``: active in no cell; ``dense``: active in more than 10% of cells;

    and with ``groupby``

    - ``best_group``: the group with the highest mean activation; ``best_group_share``: that group's share of
      the feature's mean activation summed over groups;
    - ``n_groups_effective``: the exponential of the entropy of those shares (1 = a single group, the number of
      groups = spread evenly);
    - ``locality``: ``"local"`` (at most 1.5 effective groups), ``"global"`` or ``"dead"``, as in the reference
      study.

    Columns written by other tools (for example annotation or stability) are kept.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> csk.tl.feature_stats(adata, groupby="bulk_labels")
    >>> adata.uns["sae"]["features"].shape[0]
    64
    """
    codes = get_codes(adata, key)
    if key not in adata.uns:
        raise KeyError(f"adata.uns has no {key!r} next to obsm['X_{key}']; run cellsae_kit.tl.sae(adata, ...).")
    groups = None if groupby is None else get_groups(adata, groupby)
    table = feature_table(codes, None if groups is None else groups.values)
    adata = adata.copy() if copy else adata
    old = adata.uns[key].get("features")
    if isinstance(old, pd.DataFrame) and len(old) == len(table):
        table = old.drop(columns=[c for c in table.columns if c in old.columns]).join(table)
    adata.uns[key]["features"] = table
    if groupby is not None:
        adata.uns[key]["params"]["features_groupby"] = groupby
    return adata if copy else None
