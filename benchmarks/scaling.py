"""Scaling in the number of cells: time per epoch, time to an FVU target and peak memory, 10k to 10M cells.

Every case trains a fixed SAE on cells streamed from an ``.h5ad`` file and writes the activations to a new file
block by block (``csk.tl.sae(path, use_rep, write_to=...)``), in its own Python process so that its peak resident
memory (``VmHWM``, imports included) is its own:

- ``dense``: PCA-like cells, 50 dimensions (``obsm["X_pca"]``, float32), 10k, 100k, 1M and 10M cells (10M x 50 is
  2 GB on disk); BatchTopK, 2048 features, k = 32, batches of 4096 cells;
- ``sparse``: log-expression of 2000 genes, 100 per cell (CSR ``X``), 10k, 100k, 1M and 10M cells (10M is 8 GB of
  CSR on disk); 1024 features, k = 32, batches of 4096 (as ``benchmarks/stream.py``).

Epochs are fixed per size (50 for 10k, 5 for 100k, 2 for 1M, 1 for the largest size of each input). Time per
epoch is the mean of ``history["seconds"]`` (validation included); time to target is the training time until the
first epoch whose validation FVU is at or below the target (0.1 dense, 0.9 for the sparse data, whose random
genes leave most variance unexplainable); ``wall_seconds`` is the whole call (centring sample, training, the
training cells' error, encoding every cell into the file). Slopes are least-squares fits of log time and log
memory against log cells. The data are simulated with ``benchmarks/stream.py``'s generators and written to
``/tmp`` (``--data``) block by block, never into the repository; each case's output file is deleted after it.

Usage::

    python benchmarks/scaling.py            # the full run (about 30-40 min on 2 busy cores; 10M x 50: several min)
    python benchmarks/scaling.py --quick    # 2k to 200k cells, for a smoke test (about 2 min)
    python benchmarks/scaling.py --plot     # redraw the figure from the JSON
    python benchmarks/scaling.py --sizes 10000000 --kinds dense   # one size, merged into the JSON

Each case runs on one torch thread (``--threads``): on a shared 2-core machine two threads that wait for each other
at every operation made an epoch 2.6x slower than one (1M cells: 234-293 s per epoch with two threads).

Writes ``benchmarks/results/scaling.json`` and ``scaling.png`` (``scaling_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from stream import RESULTS, expression_block, pca_atoms, pca_block, peak_rss_mb, run_child, run_facts

FULL = {"dense": [10_000, 100_000, 1_000_000, 10_000_000], "sparse": [10_000, 100_000, 1_000_000, 10_000_000]}
QUICK = {"dense": [2_000, 20_000, 200_000], "sparse": [2_000, 20_000]}
DIMS, GENES, GENES_PER_CELL = 50, 2000, 100
SAE = {
    "dense": {"n_features": 2048, "k": 32, "batch_size": 4096},
    "sparse": {"n_features": 1024, "k": 32, "batch_size": 4096},
}
FVU_TARGET = {"dense": 0.1, "sparse": 0.9}
BLOCK = 100_000  # cells simulated and written at a time
RSS_RATIO_GOAL = 1.5  # peak memory of 10M dense cells against 1M


def n_epochs(n: int, largest: int) -> int:
    """Epochs of a case: fewer for more cells, one for the largest size of an input."""
    if n == largest:
        return 1
    return 50 if n <= 20_000 else 5 if n <= 200_000 else 2


def write_dense(path: Path, n: int, rng: np.random.Generator) -> None:
    """Write ``n`` PCA-like cells into ``obsm["X_pca"]`` of a new ``.h5ad`` file, a block at a time."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    atoms = pca_atoms(rng, DIMS)
    with h5py.File(path, "w") as f:
        _skeleton(f, pd.DataFrame(index=pd.RangeIndex(n).astype(str)), pd.DataFrame(index=pd.Index([], dtype=str)))
        X = f["obsm"].create_dataset("X_pca", shape=(n, DIMS), dtype=np.float32)
        X.attrs["encoding-type"], X.attrs["encoding-version"] = "array", "0.2.0"
        for start in range(0, n, BLOCK):
            X[start : start + BLOCK] = pca_block(rng, atoms, min(BLOCK, n - start))
        write_elem(f, "uns", {})


def write_sparse(path: Path, n: int, rng: np.random.Generator) -> None:
    """Write ``n`` cells of sparse expression as CSR ``X`` of a new ``.h5ad`` file, a block at a time."""
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem
    from scipy import sparse

    with h5py.File(path, "w") as f:
        genes = pd.DataFrame(index=pd.Index([f"gene{i}" for i in range(GENES)]))
        _skeleton(f, pd.DataFrame(index=pd.RangeIndex(n).astype(str)), genes)
        write_elem(f, "X", sparse.csr_matrix((0, GENES), dtype=np.float32), dataset_kwargs={"chunks": (2**18,)})
        X = sparse_dataset(f["X"])
        for start in range(0, n, BLOCK):
            X.append(expression_block(rng, min(BLOCK, n - start), GENES, GENES_PER_CELL))
        write_elem(f, "uns", {})


