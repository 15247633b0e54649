import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.decomposition import PCA

import cellsae_kit as csk
from cellsae_kit.models import fvu
from tests.conftest import assert_unchanged, snapshot

FAST = {"n_features": 32, "k": 4, "n_epochs": 10, "progress": False}


def test_pbmc_defaults_beat_the_top_l0_pcs_with_few_dead_features(pbmc):
    """With the defaults only: the SAE versus as many leading PCs as it has active features per cell."""
    csk.tl.sae(pbmc, "X_pca", progress=False)
    entry = pbmc.uns["sae"]
    l0 = round(entry["metrics"]["l0"])
    val = entry["validation_indices"]
    train = np.setdiff1d(np.arange(pbmc.n_obs), val)
    X = pbmc.obsm["X_pca"]
    pca = PCA(l0).fit(X[train])
    pca_fvu = fvu(X[val], pca.inverse_transform(pca.transform(X[val])))
    model = csk.tl.get_model(pbmc)
    import torch

    with torch.no_grad():
        sae_fvu = fvu(X[val], model.reconstruct(torch.tensor(X[val])).numpy())
    assert sae_fvu == pytest.approx(entry["metrics"]["fvu_validation"], rel=1e-4)
    print(
        f"validation FVU: SAE {sae_fvu:.3f}, top-{l0} PCs {pca_fvu:.3f}; dead {entry['metrics']['dead_fraction']:.3%}"
    )
    assert sae_fvu < pca_fvu
    assert entry["metrics"]["dead_fraction"] < 0.05
    assert entry["params"]["rules"]["k"].startswith("min(32")


def test_outputs_follow_the_layout(pbmc):
    csk.tl.sae(pbmc, "X_pca", key_added="mysae", **FAST)
    codes = pbmc.obsm["X_mysae"]
    assert sparse.issparse(codes) and codes.format == "csr" and codes.dtype == np.float32
    assert codes.shape == (700, 32)
    entry = pbmc.uns["mysae"]
    assert {"params", "metrics", "history", "weights", "validation_indices"} <= set(entry)
    assert entry["params"]["use_rep"] == "X_pca" and entry["params"]["loadings"] == "PCs"
    assert entry["params"]["n_inputs"] == 50
    assert isinstance(entry["history"], pd.DataFrame) and len(entry["history"]) == entry["metrics"]["n_epochs"]
    # PCA input: loadings are the PCA loadings composed with the decoder, in the input's units
    model = csk.tl.get_model(pbmc, "mysae")
    decoder = model.W_dec.detach().numpy().T / float(model.input_scale)
    pcs = np.nan_to_num(pbmc.varm["PCs"])
    np.testing.assert_allclose(pbmc.varm["mysae_loadings"], pcs @ decoder, rtol=1e-4, atol=1e-6)


def test_genes_outside_the_pca_get_zero_rows(pbmc):
    # scanpy leaves NaN rows in varm["PCs"] for the genes that were not highly variable (456 of 765 here)
    outside = np.isnan(pbmc.varm["PCs"]).any(axis=1)
    assert outside.sum() == 456
    csk.tl.sae(pbmc, "X_pca", **FAST)
    loadings = pbmc.varm["sae_loadings"]
    assert np.isfinite(loadings).all()
    assert np.all(loadings[outside] == 0)
    assert np.all(np.abs(loadings[~outside]).sum(axis=1) > 0)


def test_expression_input_stores_decoder_and_genes(dictionary_adata):
    adata = dictionary_adata
    csk.tl.sae(adata, **FAST)
    model = csk.tl.get_model(adata)
    np.testing.assert_allclose(
        adata.varm["sae_loadings"], model.W_dec.detach().numpy().T / float(model.input_scale), rtol=1e-6
    )
    assert list(adata.uns["sae"]["var_names"]) == list(adata.var_names)
    csk.tl.sae(adata, layer="raw", key_added="from_layer", **FAST)
    assert adata.uns["from_layer"]["params"]["layer"] == "raw"
    np.testing.assert_array_equal(adata.obsm["X_sae"].toarray(), adata.obsm["X_from_layer"].toarray())


