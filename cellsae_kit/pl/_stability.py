"""``pl.stability`` and ``pl.feature_stability``: how reproducible the features are."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import get
from .._docs import doc_params
from ._utils import finish

# Cosines marked by pl.feature_stability: the default thresholds of cellsae_kit.tl.stability.
THRESHOLDS = (0.7, 0.9)
# tl.stability_sweep names its columns of shared fractions "shared_at_<threshold>" ("shared_at_0.9").
SHARED_PREFIX = "shared_at_"
FVU_COLOUR = "#444444"
SHARED_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")
FEATURE_COLUMNS = {"stability": "decoder cosine", "stability_activation": "activation correlation"}


def _sweep(adata: AnnData, key: str) -> pd.DataFrame:
    get.check_adata(adata)
    entry = adata.uns.get(key)
    table = entry.get("sweep") if isinstance(entry, dict) else None
    if not isinstance(table, pd.DataFrame) or table.empty:
        raise KeyError(
            f"adata.uns has no sweep under key={key!r}; run cellsae_kit.tl.stability_sweep(adata, use_rep, "
            f"[32, 64, 128], key_added={key!r}) first."
        )
    return table.sort_values("n_features")


@doc_params
def stability(
    adata: AnnData,
    key: str = "stability_sweep",
    *,
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Feature stability and reconstruction error against the dictionary size, to choose the size.

    Draws the table of :func:`cellsae_kit.tl.stability_sweep`, like the choice of K in consensus NMF: on the
    left axis the fraction of features that two runs with different seeds share (matched decoder cosine at or
    above each threshold), on the right axis the validation FVU (mean and standard deviation over the runs).
    Sizes beyond which the shared fraction falls while the FVU hardly improves are more than the data supports.

    Parameters
    ----------
    {adata}
    key
        Where :func:`cellsae_kit.tl.stability_sweep` wrote its table (its ``key_added``).
    {show_save}
    {ax}
    {return_fig}

    Returns
    -------
    The figure with ``return_fig=True``; the stability axes and the FVU axes when ``show=False``; else ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.stability_sweep(adata, "X_pca", [8, 16], n_seeds=2, k=4, n_epochs=5, progress=False)
    >>> shared, error = csk.pl.stability(adata, show=False)
    >>> shared.get_ylabel(), error.get_ylabel()
    ('features shared by two runs', 'validation FVU')
    """
    table = _sweep(adata, key)
    # The thresholds the sweep used, each with its column, read from the stored table.
    shared = sorted((float(c.removeprefix(SHARED_PREFIX)), c) for c in table.columns if c.startswith(SHARED_PREFIX))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 4.2), layout="constrained")
    else:
        fig = ax.figure
    sizes = table["n_features"].to_numpy()
    for (threshold, column), colour in zip(shared, SHARED_COLOURS, strict=False):
        ax.plot(sizes, table[column], marker="o", color=colour, label=f"shared at cosine ≥ {threshold:g}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("dictionary size (features)")
    ax.set_ylabel("features shared by two runs")
    ax.grid(alpha=0.3)
    error = ax.twinx()
    column = "fvu_validation" if table["fvu_validation"].notna().any() else "fvu_train"
    sd = table["fvu_validation_sd"] if column == "fvu_validation" and "fvu_validation_sd" in table else None
    error.errorbar(sizes, table[column], yerr=sd, marker="s", linestyle="--", color=FVU_COLOUR, capsize=3, label="FVU")
    error.set_ylabel("validation FVU" if column == "fvu_validation" else "training FVU")
    error.grid(False)  # its ticks are not the left axis's: a second grid would not line up with the first
    handles = ax.get_legend_handles_labels()[0] + error.get_legend_handles_labels()[0]
    # Below the axes: loc="best" inside them would only avoid the shared fractions, not the FVU on the twin axes.
    ax.legend(handles=handles, fontsize="small", frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    ax.set_title("stability and error by dictionary size")
    return finish(fig, [ax, error], name="stability", show=show, save=save, return_fig=return_fig)


@doc_params
def feature_stability(
    adata: AnnData,
    key: str = "sae",
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Distribution of the per-feature stability written by :func:`cellsae_kit.tl.stability` or ``tl.consensus``.

    A histogram of each feature's mean matched decoder cosine with the other runs (``stability``) and, when
    measured, of the mean correlation of its activations with those of the matched features
    (``stability_activation``); dashed lines mark the thresholds. The title gives the fraction of features at
    or above the highest threshold.

    Parameters
    ----------
    {adata}
    {key}
    thresholds
        Cosines to mark.
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
    >>> csk.tl.stability(adata, n_seeds=2, progress=False)
    >>> csk.pl.feature_stability(adata, show=False).get_xlabel()
    'mean similarity to the matched feature of other runs'
    """
    table = get.sae(adata, key).feature_table()
    if "stability" not in table:
        raise KeyError(
            f"uns[{key!r}]['features'] has no 'stability' column; run cellsae_kit.tl.stability(adata, key={key!r}) "
            "first (a consensus SAE from cellsae_kit.tl.consensus has one already)."
        )
    thresholds = sorted(float(t) for t in ((thresholds,) if np.isscalar(thresholds) else thresholds))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    else:
        fig = ax.figure
    values = {label: table[c].to_numpy(dtype=float) for c, label in FEATURE_COLUMNS.items() if c in table}
    low = min(0.0, *(np.nanmin(v) for v in values.values()))
    bins = np.linspace(low, 1.0, 26)
    for (label, v), colour in zip(values.items(), SHARED_COLOURS, strict=False):
        ax.hist(v, bins=bins, histtype="step", linewidth=1.8, color=colour, label=label)
    for threshold in thresholds:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlabel("mean similarity to the matched feature of other runs")
    ax.set_ylabel("features")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small", frameon=False, loc="best")
    ax.grid(alpha=0.3)
    stable = np.mean(values["decoder cosine"] >= thresholds[-1]) if thresholds else np.nan
    ax.set_title(f"{len(table)} features: {stable:.0%} at cosine ≥ {thresholds[-1]:g}" if thresholds else key)
    return finish(fig, ax, name="feature_stability", show=show, save=save, return_fig=return_fig)
