import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

import cellsae_kit as csk
from cellsae_kit.tl._factorize import factorize_array
from tests.conftest import assert_unchanged, snapshot


@pytest.fixture
def mixed():
    """Independent non-Gaussian sources mixed linearly into 6 dimensions: ICA's textbook case."""
    rng = np.random.default_rng(0)
    sources = np.column_stack([rng.laplace(size=1500), rng.uniform(-1, 1, 1500), rng.exponential(size=1500)])
    sources = (sources - sources.mean(0)) / sources.std(0)  # equal variances: PCA's axes are not the sources
    mixing = rng.normal(size=(3, 6))
    adata = ad.AnnData(np.zeros((1500, 2), dtype=np.float32))
    adata.obsm["X_rep"] = (sources @ mixing + 0.01 * rng.normal(size=(1500, 6))).astype(np.float32)
    adata.obsm["true_programs"] = sources
    return adata


def test_pca_matches_sklearn(mixed):
    csk.tl.factorize(mixed, "X_rep", "pca", n_components=3)
    X = mixed.obsm["X_rep"]
    reference = PCA(3).fit(X)
    codes = mixed.obsm["X_pca_rep"]
    signs = np.sign((codes * reference.transform(X)).sum(0))
    np.testing.assert_allclose(codes * signs, reference.transform(X), rtol=1e-3, atol=1e-4)
    entry = mixed.uns["pca_rep"]
    assert entry["params"]["use_rep"] == "X_rep" and entry["components"].shape == (3, 6)
    reconstruction = codes @ entry["components"] + entry["offset"]
    expected = ((X - reconstruction) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
    assert entry["metrics"]["fvu"] == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_ica_unmixes_independent_sources_and_pca_does_not(mixed):
    csk.tl.factorize(mixed, "X_rep", "ica", n_components=3)
    csk.tl.factorize(mixed, "X_rep", "pca", n_components=3)
    ica = csk.tl.recovery(mixed, "ica_rep")["summary"]
    pca = csk.tl.recovery(mixed, "pca_rep")["summary"]
    assert ica["matched_score"] > 0.98
    assert pca["matched_score"] < ica["matched_score"] - 0.1


def test_nmf_shifts_each_dimension_by_its_minimum(mixed):
    csk.tl.factorize(mixed, "X_rep", "nmf", n_components=6, max_iter=2000)
    X = mixed.obsm["X_rep"]
    entry = mixed.uns["nmf_rep"]
    np.testing.assert_allclose(entry["offset"], X.min(0))
    assert (mixed.obsm["X_nmf_rep"] >= 0).all() and (entry["components"] >= 0).all()
    assert entry["metrics"]["fvu"] < 0.05  # as many components as dimensions


@pytest.mark.filterwarnings("ignore:Dictionary learning did not converge")
def test_dictionary_codes_are_sparse_and_seeded(mixed):
    out = factorize_array(mixed.obsm["X_rep"], "dictionary", 12, random_state=1, alpha=0.5, max_iter=5)
    again = factorize_array(mixed.obsm["X_rep"], "dictionary", 12, random_state=1, alpha=0.5, max_iter=5)
    np.testing.assert_array_equal(out["codes"], again["codes"])
    assert (out["codes"] == 0).mean() > 0.3
    assert out["fvu"] < 0.5 and out["components"].shape == (12, 6)
    assert out["params"]["alpha"] == 0.5


def test_convergence_warning_is_ours(mixed):
    with pytest.warns(RuntimeWarning, match="ICA did not converge.*max_iter"):
        factorize_array(mixed.obsm["X_rep"], "ica", 3, max_iter=1)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("X_rep", "svd"), {}, ValueError, "not known"),
        (("X_rep", "pca"), {"n_components": 7}, ValueError, "at most min"),
        (("X_rep", "ica"), {"n_components": 0}, ValueError, "n_components"),
        (("X_rep", "pca"), {"key_added": "rep"}, ValueError, "overwrite the input"),
        (("X_nope", "pca"), {}, KeyError, "X_nope"),
        (("X_rep", "pca"), {"whatever": 1}, TypeError, "whatever"),
    ],
)
def test_bad_input(mixed, args, kwargs, error, message):
    before = snapshot(mixed)
    with pytest.raises(error, match=message):
        csk.tl.factorize(mixed, *args, **kwargs)
    assert_unchanged(mixed, before)


def test_copy(mixed):
    before = snapshot(mixed)
    out = csk.tl.factorize(mixed, "X_rep", "ica", n_components=3, copy=True, key_added="ica")
    assert_unchanged(mixed, before)
    assert out.obsm["X_ica"].shape == (1500, 3) and out.uns["ica"]["params"]["method"] == "ica"


def test_factor_models_are_named_like_sae_features():
    """Signed components are read as two features (positive and negative side); NMF's as they are."""
    adata = csk.datasets.simulate(400, 8, 4, n_genes=200, random_state=0)
    csk.tl.embed(adata, "pca", 10)
    csk.tl.factorize(adata, "X_pca", "pca", n_components=4)
    codes = csk.get.codes(adata, "pca_pca")
    signed = adata.obsm["X_pca_pca"]
    assert codes.shape == (400, 8)
    np.testing.assert_allclose(codes.toarray(), np.hstack([np.maximum(signed, 0), np.maximum(-signed, 0)]))
    net = pd.DataFrame({"source": np.repeat(["a", "b"], 20), "target": adata.var_names[:40]})
    csk.tl.annotate_features(adata, net, key="pca_pca", tmin=5)
    assert len(adata.uns["pca_pca"]["features"]) == 8
    csk.tl.factorize(adata, "X_pca", "cnmf", n_components=3, n_runs=3)
    assert csk.get.codes(adata, "cnmf_pca").shape == (400, 3)
    assert adata.uns["cnmf_pca"]["params"]["n_runs"] == 3
