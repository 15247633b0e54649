import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

import cellsae_kit as csk
from cellsae_kit.models import fit
from cellsae_kit.tl._compare import activation_correlations, compare_runs, match_activations, match_features
from tests.conftest import assert_unchanged, snapshot

SMALL = {"n_features": 16, "k": 4, "n_epochs": 5, "progress": False}


def _hand_match(W_a, W_b):
    """Reference matching: cosines from scipy's cosine distance, assigned by scipy's Hungarian solver."""
    cos = 1 - cdist(W_a, W_b, "cosine")
    rows, cols = linear_sum_assignment(-cos)
    return rows, cols, cos[rows, cols]


def test_match_features_recovers_a_noisy_permutation():
    rng = np.random.default_rng(0)
    W_a = rng.normal(size=(64, 30))
    perm = rng.permutation(64)
    # rows of b: a's rows in another order, rescaled (the norm carries no meaning) and slightly perturbed
    W_b = W_a[perm] * rng.uniform(0.5, 3, size=(64, 1)) + 0.01 * rng.normal(size=(64, 30))
    match = match_features(W_a, W_b)
    np.testing.assert_array_equal(match.a, np.arange(64))
    np.testing.assert_array_equal(perm[match.b], np.arange(64))  # every pair recovered
    assert match.score.min() > 0.99
    _, cols, cos = _hand_match(W_a, W_b)
    np.testing.assert_array_equal(match.b, cols)
    np.testing.assert_allclose(match.score, cos)


def test_independent_dictionaries_and_flipped_signs_share_nothing():
    rng = np.random.default_rng(1)
    W_a, W_b = rng.normal(size=(64, 200)), rng.normal(size=(64, 200))
    match = match_features(W_a, W_b)
    assert match.score.max() < 0.4  # random directions in 200 dimensions are nearly orthogonal
    # SAE activations are never negative, so a feature and its negative are different features
    assert match_features(W_a, -W_a).score.max() < 0.4
    pairs, _ = compare_runs([W_a, W_b])
    assert pairs.loc[0, "shared_at_0.7"] == pairs.loc[0, "shared_at_0.9"] == 0


def test_match_features_needs_the_same_input_dimension():
    with pytest.raises(ValueError, match="same input dimensions"):
        match_features(np.ones((3, 4)), np.ones((3, 5)))


def test_activation_correlations_match_numpy():
    rng = np.random.default_rng(2)
    a = rng.exponential(size=(300, 6)) * (rng.random((300, 6)) < 0.3)
    b = np.column_stack([a[:, 2] + 0.1 * rng.random(300), rng.exponential(size=(300, 3)), np.zeros(300)])
    a[:, 5] = 0  # a dead feature
    r = activation_correlations(sparse.csr_matrix(a), sparse.csr_matrix(b))
    reference = np.corrcoef(a[:, :5].T, b[:, :4].T)[:5, 5:]
    np.testing.assert_allclose(r[:5, :4], reference, atol=1e-10)
    assert (r[5] == 0).all() and (r[:, 4] == 0).all()
    np.testing.assert_allclose(activation_correlations(a, b), r, atol=1e-12)  # dense input, same answer
    assert match_activations(a, b).b[list(match_activations(a, b).a).index(2)] == 0
    with pytest.raises(ValueError, match="same cells"):
        activation_correlations(a, b[:10])


def test_compare_runs_against_hand_computation():
    rng = np.random.default_rng(3)
    decoders = [rng.normal(size=(12, 8)) for _ in range(3)]
    decoders[1][:6] = decoders[0][:6] + 0.05 * rng.normal(size=(6, 8))  # half of run 0 comes back in run 1
    codes = [np.abs(rng.normal(size=(50, 12))) * (rng.random((50, 12)) < 0.5) for _ in range(3)]
    pairs, features = compare_runs(decoders, codes, thresholds=(0.7, 0.9))
    assert pairs[["run_a", "run_b"]].values.tolist() == [["0", "1"], ["0", "2"], ["1", "2"]]
    ref_cosines = []
    for row, (i, j) in zip((r for _, r in pairs.iterrows()), [(0, 1), (0, 2), (1, 2)], strict=True):
        rows, cols, cos = _hand_match(decoders[i], decoders[j])
        assert row["shared_at_0.9"] == pytest.approx(np.mean(cos >= 0.9))
        assert row.mean_cosine == pytest.approx(cos.mean())
        corr = np.corrcoef(codes[i].T, codes[j].T)[:12, 12:]
        assert row.mean_activation_r == pytest.approx(corr[rows, cols].mean())
        r_rows, r_cols = linear_sum_assignment(-corr)
        assert row["activation_shared_at_0.7"] == pytest.approx(np.mean(corr[r_rows, r_cols] >= 0.7))
        if i == 0:
            ref_cosines.append(cos)
    assert pairs.loc[0, "shared_at_0.9"] >= 0.5
    np.testing.assert_allclose(features["stability"], np.mean(ref_cosines, axis=0))
    assert list(features.index) == [str(f) for f in range(12)]


