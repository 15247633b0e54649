"""Interrupting ``python -m cellsae_kit.train`` never leaves a partial file under an output's name."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from cellsae_kit.models import load


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("train") / "cells.h5ad"
    rng = np.random.default_rng(0)
    adata = ad.AnnData(obsm={"X_rep": rng.normal(size=(40_000, 30)).astype(np.float32)}, shape=(40_000, 0))
    adata.write_h5ad(path)
    return path


def _command(cells: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cellsae_kit.train",
        str(cells),
        "--use-rep",
        "X_rep",
        "--n-features",
        "64",
        "--k",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-progress",
        "--output",
        str(out / "sae"),
        "--activations",
        str(out / "codes.h5ad"),
    ]


def _wait_for(process: subprocess.Popen, folder: Path, pattern: str | None, timeout: float = 120) -> None:
    """Return once a file matching ``pattern`` appears in ``folder`` (None: at once), or the process ends."""
    end = time.monotonic() + timeout
    while pattern is not None and time.monotonic() < end and process.poll() is None:
        if any(folder.glob(pattern)):
            return
        time.sleep(0.002)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize(
    "moment",
    [None, ".codes.h5ad.partial-*", ".sae.safetensors.partial-*"],
    ids=["while training", "while writing the activations", "while writing the model"],
)
def test_an_interrupted_run_leaves_complete_files_or_none(cells, tmp_path, sig, moment):
    process = subprocess.Popen(_command(cells, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if moment is None:
        time.sleep(3)  # imports done, training under way
    _wait_for(process, tmp_path, moment)
    process.send_signal(sig)
    process.communicate(timeout=120)
    model, codes = tmp_path / "sae.safetensors", tmp_path / "codes.h5ad"
    if model.exists():
        assert load(model).n_features == 64
    if codes.exists():
        assert ad.read_h5ad(codes).obsm["X_sae"].shape == (40_000, 64)
    if sig == signal.SIGINT:  # Python unwinds: no temporary file is left behind either
        assert not list(tmp_path.glob(".*.partial-*"))


def test_an_output_that_is_the_input_is_refused_before_training(cells, tmp_path):
    command = _command(cells, tmp_path)
    command[command.index("--activations") + 1] = str(cells)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is the input file" in done.stderr
    assert not (tmp_path / "sae.safetensors").exists()
    assert ad.read_h5ad(cells).n_obs == 40_000  # untouched


def test_an_activations_path_without_a_format_is_refused(cells, tmp_path):
    command = _command(cells, tmp_path)
    command[command.index("--activations") + 1] = str(tmp_path / "codes.csv")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "must end in .h5ad or .zarr" in done.stderr
