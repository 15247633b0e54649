import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse, stats
from sklearn.metrics import roc_auc_score

import cellsae_kit as csk
from cellsae_kit.tl._genes import regression, welch_de
from cellsae_kit.tl._shared import correlation
from tests.conftest import assert_unchanged, snapshot

# A 32-feature SAE on 700 cells has a few features active in fewer than 3 cells; the DE method warns about them.
UNTESTED_OK = pytest.mark.filterwarnings("ignore:.*were not tested:UserWarning")


@pytest.fixture(scope="module")
def _trained():
    adata = sc.datasets.pbmc68k_reduced()
    # A UMAP has no linear map to genes: the case feature_genes is for.
    # TopK in large batches, the settings these references were written for (k >= 2 dimensions warns).
    with pytest.warns(UserWarning, match="k=4 active features per cell for an input of 2 dimensions"):
        csk.tl.sae(adata, "X_umap", n_features=32, k=4, n_epochs=10, activation="topk", batch_size=1024, progress=False)
    return adata


@pytest.fixture
def trained(_trained):
    return _trained.copy()


def _raw(adata):
    return adata.raw.X.toarray().astype(np.float64)


def _reference_correlation(expr, codes):
    n_genes = expr.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(np.hstack([expr, codes]).T)[:n_genes, n_genes:]
    return np.nan_to_num(r, nan=0.0)


