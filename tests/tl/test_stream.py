import os

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
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


def _read(path):
    return ad.read_zarr(path) if path.suffix == ".zarr" else ad.read_h5ad(path)


def assert_same_results(written, reference, key="sae"):
    """A file written block by block holds what the in-memory AnnData holds, codes identical."""
    codes, expected = written.obsm[f"X_{key}"], reference.obsm[f"X_{key}"]
    assert sparse.isspmatrix_csr(codes) and codes.dtype == expected.dtype == np.float32
    assert codes.shape == expected.shape and (codes != expected).nnz == 0
    assert codes.indices.dtype == expected.indices.dtype and codes.indptr.dtype == expected.indptr.dtype
    assert written.obs.equals(reference.obs) and written.var.equals(reference.var)
    assert sorted(written.varm) == sorted(reference.varm)
    for name in reference.varm:
        np.testing.assert_array_equal(written.varm[name], reference.varm[name])
    got, want = written.uns[key], reference.uns[key]
    assert sorted(got) == sorted(want)
    assert got["params"].keys() == want["params"].keys()
    for name, value in want["params"].items():
        if not isinstance(value, dict):
            np.testing.assert_array_equal(got["params"][name], value, err_msg=name)
    for name, value in want["weights"].items():
        np.testing.assert_array_equal(got["weights"][name], value, err_msg=name)
    assert sorted(got["metrics"]) == sorted(want["metrics"])  # h5py reads a group in alphabetical order
    for name, value in want["metrics"].items():  # the training FVU is counted in the writer's pass: rounding only
        assert got["metrics"][name] == pytest.approx(value, rel=1e-5), name
    timeless = ["seconds"]  # wall time differs from run to run
    pd.testing.assert_frame_equal(got["history"].drop(columns=timeless), want["history"].drop(columns=timeless))
    np.testing.assert_array_equal(got["validation_indices"], want["validation_indices"])


@pytest.mark.parametrize(("given", "out"), [("h5ad", "h5ad"), ("zarr", "zarr"), ("h5ad", "zarr"), ("zarr", "h5ad")])
def test_write_to_equals_the_in_memory_results(pbmc, pbmc_file, tmp_path, given, out):
    path = pbmc_file
    if given == "zarr":
        path = pbmc_file.with_suffix(".zarr")
        pbmc.write_zarr(path)
    reference = csk.tl.sae(path, "X_pca", **FAST)
    assert csk.tl.sae(path, "X_pca", write_to=tmp_path / f"out.{out}", **FAST) is None
    written = _read(tmp_path / f"out.{out}")
    assert_same_results(written, reference)
    # the kit's reader sees the same SAE
    assert csk.get.sae(written).metrics["l0"] == pytest.approx(csk.get.sae(reference).metrics["l0"])
    assert (csk.get.codes(written) != csk.get.codes(reference)).nnz == 0
    # and the file is what writing the in-memory results gives, read back
    reference.write_h5ad(tmp_path / "reference.h5ad")
    assert_same_results(written, ad.read_h5ad(tmp_path / "reference.h5ad"))
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


@pytest.mark.parametrize("backed", [True, False])
def test_write_to_from_an_anndata_leaves_it_unchanged(pbmc, pbmc_file, tmp_path, backed):
    adata = sc.read_h5ad(pbmc_file, backed="r") if backed else pbmc.copy()
    if not backed:
        adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")  # strings: categories in the file
        strings = adata.obs["batch"].dtype  # object, or pandas 3's str
    before = {slot: sorted(getattr(adata, slot)) for slot in ("obsm", "varm", "uns")}
    csk.tl.sae(adata, "X_pca", write_to=tmp_path / "out.h5ad", **FAST)
    assert {slot: sorted(getattr(adata, slot)) for slot in before} == before
    # the same training as without write_to: streamed for a backed object, in memory otherwise
    if backed:
        reference = csk.tl.sae(pbmc_file, "X_pca", **FAST)
    else:
        assert adata.obs["batch"].dtype == strings  # the user's obs is left as it was, not made categorical
        reference = csk.tl.sae(adata, "X_pca", copy=True, **FAST)
        reference.write_h5ad(tmp_path / "reference.h5ad")
        reference = ad.read_h5ad(tmp_path / "reference.h5ad")
    written = ad.read_h5ad(tmp_path / "out.h5ad")
    assert written.X is None and list(written.obsm) == ["X_sae"]  # results only, not the input data
    assert_same_results(written, reference)