def test_compare_runs_of_different_sizes():
    rng = np.random.default_rng(4)
    big = rng.normal(size=(10, 6))
    pairs, features = compare_runs([big, big[:4]])
    assert pairs.loc[0, "shared_at_0.9"] == 1.0  # every feature of the smaller run is found
    np.testing.assert_allclose(features["stability"], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0])


@pytest.fixture
def three_runs(pbmc):
    for seed, key in enumerate(["sae", "sae_b", "sae_c"]):
        csk.tl.sae(pbmc, "X_pca", key_added=key, random_state=seed, **SMALL)
    return pbmc


def test_stability_on_stored_runs(three_runs, tmp_path):
    adata = three_runs
    csk.tl.feature_stats(adata, groupby="bulk_labels")
    csk.tl.stability(adata, ["sae_b", "sae_c"])
    result = adata.uns["sae"]["stability"]
    assert list(result["runs"]) == ["sae", "sae_b", "sae_c"]
    decoders = {k: adata.uns[k]["weights"]["W_dec"] for k in ["sae", "sae_b", "sae_c"]}
    codes = {k: adata.obsm[f"X_{k}"].toarray() for k in decoders}
    shared, per_feature, agreement = [], [], []
    for a, b in [("sae", "sae_b"), ("sae", "sae_c"), ("sae_b", "sae_c")]:
        rows, cols, cos = _hand_match(decoders[a], decoders[b])
        shared.append(np.mean(cos >= 0.9))
        if a == "sae":
            per_feature.append(cos)
            corr = pd.DataFrame(codes[a]).corrwith(pd.DataFrame(codes[b][:, cols]), axis=0).fillna(0).to_numpy()
            agreement.append(corr)
    assert result["shared_at_0.9"] == pytest.approx(np.mean(shared))
    table = adata.uns["sae"]["features"]
    assert {"frequency", "locality", "stability", "stability_activation"} <= set(table.columns)
    np.testing.assert_allclose(table["stability"], np.mean(per_feature, axis=0), rtol=1e-6)
    np.testing.assert_allclose(table["stability_activation"], np.mean(agreement, axis=0), atol=1e-6)
    assert len(result["pairs"]) == 3 and 0 <= result["shared_at_0.9"] <= result["shared_at_0.7"] <= 1
    # everything survives a round trip through h5ad, and feature_stats keeps the columns
    adata.write_h5ad(tmp_path / "s.h5ad")
    back = ad.read_h5ad(tmp_path / "s.h5ad")
    assert back.uns["sae"]["stability"]["shared_at_0.9"] == pytest.approx(result["shared_at_0.9"])
    pd.testing.assert_frame_equal(back.uns["sae"]["stability"]["pairs"], result["pairs"])
    csk.tl.feature_stats(back)
    np.testing.assert_allclose(back.uns["sae"]["features"]["stability"], table["stability"])


def test_stability_trains_runs_with_the_stored_parameters(pbmc):
    # the stored SAE has seed 1, so the one new run has seed 0: exactly tl.sae with random_state=0 on the CPU
    csk.tl.sae(pbmc, "X_pca", random_state=1, device="cpu", **SMALL)
    csk.tl.sae(pbmc, "X_pca", random_state=0, key_added="seed0", device="cpu", **SMALL)
    csk.tl.stability(pbmc, n_seeds=2, progress=False, device="cpu")
    trained = pbmc.uns["sae"]["stability"]
    assert list(trained["runs"]) == ["sae", "seed 0"] and list(trained["seeds"]) == [0]
    assert "features" in pbmc.uns["sae"] and list(pbmc.uns["sae"]["features"].columns) == [
        "stability",
        "stability_activation",
    ]
    stored = csk.tl.stability(pbmc, ["seed0"], copy=True).uns["sae"]["stability"]
    for name in ("shared_at_0.9", "shared_at_0.7", "mean_cosine", "mean_activation_r"):
        assert trained[name] == pytest.approx(stored[name], abs=1e-6)


