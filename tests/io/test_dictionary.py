import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import scanpy as sc

import cellsae_kit as csk
from cellsae_kit.io._dictionary import N_TOP_GENES, _top_genes
from tests.conftest import assert_unchanged, snapshot

FAST = {"n_features": 32, "k": 4, "n_epochs": 10, "progress": False, "random_state": 0}


@pytest.fixture(scope="module")
def halves():
    """A reference half of pbmc68k_reduced with its own PCA, SAE, names and descriptions; the other half bare."""
    adata = sc.datasets.pbmc68k_reduced()
    train = np.zeros(adata.n_obs, dtype=bool)
    train[np.random.default_rng(0).permutation(adata.n_obs)[:350]] = True
    ref, new = adata[train].copy(), adata[~train].copy()
    del new.obsm["X_pca"], new.varm["PCs"]
    sc.pp.pca(ref)
    csk.tl.sae(ref, "X_pca", **FAST)
    csk.tl.annotate_features(ref, "go_bp")
    csk.tl.score_annotations(ref, "go_bp")
    csk.tl.describe_features(ref, groupby="bulk_labels")
    return ref, new


@pytest.fixture(scope="module")
def folder(halves, tmp_path_factory):
    return csk.io.write_dictionary(halves[0], tmp_path_factory.mktemp("d") / "pbmc", source="pbmc68k_reduced half")


