"""Training throughput: cellsae_kit's trainer against a plain dense loop of each kind, side by side in one process.

Each activation is compared with a reference loop of its own kind, written as a first implementation looks: dense
cells x features pre-activations differentiated by autograd, fp32, Adam, the same batch size:

- TopK: top-k of each cell scattered into a dense matrix, full decoder matmul;
- BatchTopK: one top-(k x batch) over the batch's rectified pre-activations, dense scatter, full decoder matmul;
- ReLU: dense ReLU codes, L1 penalty weighted by the decoder row norms, full decoder matmul;
- Matryoshka: the BatchTopK selection, then the mean of the reconstruction errors of every prefix of the
  dictionary, each decoded with a dense matmul of its own;
- JumpReLU: dense codes ``pre * H(pre - threshold)`` with the straight-through threshold gradient, the L0
  penalty ``(L0 / k - 1)^2`` through the same estimator, full decoder matmul.

Our trainer (:func:`cellsae_kit.models.fit`) does more per step than the references: the decoder-gradient projection
and row renormalisation, dead-feature bookkeeping, AuxK and resampling once features die, the streaming FVU and
JumpReLU's threshold clamp; and per epoch the BatchTopK threshold calibration and the validation pass. All of that
is counted: our cells/s are the training cells over the summed wall time of the epochs (``history["seconds"]``);
the setup before the first epoch (centring, scaling, data initialisation of the decoder) is not, nor is the final
encoding of every cell. The references' cells/s are the cells over the wall time of their loop.

The reference of each kind and our trainer alternate ``--repeats`` times in the same process (the machine may be
shared, so each speed-up is the median of the ratios of two back-to-back runs; the JSON keeps every run and the load
average).

Usage::

    python benchmarks/train_speed.py                 # both shapes, CPU or the GPU that torch sees
    python benchmarks/train_speed.py --quick         # a smaller run for a smoke test
    python benchmarks/train_speed.py --activations relu jumprelu --shapes 1   # a part, for development

Writes ``benchmarks/results/train_speed_<device>.json`` and ``.png`` (not for a partial run).
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

from cellsae_kit.models import auto_prefixes, fit, resolve_device

RESULTS = Path(__file__).parent / "results"
SHAPES = [
    {"d": 50, "m": 2048, "k": 32, "n_cells": 40_960, "epochs": 2},
    {"d": 2000, "m": 8192, "k": 64, "n_cells": 16_384, "epochs": 1},
]
QUICK = [{"d": 50, "m": 512, "k": 16, "n_cells": 8192, "epochs": 1}]
BATCH = 4096
ACTIVATIONS = ("topk", "batchtopk", "relu", "matryoshka", "jumprelu")
L1_COEF, L0_COEF, BANDWIDTH = 0.05, 1.0, 0.05  # fit's defaults


def reference_loss(W_enc, b_enc, W_dec, b_dec, x: torch.Tensor, k: int) -> torch.Tensor:
    """The plain dense TopK SAE's loss: top-k scattered into a dense cells x features matrix, full decoder matmul."""
    pre = (x - b_dec) @ W_enc + b_enc
    values, indices = pre.topk(k, dim=1)
    acts = torch.zeros_like(pre).scatter(1, indices, torch.relu(values))
    return ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()


def _batch_top_dense(pre: torch.Tensor, k: int) -> torch.Tensor:
    """BatchTopK codes, dense: the k x cells largest rectified pre-activations of the batch, zeros elsewhere."""
    acts = torch.relu(pre).flatten()
    top = acts.topk(k * pre.shape[0])
    return torch.zeros_like(acts).scatter(0, top.indices, top.values).view_as(pre)


def batchtopk_loss(W_enc, b_enc, W_dec, b_dec, x: torch.Tensor, k: int) -> torch.Tensor:
    """The plain BatchTopK loss: one global top-(k x batch), dense scatter, full decoder matmul."""
    acts = _batch_top_dense((x - b_dec) @ W_enc + b_enc, k)
    return ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()


def relu_loss(W_enc, b_enc, W_dec, b_dec, x: torch.Tensor, l1_coef: float = L1_COEF) -> torch.Tensor:
    """The plain ReLU SAE's loss: dense codes, L1 weighted by the decoder row norms, full decoder matmul."""
    acts = torch.relu((x - b_dec) @ W_enc + b_enc)
    mse = ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()
    return mse + l1_coef * (acts * W_dec.norm(dim=1)).sum(1).mean()


