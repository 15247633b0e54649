"""``tl.feature_stats``: one row per feature describing how and where it fires."""

from __future__ import annotations

from anndata import AnnData

from .. import get
from .._docs import doc_params
from ._shared import feature_table


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
    codes = get.codes(adata, key)
    get.sae(adata, key)  # the table goes into uns[key]: a clear error when there is none
    groups = None if groupby is None else get.groups(adata, groupby)
    table = feature_table(codes, None if groups is None else groups.values)
    adata = adata.copy() if copy else adata
    get.sae(adata, key).add_features(table)
    if groupby is not None:
        adata.uns[key]["params"]["features_groupby"] = groupby
    return adata if copy else None