def test_sparse_expression_input(dictionary_adata):
    adata = dictionary_adata
    adata.X = sparse.csr_matrix(np.maximum(adata.X, 0))
    csk.tl.sae(adata, "X", **FAST)
    assert adata.obsm["X_sae"].shape == (600, 32)


def test_representation_without_loadings_writes_no_varm(dictionary_adata):
    csk.tl.sae(dictionary_adata, "X_rep", **FAST)
    assert "sae_loadings" not in dictionary_adata.varm
    assert "loadings" not in dictionary_adata.uns["sae"]["params"]


def test_copy_returns_new_object_and_leaves_input(pbmc):
    before = snapshot(pbmc)
    out = csk.tl.sae(pbmc, "X_pca", copy=True, **FAST)
    assert_unchanged(pbmc, before)
    assert "X_sae" in out.obsm


def test_reproducible_on_cpu(pbmc):
    a = csk.tl.sae(pbmc, "X_pca", random_state=1, copy=True, **FAST).obsm["X_sae"]
    b = csk.tl.sae(pbmc, "X_pca", random_state=1, copy=True, **FAST).obsm["X_sae"]
    c = csk.tl.sae(pbmc, "X_pca", random_state=2, copy=True, **FAST).obsm["X_sae"]
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0


def test_h5ad_round_trip_then_encode_gives_same_activations(pbmc, tmp_path):
    csk.tl.sae(pbmc, "X_pca", activation="batchtopk", **FAST)
    pbmc.write_h5ad(tmp_path / "pbmc.h5ad")
    back = ad.read_h5ad(tmp_path / "pbmc.h5ad")
    stored = back.obsm["X_sae"].copy()
    csk.tl.encode(back)
    assert (back.obsm["X_sae"] != stored).nnz == 0
    assert (back.obsm["X_sae"] != pbmc.obsm["X_sae"]).nnz == 0


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"use_rep": "X_scvi"}, KeyError, "Available representations: 'X', 'X_pca', 'X_umap'"),
        ({"layer": "counts"}, KeyError, "not in adata.layers"),
        ({"use_rep": "X_pca", "layer": "counts"}, ValueError, "both name an input"),
        ({"use_rep": "X_pca", "k": 32}, ValueError, "smaller than n_features"),
        ({"use_rep": "X_pca", "n_features": 0}, ValueError, "at least one feature"),
        ({"use_rep": "X_pca", "loadings": "nope"}, KeyError, "not in adata.varm"),
        ({"use_rep": "X_umap", "loadings": "PCs"}, ValueError, "has 50 columns"),
        ({"use_rep": "X_pca", "activation": "gelu"}, ValueError, "not known"),
    ],
)
def test_bad_arguments_leave_adata_unchanged(pbmc, call, error, message):
    before = snapshot(pbmc)
    with pytest.raises(error, match=message):
        csk.tl.sae(pbmc, **(FAST | call))
    assert_unchanged(pbmc, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(pbmc, bad):
    pbmc.obsm["X_pca"][3, 2] = bad
    before = snapshot(pbmc)
    with pytest.raises(ValueError, match=r"adata.obsm\['X_pca'\] contains NaN or infinite values in 1 of 700"):
        csk.tl.sae(pbmc, "X_pca", **FAST)
    assert_unchanged(pbmc, before)


def test_non_numeric_input(pbmc):
    pbmc.obsm["labels"] = np.array([["a", "b"]] * pbmc.n_obs)
    before = snapshot(pbmc)
    with pytest.raises(TypeError, match="not real-valued numeric"):
        csk.tl.sae(pbmc, "labels", **FAST)
    assert_unchanged(pbmc, before)


@pytest.mark.parametrize(("n_cells", "message"), [(0, "zero cells"), (1, "single cell")])
def test_too_few_cells(pbmc, n_cells, message):
    small = pbmc[:n_cells].copy()
    before = snapshot(small)
    with pytest.raises(ValueError, match=message):
        csk.tl.sae(small, "X_pca", **FAST)
    assert_unchanged(small, before)


def test_not_anndata():
    with pytest.raises(TypeError, match="AnnData"):
        csk.tl.sae(np.zeros((3, 3)))