def matryoshka_loss(W_enc, b_enc, W_dec, b_dec, x: torch.Tensor, k: int, prefixes) -> torch.Tensor:
    """The plain Matryoshka loss: BatchTopK codes, the mean of every prefix's error, a dense matmul per prefix."""
    acts = _batch_top_dense((x - b_dec) @ W_enc + b_enc, k)
    errors = [((acts[:, :s] @ W_dec[:s] + b_dec - x) ** 2).sum(1).mean() for s in prefixes]
    return torch.stack(errors).mean()


class _RefJumpReLU(torch.autograd.Function):
    """``pre * H(pre - t)``; the threshold's gradient by the straight-through rectangle-kernel estimate."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        band = ((pre - threshold).abs() < ctx.bandwidth / 2).float()
        return grad * (pre > threshold), -(threshold / ctx.bandwidth) * (grad * band).sum(0), None


class _RefStep(torch.autograd.Function):
    """``H(pre - t)``; the threshold's gradient by the straight-through rectangle-kernel estimate."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).float()

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        band = ((pre - threshold).abs() < ctx.bandwidth / 2).float()
        return None, -(grad * band).sum(0) / ctx.bandwidth, None


def jumprelu_loss(W_enc, b_enc, W_dec, b_dec, x: torch.Tensor, k: int, threshold) -> torch.Tensor:
    """The plain JumpReLU loss: dense jump codes, L0 penalty to the target k, full decoder matmul."""
    pre = (x - b_dec) @ W_enc + b_enc
    acts = _RefJumpReLU.apply(pre, threshold, BANDWIDTH)
    l0 = _RefStep.apply(pre, threshold, BANDWIDTH).sum(1).mean()
    mse = ((acts @ W_dec + b_dec - x) ** 2).sum(1).mean()
    return mse + L0_COEF * (l0 / k - 1) ** 2


def _reference_step(kind: str, params: list[torch.Tensor], x: torch.Tensor, k: int) -> torch.Tensor:
    """The loss of the reference of one kind on a batch."""
    W_enc, b_enc, W_dec, b_dec = params[:4]
    if kind == "topk":
        return reference_loss(W_enc, b_enc, W_dec, b_dec, x, k)
    if kind == "batchtopk":
        return batchtopk_loss(W_enc, b_enc, W_dec, b_dec, x, k)
    if kind == "relu":
        return relu_loss(W_enc, b_enc, W_dec, b_dec, x)
    if kind == "matryoshka":
        return matryoshka_loss(W_enc, b_enc, W_dec, b_dec, x, k, auto_prefixes(W_dec.shape[0]))
    return jumprelu_loss(W_enc, b_enc, W_dec, b_dec, x, k, params[4])


def reference_loop(X: torch.Tensor, m: int, k: int, batch_size: int, epochs: int, device, kind: str = "topk") -> float:
    """Cells per second of the plain dense SAE loop of one kind (see the module's docstring)."""
    d = X.shape[1]
    gen = torch.Generator().manual_seed(0)
    W_enc = torch.randn(d, m, generator=gen).div_(d**0.5).to(device).requires_grad_()
    W_dec = torch.randn(m, d, generator=gen).div_(m**0.5).to(device).requires_grad_()
    b_enc = torch.zeros(m, device=device, requires_grad=True)
    b_dec = torch.zeros(d, device=device, requires_grad=True)
    params = [W_enc, b_enc, W_dec, b_dec]
    if kind == "jumprelu":  # start at the cut-off that keeps k features per cell of the first batch
        with torch.no_grad():
            pre = X[:batch_size].to(device) @ W_enc
            cut = pre.flatten().topk(k * pre.shape[0]).values.min()
        params.append(torch.full((m,), float(cut), device=device, requires_grad=True))
    opt = torch.optim.Adam(params, lr=1e-3)
    n = X.shape[0]
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            x = X[perm[s : s + batch_size]].to(device)
            loss = _reference_step(kind, params, x, k)
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
    return {
        "cells_per_s": cells_per_s,
        "fvu_validation": result.metrics["fvu_validation"],
        "l0": result.history["l0"][-1],
    }


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
    n = torch.get_num_threads()
    return f"{cpu} ({n} thread{'' if n == 1 else 's'})"


