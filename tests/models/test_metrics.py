import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score
from sklearn.metrics.pairwise import cosine_similarity

from cellsae_kit.models import activation_stats, fvu, max_decoder_cosine
from cellsae_kit.models._metrics import RunningFVU


def test_fvu_matches_sklearn_variance_weighted_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 7)) * np.arange(1, 8)
    x_hat = x + rng.normal(size=x.shape)
    assert fvu(x, x_hat) == pytest.approx(1 - r2_score(x, x_hat, multioutput="variance_weighted"))


def test_fvu_edge_cases():
    x = np.ones((5, 3))
    assert np.isnan(fvu(x, x))
    with pytest.raises(ValueError, match="shape"):
        fvu(np.zeros((3, 2)), np.zeros((2, 3)))


def test_streaming_fvu_matches_array_fvu():
    rng = np.random.default_rng(1)
    x, x_hat = rng.normal(size=(101, 5)) + 3, rng.normal(size=(101, 5))
    acc = RunningFVU()
    for start in range(0, 101, 17):
        acc.add(torch.tensor(x[start : start + 17]), torch.tensor(x_hat[start : start + 17]))
    assert acc.value() == pytest.approx(fvu(x, x_hat), rel=1e-10)


def test_activation_stats_by_hand():
    codes = np.zeros((20, 4))
    codes[:, 0] = 1.0  # dense: active in every cell
    codes[0, 1] = 2.0  # active in 5% of cells: neither dense nor dead
    codes[:3, 2] = 0.5  # 15%: dense
    stats = activation_stats(codes)
    assert stats["l0"] == pytest.approx((20 + 1 + 3) / 20)
    assert stats["dead_fraction"] == pytest.approx(0.25)
    assert stats["dense_fraction"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no cells"):
        activation_stats(np.zeros((0, 3)))


def test_max_decoder_cosine_matches_sklearn():
    w = np.random.default_rng(2).normal(size=(50, 8))
    ref = cosine_similarity(w)
    np.fill_diagonal(ref, -1)
    assert max_decoder_cosine(w, chunk_size=7) == pytest.approx(ref.max(), abs=1e-6)
    assert np.isnan(max_decoder_cosine(w[:1]))
