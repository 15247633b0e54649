"""``pl.steering``: where steered cells move, and which genes change (from :func:`cellsae_kit.tl.steer`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from .. import get
from .._docs import doc_params
from ._genes import NEGATIVE, POSITIVE
from ._utils import finish


def _steer_entry(adata: AnnData, key: str) -> dict:
    get.check_adata(adata)
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "params" not in entry or "summary" not in entry:
        found = [k for k, v in adata.uns.items() if isinstance(v, dict) and {"params", "summary", "cells"} <= set(v)]
        hint = f" Steering results found: {', '.join(map(repr, found))}." if found else ""
        raise KeyError(
            f"adata.uns has no steering result under key={key!r}; run cellsae_kit.tl.steer(adata, feature, ..., "
            f"key_added={key!r}) first.{hint}"
        )
    return entry


def _label_colours(adata: AnnData, groupby: str | None, labels: list[str]) -> dict[str, str]:
    """Return the colour of each label: scanpy's stored ``uns["<groupby>_colors"]``, else a qualitative palette."""
    stored = adata.uns.get(f"{groupby}_colors") if groupby else None
    if groupby in adata.obs and stored is not None:
        categories = [str(c) for c in adata.obs[groupby].astype("category").cat.categories]
        if len(stored) == len(categories):
            return {c: to_hex(colour) for c, colour in zip(categories, stored, strict=True)}
    palette = plt.get_cmap("tab20").colors
    return {label: to_hex(palette[i % len(palette)]) for i, label in enumerate(labels)}


def _describe(params: dict, summary: dict) -> str:
    """One line saying what was steered, such as ``feature 17 set to 1.03 (1.5 x mean of CD56+ NK) in 13 cells``."""
    feature, n = int(params["feature"]), int(summary["n_cells"])
    mode = str(params.get("mode"))
    if mode == "target":
        column, label = (str(t) for t in params["target"])
        times = f"{float(params['scale']):g} x " if float(params.get("scale", 1.0)) != 1 else ""
        how = f"set to {float(params['value']):.3g} ({times}mean of {label})"
    elif mode == "value":
        how = f"set to {float(params['value']):.3g}"
    else:
        how = f"scaled by {float(params['scale']):g}"
    return f"feature {feature} {how} in {n} cells"


@doc_params
def steering(
    adata: AnnData,
    key: str = "sae_steer",
    *,
    n_genes: int = 15,
    show: bool | None = None,
    save: str | bool | None = None,
    return_fig: bool = False,
) -> Figure | list[Axes] | None:
    """Where steered cells move and which genes change, from :func:`cellsae_kit.tl.steer`.

    Left (when ``tl.steer`` ran with ``groupby``): the labels that k-nearest-neighbour transfer gives the steered
    cells before and after steering, as stacked bars of fractions (scanpy's colours of the groups when stored).
    Right (when genes could be reached): the ``n_genes`` genes with the largest mean change, the largest on
    top; red genes rise, blue ones fall. The title says what was steered.

    Parameters
    ----------
    {adata}
    key
        Where :func:`cellsae_kit.tl.steer` stored its result (its ``key_added``; default ``"sae_steer"``).
    n_genes
        Genes shown.
    {show_save}
    {return_fig}

    {plot_returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.steer(adata, 0, value=5.0, cells=("bulk_labels", "CD34+"), groupby="bulk_labels")
    >>> [ax.get_title() for ax in csk.pl.steering(adata, n_genes=5, show=False)]
    ['predicted labels (kNN transfer)', 'top changed genes']
    """
    entry = _steer_entry(adata, key)
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes={n_genes!r} must be a whole number >= 1.")
    transfer = entry.get("transfer")
    genes = entry.get("genes")
    panels = [name for name, table in (("transfer", transfer), ("genes", genes)) if isinstance(table, pd.DataFrame)]
    if not panels:
        raise ValueError(
            f"uns[{key!r}] has neither label transfer nor gene changes to draw: run cellsae_kit.tl.steer with "
            "groupby= (cell types), on a representation with a map to genes, or with decoder=."
        )
    widths = [1.0 if p == "transfer" else 1.1 for p in panels]
    n_shown = min(n_genes, len(genes)) if "genes" in panels else 0
    height = max(3.2, 0.9 + 0.24 * n_shown)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), height), layout="constrained", width_ratios=widths, squeeze=False
    )
    axes = list(axes.ravel())
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "transfer":
            _draw_transfer(ax, adata, transfer, entry["params"].get("groupby"))
        else:
            _draw_genes(ax, genes, n_shown)
    fig.suptitle(_describe(entry["params"], entry["summary"]))
    return finish(fig, axes, name="steering", show=show, save=save, return_fig=return_fig)


def _draw_transfer(ax: Axes, adata: AnnData, transfer: pd.DataFrame, groupby: str | None) -> None:
    counts = transfer[["before", "after"]].astype(float)
    counts = counts[(counts > 0).any(axis=1)]
    fractions = counts / counts.sum(axis=0).replace(0, 1)
    colours = _label_colours(adata, groupby, [str(label) for label in fractions.index])
    y = np.arange(2)
    left = np.zeros(2)
    for label, row in fractions.iterrows():
        values = row[["before", "after"]].to_numpy()
        ax.barh(y, values, left=left, height=0.6, color=colours.get(str(label), "#999999"), label=str(label))
        for yi, (start, width) in enumerate(zip(left, values, strict=True)):
            if width >= 0.08:  # label segments wide enough to hold a percentage
                ax.text(start + width / 2, yi, f"{width:.0%}", ha="center", va="center", fontsize="small")
        left += values
    ax.set_yticks(y, ["before", "after"])
    ax.set_ylim(1.5, -0.5)  # "before" on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of steered cells")
    ax.set_title("predicted labels (kNN transfer)")
    ax.legend(title=groupby, fontsize="small", frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)


def _draw_genes(ax: Axes, genes: pd.DataFrame, n: int) -> None:
    top = genes.iloc[np.argsort(-genes["delta"].abs().to_numpy(), kind="stable")[:n]]
    y = np.arange(len(top))
    ax.barh(y, top["delta"], color=np.where(top["delta"] >= 0, POSITIVE, NEGATIVE), height=0.7)
    ax.set_yticks(y, [str(g) for g in top.index])
    ax.set_ylim(len(top) - 0.5, -0.5)  # the largest change on top
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("mean change in expression")
    ax.set_title("top changed genes")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
