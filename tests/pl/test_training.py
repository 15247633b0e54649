import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.figure import Figure
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit.pl._training import LOCALITY_COLOURS
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import is_png


def _points(ax):
    return np.vstack([c.get_offsets() for c in ax.collections]) if ax.collections else np.empty((0, 2))


def test_feature_stats_scatter_histogram_and_dead_fraction(figdir):
    # 8 features, 3 never active: 37.5% dead; feature 0 fires in 3 of 4 cells (dense)
    codes = np.zeros((4, 8), dtype=np.float32)
    codes[:3, 0] = [1.0, 2.0, 3.0]
    codes[0, 1], codes[1, 2], codes[2, 3], codes[3, 4] = 0.5, 1.5, 2.5, 4.0
    adata = AnnData(np.zeros((4, 2), dtype=np.float32), obsm={"X_sae": sparse.csr_matrix(codes)})
    adata.obs["group"] = pd.Categorical(["a", "a", "b", "b"])
    adata.uns["sae"] = {"params": {}}
    csk.tl.feature_stats(adata, groupby="group")
    before = snapshot(adata)
    fig = csk.pl.feature_stats(adata, return_fig=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert "8 features: 37.5% dead" in fig.get_suptitle()
    scatter, histogram = fig.axes
    live = codes[:, (codes > 0).any(axis=0)]
    expected = np.column_stack([(live > 0).mean(axis=0), live.sum(axis=0) / (live > 0).sum(axis=0)])
    points = _points(scatter)
    np.testing.assert_allclose(points[np.lexsort(points.T[::-1])], expected[np.lexsort(expected.T[::-1])], rtol=1e-6)
    assert scatter.get_xscale() == histogram.get_xscale() == "log"
    table = adata.uns["sae"]["features"]
    colours = {mcolors.to_hex(c.get_facecolor()[0]): len(c.get_offsets()) for c in scatter.collections}
    for locality in ("local", "global"):
        n = int((table["locality"] == locality).sum())
        assert colours.get(LOCALITY_COLOURS[locality], 0) == n
    assert sum(p.get_height() for p in histogram.patches) == live.shape[1]
    fig.savefig(figdir / "stats.png")
    assert is_png(figdir / "stats.png")
    csk.pl.feature_stats(adata, save="_small.png", show=False)
    assert is_png(figdir / "feature_stats_small.png")
    assert_unchanged(adata, before)


def test_feature_stats_without_groups_on_a_trained_sae(analysed):
    # as after feature_stats without groupby
    analysed.uns["sae"]["features"] = analysed.uns["sae"]["features"].drop(columns="locality")
    axes = csk.pl.feature_stats(analysed, show=False)
    assert len(axes) == 2 and len(axes[0].collections) == 1
    assert axes[0].get_legend() is None
    assert len(_points(axes[0])) == int((~analysed.uns["sae"]["features"]["dead"]).sum())


def test_feature_stats_needs_the_feature_table(analysed):
    del analysed.uns["sae"]["features"]
    before = snapshot(analysed)
    with pytest.raises(KeyError, match=r"cellsae_kit\.tl\.feature_stats"):
        csk.pl.feature_stats(analysed)
    with pytest.raises(KeyError, match="SAEs found: 'sae'"):
        csk.pl.feature_stats(analysed, key="other")
    assert_unchanged(analysed, before)


def test_training_draws_the_history(analysed, figdir):
    before = snapshot(analysed)
    history = analysed.uns["sae"]["history"].copy()
    axes = csk.pl.training(analysed, show=False)
    assert [ax.get_title() for ax in axes] == ["loss", "FVU", "L0", "dead fraction"]
    curves = {
        "loss": ["loss"],
        "FVU": ["fvu_train", "fvu_validation"],
        "L0": ["l0"],
        "dead fraction": ["dead_fraction"],
    }
    for ax in axes:
        lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert len(lines) == len(curves[ax.get_title()])
        for line, column in zip(lines, curves[ax.get_title()], strict=True):
            np.testing.assert_array_equal(line.get_xdata(), history["epoch"])
            np.testing.assert_allclose(line.get_ydata(), history[column])
    kept = [line for line in axes[1].get_lines() if line.get_linestyle() == ":"]
    assert kept[0].get_xdata()[0] == analysed.uns["sae"]["metrics"]["best_epoch"]
    csk.pl.training(analysed, save="_run.png", show=False)
    assert is_png(figdir / "training_run.png")
    assert_unchanged(analysed, before)
    pd.testing.assert_frame_equal(analysed.uns["sae"]["history"], history)


def test_training_draws_whatever_curves_exist(analysed):
    analysed.uns["sae"]["history"] = analysed.uns["sae"]["history"][["epoch", "loss", "fvu_train"]]
    analysed.uns["sae"]["history"]["fvu_validation"] = np.nan  # no validation cells
    axes = csk.pl.training(analysed, show=False)
    assert [ax.get_title() for ax in axes] == ["loss", "FVU"]
    assert len([line for line in axes[1].get_lines() if line.get_linestyle() == "-"]) == 1


@pytest.mark.parametrize(
    ("history", "error", "message"),
    [
        (None, KeyError, r"cellsae_kit\.tl\.sae"),
        (pd.DataFrame({"epoch": [1, 2], "lr": [0.1, 0.1]}), ValueError, "none of the curves"),
    ],
)
def test_training_bad_history(analysed, history, error, message):
    if history is None:
        del analysed.uns["sae"]["history"]
    else:
        analysed.uns["sae"]["history"] = history
    before = snapshot(analysed)
    with pytest.raises(error, match=message):
        csk.pl.training(analysed)
    assert_unchanged(analysed, before)
