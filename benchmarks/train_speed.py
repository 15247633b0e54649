"""Training throughput: cellsae_kit's trainer against a plain dense TopK loop, side by side in one process.

The reference loop is what a first implementation looks like: encoder matmul, top-k, scatter the kept values into
a dense cells x features matrix, decode with a full matmul, fp32, Adam, the same batch size. Our trainer adds the
recipes (centring, unit-norm decoder with gradient projection, AuxK, resampling, validation) and decodes only the
active rows.

Usage::

    python benchmarks/train_speed.py                 # both shapes, CPU or the GPU that torch sees
    python benchmarks/train_speed.py --quick         # a smaller run for a smoke test

Writes ``benchmarks/results/train_speed_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cellsae_kit.models import fit, resolve_device

RESULTS = Path(__file__).parent / "results"
SHAPES = [
    {"d": 50, "m": 2048, "k": 32, "n_cells": 40_960, "epochs": 2},
    {"d": 2000, "m": 8192, "k": 64, "n_cells": 8192, "epochs": 1},
]
QUICK = [{"d": 50, "m": 512, "k": 16, "n_cells": 8192, "epochs": 1}]
BATCH = 4096


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
            pre = (x - b_dec) @ W_enc + b_enc
            values, indices = pre.topk(k, dim=1)
            acts = torch.zeros_like(pre).scatter(1, indices, torch.relu(values))
            loss = ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    _sync(device)
    return n * epochs / (time.perf_counter() - start)


def ours(X: np.ndarray, m: int, k: int, batch_size: int, epochs: int, device, activation: str) -> dict:
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


def main() -> None:
    """Run the benchmark and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for shape in QUICK if args.quick else SHAPES:
        X = np.random.default_rng(0).normal(size=(shape["n_cells"], shape["d"])).astype(np.float32)
        ref = reference_loop(torch.from_numpy(X), shape["m"], shape["k"], BATCH, shape["epochs"], device)
        row = {**shape, "batch_size": BATCH, "reference_cells_per_s": ref}
        for activation in ("topk", "batchtopk", "relu"):
            out = ours(X, shape["m"], shape["k"], BATCH, shape["epochs"], device, activation)
            row[f"{activation}_cells_per_s"] = out["cells_per_s"]
            row[f"{activation}_speedup"] = out["cells_per_s"] / ref
        rows.append(row)
        print(json.dumps(row))
    RESULTS.mkdir(exist_ok=True)
    out = {
        "benchmark": "train_speed",
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "note": "cells/s over training epochs; reference = dense scatter + full matmul TopK loop, same batch, Adam",
        "results": rows,
    }
    suffix = "_quick" if args.quick else ""
    path = RESULTS / f"train_speed_{device.type}{suffix}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
