import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import cellsae_kit as csk
from cellsae_kit.pl._genes import NEGATIVE, NOT_SIGNIFICANT, POSITIVE, SIGNIFICANT
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import LONG_TERM, is_png


def _bars(ax):
    return [p for p in ax.patches if p.get_height() > 0]


def test_top_genes_draws_the_genes_of_tl_top_genes(analysed, figdir):
    before = snapshot(analysed)
    ax = csk.pl.top_genes(analysed, "3", n=7, show=False)
    expected = csk.tl.top_genes(analysed, 3, n=7)
    assert [t.get_text() for t in ax.get_yticklabels()] == expected["gene"].tolist()
    bars = _bars(ax)
    np.testing.assert_allclose([b.get_width() for b in bars], expected["loading"], rtol=1e-6)
    assert [b.get_y() + b.get_height() / 2 for b in bars] == list(range(7))
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the largest loading on top
    assert ax.get_title() == "feature 3\nshort set"
    csk.pl.top_genes(analysed, 3, save="_f3.png", show=False)
    assert is_png(figdir / "top_genes_f3.png")
    assert_unchanged(analysed, before)


def test_top_genes_colours_signs_and_shortens_the_title(analysed, tmp_path):
    fig = csk.pl.top_genes(analysed, 0, n=20, sign="both", return_fig=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    expected = csk.tl.top_genes(analysed, 0, n=20, sign="both")
    colours = [mcolors.to_hex(b.get_facecolor()) for b in _bars(ax)]
    assert colours == [POSITIVE if s == "positive" else NEGATIVE for s in expected["sign"]]
    assert NEGATIVE in colours  # the data have both signs, so the test can fail
    first, *term = ax.get_title().split("\n")
    assert first == "feature 0" and term[-1].endswith("…") and LONG_TERM.startswith(" ".join(term)[:-1])
    fig.savefig(tmp_path / "top_genes.png")
    assert is_png(tmp_path / "top_genes.png")


def test_top_genes_into_given_axes(analysed):
    fig = Figure()
    ax = fig.add_subplot()
    assert csk.pl.top_genes(analysed, 1, n=4, ax=ax, show=False) is ax
    assert len(ax.get_yticklabels()) == 4


@pytest.mark.parametrize(
    ("feature", "kwargs", "error", "message"),
    [
        (99, {}, ValueError, "out of range"),
        ("CD3E", {}, ValueError, "not a feature number"),
        (0, {"key": "other"}, KeyError, "feature_genes"),
        (0, {"n": 0}, ValueError, "at least 1"),
    ],
)
def test_top_genes_bad_input(analysed, feature, kwargs, error, message):
    before = snapshot(analysed)
    with pytest.raises(error, match=message):
        csk.pl.top_genes(analysed, feature, **kwargs)
    assert_unchanged(analysed, before)


def test_top_genes_without_loadings_names_feature_genes(analysed):
    del analysed.varm["sae_loadings"]
    before = snapshot(analysed)
    with pytest.raises(KeyError, match=r"cellsae_kit\.tl\.feature_genes"):
        csk.pl.top_genes(analysed, 0)
    assert_unchanged(analysed, before)


def test_top_genes_of_a_feature_without_positive_loadings(analysed):
    analysed.varm["sae_loadings"][:, 2] = -np.abs(analysed.varm["sae_loadings"][:, 2])
    with pytest.raises(ValueError, match="sign='both'"):
        csk.pl.top_genes(analysed, 2)


def test_annotation_draws_each_features_top_terms(analysed, figdir):
    before = snapshot(analysed)
    annotation_before = analysed.uns["sae"]["annotation"].copy()
    fig = csk.pl.annotation(analysed, [0, 1, 3], n_terms=4, return_fig=True)
    panels = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("feature")]
    assert len(panels) == 3
    table = analysed.uns["sae"]["annotation"]
    best_group = analysed.uns["sae"]["features"]["best_group"]
    for feature, ax in zip([0, 1, 3], panels, strict=True):
        rows = table[table["feature"].astype(str) == str(feature)].sort_values("rank").head(4)
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert len(labels) == 4
        for label, term in zip(labels, rows["term"], strict=True):
            lines = label.split("\n")
            assert len(lines) <= 2 and all(len(line) <= 38 for line in lines)
            assert term.startswith(" ".join(lines).removesuffix("…"))
        bars = _bars(ax)
        np.testing.assert_allclose([b.get_width() for b in bars], rows["z"], rtol=1e-6)
        colours = [mcolors.to_hex(b.get_facecolor()) for b in bars]
        assert colours == [SIGNIFICANT if p < 0.05 else NOT_SIGNIFICANT for p in rows["pval_matched_adj"]]
        assert ax.get_xlabel() == "z against genes of matched expression"
        assert ax.get_title(loc="left") == f"feature {feature} (most active in {best_group[str(feature)]})"
    assert any("…" in t.get_text() for t in panels[0].get_yticklabels())  # the long name was shortened
    colours = {mcolors.to_hex(b.get_facecolor()) for ax in panels for b in _bars(ax)}
    assert colours == {SIGNIFICANT, NOT_SIGNIFICANT}  # both kinds drawn, so the colour check can fail
    fig.savefig(figdir / "annotation.png")
    assert is_png(figdir / "annotation.png")
    csk.pl.annotation(analysed, 0, save=True, show=False)
    assert (figdir / "annotation.pdf").is_file()  # scanpy's default format
    assert_unchanged(analysed, before)
    pd.testing.assert_frame_equal(analysed.uns["sae"]["annotation"], annotation_before)


def test_annotation_of_one_feature_returns_its_axes(analysed):
    ax = csk.pl.annotation(analysed, "1", n_terms=2, alpha=1e-300, show=False)
    assert len(ax.get_yticklabels()) == 2
    assert {mcolors.to_hex(b.get_facecolor()) for b in _bars(ax)} == {NOT_SIGNIFICANT}


@pytest.mark.parametrize(
    ("features", "kwargs", "error", "message"),
    [
        ([40], {}, ValueError, "features 0-31"),
        (["B cell receptor"], {}, ValueError, "not a feature number"),
        ([], {}, ValueError, "empty"),
        ([0], {"n_terms": 0}, ValueError, "at least 1"),
        ([0, 1], {"ax": "an axes"}, ValueError, "one feature"),
        ([0], {"key": "other"}, KeyError, "SAEs found: 'sae'"),
    ],
)
def test_annotation_bad_input(analysed, features, kwargs, error, message):
    before = snapshot(analysed)
    with pytest.raises(error, match=message):
        csk.pl.annotation(analysed, features, **kwargs)
    assert_unchanged(analysed, before)


def test_annotation_missing_names_annotate_features(analysed):
    del analysed.uns["sae"]["annotation"]
    before = snapshot(analysed)
    with pytest.raises(KeyError, match=r"cellsae_kit\.tl\.annotate_features"):
        csk.pl.annotation(analysed, [0])
    assert_unchanged(analysed, before)