def _skeleton(f, obs, var) -> None:
    """The groups of an AnnData file around its data."""
    from anndata.io import write_elem

    f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
    write_elem(f, "obs", obs)
    write_elem(f, "var", var)
    for name in ("obsm", "varm", "obsp", "varp", "layers"):
        write_elem(f, name, {})


def data_file(folder: Path, kind: str, n: int) -> Path:
    """The input of a case, simulated and written on first use."""
    path = folder / f"{kind}_{n}.h5ad"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        (write_dense if kind == "dense" else write_sparse)(tmp, n, np.random.default_rng(n))
        tmp.rename(path)
    return path


def run_case(kind: str, n: int, epochs: int, folder: Path, threads: int = 1) -> dict:
    """Train one case in this process, the codes written to a file; report times and peak memory."""
    import h5py
    import torch
    from anndata.io import read_elem

    import cellsae_kit as csk

    torch.set_num_threads(threads)
    baseline = peak_rss_mb()
    path, out = folder / f"{kind}_{n}.h5ad", folder / f"{kind}_{n}_sae.h5ad"
    started = time.perf_counter()
    csk.tl.sae(
        path,
        "X_pca" if kind == "dense" else None,
        n_epochs=epochs,
        write_to=out,
        overwrite=True,
        progress=False,
        **SAE[kind],
    )
    wall = time.perf_counter() - started
    peak = peak_rss_mb()  # before anything is read back
    with h5py.File(out, "r") as f:
        uns = read_elem(f["uns/sae"])
        nnz = int(f["obsm/X_sae/indices"].shape[0])
    out.unlink()
    history = uns["history"]
    seconds = history["seconds"].to_numpy()
    reached = np.flatnonzero(history["fvu_validation"].to_numpy() <= FVU_TARGET[kind])
    return {
        "kind": kind,
        "n_cells": n,
        "n_inputs": int(uns["params"]["n_inputs"]),
        **SAE[kind],
        "n_epochs": epochs,
        "epoch_seconds": [float(s) for s in seconds],
        "seconds_per_epoch": float(seconds.mean()),
        "fvu_target": FVU_TARGET[kind],
        "seconds_to_target": float(seconds[: reached[0] + 1].sum()) if reached.size else None,
        "fvu_validation": [float(v) for v in history["fvu_validation"]],
        "l0": float(uns["metrics"]["l0"]),
        "dead_fraction": float(uns["metrics"]["dead_fraction"]),
        "codes_nnz": nnz,
        "threads": threads,
        "wall_seconds": wall,
        "rss_after_imports_mb": baseline,
        "peak_rss_mb": peak,
    }


def slope(cells: list[int], values: list[float]) -> float:
    """Exponent of a power law through the points: least squares of log value against log cells."""
    return float(np.polyfit(np.log10(cells), np.log10(values), 1)[0])


def summarise(results: list[dict]) -> dict:
    """Slopes per input, and the memory ratio of its two largest runs (the goal: flat in cells)."""
    out = {}
    for kind in ("dense", "sparse"):
        rows = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["n_cells"])
        if len(rows) < 2:
            continue
        cells = [r["n_cells"] for r in rows]
        big = [r for r in rows if r["n_cells"] >= 100_000]
        from_100k = slope([r["n_cells"] for r in big], [r["seconds_per_epoch"] for r in big]) if len(big) > 1 else None
        out[kind] = {
            "slope_seconds_per_epoch": slope(cells, [r["seconds_per_epoch"] for r in rows]),
            "slope_seconds_per_epoch_from_100k": from_100k,
            "slope_wall_seconds": slope(cells, [r["wall_seconds"] for r in rows]),
            "slope_peak_rss": slope(cells, [r["peak_rss_mb"] for r in rows]),
        }
        out[kind]["rss_ratio_largest_vs_next"] = rows[-1]["peak_rss_mb"] / rows[-2]["peak_rss_mb"]
        out[kind]["rss_ratio_cells"] = [rows[-1]["n_cells"], rows[-2]["n_cells"]]
        out[kind]["rss_ratio_goal"] = RSS_RATIO_GOAL
    return out


