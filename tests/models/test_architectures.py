"""Matryoshka and JumpReLU SAEs: the loss, the threshold gradient, save/load, fits and bad input."""

import numpy as np
import pytest
import torch

from cellsae_kit.models import FitConfig, SparseAutoencoder, auto_prefixes, fit, load, save
from cellsae_kit.models._sae import Codes, prefix_sizes
from cellsae_kit.models._train import l0_penalty, prefix_loss


def tiny_matryoshka() -> SparseAutoencoder:
    """Four features in two dimensions, prefixes (1, 2, 4), explicit decoder rows and bias."""
    model = SparseAutoencoder(2, 4, activation="matryoshka", k=1, prefixes=(1, 2))
    with torch.no_grad():
        model.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]))
        model.b_dec.copy_(torch.tensor([0.5, -0.5]))
    return model


def test_matryoshka_loss_equals_a_hand_computation():
    model = tiny_matryoshka()
    assert model.prefixes == (1, 2, 4)
    # cell 0: features 0 (value 2) and 3 (value 1); cell 1: feature 1 (value 3) and 2 (value 0.5)
    codes = Codes(torch.tensor([2.0, 1.0, 3.0, 0.5]), torch.tensor([0, 3, 1, 2]), torch.tensor([0, 0, 1, 1]))
    target = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    recs = model.decode_prefixes(codes, 2)
    # prefix 1 (feature 0): cell 0 = b + 2*[1,0] = [2.5,-0.5]; cell 1 = b = [0.5,-0.5]
    # prefix 2 (+feature 1): cell 0 unchanged; cell 1 = b + 3*[0,1] = [0.5, 2.5]
    # prefix 4 (+2, 3): cell 0 = [2.5,-0.5] + [2,-1] = [4.5,-1.5]; cell 1 = [0.5,2.5] + 0.5*[1,1] = [1.0, 3.0]
    expected = [
        [[2.5, -0.5], [0.5, -0.5]],
        [[2.5, -0.5], [0.5, 2.5]],
        [[4.5, -1.5], [1.0, 3.0]],
    ]
    for rec, want in zip(recs, expected, strict=True):
        torch.testing.assert_close(rec, torch.tensor(want))
    # squared errors per cell, divided by the 2 inputs, averaged over cells, then over the 3 prefixes
    errors = [
        ((0.5**2 + 0.5**2) + (0.5**2 + 2.5**2)) / 2 / 2,
        ((0.5**2 + 0.5**2) + (0.5**2 + 0.5**2)) / 2 / 2,
        ((1.5**2 + 1.5**2) + (0.0**2 + 1.0**2)) / 2 / 2,
    ]
    torch.testing.assert_close(prefix_loss(target, recs), torch.tensor(sum(errors) / 3))
    # the last prefix is the whole model's reconstruction, also from dense codes
    dense = torch.zeros(2, 4).index_put_((codes.rows, codes.indices), codes.values)
    torch.testing.assert_close(model.decode_prefixes(Codes(dense, None), 2)[-1], model.decode(codes, 2))


def test_matryoshka_gradients_weight_the_first_features_by_every_prefix():
    # the first feature is in all three reconstructions, the last in one: its decoder gradient is the sum of three
    model = tiny_matryoshka()
    codes = Codes(torch.tensor([1.0, 1.0]), torch.tensor([0, 3]), torch.tensor([0, 0]))
    target = torch.zeros(1, 2)
    prefix_loss(target, model.decode_prefixes(codes, 1)).backward()
    b = model.b_dec.detach()
    w = model.W_dec.detach()
    by_hand = 2 * ((b + w[0]) * 3 + w[3]) / 2 / 3  # d/dW_dec[0] of the mean over prefixes
    torch.testing.assert_close(model.W_dec.grad[0], by_hand)
    torch.testing.assert_close(model.W_dec.grad[3], 2 * (b + w[0] + w[3]) / 2 / 3)


def smoothed_step(pre: torch.Tensor, theta: torch.Tensor, eps: float) -> torch.Tensor:
    """The Heaviside step convolved with the rectangle kernel of width eps: a ramp of slope 1/eps around theta."""
    return ((pre - theta) / eps + 0.5).clamp(0, 1)


