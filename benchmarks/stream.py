"""Out-of-core training: peak memory and throughput when the cells stay on disk, against the same data in memory.

Cases, each in its own Python process so that its peak resident memory (``VmHWM``) is its own, model, activations
and imports included:

- ``memory``: 2M cells x 50 dims (float32) read whole into memory, then ``tl.sae`` (the in-memory trainer);
- ``h5ad`` / ``zarr``: the same cells streamed from ``obsm["X_pca"]`` of an ``.h5ad`` file / a zarr store, as
  ``tl.sae(path, "X_pca")`` does (chunks of 8192 cells, 4 chunks shuffled together); the zarr store is written by
  anndata with its default chunking;
- ``sparse_h5ad``: 200k cells x 2000 genes, CSR expression ``X`` streamed from an ``.h5ad`` file.

Throughput is the training epoch's cells per second (validation included) and the wall time of the whole call
(centring sample, training, final evaluation, chunk-by-chunk encoding of every cell). The data are written to
``/tmp`` (``--data``), never into the repository.

Usage::

    python benchmarks/stream.py            # 2M x 50 and 200k x 2000, one epoch each (about 10 min on 2 cores)
    python benchmarks/stream.py --quick    # 200k x 50 and 20k x 2000, for a smoke test

Writes ``benchmarks/results/stream.json`` (``stream_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
FULL = {"dense_cells": 2_000_000, "dims": 50, "sparse_cells": 200_000, "genes": 2000, "genes_per_cell": 100}
QUICK = {"dense_cells": 200_000, "dims": 50, "sparse_cells": 20_000, "genes": 2000, "genes_per_cell": 100}
DENSE_SAE = {"n_features": 2048, "k": 32, "batch_size": 4096, "n_epochs": 1}
SPARSE_SAE = {"n_features": 1024, "k": 32, "batch_size": 4096, "n_epochs": 1}
RSS_LIMIT_MB = 1.5e9 / 2**20  # the goal's 1.5 GB in decimal units: 1430.5 MiB


def pca_atoms(rng: np.random.Generator, d: int) -> np.ndarray:
    """200 programs in ``d`` PCA-like dimensions, variance falling along the dimensions."""
    return rng.normal(size=(200, d)) * np.logspace(0.5, -0.5, d)


def pca_block(rng: np.random.Generator, atoms: np.ndarray, m: int) -> np.ndarray:
    """``m`` PCA-like cells (float32): each mixes 3 of the programs, plus noise."""
    weights = np.zeros((m, len(atoms)), dtype=np.float32)
    rows = np.repeat(np.arange(m), 3)
    weights[rows, rng.integers(0, len(atoms), 3 * m)] = rng.uniform(1, 3, 3 * m)
    return (weights @ atoms + 0.05 * rng.normal(size=(m, atoms.shape[1]))).astype(np.float32)


def expression_block(rng: np.random.Generator, m: int, genes: int, per: int):
    """``m`` cells of log-expression as CSR (float32): ``per`` random genes each, gamma-distributed counts."""
    from scipy import sparse

    chosen = np.sort(np.argpartition(rng.random((m, genes)), per, axis=1)[:, :per], axis=1)
    counts = np.log1p(rng.gamma(0.5, 4.0, size=(m, per))).astype(np.float32) + 0.1
    return sparse.csr_matrix((counts.ravel(), chosen.ravel(), np.arange(0, m * per + 1, per)), (m, genes))


def write_data(folder: Path, sizes: dict) -> None:
    """Write the dense cells (h5ad, zarr, npy) and the sparse expression (h5ad), block by block."""
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n, d = sizes["dense_cells"], sizes["dims"]
    atoms = pca_atoms(rng, d)
    X = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        X[start : start + m] = pca_block(rng, atoms, m)
    np.save(folder / "dense.npy", X)
    adata = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)), obsm={"X_pca": X})
    adata.write_h5ad(folder / "dense.h5ad")
    adata.write_zarr(folder / "dense.zarr")
    del adata, X

    n, g, per = sizes["sparse_cells"], sizes["genes"], sizes["genes_per_cell"]
    blocks = [expression_block(rng, min(10_000, n - start), g, per) for start in range(0, n, 10_000)]
    expression = ad.AnnData(sparse.vstack(blocks, format="csr"))
    expression.obs_names = expression.obs_names.astype(str)
    expression.write_h5ad(folder / "sparse.h5ad")


def run_case(case: str, folder: Path) -> dict:
    """Train one case in this process and report its throughput and peak memory."""
    import torch

    import cellsae_kit as csk

    torch.set_num_threads(2)
    baseline = peak_rss_mb()
    params = SPARSE_SAE if case.startswith("sparse") else DENSE_SAE
    started = time.perf_counter()
    if case == "memory":
        import anndata as ad

        adata = ad.AnnData(obsm={"X_pca": np.load(folder / "dense.npy")})
        loaded = time.perf_counter() - started
        csk.tl.sae(adata, "X_pca", progress=False, **params)
    elif case == "sparse_memory":
        import anndata as ad

        adata = ad.read_h5ad(folder / "sparse.h5ad")
        loaded = time.perf_counter() - started
        csk.tl.sae(adata, progress=False, **params)
    else:
        loaded = 0.0
        file = {"h5ad": "dense.h5ad", "zarr": "dense.zarr", "sparse_h5ad": "sparse.h5ad"}[case]
        adata = csk.tl.sae(folder / file, None if case.startswith("sparse") else "X_pca", progress=False, **params)
    wall = time.perf_counter() - started
    uns = adata.uns["sae"]
    history = uns["history"]
    n_train = adata.n_obs - len(uns["validation_indices"])
    return {
        "case": case,
        "n_cells": adata.n_obs,
        "n_inputs": int(uns["params"]["n_inputs"]),
        **params,
        "train_cells_per_s": float(n_train * len(history) / history["seconds"].sum()),
        "epoch_seconds": float(history["seconds"].sum()),
        "wall_seconds": wall,
        "load_seconds": loaded,
        "fvu_validation": float(uns["metrics"]["fvu_validation"]),
        "l0": float(uns["metrics"]["l0"]),
        "codes_nnz": int(adata.obsm["X_sae"].nnz),
        "rss_after_imports_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` starts afresh when the process image is replaced, whereas ``ru_maxrss`` keeps the parent's peak
    from before ``exec`` (a child spawned by a parent holding the data would report the parent's memory).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str]) -> dict:
    """Run one case of a benchmark script in a new Python process; return the JSON line it prints last."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"case {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def run_facts(load: list[float], started: float, written: float) -> dict:
    """Device, torch, load average at start and end, data-writing and total seconds of a benchmark run."""
    import torch

    return {
        "device": f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "load_average_start_end": [load, list(os.getloadavg())],
        "data_write_seconds": written,
        "total_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller data for a smoke test")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cellsae_kit_stream_bench"), help="data folder")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in a child process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.data)))
        return

    sizes = QUICK if args.quick else FULL
    load = list(os.getloadavg())  # the machine may be shared: timings are only comparable within one run
    folder = args.data / ("quick" if args.quick else "full")
    started = time.perf_counter()
    if not (folder / "sparse.h5ad").exists():
        write_data(folder, sizes)
    written = time.perf_counter() - started
    cases = ("memory", "h5ad", "zarr", "sparse_memory", "sparse_h5ad")
    results = [run_child(__file__, ["--case", case, "--data", str(folder)]) for case in cases]
    by_case = {r["case"]: r for r in results}
    for r in results:
        base = by_case["sparse_memory" if r["case"].startswith("sparse") else "memory"]
        r["throughput_vs_memory"] = r["train_cells_per_s"] / base["train_cells_per_s"]
        r["rss_under_limit"] = r["peak_rss_mb"] < RSS_LIMIT_MB
    report = {
        "benchmark": "stream",
        **run_facts(load, started, written),
        "sizes": sizes,
        "rss_limit_mb": RSS_LIMIT_MB,
        "note": "each case in its own process; peak_rss_mb is that process's VmHWM (imports, data, model and "
        "activations included); train_cells_per_s = training cells x epochs / epoch seconds (validation "
        "included); throughput_vs_memory compares with the in-memory case of the same data in the same run",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("stream_quick.json" if args.quick else "stream.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
