import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import cellsae_kit as csk
from tests.conftest import assert_unchanged, snapshot

FAST = {"n_features": 16, "k": 2, "n_epochs": 3, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def trained():
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", **FAST)
    csk.tl.sae(adata, "X_pca", key_added="other", **(FAST | {"random_state": 1}))
    return adata


def test_reader_gives_what_tl_sae_stored(trained):
    stored = csk.get.sae(trained)
    entry = trained.uns["sae"]
    assert csk.get.keys(trained) == ["sae", "other"]
    assert (stored.codes != trained.obsm["X_sae"]).nnz == 0
    np.testing.assert_array_equal(stored.loadings(), trained.varm["sae_loadings"])
    np.testing.assert_array_equal(stored.decoder, entry["weights"]["W_dec"])
    assert stored.config.n_features == 16 and stored.config.k == 2 and stored.config.n_epochs == 3
    assert stored.metrics["fvu_validation"] == entry["metrics"]["fvu_validation"]
    assert stored.use_rep == "X_pca" and stored.layer is None and stored.var_names is None
    # the rebuilt model encodes the cells into the stored activations (an independent path: the model's own encoder)
    assert (stored.model.transform(trained.obsm["X_pca"]) != trained.obsm["X_sae"]).nnz == 0


def test_missing_key_lists_the_stored_saes_and_changes_nothing(trained):
    before = snapshot(trained)
    with pytest.raises(KeyError, match="no SAE under 'nope'.*SAEs found: 'sae', 'other'"):
        csk.get.sae(trained, "nope")
    with pytest.raises(KeyError, match="no 'X_nope'.*SAEs found: 'sae', 'other'"):
        csk.get.codes(trained, "nope")
    assert_unchanged(trained, before)
    with pytest.raises(KeyError, match="Run cellsae_kit.tl.sae first"):
        csk.get.sae(sc.datasets.pbmc68k_reduced())
    with pytest.raises(TypeError, match="AnnData"):
        csk.get.sae(np.zeros((3, 3)))


def test_stale_activations_and_partial_entries_say_what_to_do(trained):
    adata = trained.copy()
    adata.obsm["X_sae"] = adata.obsm["X_sae"][:, :8]
    with pytest.raises(ValueError, match="not this SAE's.*tl.encode"):
        _ = csk.get.sae(adata).codes
    adata.uns["partial"] = {"params": {}}
    with pytest.raises(KeyError, match="holds no weights"):
        _ = csk.get.sae(adata, "partial").decoder
    with pytest.raises(KeyError, match="lacks n_inputs.*not written by cellsae_kit.tl.sae"):
        _ = csk.get.sae(adata, "partial").model
    with pytest.raises(KeyError, match="tl.feature_genes"):
        csk.get.sae(adata, "sae").loadings(name="missing")


@pytest.mark.parametrize(
    ("feature", "error", "message"),
    [
        (16, ValueError, "out of range.*features 0-15"),
        ("B", ValueError, "not a feature number"),
        (True, TypeError, "must be a feature number"),
    ],
)
def test_feature_index(trained, feature, error, message):
    assert csk.get.sae(trained).feature_index("7") == 7
    with pytest.raises(error, match=message):
        csk.get.sae(trained).feature_index(feature)


def test_add_features_matches_by_name_and_keeps_other_tools_columns(trained):
    adata = trained.copy()
    stored = csk.get.sae(adata)
    names = [str(i) for i in range(16)]
    stored.add_features(pd.DataFrame({"a": np.arange(16.0)}, index=names))
    adata.uns["sae"]["features"] = adata.uns["sae"]["features"].iloc[::-1]  # a user sorts the table
    stored.add_features(pd.DataFrame({"b": np.arange(16.0) * 10, "a": np.arange(16.0) + 1}, index=names))
    table = stored.features
    assert list(table.index) == names[::-1]  # the user's order stays
    np.testing.assert_array_equal(table.loc[names, "b"], np.arange(16.0) * 10)  # by name, not by position
    np.testing.assert_array_equal(table.loc[names, "a"], np.arange(16.0) + 1)  # replaced, not duplicated
    stored.add_features(pd.DataFrame({"c": 1.0}, index=names), drop=["b"])
    assert sorted(stored.features.columns) == ["a", "c"]
