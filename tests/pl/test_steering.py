import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.figure import Figure

import cellsae_kit as csk
from cellsae_kit.pl._genes import NEGATIVE, POSITIVE
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import is_png

NK, CD34 = ("bulk_labels", "CD56+ NK"), ("bulk_labels", "CD34+")


@pytest.fixture
def steered(analysed):
    feature = int(analysed.uns["rank_features_groups"]["names"]["CD56+ NK"][0])
    csk.tl.steer(analysed, feature, target=NK, scale=3.0, cells=CD34, groupby="bulk_labels")
    return analysed


def test_transfer_bars_and_top_genes(steered, figdir):
    before = snapshot(steered)
    result = steered.uns["sae_steer"]
    fig = csk.pl.steering(steered, n_genes=8, return_fig=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    bars, genes = fig.axes
    # stacked bars: each label's segment is its fraction of the steered cells, before (y=0) and after (y=1)
    transfer = result["transfer"]
    shown = transfer[(transfer > 0).any(axis=1)]
    segments = {container.get_label(): list(container.patches) for container in bars.containers}
    drawn = {
        label: {round(p.get_y() + p.get_height() / 2): p.get_width() for p in patches}
        for label, patches in segments.items()
    }
    assert set(drawn) == set(shown.index)
    for label, row in shown.iterrows():
        assert drawn[label][0] == pytest.approx(row["before"] / transfer["before"].sum())
        assert drawn[label][1] == pytest.approx(row["after"] / transfer["after"].sum())
    # scanpy's colours of the cell types are used
    categories = list(steered.obs["bulk_labels"].cat.categories)
    nk_colour = steered.uns["bulk_labels_colors"][categories.index("CD56+ NK")]
    assert mcolors.to_hex(segments["CD56+ NK"][0].get_facecolor()) == mcolors.to_hex(nk_colour)
    assert [t.get_text() for t in bars.get_yticklabels()] == ["before", "after"]
    # genes: the 8 largest changes, largest on top, coloured by sign
    top = result["genes"].iloc[:8]
    assert [t.get_text() for t in genes.get_yticklabels()] == list(top.index)
    np.testing.assert_allclose([p.get_width() for p in genes.patches], top["delta"], rtol=1e-6)
    colours = [mcolors.to_hex(p.get_facecolor()) for p in genes.patches]
    assert colours == [POSITIVE if d >= 0 else NEGATIVE for d in top["delta"]]
    assert fig.get_suptitle().startswith(f"feature {result['params']['feature']} set to ")
    assert "(3 x mean of CD56+ NK) in 13 cells" in fig.get_suptitle()
    fig.savefig(figdir / "steering.png", dpi=80)
    assert is_png(figdir / "steering.png")
    csk.pl.steering(steered, save="_nk.png", show=False)
    assert is_png(figdir / "steering_nk.png")
    assert_unchanged(steered, before)


def test_one_panel_without_labels_or_without_genes(analysed):
    csk.tl.steer(analysed, 0, scale=2.0, key_added="genes_only")
    axes = csk.pl.steering(analysed, "genes_only", show=False)
    assert [ax.get_title() for ax in axes] == ["top changed genes"]
    assert "feature 0 scaled by 2 in 700 cells" == axes[0].figure.get_suptitle()
    csk.tl.steer(analysed, 0, target=NK, cells=CD34, groupby="bulk_labels", key_added="labels_only")
    del analysed.uns["labels_only"]["genes"]
    axes = csk.pl.steering(analysed, "labels_only", show=False)
    assert [ax.get_title() for ax in axes] == ["predicted labels (kNN transfer)"]
    assert "(mean of CD56+ NK) in 13 cells" in axes[0].figure.get_suptitle()


def test_needs_a_steering_result(steered):
    before = snapshot(steered)
    with pytest.raises(KeyError, match=r"cellsae_kit\.tl\.steer.*found: 'sae_steer'"):
        csk.pl.steering(steered, "other")
    with pytest.raises(ValueError, match="n_genes"):
        csk.pl.steering(steered, n_genes=0)
    del steered.uns["sae_steer"]["genes"], steered.uns["sae_steer"]["transfer"]
    with pytest.raises(ValueError, match="neither label transfer nor gene changes"):
        csk.pl.steering(steered)
    assert_unchanged(steered, before)
