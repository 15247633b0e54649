import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.decomposition import PCA

import cellsae_kit as csk
from cellsae_kit.tl._embed import log_normalize
from tests.conftest import assert_unchanged, snapshot


@pytest.fixture
def sim():
    return csk.datasets.simulate(400, 8, 4, n_genes=80)


@pytest.mark.filterwarnings("ignore:Some cells have zero counts")
def test_log_normalize_matches_scanpy(sim):
    counts = sim.X.copy()
    counts[3] = 0  # a cell without counts stays zero
    reference = sc.AnnData(counts.copy())
    sc.pp.normalize_total(reference)  # scales to the median total of the cells with counts
    sc.pp.log1p(reference)
    np.testing.assert_allclose(log_normalize(counts), reference.X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_normalize(sparse.csr_matrix(counts)), reference.X, rtol=1e-5, atol=1e-6)


def test_pca_matches_sklearn_and_leaves_counts(sim):
    counts = sim.X.copy()
    csk.tl.embed(sim, "pca", 10)
    reference = PCA(10, random_state=0).fit(log_normalize(counts))
    scores = reference.transform(log_normalize(counts))
    # principal axes are defined up to sign
    signs = np.sign((sim.obsm["X_pca"] * scores).sum(0))
    np.testing.assert_allclose(sim.obsm["X_pca"] * signs, scores, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(sim.varm["pca"] * signs, reference.components_.T, rtol=1e-3, atol=1e-4)
    assert sim.uns["pca"]["metrics"]["fvu"] == pytest.approx(1 - reference.explained_variance_ratio_.sum(), 1e-4)
    assert sim.uns["pca"]["params"] == {"method": "pca", "n_latent": 10, "normalize": True, "random_state": 0}
    np.testing.assert_array_equal(sim.X, counts)
    # tl.sae finds the PCA loadings and maps features to genes
    csk.tl.sae(sim, "X_pca", n_features=16, k=2, n_epochs=2, progress=False)
    assert sim.uns["sae"]["params"]["loadings"] == "pca" and sim.varm["sae_loadings"].shape == (80, 16)


def test_autoencoder_from_a_layer_with_copy(sim):
    sim.layers["raw"] = sim.X.copy()
    sim.X = np.log1p(sim.X)  # X no longer holds counts; the layer does
    before = snapshot(sim)
    out = csk.tl.embed(
        sim, "autoencoder", 6, layer="raw", key_added="ae", copy=True, n_epochs=3, hidden=(16,), progress=False
    )
    assert_unchanged(sim, before)
    assert out.obsm["X_ae"].shape == (400, 6) and out.obsm["X_ae"].dtype == np.float32
    entry = out.uns["ae"]
    assert entry["params"]["layer"] == "raw" and entry["params"]["hidden"] == [16]
    assert isinstance(entry["history"], pd.DataFrame) and len(entry["history"]) == 3
    assert 0 < entry["metrics"]["fvu_validation"] < 1.5 and "ae" not in out.varm
    # the same seed gives the same representation
    again = csk.tl.embed(
        sim, "autoencoder", 6, layer="raw", key_added="ae", copy=True, n_epochs=3, hidden=(16,), progress=False
    )
    np.testing.assert_array_equal(again.obsm["X_ae"], out.obsm["X_ae"])


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("umap",), {}, ValueError, "not known"),
        (("pca", 0), {}, ValueError, "n_latent"),
        (("pca", 500), {}, ValueError, "at most 80"),
        (("pca", 5), {"n_epochs": 3}, TypeError, "options of the autoencoder"),
        (("pca", 5), {"layer": "nope"}, KeyError, "nope"),
        (("pca", 5), {"layer": "scaled"}, ValueError, "negative values"),
        (("autoencoder", 5), {"layer": "nan"}, ValueError, "NaN"),
    ],
)
def test_bad_input(sim, args, kwargs, error, message):
    sim.layers["scaled"] = sim.X - sim.X.mean(0)
    sim.layers["nan"] = np.where(np.eye(400, 80) > 0, np.nan, sim.X)
    before = snapshot(sim)
    with pytest.raises(error, match=message):
        csk.tl.embed(sim, *args, progress=False, **kwargs)
    assert_unchanged(sim, before)


def test_raw_counts_without_normalisation(sim):
    csk.tl.embed(sim, "pca", 10, normalize=False, key_added="raw")
    reference = PCA(10, random_state=0).fit_transform(sim.X)
    signs = np.sign((sim.obsm["X_raw"] * reference).sum(0))
    np.testing.assert_allclose(sim.obsm["X_raw"] * signs, reference, rtol=1e-3, atol=1e-2)
    assert sim.uns["raw"]["params"]["normalize"] is False
