import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

import cellsae_kit as csk
from cellsae_kit.models import fit
from cellsae_kit.tl._consensus import consensus_dictionary, support_scores
from tests.conftest import assert_unchanged, snapshot

# Small and quick; density_threshold=2 keeps every pooled feature (unit vectors are at most 2 apart).
SMALL = {"n_runs": 3, "n_features": 8, "k": 2, "n_epochs": 10, "density_threshold": 2.0, "progress": False}


def _unit(W):
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def _runs(n_runs=6, n_atoms=6, n_junk=2, noise=0.03, seed=0):
    """Every run finds the same atoms (slightly off, in another order, rescaled) plus junk directions of its own."""
    rng = np.random.default_rng(seed)
    atoms = _unit(rng.normal(size=(n_atoms, 20)))
    runs = []
    for _ in range(n_runs):
        found = (atoms + noise * rng.normal(size=atoms.shape)) * rng.uniform(0.5, 2, size=(n_atoms, 1))
        runs.append(rng.permutation(np.vstack([found, rng.normal(size=(n_junk, 20))])))
    return atoms, runs


def test_consensus_dictionary_recovers_the_shared_atoms_and_drops_junk():
    atoms, runs = _runs()
    result = consensus_dictionary(runs, 6, n_neighbors=2, density_threshold=0.5)
    pooled = _unit(np.vstack(runs))
    # the density by hand: mean distance to the 2 nearest other rows
    distances = np.linalg.norm(pooled[:, None] - pooled[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_allclose(result.density, np.sort(distances, axis=1)[:, :2].mean(axis=1), rtol=1e-10)
    is_atom = np.abs(pooled @ atoms.T).max(axis=1) > 0.9
    np.testing.assert_array_equal(result.labels >= 0, is_atom)  # exactly the junk is dropped
    np.testing.assert_array_equal(result.run, np.repeat(np.arange(6), 8))
    # each consensus feature is the renormalised element-wise median of its members, and one of the atoms
    for f in range(6):
        median = np.median(pooled[result.labels == f], axis=0)
        np.testing.assert_allclose(result.dictionary[f], median / np.linalg.norm(median), rtol=1e-10)
    cos = result.dictionary @ atoms.T
    rows, cols = linear_sum_assignment(-cos)
    assert cos[rows, cols].min() > 0.995
    assert sorted(np.bincount(result.labels[result.labels >= 0])) == [6] * 6


def test_consensus_dictionary_orders_by_cluster_size_and_explains_a_failure():
    atoms, runs = _runs(n_runs=4, n_junk=0)
    runs[0] = runs[0][:3]  # run 0 found only half of the atoms
    result = consensus_dictionary(runs, 6, n_neighbors=1)
    sizes = np.bincount(result.labels)
    assert list(sizes) == sorted(sizes, reverse=True) and sizes.sum() == 21
    with pytest.raises(ValueError, match="fewer than the 7 consensus features asked for. Ask for fewer features"):
        consensus_dictionary(runs, 7, n_neighbors=1, density_threshold=0.01)
    with pytest.raises(ValueError, match="input dimensions"):
        consensus_dictionary([np.eye(3), np.eye(4)], 2)
    with pytest.raises(ValueError, match="n_neighbors=0"):
        consensus_dictionary(runs, 6, n_neighbors=0)


def test_support_scores_against_hand_matching():
    atoms, runs = _runs(n_runs=3, n_junk=0, noise=0.1, seed=1)
    scores = support_scores(atoms, runs, threshold=0.9)
    cosines = []
    for run in runs:
        cos = atoms @ _unit(run).T
        rows, cols = linear_sum_assignment(-cos)
        cosines.append(cos[rows, cols])
    np.testing.assert_allclose(scores["stability"], np.mean(cosines, axis=0))
    np.testing.assert_allclose(scores["support"], np.mean(np.array(cosines) >= 0.9, axis=0))
    assert 0 < scores["support"].mean() < 1  # the noise makes some runs miss some atoms


def test_consensus_stores_like_sae_with_the_decoder_held(pbmc, tmp_path):
    csk.tl.consensus(pbmc, "X_pca", device="cpu", **SMALL)
    entry = pbmc.uns["consensus"]
    assert pbmc.obsm["X_consensus"].shape == (700, 8) and pbmc.varm["consensus_loadings"].shape == (765, 8)
    assert {"params", "metrics", "history", "weights", "validation_indices"} <= set(entry)
    # the same runs and pooling by hand: the stored decoder is that consensus dictionary, unchanged by the refit
    decoders = []
    for seed in range(3):
        run = fit(
            pbmc.obsm["X_pca"],
            n_features=8,
            activation="relu",
            n_epochs=10,
            random_state=seed,
            device="cpu",
            progress=False,
        )
        decoders.append(run.model.W_dec.detach().double().numpy()[np.diff(run.codes.tocsc().indptr) > 0])
    expected = consensus_dictionary(decoders, 8, density_threshold=2.0).dictionary
    np.testing.assert_allclose(entry["weights"]["W_dec"], expected, atol=1e-6)
    table = entry["features"]
    assert list(table.columns) == ["stability", "support", "cluster_size"] and list(table.index) == list("01234567")
    np.testing.assert_allclose(table["stability"], support_scores(expected, decoders)["stability"], atol=1e-6)
    assert table["cluster_size"].sum() == sum(len(d) for d in decoders)
    settings = entry["params"]["consensus"]
    assert settings["refit"] == "encoder" and list(settings["seeds"]) == [0, 1, 2] and settings["n_neighbors"] == 1
    assert settings["n_outliers"] == 0 and entry["params"]["use_rep"] == "X_pca"
    assert entry["runs"]["seed"].tolist() == [0, 1, 2]
    # a stored consensus SAE works like any other: it encodes, round-trips, and its stability can be measured
    codes = csk.tl.encode(pbmc, key="consensus", copy=True).obsm["X_consensus"]
    np.testing.assert_allclose(codes.toarray(), pbmc.obsm["X_consensus"].toarray(), atol=1e-5)
    pbmc.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    pd.testing.assert_frame_equal(back.uns["consensus"]["features"], table)
    csk.tl.feature_stats(back, "consensus")
    assert {"frequency", "support"} <= set(back.uns["consensus"]["features"].columns)


def test_finetune_moves_the_decoder_from_the_consensus(pbmc):
    held = csk.tl.consensus(pbmc, "X_pca", device="cpu", copy=True, **SMALL)
    tuned = csk.tl.consensus(pbmc, "X_pca", refit="finetune", device="cpu", copy=True, **SMALL)
    start, end = held.uns["consensus"]["weights"]["W_dec"], tuned.uns["consensus"]["weights"]["W_dec"]
    cos = np.sum(_unit(start) * _unit(end), axis=1)
    assert cos.min() < 0.9999 and np.median(cos) > 0.5  # moved, but from the consensus start
    assert tuned.uns["consensus"]["params"]["consensus"]["refit"] == "finetune"
    # the stability of a fine-tuned feature is that of the stored, moved feature, not of its starting point
    runs = [tuned.uns["consensus"]["features"]["stability"], held.uns["consensus"]["features"]["stability"]]
    assert not np.allclose(*runs)
    assert "consensus" not in pbmc.uns


def test_fit_hook_checks_the_dictionary(pbmc):
    X = pbmc.obsm["X_pca"]
    with pytest.raises(ValueError, match="pass it as init_decoder"):
        fit(X, n_features=4, k=1, n_epochs=1, freeze_decoder=True, progress=False)
    with pytest.raises(ValueError, match=r"finite 4 x 50 array"):
        fit(X, n_features=4, k=1, n_epochs=1, init_decoder=np.ones((4, 3)), progress=False)
    with pytest.raises(ValueError, match="all-zero rows"):
        fit(X, n_features=4, k=1, n_epochs=1, init_decoder=np.zeros((4, 50)), progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"refit": "decoder"}, ValueError, "refit='decoder' is not known"),
        ({"n_runs": 1}, ValueError, "n_runs=1 must be an integer of at least 2"),
        ({"density_threshold": 0}, ValueError, "density_threshold=0 must be a positive number"),
        ({"n_neighbors": 0}, ValueError, "n_neighbors=0"),
        ({"use_rep": "X_missing"}, KeyError, "not in adata.obsm"),
        ({"freeze_decoder": True}, TypeError, "set by consensus itself"),
        ({"density_threshold": 1e-6}, ValueError, "Ask for fewer features"),
    ],
)
def test_bad_input_leaves_adata_unchanged(pbmc, kwargs, error, message):
    before = snapshot(pbmc)
    with pytest.raises(error, match=message):
        csk.tl.consensus(pbmc, **({"use_rep": "X_pca"} | SMALL | {"n_epochs": 2} | kwargs))
    assert_unchanged(pbmc, before)
