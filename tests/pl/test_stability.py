import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.figure import Figure

import cellsae_kit as csk
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import is_png


def _sweep_adata():
    adata = AnnData(np.zeros((3, 2), dtype=np.float32))
    adata.uns["stability_sweep"] = {
        "sweep": pd.DataFrame(
            {
                "n_features": [64, 16, 32],  # out of order on purpose: the plot sorts by size
                "shared_at_0.7": [0.5, 0.9, 0.7],
                "shared_at_0.9": [0.2, 0.6, 0.4],
                "fvu_train": [0.2, 0.4, 0.3],
                "fvu_validation": [0.25, 0.45, 0.33],
                "fvu_validation_sd": [0.01, 0.02, 0.03],
            }
        )
    }
    return adata


def test_stability_draws_shared_fractions_and_fvu(figdir):
    adata = _sweep_adata()
    before = snapshot(adata)
    shared, error = csk.pl.stability(adata, show=False)
    lines = {line.get_label(): line for line in shared.get_lines()}
    np.testing.assert_array_equal(lines["shared at cosine ≥ 0.9"].get_xdata(), [16, 32, 64])
    np.testing.assert_array_equal(lines["shared at cosine ≥ 0.9"].get_ydata(), [0.6, 0.4, 0.2])
    np.testing.assert_array_equal(lines["shared at cosine ≥ 0.7"].get_ydata(), [0.9, 0.7, 0.5])
    np.testing.assert_array_equal(error.get_lines()[0].get_ydata(), [0.45, 0.33, 0.25])
    assert shared.get_xscale() == "log" and [t.get_text() for t in shared.get_xticklabels()] == ["16", "32", "64"]
    assert error.get_ylabel() == "validation FVU"
    assert len(shared.get_legend().get_texts()) == 3
    # the legend sits outside the axes, where it hides neither the shared fractions nor the FVU of the twin axes
    shared.figure.canvas.draw()
    assert not shared.get_legend().get_window_extent().overlaps(shared.get_window_extent())
    csk.pl.stability(adata, save="_sweep.png", show=False)
    assert is_png(figdir / "stability_sweep.png")
    assert_unchanged(adata, before)


def test_stability_into_given_axes_and_missing_sweep():
    import matplotlib.pyplot as plt

    adata = _sweep_adata()
    fig, ax = plt.subplots()
    shared, _ = csk.pl.stability(adata, ax=ax, show=False)
    assert shared is ax
    assert isinstance(csk.pl.stability(adata, return_fig=True), Figure)
    with pytest.raises(KeyError, match=r"cellsae_kit\.tl\.stability_sweep"):
        csk.pl.stability(adata, key="other")


def test_feature_stability_histogram(figdir):
    adata = AnnData(np.zeros((3, 2), dtype=np.float32))
    stability = np.array([0.95, 0.92, 0.5, 0.3, 0.99, 0.1, 0.75, 0.91])
    adata.uns["sae"] = {
        "params": {},
        "features": pd.DataFrame(
            {"stability": stability, "stability_activation": stability - 0.1}, index=[str(i) for i in range(8)]
        ),
    }
    before = snapshot(adata)
    ax = csk.pl.feature_stability(adata, show=False)
    assert ax.get_title() == "8 features: 50% at cosine ≥ 0.9"
    cosine, activation = (p for p in ax.patches)  # one step outline per measure
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["decoder cosine", "activation correlation"]
    counts, _ = np.histogram(stability, bins=np.linspace(0, 1, 26))
    # the step outline's vertices trace the bin counts
    heights = cosine.get_xy()[1:-1:2, 1][: len(counts)]
    np.testing.assert_array_equal(heights, counts)
    assert sorted(line.get_xdata()[0] for line in ax.get_lines()) == [0.7, 0.9]
    ax.figure.savefig(figdir / "features.png")
    assert is_png(figdir / "features.png")
    assert_unchanged(adata, before)
    del adata.uns["sae"]["features"]["stability"]
    with pytest.raises(KeyError, match=r"cellsae_kit\.tl\.stability\(adata, key='sae'\)"):
        csk.pl.feature_stability(adata)


def test_real_plots_render(pbmc, figdir):
    csk.tl.stability_sweep(pbmc, "X_pca", [8, 16, 32], n_seeds=2, k=4, n_epochs=10, progress=False)
    csk.pl.stability(pbmc, save=".png", show=False)
    assert is_png(figdir / "stability.png")
    csk.tl.sae(pbmc, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    csk.tl.stability(pbmc, n_seeds=3, progress=False)
    csk.pl.feature_stability(pbmc, save=".png", show=False)
    assert is_png(figdir / "feature_stability.png")
    csk.tl.consensus(pbmc, "X_pca", n_runs=3, n_features=16, k=4, n_epochs=10, density_threshold=2, progress=False)
    csk.pl.feature_stability(pbmc, "consensus", save="_consensus.png", show=False)
    assert is_png(figdir / "feature_stability_consensus.png")
