"""Which architecture? TopK, BatchTopK, ReLU, Matryoshka and JumpReLU side by side, in one process.

Every architecture gets the same input, dictionary size and target L0 (``k``; ReLU has no L0 target and is reported
at the L0 its default L1 weight gives), and everything else is left to the defaults. Every number is the mean over
two seeds (the main ones are also listed per seed).

* hierarchy: ``datasets.simulate(design="hierarchy")`` (4 lineages x 3 subtypes, 4 states), PCA. Per architecture:
  validation FVU, L0, dead fraction, median best |r| of the lineage (parent) and of the subtype (child)
  programmes, the absorption rate of the parents (``tl.absorption(truth=...)``, pooled over children), cross-seed
  stability (shared at decoder cosine >= 0.9 between two seeds) and training cells per second. Run at a small
  dictionary (where absorption shows) and at the default one.
* paper: the study's simulation (cell-type design), JumpReLU against TopK at three L0 values: the FVU-L0 curve and
  the L0 JumpReLU reaches against its target; all five at the middle one, with the median best |r| of the true
  programmes and cross-seed stability.
* pbmc68k_reduced: the same five on ``X_pca`` with the defaults' size and k, with cross-seed stability.

Usage::

    python benchmarks/architectures.py            # writes benchmarks/results/architectures.json
    python benchmarks/architectures.py --only paper
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scanpy as sc

import cellsae_kit as csk

RESULTS = Path(__file__).parent / "results"
ARCHITECTURES = ("topk", "batchtopk", "relu", "matryoshka", "jumprelu")
SEEDS = (0, 1)


def fit(adata, activation: str, seed: int = 0, key: str = "sae", **options) -> dict:
    """Train one SAE on X_pca; its metrics and training speed."""
    start = time.perf_counter()
    csk.tl.sae(adata, "X_pca", activation=activation, random_state=seed, key_added=key, progress=False, **options)
    seconds = time.perf_counter() - start
    stored = adata.uns[key]
    metrics, params = stored["metrics"], stored["params"]
    n_train = round(adata.n_obs * (1 - params["validation_fraction"]))
    epochs = int(metrics["n_epochs"])
    return {
        "validation_fvu": round(float(metrics["fvu_validation"]), 5),
        "l0": round(float(metrics["l0"]), 3),
        "dead_fraction": round(float(metrics["dead_fraction"]), 4),
        "seconds": round(seconds, 2),
        "cells_per_second": round(n_train * epochs / seconds),
    }


def shared_across_seeds(adata, key: str, other: str) -> float:
    """Fraction of features matched at decoder cosine >= 0.9 between two runs."""
    csk.tl.stability(adata, [key, other], key=key, progress=False)
    return round(float(adata.uns[key]["stability"]["shared_at_0.9"]), 4)


def mean_over_seeds(rows: list[dict]) -> dict:
    """Each number averaged over the seeds' rows, with the seeds' values of the main ones beside it."""
    out = {name: round(float(np.mean([row[name] for row in rows])), 5) for name in rows[0]}
    for name in ("validation_fvu", "l0", "parent_absorption_rate", "parent_median_best_r"):
        if name in rows[0]:
            out[f"{name}_per_seed"] = [row[name] for row in rows]
    return out


def hierarchy(n_cells: int = 4000, seeds: tuple[int, ...] = SEEDS) -> dict:
    adata = csk.datasets.simulate(n_cells, 20, design="hierarchy", random_state=0)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    csk.tl.embed(adata, "pca", 50)
    level = np.asarray(adata.uns["simulation"]["program_level"]).astype(str)
    out = {}
    for size, k in [(32, 4), ("auto", "auto")]:
        rows = {}
        for activation in ARCHITECTURES:
            per_seed = []
            for seed in seeds:
                key = f"sae_{seed}"
                row = fit(adata, activation, seed=seed, key=key, n_features=size, k=k)
                r = csk.tl.recovery(adata, key, inplace=False)["variables"]["best_abs_r"].to_numpy()
                row["parent_median_best_r"] = round(float(np.median(r[level == "lineage"])), 4)
                row["child_median_best_r"] = round(float(np.median(r[level == "subtype"])), 4)
                csk.tl.absorption(adata, key, truth="true_programs")
                table = adata.uns[key]["absorption"]
                pooled = table[table["child"] == "(all children)"]
                row["parent_absorption_rate"] = round(float(pooled["absorption"].mean()), 4)
                per_seed.append(row)
            rows[activation] = mean_over_seeds(per_seed)
            rows[activation]["shared_at_0.9"] = shared_across_seeds(adata, f"sae_{seeds[0]}", f"sae_{seeds[1]}")
            print("hierarchy", size, k, activation, rows[activation], flush=True)
        out[f"n_features={size}, k={k}"] = rows
    return out


def paper(seeds: tuple[int, ...] = SEEDS) -> dict:
    """TopK and JumpReLU at k = 4, 8 and 16; all five at k = 8, with recovery and cross-seed stability."""
    adata = csk.datasets.simulate(5000, 50, 20, n_genes=1000, random_state=0)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    csk.tl.embed(adata, "pca", 80)
    out = {}
    for k in (4, 8, 16):
        rows = {}
        for activation in ARCHITECTURES if k == 8 else ("topk", "jumprelu"):
            per_seed = []
            for seed in seeds:
                key = f"sae_{seed}"
                row = fit(adata, activation, seed=seed, key=key, n_features=256, k=k)
                r = csk.tl.recovery(adata, key, inplace=False)["variables"]["best_abs_r"].to_numpy()
                row["median_best_r"] = round(float(np.median(r)), 4)
                per_seed.append(row)
            rows[activation] = mean_over_seeds(per_seed)
            rows[activation]["shared_at_0.9"] = shared_across_seeds(adata, f"sae_{seeds[0]}", f"sae_{seeds[1]}")
        out[f"k={k}"] = rows
        print("paper", k, rows, flush=True)
    return out


def pbmc(seeds: tuple[int, ...] = SEEDS) -> dict:
    adata = sc.datasets.pbmc68k_reduced()
    out = {}
    for activation in ARCHITECTURES:
        out[activation] = mean_over_seeds([fit(adata, activation, seed=seed, key=f"sae_{seed}") for seed in seeds])
        out[activation]["shared_at_0.9"] = shared_across_seeds(adata, f"sae_{seeds[0]}", f"sae_{seeds[1]}")
    print("pbmc", out, flush=True)
    return out


def plot(results: dict, path: Path) -> None:
    """Absorption, parent recovery and FVU per architecture on the hierarchy; JumpReLU's FVU-L0 curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), layout="constrained")
    panels = [
        ("parent_absorption_rate", "absorption of parents"),
        ("parent_median_best_r", "parent recovery (median best |r|)"),
        ("validation_fvu", "validation FVU"),
    ]
    settings = list(results["hierarchy"])
    width = 0.8 / len(settings)
    for ax, (metric, title) in zip(axes, panels, strict=False):
        for i, setting in enumerate(settings):
            rows = results["hierarchy"][setting]
            values = [rows[a][metric] for a in ARCHITECTURES]
            ax.bar(np.arange(len(ARCHITECTURES)) + i * width, values, width, label=setting)
        ax.set_xticks(np.arange(len(ARCHITECTURES)) + width * (len(settings) - 1) / 2, ARCHITECTURES, rotation=30)
        ax.set_title(title, fontsize=10)
        if metric == "validation_fvu":
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [f"hierarchy simulation, {label}" for label in labels], loc="outside lower left", ncols=2)
    ax = axes[3]
    for activation, marker in [("topk", "o"), ("jumprelu", "s")]:
        rows = [results["paper"][key][activation] for key in results["paper"]]
        ax.plot([r["l0"] for r in rows], [r["validation_fvu"] for r in rows], marker=marker, label=activation)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("L0 (active features per cell)")
    ax.set_title("paper simulation: FVU against L0", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["hierarchy", "paper", "pbmc68k_reduced"])
    args = parser.parse_args()
    path = RESULTS / "architectures.json"
    results = json.loads(path.read_text()) if args.only and path.exists() else {}
    results["platform"] = platform.platform()
    start = time.perf_counter()
    for name, run in [("hierarchy", hierarchy), ("paper", paper), ("pbmc68k_reduced", pbmc)]:
        if args.only in (None, name):
            results[name] = run()
    results["seconds"] = round(time.perf_counter() - start, 1)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    if "hierarchy" in results and "paper" in results:
        plot(results, path.with_suffix(".png"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