def measure(shape: dict, device, repeats: int, precision: str, activations=ACTIVATIONS) -> dict:
    """Alternate each kind's reference loop and our trainer ``repeats`` times; medians and back-to-back ratios."""
    X = np.random.default_rng(0).normal(size=(shape["n_cells"], shape["d"])).astype(np.float32)
    runs = []
    for _ in range(repeats):
        run = {}
        for activation in activations:
            reference = reference_loop(
                torch.from_numpy(X), shape["m"], shape["k"], BATCH, shape["epochs"], device, activation
            )
            run["reference" if activation == "topk" else f"{activation}_reference"] = reference
            out = ours(X, shape["m"], shape["k"], BATCH, shape["epochs"], device, activation, precision)
            run[activation] = out["cells_per_s"]
            run[f"{activation}_fvu_validation"] = out["fvu_validation"]
            run[f"{activation}_l0"] = out["l0"]
        runs.append(run)
        print(json.dumps({k: round(v, 4) for k, v in run.items()}), flush=True)
    row = {**shape, "batch_size": BATCH}
    for activation in activations:
        key = _reference_key(activation)
        row[f"{key}_cells_per_s"] = statistics.median(r[key] for r in runs)
        row[f"{activation}_cells_per_s"] = statistics.median(r[activation] for r in runs)
        row[f"{activation}_speedup"] = statistics.median(r[activation] / r[key] for r in runs)
        row[f"{activation}_fvu_validation"] = runs[-1][f"{activation}_fvu_validation"]
        row[f"{activation}_l0"] = runs[-1][f"{activation}_l0"]
    row["runs"] = runs
    return row


def _reference_key(activation: str) -> str:
    """The JSON name of a kind's reference (TopK's is plain ``reference``, as before there were several)."""
    return "reference" if activation == "topk" else f"{activation}_reference"


def figure(out: dict, path: Path) -> None:
    """Paired bars per activation: cells/s of its own-kind reference and of our trainer, speed-up on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["results"]
    activations = [a for a in ACTIVATIONS if f"{a}_speedup" in rows[0]]
    labels = {
        "topk": "TopK",
        "batchtopk": "BatchTopK",
        "relu": "ReLU",
        "matryoshka": "Matryoshka",
        "jumprelu": "JumpReLU",
    }
    fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 3.8), squeeze=False)
    width = 0.38
    for ax, row in zip(axes[0], rows, strict=True):
        top = 0.0
        for i, activation in enumerate(activations):
            reference = row[f"{_reference_key(activation)}_cells_per_s"]
            speed = row[f"{activation}_cells_per_s"]
            ax.bar(i - width / 2, reference, width, color="#9e9e9e", label="plain reference" if i == 0 else None)
            ax.bar(i + width / 2, speed, width, color="#1f77b4", label="cellsae_kit fit" if i == 0 else None)
            ax.annotate(
                f"{row[f'{activation}_speedup']:.1f}x",
                (i + width / 2, speed),
                ha="center",
                va="bottom",
                fontsize=9,
            )
            top = max(top, reference, speed)
        ax.set_xticks(range(len(activations)), [labels[a] for a in activations], fontsize=8)
        ax.set_ylabel("cells per second")
        ax.set_ylim(0, top * 1.15)
        ax.set_title(f"d={row['d']}, m={row['m']}, k={row['k']}, batch {row['batch_size']}", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
    # one legend under the panels: inside them it covers the tallest bar's label
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=8, frameon=False, loc="lower center", ncol=2)
    fig.suptitle(
        f"Training speed against a plain loop of the same kind\n{out['device']}, torch {out['torch']}", fontsize=10
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: list[dict], device, args, load_before) -> Path:
    """Write the JSON results and the figure of the shapes measured so far; return the JSON's path."""
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
            "cells/s over training epochs (ours: validation, threshold calibration, AuxK/resampling, decoder "
            "projection and renormalisation included; setup and final encoding not); each activation against a "
            "plain dense reference loop of its own kind (dense pre-activations with autograd, fp32, same batch, "
            "Adam); reference_cells_per_s is TopK's, <activation>_reference_cells_per_s the others'; medians over "
            "alternating runs, speed-up = median of back-to-back ratios"
        ),
        "results": rows,
    }
    suffix = "_quick" if args.quick else ""
    path = RESULTS / f"train_speed_{device.type}{suffix}.json"
    path.write_text(json.dumps(out, indent=2))
    figure(out, path.with_suffix(".png"))
    return path


def main() -> None:
    """Run the benchmark and write the JSON results and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="alternations of reference and ours per shape")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--activations", nargs="+", choices=ACTIVATIONS, default=list(ACTIVATIONS))
    parser.add_argument("--shapes", nargs="+", type=int, help="indices into SHAPES (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    shapes = QUICK if args.quick else [SHAPES[i] for i in args.shapes] if args.shapes else SHAPES
    partial = len(args.activations) < len(ACTIVATIONS) or (args.shapes and not args.quick)
    rows = []
    for shape in shapes:  # written after each shape, so that a long run interrupted keeps what it measured
        rows.append(measure(shape, device, args.repeats, args.precision, tuple(args.activations)))
        if not partial:  # a development run is printed above, not written over the full results
            path = write(rows, device, args, load_before)
    if not partial:
        print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