def _reference_de(expr, a, n_top):
    """The reference study's rule by hand: top cells by activation vs inactive cells, scipy's Welch test, BH."""
    top = np.argsort(-a, kind="stable")[: min(n_top, int((a > 0).sum()))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant genes
        t, p = stats.ttest_ind(expr[top], expr[a == 0], equal_var=False, axis=0)
    t, p = np.where(np.isfinite(t), t, 0.0), np.where(np.isfinite(t), p, 1.0)
    return t, stats.false_discovery_control(p, method="bh")


def test_correlation_matches_corrcoef(trained):
    csk.tl.feature_genes(trained)  # adata.raw (log-normalised) by default
    codes = trained.obsm["X_sae"].toarray()
    reference = _reference_correlation(_raw(trained), codes)
    loadings = trained.varm["sae_loadings"]
    assert loadings.shape == (765, 32) and loadings.dtype == np.float32
    np.testing.assert_allclose(loadings, reference, atol=1e-6)
    dead = ~codes.any(axis=0)
    assert np.abs(loadings[:, ~dead]).max() > 0.3
    assert (loadings[:, dead] == 0).all()
    assert trained.uns["sae"]["params"]["loadings"] == "feature_genes:correlation"
    assert trained.uns["sae"]["params"]["feature_genes"]["sae_loadings"]["expression"] == "adata.raw.X"


def test_correlation_sparse_equals_dense_with_dead_feature_and_constant_gene():
    rng = np.random.default_rng(0)
    expr = rng.poisson(0.5, size=(200, 30)).astype(np.float64)
    expr[:, 3] = 0.0  # a gene never detected
    expr[:, 4] = 2.5  # a constant gene
    codes = rng.exponential(size=(200, 6)) * (rng.random((200, 6)) < 0.2)
    codes[:, 2] = 0.0
    dense = correlation(expr, codes)
    np.testing.assert_allclose(correlation(sparse.csr_matrix(expr), sparse.csr_matrix(codes)), dense, atol=1e-12)
    np.testing.assert_allclose(correlation(sparse.csc_matrix(expr), codes), dense, atol=1e-12)
    np.testing.assert_allclose(dense, _reference_correlation(expr, codes), atol=1e-10)
    assert (dense[:, 2] == 0).all() and (dense[[3, 4]] == 0).all()


def test_regression_matches_lstsq(trained):
    csk.tl.feature_genes(trained, method="regression")
    codes = trained.obsm["X_sae"].toarray().astype(np.float64)
    expr = _raw(trained)
    alive = codes.any(axis=0)
    design = np.hstack([np.ones((codes.shape[0], 1)), codes[:, alive]])
    coefs = np.linalg.lstsq(design, expr, rcond=None)[0][1:].T
    loadings = trained.varm["sae_loadings"]
    np.testing.assert_allclose(loadings[:, alive], coefs, rtol=1e-4, atol=1e-4 * np.abs(coefs).max())
    assert (loadings[:, ~alive] == 0).all()
    assert trained.uns["sae"]["params"]["loadings"] == "feature_genes:regression"


def test_regression_stays_finite_with_more_features_than_cells():
    rng = np.random.default_rng(1)
    codes = rng.exponential(size=(30, 60)) * (rng.random((30, 60)) < 0.3)
    codes[:, 7] = codes[:, 8]  # two features that always co-fire
    expr = codes @ rng.normal(size=(60, 5)) + 1.0
    coefs = regression(sparse.csr_matrix(expr), codes)
    assert np.isfinite(coefs).all()
    fitted = (codes - codes.mean(axis=0)) @ coefs.T + expr.mean(axis=0)
    np.testing.assert_allclose(fitted, expr, atol=1e-3 * np.abs(expr).max())
    np.testing.assert_allclose(coefs[:, 7], coefs[:, 8], rtol=1e-4)  # the ridge splits a tie evenly


@UNTESTED_OK
def test_de_matches_scipy_welch_and_bh(trained):
    csk.tl.feature_genes(trained, method="de", progress=False)
    codes = trained.obsm["X_sae"].toarray()
    expr = _raw(trained)
    loadings, pvals_adj = trained.varm["sae_loadings"], trained.varm["sae_loadings_pvals_adj"]
    n_top = 7  # 1% of 700 cells
    tested = [j for j in range(32) if (codes[:, j] > 0).sum() >= 3 and (codes[:, j] == 0).sum() >= 3]
    assert len(tested) >= 20
    for j in tested:
        t, p_adj = _reference_de(expr, codes[:, j], n_top)
        np.testing.assert_allclose(loadings[:, j], t, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(pvals_adj[:, j], p_adj, rtol=1e-6, atol=1e-12)
    assert (pvals_adj[:, tested] < 0.05).any()
    assert trained.uns["sae"]["params"]["feature_genes"]["sae_loadings"]["top_fraction"] == 0.01


def test_de_core_handles_rare_dense_and_dead_features():
    rng = np.random.default_rng(2)
    expr = sparse.random(400, 25, density=0.3, random_state=3, format="csr") * 4
    codes = np.zeros((400, 5))
    codes[:40, 0] = rng.uniform(1, 2, 40)  # an ordinary feature
    codes[:2, 1] = 1.0  # active in 2 cells: too few
    codes[:, 2] = rng.uniform(1, 2, 400)  # active everywhere: no inactive cells
    codes[:399, 3] = rng.uniform(1, 2, 399)  # one inactive cell only
    # feature 4 is dead
    result = welch_de(expr, codes, top_fraction=0.05, min_cells=3)
    assert result["tested"].tolist() == [True, False, False, False, False]
    assert (result["t"][:, 1:] == 0).all() and np.isnan(result["pvals_adj"][:, 1:]).all()
    t, p_adj = _reference_de(expr.toarray(), codes[:, 0], 20)
    np.testing.assert_allclose(result["t"][:, 0], t, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(result["pvals_adj"][:, 0], p_adj, rtol=1e-6, atol=1e-12)
    dense = welch_de(expr.toarray().astype(np.float32), codes, top_fraction=0.05, min_cells=3)
    np.testing.assert_allclose(dense["t"], result["t"], rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on the constant group
def test_de_gives_zero_for_genes_constant_in_both_groups():
    codes = np.zeros((50, 1))
    codes[:5, 0] = [5.0, 4.0, 3.0, 2.0, 1.0]
    expr = np.full((50, 3), -0.3)  # scaled data: an undetected gene is a constant negative value
    expr[:5, 1] = 1.1  # constant within each group, different between them: scipy's t is infinite
    expr[:5, 2] = [1.0, 2.0, 1.5, 1.2, 0.7]  # varies in the active cells only: an ordinary test
    result = welch_de(expr, codes, top_fraction=0.1)
    assert result["t"][:2, 0].tolist() == [0.0, 0.0] and result["pvals"][:2, 0].tolist() == [1.0, 1.0]
    reference = stats.ttest_ind(expr[:5, 2], expr[5:, 2], equal_var=False)
    assert result["t"][2, 0] == pytest.approx(reference.statistic)
    assert result["pvals"][2, 0] == pytest.approx(reference.pvalue)
    assert result["pvals_adj"][2, 0] == pytest.approx(3 * reference.pvalue)  # BH with two p-values of 1


def test_de_warns_about_untested_features(trained):
    codes = trained.obsm["X_sae"].tolil()
    codes[:, 0] = 0
    codes[0, 0] = 1.0
    trained.obsm["X_sae"] = codes.tocsr()
    n_rare = int(((codes.tocsc() > 0).sum(axis=0) < 3).sum())
    with pytest.warns(UserWarning, match=f"{n_rare} of 32 features.*not tested"):
        csk.tl.feature_genes(trained, method="de", progress=False)
    assert (trained.varm["sae_loadings"][:, 0] == 0).all()


def test_b_cell_feature_loads_b_cell_markers():
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    codes = adata.obsm["X_sae"].toarray()
    is_b = (adata.obs["bulk_labels"] == "CD19+ B").to_numpy()
    b_feature = int(np.argmax([roc_auc_score(is_b, c) if c.any() else 0.5 for c in codes.T]))
    csk.tl.feature_genes(adata, key_added="correlation")
    top = csk.tl.top_genes(adata, b_feature, loadings="correlation")["gene"].tolist()
    assert len({"MS4A1", "CD79A", "CD79B"} & set(top)) >= 2, top


def test_raw_with_more_genes_is_restricted_to_var_names(trained):
    subset = trained[:, ::5].copy()  # keeps all 765 genes in .raw
    csk.tl.feature_genes(subset)
    csk.tl.feature_genes(trained)
    assert subset.varm["sae_loadings"].shape == (153, 32)
    np.testing.assert_allclose(subset.varm["sae_loadings"], trained.varm["sae_loadings"][::5])


def test_scaled_x_warns_and_layer_is_used(trained):
    trained.layers["lognorm"] = trained.raw.X.copy()
    trained.raw = None
    with pytest.warns(UserWarning, match="looks scaled.*layer="):
        csk.tl.feature_genes(trained)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        csk.tl.feature_genes(trained, layer="lognorm", key_added="from_layer")
    reference = _reference_correlation(trained.layers["lognorm"].toarray(), trained.obsm["X_sae"].toarray())
    np.testing.assert_allclose(trained.varm["from_layer"], reference, atol=1e-6)
    assert trained.uns["sae"]["params"]["feature_genes"]["from_layer"]["expression"] == "adata.layers['lognorm']"


@UNTESTED_OK
def test_key_added_copy_stale_pvals_and_h5ad_round_trip(trained, tmp_path):
    out = csk.tl.feature_genes(trained, method="de", key_added="genes", progress=False, copy=True)
    assert "genes" not in trained.varm and "feature_genes" not in trained.uns["sae"]["params"]
    assert "genes_pvals_adj" in out.varm and "loadings" not in out.uns["sae"]["params"]
    csk.tl.feature_genes(out, key_added="genes")  # p-values of the earlier DE would no longer match
    assert "genes_pvals_adj" not in out.varm
    out.write_h5ad(tmp_path / "genes.h5ad")
    back = ad.read_h5ad(tmp_path / "genes.h5ad")
    np.testing.assert_array_equal(back.varm["genes"], out.varm["genes"])
    assert back.uns["sae"]["params"]["feature_genes"]["genes"]["method"] == "correlation"


@UNTESTED_OK
def test_top_genes_order_and_signs(trained):
    csk.tl.feature_genes(trained, method="de", progress=False)
    j = int(np.argmax(trained.obsm["X_sae"].getnnz(axis=0)))
    column = trained.varm["sae_loadings"][:, j].astype(np.float64)
    genes = trained.var_names.to_numpy()
    positive = csk.tl.top_genes(trained, str(j), n=10)
    assert positive.columns.tolist() == ["gene", "loading", "sign", "pval_adj"]
    assert positive["gene"].tolist() == genes[np.argsort(-column)[:10]].tolist()
    assert (positive["sign"] == "positive").all()
    np.testing.assert_array_equal(
        positive["pval_adj"], trained.varm["sae_loadings_pvals_adj"][np.argsort(-column)[:10], j]
    )
    negative = csk.tl.top_genes(trained, j, n=10, sign="negative")
    assert negative["gene"].tolist() == genes[np.argsort(column)[:10]].tolist()
    assert (negative["loading"] < 0).all() and (negative["sign"] == "negative").all()
    both = csk.tl.top_genes(trained, np.int64(j), n=30, sign="both")
    assert both["gene"].tolist() == genes[np.argsort(-np.abs(column))[:30]].tolist()
    assert set(both["sign"]) == {"positive", "negative"}
    assert csk.tl.top_genes(trained, j, n=10_000).shape[0] == (column > 0).sum()


@pytest.mark.parametrize(
    ("prepare", "kwargs", "error", "message"),
    [
        (None, {"key": "missing"}, KeyError, "X_missing"),
        (None, {"layer": "nope"}, KeyError, "not in adata.layers"),
        (None, {"method": "pca"}, ValueError, "not known"),
        (None, {"use_raw": True, "layer": "lognorm"}, ValueError, "both name"),
        ("no_raw", {"use_raw": True}, ValueError, "adata.raw is empty"),
        ("nan", {"layer": "lognorm"}, ValueError, "NaN"),
        ("short_raw", {}, ValueError, "raw lacks 665 of the 765 genes"),
        ("no_uns", {}, KeyError, "run cellsae_kit.tl.sae"),
        (None, {"method": "de", "min_cells": 1}, ValueError, "min_cells"),
        (None, {"method": "de", "top_fraction": 0.0}, ValueError, "top_fraction"),
    ],
)
def test_feature_genes_bad_input_leaves_adata_unchanged(trained, prepare, kwargs, error, message):
    trained.layers["lognorm"] = trained.raw.X.toarray()
    if prepare == "no_raw":
        trained.raw = None
    elif prepare == "nan":
        trained.layers["lognorm"][3, 7] = np.nan
    elif prepare == "short_raw":
        trained.raw = trained.raw.to_adata()[:, :100].copy()
    elif prepare == "no_uns":
        del trained.uns["sae"]
    before = snapshot(trained)
    with pytest.raises(error, match=message):
        csk.tl.feature_genes(trained, progress=False, **kwargs)
    assert_unchanged(trained, before)


@pytest.mark.parametrize(
    ("feature", "kwargs", "error", "message"),
    [
        (32, {}, ValueError, "out of range.*0 to 31"),
        (-1, {}, ValueError, "out of range.*0 to 31"),
        ("B cells", {}, ValueError, "not a feature number.*0 to 31"),
        (1.5, {}, TypeError, "must be a feature number"),
        (True, {}, TypeError, "must be a feature number"),
        (0, {"sign": "up"}, ValueError, "sign='up'"),
        (0, {"n": 0}, ValueError, "at least 1"),
        (0, {"key": "other"}, KeyError, "tl.feature_genes.*key='other'"),
    ],
)
def test_top_genes_bad_input(trained, feature, kwargs, error, message):
    csk.tl.feature_genes(trained)
    before = snapshot(trained)
    with pytest.raises(error, match=message):
        csk.tl.top_genes(trained, feature, **kwargs)
    assert_unchanged(trained, before)


def test_top_genes_without_loadings_names_the_tools(trained):
    with pytest.raises(KeyError, match=r"tl.sae fills it .*linear map to genes.*tl.feature_genes"):
        csk.tl.top_genes(trained, 0)
