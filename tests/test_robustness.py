"""Inputs that used to crash the interpreter or give silent NaN, and a bounded random fuzz of tl.sae / tl.encode."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from anndata import AnnData
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from scipy import sparse

import cellsae_kit as csk

MALFORMED = {
    "index beyond the columns": "X.indices[5] = 10**6",
    "negative index": "X.indices[7] = -3",
    "indptr falls": "X.indptr[100:150] = 0",
    "indptr too long": "X.indptr[-1] = X.nnz + 1000",
}


@pytest.mark.parametrize("where", ["memory", "backed", "streamed"])
@pytest.mark.parametrize("corruption", list(MALFORMED))
def test_a_malformed_csr_matrix_gets_an_error_not_a_crash(tmp_path, where, corruption):
    # In a subprocess: a crash (segfault, glibc abort) must show as a failed test, not end the test run.
    script = textwrap.dedent(
        f"""
        import warnings
        import numpy as np, anndata as ad
        from scipy import sparse
        import cellsae_kit as csk
        warnings.simplefilter("ignore")
        X = sparse.random(300, 20, density=0.2, format="csr", dtype=np.float32, random_state=0)
        {MALFORMED[corruption]}
        adata = ad.AnnData(X)
        if {where!r} != "memory":
            adata.write_h5ad({str(tmp_path / "bad.h5ad")!r})  # anndata writes the arrays as they are
            adata = ad.read_h5ad({str(tmp_path / "bad.h5ad")!r}, backed="r") if {where!r} == "backed" else None
        source = {str(tmp_path / "bad.h5ad")!r} if {where!r} == "streamed" else adata
        try:
            csk.tl.sae(source, None, n_features=8, k=2, n_epochs=1, progress=False, device="cpu")
        except ValueError as err:
            assert "malformed" in str(err), err
            print("CLEAR ERROR")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "CLEAR ERROR" in done.stdout, done.stdout + done.stderr[-2000:]


def test_a_truncated_h5ad_gets_a_clear_error(tmp_path):
    adata = AnnData(np.random.default_rng(0).normal(size=(200, 10)).astype(np.float32))
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot be read"):
        csk.tl.sae(path, None, n_features=8, k=2, n_epochs=1, progress=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x[:, ::-1],  # what sc.pp.pca can store for dense input
        lambda x: np.asfortranarray(x),
        lambda x: x.astype(">f4"),
        lambda x: np.require(x, requirements=["C"]).copy()[::2].repeat(2, axis=0),
    ],
    ids=["negative strides", "Fortran order", "big-endian", "strided rows"],
)
def test_any_memory_layout_trains_and_encodes_like_a_plain_array(make):
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    odd = make(x)
    plain = np.ascontiguousarray(odd, dtype=np.float32)
    a, b = AnnData(obsm={"X_rep": odd}, shape=(200, 0)), AnnData(obsm={"X_rep": plain}, shape=(200, 0))
    for adata in (a, b):
        csk.tl.sae(adata, "X_rep", n_features=8, k=2, n_epochs=2, progress=False, device="cpu")
    np.testing.assert_array_equal(a.obsm["X_sae"].toarray(), b.obsm["X_sae"].toarray())
    csk.tl.encode(a, b)
    np.testing.assert_array_equal(a.obsm["X_sae"].toarray(), b.obsm["X_sae"].toarray())


