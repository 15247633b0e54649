import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cellsae_kit.models import SparseAutoencoder, load, save


def test_round_trip(tmp_path):
    model = SparseAutoencoder(8, 20, activation="batchtopk", k=3, metadata={"use_rep": "X_pca"})
    with torch.no_grad():
        model.threshold.fill_(0.25)
        model.input_scale.fill_(1.5)
    path = save(model, tmp_path / "model")
    assert path.name == "model.safetensors"
    loaded = load(path)
    assert loaded.config() == model.config()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value)
    x = np.random.default_rng(0).normal(size=(9, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.transform(x).toarray(), model.eval().transform(x).toarray())


def test_load_rejects_foreign_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        load(tmp_path / "nothing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not written by cellsae_kit"):
        load(foreign)
    pickle_file = tmp_path / "model.safetensors"
    pickle_file.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load(pickle_file)


FORMAT = "cellsae_kit.SparseAutoencoder/1"


def _tampered(tmp_path, config, tensors=None):
    """A model file whose metadata or weights were changed by hand."""
    model = SparseAutoencoder(4, 8, k=2)
    weights = {name: t.clone() for name, t in model.state_dict().items()} if tensors is None else tensors
    metadata = {"format": FORMAT} | ({} if config is None else {"config": config})
    path = tmp_path / "tampered.safetensors"
    save_file(weights, str(path), metadata=metadata)
    return path


GOOD = '{"n_inputs": 4, "n_features": 8, "activation": "topk", "k": 2, "l1_coef": 0.05, "metadata": {}}'


@pytest.mark.parametrize(
    ("config", "change", "message"),
    [
        (None, None, "no model config"),
        ('{"n_inputs": 4, "n_features"', None, "garbled model config"),
        ('["n_inputs", 4]', None, "no model config"),
        ('{"n_inputs": 4, "n_features": 8}', None, "lacks activation, k"),
        (GOOD.replace('"k": 2', '"k": "two"'), None, "k='two'"),
        (GOOD.replace('"n_inputs": 4', '"n_inputs": true'), None, "n_inputs=True"),
        (GOOD.replace('"l1_coef": 0.05', '"l1_coef": -1'), None, "l1_coef=-1"),
        (GOOD.replace('"metadata": {}', '"metadata": {}, "code": "import os"'), None, "unknown entries code"),
        # a 2 KB file whose config claims a 2048 x 65536 model: refused from the header, before any allocation
        (
            GOOD.replace('"n_inputs": 4', '"n_inputs": 2048').replace('"n_features": 8', '"n_features": 65536'),
            None,
            "shape",
        ),
        (GOOD, lambda w: w.pop("threshold"), "lacks the weights threshold"),
        (GOOD, lambda w: w.update(W_dec=w["W_dec"].to(torch.int64)), "floating point"),
        (GOOD, lambda w: w.update(W_enc=w["W_enc"] > 0), "floating point"),
        (GOOD, lambda w: w.update(W_dec=w["W_dec"] * float("nan")), "NaN"),
        (GOOD, lambda w: w.update(b_enc=torch.full((8,), float("inf"))), "infinite"),
        (GOOD, lambda w: w.update(input_scale=torch.tensor(-1.0)), "input_scale"),
        (GOOD, lambda w: w.update(W_enc=torch.zeros(8, 4)), "shape"),
    ],
)
def test_a_tampered_model_file_is_refused_with_a_clear_error(tmp_path, config, change, message):
    weights = {name: t.clone() for name, t in SparseAutoencoder(4, 8, k=2).state_dict().items()}
    if change is not None:
        change(weights)
    path = _tampered(tmp_path, config, weights)
    with pytest.raises(ValueError, match=message):
        load(path)


def test_load_on_a_gpu_that_is_not_there_names_the_fix(tmp_path):
    path = save(SparseAutoencoder(4, 8, k=2), tmp_path / "model")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="sees no CUDA GPU; use device='cpu'"):
        load(path, device="cuda")


def test_save_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    path = save(SparseAutoencoder(4, 8, k=2), tmp_path / "model")
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    monkeypatch.setattr("cellsae_kit.models._io.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save(SparseAutoencoder(4, 16, k=2), tmp_path / "model")
    assert path.read_bytes() == before and not list(tmp_path.glob(".*partial*"))
