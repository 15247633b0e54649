"""Does ``torch.compile`` pay? One TopK training step, eager against compiled, side by side in one process.

The step is the core of the trainer: encode (pre-activations, top-k, the sparse-gradient selection), decode through
the active decoder rows, squared error, backward, Adam (the trainer's decoder-gradient projection, renormalisation,
AuxK and bookkeeping are left out: they are a few elementwise operations per step). The same step of the plain
dense reference loop of ``train_speed.py`` (top-k scattered into a dense matrix, full decoder matmul) is compiled
too, for comparison.

Both run on the same random batches of 4,096 cells; eager and compiled alternate ``--repeats`` times, and the
speed-up is the median of the back-to-back ratios. Compilation time (the first two compiled calls) is reported
separately: it is what a user pays once per shape and process. Inductor's cache starts empty (a new folder) unless
``--warm-cache`` reuses the usual one, and its one-off start-up in the process (compiling a trivial function) is
timed apart as ``setup_seconds``, so that it is not charged to the first shape.

Dynamo cannot trace ``torch.sparse_coo_tensor``, which the sparse backward of our step builds, so our step is
compiled in pieces around it (its warning about that builtin is silenced here).

Usage::

    python benchmarks/compile.py           # both shapes of train_speed.py, CPU or the GPU torch sees
    python benchmarks/compile.py --quick   # a small shape, for a smoke test

Writes ``benchmarks/results/compile_<device>.json`` (``compile_<device>_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from train_speed import _sync, device_name, reference_loss

from cellsae_kit.models import SparseAutoencoder, resolve_device

RESULTS = Path(__file__).parent / "results"
SHAPES = [{"d": 50, "m": 2048, "k": 32, "steps": 24}, {"d": 2000, "m": 8192, "k": 64, "steps": 4}]
QUICK = [{"d": 50, "m": 512, "k": 16, "steps": 8}]
BATCH = 4096


def ours_step(sae: SparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    x_hat, _ = sae(x)
    loss = (x * sae.input_scale - x_hat).pow(2).sum(1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def make_ours(shape: dict, device, compiled: bool):
    torch.manual_seed(0)
    sae = SparseAutoencoder(shape["d"], shape["m"], k=shape["k"]).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    step = torch.compile(ours_step) if compiled else ours_step
    return lambda x: step(sae, opt, x)


def make_reference(shape: dict, device, compiled: bool):
    d, m, k = shape["d"], shape["m"], shape["k"]
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.randn(d, m, generator=gen).div_(d**0.5).to(device).requires_grad_(),
        torch.zeros(m, device=device, requires_grad=True),
        torch.randn(m, d, generator=gen).div_(m**0.5).to(device).requires_grad_(),
        torch.zeros(d, device=device, requires_grad=True),
    ]
    opt = torch.optim.Adam(params, lr=1e-4)
    loss_fn = torch.compile(reference_loss) if compiled else reference_loss  # Adam stays eager here

    def step(x):
        loss = loss_fn(*params, x, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def cells_per_s(step, batches: list[torch.Tensor], device) -> float:
    _sync(device)
    start = time.perf_counter()
    for x in batches:
        step(x)
    _sync(device)
    return len(batches) * BATCH / (time.perf_counter() - start)


def measure(shape: dict, device, repeats: int) -> dict:
    """Build eager and compiled steps (timing the compilation), then alternate them; medians and ratios."""
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(BATCH, shape["d"], generator=gen).to(device) for _ in range(shape["steps"])]
    out = {**shape, "batch_size": BATCH}
    for name, make in (("ours", make_ours), ("reference", make_reference)):
        eager, compiled = make(shape, device, False), make(shape, device, True)
        eager(batches[0])  # warm-up
        _sync(device)
        start = time.perf_counter()
        compiled(batches[0])
        compiled(batches[1])  # a second call: some backends recompile once
        _sync(device)
        out[f"{name}_compile_seconds"] = time.perf_counter() - start
        runs = [(cells_per_s(eager, batches, device), cells_per_s(compiled, batches, device)) for _ in range(repeats)]
        out[f"{name}_eager_cells_per_s"] = statistics.median(e for e, _ in runs)
        out[f"{name}_compiled_cells_per_s"] = statistics.median(c for _, c in runs)
        out[f"{name}_speedup"] = statistics.median(c / e for e, c in runs)
        # cells after which the compiled step has repaid its compilation
        saved = 1 / out[f"{name}_eager_cells_per_s"] - 1 / out[f"{name}_compiled_cells_per_s"]
        out[f"{name}_break_even_cells"] = out[f"{name}_compile_seconds"] / saved if saved > 0 else None
        print(json.dumps({k: v for k, v in out.items() if k.startswith(name)}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: the GPU if torch sees one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--warm-cache", action="store_true", help="reuse inductor's usual cache folder")
    args = parser.parse_args()
    device = resolve_device(args.device)
    warnings.filterwarnings("ignore", message="Dynamo does not know how to trace the builtin")
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cellsae_kit_inductor_")
    started = time.perf_counter()
    torch.compile(lambda x: x * 2 + 1)(torch.ones(3, device=device))  # inductor's one-off start-up
    setup = time.perf_counter() - started
    started = time.perf_counter()
    results = [measure(shape, device, args.repeats) for shape in (QUICK if args.quick else SHAPES)]
    report = {
        "benchmark": "compile",
        "device": device_name(device),
        "torch": torch.__version__,
        "cold_cache": not args.warm_cache,
        "setup_seconds": setup,
        "note": "eager vs torch.compile of one TopK training step (ours: SparseAutoencoder forward, backward and "
        "Adam, compiled together; reference: the dense scatter + full matmul loss of train_speed.py compiled, its "
        "backward through the compiled graph, Adam eager); speedup = median of back-to-back compiled / eager "
        "ratios; compile_seconds = the first two compiled calls (setup_seconds: inductor's start-up, once per "
        "process, apart); break_even_cells = cells after which the compiled step has repaid its compilation",
        "load_average_end": list(os.getloadavg()),
        "total_seconds": time.perf_counter() - started,
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"compile_{device.type}{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
