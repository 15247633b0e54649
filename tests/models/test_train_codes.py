"""``SparseAutoencoder.train_codes``: every fast path of a training step against the straightforward dense one."""

import pytest
import torch

from cellsae_kit.models import SparseAutoencoder, _sae
from cellsae_kit.models._sae import Codes, select_batch_top
from cellsae_kit.models._train import l0_penalty

TOL = {"rtol": 1e-5, "atol": 1e-5}


def model_and_batch(activation: str, n_cells: int = 200, n_inputs: int = 12, n_features: int = 96):
    """A model away from its initialisation (non-zero biases) and a batch whose codes are sparse."""
    gen = torch.Generator().manual_seed(1)
    model = SparseAutoencoder(n_inputs, n_features, activation=activation, k=4, l1_coef=0.3, bandwidth=0.3)
    with torch.no_grad():
        model.W_dec.copy_(torch.randn(n_features, n_inputs, generator=gen))
        model.W_enc.copy_(torch.randn(n_inputs, n_features, generator=gen) / n_inputs**0.5)
        model.b_enc.copy_(torch.randn(n_features, generator=gen) * 0.1 - 1.2)
        model.b_dec.copy_(torch.randn(n_inputs, generator=gen))
        model.input_scale.fill_(1.3)
        if activation == "jumprelu":  # thresholds spread so that some entries fall in the kernel's band
            model.threshold.copy_(torch.rand(n_features, generator=gen) * 0.5)
    return model, torch.randn(n_cells, n_inputs, generator=gen) * 1.5


def dense_loss(model: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """The step's loss as the straightforward dense computation: autograd through the centred input and codes."""
    pre = torch.addmm(model.b_enc, x * model.input_scale - model.b_dec, model.W_enc)
    codes = model.select(pre)
    x_hat = codes.values @ model.W_dec + model.b_dec
    loss = (x * model.input_scale - x_hat).pow(2).sum(1).mean() / model.n_inputs
    if model.activation == "relu":
        loss = loss + model.l1_coef * (codes.values * model.W_dec.norm(dim=1)).sum(1).mean()
    if model.activation == "jumprelu":
        loss = loss + l0_penalty(model.l0(pre), model.k, 1.0)
    return loss


def fast_loss(model: SparseAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, Codes]:
    """The same loss through ``train_codes``, as ``fit`` computes it."""
    codes, sparsity = model.train_codes(x)
    x_hat = model.decode(codes, x.shape[0])
    loss = (x * model.input_scale - x_hat).pow(2).sum(1).mean() / model.n_inputs
    if model.activation == "relu":
        torch.testing.assert_close(sparsity, model.l1_penalty(codes, x.shape[0]))
        loss = loss + model.l1_coef * sparsity
    if model.activation == "jumprelu":
        loss = loss + l0_penalty(sparsity, model.k, 1.0)
    return loss, codes


def gradients(model: SparseAutoencoder, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_dense_code_paths_equal_the_dense_computation(activation, path, monkeypatch):
    model, x = model_and_batch(activation)
    monkeypatch.setattr(_sae, "SPARSE_FRACTION", 1.0 if path == "sparse" else -1.0)
    expected_loss = dense_loss(model, x)
    expected = gradients(model, expected_loss)
    loss, codes = fast_loss(model, x)
    assert (codes.rows is not None) == (path == "sparse")
    torch.testing.assert_close(loss, expected_loss, **TOL)
    got = gradients(model, loss)
    assert set(got) == set(expected)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, **TOL, msg=f"gradient of {name}")
    if activation == "jumprelu":  # the check is not vacuous: the thresholds learn from entries in the band
        assert int((expected["threshold"] != 0).sum()) >= 5


def test_sparse_jumprelu_codes_hold_the_active_entries_and_count_them(monkeypatch):
    model, x = model_and_batch("jumprelu")
    monkeypatch.setattr(_sae, "SPARSE_FRACTION", 1.0)
    codes, l0 = model.train_codes(x)
    dense = model.select(model.pre_activations(x)).values.detach()
    assert codes.rows is not None
    rebuilt = torch.zeros_like(dense).index_put_((codes.rows, codes.indices), codes.values.detach(), accumulate=True)
    torch.testing.assert_close(rebuilt, dense)
    assert float(l0) == pytest.approx(float((dense != 0).sum(1).float().mean()))


def test_sparse_path_is_taken_only_for_sparse_codes():
    model, x = model_and_batch("relu")
    with torch.no_grad():
        model.b_enc.fill_(-4.0)  # few active entries
    assert model.train_codes(x)[0].rows is not None
    with torch.no_grad():
        model.b_enc.fill_(5.0)  # every entry active
    codes, _ = model.train_codes(x)
    assert codes.rows is None and codes.values.shape == (x.shape[0], model.n_features)


@pytest.mark.parametrize("activation", ["batchtopk", "matryoshka"])
def test_batch_codes_equal_selecting_from_the_whole_batch(activation, monkeypatch):
    model, x = model_and_batch(activation)
    monkeypatch.setattr(_sae, "CPU_BLOCK", 7 * model.n_features)  # several blocks, the last one short
    with torch.no_grad():
        whole = model.select(model.pre_activations(x))
    expected = gradients(model, (model.decode(model.with_gradients(whole, x), x.shape[0]) ** 2).sum())
    codes, l0 = model.train_codes(x)
    assert l0 is None
    for got, want in zip(codes, whole, strict=True):
        torch.testing.assert_close(got.detach(), want)
    got = gradients(model, (model.decode(codes, x.shape[0]) ** 2).sum())
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, **TOL, msg=f"gradient of {name}")


