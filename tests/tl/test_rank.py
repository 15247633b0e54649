import numpy as np
import pytest
import scanpy as sc
from scipy import sparse, stats
from sklearn.metrics import roc_auc_score

import cellsae_kit as csk
from cellsae_kit.tl._rank import mann_whitney
from tests.conftest import assert_unchanged, snapshot


def test_mann_whitney_matches_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=(300, 6)) * (rng.random((300, 6)) < 0.3)  # sparse: ties only at zero
    x[:40, 0] += 2  # feature 0 marks the first 40 cells
    x[:, 5] = 0  # a dead feature
    is_in = np.zeros(300, bool)
    is_in[:40] = True
    out = mann_whitney(x[is_in], x[~is_in])
    for j in range(5):
        ref = stats.mannwhitneyu(x[is_in, j], x[~is_in, j], method="asymptotic")
        assert out["pvals"][j] == pytest.approx(ref.pvalue, rel=1e-6)
        assert out["auroc"][j] == pytest.approx(roc_auc_score(is_in, x[:, j]))
    assert out["auroc"][5] == 0.5 and out["pvals"][5] == 1.0 and out["z"][5] == 0
    assert out["z"][0] > 5


@pytest.fixture
def ranked(pbmc):
    csk.tl.sae(pbmc, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    csk.tl.rank_features_groups(pbmc, "bulk_labels")
    return pbmc


def test_layout_works_with_scanpy(ranked):
    entry = ranked.uns["rank_features_groups"]
    groups = list(ranked.obs["bulk_labels"].cat.categories)
    assert list(entry["names"].dtype.names) == groups
    df = sc.get.rank_genes_groups_df(ranked, "CD19+ B", key="rank_features_groups")
    assert len(df) == 64 and df["scores"].is_monotonic_decreasing
    # the top feature's AUROC matches an independent computation
    codes = ranked.obsm["X_sae"].toarray()
    top = int(df["names"][0])
    is_b = (ranked.obs["bulk_labels"] == "CD19+ B").to_numpy()
    assert df["scores"][0] == pytest.approx(roc_auc_score(is_b, codes[:, top]), rel=1e-5)
    assert (df["pvals_adj"] >= df["pvals"]).all()
    sc.pl.rank_genes_groups(ranked, key="rank_features_groups", n_genes=3, show=False)


def test_reference_group_wilcoxon_and_subset(ranked):
    csk.tl.rank_features_groups(
        ranked,
        "bulk_labels",
        method="wilcoxon",
        groups=["CD19+ B"],
        reference="CD14+ Monocyte",
        n_features=5,
        key_added="b_vs_mono",
    )
    entry = ranked.uns["b_vs_mono"]
    assert entry["names"].dtype.names == ("CD19+ B",) and len(entry["names"]) == 5
    codes = ranked.obsm["X_sae"].toarray()
    labels = ranked.obs["bulk_labels"].to_numpy()
    top = int(entry["names"]["CD19+ B"][0])
    ref = stats.mannwhitneyu(
        codes[labels == "CD19+ B", top], codes[labels == "CD14+ Monocyte", top], method="asymptotic"
    )
    assert entry["pvals"]["CD19+ B"][0] == pytest.approx(ref.pvalue, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"groupby": "nope"}, KeyError, "not a column"),
        ({"method": "t-test"}, ValueError, "not known"),
        ({"reference": "Neutrophil"}, ValueError, "not a group"),
        ({"groups": ["Neutrophil"]}, ValueError, "are not in"),
        ({"n_features": 0}, ValueError, "n_features"),
        ({"key": "missing"}, KeyError, "X_missing"),
    ],
)
def test_bad_input_leaves_adata_unchanged(ranked, kwargs, error, message):
    before = snapshot(ranked)
    with pytest.raises(error, match=message):
        csk.tl.rank_features_groups(ranked, **({"groupby": "bulk_labels"} | kwargs))
    assert_unchanged(ranked, before)


def test_sparse_layout_is_respected(pbmc):
    pbmc.obsm["X_dense_sae"] = np.abs(np.random.default_rng(0).normal(size=(700, 5))) * (np.arange(700) < 100)[:, None]
    pbmc.uns["dense_sae"] = {}
    csk.tl.rank_features_groups(pbmc, "bulk_labels", key="dense_sae", key_added="r")
    assert sparse.issparse(pbmc.obsm["X_dense_sae"]) is False
