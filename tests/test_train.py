"""``python -m cellsae_kit.train``, in one process and under ``torchrun`` with two CPU processes (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

from cellsae_kit.models import ChunkedRows, _train, fit, load
from cellsae_kit.models._train import _resample
from cellsae_kit.train import main
from tests.conftest import sparse_dictionary_data

ROOT = Path(__file__).parents[1]
# 128 features for 40 directions, 2 per cell: features die after the first epoch, so AuxK and resampling run
ARGS = ["--use-rep", "X_rep", "--n-features", "128", "--k", "2", "--batch-size", "256", "--epochs", "6"]
FIT = {"n_features": 128, "k": 2, "batch_size": 256, "n_epochs": 6, "progress": False}
TOLERANCE = 1e-4


@pytest.fixture
def data_file(tmp_path):
    X, _, _ = sparse_dictionary_data(n_cells=2000, n_dims=20)
    adata = ad.AnnData(np.zeros((2000, 3), dtype=np.float32))
    adata.obsm["X_rep"] = X
    adata.write_h5ad(tmp_path / "cells.h5ad")
    return tmp_path / "cells.h5ad", X


@pytest.mark.parametrize("activation", ["batchtopk", "matryoshka", "jumprelu"])
def test_two_processes_train_the_model_of_one(data_file, tmp_path, monkeypatch, activation):
    path, X = data_file
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "cellsae_kit.train", str(path), *ARGS, "--activation", activation, "--chunk-size", "50"]
    command += ["--resample"]  # off by default for Matryoshka and JumpReLU; its gathered draws are checked here
    command += ["--output", str(tmp_path / "ddp"), "--activations", str(tmp_path / "codes.h5ad"), "--no-progress"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(run.stdout.strip().splitlines()[-1])
    assert metrics["world_size"] == 2

    # one process stepping through both shards' halves of each global batch, same seed
    resampled = []
    monkeypatch.setattr(_train, "_resample", lambda *args: resampled.append(_resample(*args)))
    reference = fit(ChunkedRows(X, chunk_size=50, n_shards=2), activation=activation, resample=True, **FIT)
    assert len(resampled) > 3  # dead features were revived, so AuxK and resampling ran in both runs
    model = load(tmp_path / "ddp.safetensors")
    for name, value in reference.model.state_dict().items():
        diff = float((model.state_dict()[name] - value).abs().max())
        assert diff < TOLERANCE, f"{name} differs by {diff}"
    for name in ("fvu_train", "fvu_validation", "l0", "dead_fraction"):
        assert metrics[name] == pytest.approx(reference.metrics[name], abs=TOLERANCE), name
    codes = ad.read_h5ad(tmp_path / "codes.h5ad")
    assert abs(codes.obsm["X_sae"] - reference.codes).max() < TOLERANCE
    assert codes.uns["sae"]["params"]["use_rep"] == "X_rep"
    # rank 0 wrote the codes block by block and counted their statistics on the way
    for name in ("l0", "dead_fraction", "dense_fraction"):
        assert codes.uns["sae"]["metrics"][name] == pytest.approx(reference.metrics[name], abs=TOLERANCE), name

    # the data order matters: a single process with one shard trains a different model
    single = fit(ChunkedRows(X, chunk_size=50), activation=activation, resample=True, **FIT)
    assert float((single.model.W_dec - reference.model.W_dec).abs().max()) > 1e-2


def test_one_process_writes_the_model_and_activations(data_file, tmp_path):
    path, X = data_file
    metrics = main([str(path), *ARGS, "--output", str(tmp_path / "sae"), "--activations", str(tmp_path / "out.zarr")])
    reference = fit(ChunkedRows(X), **FIT)
    assert metrics["fvu_validation"] == reference.metrics["fvu_validation"]
    torch.testing.assert_close(load(tmp_path / "sae.safetensors").W_dec, reference.model.W_dec, rtol=0, atol=0)
    out = ad.read_zarr(tmp_path / "out.zarr")
    assert (out.obsm["X_sae"] != reference.codes).nnz == 0
    assert out.n_obs == 2000 and "weights" in out.uns["sae"]
    for name in ("l0", "dead_fraction", "dense_fraction"):
        assert metrics[name] == out.uns["sae"]["metrics"][name] == pytest.approx(reference.metrics[name]), name


def test_bad_command_lines(data_file, tmp_path):
    path, _ = data_file
    with pytest.raises(FileNotFoundError, match="no file or folder"):
        main([str(tmp_path / "missing.h5ad"), *ARGS, "--output", str(tmp_path / "sae")])
    with pytest.raises(KeyError, match="use_rep='X_pca' is not in cells.h5ad"):
        main([str(path), *ARGS, "--use-rep", "X_pca", "--output", str(tmp_path / "sae")])
    with pytest.raises(SystemExit):
        main([str(path), "--activation", "gelu", "--output", str(tmp_path / "sae")])
    assert not (tmp_path / "sae.safetensors").exists()
