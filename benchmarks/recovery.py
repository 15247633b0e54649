"""Do SAE features recover the true programs of a simulation, and how does that depend on completeness?

The reference study's central experiment (Schuster, arXiv 2410.11468), side by side in one run:

* data: :func:`cellsae_kit.datasets.simulate` with the study's generative settings (100 Poisson programs with
  rates 1.0-10.9, 3 covariates, Bernoulli(0.1) program-to-gene map) in both designs: ``"cell_type"`` (40 cell
  types with binary program masks, the study's) and ``"independent"`` (each program switched on per cell);
  10,000 cells and 2,000 genes (the study: 20,000 genes), seeds 0, 1, 2;
* representations of rising completeness: PCA of the counts with 20, 50, 80 and 150 components
  (:func:`cellsae_kit.tl.embed`, ``normalize=False``; the programs act linearly on the counts), scored by
  :func:`cellsae_kit.tl.completeness` (held-out R^2 of a linear regression to each program);
* methods on each representation: the SAE (:func:`cellsae_kit.tl.sae` with the recipe below) and the baselines of
  :func:`cellsae_kit.tl.factorize` (PCA, FastICA, NMF, dictionary learning, as many components as dimensions),
  all scored by :func:`cellsae_kit.tl.recovery` (median over programs of the best |Pearson r| of any feature,
  and the one-to-one Hungarian matched score);
* an ablation on the most complete representation (150 components, seed 0): ``tl.sae``'s defaults, then one
  recipe at a time, and the recipe on the standardised representation.

The SAE recipe: BatchTopK with k = 32 (a cell has about 30 of the 100 programs on; k is capped at half the
representation's dimension, since with k >= d a TopK SAE reconstructs anything without being sparse), 256
features, batches of 256 cells at a learning rate of 4e-3 for 100 epochs (about 3,500 steps) without early
stopping. The features separate into programs late and suddenly, after a plateau of the validation error that
early stopping mistakes for convergence.

Usage::

    python benchmarks/recovery.py            # the full grid, ~30 min on 2 CPU cores; results/recovery.json + .png
    python benchmarks/recovery.py --quick    # a small grid for a smoke test (results/recovery_quick.*)
    python benchmarks/recovery.py --figure-only  # redraw results/recovery.png from results/recovery.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
DESIGNS = ["cell_type", "independent"]
BASELINES = ["pca", "ica", "nmf", "dictionary"]
METHODS = ["sae", *BASELINES]
FULL = {
    "n_cells": 10_000,
    "n_genes": 2_000,
    "sizes": [20, 50, 80, 150],
    "seeds": [0, 1, 2],
    "n_epochs": 100,
    "default_epochs": None,
}
QUICK = {"n_cells": 2_000, "n_genes": 500, "sizes": [20, 80], "seeds": [0], "n_epochs": 10, "default_epochs": 10}
RECIPE = {"n_features": 256, "k": 32, "activation": "batchtopk", "lr": 4e-3, "batch_size": 256}
# One recipe at a time, from tl.sae's defaults to the full recipe; then the recipe on standardised input.
ABLATION = [
    ("tl.sae defaults (512 features, TopK k=16)", {}, False),
    ("k=32, 256 features", {"n_features": 256, "k": 32}, False),
    ("+ batches of 256, lr 4e-3, 100 epochs, no early stopping", {**RECIPE, "activation": "topk"}, False),
    ("+ BatchTopK (the recipe)", RECIPE, False),
    ("the recipe on the standardised representation", RECIPE, True),
]


def _single_thread() -> None:
    # Two workers on two cores: one thread each keeps timings honest and CPU runs reproducible.
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def simulate(design: str, seed: int, config: dict):
    import cellsae_kit as csk

    n_cell_types = 40 if design == "cell_type" else None
    return csk.datasets.simulate(
        config["n_cells"], 100, n_cell_types, design=design, n_genes=config["n_genes"], random_state=seed
    )


def sae_options(n_latent: int, config: dict, overrides: dict | None = None) -> dict:
    """The recipe (or ``overrides`` of tl.sae's defaults), with k capped at half the dimension."""
    options = dict(RECIPE if overrides is None else overrides)
    if "lr" in options:  # the recipe's schedule: a fixed number of epochs, no early stopping
        options |= {"n_epochs": config["n_epochs"], "patience": config["n_epochs"]}
    elif config["default_epochs"] is not None:  # the quick smoke test shortens tl.sae's default schedule too
        options["n_epochs"] = config["default_epochs"]
    options["k"] = min(options.get("k", 16), n_latent // 2)
    return options


def score(adata, key: str, seconds: float) -> dict:
    import cellsae_kit as csk

    summary = csk.tl.recovery(adata, key, inplace=False)["summary"]
    names = ["median_best_abs_r", "mean_best_abs_r", "matched_score", "n_recovered", "n_redundant_pairs", "mean_l0"]
    return {name: summary[name] for name in names} | {"seconds": round(seconds, 1)}


def grid_job(design: str, seed: int, config: dict) -> list[dict]:
    """Every representation size x method for one design and seed."""
    import cellsae_kit as csk

    _single_thread()
    adata = simulate(design, seed, config)
    rows = []
    for n_latent in config["sizes"]:
        rep = f"pca{n_latent}"
        csk.tl.embed(adata, "pca", n_latent, normalize=False, key_added=rep, random_state=seed)
        r2 = csk.tl.completeness(adata, f"X_{rep}", inplace=False)["r2"]
        cell = {
            "design": design,
            "seed": seed,
            "n_latent": n_latent,
            "completeness_median": float(r2.median()),
            "completeness_min": float(r2.min()),
        }
        start = time.perf_counter()
        options = sae_options(n_latent, config)
        csk.tl.sae(adata, f"X_{rep}", key_added="sae", random_state=seed, device="cpu", progress=False, **options)
        rows.append(cell | {"method": "sae"} | score(adata, "sae", time.perf_counter() - start))
        for method in BASELINES:
            start = time.perf_counter()
            with warnings.catch_warnings():
                # Non-convergence is part of what a baseline scores; it is not hidden in the result.
                warnings.simplefilter("ignore", RuntimeWarning)
                csk.tl.factorize(adata, f"X_{rep}", method, key_added=method, random_state=seed)
            rows.append(cell | {"method": method} | score(adata, method, time.perf_counter() - start))
        print(design, seed, n_latent, f"completeness {cell['completeness_median']:.3f}", flush=True)
    return rows


def ablation_job(design: str, config: dict) -> list[dict]:
    """tl.sae's defaults, then the recipe one step at a time, on the most complete representation (seed 0)."""
    import cellsae_kit as csk

    _single_thread()
    adata = simulate(design, 0, config)
    n_latent = config["sizes"][-1]
    csk.tl.embed(adata, "pca", n_latent, normalize=False, key_added="rep")
    X = adata.obsm["X_rep"]
    adata.obsm["X_rep_standardised"] = (X / X.std(axis=0)).astype(np.float32)
    r2 = csk.tl.completeness(adata, "X_rep", inplace=False)["r2"]
    rows = []
    for step, overrides, standardised in ABLATION:
        options = sae_options(n_latent, config, overrides)
        use_rep = "X_rep_standardised" if standardised else "X_rep"
        start = time.perf_counter()
        csk.tl.sae(adata, use_rep, key_added="sae", device="cpu", progress=False, **options)
        row = {
            "design": design,
            "n_latent": n_latent,
            "completeness_median": float(r2.median()),
            "completeness_min": float(r2.min()),
            "step": step,
            "options": options,
            "standardised": standardised,
            "epochs_run": int(adata.uns["sae"]["metrics"]["n_epochs"]),
            "fvu_validation": float(adata.uns["sae"]["metrics"]["fvu_validation"]),
        }
        rows.append(row | score(adata, "sae", time.perf_counter() - start))
        print(design, step, f"median best |r| {rows[-1]['median_best_abs_r']:.3f}", flush=True)
    return rows


def summarise(grid: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per design x representation x method."""
    cols = ["completeness_median", "completeness_min", "median_best_abs_r", "matched_score", "n_recovered", "seconds"]
    table = grid.groupby(["design", "n_latent", "method"], sort=False)[cols].agg(["mean", "std"])
    table.columns = [f"{a}_{b}" for a, b in table.columns]
    return table.reset_index()


def figure(summary: pd.DataFrame, path: Path, n_seeds: int) -> None:
    """Recovery against completeness, one line per method, one column per design."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sae": "tab:red", "pca": "tab:blue", "ica": "tab:green", "nmf": "tab:purple", "dictionary": "tab:grey"}
    labels = {"sae": "SAE", "pca": "PCA", "ica": "ICA", "nmf": "NMF", "dictionary": "dictionary learning"}
    metrics = [("median_best_abs_r", "median best |r|"), ("matched_score", "matched score")]
    fig, axes = plt.subplots(2, 2, figsize=(9, 7), sharex=True, sharey=True)
    for col, design in enumerate(DESIGNS):
        part = summary[summary["design"] == design]
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row, col]
            for method in METHODS:
                m = part[part["method"] == method].sort_values("completeness_median_mean")
                ax.errorbar(
                    m["completeness_median_mean"],
                    m[f"{metric}_mean"],
                    yerr=m[f"{metric}_std"].fillna(0),
                    color=colors[method],
                    marker="o",
                    ms=4,
                    capsize=2,
                    label=labels[method],
                )
            ax.axhline(0.9, color="black", lw=0.6, ls=":")
            ax.set_ylim(0, 1.02)
            ax.set_xlim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"design = {design!r}")
            if row == 1:
                ax.set_xlabel("completeness of the representation\n(median held-out R$^2$ over programs)")
                ax.annotate(
                    f"points: PCA with {', '.join(map(str, sorted(part['n_latent'].unique())))} components",
                    (0.02, 0.96),
                    xycoords="axes fraction",
                    va="top",
                    fontsize=8,
                )
            if col == 0:
                ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Recovery of 100 simulated programs (mean and s.d. over {n_seeds} seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Run the grid and the ablation, write the JSON results and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid for a smoke test")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--figure-only", action="store_true", help="redraw the figure from the stored JSON")
    args = parser.parse_args()
    config = QUICK if args.quick else FULL
    if args.figure_only:
        path = RESULTS / f"recovery{'_quick' if args.quick else ''}.json"
        stored = json.loads(path.read_text())
        figure(pd.DataFrame(stored["summary"]), path.with_suffix(".png"), len(stored["data"]["seeds"]))
        return
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        # The long ablations first, so that the grid jobs fill in around them.
        ablations = [pool.submit(ablation_job, design, config) for design in DESIGNS]
        grids = [pool.submit(grid_job, design, seed, config) for design in DESIGNS for seed in config["seeds"]]
        ablation = [row for job in ablations for row in job.result()]
        grid = pd.DataFrame([row for job in grids for row in job.result()])
    summary = summarise(grid)
    headline = summary[summary["n_latent"] == config["sizes"][-1]]
    print(headline[["design", "method", "completeness_min_mean", "median_best_abs_r_mean", "matched_score_mean"]])

    import torch

    import cellsae_kit as csk

    result = {
        "benchmark": "recovery",
        "data": {
            "simulate": {"n_cells": config["n_cells"], "n_programs": 100, "n_genes": config["n_genes"]},
            "designs": DESIGNS,
            "n_cell_types": 40,
            "seeds": config["seeds"],
            "representations": [f"PCA of counts, {n} components" for n in config["sizes"]],
        },
        "sae_recipe": RECIPE
        | {"n_epochs": config["n_epochs"], "patience": config["n_epochs"], "k_cap": "n_latent // 2"},
        "baselines": "tl.factorize with as many components as dimensions (scikit-learn defaults of tl.factorize)",
        "note": (
            "median_best_abs_r: median over the 100 programs of the best |Pearson r| of any feature; matched_score: "
            "mean |r| after a one-to-one Hungarian assignment of features to programs; completeness: held-out R^2 "
            "of a linear regression from the representation to each program; seconds: fit time of the method, "
            "one CPU thread"
        ),
        "grid": grid.to_dict(orient="records"),
        "summary": summary.round(4).to_dict(orient="records"),
        "ablation": ablation,
        "versions": {"cellsae_kit": csk.__version__, "torch": torch.__version__},
        "platform": platform.platform(),
        "workers": args.jobs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    path = RESULTS / f"recovery{suffix}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    figure(summary, RESULTS / f"recovery{suffix}.png", len(config["seeds"]))
    print(f"wrote {path} and {path.with_suffix('.png')} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
