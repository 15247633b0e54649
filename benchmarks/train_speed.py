"""Training throughput: cellsae_kit's trainer against a plain dense TopK loop, side by side in one process.

The reference loop is what a first implementation looks like: encoder matmul, top-k, scatter the kept values into
a dense cells x features matrix, decode with a full matmul, fp32, Adam, the same batch size. Our trainer adds the
recipes (centring, unit-norm decoder with gradient projection, AuxK, resampling, validation) and is sparse where
the maths is: the backward pass touches only the selected (cell, feature) entries of the encoder and the decoder
(``SparseAutoencoder.with_gradients``), and on a CPU the encoder runs a block of cells at a time.

The reference and our trainer alternate ``--repeats`` times in the same process (the machine may be shared, so
each speed-up is the ratio of two back-to-back runs; the JSON keeps every run and the load average).

Usage::

    python benchmarks/train_speed.py                 # both shapes, CPU or the GPU that torch sees
    python benchmarks/train_speed.py --quick         # a smaller run for a smoke test

Writes ``benchmarks/results/train_speed_<device>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from cellsae_kit.models import fit, resolve_device

RESULTS = Path(__file__).parent / "results"
SHAPES = [
    {"d": 50, "m": 2048, "k": 32, "n_cells": 40_960, "epochs": 2},
    {"d": 2000, "m": 8192, "k": 64, "n_cells": 16_384, "epochs": 1},
]
QUICK = [{"d": 50, "m": 512, "k": 16, "n_cells": 8192, "epochs": 1}]
BATCH = 4096
ACTIVATIONS = ("topk", "batchtopk", "relu")


def reference_loss(W_enc, b_enc, W_dec, b_dec, x: torch.Tensor, k: int) -> torch.Tensor:
    """The plain dense TopK SAE's loss: top-k scattered into a dense cells x features matrix, full decoder matmul."""
    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=1)
    acts = torch.zeros_like(pre).scatter(1, indices, torch.relu(values))
    return ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()


def reference_loop(X: torch.Tensor, m: int, k: int, batch_size: int, epochs: int, device) -> float:
    """Cells per second of a plain dense TopK SAE (scatter + full matmul decoder)."""
    d = X.shape[1]
    gen = torch.Generator().manual_seed(0)
    W_enc = torch.randn(d, m, generator=gen).div_(d**0.5).to(device).requires_grad_()
    W_dec = torch.randn(m, d, generator=gen).div_(m**0.5).to(device).requires_grad_()
    b_enc = torch.zeros(m, device=device, requires_grad=True)
    b_dec = torch.zeros(d, device=device, requires_grad=True)
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=1e-3)
    n = X.shape[0]
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            x = X[perm[s : s + batch_size]].to(device)
            loss = reference_loss(W_enc, b_enc, W_dec, b_dec, x, k)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _sync(device)
    return n * epochs / (time.perf_counter() - start)


def ours(X: np.ndarray, m: int, k: int, batch_size: int, epochs: int, device, activation: str, precision: str) -> dict:
    """Cells per second of cellsae_kit's trainer, from its per-epoch wall times (validation included)."""
    result = fit(
        X,
        n_features=m,
        k=k,
        activation=activation,
        batch_size=batch_size,
        n_epochs=epochs,
        validation_fraction=0.02,
        patience=epochs + 1,
        device=device,
        precision=precision,
        progress=False,
    )
    seconds = sum(result.history["seconds"])
    cells_per_s = len(result.train_indices) * epochs / seconds
    return {"cells_per_s": cells_per_s, "fvu_validation": result.metrics["fvu_validation"]}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    """Describe the hardware the numbers come from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def measure(shape: dict, device, repeats: int, precision: str) -> dict:
    """Alternate the reference loop and our trainer ``repeats`` times; medians and back-to-back ratios."""
    X = np.random.default_rng(0).normal(size=(shape["n_cells"], shape["d"])).astype(np.float32)
    runs = []
    for _ in range(repeats):
        run = {"reference": reference_loop(torch.from_numpy(X), shape["m"], shape["k"], BATCH, shape["epochs"], device)}
        for activation in ACTIVATIONS:
            out = ours(X, shape["m"], shape["k"], BATCH, shape["epochs"], device, activation, precision)
            run[activation] = out["cells_per_s"]
            run[f"{activation}_fvu_validation"] = out["fvu_validation"]
        runs.append(run)
        print(json.dumps({k: round(v, 4) for k, v in run.items()}), flush=True)
    row = {**shape, "batch_size": BATCH, "reference_cells_per_s": statistics.median(r["reference"] for r in runs)}
    for activation in ACTIVATIONS:
        row[f"{activation}_cells_per_s"] = statistics.median(r[activation] for r in runs)
        row[f"{activation}_speedup"] = statistics.median(r[activation] / r["reference"] for r in runs)
        row[f"{activation}_fvu_validation"] = runs[-1][f"{activation}_fvu_validation"]
    row["runs"] = runs
    return row


def figure(out: dict, path: Path) -> None:
    """Bar chart: cells/s of the reference loop and of our trainer per activation, speed-up written on the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["results"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False)
    names = ["reference", *ACTIVATIONS]
    colours = ["#9e9e9e", "#1f77b4", "#2ca02c", "#ff7f0e"]
    for ax, row in zip(axes[0], rows, strict=True):
        speeds = [row["reference_cells_per_s"]] + [row[f"{a}_cells_per_s"] for a in ACTIVATIONS]
        bars = ax.bar(range(len(names)), speeds, color=colours)
        for bar, activation in zip(bars[1:], ACTIVATIONS, strict=True):
            ax.annotate(
                f"{row[f'{activation}_speedup']:.1f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=9,
            )
        ax.set_xticks(range(len(names)), ["dense\nreference", "TopK", "BatchTopK", "ReLU"])
        ax.set_ylabel("cells per second")
        ax.set_ylim(0, max(speeds) * 1.15)
        ax.set_title(f"d={row['d']}, m={row['m']}, k={row['k']}, batch {row['batch_size']}", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(f"Training speed on {out['device']}, torch {out['torch']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Run the benchmark and write the JSON results and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of reference and ours per shape")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    rows = [measure(shape, device, args.repeats, args.precision) for shape in (QUICK if args.quick else SHAPES)]
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "train_speed",
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": args.precision,
        "repeats": args.repeats,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "note": (
            "cells/s over training epochs (ours: validation included); reference = dense scatter + full matmul "
            "TopK loop, fp32, same batch, Adam; medians over alternating runs, speed-up = median of back-to-back "
            "ratios"
        ),
        "results": rows,
    }
    suffix = "_quick" if args.quick else ""
    path = RESULTS / f"train_speed_{device.type}{suffix}.json"
    path.write_text(json.dumps(out, indent=2))
    figure(out, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
