"""``pl.features`` and ``pl.rank_features_groups_dotplot``: where features fire, on an embedding and per group."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import get
from .._docs import doc_params
from ._utils import best_terms, feature_title, finish


@doc_params
def features(
    adata: AnnData,
    features: int | str | Sequence[int | str],
    key: str = "sae",
    *,
    basis: str = "umap",
    cmap: str = "viridis",
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
    **kwargs,
) -> Figure | Axes | list[Axes] | None:
    """Colour cells on an embedding by the activation of SAE features.

    Activations are stored sparse, which scanpy cannot use as a colour directly; this draws them through
    :func:`scanpy.pl.embedding` without adding anything to ``adata``. Once :func:`cellsae_kit.tl.annotate_features`
    has run, each panel's title names the feature's best term under its number (shortened to fit).

    Parameters
    ----------
    {adata}
    features
        Feature numbers (``17`` or ``"17"``), one or several.
    {key}
    basis
        Embedding in ``obsm``: ``"umap"`` reads ``obsm["X_umap"]`` (an exact ``obsm`` key works too).
    cmap
        Colour map for the activations.
    {show_save}
    {ax}
    {return_fig}
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``ncols``, ``size``, ``vmax``, ``title``, ...).

    Returns
    -------
    As :func:`scanpy.pl.embedding`: the figure with ``return_fig=True``, the axes when ``show=False``, else
    ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> axes = csk.pl.features(adata, [0, 1], show=False)
    >>> [ax.get_title() for ax in axes]
    ['feature 0', 'feature 1']
    """
    codes = get.codes(adata, key)
    basis_key = basis if basis in adata.obsm else f"X_{basis}"
    if basis_key not in adata.obsm:
        raise KeyError(f"basis={basis!r} is not in adata.obsm ({', '.join(adata.obsm)}); compute it first.")
    wanted = [features] if isinstance(features, int | str) else list(features)
    if not wanted:
        raise ValueError("features is empty; pass at least one feature number.")
    numbers = [get.feature_index(f, codes.shape[1], key) for f in wanted]
    columns = {f"feature {i}": np.asarray(codes[:, i].toarray()).ravel() for i in numbers}
    terms = best_terms(adata, key)
    kwargs.setdefault("title", [feature_title(i, terms) for i in dict.fromkeys(numbers)])
    view = AnnData(obs=adata.obs[[]].assign(**columns), obsm={basis_key: np.asarray(adata.obsm[basis_key])})
    # scanpy 1.12 deprecates save=: it draws, finish() saves and shows
    axes = sc.pl.embedding(view, basis_key, color=list(columns), cmap=cmap, show=False, ax=ax, **kwargs)
    fig = (axes[0] if isinstance(axes, list) else axes).figure
    return finish(fig, axes, name=basis_key.removeprefix("X_"), show=show, save=save, return_fig=return_fig)


def top_ranked(adata: AnnData, key: str, n_features: int, groups: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Return the ``n_features`` best-ranked features of each group of a stored ranking, as strings."""
    get.check_adata(adata)
    ranking = adata.uns.get(key)
    if not isinstance(ranking, dict) or "names" not in ranking:
        raise KeyError(
            f"adata.uns has no feature ranking under key={key!r}; run "
            "cellsae_kit.tl.rank_features_groups(adata, groupby) first."
        )
    ranked = list(ranking["names"].dtype.names)
    chosen = ranked if groups is None else [str(g) for g in groups]
    unknown = [g for g in chosen if g not in ranked]
    if unknown or not chosen:
        raise ValueError(f"groups {unknown or chosen} were not ranked under {key!r}; it has {', '.join(ranked)}.")
    if int(n_features) < 1:
        raise ValueError(f"n_features={n_features} must be at least 1.")
    return {g: [str(f) for f in ranking["names"][g][: int(n_features)]] for g in chosen}


@doc_params
def rank_features_groups_dotplot(
    adata: AnnData,
    groupby: str | None = None,
    key: str = "rank_features_groups",
    *,
    n_features: int = 3,
    groups: Sequence[str] | None = None,
    cmap: str = "Reds",
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
    **kwargs,
) -> sc.pl.DotPlot | dict | None:
    """Dot plot of the best-ranked features of each group: colour is the mean activation, size where it fires.

    Reads the ranking of :func:`cellsae_kit.tl.rank_features_groups` and the activations of the SAE it ranked,
    and draws them with :func:`scanpy.pl.dotplot` (a dot's size is the fraction of the group's cells where the
    feature is active, its colour the mean activation over all of the group's cells). Columns are labelled with
    feature numbers, in brackets per ranked group.

    Parameters
    ----------
    {adata}
    groupby
        ``obs`` column for the rows (default: the one that was ranked).
    key
        ``uns`` key of the ranking (``key_added`` of :func:`cellsae_kit.tl.rank_features_groups`).
    n_features
        Features shown per ranked group, best first.
    groups
        Ranked groups whose features are shown (default all).
    cmap
        Colour map for the mean activation.
    {show_save}
    {ax}
    {return_fig}
    **kwargs
        Passed to :func:`scanpy.pl.dotplot` (``standard_scale``, ``dendrogram``, ``swap_axes``, ...).

    Returns
    -------
    As :func:`scanpy.pl.dotplot`: the :class:`~scanpy.pl.DotPlot` with ``return_fig=True``, a dict of axes when
    ``show=False``, else ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.rank_features_groups(adata, "bulk_labels")
    >>> dp = csk.pl.rank_features_groups_dotplot(adata, n_features=2, return_fig=True)
    >>> len(dp.var_names) == 2 * adata.obs["bulk_labels"].nunique()
    True
    """
    chosen = top_ranked(adata, key, n_features, groups)
    params = adata.uns[key].get("params", {})
    codes = get.codes(adata, str(params.get("key", "sae")))
    if groupby is None:
        if "groupby" not in params:
            raise ValueError(f"The ranking under {key!r} does not say which obs column it ranked; pass groupby=.")
        groupby = str(params["groupby"])
    labels = get.groups(adata, groupby)
    shown = list(dict.fromkeys(f for names in chosen.values() for f in names))
    columns = [int(f) for f in shown]
    # A small dense matrix of just the shown features: scanpy reads it like expression, adata is not touched.
    view = AnnData(
        X=np.asarray(codes[:, columns].toarray(), dtype=np.float32),
        obs=pd.DataFrame({groupby: labels.to_numpy()}, index=adata.obs_names.copy()),
        var=pd.DataFrame(index=pd.Index(shown)),
    )
    kwargs.setdefault("colorbar_title", "Mean activation\nin group")
    kwargs.setdefault("size_title", "Fraction of cells\nactive (%)")
    plot = sc.pl.dotplot(view, chosen, groupby, cmap=cmap, ax=ax, return_fig=True, **kwargs)
    axes = plot.get_axes()  # draws the figure
    if return_fig:
        finish(plot.fig, axes, name="dotplot_", show=False, save=save, return_fig=True)
        return plot
    return finish(plot.fig, axes, name="dotplot_", show=show, save=save, return_fig=False)
