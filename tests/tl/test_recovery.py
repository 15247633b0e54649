import itertools

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit.tl._recovery import completeness_scores, correlations, recovery_scores, redundant_pairs
from tests.conftest import assert_unchanged, snapshot


def sparse_truth(n_cells=2000, n_vars=6, seed=0):
    """Poisson activities switched on in 30% of cells, like the simulated programs."""
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.uniform(1, 10, n_vars), size=(n_cells, n_vars)) * (rng.random((n_cells, n_vars)) < 0.3)


def abs_corr(a, b):
    """|Pearson r| between columns by numpy, 0 for constant columns."""
    out = np.zeros((a.shape[1], b.shape[1]))
    for i, j in itertools.product(range(a.shape[1]), range(b.shape[1])):
        if np.ptp(a[:, i]) > 0:
            out[i, j] = abs(np.corrcoef(a[:, i], b[:, j])[0, 1])
    return out


def test_correlations_match_numpy_dense_and_sparse():
    rng = np.random.default_rng(1)
    codes = rng.exponential(size=(300, 7)) * (rng.random((300, 7)) < 0.2)
    codes[:, 3] = 0  # a dead feature
    truth = rng.normal(size=(300, 4)) + codes[:, :4]
    with np.errstate(invalid="ignore"):  # numpy gives NaN for the dead feature; r = 0 by our definition
        expected = np.corrcoef(codes.T, truth.T)[:7, 7:]
    expected[3] = 0
    np.testing.assert_allclose(correlations(codes, truth), expected, atol=1e-12)
    np.testing.assert_allclose(correlations(sparse.csr_matrix(codes), truth), expected, atol=1e-12)


def test_permuted_and_scaled_truth_is_recovered_exactly():
    truth = sparse_truth()
    perm = np.array([4, 2, 0, 5, 1, 3])
    scale = np.array([2.0, -0.5, 3.0, 1.0, 10.0, -1.0])
    features = np.hstack([truth[:, perm] * scale + 7.0, np.zeros((len(truth), 2))])  # plus two dead features
    result = recovery_scores(sparse.csr_matrix(features), truth)
    var = result["variables"]
    np.testing.assert_allclose(var["best_abs_r"], 1.0)
    np.testing.assert_array_equal(var["best_feature"], np.argsort(perm))
    np.testing.assert_array_equal(var["matched_feature"], np.argsort(perm))
    np.testing.assert_allclose(var["best_r"], np.sign(scale)[np.argsort(perm)])
    summary = result["summary"]
    assert summary["matched_score"] == pytest.approx(1.0)
    assert summary["median_best_abs_r"] == pytest.approx(1.0)
    assert summary["n_recovered"] == 6 and summary["n_features_above"] == 6
    assert summary["n_active_features"] == 6 and summary["n_features"] == 8
    assert summary["n_redundant_pairs"] == 0


def test_independent_noise_recovers_nothing():
    truth = sparse_truth(n_cells=4000)
    noise = np.random.default_rng(5).exponential(size=(4000, 20))
    result = recovery_scores(noise, truth)
    assert result["summary"]["median_best_abs_r"] < 0.08  # max of 20 |r| with sd 1/sqrt(4000)
    assert result["summary"]["matched_score"] < 0.05
    assert result["summary"]["n_recovered"] == 0


def test_matched_score_is_the_optimal_one_to_one_assignment():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(500, 4))
    features = truth @ rng.normal(size=(4, 5)) + 0.5 * rng.normal(size=(500, 5))
    result = recovery_scores(features, truth)
    a = abs_corr(features, truth)  # features x variables
    best = max(
        sum(a[p[v], v] for v in range(4)) for p in itertools.permutations(range(5), 4)
    )  # brute force over injective maps variable -> feature
    assert result["summary"]["matched_score"] == pytest.approx(best / 4)
    np.testing.assert_allclose(result["variables"]["best_abs_r"], a.max(0))
    assert len(set(result["variables"]["matched_feature"])) == 4


def test_one_feature_for_two_variables_counts_once_when_matched():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(1000, 2))
    mixed = (truth[:, 0] + truth[:, 1])[:, None]  # r = 0.71 with both
    result = recovery_scores(mixed, truth)
    var = result["variables"]
    assert var["best_feature"].tolist() == [0, 0]
    assert var["matched_feature"].tolist().count(-1) == 1  # fewer features than variables: one goes unmatched
    assert result["summary"]["matched_score"] == pytest.approx(var["matched_abs_r"].max() / 2)
    assert var["best_abs_r"].min() == pytest.approx(np.sqrt(0.5), abs=0.05)


def test_redundant_pairs_match_brute_force():
    rng = np.random.default_rng(4)
    base = rng.exponential(size=(400, 5)) * (rng.random((400, 5)) < 0.3)
    codes = np.hstack([base, 2 * base[:, [1]] + 0.01 * base[:, [0]], base[:, [3]] * 0.5, np.zeros((400, 1))])
    r = np.corrcoef(codes[:, :7].T)
    expected = [(i, j) for i in range(7) for j in range(i + 1, 7) if r[i, j] > 0.95]
    pairs = redundant_pairs(sparse.csr_matrix(codes))
    assert list(zip(pairs["feature_a"], pairs["feature_b"], strict=True)) == expected == [(1, 5), (3, 6)]
    np.testing.assert_allclose(pairs["r"], [r[i, j] for i, j in expected])


