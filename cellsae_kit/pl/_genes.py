"""``pl.top_genes`` and ``pl.annotation``: what a feature does in genes and in named gene sets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .. import get
from .._docs import doc_params
from ..tl import top_genes as top_genes_table
from ._utils import best_terms, feature_title, finish, term_label

POSITIVE, NEGATIVE = "#b2182b", "#2166ac"
SIGNIFICANT, NOT_SIGNIFICANT = "#2b6c8f", "#c4c4c4"


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
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Bar chart of the genes with the largest loadings on one feature (the genes of :func:`cellsae_kit.tl.top_genes`).

    The largest loading is at the top; genes the feature raises are red, genes it lowers blue. The title names
    the feature's best term once :func:`cellsae_kit.tl.annotate_features` has run.

    Parameters
    ----------
    {adata}
    feature
        Feature number (``17`` or ``"17"``).
    {key}
    n
        Number of genes.
    sign
        ``"positive"``, ``"negative"`` or ``"both"`` (largest absolute loadings), as in
        :func:`cellsae_kit.tl.top_genes`.
    loadings
        ``varm`` key of the loadings (default ``"<key>_loadings"``).
    {mod}
    {show_save}
    {ax}
    {return_fig}

    {plot_returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> ax = csk.pl.top_genes(adata, 0, n=5, show=False)
    >>> len(ax.get_yticklabels())
    5
    """
    table = top_genes_table(adata, feature, key, n=n, sign=sign, loadings=loadings, mod=mod)
    index = int(feature)
    if table.empty:
        raise ValueError(
            f"Feature {index} has no gene with a {sign} loading (a feature that never fires has none); try "
            "sign='both' or another feature."
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.0, 0.8 + 0.24 * len(table)), layout="constrained")
    else:
        fig = ax.figure
    y = np.arange(len(table))
    colours = np.where(table["sign"] == "positive", POSITIVE, NEGATIVE)
    ax.barh(y, table["loading"], color=colours, height=0.7)
    ax.set_yticks(y, table["gene"].astype(str).tolist())
    ax.set_ylim(len(table) - 0.5, -0.5)  # the largest loading on top
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("gene loading" if mod in (None, "rna") else f"{mod} loading")
    ax.set_title(feature_title(index, best_terms(adata, key)))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return finish(fig, ax, name="top_genes", show=show, save=save, return_fig=return_fig)


@doc_params
def annotation(
    adata: AnnData,
    features: int | str | Sequence[int | str],
    key: str = "sae",
    *,
    n_terms: int = 5,
    alpha: float | None = None,
    ncols: int = 2,
    term_width: int = 38,
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Bar charts of each feature's strongest programmes, from :func:`cellsae_kit.tl.annotate_features`.

    One panel per feature: its ``n_terms`` strongest programmes (clusters of near-duplicate terms, each shown by
    its representative term), as z-scores against genes of matched expression (decoupler's enrichment scores when
    the annotation used ``null="none"``), coloured when the adjusted p-value is below ``alpha``. Long term names
    are wrapped on two lines and shortened with "…".

    Parameters
    ----------
    {adata}
    features
        Feature numbers (``17`` or ``"17"``), one or several.
    {key}
    n_terms
        Terms per feature (at most the ``n_top`` kept by :func:`cellsae_kit.tl.annotate_features`).
    alpha
        Adjusted p-value below which a term counts as significant (default: the ``alpha`` given to
        :func:`cellsae_kit.tl.annotate_features`).
    ncols
        Panels per row.
    term_width
        Characters per line of a term's name.
    {show_save}
    {ax}
        Only with a single feature.
    {return_fig}

    Returns
    -------
    The figure with ``return_fig=True``; the axes (a list with several features) when ``show=False``; else
    ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.annotate_features(adata, "progeny")
    >>> axes = csk.pl.annotation(adata, [0, 1], n_terms=3, show=False)
    >>> len(axes)
    2
    """
    stored = get.sae(adata, key)
    entry = stored.entry
    table = entry.get("annotation")
    if not isinstance(table, pd.DataFrame):
        raise KeyError(
            f"uns[{key!r}] has no annotation; run cellsae_kit.tl.annotate_features(adata, key={key!r}) first "
            "(e.g. with net='go_bp' or 'progeny')."
        )
    known = table["feature"].cat.categories if isinstance(table["feature"].dtype, pd.CategoricalDtype) else None
    n_features = len(known) if known is not None else int(table["feature"].astype(int).max()) + 1
    wanted = [features] if isinstance(features, int | str) else list(features)
    if not wanted:
        raise ValueError("features is empty; pass at least one feature number.")
    numbers = list(dict.fromkeys(get.feature_index(f, n_features, key) for f in wanted))
    if int(n_terms) < 1:
        raise ValueError(f"n_terms={n_terms} must be at least 1.")
    if alpha is None:
        alpha = float(entry.get("annotation_params", {}).get("alpha", 0.05))
    if ax is not None and len(numbers) > 1:
        raise ValueError(f"ax= takes one feature's panel; {len(numbers)} features were given. Leave ax=None.")

    n_rows = -(-len(numbers) // ncols)
    panel_height = 0.7 + 0.42 * int(n_terms)
    if ax is None:
        fig, grid = plt.subplots(
            n_rows,
            min(ncols, len(numbers)),
            figsize=(6.0 * min(ncols, len(numbers)), panel_height * n_rows),
            layout="constrained",
            squeeze=False,
        )
        axes = list(grid.ravel())
        for spare in axes[len(numbers) :]:
            spare.remove()
        axes = axes[: len(numbers)]
    else:
        fig, axes = ax.figure, [ax]
    groups = _best_groups(stored.features)
    features_col = table["feature"].astype(str)
    matched = entry.get("annotation_params", {}).get("null", "none") == "expression" and "z" in table
    stat, pval = ("z", "pval_matched_adj") if matched else ("score", "pval_adj")
    for number, panel in zip(numbers, axes, strict=True):
        rows = table[(features_col == str(number)) & table["term"].notna()]
        rows = rows.sort_values("rank").head(int(n_terms))
        _draw_terms(panel, rows[stat], rows[pval], rows["term"], alpha, term_width)
        panel.set_xlabel("z against genes of matched expression" if matched else "enrichment score")
        # The terms are on the bars already; the title says where the feature fires instead.
        where = f" (most active in {groups[number]})" if number in groups else ""
        panel.set_title(f"feature {number}{where}", loc="left")
    handles = [Patch(color=SIGNIFICANT, label=f"adj. p < {alpha:g}"), Patch(color=NOT_SIGNIFICANT, label="n.s.")]
    if ax is None:
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    else:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return finish(
        fig, axes[0] if len(axes) == 1 else axes, name="annotation", show=show, save=save, return_fig=return_fig
    )


def _best_groups(table: pd.DataFrame | None) -> dict[int, str]:
    if table is None or "best_group" not in table:
        return {}
    return {int(feature): str(group) for feature, group in table["best_group"].dropna().items()}


def _draw_terms(ax: Axes, stat: pd.Series, pval: pd.Series, terms: pd.Series, alpha: float, width: int) -> None:
    if stat.empty:
        ax.text(0.5, 0.5, "no gene set scored\n(all loadings zero)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    y = np.arange(len(stat))
    significant = (pval < alpha).to_numpy()
    ax.barh(y, stat, color=np.where(significant, SIGNIFICANT, NOT_SIGNIFICANT), height=0.7)
    ax.set_yticks(y, [term_label(t, width, max_lines=2) for t in terms], fontsize="small")
    ax.set_ylim(len(stat) - 0.5, -0.5)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
