import numpy as np
import pytest

import cellsae_kit as csk
from cellsae_kit.models import save
from tests.conftest import assert_unchanged, snapshot

FAST = {"n_features": 32, "k": 4, "n_epochs": 10, "progress": False}


@pytest.fixture
def trained(pbmc):
    csk.tl.sae(pbmc, "X_pca", **FAST)
    return pbmc


def test_encode_new_cells_with_a_reference(trained):
    query = trained[100:300].copy()
    del query.obsm["X_sae"], query.uns["sae"]
    csk.tl.encode(query, trained, key_added="ref_sae")
    np.testing.assert_array_equal(query.obsm["X_ref_sae"].toarray(), trained.obsm["X_sae"][100:300].toarray())
    # the query now carries the model and can encode again
    again = csk.tl.encode(query, key="ref_sae", copy=True)
    np.testing.assert_array_equal(again.obsm["X_ref_sae"].toarray(), query.obsm["X_ref_sae"].toarray())


def test_encode_from_a_saved_file(trained, tmp_path):
    path = save(csk.tl.get_model(trained), tmp_path / "pbmc_sae")
    query = trained[:50].copy()
    del query.obsm["X_sae"]
    csk.tl.encode(query, path, key_added="fromfile")
    np.testing.assert_array_equal(query.obsm["X_fromfile"].toarray(), trained.obsm["X_sae"][:50].toarray())
    assert query.uns["fromfile"]["params"]["use_rep"] == "X_pca"


def test_expression_genes_are_matched_by_name(dictionary_adata):
    csk.tl.sae(dictionary_adata, **FAST)
    shuffled = dictionary_adata[:, dictionary_adata.var_names[::-1]].copy()
    csk.tl.encode(shuffled, dictionary_adata, key_added="enc")
    np.testing.assert_allclose(
        shuffled.obsm["X_enc"].toarray(), dictionary_adata.obsm["X_sae"].toarray(), rtol=1e-5, atol=1e-6
    )


def test_missing_genes_are_named(dictionary_adata):
    csk.tl.sae(dictionary_adata, **FAST)
    query = dictionary_adata[:, 3:].copy()
    before = snapshot(query)
    with pytest.raises(ValueError, match=r"3 of the SAE's 20 genes are missing .*g0, g1, g2"):
        csk.tl.encode(query, dictionary_adata)
    assert_unchanged(query, before)


def test_wrong_dimensions(trained):
    query = trained.copy()
    query.obsm["X_pca"] = query.obsm["X_pca"][:, :20]
    before = snapshot(query)
    with pytest.raises(ValueError, match="has 20 dimensions but the SAE was trained on 50"):
        csk.tl.encode(query)
    assert_unchanged(query, before)


def test_missing_representation_and_model(pbmc, trained):
    query = trained.copy()
    del query.obsm["X_pca"]
    with pytest.raises(KeyError, match="Available representations"):
        csk.tl.encode(query)
    with pytest.raises(KeyError, match="train an SAE first"):
        csk.tl.encode(pbmc, key="other")
    with pytest.raises(TypeError, match="model is a dict"):
        csk.tl.encode(pbmc, {})
    with pytest.raises(FileNotFoundError):
        csk.tl.encode(pbmc, "missing.safetensors")
