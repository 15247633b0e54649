"""Training throughput on a GPU against its roofline: cells/s in bfloat16 and float32, two shapes.

For each shape (d inputs, m features, k active per cell; ``../shared/SCIENCE.md`` section 4) and precision, a
TopK SAE is trained by :func:`cellsae_kit.models.fit` on Gaussian cells held on the device, first with the default
batch size (``"auto"``: at most 1024 cells) and then with a large batch (``--batch``); the cells/s are the
training cells of the last epoch over its wall time (validation included, as ``train_speed.py``).

The roofline is the lower of two ceilings, both from this device's own figures measured in the same process (a
large matrix product in each precision; a device-to-device copy, counting bytes read and written):

- arithmetic: a TopK training step costs about ``2 d m`` FLOPs per cell for the encoder product and ``8 k d`` for
  the sparse steps (decoder forward and backward, encoder backward at the selected entries), so
  ``peak FLOP/s / (2 d m + 8 k d)`` cells/s;
- memory: each cell's pre-activations are written and read back once (``2 m`` values) and its input read once
  (``d`` values), so ``bandwidth / ((2 m + d) x bytes per value)`` cells/s.

The fraction reported is the measured cells/s over that roofline. The script also runs on a CPU (``--device cpu
--quick``), to check it before a GPU is lent; ``benchmarks/gpu.sh`` runs it on a GPU machine.

Usage::

    python benchmarks/gpu_speed.py                     # the GPU torch sees; writes gpu_speed_cuda.json
    python benchmarks/gpu_speed.py --device cpu --quick   # a smoke test on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cellsae_kit.models import fit, resolve_device

RESULTS = Path(__file__).parent / "results"
SHAPES = [
    {"d": 50, "m": 4096, "k": 32, "n_cells": 2**20},
    {"d": 2000, "m": 16384, "k": 64, "n_cells": 2**17},
]
QUICK = [{"d": 50, "m": 512, "k": 16, "n_cells": 8192}]
PRECISIONS = ("bfloat16", "float32")
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, device: torch.device, repeats: int = 10) -> float:
    """Seconds per call of ``step``: the mean of ``repeats`` calls after three warm-ups."""
    for _ in range(3):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def peak_flops(device: torch.device, precision: str, size: int) -> float:
    """FLOP/s of a ``size`` cubed matrix product in ``precision`` on ``device`` (random data)."""
    a = torch.randn(size, size, device=device, dtype=DTYPES[precision])
    b = torch.randn(size, size, device=device, dtype=DTYPES[precision])
    return 2 * size**3 / _timed(lambda: a @ b, device)


def bandwidth(device: torch.device, n_bytes: int) -> float:
    """Bytes/s of a copy on ``device``, counting the bytes read and written."""
    src = torch.empty(n_bytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * n_bytes / _timed(lambda: dst.copy_(src), device)


def roofline(shape: dict, precision: str, peaks: dict) -> float:
    """Cells per second that the arithmetic and the memory traffic allow (see the module's docstring)."""
    d, m, k = shape["d"], shape["m"], shape["k"]
    arithmetic = peaks[f"{precision}_flops"] / (2 * d * m + 8 * k * d)
    memory = peaks["bandwidth"] / ((2 * m + d) * DTYPES[precision].itemsize)
    return min(arithmetic, memory)


def throughput(X: np.ndarray, shape: dict, precision: str, batch_size, device: torch.device) -> dict:
    """Train a TopK SAE for two epochs; cells/s of the last epoch, with its validation FVU."""
    result = fit(
        X,
        n_features=shape["m"],
        k=shape["k"],
        activation="topk",
        batch_size=batch_size,
        n_epochs=2,
        validation_fraction=0.02,
        patience=3,
        device=device,
        precision=precision,
        progress=False,
    )
    return {
        "batch_size": result.params["batch_size"],
        "cells_per_s": len(result.train_indices) / result.history["seconds"][-1],
        "fvu_validation": result.metrics["fvu_validation"],
    }


def main() -> None:
    """Measure the device's peaks, then each shape and precision at the default and the large batch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="one small shape: a smoke test")
    parser.add_argument("--batch", type=int, default=32768, help="the large batch (cells per step)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    size = 8192 if device.type == "cuda" and not args.quick else 1024
    peaks = {f"{p}_flops": peak_flops(device, p, size) for p in PRECISIONS}
    peaks["bandwidth"] = bandwidth(device, 2**30 if device.type == "cuda" and not args.quick else 2**26)
    print(json.dumps({name: f"{value:.3g}" for name, value in peaks.items()}), flush=True)
    rows = []
    for shape in QUICK if args.quick else SHAPES:
        X = np.random.default_rng(0).normal(size=(shape["n_cells"], shape["d"])).astype(np.float32)
        for precision in PRECISIONS:
            ceiling = roofline(shape, precision, peaks)
            for batch in ("auto", min(args.batch, shape["n_cells"] // 4)):
                row = {**shape, "precision": precision, **throughput(X, shape, precision, batch, device)}
                row["roofline_cells_per_s"] = ceiling
                row["roofline_fraction"] = row["cells_per_s"] / ceiling
                rows.append(row)
                print(json.dumps(row), flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {
        "benchmark": "gpu_speed",
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "peaks": peaks,
        "load_average": os.getloadavg()[0],
        "note": (
            "TopK SAE, Gaussian cells on the device; cells/s of the second epoch (validation included); roofline "
            "= min(peak FLOP/s / (2dm + 8kd), bandwidth / ((2m + d) x bytes per value)), with this device's "
            "matrix-product FLOP/s in each precision and copy bandwidth measured in the same run"
        ),
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"gpu_speed_{device.type}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
