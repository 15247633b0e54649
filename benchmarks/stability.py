"""Do consensus SAEs give reproducible features where single SAEs do not?

Issue 5's goal: two consensus SAEs built from disjoint seed sets share >= 80% of their features at decoder
cosine >= 0.9, measured next to what single runs with different seeds share.

For each data set and SAE recipe, :func:`cellsae_kit.tl.consensus` is called twice, on disjoint seed sets
(seeds 0 .. n-1 and n .. 2n-1), and :func:`cellsae_kit.tl.stability` compares the two consensus SAEs. The runs
that ``tl.consensus`` trains are recorded on the way, so single runs are compared (every pair of the 2n runs,
Hungarian matching of decoder cosines) without training them twice. The outlier filter's threshold is then
varied on the recorded runs (cNMF's default 0.5, and 0.7 and 1.0), and for the 20-run recipe the consensus of
10 runs per set is shown too.

Data:

* ``pbmc68k_reduced`` (scanpy's bundled 700 PBMCs), ``X_pca`` (50 dimensions), 32 features;
* :func:`cellsae_kit.datasets.simulate` with 20 programs switched on independently in each cell (2,000 cells,
  500 genes), PCA of the counts with 30 components (:func:`cellsae_kit.tl.embed`), 20 features (one per
  program).

Usage::

    python benchmarks/stability.py     # about 1 min on 2 CPU cores; writes results/stability.json
"""

from __future__ import annotations

import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
THRESHOLDS = (0.7, 0.9)
DENSITY_THRESHOLDS = (0.5, 0.7, 1.0)
# Short schedules that converge on these small data sets: small batches, a higher learning rate.
SCHEDULE = {"batch_size": 128, "lr": 4e-3}
RECIPES = {
    "pbmc68k_reduced": [
        ("ReLU + L1 (0.05), 20 runs per consensus", {"activation": "relu", "l1_coef": 0.05, "n_epochs": 100}, 20),
        ("TopK (k=4), 10 runs per consensus", {"activation": "topk", "k": 4, "n_epochs": 100}, 10),
    ],
    "simulated": [
        ("TopK (k=6), 20 runs per consensus", {"activation": "topk", "k": 6, "n_epochs": 40}, 20),
        ("ReLU + L1 (0.05), 10 runs per consensus", {"activation": "relu", "l1_coef": 0.05, "n_epochs": 40}, 10),
    ],
}
N_FEATURES = {"pbmc68k_reduced": 32, "simulated": 20}


def load(name: str):
    import scanpy as sc

    import cellsae_kit as csk

    if name == "pbmc68k_reduced":
        return sc.datasets.pbmc68k_reduced()
    adata = csk.datasets.simulate(2000, 20, design="independent", n_genes=500, random_state=0)
    csk.tl.embed(adata, "pca", 30, normalize=False)
    return adata


def shared(scores: np.ndarray) -> dict[str, float]:
    return {f"shared_at_{t:g}": float(np.mean(scores >= t)) for t in THRESHOLDS}


