"""A dictionary handed from one half of pbmc68k_reduced to the other: codes, names, size and time.

With the defaults: the first half (seeded) gets its own PCA, ``tl.sae``, ``tl.annotate_features`` (GO BP),
``tl.score_annotations`` and ``tl.describe_features``; ``io.write_dictionary`` writes it; a fresh Python process
reads the second half's ``.h5ad`` (expression only, no PCA), runs ``tl.encode(new, folder)`` and
``tl.score_annotations``. Reported: whether the codes equal those of projecting by hand and encoding with the
reference AnnData, the median AUROC of the names on the reference's held-out cells and on the new cells, and the
dictionary's size and write/read seconds, also for a 16,384-feature dictionary on 2,000 genes.

Usage::

    python benchmarks/dictionary.py      # writes benchmarks/results/dictionary.json
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc

import cellsae_kit as csk

RESULTS = Path(__file__).parent / "results"


def size_kb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir()) / 1024, 1)


def halves(workdir: Path, seed: int = 0) -> dict:
    adata = sc.datasets.pbmc68k_reduced()
    first = np.zeros(adata.n_obs, dtype=bool)
    first[np.random.default_rng(seed).permutation(adata.n_obs)[: adata.n_obs // 2]] = True
    ref, new = adata[first].copy(), adata[~first].copy()
    del new.obsm["X_pca"], new.varm["PCs"], new.uns["pca"]
    sc.pp.pca(ref)
    csk.tl.sae(ref, "X_pca", random_state=seed, progress=False)
    csk.tl.annotate_features(ref, "go_bp")
    csk.tl.score_annotations(ref, "go_bp")
    csk.tl.describe_features(ref, groupby="bulk_labels")
    start = time.perf_counter()
    folder = csk.io.write_dictionary(ref, workdir / "pbmc_half", source="pbmc68k_reduced, first half")
    write_s = time.perf_counter() - start
    new.write_h5ad(workdir / "new.h5ad")
    script = (
        "import time, anndata as ad, cellsae_kit as csk\n"
        f"new = ad.read_h5ad({str(workdir / 'new.h5ad')!r})\n"
        "start = time.perf_counter()\n"
        f"csk.tl.encode(new, {str(folder)!r})\n"
        "print(time.perf_counter() - start)\n"
        "csk.tl.score_annotations(new, 'go_bp')\n"
        f"new.write_h5ad({str(workdir / 'encoded.h5ad')!r})\n"
    )
    encode_s = float(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout)
    encoded = ad.read_h5ad(workdir / "encoded.h5ad")
    by_hand = new.copy()
    by_hand.obsm["X_pca"] = ((new.X - ref.X.mean(axis=0)) @ ref.varm["PCs"]).astype(np.float32)
    csk.tl.encode(by_hand, ref, key_added="by_hand")
    table = ref.uns["sae"]["features"]
    named = table["best_term"].notna() & ~table["dead"]
    carried = encoded.uns["sae"]["features"]
    return {
        "cells": {"reference": ref.n_obs, "new": new.n_obs},
        "sae_params": {name: ref.uns["sae"]["params"][name] for name in ("n_features", "activation", "k")},
        "codes_equal_to_projecting_by_hand": bool(abs(encoded.obsm["X_sae"] - by_hand.obsm["X_by_hand"]).max() == 0),
        "names_carried": bool((carried["best_term"].astype(str) == table["best_term"].astype(str)).all()),
        "named_fraction": round(float(named.mean()), 4),
        "median_auroc_reference_held_out": round(float(table.loc[named, "best_term_auroc"].median()), 4),
        "median_auroc_new_cells": round(float(carried.loc[named.to_numpy(), "best_term_auroc"].median()), 4),
        "n_names_scored_on_new_cells": int(carried.loc[named.to_numpy(), "best_term_auroc"].notna().sum()),
        "size_kb": size_kb(folder),
        "write_seconds": round(write_s, 3),
        "encode_seconds_in_a_fresh_process": round(encode_s, 3),
    }


def large(workdir: Path, n_features: int = 16384, n_genes: int = 2000) -> dict:
    """A wide dictionary on expression: size, write and read time (one epoch of training, it is about files)."""
    adata = csk.datasets.simulate(2000, 20, n_genes=n_genes, random_state=0)
    sc.pp.log1p(adata)
    csk.tl.sae(adata, "X", n_features=n_features, k=8, n_epochs=1, progress=False)
    start = time.perf_counter()
    folder = csk.io.write_dictionary(adata, workdir / "wide")
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    csk.io.read_dictionary(folder)
    return {
        "n_features": n_features,
        "n_genes": n_genes,
        "size_mb": round(size_kb(folder) / 1024, 1),
        "write_seconds": round(write_s, 2),
        "read_seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = {"platform": platform.platform(), "pbmc68k_reduced_halves": halves(Path(tmp))}
        print(out)
        out["wide_expression_dictionary"] = large(Path(tmp))
    out["seconds"] = round(time.perf_counter() - start, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dictionary.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
