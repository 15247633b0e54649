import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import cellsae_kit as csk
from cellsae_kit.tl._sweep import recommend, sweep_grid
from tests.conftest import assert_unchanged, snapshot, sparse_dictionary_data

FAST = {"n_epochs": 4, "progress": False, "device": "cpu"}


@pytest.fixture
def cells():
    X, _, codes = sparse_dictionary_data(n_cells=600, n_dims=12, n_atoms=16, k=2)
    adata = AnnData(np.zeros((600, 3), dtype=np.float32))
    adata.obsm["X_rep"] = X.astype(np.float32)
    adata.obsm["truth"] = codes.astype(np.float32)
    return adata


def test_sweep_table_matches_separate_runs_and_refits_the_recommendation(cells):
    csk.tl.sae_sweep(cells, "X_rep", n_features=[16, 32], k=[2, 4], truth="truth", **FAST)
    entry = cells.uns["sae_sweep"]
    table = entry["sweep"]
    assert table[["n_features", "k"]].values.tolist() == [[16, 2], [16, 4], [32, 2], [32, 4]]
    assert table["recommended"].sum() == 1 and "lowest validation FVU" in entry["rule"]
    assert table["median_best_abs_r"].between(0, 1).all() and table["shared_at_0.9"].between(0, 1).all()
    # the independent reference: the same settings trained one by one with tl.sae
    fvu = []
    for seed in (0, 1):
        run = csk.tl.sae(cells, "X_rep", n_features=32, k=4, random_state=seed, copy=True, **FAST)
        fvu.append(run.uns["sae"]["metrics"]["fvu_validation"])
    assert table.loc[3, "fvu_validation"] == pytest.approx(np.mean(fvu), rel=1e-5)
    chosen = table[table["recommended"]].iloc[0]
    params = cells.uns["sae"]["params"]
    assert (params["n_features"], params["k"], params["random_state"]) == (chosen["n_features"], chosen["k"], 0)


def test_recommendation_never_looks_at_the_truth(cells):
    a = csk.tl.sae_sweep(cells, "X_rep", n_features=[16, 32], k=[2], refit=False, copy=True, **FAST)
    b = csk.tl.sae_sweep(cells, "X_rep", n_features=[16, 32], k=[2], truth="truth", refit=False, copy=True, **FAST)
    assert "sae" not in a.uns
    pd.testing.assert_series_equal(
        a.uns["sae_sweep"]["sweep"]["recommended"], b.uns["sae_sweep"]["sweep"]["recommended"]
    )


def test_parallel_runs_give_the_same_table(cells):
    options = {"n_features": [16], "k": [2], "refit": False, "copy": True, **FAST}
    one = csk.tl.sae_sweep(cells, "X_rep", **options).uns["sae_sweep"]["sweep"]
    two = csk.tl.sae_sweep(cells, "X_rep", n_jobs=2, **options).uns["sae_sweep"]["sweep"]
    pd.testing.assert_frame_equal(one.drop(columns="seconds"), two.drop(columns="seconds"))


def test_recommend_skips_dead_settings_and_prefers_stable_ones():
    table = pd.DataFrame(
        {
            "n_features": [16, 32, 64, 128],
            "k": [4, 4, 4, 4],
            "mean_cosine": [0.9, 0.8, 0.95, 0.9],
            "fvu_validation": [0.30, 0.21, 0.205, 0.10],
            "dead_fraction": [0.0, 0.0, 0.1, 0.5],
        }
    )
    assert recommend(table) == 2  # 128 is half dead; of 32 and 64 (within 5%), 64 comes back better


def test_default_grid_surrounds_the_defaults():
    sizes, ks = sweep_grid(10_000, 150)
    assert sizes == [128, 256, 512] and ks == [8, 16, 32]
    assert sweep_grid(200, 3) == ([8, 16, 32], [1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"use_rep": "X_missing"}, KeyError, "not in adata.obsm"),
        ({"n_features": [4], "k": [8]}, ValueError, "No setting of the grid has k < n_features"),
        ({"n_seeds": 1}, ValueError, "n_seeds=1 must be an integer of at least 2"),
        ({"n_jobs": 0}, ValueError, "n_jobs=0 must be a whole number"),
        ({"activation": ["gelu"]}, ValueError, "activation='gelu' is not known"),
        ({"n_features": []}, ValueError, "lists no values"),
        ({"truth": "nothing"}, KeyError, "truth='nothing' is not in adata.obsm"),
        ({"batchsize": 3}, TypeError, "batchsize"),
    ],
)
def test_bad_input_leaves_adata_unchanged(cells, kwargs, error, match):
    before = snapshot(cells)
    options = {"use_rep": "X_rep", "n_features": [16], "k": [2]} | kwargs
    with pytest.raises(error, match=match):
        csk.tl.sae_sweep(cells, **options, **FAST)
    assert_unchanged(cells, before)