def job(name: str) -> dict:
    """Every recipe on one data set, in one process (one thread: two data sets in parallel on two cores)."""
    import torch
    from threadpoolctl import threadpool_limits

    import cellsae_kit as csk
    import cellsae_kit.tl._consensus as consensus_module
    from cellsae_kit.tl._consensus import consensus_dictionary
    from cellsae_kit.tl._shared import match_features

    torch.set_num_threads(1)
    threadpool_limits(1)
    adata = load(name)
    n_features = N_FEATURES[name]
    recorded: list = []

    def recording_fit(*args, **kwargs):
        result = fit(*args, **kwargs)
        live = np.diff(result.codes.tocsc().indptr) > 0
        recorded.append(result.model.W_dec.detach().double().numpy()[live])
        return result

    fit = consensus_module.fit
    consensus_module.fit = recording_fit  # the runs inside tl.consensus, kept for the single-run comparison
    rows = []
    try:
        for label, options, n_runs in RECIPES[name]:
            recorded.clear()
            started = time.perf_counter()
            for key, first_seed in (("consensus_a", 0), ("consensus_b", n_runs)):
                csk.tl.consensus(
                    adata,
                    "X_pca",
                    n_runs=n_runs,
                    n_features=n_features,
                    key_added=key,
                    random_state=first_seed,
                    device="cpu",
                    progress=False,
                    **SCHEDULE,
                    **options,
                )
            seconds = time.perf_counter() - started
            csk.tl.stability(adata, ["consensus_b"], key="consensus_a", activations=True, thresholds=THRESHOLDS)
            result = adata.uns["consensus_a"]["stability"]
            runs = list(recorded)
            single = [shared(match_features(runs[i], runs[j]).score) for i, j in combinations(range(len(runs)), 2)]
            row = {
                "data": name,
                "recipe": label,
                "sae": {"n_features": n_features, **SCHEDULE, **options},
                "n_runs_per_consensus": n_runs,
                "single_runs": {
                    "n_runs": len(runs),
                    "n_pairs": len(single),
                    **{k: float(np.mean([s[k] for s in single])) for k in single[0]},
                    **{f"{k}_sd": float(np.std([s[k] for s in single])) for k in single[0]},
                    "fvu_validation": float(
                        np.mean([adata.uns[k]["runs"]["fvu_validation"].mean() for k in ("consensus_a", "consensus_b")])
                    ),
                },
                "consensus": {
                    "density_threshold": float(adata.uns["consensus_a"]["params"]["consensus"]["density_threshold"]),
                    **{f"shared_at_{t:g}": float(result[f"shared_at_{t:g}"]) for t in THRESHOLDS},
                    "mean_activation_r": float(result["mean_activation_r"]),
                    "fvu_validation": [
                        float(adata.uns[k]["metrics"]["fvu_validation"]) for k in ("consensus_a", "consensus_b")
                    ],
                    "outliers": [
                        int(adata.uns[k]["params"]["consensus"]["n_outliers"]) for k in ("consensus_a", "consensus_b")
                    ],
                    "pooled": [
                        int(adata.uns[k]["params"]["consensus"]["n_pooled"]) for k in ("consensus_a", "consensus_b")
                    ],
                    "support_median": float(adata.uns["consensus_a"]["features"]["support"].median()),
                },
                "seconds": round(seconds, 1),
            }
            # Tuning on the recorded runs: the outlier filter, and fewer runs per consensus.
            tuning = []
            sizes = sorted({n_runs, 10}) if n_runs > 10 else [n_runs]
            for per_set in sizes:
                set_a, set_b = runs[:per_set], runs[n_runs : n_runs + per_set]
                for density in DENSITY_THRESHOLDS:
                    entry = {"n_runs_per_consensus": per_set, "density_threshold": density}
                    try:
                        a = consensus_dictionary(set_a, n_features, density_threshold=density, random_state=0)
                        b = consensus_dictionary(set_b, n_features, density_threshold=density, random_state=n_runs)
                    except ValueError as error:  # too few features survive the filter
                        tuning.append(entry | {"error": str(error)})
                        continue
                    tuning.append(entry | shared(match_features(a.dictionary, b.dictionary).score))
            row["consensus_tuning"] = tuning
            rows.append(row)
            print(
                f"{name} | {label}: single runs share {row['single_runs']['shared_at_0.9']:.0%} at cosine >= 0.9, "
                f"consensus pairs {row['consensus']['shared_at_0.9']:.0%} ({seconds:.0f} s)",
                flush=True,
            )
    finally:
        consensus_module.fit = fit
    return {"data": name, "rows": rows}


def main() -> None:
    import torch

    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(job, RECIPES))
    out = {
        "benchmark": "stability",
        "goal": "two consensus SAEs from disjoint seed sets share >= 80% of features at decoder cosine >= 0.9",
        "data": {
            "pbmc68k_reduced": "scanpy's bundled 700 PBMCs, X_pca (50 dimensions)",
            "simulated": "datasets.simulate(2000 cells, 20 programs, design='independent', 500 genes, seed 0); "
            "tl.embed PCA of counts, 30 components",
        },
        "method": "tl.consensus on seeds 0..n-1 and n..2n-1 (density_threshold 0.5, refit='encoder'); "
        "tl.stability between the two; single runs: every pair of the 2n runs, Hungarian on decoder cosine",
        "results": [row for r in results for row in r["rows"]],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, 2 worker processes x 1 thread",
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "stability.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {path} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
