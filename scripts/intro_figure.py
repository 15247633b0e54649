"""Draw the introduction figure of the book: what a sparse autoencoder does to one cell.

The numbers are real: an SAE (512 features, k = 8) is trained on the PCA of scanpy's bundled ``pbmc68k_reduced``
(no network needed), and the figure follows one B cell through it. Run from the repository root:

    python scripts/intro_figure.py            # writes book/_static/sae_schematic.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import torch
from matplotlib.colors import to_rgba
from matplotlib.patches import Polygon

import cellsae_kit as csk

N_FEATURES, K, GRID_COLS = 512, 8, 16
HIGHLIGHT = "#1f5fa8"  # the feature followed to its genes
ACTIVE = plt.get_cmap("Oranges")
INACTIVE = "#e9e9e9"
DENSE = "RdBu_r"


def train() -> dict:
    """Train the SAE and pick one B cell, its active features, and the most B-cell-specific of them."""
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", n_features=N_FEATURES, k=K, n_epochs=100, random_state=0, progress=False)
    codes = adata.obsm["X_sae"].toarray()
    is_b = (adata.obs["bulk_labels"] == "CD19+ B").to_numpy()
    fires = codes > 0
    specificity = fires[is_b].mean(axis=0) - fires[~is_b].mean(axis=0)
    feature = int(np.argmax(specificity))
    cell = int(np.argmax(np.where(is_b, codes[:, feature], -np.inf)))
    x = adata.obsm["X_pca"][cell]
    with torch.no_grad():
        x_hat = csk.tl.get_model(adata).reconstruct(torch.as_tensor(x[None], dtype=torch.float32)).numpy()[0]
    # Genes outside this dataset's PCA (not highly variable) have NaN loadings; leave them out.
    loading = pd.Series(adata.varm["sae_loadings"][:, feature], index=adata.var_names).dropna()
    return {
        "x": x,
        "x_hat": x_hat,
        "codes": codes[cell],
        "feature": feature,
        "genes": loading.sort_values(ascending=False)[:8],
        "in_b": fires[is_b, feature].mean(),
        "in_other": fires[~is_b, feature].mean(),
        "fvu": adata.uns["sae"]["metrics"]["fvu_validation"],
    }


def strip(fig, rect, values, vmax, title):
    """A vertical heat strip of a cell's coordinates."""
    ax = fig.add_axes(rect)
    ax.imshow(values[:, None], cmap=DENSE, vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([0, len(values) - 1], ["1", str(len(values))], fontsize=10)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=12, pad=8)
    return ax


def funnel(bg, x0, x1, h0, h1, y, label):
    """A trapezoid from height h0 at x0 to h1 at x1 (figure coordinates), labelled in the middle."""
    pts = [(x0, y - h0 / 2), (x1, y - h1 / 2), (x1, y + h1 / 2), (x0, y + h0 / 2)]
    bg.add_patch(Polygon(pts, closed=True, facecolor="#d9e3ef", edgecolor="#7a8ea8", lw=1.2))
    bg.text((x0 + x1) / 2, y, label, rotation=90, ha="center", va="center", fontsize=12, color="#2b3d55")


def note(bg, x, text, **kwargs):
    """A short explanation under a panel."""
    bg.text(x, 0.085, text, ha="center", va="center", fontsize=10.5, linespacing=1.3, **kwargs)


def draw(r: dict, path: Path) -> None:
    """Lay out the schematic and write it."""
    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 11})
    fig = plt.figure(figsize=(9.5, 4.8))
    bg = fig.add_axes([0, 0, 1, 1])
    bg.set_xlim(0, 1)
    bg.set_ylim(0, 1)
    bg.axis("off")

    y0, height = 0.19, 0.58
    mid = y0 + height / 2
    vmax = float(np.abs(r["x"]).max())
    strip(fig, [0.05, y0, 0.04, height], r["x"], vmax, "one B cell:\n50 PCA\nnumbers")
    note(bg, 0.07, "dense: each\nnumber mixes\nmany signals")

    funnel(bg, 0.105, 0.17, 0.42, 0.58, mid, "encoder")

    # The dictionary: one square per feature; only the cell's k active features are lit.
    rows = N_FEATURES // GRID_COLS
    ax = fig.add_axes([0.185, y0, 0.17, height])
    grid = r["codes"].reshape(rows, GRID_COLS)
    lit = ACTIVE(0.35 + 0.65 * grid / grid.max())
    rgba = np.where((grid > 0)[..., None], lit, to_rgba(INACTIVE))
    frow, fcol = divmod(r["feature"], GRID_COLS)
    rgba[frow, fcol] = to_rgba(HIGHLIGHT)
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, GRID_COLS), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="white", lw=0.6)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"{N_FEATURES} features,\nonly k = {K} light up", fontsize=12, pad=8)
    note(bg, 0.27, "sparse: a few nameable\nfeatures per cell\n(blue: the one on the right)")

    funnel(bg, 0.37, 0.435, 0.58, 0.42, mid, "decoder")
    strip(fig, [0.45, y0, 0.04, height], r["x_hat"], vmax, "recon-\nstruction")
    note(bg, 0.47, f"FVU {r['fvu']:.2f}:\nshare of variance\nnot reconstructed")

    bg.plot([0.575, 0.575], [0.06, 0.94], color="#bbbbbb", lw=1, ls=(0, (4, 4)))

    # One feature -> its genes.
    genes = r["genes"][::-1]
    gx = fig.add_axes([0.73, y0 + 0.03, 0.24, height - 0.12])
    gx.barh(np.arange(len(genes)), genes.to_numpy(), color=HIGHLIGHT, height=0.65)
    gx.set_yticks(np.arange(len(genes)), genes.index, fontsize=11)
    gx.set_xlabel("gene loading", fontsize=11)
    gx.tick_params(axis="x", labelsize=10)
    for side in ("top", "right"):
        gx.spines[side].set_visible(False)
    gx.set_title("the blue feature\n→ its top genes", fontsize=12, pad=8, color=HIGHLIGHT)
    note(bg, 0.8, f"fires in {r['in_b']:.0%} of B cells\nand {r['in_other']:.1%} of other cells")

    # Where the pieces are stored.
    mono = {"ha": "center", "fontsize": 10.5, "family": "monospace", "color": "#555555"}
    bg.text(0.27, 0.94, 'obsm["X_sae"]', **mono)
    bg.text(0.8, 0.94, 'varm["sae_loadings"]', **mono)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    """Parse the output path, train, draw."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parents[1] / "book" / "_static" / "sae_schematic.png"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(train(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
