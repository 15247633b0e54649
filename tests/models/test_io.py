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
