"""``pl.sae_sweep``: the settings a sweep tried, and the one it recommends."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import get
from .._docs import doc_params
from ._utils import finish

# What each panel shows: the column of tl.sae_sweep's table and its axis label.
PANELS = [
    ("fvu_validation", "validation FVU (lower is better)"),
    ("shared_at_0.9", "features shared by two seeds\nat cosine ≥ 0.9"),
    ("median_best_abs_r", "recovery of the truth\n(median best |r|)"),
]


def _table(adata: AnnData, key: str) -> pd.DataFrame:
    get.check_adata(adata)
    entry = adata.uns.get(key)
    table = entry.get("sweep") if isinstance(entry, dict) else None
    if not isinstance(table, pd.DataFrame) or "recommended" not in table:
        raise KeyError(
            f"adata.uns has no settings sweep under key={key!r}; run cellsae_kit.tl.sae_sweep(adata, use_rep) first "
            "(it writes uns['sae_sweep'], or uns['<key_added>_sweep'])."
        )
    return table


@doc_params
def sae_sweep(
    adata: AnnData,
    key: str = "sae_sweep",
    *,
    show: bool | None = None,
    save: str | bool | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Error, stability and (with a truth) recovery against the dictionary size, one line per ``k``.

    Draws the table of :func:`cellsae_kit.tl.sae_sweep` the way cNMF draws its choice of K: the validation
    FVU falls as the dictionary grows, the fraction of features that come back with another seed falls too; the
    recommended setting (a star) is the best reconstruction among the reproducible settings. Error bars are the
    standard deviation of the FVU over seeds.

    Parameters
    ----------
    {adata}
    key
        Where :func:`cellsae_kit.tl.sae_sweep` wrote its table (``"<key_added>_sweep"``).
    {show_save}
    {return_fig}

    Returns
    -------
    The figure with ``return_fig=True``; the axes (one per panel) when ``show=False``; else ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae_sweep(adata, "X_pca", n_features=[16, 32], k=[2, 4], n_epochs=5, progress=False)
    >>> axes = csk.pl.sae_sweep(adata, show=False)
    >>> [ax.get_xlabel() for ax in axes]
    ['dictionary size (features)', 'dictionary size (features)']
    """
    table = _table(adata, key)
    panels = [(column, label) for column, label in PANELS if column in table and table[column].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), layout="constrained", squeeze=False)
    axes = list(axes[0])
    groups = table.groupby(["activation", "k"], sort=True)
    colours = plt.get_cmap("viridis")([i / max(1, groups.ngroups - 1) * 0.85 for i in range(groups.ngroups)])
    several = table["activation"].nunique() > 1
    for ax, (column, label) in zip(axes, panels, strict=True):
        for colour, ((activation, k), part) in zip(colours, groups, strict=True):
            part = part.sort_values("n_features")
            name = f"{activation}, k={k}" if several else f"k={k}"
            name = "relu" if activation == "relu" else name
            sd = part["fvu_validation_sd"] if column == "fvu_validation" else None
            ax.errorbar(part["n_features"], part[column], yerr=sd, marker="o", color=colour, capsize=2, label=name)
        best = table[table["recommended"]]
        ax.scatter(best["n_features"], best[column], marker="*", s=260, color="#d62728", zorder=5, label="recommended")
        sizes = sorted(table["n_features"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("dictionary size (features)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    row = best.iloc[0]
    fig.suptitle(f"recommended: {row['n_features']} features, {row['activation']}, k={row['k']}", fontsize="medium")
    return finish(fig, axes, name="sae_sweep", show=show, save=save, return_fig=return_fig)
