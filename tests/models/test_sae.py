import numpy as np
import pytest
import torch
from scipy import sparse

from cellsae_kit.models import SparseAutoencoder
from cellsae_kit.models._sae import batch_top


def dense_reference(model: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Plain dense SAE: scatter the kept activations into a full matrix, then one matmul."""
    pre = (x * model.input_scale - model.b_dec) @ model.W_enc + model.b_enc
    if model.activation == "topk":
        values, indices = pre.topk(model.k, dim=1)
        acts = torch.zeros_like(pre).scatter(1, indices, torch.relu(values))
    elif model.activation == "batchtopk":
        flat = torch.relu(pre).flatten()
        keep = flat.topk(model.k * x.shape[0]).indices
        acts = torch.zeros_like(flat).scatter(0, keep, flat[keep]).reshape(pre.shape)
    else:
        acts = torch.relu(pre)
    return acts @ model.W_dec + model.b_dec, acts


def perturbed(activation: str, seed: int = 0) -> SparseAutoencoder:
    torch.manual_seed(seed)
    model = SparseAutoencoder(12, 40, activation=activation, k=5)
    with torch.no_grad():
        model.b_enc.normal_()
        model.b_dec.normal_()
        model.input_scale.fill_(0.7)
    return model


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu"])
def test_sparse_decoder_matches_dense_reference(activation):
    model = perturbed(activation)
    x = torch.randn(33, 12)
    x_hat, codes = model(x)
    ref, acts = dense_reference(model, x)
    torch.testing.assert_close(x_hat, ref, rtol=1e-5, atol=1e-5)
    if activation == "topk":
        assert codes.values.shape == (33, 5)
        assert ((acts != 0).sum(1) <= 5).all()
    if activation == "batchtopk":
        assert codes.values.numel() == 5 * 33


def test_gradients_reach_only_active_decoder_rows():
    model = perturbed("topk")
    x = torch.randn(4, 12)
    x_hat, codes = model(x)
    x_hat.pow(2).sum().backward()
    touched = model.W_dec.grad.abs().sum(1) > 0
    active = torch.zeros(40, dtype=torch.bool)
    active[codes.indices[codes.values > 0]] = True
    assert torch.equal(touched, active)


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu"])
def test_transform_returns_csr_of_the_codes(activation):
    model = perturbed(activation).eval()
    x = np.random.default_rng(0).normal(size=(25, 12)).astype(np.float32)
    out = model.transform(x, batch_size=7)
    assert sparse.isspmatrix_csr(out) and out.dtype == np.float32 and out.shape == (25, 40)
    with torch.no_grad():
        codes = model.encode(torch.tensor(x))
        dense = codes.values if codes.indices is None else torch.zeros(25, 40).scatter(1, codes.indices, codes.values)
    np.testing.assert_allclose(out.toarray(), dense.numpy(), rtol=1e-6, atol=1e-6)
    assert np.all(out.data != 0)
    # sparse input gives the same codes
    np.testing.assert_array_equal(model.transform(sparse.csr_matrix(x)).toarray(), out.toarray())


def test_batchtopk_inference_uses_threshold():
    model = perturbed("batchtopk").eval()
    model.threshold.fill_(0.5)
    x = torch.randn(10, 12)
    acts = model.encode(x).values
    pre = model.pre_activations(x)
    torch.testing.assert_close(acts, pre * (pre > 0.5))


def test_init_ties_encoder_to_unit_norm_decoder():
    model = SparseAutoencoder(10, 30, k=3)
    torch.testing.assert_close(model.W_dec.norm(dim=1), torch.ones(30))
    torch.testing.assert_close(model.W_enc, model.W_dec.T)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": 0}, "at least one feature"),
        ({"k": 30}, "smaller than n_features"),
        ({"k": 0}, "at least 1"),
        ({"activation": "gated"}, "not known"),
        ({"l1_coef": float("nan")}, "finite"),
    ],
)
def test_bad_configuration(kwargs, message):
    args = {"n_features": 30, "k": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        SparseAutoencoder(10, args.pop("n_features"), **args)


def test_relu_ignores_k():
    assert SparseAutoencoder(4, 2, activation="relu", k=10).activation == "relu"


def test_from_weights_checks_shapes():
    model = SparseAutoencoder(6, 10, k=2)
    weights = model.weights()
    rebuilt = SparseAutoencoder.from_weights(model.config(), weights)
    torch.testing.assert_close(rebuilt.W_dec, model.W_dec)
    weights["W_dec"] = weights["W_dec"][:5]
    with pytest.raises(ValueError, match="W_dec"):
        SparseAutoencoder.from_weights(model.config(), weights)
    del weights["b_enc"]
    with pytest.raises(ValueError, match="lack"):
        SparseAutoencoder.from_weights(model.config(), weights)


@pytest.mark.parametrize("crowded_row", [False, True])
def test_batch_top_equals_a_global_top_k(crowded_row):
    # the two-stage selection must keep exactly the entries a top-k over the whole batch keeps, also when one row
    # holds more of them than its candidates (that row then enters with all its entries)
    values = torch.relu(torch.randn(64, 512, generator=torch.Generator().manual_seed(0)))
    if crowded_row:
        values[3] += 100.0
    expected = values.flatten().topk(64 * 8, sorted=False).indices.sort().values
    assert torch.equal(batch_top(values, 64 * 8, 32), expected)


def test_batchtopk_training_keeps_k_per_cell_on_average():
    sae = SparseAutoencoder(10, 256, activation="batchtopk", k=8)
    codes = sae.select(sae.pre_activations(torch.randn(100, 10)))
    assert codes.values.numel() == 800 and bool((codes.rows[1:] >= codes.rows[:-1]).all())


def test_transform_names_a_dimension_mismatch_and_leaves_the_cells_alone():
    model = SparseAutoencoder(5, 16, k=2)
    x = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(3, 4\) but the SAE takes 5 inputs"):
        model.transform(x)
    np.testing.assert_array_equal(x, np.ones((3, 4), dtype=np.float32))
    assert model.training