def test_stability_without_activations(three_runs):
    out = csk.tl.stability(three_runs, "sae_b", activations=False, thresholds=0.5, copy=True)
    assert "stability_activation" not in out.uns["sae"]["features"]
    assert "shared_at_0.5" in out.uns["sae"]["stability"] and "mean_activation_r" not in out.uns["sae"]["stability"]
    assert "stability" not in three_runs.uns["sae"]  # copy=True left the original alone


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"keys": ["sae_b", "umap"]}, ValueError, r"'sae' \(X_pca, 50 dimensions\) and 'umap' \(X_umap, 2 dim"),
        ({"keys": ["missing"]}, KeyError, "no SAE under 'missing'"),
        ({"key": "missing"}, KeyError, "SAEs found: 'sae', 'sae_b'"),
        ({"keys": ["sae"]}, ValueError, "at least one other run"),
        ({"keys": ["sae_b", "sae_b"]}, ValueError, "twice"),
        ({"n_seeds": 1}, ValueError, "n_seeds=1 must be an integer of at least 2"),
        ({"thresholds": (0.9, 2)}, ValueError, "between -1 and 1"),
        ({"thresholds": (True, 0.9)}, ValueError, "between -1 and 1"),
        ({"keys": ["stale"]}, ValueError, "not this SAE's"),
    ],
)
def test_bad_input_leaves_adata_unchanged(three_runs, kwargs, error, message):
    csk.tl.sae(three_runs, "X_umap", key_added="umap", n_features=8, k=1, n_epochs=2, progress=False)
    # activations left over from another SAE: 8 features where the SAE has 16
    csk.tl.sae(three_runs, "X_pca", key_added="stale", **SMALL)
    three_runs.obsm["X_stale"] = three_runs.obsm["X_umap"]
    before = snapshot(three_runs)
    with pytest.raises(error, match=message):
        csk.tl.stability(three_runs, **({"progress": False} | kwargs))
    assert_unchanged(three_runs, before)
    assert "stability" not in three_runs.uns["sae"] and "features" not in three_runs.uns["sae"]


def test_stability_sweep_against_direct_runs(pbmc):
    options = {"k": 4, "n_epochs": 5}
    csk.tl.stability_sweep(pbmc, "X_pca", [16, 8], n_seeds=2, progress=False, device="cpu", **options)
    table = pbmc.uns["stability_sweep"]["sweep"]
    assert table["n_features"].tolist() == [8, 16]
    for size, row in zip([8, 16], (r for _, r in table.iterrows()), strict=True):
        runs = [
            fit(pbmc.obsm["X_pca"], n_features=size, random_state=s, device="cpu", progress=False, **options)
            for s in (0, 1)
        ]
        _, _, cos = _hand_match(*(r.model.W_dec.detach().numpy() for r in runs))
        assert row["shared_at_0.7"] == pytest.approx(np.mean(cos >= 0.7))
        assert row.mean_cosine == pytest.approx(cos.mean(), rel=1e-5)
        assert row.fvu_validation == pytest.approx(np.mean([r.metrics["fvu_validation"] for r in runs]))
    assert pbmc.uns["stability_sweep"]["params"]["k"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": [8, 8]}, "twice"),
        ({"n_features": [0, 8]}, "positive integers"),
        ({"n_seeds": 1}, "at least 2"),
        ({"use_rep": "X_missing"}, "not in adata.obsm"),
        ({"l1": 0.1}, "l1, which tl.sae does not take"),
    ],
)
def test_stability_sweep_bad_input(pbmc, kwargs, message):
    before = snapshot(pbmc)
    with pytest.raises((ValueError, KeyError, TypeError), match=message):
        csk.tl.stability_sweep(pbmc, **({"use_rep": "X_pca", "progress": False, "n_epochs": 2} | kwargs))
    assert_unchanged(pbmc, before)


def test_stability_lands_on_each_feature_of_a_sorted_table(three_runs):
    adata = three_runs
    csk.tl.feature_stats(adata)
    adata.uns["sae"]["features"] = adata.uns["sae"]["features"].sort_values("frequency")
    csk.tl.stability(adata, ["sae_b", "sae_c"], activations=False)
    decoders = [adata.uns[k]["weights"]["W_dec"] for k in ["sae", "sae_b", "sae_c"]]
    _, expected = compare_runs(decoders)
    table = adata.uns["sae"]["features"]
    assert list(table.index) != sorted(table.index, key=int)  # still in the user's order
    np.testing.assert_allclose(table["stability"], expected["stability"].loc[table.index.astype(str)])


def test_a_consensus_sae_is_not_retrained_with_other_seeds(pbmc):
    csk.tl.consensus(pbmc, "X_pca", n_runs=2, density_threshold=2.0, device="cpu", **SMALL)
    before = snapshot(pbmc)
    with pytest.raises(ValueError, match="consensus SAE"):
        csk.tl.stability(pbmc, key="consensus", n_seeds=2, progress=False)
    assert_unchanged(pbmc, before)


def test_stability_sweep_ignores_loadings(pbmc):
    csk.tl.stability_sweep(pbmc, "X_pca", [8], n_seeds=2, k=2, n_epochs=2, loadings="PCs", progress=False)
    assert pbmc.uns["stability_sweep"]["sweep"]["n_features"].tolist() == [8]


def test_match_features_is_the_best_one_to_one_assignment():
    # against a brute force over every permutation, on a case small enough to enumerate
    from itertools import permutations

    rng = np.random.default_rng(5)
    W_a, W_b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    cos = 1 - cdist(W_a, W_b, "cosine")
    best = max(permutations(range(6)), key=lambda p: cos[np.arange(6), list(p)].sum())
    match = match_features(W_a, W_b)
    assert match.b.tolist() == list(best)
    np.testing.assert_allclose(match.score, cos[np.arange(6), list(best)])
