"""Size on disk and build time of ``pl.atlas``: pbmc68k_reduced at 64 and 512 features, and a 16k-feature dictionary.

Cases:

- ``pbmc``: ``tl.sae(adata, "X_pca")`` with its defaults, ``tl.feature_stats`` by ``bulk_labels``,
  ``tl.annotate_features(adata, "go_bp")``, ``tl.score_annotations`` and ``tl.describe_features``; then the atlas
  with every image;
- ``pbmc_512``: the same with ``n_features=512`` (the other settings derived by ``tl.sae`` as usual);
- ``16k``: an SAE of 16,384 features (``k=8``, one epoch) on the same 700 cells' ``X_pca``: quick to train, and a
  dictionary of the size the atlas must handle (its features are not meant to be good); ``tl.feature_stats`` and
  ``tl.annotate_features(adata, "progeny")``, so that the index and the pages carry terms; then the atlas with
  ``images="all"``, ``images=1000`` and ``images=False``.

Size is the files' bytes and the disk space they take (whole blocks, as ``du`` counts). The atlas is written to a
temporary folder, never into the repository. Each case's row records its machine and the load average when it
started: times measured on a busy machine are longer.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/atlas.py             # every case, into benchmarks/results/atlas.json
    OMP_NUM_THREADS=1 python benchmarks/atlas.py pbmc_512    # one case; the other rows of the file are kept
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import scanpy as sc

import cellsae_kit as csk

RESULTS = Path(__file__).parent / "results"


def _size(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    part = {name: sum(p.stat().st_size for p in (folder / name).iterdir()) for name in ("features", "img")}
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "disk_bytes": sum(p.stat().st_blocks * 512 for p in files),
        "index_js_bytes": (folder / "data" / "index.js").stat().st_size,
        "features_bytes": part["features"],
        "largest_feature_js_bytes": max(p.stat().st_size for p in (folder / "features").iterdir()),
        "images_bytes": part["img"],
    }


def _timed(func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    return round(time.perf_counter() - start, 2)


def _atlas(adata, folder: Path, **kwargs) -> dict:
    seconds = _timed(csk.pl.atlas, adata, folder, groupby="bulk_labels", progress=False, overwrite=True, **kwargs)
    return {"seconds": seconds} | _size(folder)


def pbmc(work: Path, **sae_kwargs) -> dict:
    adata = sc.datasets.pbmc68k_reduced()
    prep = {
        "sae": _timed(csk.tl.sae, adata, "X_pca", progress=False, **sae_kwargs),
        "feature_stats": _timed(csk.tl.feature_stats, adata, groupby="bulk_labels"),
        "annotate_features": _timed(csk.tl.annotate_features, adata, "go_bp"),
        "score_annotations": _timed(csk.tl.score_annotations, adata, "go_bp"),
        "describe_features": _timed(csk.tl.describe_features, adata, groupby="bulk_labels"),
    }
    return {
        "n_cells": adata.n_obs,
        "n_features": csk.get.sae(adata).n_features,
        "live_features": int((~adata.uns["sae"]["features"]["dead"]).sum()),
        "prep_seconds": prep,
        "atlas_all_images": _atlas(adata, work / "pbmc"),
    }


def large(work: Path) -> dict:
    adata = sc.datasets.pbmc68k_reduced()
    prep = {
        "sae": _timed(csk.tl.sae, adata, "X_pca", n_features=16384, k=8, n_epochs=1, progress=False),
        "feature_stats": _timed(csk.tl.feature_stats, adata, groupby="bulk_labels"),
        "annotate_features": _timed(csk.tl.annotate_features, adata, "progeny"),
    }
    table = adata.uns["sae"]["features"]
    return {
        "n_cells": adata.n_obs,
        "n_features": csk.get.sae(adata).n_features,
        "live_features": int((~table["dead"]).sum()),
        "prep_seconds": prep,
        "atlas_all_images": _atlas(adata, work / "all"),
        "atlas_1000_images": _atlas(adata, work / "some", images=1000),
        "atlas_no_images": _atlas(adata, work / "none", images=False),
    }


CASES = {"pbmc": pbmc, "pbmc_512": partial(pbmc, n_features=512), "16k": large}


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the cases named (all by default) and write their rows into ``results/atlas.json``, keeping the others.

    Parameters
    ----------
    argv
        The arguments, without the program name; ``None`` reads ``sys.argv``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"cases to run: {', '.join(CASES)} (default: all)")
    cases = parser.parse_args(argv).cases or list(CASES)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    path = RESULTS / "atlas.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        for name in cases:
            results[name] = {"machine": _machine()} | CASES[name](Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({name: results[name] for name in CASES if name in results}, indent=2) + "\n")
    print(json.dumps({name: results[name] for name in cases}, indent=2))


if __name__ == "__main__":
    main()