def test_jumprelu_threshold_gradient_matches_finite_differences_of_the_smoothed_expression():
    torch.manual_seed(0)
    eps = 0.2
    model = SparseAutoencoder(3, 5, activation="jumprelu", k=2, bandwidth=eps)
    theta0 = torch.tensor([0.3, 0.5, 0.1, 0.8, 0.4], dtype=torch.float64)
    pre = torch.tensor(
        [[0.35, 0.2, 0.15, 0.85, 1.0], [0.25, 0.55, -0.3, 0.72, 0.42], [0.9, 0.45, 0.05, 0.0, 0.33]],
        dtype=torch.float64,
    )
    upstream = torch.tensor([[1.0, -2.0, 0.5, 1.5, 1.0], [0.3, 1.0, 2.0, -1.0, 0.7], [1.0, 1.0, 1.0, 1.0, -0.4]])
    upstream = upstream.double()
    with torch.no_grad():
        model.threshold.data = theta0.clone()
    model.double()
    out = model.select(pre).values
    (out * upstream).sum().backward()
    got_jump = model.threshold.grad.clone()
    model.threshold.grad = None
    model.l0(pre).backward()
    got_l0 = model.threshold.grad.clone()

    h = 1e-6
    jump_fd, l0_fd = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for j in range(5):
        step = torch.zeros(5, dtype=torch.float64)
        step[j] = h
        # JumpReLU's estimator: d/dtheta of theta0 * H_eps(pre - theta), theta0 held fixed as the factor
        f = lambda t: (upstream * theta0 * smoothed_step(pre, t, eps)).sum()  # noqa: E731
        jump_fd[j] = (f(theta0 + step) - f(theta0 - step)) / (2 * h)
        g = lambda t: smoothed_step(pre, t, eps).sum(1).mean()  # noqa: E731
        l0_fd[j] = (g(theta0 + step) - g(theta0 - step)) / (2 * h)
    # and by hand: -(theta / eps) * sum of upstream over entries within eps / 2 of theta
    band = ((pre - theta0).abs() < eps / 2).double()
    torch.testing.assert_close(got_jump, -(theta0 / eps) * (upstream * band).sum(0))
    torch.testing.assert_close(got_jump, jump_fd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_l0, -band.sum(0) / eps / 3)
    torch.testing.assert_close(got_l0, l0_fd, rtol=1e-5, atol=1e-6)
    assert (band.sum(0) > 0).sum() >= 3  # the check is not vacuous


def test_jumprelu_passes_the_true_gradient_to_the_pre_activations():
    model = SparseAutoencoder(3, 4, activation="jumprelu", k=2)
    with torch.no_grad():
        model.threshold.fill_(0.5)
    pre = torch.tensor([[0.2, 0.6, 1.0, -1.0]], requires_grad=True)
    values = model.select(pre).values
    torch.testing.assert_close(values, torch.tensor([[0.0, 0.6, 1.0, 0.0]]))
    values.sum().backward()
    torch.testing.assert_close(pre.grad, torch.tensor([[0.0, 1.0, 1.0, 0.0]]))
    # the L0 estimate gives the pre-activations nothing
    pre.grad = None
    model.l0(pre).backward()
    assert pre.grad is None or bool((pre.grad == 0).all())


def test_l0_penalty_is_zero_at_the_target():
    assert float(l0_penalty(torch.tensor(8.0), 8, 3.0)) == 0.0
    torch.testing.assert_close(l0_penalty(torch.tensor(4.0), 8, 2.0), torch.tensor(0.5))


@pytest.mark.parametrize("activation", ["matryoshka", "jumprelu"])
def test_save_load_round_trip_gives_identical_codes(tmp_path, activation):
    torch.manual_seed(1)
    model = SparseAutoencoder(
        8, 32, activation=activation, k=3, prefixes=(4, 16) if activation == "matryoshka" else None
    )
    with torch.no_grad():
        model.b_enc.normal_()
        model.input_scale.fill_(1.3)
        model.threshold.copy_(torch.rand(model.threshold.shape))
    loaded = load(save(model, tmp_path / "model"))
    assert loaded.config() == model.config()
    assert loaded.activation == activation
    if activation == "matryoshka":
        assert loaded.prefixes == (4, 16, 32)
    else:
        assert loaded.threshold.shape == (32,) and loaded.bandwidth == model.bandwidth
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.transform(x).toarray(), model.eval().transform(x).toarray())
    rebuilt = SparseAutoencoder.from_weights(model.config(), model.weights())
    np.testing.assert_array_equal(rebuilt.transform(x).toarray(), model.transform(x).toarray())


def test_jumprelu_inference_uses_the_stored_thresholds():
    model = SparseAutoencoder(4, 6, activation="jumprelu", k=2).eval()
    with torch.no_grad():
        model.threshold.copy_(torch.linspace(0, 1, 6))
    x = torch.randn(10, 4)
    pre = model.pre_activations(x)
    torch.testing.assert_close(model.encode(x).values, pre * (pre > model.threshold))