def test_a_dictionary_read_in_a_fresh_process_gives_the_codes_of_the_original(halves, folder, tmp_path):
    ref, new = halves
    new.write_h5ad(tmp_path / "new.h5ad")
    script = (
        "import anndata as ad, cellsae_kit as csk\n"
        f"new = ad.read_h5ad({str(tmp_path / 'new.h5ad')!r})\n"
        f"csk.tl.encode(new, {str(folder)!r})\n"
        "csk.tl.score_annotations(new, 'go_bp')\n"
        f"new.write_h5ad({str(tmp_path / 'encoded.h5ad')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    encoded = ad.read_h5ad(tmp_path / "encoded.h5ad")

    # the independent route: project by hand with the reference PCA, encode with the original AnnData
    by_hand = new.copy()
    by_hand.obsm["X_pca"] = ((new.X - ref.X.mean(axis=0)) @ ref.varm["PCs"]).astype(np.float32)
    csk.tl.encode(by_hand, ref)
    np.testing.assert_array_equal(encoded.obsm["X_sae"].toarray(), by_hand.obsm["X_sae"].toarray())
    np.testing.assert_allclose(encoded.obsm["X_pca_sae"], by_hand.obsm["X_pca"], rtol=1e-5, atol=1e-4)

    # the names and descriptions come along; the held-out AUROC is recomputed on the new cells
    carried, original = encoded.uns["sae"]["features"], ref.uns["sae"]["features"]
    assert carried["best_term"].astype(str).tolist() == original["best_term"].astype(str).tolist()
    assert carried["description"].tolist() == original["description"].tolist()
    named = original["best_term"].notna().to_numpy()
    assert carried.loc[named, "best_term_auroc"].notna().sum() >= named.sum() // 2
    assert not np.allclose(carried.loc[named, "best_term_auroc"], original.loc[named, "best_term_auroc"])
    assert encoded.uns["sae"]["dictionary"]["source"] == "pbmc68k_reduced half"
    assert encoded.uns["sae"]["dictionary"]["n_cells"] == 350
    # gene loadings of the new object: the reference's, genes in the new object's order
    np.testing.assert_allclose(encoded.varm["sae_loadings"], ref.varm["sae_loadings"], rtol=1e-5, atol=1e-6)


def test_the_manifest_lists_input_provenance_and_checksums(folder):
    manifest = json.loads((folder / "dictionary.json").read_text())
    assert manifest["format"] == "cellsae_kit.dictionary/1"
    assert manifest["input"] | {"genes": None} == {
        "use_rep": "X_pca",
        "n_inputs": 50,
        "projection": "pca",
        "genes": None,
        "layer": None,
        "annotation_genes": manifest["input"]["annotation_genes"],
    }
    assert set(manifest["files"]) == {
        "model.safetensors",
        "arrays.safetensors",
        "features.json",
        "annotation.json",
    }
    assert manifest["provenance"]["versions"]["torch"]


def test_read_dictionary_returns_the_parts(halves, folder):
    ref, _ = halves
    dictionary = csk.io.read_dictionary(folder)
    np.testing.assert_array_equal(dictionary.model.weights()["W_dec"], ref.uns["sae"]["weights"]["W_dec"])
    np.testing.assert_allclose(dictionary.mean, ref.X.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert dictionary.genes == list(ref.var_names)
    index, values = dictionary.top_genes
    assert index.shape == (32, N_TOP_GENES)
    loadings = ref.varm["sae_annotation_loadings"]
    np.testing.assert_allclose(values[:, 0], loadings.max(axis=0), rtol=1e-6)


def test_top_genes_against_a_full_sort():
    loadings = np.random.default_rng(1).normal(size=(300, 5)).astype(np.float32)
    index, values = _top_genes(loadings)
    expected = np.argsort(-loadings, axis=0)[:N_TOP_GENES].T
    np.testing.assert_array_equal(index, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(loadings.T, expected, axis=1))


def test_expression_dictionary_aligns_genes_by_name(dictionary_adata, tmp_path):
    csk.tl.sae(dictionary_adata, **FAST)
    folder = csk.io.write_dictionary(dictionary_adata, tmp_path / "expr")
    shuffled = dictionary_adata[:, dictionary_adata.var_names[::-1]].copy()
    del shuffled.obsm["X_sae"], shuffled.uns["sae"]
    csk.tl.encode(shuffled, folder)
    np.testing.assert_allclose(
        shuffled.obsm["X_sae"].toarray(), dictionary_adata.obsm["X_sae"].toarray(), rtol=1e-5, atol=1e-6
    )
    assert "dictionary" in shuffled.uns["sae"] and "features" not in shuffled.uns["sae"]


def test_missing_genes_are_reported_and_taken_at_the_reference_mean(halves, folder):
    _, new = halves
    dropped = new[:, 40:].copy()
    used = np.abs(csk.io.read_dictionary(folder).components[:40]).sum(axis=1) > 0
    with pytest.warns(UserWarning, match=rf"{used.sum()} of the \d+ genes of the dictionary's PCA are missing"):
        csk.tl.encode(dropped, folder)
    assert dropped.obsm["X_sae"].shape == (new.n_obs, 32)


def test_no_shared_genes_is_refused(halves, folder):
    _, new = halves
    other = new.copy()
    other.var_names = [f"ENSG{i:011d}" for i in range(other.n_vars)]
    before = snapshot(other)
    with pytest.raises(ValueError, match="None of the .* genes of the dictionary's PCA are in adata.var_names"):
        csk.tl.encode(other, folder)
    assert_unchanged(other, before)


def test_a_different_representation_dimension_is_refused(pbmc, tmp_path):
    csk.tl.sae(pbmc, "X_umap", n_features=8, k=1, n_epochs=2, progress=False)
    folder = csk.io.write_dictionary(pbmc, tmp_path / "umap")
    query = pbmc.copy()
    del query.uns["sae"], query.obsm["X_sae"]
    query.obsm["X_umap"] = np.hstack([query.obsm["X_umap"], query.obsm["X_umap"][:, :1]])
    before = snapshot(query)
    with pytest.raises(ValueError, match="has 3 dimensions but the SAE was trained on 2"):
        csk.tl.encode(query, folder)
    assert_unchanged(query, before)


@pytest.mark.parametrize("name", ["model.safetensors", "arrays.safetensors", "features.json", "annotation.json"])
def test_a_tampered_file_is_refused(folder, tmp_path, name):
    import shutil

    copy = shutil.copytree(folder, tmp_path / "copy")
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 1
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{name} differs from the file the dictionary was written with"):
        csk.io.read_dictionary(copy)


def test_a_damaged_manifest_and_missing_files_are_refused(folder, tmp_path):
    import shutil

    copy = shutil.copytree(folder, tmp_path / "copy")
    (copy / "features.json").unlink()
    with pytest.raises(ValueError, match="lacks 'features.json'"):
        csk.io.read_dictionary(copy)
    (copy / "dictionary.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        csk.io.read_dictionary(copy)
    (copy / "dictionary.json").write_text(json.dumps({"format": "something/2"}))
    with pytest.raises(ValueError, match="is not a cellsae_kit dictionary"):
        csk.io.read_dictionary(copy)
    with pytest.raises(FileNotFoundError, match="No dictionary at"):
        csk.io.read_dictionary(tmp_path / "nowhere")


def test_an_existing_folder_is_refused_unless_overwrite(halves, folder, tmp_path):
    ref, _ = halves
    with pytest.raises(FileExistsError, match="overwrite=True"):
        csk.io.write_dictionary(ref, folder)
    written = csk.io.write_dictionary(ref, folder, overwrite=True, source="again")
    assert csk.io.read_dictionary(written).provenance["source"] == "again"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is no dictionary"):
        csk.io.write_dictionary(ref, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_pca_that_does_not_project_is_refused_before_writing(pbmc, tmp_path):
    # pbmc68k_reduced's X was changed after its PCA: its X_pca is not the projection of its X
    csk.tl.sae(pbmc, "X_pca", **FAST)
    before = snapshot(pbmc)
    with pytest.raises(ValueError, match=r"does not give obsm\['X_pca'\] .* Run sc.pp.pca"):
        csk.io.write_dictionary(pbmc, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert_unchanged(pbmc, before)
