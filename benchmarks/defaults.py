"""What ``tl.sae(adata, rep)`` gives with no other argument, next to the hand-tuned recipe and the sweep.

The table the ``"auto"`` rules (:func:`cellsae_kit.models.resolve`) come from and are checked against, in one run:

* ``simulation``: the grid of ``benchmarks/recovery.py`` at 80 and 150 PCA components of the counts, both designs,
  seeds 0-2: the defaults next to the recipe of ``recovery.py`` (256 features, BatchTopK k=32, lr 4e-3, batches
  of 256, 100 epochs): median best |r| against the true programs, and the ratio defaults / recipe;
* ``rules``: on the same data (150 components, seed 0), the defaults with one rule changed at a time (k,
  dictionary size, TopK instead of BatchTopK, early stopping), the measurements the rules were chosen from;
* ``sweep``: :func:`cellsae_kit.tl.sae_sweep` (128 and 256 features, k in {16, 32}, 2 seeds) at the most
  and least complete point; its recommended setting (chosen without the truth) refitted, next to the defaults;
* ``pbmc68k_reduced``: the defaults' validation FVU against the top-L0 principal components, marker features,
  GO BP annotation of the live features (gene loadings composed from the PCA and, as ``tl.feature_genes``
  computes them, from correlation with expression), the validation FVU of half the dictionary, and two
  :func:`cellsae_kit.tl.consensus` runs with their defaults on disjoint seed sets, compared with
  :func:`cellsae_kit.tl.stability`;
* ``small``: simulations of 150 and 300 cells and scanpy's ``krumsiek11`` (640 cells x 11 genes): the defaults'
  fit time and validation FVU; a sweep's validation FVU (mean of its two seeds) at the default setting against
  its best setting's, and the single default run's against the same best.

Usage::

    python benchmarks/defaults.py           # ~30 min on 2 CPU cores; writes results/defaults.json
    python benchmarks/defaults.py --quick   # a smoke test on small data (results/defaults_quick.json)
    python benchmarks/defaults.py --only small pbmc68k_reduced   # rerun parts, keep the others
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from recovery import RECIPE, _single_thread, sae_options, score, simulate

RESULTS = Path(__file__).parent / "results"
FULL = {"n_cells": 10_000, "n_genes": 2_000, "sizes": [80, 150], "seeds": [0, 1, 2], "n_epochs": 100}
QUICK = {"n_cells": 2_000, "n_genes": 500, "sizes": [80], "seeds": [0], "n_epochs": 10}
RULE_CHANGES = [
    ("k=16 instead of 32", {"k": 16}),
    ("128 features instead of 256 (k stays 32)", {"n_features": 128}),
    ("128 features and k=16", {"n_features": 128, "k": 16}),
    ("512 features instead of 256", {"n_features": 512}),
    ("TopK instead of BatchTopK", {"activation": "topk"}),
    ("early stopping (patience 10 epochs)", {"patience": 10}),
]
MARKERS = {
    "B": ["CD79A", "CD79B", "MS4A1"],
    "NK": ["NKG7", "GNLY"],
    "monocyte": ["LYZ", "S100A8", "CST3"],
    "T": ["CD3E", "CD3D", "IL7R"],
}


def _fit(adata, rep: str, **options) -> dict:
    import cellsae_kit as csk

    start = time.perf_counter()
    csk.tl.sae(adata, rep, device="cpu", progress=False, **options)
    seconds = time.perf_counter() - start
    entry = csk.get.sae(adata)
    used = {name: entry.params[name] for name in ("n_features", "k", "activation", "batch_size", "lr", "n_epochs")}
    return {"settings": used, "fvu_validation": float(entry.metrics["fvu_validation"]), "seconds": round(seconds, 2)}


def _simulation(design: str, seed: int, config: dict):
    import cellsae_kit as csk

    adata = simulate(design, seed, config)
    for size in config["sizes"]:
        csk.tl.embed(adata, "pca", size, normalize=False, key_added=f"pca{size}", random_state=seed)
    return adata


def simulation_job(design: str, seed: int, config: dict) -> list[dict]:
    """The defaults and the recipe at each representation size."""
    _single_thread()
    adata = _simulation(design, seed, config)
    rows = []
    for size in config["sizes"]:
        cell = {"design": design, "seed": seed, "n_latent": size}
        defaults = _fit(adata, f"X_pca{size}", random_state=seed)
        rows.append(cell | {"method": "defaults"} | defaults | score(adata, "sae", defaults["seconds"]))
        recipe = _fit(adata, f"X_pca{size}", random_state=seed, **sae_options(size, config))
        rows.append(cell | {"method": "recipe"} | recipe | score(adata, "sae", recipe["seconds"]))
        print(design, seed, size, rows[-2]["median_best_abs_r"], rows[-1]["median_best_abs_r"], flush=True)
    return rows


def rules_job(design: str, config: dict) -> list[dict]:
    """The defaults with one rule changed at a time, seed 0."""
    _single_thread()
    adata = _simulation(design, 0, config)
    rows = []
    for size in config["sizes"]:
        for change, options in RULE_CHANGES:
            if size != config["sizes"][-1]:  # the most complete representation only
                continue
            result = _fit(adata, f"X_pca{size}", **options)
            rows.append({"design": design, "n_latent": size, "change": change} | result | score(adata, "sae", 0))
            print(design, size, change, rows[-1]["median_best_abs_r"], flush=True)
    return rows


def sweep_job(design: str, size: int, config: dict) -> dict:
    """A settings sweep with the truth reported (not used to choose); its recommendation refitted."""
    import cellsae_kit as csk

    _single_thread()
    adata = _simulation(design, 0, config)
    start = time.perf_counter()
    csk.tl.sae_sweep(
        adata, f"X_pca{size}", n_features=[128, 256], k=[16, 32], truth="true_programs", device="cpu", progress=False
    )
    seconds = time.perf_counter() - start
    table = adata.uns["sae_sweep"]["sweep"]
    chosen = table[table["recommended"]].iloc[0]
    return {
        "design": design,
        "n_latent": size,
        "recommended": {name: chosen[name] for name in ("n_features", "k", "activation")},
        "recommended_refit": score(adata, "sae", 0),
        "table": table.round(4).to_dict(orient="records"),
        "seconds": round(seconds, 1),
    }


def _markers(adata) -> dict:
    import cellsae_kit as csk

    top = [set(csk.tl.top_genes(adata, f, n=20)["gene"]) for f in range(adata.obsm["X_sae"].shape[1])]
    return {name: sum(len(set(genes) & t) >= 2 for t in top) for name, genes in MARKERS.items()}


def _named(adata, **options) -> float:
    import cellsae_kit as csk

    csk.tl.annotate_features(adata, "go_bp", **options)
    table = adata.uns["sae"]["features"]
    live = ~table["dead"]
    return round(float((live & table["best_term"].notna()).sum() / live.sum()), 4)


def pbmc_job() -> dict:
    """pbmc68k_reduced with the defaults only."""
    import scanpy as sc
    from sklearn.decomposition import PCA

    import cellsae_kit as csk

    _single_thread()
    adata = sc.datasets.pbmc68k_reduced()
    fitted = _fit(adata, "X_pca")
    entry = csk.get.sae(adata)
    X = adata.obsm["X_pca"]
    val = np.asarray(entry.entry["validation_indices"])
    train = np.setdiff1d(np.arange(adata.n_obs), val)
    l0 = round(float(entry.metrics["l0"]))
    pca = PCA(l0).fit(X[train])
    residual = X[val] - pca.inverse_transform(pca.transform(X[val]))
    pca_fvu = float((residual**2).sum() / ((X[val] - X[val].mean(0)) ** 2).sum())
    result = fitted | {"l0": l0, "fvu_top_l0_pcs": round(pca_fvu, 4), "dead_fraction": entry.metrics["dead_fraction"]}
    result["features_with_2_markers"] = {"pca_loadings": _markers(adata)}
    # tl.annotate_features' defaults: correlation loadings on half the cells, the expression-matched null
    result["go_bp_named_fraction"] = {
        "annotate_features defaults": _named(adata),
        "decoupler null, same loadings": _named(adata, null="none"),
        "pca loadings, decoupler null, all cells": _named(adata, loadings="sae_loadings", null="none", held_out=0),
    }
    csk.tl.feature_genes(adata, method="correlation", progress=False)
    result["features_with_2_markers"]["correlation_loadings"] = _markers(adata)
    # the simulation prefers 4 features per active one (rules: 128 features at k=32); real data here does not
    half = _fit(sc.datasets.pbmc68k_reduced(), "X_pca", n_features=entry.n_features // 2)
    result["half_dictionary"] = {"settings": half["settings"], "fvu_validation": half["fvu_validation"]}
    start = time.perf_counter()
    csk.tl.consensus(adata, "X_pca", key_added="consensus_a", random_state=0, progress=False)
    csk.tl.consensus(adata, "X_pca", key_added="consensus_b", random_state=10, progress=False)
    csk.tl.stability(adata, ["consensus_a", "consensus_b"], key="consensus_a", progress=False)
    shared = adata.uns["consensus_a"]["stability"]
    result["consensus"] = {
        "seeds": "0-9 and 10-19",
        "settings": {k: adata.uns["consensus_a"]["params"][k] for k in ("n_features", "k", "activation")},
        "shared_at_0.9": round(float(shared["shared_at_0.9"]), 4),
        "shared_at_0.7": round(float(shared["shared_at_0.7"]), 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print("pbmc", result, flush=True)
    return result


def small_job(name: str) -> dict:
    """Small data: the defaults' time and validation FVU, and the best validation FVU of a sweep."""
    import scanpy as sc

    import cellsae_kit as csk

    _single_thread()
    if name == "krumsiek11":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # its duplicate cell names
            adata = sc.datasets.krumsiek11()
        rep = None
    else:
        n_cells = int(name.split("_")[1])
        adata = csk.datasets.simulate(n_cells, 20, 5, n_genes=500, random_state=0)
        csk.tl.embed(adata, "pca", 30, normalize=False, key_added="pca")
        rep = "X_pca"
    defaults = _fit(adata, rep)
    csk.tl.sae_sweep(adata, rep, device="cpu", refit=False, progress=False)
    table = adata.uns["sae_sweep"]["sweep"]
    best = table.loc[table["fvu_validation"].idxmin()]
    chosen = table[table["recommended"]].iloc[0]
    # the grid holds the default setting: compare it with the best one over the same seeds
    at_default = table[
        (table["n_features"] == defaults["settings"]["n_features"]) & (table["k"] == defaults["settings"]["k"])
    ]
    default_fvu = float(at_default["fvu_validation"].iloc[0])
    result = {
        "data": name,
        "shape": list(adata.shape if rep is None else adata.obsm[rep].shape),
        "defaults": defaults,
        "sweep_fvu_validation_at_default_setting": round(default_fvu, 6),
        "sweep_best_fvu_validation": round(float(best["fvu_validation"]), 6),
        "sweep_best_setting": {k: int(best[k]) for k in ("n_features", "k")},
        "sweep_recommended_fvu_validation": round(float(chosen["fvu_validation"]), 6),
        "ratio_defaults_to_best": round(default_fvu / float(best["fvu_validation"]), 3),
        "ratio_defaults_run_to_best": round(defaults["fvu_validation"] / float(best["fvu_validation"]), 3),
    }
    print(name, result, flush=True)
    return result


