"""Seeded fixtures shared by the tests."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import torch
from anndata import AnnData
from scipy import sparse


@pytest.fixture(autouse=True)
def _single_thread():
    # Bit-for-bit comparisons and stable timings on the 2-core CI machine.
    torch.set_num_threads(1)


@pytest.fixture
def pbmc() -> AnnData:
    """Scanpy's bundled 700-cell PBMC data (X scaled, X_pca, X_umap, varm['PCs'])."""
    return sc.datasets.pbmc68k_reduced()


def sparse_dictionary_data(n_cells: int = 2000, n_dims: int = 20, n_atoms: int = 40, k: int = 3, seed: int = 0):
    """Cells made of ``k`` of ``n_atoms`` unit directions with positive weights, plus a little noise."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, n_dims))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n_cells, n_atoms))
    for i in range(n_cells):
        codes[i, rng.choice(n_atoms, k, replace=False)] = rng.uniform(1, 3, size=k)
    X = codes @ atoms + 0.01 * rng.normal(size=(n_cells, n_dims))
    return X.astype(np.float32), atoms, codes


@pytest.fixture
def dictionary_adata() -> AnnData:
    """AnnData whose X is a sparse combination of known directions; 20 'genes'."""
    X, _, _ = sparse_dictionary_data(n_cells=600)
    adata = AnnData(X)
    adata.var_names = [f"g{i}" for i in range(X.shape[1])]
    adata.obs_names = [f"c{i}" for i in range(X.shape[0])]
    adata.obsm["X_rep"] = X[:, :10].copy()
    adata.layers["raw"] = X.copy()
    return adata


def snapshot(adata: AnnData) -> dict:
    """What a failed call must leave exactly as it was."""
    return {
        "shape": adata.shape,
        "obsm": {k: v.copy() for k, v in adata.obsm.items()},
        "varm": {k: np.asarray(v).copy() for k, v in adata.varm.items()},
        "uns": sorted(adata.uns),
        # a MuData keeps layers in its modalities; anndata 0.13 lists X as layers[None]
        "layers": sorted(k for k in (getattr(adata, "layers", None) or {}) if k is not None),
        "obs": adata.obs.copy(),
        "X": adata.X.copy() if getattr(adata, "X", None) is not None else None,
    }


def assert_unchanged(adata: AnnData, before: dict) -> None:
    after = snapshot(adata)
    assert after["shape"] == before["shape"]
    assert after["uns"] == before["uns"]
    assert after["layers"] == before["layers"]
    assert sorted(after["obsm"]) == sorted(before["obsm"])
    assert sorted(after["varm"]) == sorted(before["varm"])
    for key, value in before["obsm"].items():
        np.testing.assert_array_equal(_dense(after["obsm"][key]), _dense(value))
    for key, value in before["varm"].items():
        np.testing.assert_array_equal(after["varm"][key], value)
    if before["X"] is not None:
        np.testing.assert_array_equal(after["X"], before["X"])
    assert after["obs"].equals(before["obs"])


def _dense(x):
    return x.toarray() if sparse.issparse(x) else np.asarray(x)