def plot(report: dict, path: Path) -> None:
    """Log-log panels of time per epoch, wall time and peak memory against cells, with the fitted slopes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"dense": "tab:blue", "sparse": "tab:orange"}
    labels = {"dense": "dense 50-d", "sparse": "sparse 2000 genes"}
    for kind, colour in colours.items():
        rows = sorted((r for r in report["results"] if r["kind"] == kind), key=lambda r: r["n_cells"])
        if not rows:
            continue
        cells = np.array([r["n_cells"] for r in rows])
        fit = report["summary"].get(kind, {})
        for ax, key, style, name, fitted in (
            (axes[0], "seconds_per_epoch", "o-", "per epoch", fit.get("slope_seconds_per_epoch")),
            (axes[0], "wall_seconds", "s--", "whole call", fit.get("slope_wall_seconds")),
            (axes[1], "peak_rss_mb", "o-", "peak RSS", fit.get("slope_peak_rss")),
        ):
            values = np.array([r[key] for r in rows])
            text = f"{labels[kind]}, {name}" + ("" if fitted is None else f" (slope {fitted:.2f})")
            ax.plot(cells, values, style, color=colour, label=text, alpha=0.9 if style == "o-" else 0.6)
        reached = [(r["n_cells"], r["seconds_to_target"]) for r in rows if r["seconds_to_target"] is not None]
        if reached:
            x, y = zip(*reached, strict=True)
            text = f"{labels[kind]}, to FVU {rows[0]['fvu_target']}"
            axes[0].plot(x, y, "^", color=colour, markerfacecolor="none", markersize=9, label=text)
    dense = [r for r in report["results"] if r["kind"] == "dense"]
    if dense:  # a line of slope 1 through the largest dense case
        anchor = max(dense, key=lambda r: r["n_cells"])
        reference = np.array([min(r["n_cells"] for r in dense), anchor["n_cells"]])
        axes[0].plot(reference, anchor["seconds_per_epoch"] * reference / anchor["n_cells"], ":", color="grey")
        axes[0].plot([], [], ":", color="grey", label="slope 1")
    axes[1].set_ylim(100, 10_000)  # a decade either way: flat means flat
    axes[0].set(xscale="log", yscale="log", xlabel="cells", ylabel="seconds", title="Time (codes written to disk)")
    axes[1].set(xscale="log", yscale="log", xlabel="cells", ylabel="MiB")
    ratios = [
        "{} {:,} / {:,} cells: x{:.2f}".format(kind, *fit["rss_ratio_cells"], fit["rss_ratio_largest_vs_next"])
        for kind, fit in report["summary"].items()
        if "rss_ratio_cells" in fit
    ]
    axes[1].set_title("\n".join(["Peak resident memory (VmHWM)", *ratios]), fontsize=9)
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5)
    threads = sorted({r.get("threads", 2) for r in report["results"]})
    machine, threads = report["device"].split(" (")[0], "/".join(map(str, threads))
    fig.suptitle(f"cellsae_kit scaling, streamed from .h5ad on {machine}, {threads} torch thread(s) a case", size=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(name: str, sizes: dict, results: list[dict], facts: dict) -> dict:
    """Write the JSON report of the cases run so far, with the other cases of an earlier report; return it."""
    path, ran = RESULTS / f"{name}.json", {(r["kind"], r["n_cells"]) for r in results}
    earlier = json.loads(path.read_text())["results"] if path.exists() else []
    results = sorted(
        [r for r in earlier if (r["kind"], r["n_cells"]) not in ran] + results, key=lambda r: (r["kind"], r["n_cells"])
    )
    report = {
        "benchmark": "scaling",
        **facts,
        "sizes": sizes,
        "sae": SAE,
        "note": "each case in its own process, streamed from an .h5ad file with the codes written to a new .h5ad "
        "block by block (tl.sae(..., write_to=)); peak_rss_mb is the process's VmHWM (imports, model, buffers "
        "included); seconds_per_epoch is the mean of history['seconds'] (validation included); "
        "seconds_to_target sums the epochs until the validation FVU reaches fvu_target (None: not reached); the "
        "machine is shared, so timings are noisy",
        "results": results,
        "summary": summarise(results),
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k to 200k cells, for a smoke test")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cellsae_kit_scaling"), help="data folder")
    parser.add_argument("--keep-data", action="store_true", help="keep the simulated inputs (deleted by default)")
    parser.add_argument("--plot", action="store_true", help="only redraw the figure from the JSON")
    parser.add_argument("--kinds", nargs="+", default=["dense", "sparse"], help="inputs to run (default: both)")
    parser.add_argument("--sizes", nargs="+", type=int, help="only these numbers of cells (others kept from the JSON)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (default 1, see below)")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # internal: kind, cells, epochs in a child
    args = parser.parse_args()
    name = "scaling_quick" if args.quick else "scaling"
    if args.case:
        kind, n, epochs = args.case[0], int(args.case[1]), int(args.case[2])
        print(json.dumps(run_case(kind, n, epochs, args.data, args.threads)))
        return
    if args.plot:
        plot(json.loads((RESULTS / f"{name}.json").read_text()), RESULTS / f"{name}.png")
        return

    sizes = QUICK if args.quick else FULL
    folder = args.data / ("quick" if args.quick else "full")
    load = list(os.getloadavg())  # the machine may be shared: timings are only comparable within one run
    started = time.perf_counter()
    results, written = [], 0.0
    for kind in args.kinds:
        cells = sizes[kind]
        for n in [n for n in cells if args.sizes is None or n in args.sizes]:
            tick = time.perf_counter()
            path = data_file(folder, kind, n)
            written += time.perf_counter() - tick
            epochs = str(n_epochs(n, max(cells)))
            case = ["--case", kind, str(n), epochs, "--data", str(folder), "--threads", str(args.threads)]
            results.append(run_child(__file__, case))
            if not args.keep_data:
                path.unlink()
            report = write_report(name, sizes, results, run_facts(load, started, written))  # after every case
    plot(report, RESULTS / f"{name}.png")
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {RESULTS / name}.json and .png")


if __name__ == "__main__":
    main()
