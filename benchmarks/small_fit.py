"""A small data set with the defaults: how long 300 cells x 50 dimensions take to train, and where the time goes.

The cells are 300 of scanpy's ``pbmc68k_reduced`` (its 50 PCs, ``obsm["X_pca"]``), trained with
:func:`cellsae_kit.models.fit` at every default (4,000 steps; the defaults have no early stopping, so the end of
the fit is its stopping point). Measured:

- ``fresh_process``: a new Python process that imports the kit, loads the cells and fits once, timed from the
  outside (what a script pays; the first fit also imports parts of torch that Adam loads on first use);
- ``first_fit`` and ``warm_fit``: the first and a later fit in one process (what a notebook pays);
- per warm fit: the epochs' time (from ``history["seconds"]``) and the rest (set-up, final encoding and metrics);
- the baseline, side by side in the same process: the same warm fit with the one-thread rule for small steps
  switched off (``SMALL_STEP = 0``, so the steps use every torch thread as before the rule), alternating with the
  default ``--repeats`` times. The machine's load average is recorded, since the difference between the two is
  largest on a busy machine.

Usage::

    python benchmarks/small_fit.py              # 3 repeats
    python benchmarks/small_fit.py --repeats 1  # a quick look

Writes ``benchmarks/results/small_fit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
N_CELLS = 300


def cells() -> np.ndarray:
    """300 cells of pbmc68k_reduced's 50 PCs (a fixed random subset)."""
    import scanpy as sc

    X = sc.datasets.pbmc68k_reduced().obsm["X_pca"]
    rows = np.sort(np.random.default_rng(0).choice(X.shape[0], N_CELLS, replace=False))
    return np.asarray(X[rows], dtype=np.float32)


def timed_fit(X: np.ndarray) -> dict:
    """One fit at the defaults: wall time, the epochs' share, and what it trained."""
    from cellsae_kit.models import fit

    start = time.perf_counter()
    result = fit(X, progress=False)
    seconds = time.perf_counter() - start
    epochs = sum(result.history["seconds"])
    return {
        "seconds": seconds,
        "epochs_seconds": epochs,
        "other_seconds": seconds - epochs,
        "n_epochs": result.params["n_epochs"],
        "batch_size": result.params["batch_size"],
        "n_features": result.params["n_features"],
        "k": result.params["k"],
        "fvu_validation": result.metrics["fvu_validation"],
    }


def fresh_process() -> float:
    """Wall time of a new process that imports the kit and fits once."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import small_fit as b; b.timed_fit(b.cells())"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from cellsae_kit.models import _train

    load_before = os.getloadavg()[0]
    fresh = [fresh_process() for _ in range(args.repeats)]
    X = cells()
    first = timed_fit(X)
    default, all_threads = [], []
    for _ in range(args.repeats):
        default.append(timed_fit(X))
        rule, _train.SMALL_STEP = _train.SMALL_STEP, 0
        try:
            all_threads.append(timed_fit(X))
        finally:
            _train.SMALL_STEP = rule
        print(f"default {default[-1]['seconds']:.2f} s, all threads {all_threads[-1]['seconds']:.2f} s", flush=True)
    median = {
        key: statistics.median(run[key] for run in default) for key in ("seconds", "epochs_seconds", "other_seconds")
    }
    out = {
        "benchmark": "small_fit",
        "cells": f"{N_CELLS} cells of pbmc68k_reduced, obsm['X_pca'] (50 dims)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "repeats": args.repeats,
        "fresh_process_seconds": statistics.median(fresh),
        "first_fit_seconds": first["seconds"],
        "warm_fit": median | {key: default[0][key] for key in ("n_epochs", "batch_size", "n_features", "k")},
        "fvu_validation": default[0]["fvu_validation"],
        "baseline_all_threads_seconds": statistics.median(run["seconds"] for run in all_threads),
        "baseline_over_default": statistics.median(
            b["seconds"] / d["seconds"] for b, d in zip(all_threads, default, strict=True)
        ),
        "runs": {"fresh_process": fresh, "first": first, "default": default, "all_threads": all_threads},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "small_fit.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
