"""Names you can trust: the SAE against factor models through one annotation pipeline, with its controls.

Everything with the defaults: ``tl.sae(adata, "X_pca")``, then ``tl.annotate_features`` (correlation loadings on
half the cells, the expression-matched null, term clusters), ``tl.score_annotations`` (AUROC on the held-out
half) and ``tl.describe_features``. The same three calls name the components of ``tl.factorize``: PCA and ICA of
the same ``X_pca`` (half as many components as SAE features, at most its dimension, each read as two signed
features; factor models get at most 64 features), NMF and consensus
NMF of the log-normalised expression (as many components as SAE features).

* pbmc68k_reduced: for each model, the share of live features named (representative term at matched adjusted
  p < 0.05; decoupler's p against all genes beside it) and the median held-out AUROC of those names; for the SAE,
  the same with gene-shuffled GO BP sets and with expression-matched random sets (each set's genes replaced by
  random genes of the same expression stratum; 10 seeds each), and the share of named features held by the most
  common term before the redundancy step (``min_jaccard=1``) and by the most common cluster after it.
* simulation (``datasets.simulate``, cell-type design): gene sets built from the true loadings (the 30 top genes of
  each programme) plus as many random sets; a name is correct when it is the programme the feature's activation
  correlates with most. Precision of the names per model.

Usage::

    python benchmarks/annotation.py      # writes benchmarks/results/annotation.json
    python benchmarks/annotation.py --only simulation   # reruns one part
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc

import cellsae_kit as csk
from cellsae_kit.tl._null import expression_strata
from cellsae_kit.tl._shared import correlations

RESULTS = Path(__file__).parent / "results"
MAX_FACTOR_FEATURES = 64
N_CONTROLS = 10  # seeds of shuffled and of expression-matched random gene sets


def fit_models(adata) -> dict[str, str]:
    """Train the SAE with defaults and the factor models (NMF on ``obsm["X_lognorm"]``); return model -> key."""
    csk.tl.sae(adata, "X_pca", random_state=0, progress=False)
    # as many factor features as SAE features, at most 64 (consensus NMF of hundreds of components takes long)
    m = min(csk.get.sae(adata).n_features, MAX_FACTOR_FEATURES)
    keys = {"sae": "sae"}
    n = min(m // 2, adata.obsm["X_pca"].shape[1])
    for method, rep in [("pca", "X_pca"), ("ica", "X_pca")]:
        csk.tl.factorize(adata, rep, method, n_components=n, key_added=f"{method}_factors")
        keys[method] = f"{method}_factors"
    for method in ["nmf", "cnmf"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NMF's convergence note at 500 iterations
            csk.tl.factorize(adata, "X_lognorm", method, n_components=m, key_added=f"{method}_factors")
        keys[method] = f"{method}_factors"
    return keys


def named(adata, key: str, net, groupby: str | None = None, **options) -> dict:
    """Annotate, check and describe one model; the summary numbers."""
    csk.tl.annotate_features(adata, net, key, **options)
    # The default check leaves the feature's 10 top genes out of its term; the same check with every gene of it:
    csk.tl.score_annotations(adata, net, key, n_exclude=0)
    with_top_genes = adata.uns[key]["features"]["best_term_auroc"].copy()
    csk.tl.score_annotations(adata, net, key)
    csk.tl.describe_features(adata, key, groupby=groupby)
    table = adata.uns[key]["features"]
    live = ~table["dead"]
    hit = live & table["best_term"].notna()
    by_decoupler = (table["best_term_pval_adj"] < 0.05) & live
    clusters = table.loc[hit, "best_term_cluster"].astype(str).value_counts()
    terms = table.loc[hit, "best_term"].astype(str).value_counts()
    return {
        "n_features": len(table),
        "n_live": int(live.sum()),
        "named_fraction": round(float(hit.sum() / max(live.sum(), 1)), 4),
        "named_fraction_decoupler_p_of_the_same_terms": round(float(by_decoupler.sum() / max(live.sum(), 1)), 4),
        "median_held_out_auroc": round(float(table.loc[hit, "best_term_auroc"].median()), 4) if hit.any() else None,
        "median_held_out_auroc_with_top_genes (n_exclude=0)": (
            round(float(with_top_genes[hit].median()), 4) if hit.any() else None
        ),
        "confidence": table["confidence"].value_counts().to_dict(),
        "top_clusters": clusters.head(6).to_dict(),
        "top_terms": terms.head(6).to_dict(),
        "most_common_cluster_share": round(float(clusters.iloc[0] / hit.sum()), 4) if hit.any() else None,
        "most_common_term_share": round(float(terms.iloc[0] / hit.sum()), 4) if hit.any() else None,
        "n_distinct_clusters": int(len(clusters)),
    }


def shuffled(net: pd.DataFrame, genes: pd.Index, seed: int = 0) -> pd.DataFrame:
    """The same sets, sizes kept, with genes drawn at random from the data's genes."""
    rng = np.random.default_rng(seed)
    rows = []
    for source, targets in net[net["target"].isin(genes)].groupby("source")["target"]:
        rows += [(source, g) for g in rng.choice(genes, size=len(targets), replace=False)]
    return pd.DataFrame(rows, columns=["source", "target"])