def test_completeness_linear_case_and_noise():
    rng = np.random.default_rng(0)
    rep = rng.normal(size=(1000, 10))
    truth = np.column_stack([rep @ rng.normal(size=10), rep[:, 0] - 2 * rep[:, 3], rng.normal(size=1000)])
    r2 = completeness_scores(rep, pd.DataFrame(truth, columns=["a", "b", "noise"]), random_state=1)
    assert r2.index.tolist() == ["a", "b", "noise"]
    np.testing.assert_allclose(r2[["a", "b"]], 1.0, atol=1e-10)
    assert abs(r2["noise"]) < 0.05
    # an independent reference: least squares with an intercept on the same split
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(1000), test_size=0.2, random_state=1)
    design = np.column_stack([np.ones(1000), rep])
    coef = np.linalg.lstsq(design[train], truth[train, 2], rcond=None)[0]
    residual = truth[test, 2] - design[test] @ coef
    expected = 1 - (residual**2).sum() / ((truth[test, 2] - truth[test, 2].mean()) ** 2).sum()
    assert r2["noise"] == pytest.approx(expected)


@pytest.fixture
def scored():
    truth = sparse_truth(n_cells=600, n_vars=5)
    adata = ad.AnnData(np.zeros((600, 3), dtype=np.float32))
    adata.obsm["true_programs"] = truth.astype(np.float32)
    adata.obsm["X_sae"] = sparse.csr_matrix(truth[:, ::-1] * 3.0, dtype=np.float32)
    adata.obsm["X_rep"] = np.hstack([truth, np.random.default_rng(0).normal(size=(600, 2))]).astype(np.float32)
    return adata


def test_recovery_wrapper_stores_and_finds_keys(scored):
    result = csk.tl.recovery(scored)  # key "sae" -> obsm["X_sae"]
    assert result["summary"]["matched_score"] == pytest.approx(1.0)
    stored = scored.uns["recovery"]["sae"]
    pd.testing.assert_frame_equal(stored["variables"], result["variables"])
    assert stored["summary"] == result["summary"]
    direct = csk.tl.recovery(scored, "X_rep", key_added="scores")  # an obsm key directly
    assert direct["variables"]["best_feature"].tolist() == [0, 1, 2, 3, 4]
    assert "X_rep" in scored.uns["scores"] and "recovery" in scored.uns
    before = snapshot(scored)
    csk.tl.recovery(scored, "rep", inplace=False)
    assert_unchanged(scored, before)


def test_completeness_wrapper(scored):
    table = csk.tl.completeness(scored, "X_rep")
    np.testing.assert_allclose(table["r2"], 1.0, atol=1e-6)
    pd.testing.assert_frame_equal(scored.uns["completeness"]["X_rep"], table)


def test_on_a_simulation_with_an_sae():
    adata = csk.datasets.simulate(800, 8, 5, n_genes=120)
    csk.tl.embed(adata, "pca", 30)
    assert csk.tl.completeness(adata, "X_pca")["r2"].median() > 0.8
    csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    summary = csk.tl.recovery(adata)["summary"]
    # the wrapper reads the stored activations and truth: numpy's correlations give the same median best |r|
    codes, truth = adata.obsm["X_sae"].toarray(), adata.obsm["true_programs"]
    r = np.nan_to_num(np.corrcoef(codes.T, truth.T)[:32, 32:])
    assert summary["median_best_abs_r"] == pytest.approx(np.median(np.abs(r).max(axis=0)), abs=1e-6)
    assert summary["median_best_abs_r"] > 0.5 and summary["n_features"] == 32
    assert summary["mean_l0"] == pytest.approx(4, abs=0.5)


@pytest.mark.parametrize("func", ["recovery", "completeness"])
@pytest.mark.parametrize(
    ("truth", "error", "message"),
    [
        (np.ones((599, 5)), ValueError, "599 cells"),
        ("constant", ValueError, "constant across cells \\(2\\)"),
        ("nan", ValueError, "NaN"),
        ("missing", KeyError, "not in adata.obsm"),
        (np.array(["a"] * 600, dtype=object), TypeError, "real numbers"),
    ],
)
def test_bad_truth(scored, func, truth, error, message):
    if isinstance(truth, str) and truth != "missing":
        values = scored.obsm["true_programs"].copy()
        values[:, 2] = 1.0 if truth == "constant" else values[:, 2]
        values[7, 1] = np.nan if truth == "nan" else values[7, 1]
        scored.obsm["bad"] = values
        truth = "bad"
    before = snapshot(scored)
    rep = "sae" if func == "recovery" else "X_rep"
    with pytest.raises(error, match=message):
        getattr(csk.tl, func)(scored, rep, truth=truth)
    assert_unchanged(scored, before)


@pytest.mark.parametrize(
    ("func", "args", "kwargs", "error", "message"),
    [
        ("recovery", ("nope",), {}, KeyError, "neither adata.obsm"),
        ("recovery", ("sae",), {"threshold": 1.5}, ValueError, "threshold"),
        ("recovery", ("nan",), {}, ValueError, "NaN"),
        ("completeness", ("X_nope",), {}, KeyError, "not in adata.obsm"),
        ("completeness", ("X_rep",), {"test_size": 0}, ValueError, "test_size"),
        ("completeness", ("X_nan",), {}, ValueError, "NaN"),
    ],
)
def test_bad_representation(scored, func, args, kwargs, error, message):
    scored.obsm["X_nan"] = np.where(np.eye(600, 4) > 0, np.nan, 1.0).astype(np.float32)
    before = snapshot(scored)
    with pytest.raises(error, match=message):
        getattr(csk.tl, func)(scored, *args, **kwargs)
    assert_unchanged(scored, before)