def test_read_only_and_memory_mapped_arrays_train(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    adata = AnnData(obsm={"X_rep": mapped}, shape=(200, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "non-writable array" warning included
        csk.tl.sae(adata, "X_rep", n_features=8, k=2, n_epochs=2, progress=False, device="cpu")
    assert np.isfinite(adata.obsm["X_sae"].data).all()


def test_the_constant_check_names_the_training_cells():
    x = np.tile(np.random.default_rng(0).normal(size=(1, 8)), (200, 1)).astype(np.float32)
    adata = AnnData(obsm={"X_rep": x}, shape=(200, 0))
    with pytest.raises(ValueError, match=r"All 180 training cells of adata.obsm\['X_rep'\] have the same input"):
        csk.tl.sae(adata, "X_rep", n_features=8, k=2, n_epochs=1, validation_fraction=0.1, progress=False)


def test_encode_with_another_model_keeps_its_metrics_and_history():
    rng = np.random.default_rng(0)
    ref, query = (AnnData(obsm={"X_rep": rng.normal(size=(200, 8))}, shape=(200, 0)) for _ in range(2))
    csk.tl.sae(ref, "X_rep", n_features=8, k=2, n_epochs=2, progress=False, device="cpu")
    csk.tl.encode(query, ref)
    assert query.uns["sae"]["metrics"] == ref.uns["sae"]["metrics"]
    assert query.uns["sae"]["history"].equals(ref.uns["sae"]["history"])
    assert "validation_indices" not in query.uns["sae"]  # the reference's cells, not these


@seed(20261202)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_cells=st.integers(2, 60),
    n_dims=st.integers(1, 12),
    dtype=st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.float16, np.uint8]),
    layout=st.sampled_from(["dense", "csr", "csc"]),  # what AnnData holds
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    n_features=st.integers(2, 20),
)
def test_fuzz_sae_and_encode_give_finite_codes_or_a_clear_error(n_cells, n_dims, dtype, layout, scale, n_features):
    assume(dtype is not np.float16 or layout == "dense")  # scipy has no float16 sparse matrices
    rng = np.random.default_rng(n_cells * 100 + n_dims)
    x = rng.normal(scale=scale, size=(n_cells, n_dims))
    x = np.abs(x).round() if np.issubdtype(dtype, np.integer) else x
    x = x.astype(dtype)
    X = x if layout == "dense" else getattr(sparse, f"{layout}_matrix")(x)
    adata = AnnData(X)
    k = max(1, min(n_features - 1, 3))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # settings that do not fit tiny data warn
            csk.tl.sae(adata, None, n_features=n_features, k=k, n_epochs=2, progress=False, device="cpu")
    except (ValueError, TypeError) as err:
        assert any(word in str(err) for word in ("same input vector", "single cell", "too little", "none to train"))
        return
    codes = adata.obsm["X_sae"]
    assert codes.shape == (n_cells, n_features) and np.isfinite(codes.data).all() and (codes.data >= 0).all()
    again = adata.copy()
    csk.tl.encode(again)
    np.testing.assert_allclose(again.obsm["X_sae"].toarray(), codes.toarray(), rtol=1e-5, atol=1e-6)


def test_a_view_of_a_backed_anndata_is_refused_before_training(tmp_path):
    import anndata as ad

    path = tmp_path / "cells.h5ad"
    AnnData(np.random.default_rng(0).normal(size=(200, 10)).astype(np.float32)).write_h5ad(path)
    view = ad.read_h5ad(path, backed="r")[:100]
    with pytest.raises(ValueError, match=r"view of a backed AnnData.*to_memory\(\)"):
        csk.tl.sae(view, None, n_features=8, k=2, n_epochs=1, progress=False)


def test_results_agree_across_thread_counts_to_about_8_digits():
    import torch

    x = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs.append(csk.models.fit(x, n_features=16, k=4, n_epochs=3, progress=False).metrics["fvu_train"])
    torch.set_num_threads(1)
    assert runs[0] == pytest.approx(runs[1], rel=1e-6)


def test_a_garbage_zarr_chunk_gets_a_clear_error(tmp_path):
    path = tmp_path / "cells.zarr"
    AnnData(np.random.default_rng(0).normal(size=(2000, 10)).astype(np.float32)).write_zarr(path)
    chunks = [p for p in (path / "X").rglob("*") if p.is_file() and not p.name.startswith((".z", "zarr.json"))]
    for chunk in chunks:
        chunk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="cannot be read in cells"):
        csk.tl.sae(path, None, n_features=8, k=2, n_epochs=1, progress=False)
