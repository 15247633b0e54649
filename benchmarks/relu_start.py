"""Should a ReLU SAE start sparse? A rejected default, measured: speed against its plain loop, and quality.

A ReLU + L1 SAE starts with about half of its codes positive and trains through dense matmuls until the L1 penalty
has made them sparse; its plain reference loop (``train_speed.py``) does the same arithmetic, so ours is only
1.3-1.8x faster there. The alternative measured here starts sparse: after the data initialisation, the encoder
bias is set to minus the cut-off that keeps ``k`` features per cell of the initialisation cells (as JumpReLU's
thresholds start), so training runs through the sparse decoder and encoder backward from the first step.

- speed: ``train_speed.py``'s two shapes (Gaussian cells; batch 4096; fp32; one thread), the ReLU reference loop,
  then ours with the default (dense) start and with the sparse start, alternating; cells/s, final L0 and FVU;
- quality: the defaults (``activation="relu"``, everything else ``"auto"``) on pbmc68k_reduced's ``X_pca`` and
  its 765 scaled genes (``X``), and on the hierarchy simulation's PCA, two seeds each: validation FVU and L0.

Usage::

    python benchmarks/relu_start.py           # writes benchmarks/results/relu_start.json (about 10 min)
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scanpy as sc
import torch
import torch.nn.functional as F
from train_speed import BATCH, SHAPES, reference_loop

import cellsae_kit as csk
from cellsae_kit.models import _train, fit
from cellsae_kit.models._sae import batch_top

RESULTS = Path(__file__).parent / "results"
CPU = torch.device("cpu")
SEEDS = (0, 1)


@contextmanager
def sparse_start():
    """Within the block, ReLU SAEs start with their encoder bias at minus the cut-off keeping k per cell."""
    original = _train._init_from_cells

    def init(model, X, train_idx, generator):
        original(model, X, train_idx, generator)
        if model.activation == "relu":
            with torch.no_grad():
                idx = np.sort(train_idx[:4096])
                pre = F.relu(model.pre_activations(torch.as_tensor(X[idx], dtype=torch.float32)))
                kept = batch_top(pre, min(model.k * len(idx), pre.numel()), 4 * model.k)
                model.b_enc.fill_(-float(pre.flatten()[kept].min()))

    _train._init_from_cells = init
    try:
        yield
    finally:
        _train._init_from_cells = original


def relu_fit(X: np.ndarray, start: str, **options) -> dict:
    """Fit a ReLU SAE with the given start; validation FVU, final L0 and the epochs' training cells per second."""
    with sparse_start() if start == "sparse" else _nothing():
        result = fit(X, activation="relu", progress=False, **options)
    seconds = sum(result.history["seconds"])
    return {
        "fvu_validation": round(result.metrics["fvu_validation"], 4),
        "l0": round(result.history["l0"][-1], 2),
        "cells_per_s": round(len(result.train_indices) * len(result.history["seconds"]) / seconds, 1),
    }


@contextmanager
def _nothing():
    yield


def speed() -> list[dict]:
    """ReLU reference loop, dense start and sparse start alternating, two rounds per shape."""
    rows = []
    for shape in SHAPES:
        X = np.random.default_rng(0).normal(size=(shape["n_cells"], shape["d"])).astype(np.float32)
        options = {
            "n_features": shape["m"],
            "k": shape["k"],
            "batch_size": BATCH,
            "n_epochs": shape["epochs"],
            "validation_fraction": 0.02,
            "patience": shape["epochs"] + 1,
        }
        runs = []
        for _ in range(2):
            cells = torch.from_numpy(X)
            run = {"reference": reference_loop(cells, shape["m"], shape["k"], BATCH, shape["epochs"], CPU, "relu")}
            for start in ("dense", "sparse"):
                run[start] = relu_fit(X, start, **options)
            runs.append(run)
            print(json.dumps(run), flush=True)
        row = dict(shape)
        for start in ("dense", "sparse"):
            row[f"{start}_speedup"] = statistics.median(r[start]["cells_per_s"] / r["reference"] for r in runs)
            row[f"{start}_l0"] = runs[-1][start]["l0"]
            row[f"{start}_fvu_validation"] = runs[-1][start]["fvu_validation"]
        row["runs"] = runs
        rows.append(row)
    return rows


def quality() -> dict:
    """Validation FVU and L0 of the defaults with each start, two seeds, on three data sets."""
    pbmc = sc.datasets.pbmc68k_reduced()
    hierarchy = csk.datasets.simulate(design="hierarchy")
    sc.pp.pca(hierarchy, n_comps=50)
    data = {
        "pbmc68k_reduced X_pca": pbmc.obsm["X_pca"],
        "pbmc68k_reduced X (765 scaled genes)": pbmc.X,
        "hierarchy simulation X_pca": hierarchy.obsm["X_pca"],
    }
    out = {}
    for name, X in data.items():
        X = np.asarray(X, dtype=np.float32)
        out[name] = {}
        for start in ("dense", "sparse"):
            runs = [relu_fit(X, start, random_state=seed) for seed in SEEDS]
            out[name][start] = {
                "fvu_validation": round(float(np.mean([r["fvu_validation"] for r in runs])), 4),
                "l0": round(float(np.mean([r["l0"] for r in runs])), 2),
                "per_seed": runs,
            }
        print(name, json.dumps({s: {k: v for k, v in out[name][s].items() if k != "per_seed"} for s in out[name]}))
    return out


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    load, start = os.getloadavg()[0], time.perf_counter()
    out = {
        "benchmark": "relu_start",
        "torch": torch.__version__,
        "threads": 1,
        "note": (
            "dense: the default start (encoder bias 0, about half the codes positive); sparse: encoder bias at minus "
            "the cut-off keeping k features per cell of the initialisation cells, after the data initialisation; "
            "speed-ups are against train_speed.py's plain ReLU loop in the same round (medians of 2 rounds)"
        ),
        "speed": speed(),
        "quality": quality(),
    }
    out["load_average_before_after"] = [load, os.getloadavg()[0]]
    out["seconds"] = round(time.perf_counter() - start, 1)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "relu_start.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
