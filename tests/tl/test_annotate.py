import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats
from sklearn.metrics import roc_auc_score

import cellsae_kit as csk
from cellsae_kit.tl._annotate import cell_activity, decoupler_scores, enrich, normal_scores, split_cells
from tests.conftest import assert_unchanged, snapshot

FAST = {"n_features": 32, "k": 4, "n_epochs": 10, "progress": False}


@pytest.fixture
def trained(pbmc):
    csk.tl.sae(pbmc, "X_pca", **FAST)
    return pbmc


def _toy(seed=0, n_features=6, n_genes=60):
    rng = np.random.default_rng(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    loadings = pd.DataFrame(rng.normal(size=(n_features, n_genes)), index=[str(i) for i in range(n_features)])
    loadings.columns = genes
    net = pd.DataFrame(
        {
            "source": ["A"] * 8 + ["B"] * 12 + ["C"] * 6,
            "target": genes[:8] + genes[10:22] + genes[40:46],
            "weight": 1.0,
        }
    )
    return loadings, net


def test_decoupler_scores_match_least_squares_t_values():
    loadings, net = _toy()
    loadings.iloc[2, :8] += 2.0  # feature 2 raises set A
    scores, pvals_adj = decoupler_scores(loadings, net)
    for feature in loadings.index:
        raw = []
        for term in ["A", "B", "C"]:
            members = loadings.columns.isin(net.loc[net["source"] == term, "target"])
            fit = stats.linregress(members.astype(float), loadings.loc[feature].to_numpy())
            assert scores.loc[feature, term] == pytest.approx(fit.slope / fit.stderr, rel=1e-6)
            raw.append(fit.pvalue)
        # adjusted p-values: Benjamini-Hochberg over the terms of each feature
        np.testing.assert_allclose(
            pvals_adj.loc[feature, ["A", "B", "C"]], stats.false_discovery_control(raw), rtol=1e-6
        )
    assert pvals_adj.loc["2", "A"] < 1e-3


def test_enrich_names_the_raised_set_and_keeps_all_zero_features():
    loadings, net = _toy()
    loadings.iloc[2, :8] += 2.0
    loadings.iloc[4] = 0.0
    table = enrich(loadings, net, n_top=2)
    assert list(table.columns) == [
        "feature",
        "rank",
        "term",
        "cluster",
        "n_terms",
        "score",
        "pval_adj",
        "z",
        "pval_matched_adj",
    ]
    assert list(pd.unique(table["feature"])) == list(loadings.index)
    dead = table[table["feature"] == "4"]
    assert len(dead) == 1 and dead["term"].isna().all()
    assert (table.groupby("feature", observed=True).size().drop("4") == 2).all()
    top = table[(table["feature"] == "2") & (table["rank"] == 1)].iloc[0]
    assert top["term"] == "A" and top["pval_matched_adj"] < 1e-3 and top["pval_adj"] < 1e-3


def test_enrich_one_row_per_programme_with_the_most_specific_term():
    genes = [f"g{i}" for i in range(200)]
    loadings = pd.DataFrame(np.random.default_rng(1).normal(size=(1, 200)), index=["0"], columns=genes)
    loadings.iloc[0, :20] += 3.0
    # a general term, a near-duplicate of it, and a specific child: one programme
    net = pd.DataFrame(
        {
            "source": ["general"] * 20 + ["duplicate"] * 19 + ["specific"] * 15 + ["other"] * 10,
            "target": genes[:20] + genes[:19] + genes[:15] + genes[100:110],
        }
    )
    table = enrich(normal_scores(loadings), net, n_top=5)
    top = table.iloc[0]
    assert (top["cluster"], top["term"], top["n_terms"]) == ("general", "specific", 3)
    assert table["cluster"].tolist().count("general") == 1
    # 1 keeps only identical sets together
    apart = enrich(normal_scores(loadings), net, n_top=5, min_jaccard=1.0)
    assert {"general", "duplicate", "specific"} <= set(apart["cluster"])


def test_matched_null_discounts_highly_expressed_sets():
    """A set of the most expressed genes beats all genes but not genes of its own expression."""
    rng = np.random.default_rng(0)
    n = 300
    mean = np.linspace(0, 5, n)
    genes = [f"g{i}" for i in range(n)]
    # loadings grow with expression (as correlations do), no programme
    loadings = pd.DataFrame((mean + rng.normal(scale=0.5, size=n))[None, :], index=["0"], columns=genes)
    top = list(np.argsort(-mean)[:15])
    net = pd.DataFrame({"source": ["ribosome"] * 15, "target": [genes[i] for i in top]})
    from cellsae_kit.tl._null import expression_strata

    strata = expression_strata(mean, mean)
    matched = enrich(normal_scores(loadings), net, strata=strata).iloc[0]
    assert matched["pval_adj"] < 1e-6  # decoupler against all genes
    assert matched["pval_matched_adj"] > 0.05


def test_split_cells_is_seeded_and_checked():
    mask = split_cells(101, 0.5, random_state=3)
    assert mask.sum() == 50 and (mask == split_cells(101, 0.5, random_state=3)).all()
    assert (mask != split_cells(101, 0.5, random_state=4)).any()
    assert not split_cells(10, 0).any()
    for bad in (1.0, -0.1, True, "half"):
        with pytest.raises(ValueError, match="held_out"):
            split_cells(10, bad)


def test_annotate_features_layout_and_best_term(trained):
    csk.tl.annotate_features(trained, "progeny", n_top=3)
    entry = trained.uns["sae"]
    annotation = entry["annotation"]
    assert list(annotation.columns)[:4] == ["feature", "rank", "term", "cluster"]
    assert set(annotation["feature"]) == {str(i) for i in range(32)}
    table = entry["features"]
    for feature, row in table.iterrows():
        first = annotation[(annotation["feature"] == feature) & (annotation["rank"] == 1)]
        if len(first) and first["pval_matched_adj"].iloc[0] < 0.05 and first["z"].iloc[0] > 0:
            assert row["best_term"] == first["term"].iloc[0]
            assert row["best_term_pval_matched_adj"] == first["pval_matched_adj"].iloc[0]
        else:
            assert pd.isna(row["best_term"])
    params = entry["annotation_params"]
    assert params["loadings"] == "sae_annotation_loadings" and params["null"] == "expression"
    held = trained.obs_names.isin(entry["annotation_held_out"])
    assert held.sum() == 350
    # the loadings are the correlations on the annotation half only
    from cellsae_kit.tl._shared import correlation

    expression = trained.raw[:, trained.var_names].X
    expected = correlation(expression[~held], trained.obsm["X_sae"][~held])
    np.testing.assert_allclose(trained.varm["sae_annotation_loadings"], expected, atol=1e-6)


def test_annotate_features_with_stored_loadings_and_decoupler_null(trained):
    csk.tl.annotate_features(trained, "progeny", loadings="sae_loadings", null="none", held_out=0)
    entry = trained.uns["sae"]
    assert entry["annotation_params"]["n_genes"] == int((np.abs(trained.varm["sae_loadings"]).sum(1) > 0).sum())
    assert len(entry["annotation_held_out"]) == 0
    annotation, table = entry["annotation"], entry["features"]
    for feature, term in table["best_term"].dropna().items():
        first = annotation[(annotation["feature"] == feature) & (annotation["rank"] == 1)].iloc[0]
        assert first["term"] == term and first["pval_adj"] < 0.05


def test_annotation_survives_h5ad(trained, tmp_path):
    csk.tl.feature_stats(trained, groupby="bulk_labels")
    csk.tl.annotate_features(trained, "progeny")
    csk.tl.score_annotations(trained, "progeny")
    trained.write_h5ad(tmp_path / "a.h5ad")
    import anndata as ad

    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(
        back.uns["sae"]["annotation"].reset_index(drop=True),
        trained.uns["sae"]["annotation"].reset_index(drop=True),
        check_dtype=False,
        check_categorical=False,
    )
    assert "best_term_auroc" in back.uns["sae"]["features"]


def test_score_annotations_matches_direct_auroc_on_held_out_cells(trained):
    csk.tl.annotate_features(trained, "progeny")
    csk.tl.score_annotations(trained, "progeny", n_exclude=5)
    table = trained.uns["sae"]["features"]
    named = table["best_term"].dropna()
    assert len(named) > 0
    net = csk.datasets.genesets("progeny")
    held = trained.obs_names.isin(trained.uns["sae"]["annotation_held_out"])
    assert trained.uns["sae"]["annotation_params"]["n_scored_cells"] == held.sum()
    expression = trained.raw[:, trained.var_names].X.toarray()[held]
    codes = trained.obsm["X_sae"].toarray()[held]
    loadings = trained.varm["sae_annotation_loadings"]
    for feature, term in list(named.items())[:3]:
        top = set(trained.var_names[np.argsort(-loadings[:, int(feature)])[:5]])
        members = trained.var_names.isin(set(net.loc[net["source"] == term, "target"]) - top).astype(float)
        # ULM by hand: per cell, the t-value of expression regressed on set membership
        activity = []
        for row in expression:
            fit = stats.linregress(members, row)
            activity.append(fit.slope / fit.stderr)
        active = codes[:, int(feature)] > 0
        expected = roc_auc_score(active, activity)
        assert table.loc[feature, "best_term_auroc"] == pytest.approx(expected, rel=1e-6)
    assert table.loc[table["best_term"].isna(), "best_term_auroc"].isna().all()


def test_score_annotations_refuses_a_subset_without_the_held_out_cells(trained):
    csk.tl.annotate_features(trained, "progeny")
    held = trained.obs_names.isin(trained.uns["sae"]["annotation_held_out"])
    subset = trained[~held].copy()
    with pytest.raises(ValueError, match="held out"):
        csk.tl.score_annotations(subset, "progeny")


def test_rank_transform_protects_against_one_extreme_gene():
    loadings, net = _toy(n_genes=200)
    loadings.iloc[1, 12] = 1000.0  # one huge gene in set B, the rest noise
    raw = enrich(loadings, net, n_top=3, null="none")
    ranked = enrich(normal_scores(loadings), net, n_top=3, null="none")
    b_raw = raw[(raw["feature"] == "1") & (raw["term"] == "B")].iloc[0]
    b_ranked = ranked[(ranked["feature"] == "1") & (ranked["term"] == "B")].iloc[0]
    assert b_raw["score"] > b_ranked["score"]
    assert b_ranked["pval_adj"] > 0.05


def test_net_as_dataframe_and_gmt(trained, tmp_path):
    net = csk.datasets.genesets("progeny")
    csk.tl.annotate_features(trained, net)
    first = trained.uns["sae"]["annotation"].copy()
    gmt = tmp_path / "progeny.gmt"
    gmt.write_text("".join(f"{s}\tx\t" + "\t".join(g["target"]) + "\n" for s, g in net.groupby("source")))
    # GMT has no weights: a different (unweighted) test, but the same terms exist
    csk.tl.annotate_features(trained, gmt)
    assert set(trained.uns["sae"]["annotation"]["term"].dropna()) <= set(net["source"])
    assert len(first) == len(trained.uns["sae"]["annotation"])


@pytest.mark.parametrize(
    ("setup", "kwargs", "error", "match"),
    [
        (None, {"loadings": "nope"}, KeyError, "nope"),
        (None, {"null": "gene"}, ValueError, "null"),
        (None, {"held_out": 1.0}, ValueError, "held_out"),
        (None, {"min_jaccard": 0}, ValueError, "min_jaccard"),
        (lambda a: a.raw.X.data.__setitem__(slice(None), 0.0), {}, ValueError, "constant"),
        (None, {"key": "nope"}, KeyError, "X_nope"),
        (None, {"net": pd.DataFrame({"source": ["A"] * 6, "target": list("uvwxyz")})}, ValueError, "share no genes"),
        (None, {"net": "kegg"}, ValueError, "go_bp"),
        (None, {"alpha": 1.5}, ValueError, "alpha"),
        (
            lambda a: a.varm.__setitem__("sae_loadings", np.zeros_like(a.varm["sae_loadings"])),
            {"loadings": "sae_loadings"},
            ValueError,
            "dead",
        ),
        (lambda a: a.varm["sae_loadings"].__setitem__((0, 0), np.nan), {"loadings": "sae_loadings"}, ValueError, "NaN"),
    ],
)
def test_annotate_bad_input(trained, setup, kwargs, error, match):
    if setup is not None:
        setup(trained)
    before = snapshot(trained)
    uns_before = dict(trained.uns["sae"])
    kwargs = {"net": "progeny"} | kwargs
    with pytest.raises(error, match=match):
        csk.tl.annotate_features(trained, **kwargs)
    assert_unchanged(trained, before)
    assert set(trained.uns["sae"]) == set(uns_before)


def test_score_annotations_bad_input(trained):
    before = snapshot(trained)
    with pytest.raises(KeyError, match="annotate_features"):
        csk.tl.score_annotations(trained, "progeny")
    assert_unchanged(trained, before)
    csk.tl.annotate_features(trained, "progeny")
    before = snapshot(trained)
    other = pd.DataFrame({"source": ["Z"] * 6, "target": trained.var_names[:6]})
    if trained.uns["sae"]["features"]["best_term"].notna().any():
        with pytest.raises(ValueError, match="not in these gene sets"):
            csk.tl.score_annotations(trained, other)
    with pytest.raises(ValueError, match="use_raw"):
        csk.tl.score_annotations(trained, "progeny", use_raw=True, layer="x")
    assert_unchanged(trained, before)
    assert "best_term_auroc" not in trained.uns["sae"]["features"]


def test_cell_activity_of_a_cell_without_expression_is_zero():
    genes = pd.Index([f"g{i}" for i in range(20)])
    x = np.random.default_rng(0).normal(size=(3, 20))
    x[0, :5] += 3.0
    x[1] = 0.0  # e.g. a cell without counts
    net = pd.DataFrame({"source": ["A"] * 5, "target": genes[:5]})
    activity = cell_activity(sparse.csr_matrix(x), pd.Index(["c0", "c1", "c2"]), genes, net)
    assert activity.loc["c1", "A"] == 0 and activity.loc["c0", "A"] > 3
