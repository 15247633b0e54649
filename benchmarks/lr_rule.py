"""The learning rate against the input dimension: does Adam's step need to shrink for wide inputs?

Adam moves every coordinate by about ``lr`` per step, so a unit-norm decoder row of ``d`` inputs moves by about
``lr * sqrt(d)``: the same learning rate is a ``sqrt(d)`` times larger step, relative to the row, on 2,000 genes
than on 50 PCs. The default rule was tuned on embeddings of 11 to 150 dimensions. This benchmark trains, with
every other option at its default, the rule without and with the factor ``min(1, sqrt(150 / d))``, side by side
(alternating, same seeds), and reports the held-out FVU:

- ``pbmc_X``: scanpy's ``pbmc68k_reduced`` expression (700 cells x 765 genes, scaled as stored);
- ``log_expression``: :func:`cellsae_kit.datasets.simulate`, 10,000 cells x 2,000 genes, normalised to 10,000
  counts per cell and log1p (the case of ``vs_libraries.py``);
- ``embedding_512``: the same cells projected onto 512 random directions (a wide embedding, as a foundation
  model's);
- ``pbmc_pca``: pbmc68k_reduced's 50 PCs (below 150 dimensions: both rules give the same rate, a control);
- ``vs_libraries``: the log-expression case at ``vs_libraries.py``'s settings (TopK, m=2048, k=32, batches of
  4,096, one epoch of three steps), where the first steps decide the error.

Usage::

    python benchmarks/lr_rule.py            # 2 seeds
    python benchmarks/lr_rule.py --seeds 1  # quicker

Writes ``benchmarks/results/lr_rule.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cellsae_kit.models import auto_lr, fit, resolve
from cellsae_kit.models._config import FitConfig

sys.path.insert(0, str(Path(__file__).parent))
from vs_libraries import load_case

RESULTS = Path(__file__).parent / "results"
D_REF = 150


def cases() -> dict:
    """Each case's cells and the fit options that differ from the defaults."""
    import scanpy as sc

    pbmc = sc.datasets.pbmc68k_reduced()
    log = load_case("log_expression", 10_000, 0)
    projection = np.random.default_rng(0).normal(size=(log.shape[1], 512)) / math.sqrt(log.shape[1])
    return {
        "pbmc_X": (np.asarray(pbmc.X, dtype=np.float32), "expression", {}),
        "log_expression": (log, "expression", {}),
        "embedding_512": ((log @ projection).astype(np.float32), "embedding", {}),
        "pbmc_pca": (np.asarray(pbmc.obsm["X_pca"], dtype=np.float32), "embedding", {}),
        "vs_libraries": (
            log,
            "expression",
            {"n_features": 2048, "k": 32, "activation": "topk", "batch_size": 4096, "n_epochs": 1},
        ),
    }


def run(X: np.ndarray, kind: str, options: dict, seed: int, scaled: bool) -> dict:
    """One fit; the learning rate is the default rule's, times the dimension factor when ``scaled``."""
    config, _ = resolve(FitConfig.make(**options), X.shape[0], X.shape[1], kind)
    lr = auto_lr(config.n_features) * (min(1.0, math.sqrt(D_REF / X.shape[1])) if scaled else 1.0)
    start = time.perf_counter()
    result = fit(X, input_kind=kind, lr=lr, random_state=seed, progress=False, **options)
    return {
        "lr": lr,
        "fvu_validation": result.metrics["fvu_validation"],
        "dead_fraction": result.metrics.get("dead_fraction"),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    out = {"benchmark": "lr_rule", "d_ref": D_REF, "threads": 1, "seeds": args.seeds, "cases": {}}
    for name, (X, kind, options) in cases().items():
        if args.cases and name not in args.cases:
            continue
        runs = {"default_rule": [], "scaled_rule": []}
        for seed in range(args.seeds):
            for rule in runs:
                runs[rule].append(run(X, kind, options, seed, rule == "scaled_rule"))
        summary = {rule: statistics.mean(r["fvu_validation"] for r in rs) for rule, rs in runs.items()}
        out["cases"][name] = {
            "shape": list(X.shape),
            "input_kind": kind,
            "options": options,
            "mean_fvu_validation": summary,
            "runs": runs,
        }
        print(name, X.shape, {rule: round(v, 4) for rule, v in summary.items()}, flush=True)
    out["load_average_before_after"] = [load_before, os.getloadavg()[0]]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "lr_rule.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
