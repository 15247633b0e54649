import gc
import math

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.optimize import minimize

from cellsae_kit.models import TrainingFVU, auto_lr, encode_blocks, fit, fvu, geometric_median
from cellsae_kit.models._train import _schedule, split
from tests.conftest import sparse_dictionary_data

FAST = {"n_features": 64, "k": 3, "n_epochs": 30, "batch_size": 256, "progress": False}


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu"])
def test_learns_a_sparse_dictionary(activation):
    X, atoms, _ = sparse_dictionary_data()
    result = fit(X, activation=activation, **(FAST | {"n_epochs": 150}))
    assert result.metrics["fvu_validation"] < 0.15
    assert result.codes.shape == (2000, 64)
    if activation != "relu":
        assert result.metrics["l0"] == pytest.approx(3, abs=1.0)
    # the decoder finds the true directions: every atom has a close feature
    w = result.model.W_dec.detach().numpy()
    cos = (atoms @ w.T) / np.linalg.norm(w, axis=1)
    assert np.median(cos.max(1)) > 0.9


def test_beats_pca_with_the_same_l0():
    X, _, _ = sparse_dictionary_data(n_cells=1500, n_dims=30, n_atoms=60)
    result = fit(X, n_features=128, k=3, n_epochs=200, batch_size=256, progress=False)
    tr, va = result.train_indices, result.validation_indices
    mean = X[tr].mean(0)
    _, _, vt = np.linalg.svd(X[tr] - mean, full_matrices=False)
    proj = (X[va] - mean) @ vt[:3].T @ vt[:3] + mean
    assert result.metrics["fvu_validation"] < 0.5 * fvu(X[va], proj)


def test_same_seed_identical_different_seed_different():
    X, _, _ = sparse_dictionary_data(n_cells=500)
    a = fit(X, random_state=3, **FAST).codes
    b = fit(X, random_state=3, **FAST).codes
    c = fit(X, random_state=4, **FAST).codes
    assert (a != b).nnz == 0
    assert (a != c).nnz > 0


def test_sparse_input_trains_like_dense():
    X, _, _ = sparse_dictionary_data(n_cells=400)
    X[X < 0.5] = 0
    dense = fit(X, **FAST)
    csr = fit(sparse.csr_matrix(X), **FAST)
    np.testing.assert_allclose(csr.codes.toarray(), dense.codes.toarray(), rtol=1e-4, atol=1e-5)


def test_decoder_rows_stay_unit_norm_and_history_is_complete():
    X, _, _ = sparse_dictionary_data(n_cells=300)
    result = fit(X, validation_fraction=0.1, **FAST)
    norms = result.model.W_dec.detach().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    n = result.metrics["n_epochs"]
    assert all(len(v) == n for v in result.history.values())
    assert result.history["epoch"] == list(range(1, n + 1))
    assert set(result.train_indices).isdisjoint(result.validation_indices)
    assert len(result.validation_indices) == 30


def _live_tensors() -> int:
    gc.collect()
    return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu"])
def test_training_steps_leave_no_tensors_behind(activation):
    # A gradient projection recorded under autograd once kept two decoder-sized tensors alive per step.
    X, _, _ = sparse_dictionary_data(n_cells=500)
    fit(X, activation=activation, **(FAST | {"n_features": 256, "n_epochs": 1}))
    before = _live_tensors()
    result = fit(X, activation=activation, **(FAST | {"n_features": 256, "n_epochs": 10, "dead_window": 256}))
    assert result.model.W_dec.grad is None or result.model.W_dec.grad.grad_fn is None
    del result
    assert _live_tensors() - before < 10  # 10 epochs of 2 steps each


def test_early_stopping_keeps_the_best_epoch():
    X, _, _ = sparse_dictionary_data(n_cells=300)
    result = fit(X, **(FAST | {"n_epochs": 400, "patience": 5}))
    assert result.metrics["n_epochs"] < 400
    best = result.metrics["best_epoch"]
    assert result.metrics["fvu_validation"] == pytest.approx(min(result.history["fvu_validation"]), rel=1e-4)
    assert result.history["fvu_validation"][best - 1] == min(result.history["fvu_validation"])


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu", "jumprelu"])
def test_final_errors_match_a_reconstruction_of_the_kept_model(activation):
    """Both final FVUs are measured once (validation: at the kept epoch; training: from the codes of every cell)."""
    X, _, _ = sparse_dictionary_data(n_cells=600)
    result = fit(X, activation=activation, **(FAST | {"n_epochs": 8}))
    with torch.no_grad():
        rec = result.model.reconstruct(torch.as_tensor(X)).numpy()
    tr, va = result.train_indices, result.validation_indices
    assert result.metrics["fvu_train"] == pytest.approx(fvu(X[tr], rec[tr]), rel=1e-4)
    assert result.metrics["fvu_validation"] == pytest.approx(fvu(X[va], rec[va]), rel=1e-4)
    codes = result.model.transform(X)
    assert abs(result.codes - codes).max() == 0


def test_encode_false_returns_no_codes_and_the_same_model():
    X, _, _ = sparse_dictionary_data(n_cells=400)
    full = fit(X, **(FAST | {"n_epochs": 4}))
    bare = fit(X, encode=False, **(FAST | {"n_epochs": 4}))
    assert bare.codes is None and "l0" not in bare.metrics
    torch.testing.assert_close(bare.model.W_dec, full.model.W_dec, rtol=0, atol=0)
    assert math.isnan(bare.metrics["fvu_train"])  # left to the caller's encoding pass (TrainingFVU)
    assert bare.metrics["fvu_validation"] == full.metrics["fvu_validation"]
    error = TrainingFVU(bare.model, bare.train_indices, len(X))
    for start, x, codes, _ in encode_blocks(bare.model, X, batch_size=64):
        error.add(start, x, codes)
    assert error.value() == pytest.approx(full.metrics["fvu_train"], rel=1e-5)