def test_negative_jumprelu_thresholds_are_refused():
    model = SparseAutoencoder(4, 6, activation="jumprelu", k=2)
    weights = model.weights() | {"threshold": -np.ones(6, dtype=np.float32)}
    with pytest.raises(ValueError, match="negative JumpReLU thresholds"):
        SparseAutoencoder.from_weights(model.config(), weights)
    with pytest.raises(ValueError, match="threshold"):  # a scalar threshold does not fit a JumpReLU model
        SparseAutoencoder.from_weights(model.config(), model.weights() | {"threshold": np.zeros((), np.float32)})


def data(n=400, d=10, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(20, d))
    codes = rng.exponential(size=(n, 20)) * (rng.random((n, 20)) < 0.2)
    return (codes @ basis + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


FAST = {"n_features": 32, "k": 4, "n_epochs": 15, "batch_size": 64, "progress": False}


def test_jumprelu_fit_reaches_the_target_l0():
    result = fit(data(), activation="jumprelu", **(FAST | {"n_epochs": 60}))  # 15 epochs end at L0 4.7
    assert result.metrics["l0"] == pytest.approx(4, rel=0.1)
    assert result.model.threshold.shape == (32,) and bool((result.model.threshold >= 0).all())
    assert result.params["bandwidth"] == 0.05 and result.params["l0_coef"] == 1.0


def test_jumprelu_keeps_the_best_epoch_near_its_target_l0():
    # Short fits overshoot the target early on; the lowest error of those epochs is bought with extra features.
    with pytest.warns(UserWarning, match="Train longer"):
        result = fit(data(), activation="jumprelu", **FAST)
    l0, fvu = np.array(result.history["l0"]), np.array(result.history["fvu_validation"])
    near = l0 <= 1.1 * 4
    best = result.metrics["best_epoch"] - 1
    assert near.any() and not near[-1]  # the case this test is for: the last epoch is above the target
    assert near[best] and fvu[best] == fvu[near].min()


@pytest.mark.parametrize("activation", ["matryoshka", "jumprelu"])
def test_matryoshka_and_jumprelu_do_not_resample_by_default(activation):
    assert fit(data(), activation=activation, **FAST).params["resample"] is False
    assert fit(data(), activation="topk", **FAST).params["resample"] is True
    assert fit(data(), activation=activation, resample=True, **FAST).params["resample"] is True


def test_matryoshka_fit_keeps_k_per_cell_and_records_its_prefixes():
    result = fit(data(), activation="matryoshka", **FAST)
    assert result.metrics["l0"] == pytest.approx(4, rel=0.1)
    assert result.model.prefixes == auto_prefixes(32) == (4, 8, 16, 32)
    assert result.params["prefixes"] == [4, 8, 16, 32]
    assert result.metrics["fvu_validation"] < 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prefixes": (16, 8)}, "not in increasing order"),
        ({"prefixes": (8, 8, 16)}, "repeats 8"),
        ({"prefixes": (8, 64)}, "above n_features=32"),
        ({"prefixes": (0, 8)}, "at least 1 feature"),
        ({"prefixes": ()}, "lists no sizes"),
    ],
)
def test_bad_prefixes_name_the_fix(options, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(activation="matryoshka", n_features=32, k=4, **options)
    with pytest.raises(ValueError, match=message):
        SparseAutoencoder(10, 32, activation="matryoshka", k=4, **options)


def test_prefixes_above_an_auto_dictionary_fail_at_fit():
    with pytest.raises(ValueError, match="above n_features"):
        fit(data(), activation="matryoshka", k=4, prefixes=(8, 4096), n_epochs=1, progress=False)


def test_a_target_l0_above_the_input_dimension_is_refused():
    with pytest.raises(ValueError, match=r"k=12 is the JumpReLU SAE's target L0.*pass k <= 10"):
        fit(data(), activation="jumprelu", n_features=32, k=12, n_epochs=1, progress=False)
    with pytest.raises(ValueError, match="smaller than n_features"):
        FitConfig(activation="jumprelu", n_features=8, k=8)
    with pytest.raises(ValueError, match="bandwidth"):
        FitConfig(activation="jumprelu", bandwidth=0)


def test_prefix_rule():
    assert auto_prefixes(256) == (16, 32, 64, 128, 256)
    assert prefix_sizes(64, np.array([8, 16])) == (8, 16, 64)
    assert prefix_sizes(64, "auto") == auto_prefixes(64)
