import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats
from sklearn.metrics import roc_auc_score

import cellsae_kit as csk
from cellsae_kit.tl._annotate import cell_activity, enrich, normal_scores
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


def test_enrich_matches_least_squares_t_values():
    loadings, net = _toy()
    loadings.iloc[2, :8] += 2.0  # feature 2 raises set A
    table = enrich(loadings, net, n_top=3)
    for _, row in table.iterrows():
        members = loadings.columns.isin(net.loc[net["source"] == row["term"], "target"])
        fit = stats.linregress(members.astype(float), loadings.loc[row["feature"]].to_numpy())
        assert row["score"] == pytest.approx(fit.slope / fit.stderr, rel=1e-6)
    # adjusted p-values: Benjamini-Hochberg over the three terms of each feature
    for feature, rows in table.groupby("feature", observed=True):
        raw = []
        for term in rows["term"]:
            members = loadings.columns.isin(net.loc[net["source"] == term, "target"])
            raw.append(stats.linregress(members.astype(float), loadings.loc[feature].to_numpy()).pvalue)
        np.testing.assert_allclose(rows["pval_adj"], stats.false_discovery_control(raw), rtol=1e-6)
    top = table[(table["feature"] == "2") & (table["rank"] == 1)].iloc[0]
    assert top["term"] == "A" and top["pval_adj"] < 1e-3


def test_enrich_keeps_all_zero_features():
    loadings, net = _toy()
    loadings.iloc[4] = 0.0
    table = enrich(loadings, net, n_top=2)
    assert list(pd.unique(table["feature"])) == list(loadings.index)
    dead = table[table["feature"] == "4"]
    assert len(dead) == 1 and dead["term"].isna().all()
    assert (table.groupby("feature", observed=True).size().drop("4") == 2).all()


def test_annotate_features_layout_and_best_term(trained):
    csk.tl.annotate_features(trained, "progeny", n_top=3)
    entry = trained.uns["sae"]
    annotation = entry["annotation"]
    assert list(annotation.columns) == ["feature", "term", "score", "pval_adj", "rank"]
    assert set(annotation["feature"]) == {str(i) for i in range(32)}
    table = entry["features"]
    for feature, row in table.iterrows():
        hits = annotation[(annotation["feature"] == feature) & (annotation["score"] > 0)]
        hits = hits[hits["pval_adj"] < 0.05]
        if len(hits):
            assert row["best_term"] == hits.sort_values("score").iloc[-1]["term"]
        else:
            assert pd.isna(row["best_term"])
    assert entry["annotation_params"]["n_genes"] == int((np.abs(trained.varm["sae_loadings"]).sum(1) > 0).sum())


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


def test_score_annotations_matches_direct_auroc(trained):
    csk.tl.annotate_features(trained, "progeny")
    csk.tl.score_annotations(trained, "progeny", n_exclude=5)
    table = trained.uns["sae"]["features"]
    named = table["best_term"].dropna()
    assert len(named) > 0
    net = csk.datasets.genesets("progeny")
    expression = trained.raw[:, trained.var_names].X.toarray()
    codes = trained.obsm["X_sae"].toarray()
    loadings = trained.varm["sae_loadings"]
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


def test_rank_transform_protects_against_one_extreme_gene():
    loadings, net = _toy(n_genes=200)
    loadings.iloc[1, 12] = 1000.0  # one huge gene in set B, the rest noise
    raw = enrich(loadings, net, n_top=3)
    ranked = enrich(normal_scores(loadings), net, n_top=3)
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
        (lambda a: a.varm.pop("sae_loadings"), {}, KeyError, "tl.feature_genes"),
        (None, {"key": "nope"}, KeyError, "X_nope"),
        (None, {"net": pd.DataFrame({"source": ["A"] * 6, "target": list("uvwxyz")})}, ValueError, "share no genes"),
        (None, {"net": "kegg"}, ValueError, "go_bp"),
        (None, {"alpha": 1.5}, ValueError, "alpha"),
        (lambda a: a.varm.__setitem__("sae_loadings", np.zeros_like(a.varm["sae_loadings"])), {}, ValueError, "dead"),
        (lambda a: a.varm["sae_loadings"].__setitem__((0, 0), np.nan), {}, ValueError, "NaN"),
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