def test_training_fvu_counts_only_the_training_cells():
    X, _, _ = sparse_dictionary_data(n_cells=300)
    model = fit(X, **(FAST | {"n_epochs": 2})).model
    train = np.arange(0, 300, 3)
    error = TrainingFVU(model, train, len(X))
    for start, x, codes, _ in encode_blocks(model, X, batch_size=70):  # blocks that cut across the pattern
        error.add(start, x, codes)
    with torch.no_grad():
        rec = model.reconstruct(torch.as_tensor(X)).numpy()
    assert error.value() == pytest.approx(fvu(X[train], rec[train]), rel=1e-4)
    assert math.isnan(TrainingFVU(model, train, len(X)).value())  # nothing counted yet
    with pytest.raises(ValueError, match="train_indices must be rows of the 10 cells"):
        TrainingFVU(model, train, 10)


def test_small_fits_run_on_one_thread_and_give_the_threads_back(monkeypatch):
    X, _, _ = sparse_dictionary_data(n_cells=300)
    seen = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam,
        "step",
        lambda self, *a, **kw: (seen.append(torch.get_num_threads()), original(self, *a, **kw))[1],
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit(X, **(FAST | {"n_epochs": 2}))
        assert set(seen) == {1} and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="k=64"):
            fit(X, n_features=64, k=64, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_no_validation_split():
    X, _, _ = sparse_dictionary_data(n_cells=200)
    result = fit(X, validation_fraction=0, **FAST)
    assert len(result.validation_indices) == 0 and np.isnan(result.metrics["fvu_validation"])


def test_features_stay_alive_on_anisotropic_data():
    # PCA-like coordinates: variance falls by 100x along the axes; random init would leave features dead
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(800, 20)) * np.logspace(1, -1, 20)).astype(np.float32)
    options = {"n_features": 128, "k": 4, "n_epochs": 100, "activation": "topk", "batch_size": 1024, "progress": False}
    data, rand = (fit(X, init=i, **options).metrics for i in ("data", "random"))
    assert rand["dead_fraction"] > 0.1
    assert data["dead_fraction"] < 0.05
    assert data["fvu_validation"] < rand["fvu_validation"]


def test_geometric_median_matches_numerical_optimum():
    x = np.random.default_rng(0).lognormal(size=(60, 3))
    ref = minimize(
        lambda m: np.linalg.norm(x - m, axis=1).sum(),
        x.mean(0),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 10_000},
    ).x
    np.testing.assert_allclose(geometric_median(x), ref, atol=1e-4)


@pytest.mark.parametrize("center", ["mean", "median", "none"])
def test_centre_initialises_decoder_bias(center):
    X, _, _ = sparse_dictionary_data(n_cells=300)
    X = X + 5
    model = fit(X, center=center, validation_fraction=0.1, **(FAST | {"n_epochs": 1, "lr": 1e-12})).model
    centre = model.b_dec.detach().numpy() / float(model.input_scale)
    expected = {"mean": X[np.sort(split(300, 0.1, np.random.default_rng(0))[0])].mean(0), "none": np.zeros(20)}
    if center in expected:
        np.testing.assert_allclose(centre, expected[center], atol=1e-3)
    else:
        assert np.abs(centre - 5).max() < 2


def test_learning_rate_heuristic_and_schedule():
    assert auto_lr(256) == pytest.approx(4e-3)
    assert auto_lr(1024) == pytest.approx(2e-3)  # larger dictionaries learn slower
    factor = _schedule(100, warmup_fraction=0.1, decay_fraction=0.2)
    assert factor(0) == pytest.approx(0.1)
    assert factor(50) == 1.0
    assert factor(90) == pytest.approx(0.5)
    assert factor(99) == pytest.approx(0.05)


def test_bfloat16_on_cpu_warns_and_falls_back():
    X, _, _ = sparse_dictionary_data(n_cells=100)
    with pytest.warns(UserWarning, match="bfloat16"):
        result = fit(X, precision="bfloat16", device="cpu", **(FAST | {"n_epochs": 1}))
    assert result.params["precision"] == "float32"


@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), ValueError, "NaN or infinite values in 1 of 3 cells"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), ValueError, "NaN or infinite"),
        (np.zeros((0, 4)), ValueError, "zero cells"),
        (np.ones((1, 4)), ValueError, "single cell"),
        (np.zeros((5, 0)), ValueError, "zero dimensions"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "not real-valued numeric"),
        (np.ones(4), ValueError, "2-D"),
        ([[1.0, 2.0]], TypeError, "numpy array"),
        (np.ones((6, 3)), ValueError, "same input vector"),
    ],
)
def test_bad_data(X, error, message):
    with pytest.raises(error, match=message):
        fit(X, n_features=8, k=2, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 8}, "smaller than n_features"),
        ({"n_features": 0}, "at least one feature"),
        ({"center": "mode"}, "center"),
        ({"init": "zeros"}, "init"),
        ({"precision": "fp8"}, "precision"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_epochs": 0}, "n_epochs"),
        ({"device": "cuda:7"}, "CUDA"),
    ],
)
def test_bad_options(kwargs, message):
    X, _, _ = sparse_dictionary_data(n_cells=50)
    with pytest.raises(ValueError, match=message):
        fit(X, **({"n_features": 8, "k": 2, "progress": False} | kwargs))