def matched_random(net: pd.DataFrame, genes: pd.Index, strata: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Each set's genes replaced by random genes of the same expression stratum."""
    rng = np.random.default_rng(seed)
    stratum = pd.Series(strata, index=genes)
    pools = {s: genes[strata == s] for s in np.unique(strata)}
    rows = []
    for source, targets in net[net["target"].isin(genes)].groupby("source")["target"]:
        need = stratum[targets.to_numpy()].value_counts()
        for s, count in need.items():
            rows += [(source, g) for g in rng.choice(pools[s], size=count, replace=False)]
    return pd.DataFrame(rows, columns=["source", "target"])


def annotation_strata(adata, key: str = "sae") -> tuple[pd.Index, np.ndarray]:
    """The strata annotate_features used: mean expression of adata.raw on the annotation half."""
    held = adata.obs_names.isin(adata.uns[key]["annotation_held_out"])
    expression = adata.raw[:, adata.var_names].X[~held]
    expression = expression.toarray() if hasattr(expression, "toarray") else np.asarray(expression)
    mean, sd = expression.mean(axis=0), expression.std(axis=0)
    keep = sd > 0
    return adata.var_names[keep], expression_strata(mean[keep], sd[keep])


def pbmc() -> dict:
    adata = sc.datasets.pbmc68k_reduced()
    adata.obsm["X_lognorm"] = adata.raw[:, adata.var_names].X.toarray()
    keys = fit_models(adata)
    go = csk.datasets.genesets("go_bp")
    out = {
        "sae_params": {k: v for k, v in adata.uns["sae"]["params"].items() if k in ("n_features", "k", "activation")}
    }
    for model, key in keys.items():
        out[model] = named(adata, key, go, groupby="bulk_labels")
        print("pbmc", model, out[model], flush=True)
    out["sae_descriptions"] = adata.uns["sae"]["features"]["description"].head(10).tolist()
    genes, strata = annotation_strata(adata)
    copy = adata.copy()
    controls = {
        "go_bp_shuffled": [named(copy, "sae", shuffled(go, genes, s))["named_fraction"] for s in range(N_CONTROLS)],
        "go_bp_expression_matched_random": [
            named(copy, "sae", matched_random(go, genes, strata, s))["named_fraction"] for s in range(N_CONTROLS)
        ],
    }
    # Under a complete null, Benjamini-Hochberg at 0.05 names a feature with probability up to 0.05: the mean over
    # seeds is the false-naming rate to compare with that nominal level.
    out[f"sae_controls ({N_CONTROLS} seeds of random sets)"] = controls | {
        f"{name}_mean": round(float(np.mean(values)), 4) for name, values in controls.items()
    }
    before = named(copy, "sae", go, min_jaccard=1.0)
    out["sae_redundancy"] = {
        "before (min_jaccard=1): most common term share": before["most_common_term_share"],
        "before: top terms": before["top_terms"],
        "after (default min_jaccard 0.5): most common cluster share": out["sae"]["most_common_cluster_share"],
        "after: top clusters": out["sae"]["top_clusters"],
        "before: distinct best terms": int(len(copy.uns["sae"]["features"]["best_term"].dropna().unique())),
        "after: distinct clusters": out["sae"]["n_distinct_clusters"],
    }
    unmatched = named(copy, "sae", go, null="none")
    out["sae_decoupler_null"] = {
        "named_fraction": unmatched["named_fraction"],
        "median_held_out_auroc": unmatched["median_held_out_auroc"],
        "top_clusters": unmatched["top_clusters"],
    }
    print(
        "pbmc controls",
        out[f"sae_controls ({N_CONTROLS} seeds of random sets)"],
        out["sae_redundancy"],
        out["sae_decoupler_null"],
        flush=True,
    )
    return out


def simulation(n_cells: int = 2000, n_programs: int = 20, seed: int = 0) -> dict:
    adata = csk.datasets.simulate(n_cells, n_programs, 8, n_genes=600, design="cell_type", random_state=seed)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    adata.raw = adata
    csk.tl.embed(adata, "pca", 50)
    adata.obsm["X_lognorm"] = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    keys = fit_models(adata)
    loadings = np.asarray(adata.varm["true_loadings"])
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n_programs):
        top = np.argsort(-loadings[:, j])[:30]
        rows += [(f"programme {j}", adata.var_names[g]) for g in top]
        rows += [(f"random {j}", g) for g in rng.choice(adata.var_names, 30, replace=False)]
    net = pd.DataFrame(rows, columns=["source", "target"])
    activity = np.asarray(adata.obsm["true_programs"])  # the programmes as they drive expression
    out = {"data": f"simulate({n_cells}, {n_programs}, 8, n_genes=600, cell_type), log1p, PCA 50"}
    for model, key in keys.items():
        summary = named(adata, key, net)
        codes = csk.get.codes(adata, key).toarray()
        r = correlations(codes, activity)  # features x programmes
        truth = {
            str(f): f"programme {int(np.nanargmax(np.abs(r[f])))}" for f in range(codes.shape[1]) if codes[:, f].any()
        }
        table = adata.uns[key]["features"]
        names = table["best_term"].dropna().astype(str)
        correct = [truth.get(f) == term for f, term in names.items()]
        summary["precision"] = round(float(np.mean(correct)), 4) if correct else None
        summary["named_random_sets"] = int(names.str.startswith("random").sum())
        out[model] = summary
        print("simulation", model, summary, flush=True)
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["pbmc68k_reduced", "simulation"], help="rerun one part, keep the other")
    only = parser.parse_args().only
    start = time.perf_counter()
    path = RESULTS / "annotation.json"
    result = json.loads(path.read_text()) if only and path.exists() else {}
    result["platform"] = platform.platform()
    if only in (None, "pbmc68k_reduced"):
        result["pbmc68k_reduced"] = pbmc()
    if only in (None, "simulation"):
        result["simulation"] = simulation()
    result["seconds"] = round(time.perf_counter() - start, 1)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
