import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit.models import ChunkedRows, fit

FAST = {"n_features": 32, "k": 4, "n_epochs": 3, "batch_size": 128, "progress": False}
pytestmark = pytest.mark.filterwarnings("ignore:Writing zarr v2:UserWarning")


@pytest.fixture
def pbmc_file(pbmc, tmp_path):
    path = tmp_path / "pbmc.h5ad"
    pbmc.write_h5ad(path)
    return path


def test_backed_anndata_trains_on_the_stream(pbmc, pbmc_file):
    backed = sc.read_h5ad(pbmc_file, backed="r")
    csk.tl.sae(backed, "X_pca", **FAST)
    # the same stream from memory (same chunks, same order) gives the same model and codes
    reference = fit(ChunkedRows(pbmc.obsm["X_pca"]), **FAST)
    assert (backed.obsm["X_sae"] != reference.codes).nnz == 0
    np.testing.assert_array_equal(backed.uns["sae"]["weights"]["W_dec"], reference.model.weights()["W_dec"])
    # the loadings come from the file's varm["PCs"], as for an AnnData in memory
    assert backed.varm["sae_loadings"].shape == (765, 32)
    assert backed.uns["sae"]["params"]["loadings"] == "PCs"
    np.testing.assert_array_equal(backed.uns["sae"]["validation_indices"], reference.validation_indices)
    # the results survive writing the backed object to a new file
    backed.write_h5ad(pbmc_file.with_name("out.h5ad"))
    back = ad.read_h5ad(pbmc_file.with_name("out.h5ad"))
    assert (back.obsm["X_sae"] != reference.codes).nnz == 0


def test_backed_expression_is_read_from_disk(pbmc, pbmc_file):
    backed = sc.read_h5ad(pbmc_file, backed="r")
    csk.tl.sae(backed, **FAST)
    reference = fit(ChunkedRows(pbmc.X), **FAST)
    assert (backed.obsm["X_sae"] != reference.codes).nnz == 0
    assert list(backed.uns["sae"]["var_names"]) == list(pbmc.var_names)
    # expression input: the decoder (in input units) is the gene loading matrix
    decoder = reference.model.W_dec.detach().numpy().T / float(reference.model.input_scale)
    np.testing.assert_allclose(backed.varm["sae_loadings"], decoder, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("store", ["h5ad", "zarr"])
def test_path_returns_a_new_anndata_with_the_results(pbmc, pbmc_file, store):
    path = pbmc_file
    if store == "zarr":
        path = pbmc_file.with_suffix(".zarr")
        pbmc.write_zarr(path)
    result = csk.tl.sae(str(path), "X_pca", **FAST)
    reference = fit(ChunkedRows(pbmc.obsm["X_pca"]), **FAST)
    assert (result.obsm["X_sae"] != reference.codes).nnz == 0
    assert result.obs_names.equals(pbmc.obs_names) and result.var_names.equals(pbmc.var_names)
    assert result.X is None and list(result.obsm) == ["X_sae"]  # the data stay on disk
    assert result.varm["sae_loadings"].shape == (765, 32)
    # what tl.sae stores is enough to encode the cells in memory again
    query = pbmc.copy()
    csk.tl.encode(query, result)
    np.testing.assert_allclose(query.obsm["X_sae"].toarray(), reference.codes.toarray(), rtol=1e-5, atol=1e-6)


def test_sparse_expression_from_a_path(dictionary_adata, tmp_path):
    dictionary_adata.X = sparse.csr_matrix(np.where(dictionary_adata.X > 0.3, dictionary_adata.X, 0))
    dictionary_adata.write_h5ad(tmp_path / "d.h5ad")
    result = csk.tl.sae(tmp_path / "d.h5ad", **FAST)
    reference = fit(ChunkedRows(dictionary_adata.X), **FAST)
    assert (result.obsm["X_sae"] != reference.codes).nnz == 0
    assert result.uns["sae"]["params"]["use_rep"] == "X"
    # a layer is read from the file as well
    layered = csk.tl.sae(tmp_path / "d.h5ad", layer="raw", **FAST)
    assert (layered.obsm["X_sae"] != fit(ChunkedRows(dictionary_adata.layers["raw"]), **FAST).codes).nnz == 0


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file or folder at .*nope.h5ad"):
        csk.tl.sae(tmp_path / "nope.h5ad", "X_pca", **FAST)


def test_not_an_h5ad_file(tmp_path):
    (tmp_path / "cells.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not an \.h5ad"):
        csk.tl.sae(tmp_path / "cells.csv", **FAST)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="no zarr store"):
        csk.tl.sae(tmp_path / "folder", **FAST)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            {"use_rep": "X_scvi"},
            KeyError,
            r"use_rep='X_scvi' is not in pbmc.h5ad \(its obsm\). Available: 'X', 'X_pca'",
        ),
        ({"layer": "counts"}, KeyError, r"layer='counts' is not in pbmc.h5ad \(its layers\)"),
        ({"use_rep": "X_pca", "layer": "counts"}, ValueError, "both name an input"),
    ],
)
def test_missing_input_in_the_file(pbmc_file, call, error, message):
    with pytest.raises(error, match=message):
        csk.tl.sae(pbmc_file, **(FAST | call))


def test_backed_bad_input_leaves_the_object_unchanged(pbmc_file):
    backed = sc.read_h5ad(pbmc_file, backed="r")
    before = {slot: sorted(getattr(backed, slot)) for slot in ("obsm", "varm", "uns")}
    with pytest.raises(ValueError, match="copy=True cannot copy a backed AnnData"):
        csk.tl.sae(backed, "X_pca", copy=True, **FAST)
    with pytest.raises(KeyError, match="use_rep='X_scvi' is not in adata.obsm"):
        csk.tl.sae(backed, "X_scvi", **FAST)
    with pytest.raises(ValueError, match="k=40 with n_features=32"):
        csk.tl.sae(backed, **(FAST | {"k": 40}))
    assert {slot: sorted(getattr(backed, slot)) for slot in before} == before


def test_a_table_in_obsm_is_refused(pbmc, tmp_path):
    pbmc.obsm["table"] = pbmc.obs[["n_genes"]].astype(float)
    pbmc.write_h5ad(tmp_path / "t.h5ad")
    with pytest.raises(TypeError, match="stored as dataframe, not a matrix"):
        csk.tl.sae(tmp_path / "t.h5ad", "table", **FAST)