@pytest.mark.parametrize("crowded", [0, 1, 30])
def test_select_batch_top_in_blocks_equals_a_global_top_k(crowded):
    values = torch.relu(torch.randn(64, 512, generator=torch.Generator().manual_seed(0)))
    values[:crowded] += 100.0  # rows holding more of the kept entries than their candidates (30: most of them)
    calls = []

    def rows_of(rows):
        calls.append(rows)
        return values[rows]

    top = values.flatten().topk(64 * 8)
    order = top.indices.argsort()
    flat, kept = select_batch_top(rows_of, (64, 512), 64 * 8, 32, 10)
    assert torch.equal(flat, top.indices[order]) and torch.equal(kept, top.values[order])
    assert len(calls) >= 7  # computed a block at a time


def test_pre_activations_give_b_dec_the_gradient_of_the_centred_input():
    model, x = model_and_batch("topk")
    expected = torch.addmm(model.b_enc, x * model.input_scale - model.b_dec, model.W_enc)
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2))
    want = gradients(model, (expected * upstream).sum())
    pre = model.pre_activations(x)
    assert torch.equal(pre, expected)
    got = gradients(model, (pre * upstream).sum())
    for name, grad in want.items():
        torch.testing.assert_close(got[name], grad, **TOL, msg=f"gradient of {name}")


@pytest.mark.parametrize("upstream", ["decoder", "broadcast"])
def test_relu_penalty_backward_in_place_equals_autograd(upstream):
    """The in-place backward of dense ReLU codes, whatever shape of gradient arrives (a product's or a broadcast)."""
    gen = torch.Generator().manual_seed(2)
    pre0, weights0, W = torch.randn(30, 16, generator=gen), torch.rand(16, generator=gen), torch.randn(16, 5)

    def loss(values, weighted):
        head = (values @ W).pow(2).sum() if upstream == "decoder" else values.sum()
        return head + 0.7 * weighted

    pre, weights = pre0.clone().requires_grad_(), weights0.clone().requires_grad_()
    values = torch.relu(pre)
    loss(values, (values.sum(0) * weights).sum()).backward()
    pre_fast, weights_fast = pre0.clone().requires_grad_(), weights0.clone().requires_grad_()
    values_fast, weighted = _sae._ReLUPenalty.apply(pre_fast * 1.0, weights_fast)
    torch.testing.assert_close(values_fast, values)
    loss(values_fast, weighted).backward()
    torch.testing.assert_close(pre_fast.grad, pre.grad)
    torch.testing.assert_close(weights_fast.grad, weights.grad)
