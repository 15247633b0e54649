"""How much of an SAE on pbmc68k_reduced can be named, and do the names hold in the cells?

One run, offline, on scanpy's bundled ``pbmc68k_reduced`` with the quickstart's SAE (``X_pca``, 512 features,
k = 8, seed 0) and a coarser one (64 features, k = 4):

* marker sets (B, NK, monocyte, T): the feature whose top 20 gene loadings hold at least two of the set and whose
  activation best separates the matching ``bulk_labels`` cells (AUROC);
* for GO BP and PROGENy, the share of live features with a term at adjusted p < 0.05 and the median AUROC of
  :func:`cellsae_kit.tl.score_annotations`;
* the same annotation with the gene labels of each set shuffled (same set sizes, random genes), side by side: the
  share of features a meaningless net would name, and the AUROC such names reach.

Two kinds of loadings: those ``tl.sae`` composes from the PCA (``"pca"``) and ``tl.feature_genes``'s correlation
of activations with ``.raw`` expression (``"correlation"``).

Usage::

    python benchmarks/annotation.py      # writes benchmarks/results/annotation.json
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import roc_auc_score

import cellsae_kit as csk

RESULTS = Path(__file__).parent / "results"
# The quickstart's SAE and a coarser one whose features each cover a larger share of a cell type.
CONFIGS = [(512, 8), (64, 4)]
MARKERS = {
    "B": (["CD79A", "CD79B", "MS4A1"], ["CD19+ B"]),
    "NK": (["NKG7", "GNLY"], ["CD56+ NK"]),
    "monocyte": (["LYZ", "S100A8", "CST3"], ["CD14+ Monocyte"]),
    "T": (["CD3E", "CD3D", "IL7R"], None),  # every CD4+/CD8+ group
}


def marker_features(adata, n_top: int = 20) -> dict:
    """Per marker set: the best-separating feature among those with >= 2 markers in its top loadings."""
    codes = adata.obsm["X_sae"].toarray()
    labels = adata.obs["bulk_labels"].astype(str)
    out = {}
    for name, (genes, groups) in MARKERS.items():
        groups = groups or [g for g in labels.unique() if g.startswith(("CD4+", "CD8+"))]
        is_group = labels.isin(groups).to_numpy()
        best = None
        for f in range(codes.shape[1]):
            top = csk.tl.top_genes(adata, f, n=n_top)["gene"]
            hits = sorted(set(genes) & set(top))
            if len(hits) >= 2 and codes[:, f].any():
                auroc = roc_auc_score(is_group, codes[:, f])
                if best is None or auroc > best["auroc"]:
                    best = {"feature": f, "markers_in_top20": hits, "auroc": round(float(auroc), 4)}
        n_with = sum(
            len(set(genes) & set(csk.tl.top_genes(adata, f, n=n_top)["gene"])) >= 2 for f in range(codes.shape[1])
        )
        out[name] = {"groups": groups, "n_features_with_2_markers": int(n_with), "best": best}
    return out


def shuffled(net: pd.DataFrame, genes: pd.Index, seed: int = 0) -> pd.DataFrame:
    """The same sets, sizes kept, with genes drawn at random from the data's genes."""
    rng = np.random.default_rng(seed)
    rows = []
    for source, targets in net[net["target"].isin(genes)].groupby("source")["target"]:
        rows += [(source, g) for g in rng.choice(genes, size=len(targets), replace=False)]
    return pd.DataFrame(rows, columns=["source", "target"]).assign(weight=1.0)


def annotation_summary(adata, net) -> dict:
    csk.tl.annotate_features(adata, net)
    csk.tl.score_annotations(adata, net)
    table = adata.uns["sae"]["features"]
    live = ~table["dead"]
    named = live & table["best_term"].notna()
    return {
        "n_live": int(live.sum()),
        "named_fraction": round(float(named.sum() / live.sum()), 4),
        "median_auroc": round(float(table.loc[named, "best_term_auroc"].median()), 4),
        "top_terms": table.loc[named, "best_term"].astype(str).value_counts().head(8).to_dict(),
    }


def main() -> None:
    start = time.perf_counter()
    result = {"data": "pbmc68k_reduced (700 cells, 765 genes)", "platform": platform.platform(), "runs": []}
    for n_features, k in CONFIGS:
        adata = sc.datasets.pbmc68k_reduced()
        csk.tl.sae(adata, "X_pca", n_features=n_features, k=k, random_state=0, progress=False)
        run = {
            "sae": {"use_rep": "X_pca", "n_features": n_features, "k": k, "random_state": 0},
            "metrics": {name: float(v) for name, v in adata.uns["sae"]["metrics"].items()},
            "loadings": {},
        }
        for loadings in ["pca", "correlation"]:
            if loadings == "correlation":
                csk.tl.feature_genes(adata, method="correlation", progress=False)
            genes = adata.var_names[np.abs(adata.varm["sae_loadings"]).sum(axis=1) > 0]
            entry = {"n_informative_genes": len(genes), "markers": marker_features(adata)}
            named_any = None
            for name in ["go_bp", "progeny"]:
                net = csk.datasets.genesets(name)
                entry[f"{name}_shuffled"] = annotation_summary(adata, shuffled(net, genes))
                entry[name] = annotation_summary(adata, net)
                named = adata.uns["sae"]["features"]["best_term"].notna()
                named_any = named if named_any is None else named_any | named
            live = ~adata.uns["sae"]["features"]["dead"]
            entry["named_fraction_go_or_progeny"] = round(float((named_any & live).sum() / live.sum()), 4)
            run["loadings"][loadings] = entry
            print(n_features, k, loadings, summary(entry), flush=True)
        result["runs"].append(run)
    result["seconds"] = round(time.perf_counter() - start, 1)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "annotation.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")


def summary(entry: dict) -> str:
    markers = {name: m["best"] and m["best"]["auroc"] for name, m in entry["markers"].items()}
    parts = [f"markers AUROC {markers}"]
    for name in ["go_bp", "go_bp_shuffled", "progeny", "progeny_shuffled"]:
        parts.append(f"{name}: named {entry[name]['named_fraction']:.3f}, AUROC {entry[name]['median_auroc']:.3f}")
    parts.append(f"GO or PROGENy named {entry['named_fraction_go_or_progeny']:.3f}")
    return "; ".join(parts)


if __name__ == "__main__":
    main()
