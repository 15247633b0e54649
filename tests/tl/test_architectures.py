"""Matryoshka and JumpReLU SAEs through the tools: tl.sae (and its h5ad round trip), the sweep and consensus."""

import numpy as np
import pytest
import scanpy as sc

import cellsae_kit as csk


@pytest.fixture(scope="module")
def simulated():
    adata = csk.datasets.simulate(n_cells=400, n_programs=20, n_genes=200, random_state=0)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=20)
    return adata


FAST = {"n_features": 32, "k": 4, "n_epochs": 20, "progress": False}


@pytest.mark.parametrize("activation", ["matryoshka", "jumprelu"])
def test_sae_fits_stores_and_reencodes_after_an_h5ad_round_trip(simulated, activation, tmp_path):
    adata = simulated.copy()
    csk.tl.sae(adata, "X_pca", activation=activation, **FAST)
    entry = adata.uns["sae"]
    assert entry["params"]["activation"] == activation
    assert entry["metrics"]["l0"] == pytest.approx(4, rel=0.25)
    if activation == "jumprelu":
        assert entry["weights"]["threshold"].shape == (32,)
    else:
        assert list(entry["params"]["prefixes"]) == [4, 8, 16, 32]
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = sc.read_h5ad(tmp_path / "a.h5ad")
    model = csk.get.sae(back).model
    assert model.activation == activation
    assert csk.get.sae(back).config.activation == activation
    new = simulated.copy()
    csk.tl.encode(new, back, key="sae")
    np.testing.assert_array_equal(new.obsm["X_sae"].toarray(), adata.obsm["X_sae"].toarray())


def test_sweep_and_consensus_run_with_both(simulated):
    adata = simulated.copy()
    csk.tl.sae_sweep(
        adata, "X_pca", n_features=[16], k=[2], activation=["matryoshka", "jumprelu"], n_epochs=5, progress=False
    )
    table = adata.uns["sae_sweep"]["sweep"]
    assert sorted(table["activation"]) == ["jumprelu", "matryoshka"]
    for activation in ("matryoshka", "jumprelu"):
        csk.tl.consensus(
            adata,
            "X_pca",
            n_runs=3,
            n_features=8,
            k=2,
            activation=activation,
            n_epochs=5,
            density_threshold=2,
            key_added=f"c_{activation}",
            progress=False,
        )
        assert adata.obsm[f"X_c_{activation}"].shape == (adata.n_obs, 8)
        assert adata.uns[f"c_{activation}"]["params"]["activation"] == activation
