import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import cellsae_kit as csk
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import LONG_TERM, is_png


@pytest.fixture
def trained(pbmc):
    csk.tl.sae(pbmc, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    return pbmc


def test_draws_each_feature_with_its_activations(trained, tmp_path):
    before = snapshot(trained)
    fig = csk.pl.features(trained, [3, "5"], return_fig=True)
    assert_unchanged(trained, before)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("feature")]
    assert [ax.get_title() for ax in panels] == ["feature 3", "feature 5"]
    colours = panels[0].collections[0].get_array()
    np.testing.assert_allclose(np.sort(colours), np.sort(trained.obsm["X_sae"][:, 3].toarray().ravel()), rtol=1e-6)
    fig.savefig(tmp_path / "features.png")
    plt.close("all")


def test_single_feature_on_an_exact_obsm_key(trained):
    ax = csk.pl.features(trained, 0, basis="X_pca", show=False)
    assert ax.get_title() == "feature 0"
    plt.close("all")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"features": [99]}, ValueError, "features 0-31"),
        ({"features": ["CD3E"]}, ValueError, "not a feature number"),
        ({"features": []}, ValueError, "empty"),
        ({"features": [0], "basis": "tsne"}, KeyError, "compute it first"),
        ({"features": [0], "key": "other"}, KeyError, "SAEs found: 'sae'"),
    ],
)
def test_bad_input(trained, kwargs, error, message):
    before = snapshot(trained)
    with pytest.raises(error, match=message):
        csk.pl.features(trained, **kwargs)
    assert_unchanged(trained, before)


def test_titles_name_the_best_term_shortened_to_fit(analysed, tmp_path):
    before = snapshot(analysed)
    table_before = analysed.uns["sae"]["features"].copy()
    unnamed = int(analysed.uns["sae"]["features"]["best_term"].isna().to_numpy().argmax())
    fig = csk.pl.features(analysed, [0, 1, unnamed], return_fig=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("feature")]
    assert titles[1] == "feature 1\nshort set"
    assert titles[2] == f"feature {unnamed}"
    first, *term_lines = titles[0].split("\n")
    assert first == "feature 0" and 1 <= len(term_lines) <= 2
    assert all(len(line) <= 34 for line in term_lines)
    shown = " ".join(term_lines)
    assert shown.endswith("…") and LONG_TERM.startswith(shown[:-1])
    fig.savefig(tmp_path / "features.png")
    assert is_png(tmp_path / "features.png")
    assert_unchanged(analysed, before)
    pd.testing.assert_frame_equal(analysed.uns["sae"]["features"], table_before)


def test_own_titles_win(analysed):
    axes = csk.pl.features(analysed, [0, 1], title=["a", "b"], show=False)
    assert [ax.get_title() for ax in axes] == ["a", "b"]


def test_dotplot_shows_the_top_ranked_features_with_their_activations(analysed, figdir):
    before = snapshot(analysed)
    dp = csk.pl.rank_features_groups_dotplot(analysed, n_features=2, return_fig=True)
    groups = list(analysed.obs["bulk_labels"].cat.categories)
    expected = [
        name
        for g in groups
        for name in sc.get.rank_genes_groups_df(analysed, g, key="rank_features_groups")["names"][:2]
    ]
    assert list(dp.var_names) == expected
    dp.make_figure()
    ticks = [t.get_text() for t in dp.get_axes()["mainplot_ax"].get_xticklabels()]
    assert ticks == expected
    # colour: mean activation over the group's cells; size: fraction of the group's cells where it is active
    codes = pd.DataFrame(analysed.obsm["X_sae"].toarray(), index=analysed.obs_names)
    by_group = analysed.obs["bulk_labels"]
    for name in set(expected):
        mean = codes[int(name)].groupby(by_group, observed=True).mean()
        active = (codes[int(name)] > 0).groupby(by_group, observed=True).mean()
        # a feature ranked for several groups has one column per group, all the same
        colour = dp.dot_color_df.loc[groups, [name]].to_numpy()
        size = dp.dot_size_df.loc[groups, [name]].to_numpy()
        np.testing.assert_allclose(
            colour, np.repeat(mean.loc[groups].to_numpy()[:, None], colour.shape[1], 1), rtol=1e-5
        )
        np.testing.assert_allclose(size, np.repeat(active.loc[groups].to_numpy()[:, None], size.shape[1], 1), rtol=1e-6)
    dp.savefig(figdir / "dotplot.png")
    assert is_png(figdir / "dotplot.png")
    csk.pl.rank_features_groups_dotplot(analysed, groups=["CD19+ B"], save="_b.png", show=False)
    assert is_png(figdir / "dotplot__b.png")
    assert_unchanged(analysed, before)


def test_dotplot_of_a_subset_of_groups_on_another_grouping(analysed):
    analysed.obs["louvain_copy"] = analysed.obs["louvain"]
    axes = csk.pl.rank_features_groups_dotplot(
        analysed, "louvain_copy", groups=["CD19+ B", "CD56+ NK"], n_features=3, show=False
    )
    ticks = [t.get_text() for t in axes["mainplot_ax"].get_xticklabels()]
    top = analysed.uns["rank_features_groups"]["names"]
    assert ticks == [*top["CD19+ B"][:3], *top["CD56+ NK"][:3]]
    assert [t.get_text() for t in axes["mainplot_ax"].get_yticklabels()] == list(analysed.obs["louvain"].cat.categories)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"key": "missing"}, KeyError, "run cellsae_kit.tl.rank_features_groups"),
        ({"groups": ["B cells"]}, ValueError, "were not ranked"),
        ({"n_features": 0}, ValueError, "at least 1"),
        ({"groupby": "cell_type"}, KeyError, "not a column of adata.obs"),
    ],
)
def test_dotplot_bad_input(analysed, kwargs, error, message):
    before = snapshot(analysed)
    with pytest.raises(error, match=message):
        csk.pl.rank_features_groups_dotplot(analysed, **kwargs)
    assert_unchanged(analysed, before)
