"""``pl.feature_stats`` and ``pl.training``: how healthy the dictionary is, and how the fit went."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import get
from .._docs import doc_params
from ..models import DENSE_THRESHOLD
from ._utils import finish

LOCALITY_COLOURS = {"local": "#d95f02", "global": "#1b9e77"}
# Panels of pl.training: title, history columns (drawn when present), y label.
TRAINING_PANELS = (
    ("loss", ("loss",), "training loss"),
    ("FVU", ("fvu_train", "fvu_validation"), "unexplained variance"),
    ("L0", ("l0",), "active features per cell"),
    ("dead fraction", ("dead_fraction",), "fraction of features"),
)
SERIES_LABELS = {"fvu_train": "train", "fvu_validation": "validation"}


@doc_params
def feature_stats(
    adata: AnnData,
    key: str = "sae",
    *,
    show: bool | None = None,
    save: str | bool | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """How often and how strongly each feature fires, from :func:`cellsae_kit.tl.feature_stats`.

    Left: each live feature's activation frequency (log scale) against its mean activation when active, coloured
    by locality when ``feature_stats`` ran with ``groupby`` (local features mark one group of cells). Right: a
    histogram of the frequencies; the dashed line is the dense threshold (10% of cells). The title gives the
    fractions of dead and dense features. Dead features (frequency 0) cannot sit on a log scale and are counted
    in the title only.

    Parameters
    ----------
    {adata}
    {key}
    {show_save}
    {return_fig}

    Returns
    -------
    The figure with ``return_fig=True``, the two axes when ``show=False``, else ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.feature_stats(adata, groupby="bulk_labels")
    >>> axes = csk.pl.feature_stats(adata, show=False)
    >>> axes[0].get_xscale()
    'log'
    """
    table = get.sae(adata, key).feature_table()
    dead = table["dead"].to_numpy(dtype=bool)
    live = table.loc[~dead]
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), layout="constrained")
    scatter, histogram = axes
    if live.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no live feature", ha="center", va="center", transform=ax.transAxes)
    elif "locality" in live:
        for locality, colour in LOCALITY_COLOURS.items():
            part = live[live["locality"].astype(str) == locality]
            if len(part):
                scatter.scatter(
                    part["frequency"],
                    part["mean_active"],
                    s=14,
                    color=colour,
                    alpha=0.8,
                    label=f"{locality} ({len(part)})",
                )
        scatter.legend(title="locality", fontsize="small", frameon=False)
    else:
        scatter.scatter(live["frequency"], live["mean_active"], s=14, color="#444444", alpha=0.8)
    if not live.empty:
        low, high = live["frequency"].min(), max(live["frequency"].max(), DENSE_THRESHOLD)
        bins = np.geomspace(low, high * 1.0001, 30) if high > low else 10
        histogram.hist(live["frequency"], bins=bins, color="#777777")
        for ax in axes:
            ax.set_xscale("log")
            ax.axvline(DENSE_THRESHOLD, color="black", linestyle="--", linewidth=0.8)
    scatter.set_xlabel("fraction of cells where active")
    scatter.set_ylabel("mean activation when active")
    histogram.set_xlabel("fraction of cells where active")
    histogram.set_ylabel("features")
    dense = table["dense"].to_numpy(dtype=bool).mean() if "dense" in table else np.nan
    fig.suptitle(f"{len(table)} features: {dead.mean():.1%} dead, {dense:.1%} dense")
    return finish(fig, list(axes), name="feature_stats", show=show, save=save, return_fig=return_fig)


@doc_params
def training(
    adata: AnnData,
    key: str = "sae",
    *,
    show: bool | None = None,
    save: str | bool | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Training curves of an SAE over epochs: loss, FVU (train and validation), L0 and the dead fraction.

    Draws the curves the history of :func:`cellsae_kit.tl.sae` holds (one panel each that exists); a dotted line
    marks the epoch whose weights were kept (early stopping restores the best validation FVU).

    Parameters
    ----------
    {adata}
    {key}
    {show_save}
    {return_fig}

    {plot_returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> [ax.get_title() for ax in csk.pl.training(adata, show=False)]
    ['loss', 'FVU', 'L0', 'dead fraction']
    """
    stored = get.sae(adata, key)
    history = stored.history
    if history is None or history.empty:
        raise KeyError(
            f"uns[{key!r}] has no training history; cellsae_kit.tl.sae(adata, ..., key_added={key!r}) writes it "
            "(an SAE brought in from elsewhere has none)."
        )
    panels = [
        (title, [c for c in columns if c in history and history[c].notna().any()], label)
        for title, columns, label in TRAINING_PANELS
    ]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise ValueError(
            f"uns[{key!r}]['history'] has none of the curves this plot draws (loss, fvu_train, fvu_validation, "
            f"l0, dead_fraction); it has {', '.join(map(str, history.columns))}."
        )
    epochs = history["epoch"].to_numpy() if "epoch" in history else np.arange(1, len(history) + 1)
    best = stored.metrics.get("best_epoch")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0), layout="constrained", squeeze=False)
    axes = list(axes.ravel())
    for ax, (title, columns, label) in zip(axes, panels, strict=True):
        for column in columns:
            ax.plot(epochs, history[column], marker="." if len(history) < 30 else None, label=SERIES_LABELS.get(column))
        if best is not None and np.isfinite(best) and best > 0:
            ax.axvline(best, color="grey", linestyle=":", linewidth=1, label="weights kept" if title == "FVU" else None)
        if len(columns) > 1 or title == "FVU":
            ax.legend(fontsize="small", frameon=False)
        if title in ("L0", "dead fraction"):
            # Counts and fractions start at zero (kept just off the frame): a flat 0 should not look like noise.
            top = max(1.1 * np.nanmax(history[columns].to_numpy()), 0.05 if title == "dead fraction" else 1.0)
            ax.set_ylim(-0.03 * top, top)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    return finish(fig, axes, name="training", show=show, save=save, return_fig=return_fig)