def test_write_to_expression_with_a_key(dictionary_adata, tmp_path):
    dictionary_adata.X = sparse.csr_matrix(np.where(dictionary_adata.X > 0.3, dictionary_adata.X, 0))
    dictionary_adata.write_h5ad(tmp_path / "d.h5ad")
    reference = csk.tl.sae(tmp_path / "d.h5ad", key_added="expr", **FAST)
    csk.tl.sae(tmp_path / "d.h5ad", key_added="expr", write_to=tmp_path / "out.zarr", **FAST)
    written = ad.read_zarr(tmp_path / "out.zarr")
    assert_same_results(written, reference, key="expr")
    assert list(written.uns["expr"]["var_names"]) == list(dictionary_adata.var_names)


def test_write_to_never_holds_every_cell(pbmc_file, tmp_path, monkeypatch):
    # fit's in-memory encoding is not used: the codes go to the file a block at a time
    from cellsae_kit.models import _train
    from cellsae_kit.tl import _write

    def refuse(*args, **kwargs):
        raise AssertionError("every cell's codes were encoded into memory")

    monkeypatch.setattr(_train, "encode_rows", refuse)
    monkeypatch.setattr(_train, "_encode_and_score", refuse)
    blocks = []
    original = _write.encode_blocks

    def counted(*args, **kwargs):
        for block in original(*args, **kwargs):
            blocks.append(block[3].shape[0])
            yield block

    monkeypatch.setattr(_write, "encode_blocks", counted)
    evaluated = []  # fit's own passes over the data: the validation cells, each epoch; never the training cells
    evaluate = _train._evaluate
    monkeypatch.setattr(
        _train, "_evaluate", lambda m, X, idx, *a, **kw: (evaluated.append(len(idx)), evaluate(m, X, idx, *a, **kw))[1]
    )
    csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "out.h5ad", **(FAST | {"chunk_size": 100}))
    assert sum(blocks) == 700  # every cell once, a batch of at least 4096 cells at a time
    written = ad.read_h5ad(tmp_path / "out.h5ad")
    assert set(evaluated) == {len(written.uns["sae"]["validation_indices"])}
    assert 0 < written.uns["sae"]["metrics"]["fvu_train"] < 1
    assert ad.read_h5ad(tmp_path / "out.h5ad").obsm["X_sae"].shape == (700, 32)


def test_a_failed_write_leaves_no_file(pbmc_file, tmp_path, monkeypatch):
    from cellsae_kit.tl import _write

    def broken(*args, **kwargs):
        yield from []
        raise OSError("disk full")

    monkeypatch.setattr(_write, "encode_blocks", broken)
    for out in ("out.h5ad", "out.zarr"):
        with pytest.raises(OSError, match="disk full"):
            csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / out, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pbmc.h5ad"]


def test_write_to_bad_paths(pbmc, pbmc_file, tmp_path):
    backed = sc.read_h5ad(pbmc_file, backed="r")
    (tmp_path / "old.h5ad").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"old.h5ad exists; pass overwrite=True"):
        csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "old.h5ad", **FAST)
    assert (tmp_path / "old.h5ad").read_text() == "keep me"
    with pytest.raises(ValueError, match=r"must end in \.h5ad or \.zarr"):
        csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "out.csv", **FAST)
    with pytest.raises(ValueError, match="is the input file"):
        csk.tl.sae(backed, "X_pca", write_to=pbmc_file, overwrite=True, **FAST)
    with pytest.raises(PermissionError, match=r"Cannot write into .*old.h5ad \(not a folder\)"):
        csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "old.h5ad" / "out.h5ad", **FAST)
    with pytest.raises(ValueError, match="copy=True and write_to="):
        csk.tl.sae(pbmc, "X_pca", write_to=tmp_path / "out.h5ad", copy=True, **FAST)
    with pytest.raises(TypeError, match="for a MuData leave write_to=None"):
        csk.tl.sae(md.MuData({"rna": pbmc}), "rna:X_pca", write_to=tmp_path / "out.h5ad", **FAST)
    assert "X_sae" not in pbmc.obsm and "sae" not in backed.uns
    # overwrite=True replaces the file; missing folders are made
    csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "old.h5ad", overwrite=True, **FAST)
    csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "new" / "out.h5ad", **FAST)
    assert ad.read_h5ad(tmp_path / "old.h5ad").n_obs == ad.read_h5ad(tmp_path / "new" / "out.h5ad").n_obs == 700


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_write_to_a_read_only_folder(pbmc_file, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="no write permission"):
        csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "locked" / "out.h5ad", **FAST)


def test_write_to_shows_its_progress(pbmc_file, tmp_path, capsys):
    csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "out.h5ad", **(FAST | {"progress": True}))
    assert "writing activations" in capsys.readouterr().err
    csk.tl.sae(pbmc_file, "X_pca", write_to=tmp_path / "out2.h5ad", **FAST)
    assert "writing activations" not in capsys.readouterr().err