def summarise(rows: list[dict]) -> list[dict]:
    import pandas as pd

    table = pd.DataFrame(rows)
    out = []
    for (design, size), part in table.groupby(["design", "n_latent"]):
        d = part[part["method"] == "defaults"]["median_best_abs_r"]
        r = part[part["method"] == "recipe"]["median_best_abs_r"]
        out.append(
            {
                "design": design,
                "n_latent": int(size),
                "defaults_median_best_abs_r": round(float(d.mean()), 4),
                "recipe_median_best_abs_r": round(float(r.mean()), 4),
                "ratio": round(float(d.mean() / r.mean()), 3),
                "worst_seed_ratio": round(float((d.to_numpy() / r.to_numpy()).min()), 3),
            }
        )
    return out


PARTS = ("simulation", "rules", "sweep", "pbmc68k_reduced", "small")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke test")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run these parts, keep the others from the last run")
    args = parser.parse_args()
    config = QUICK if args.quick else FULL
    path = RESULTS / f"defaults{'_quick' if args.quick else ''}.json"
    parts = set(args.only or PARTS)
    result = json.loads(path.read_text()) if args.only and path.exists() else {"benchmark": "defaults"}
    start = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        jobs: dict[str, list] = {}
        if "simulation" in parts:
            jobs["simulation"] = [
                pool.submit(simulation_job, d, s, config) for d in ("cell_type", "independent") for s in config["seeds"]
            ]
        if "rules" in parts:
            jobs["rules"] = [pool.submit(rules_job, d, config) for d in ("cell_type", "independent")]
        if "sweep" in parts:
            points = [("cell_type", config["sizes"][-1]), ("independent", config["sizes"][0])]
            jobs["sweep"] = [pool.submit(sweep_job, d, s, config) for d, s in points]
        if "pbmc68k_reduced" in parts:
            jobs["pbmc68k_reduced"] = [pool.submit(pbmc_job)]
        if "small" in parts:
            jobs["small"] = [pool.submit(small_job, n) for n in ("simulated_150", "simulated_300", "krumsiek11")]
        done = {name: [job.result() for job in part] for name, part in jobs.items()}
    if "simulation" in done:
        rows = [row for part in done["simulation"] for row in part]
        result["recipe"] = RECIPE | {"n_epochs": config["n_epochs"], "k_cap": "n_latent // 2"}
        result["simulation"] = {"config": config, "summary": summarise(rows), "runs": rows}
    if "rules" in done:
        result["rules"] = [row for part in done["rules"] for row in part]
    if "sweep" in done:
        result["sweep"] = done["sweep"]
    if "pbmc68k_reduced" in done:
        result["pbmc68k_reduced"] = done["pbmc68k_reduced"][0]
    if "small" in done:
        result["small"] = done["small"]
    import torch

    import cellsae_kit as csk

    earlier = result.get("seconds_by_part") or ({"all": result["seconds"]} if "seconds" in result else {})
    seconds = earlier | {"+".join(sorted(parts)): round(time.perf_counter() - start, 1)}
    result |= {
        "versions": {"cellsae_kit": csk.__version__, "torch": torch.__version__},
        "platform": platform.platform(),
        "workers": 2,
        "seconds_by_part": seconds if args.only else {"all": seconds["+".join(sorted(parts))]},
    }
    result.pop("seconds", None)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
