import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.linear_model import LinearRegression

from cellsae_kit.models import Autoencoder, fit_autoencoder

FAST = {"n_epochs": 5, "batch_size": 64, "progress": False}


def low_rank(n_cells=1500, n_dims=40, rank=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_cells, rank))
    X = z @ rng.normal(size=(rank, n_dims)) + 5 + 0.01 * rng.normal(size=(n_cells, n_dims))
    return X.astype(np.float32), z


def test_learns_a_low_dimensional_space():
    X, z = low_rank()
    result = fit_autoencoder(X, 3, hidden=(32,), n_epochs=60, batch_size=128, lr=3e-3, progress=False)
    assert result.metrics["fvu_validation"] < 0.05
    # the latent space holds the true coordinates (up to an invertible map), checked on held-out cells
    val = result.validation_indices
    train = np.setdiff1d(np.arange(len(X)), val)
    reg = LinearRegression().fit(result.latent[train], z[train])
    assert reg.score(result.latent[val], z[val]) > 0.95
    # the stored latent equals the model applied to the data
    np.testing.assert_allclose(result.model.transform(X), result.latent, rtol=1e-5, atol=1e-5)
    # the reported FVU is that of the standardised data, computed here by hand
    with torch.no_grad():
        x_hat = result.model(torch.tensor(X[val]))[0].numpy() * float(result.model.scale) + result.model.center.numpy()
    sse, sst = ((X[val] - x_hat) ** 2).sum(), ((X[val] - X[train].mean(0)) ** 2).sum()
    assert result.metrics["fvu_validation"] == pytest.approx(sse / sst, rel=1e-3)


def test_layers_and_defaults():
    ae = Autoencoder(50, 8, hidden=(32, 16))
    linear = [m for m in ae.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(50, 32), (32, 16), (16, 8)]
    assert isinstance(ae.encoder[-1], torch.nn.Linear)  # linear latent
    result = fit_autoencoder(np.random.default_rng(0).random((100, 20)), 300, **FAST)
    assert result.params["hidden"] == [600]  # max(256, 2 * n_latent)
    assert result.latent.shape == (100, 300) and result.latent.dtype == np.float32


def test_same_seed_same_result_and_sparse_input():
    X, _ = low_rank(n_cells=300)
    a = fit_autoencoder(X, 3, random_state=1, **FAST).latent
    b = fit_autoencoder(X, 3, random_state=1, **FAST).latent
    c = fit_autoencoder(X, 3, random_state=2, **FAST).latent
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    d = fit_autoencoder(sparse.csr_matrix(X), 3, random_state=1, **FAST).latent
    np.testing.assert_allclose(a, d, rtol=1e-4, atol=1e-4)


def test_early_stopping_keeps_the_best_epoch():
    X, _ = low_rank(n_cells=300)
    result = fit_autoencoder(X, 3, n_epochs=200, patience=3, lr=0.05, progress=False)
    history = result.history["fvu_validation"]
    assert result.metrics["n_epochs"] < 200
    assert result.metrics["best_epoch"] == int(np.argmin(history)) + 1
    assert result.metrics["fvu_validation"] == pytest.approx(min(history), rel=1e-5)


@pytest.mark.parametrize(
    ("X", "kwargs", "message"),
    [
        (np.full((10, 4), np.nan), {}, "NaN"),
        (np.ones((1, 4)), {}, "single cell"),
        (np.ones((10, 4)), {}, "identical"),
        (np.random.default_rng(0).random((10, 4)), {"n_latent": 0}, "n_latent"),
        (np.random.default_rng(0).random((10, 4)), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_autoencoder(X, **({"n_latent": 2} | kwargs), progress=False)
