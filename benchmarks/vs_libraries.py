"""Time to a validation FVU: our TopK SAE against the SAE libraries of the LLM world, on the same cells.

Each library trains a TopK SAE of the same shape (``m`` features, ``k`` active per cell), fp32, on the CPU, with
Adam and batches of 4096 drawn in the same order from the same float32 training cells (90 %), for the same
number of epochs. Every library's validation FVU is computed by one function, :func:`cellsae_kit.models.fvu`, on
the same held-out 10 % of the cells, from that library's own encode/decode. The libraries take turns (round robin
over ``--rounds``); the JSON reports medians over rounds.

How each library is trained (each with its own defaults, learning rate included, unless said):

* ours: :func:`cellsae_kit.models.fit` (``activation='topk'``, ``validation_fraction=0``, all other options at
  their defaults). Its learning-rate schedule depends on the number of epochs and it has no per-step hook, so its
  time to a target is measured as in ``vs_sklearn.py``: fresh complete fits with the budgets 1, 2, 4, 8, ... epochs
  (stopping once the smallest target is reached); the time is the wall time of the whole ``fit(...)`` call
  (set-up, training and the encoding of all training cells it ends with) at the smallest budget that reaches the
  target. That is conservative: the budget ladder is coarse and the clock includes work the peers are not charged.
* SAELens: ``TopKTrainingSAE`` + ``SAETrainer``, driven through ``SAETrainer.step`` (the seam its ``fit`` and
  ``MultiSAETrainer`` use), so that we can pause between epochs.
* overcomplete: ``TopKSAE`` trained by its ``train_sae`` one epoch per call (the optimizer carries over), with the
  plain MSE criterion of its README and the README's Adam learning rate (5e-4).
* sparsify: its ``Trainer`` needs a Hugging Face language model and token dataset, so the adapter trains its
  ``SparseCoder`` as the Trainer does (its FVU loss, gradient projection, unit-norm decoder, Adam at the Trainer's
  default learning rate) without the Trainer's 1000-step warm-up, which is longer than these runs.
* dictionary_learning: ``AutoEncoderTopK`` trained by ``TopKTrainer.update``, with its warm-up shortened from
  1000 steps to 5 % of the run (as ours), since 1000 steps is longer than these runs.

The peers are evaluated after every epoch; evaluation time is excluded from their clocks (set-up is included).
Every library sees the data centred (the mean of all cells subtracted) and scaled by one constant so that the
cells' mean norm is ``sqrt(d)`` (the convention of ours and of the LLM libraries' activation normalisation), so
that no library is slowed by units or by a decoder bias that starts at zero (ours starts it at the mean, SAELens
and sparsify at zero); the FVU depends on neither.

Two shims, for modules that overcomplete imports but its SAEs never use: an empty ``torchvision.transforms``
(see the install notes) and ``matplotlib.cm.get_cmap`` (removed in matplotlib 3.9; the project pins 3.11).

Cases: ``tiled_pca`` (scanpy's ``pbmc68k_reduced`` 50 PCs tiled to 200,000 cells plus 1 % noise, as in
``vs_sklearn.py``) and ``log_expression``
(:func:`cellsae_kit.datasets.simulate`, 2,000 genes, counts normalised to 10,000 per cell and log1p).

Install (a separate venv; the project's stays clean; ``constraints.txt`` keeps the local torch)::

    python -m venv .venv-peers
    .venv-peers/bin/pip install -c constraints.txt -e . -r benchmarks/requirements-peers.txt
    .venv-peers/bin/pip uninstall -y torchvision

The last line because PyPI's torchvision wheels are built for a CUDA torch: with the local CPU torch they fail to
import (``operator torchvision::nms does not exist``), and transformers, which SAELens, sparsify and
dictionary_learning import, then fails too. Without torchvision they import; overcomplete imports
``torchvision.transforms`` only for its image backbones, so the benchmark stands in an empty module for it.

Run (one thread for every library; a peer that does not import is skipped with a note)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv-peers/bin/python benchmarks/vs_libraries.py
    OMP_NUM_THREADS=1 .venv-peers/bin/python benchmarks/vs_libraries.py --quick   # smoke test, ~1 min
    OMP_NUM_THREADS=1 .venv-peers/bin/python benchmarks/vs_libraries.py --cases tiled_pca   # the file keeps the rest

Writes ``benchmarks/results/vs_libraries.json`` and ``.png`` (``vs_libraries_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import types
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from cellsae_kit.models import fit, fvu

sys.path.insert(0, str(Path(__file__).parent))
from vs_sklearn import cpu_name, make_data  # the same tiled-PCA data as that benchmark

RESULTS = Path(__file__).parent / "results"
BATCH = 4096
VALIDATION = 0.1
CASES = {
    "tiled_pca": {"n_cells": 200_000, "m": 2048, "k": 32, "n_epochs": 12, "targets": (0.10, 0.03, 0.01)},
    "log_expression": {"n_cells": 10_000, "m": 2048, "k": 32, "n_epochs": 16, "targets": (0.5, 0.3)},
}
QUICK = {
    "tiled_pca": {"n_cells": 5_000, "m": 256, "k": 8, "n_epochs": 4, "targets": (0.10, 0.03)},
    "log_expression": {"n_cells": 2_000, "m": 256, "k": 8, "n_epochs": 2, "targets": (0.5,)},
}


# ---- data -------------------------------------------------------------------------------------------------------


def log_expression(n_cells: int, seed: int) -> np.ndarray:
    """Simulated counts of 2,000 genes, normalised to 10,000 per cell and log1p, dense float32."""
    from scipy import sparse

    from cellsae_kit.datasets import simulate

    counts = simulate(n_cells=n_cells, n_genes=2000, random_state=seed).X
    counts = np.asarray(counts.toarray() if sparse.issparse(counts) else counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / np.maximum(totals, 1) * 1e4).astype(np.float32)


def load_case(name: str, n_cells: int, seed: int) -> np.ndarray:
    """The case's cells, centred and scaled so that their mean norm is sqrt(d) (see the module notes)."""
    X = make_data(n_cells, 0.1, seed) if name == "tiled_pca" else log_expression(n_cells, seed)
    X = X - X.mean(axis=0)
    return (X * (math.sqrt(X.shape[1]) / np.linalg.norm(X, axis=1).mean())).astype(np.float32)


def split(n_cells: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out cells (the same for every library) and training cells."""
    order = np.random.default_rng(seed).permutation(n_cells)
    n_val = round(VALIDATION * n_cells)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def epoch_orders(n_train: int, n_epochs: int, seed: int) -> list[torch.Tensor]:
    """The order of the training cells in each epoch: the peers get the same batches."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_train, generator=gen) for _ in range(n_epochs)]


@torch.no_grad()
def validation_fvu(reconstruct, X_val: torch.Tensor) -> float:
    """THE score of every library: FVU of the held-out cells from the library's own encode/decode."""
    parts = [reconstruct(X_val[s : s + 8192]).float() for s in range(0, len(X_val), 8192)]
    return fvu(X_val.numpy(), torch.cat(parts).numpy())


# ---- peers: one adapter each, calling the library's own model and training step ------------------------------


class SAELens:
    dist, module = "sae-lens", "sae_lens"

    def __init__(self, d: int, m: int, k: int, total_steps: int, lr: float | None = None):
        from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
        from sae_lens.config import SAETrainerConfig

        self.sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=m, k=k))
        config = SAETrainerConfig(
            total_training_samples=total_steps * BATCH,
            train_batch_size_samples=BATCH,
            lr=lr or SAETrainerConfig.lr,
            lr_end=(lr or SAETrainerConfig.lr)
            / 10,  # what its runner config fills in (unused by the constant schedule)
        )
        self.trainer = SAETrainer(config, self.sae, data_provider=iter(()))

    def step(self, x: torch.Tensor) -> None:
        self.trainer.maybe_reset_sparsity()
        self.trainer.step(x)
        self.trainer.n_training_steps += 1

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(self.sae.encode(x))


class Overcomplete:
    dist, module = "overcomplete", "overcomplete"
    lr = 5e-4  # its README's
    shims = (lambda: stand_in("torchvision"), lambda: old_get_cmap())  # for modules its SAEs do not use

    def __init__(self, d: int, m: int, k: int, total_steps: int, lr: float | None = None):
        from overcomplete.sae import TopKSAE

        self.sae = TopKSAE(d, nb_concepts=m, top_k=k, device="cpu")
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=lr or self.lr)

    @staticmethod
    def criterion(x, x_hat, pre_codes, codes, dictionary):
        return (x - x_hat).square().mean()

    def epoch(self, batches) -> None:
        from overcomplete.sae import train_sae

        train_sae(self.sae, batches, self.criterion, self.optimizer, nb_epochs=1, monitoring=0)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        self.sae.eval()
        return self.sae(x)[2]


class Sparsify:
    dist, module = "eai-sparsify", "sparsify"

    def __init__(self, d: int, m: int, k: int, total_steps: int, lr: float | None = None):
        from sparsify import SparseCoder, SparseCoderConfig

        self.sae = SparseCoder(d, SparseCoderConfig(num_latents=m, k=k), device="cpu", dtype=torch.float32)
        # the Trainer's default Adam learning rate for this many latents
        self.optimizer = torch.optim.Adam(self.sae.parameters(), lr=lr or 2e-4 / (m / 2**14) ** 0.5)

    def step(self, x: torch.Tensor) -> None:
        self.sae.set_decoder_norm_to_unit_norm()
        self.sae(x).fvu.backward()
        self.sae.remove_gradient_parallel_to_decoder_directions()
        self.optimizer.step()
        self.optimizer.zero_grad()

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae(x).sae_out


class DictionaryLearning:
    dist, module = "dictionary-learning", "dictionary_learning"

    def __init__(self, d: int, m: int, k: int, total_steps: int, lr: float | None = None):
        from dictionary_learning.trainers.top_k import TopKTrainer

        warmup = max(1, total_steps // 20)
        self.trainer = TopKTrainer(
            steps=total_steps, activation_dim=d, dict_size=m, k=k, layer=0, lm_name="cells", warmup_steps=warmup,
            seed=0, device="cpu", lr=lr,
        )  # fmt: skip
        self.n_steps = 0

    def step(self, x: torch.Tensor) -> None:
        self.trainer.update(self.n_steps, x)
        self.n_steps += 1

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.trainer.ae(x)


PEERS = (SAELens, Overcomplete, Sparsify, DictionaryLearning)


def stand_in(package: str) -> None:
    """An empty ``package`` with an empty ``transforms`` where it is not installed (see the module notes)."""
    if package in sys.modules or importlib.util.find_spec(package) is not None:
        return
    sys.modules[package] = types.ModuleType(package)
    sys.modules[f"{package}.transforms"] = sys.modules[package].transforms = types.ModuleType(f"{package}.transforms")


def old_get_cmap() -> None:
    """``matplotlib.cm.get_cmap`` (removed in matplotlib 3.9; the project pins a newer one), as colormaps has it."""
    import matplotlib
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap


def available(peer) -> str | None:
    """None when the peer imports, else why it is skipped."""
    for shim in getattr(peer, "shims", ()):
        shim()
    try:
        importlib.import_module(peer.module)
    except (ImportError, RuntimeError, AttributeError) as error:  # what broken installs raised here
        return (
            f"{peer.dist} not importable ({type(error).__name__}: {error}); install benchmarks/requirements-peers.txt"
        )
    return None


def dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---- runs -------------------------------------------------------------------------------------------------------


def run_peer(
    peer, X_train: torch.Tensor, X_val: torch.Tensor, case: dict, orders: list[torch.Tensor], lr: float | None
) -> dict:
    """Train one peer for the case's epochs; the FVU curve against its training clock (evaluation excluded)."""
    torch.manual_seed(0)
    d, steps_per_epoch = X_train.shape[1], math.ceil(len(X_train) / BATCH)
    start = time.perf_counter()
    sae = peer(d, case["m"], case["k"], steps_per_epoch * case["n_epochs"], lr)
    clock, train_seconds, curve = time.perf_counter() - start, 0.0, []
    for order in orders:
        start = time.perf_counter()
        batches = [X_train[order[s : s + BATCH]] for s in range(0, len(order), BATCH)]
        if hasattr(sae, "epoch"):
            sae.epoch(batches)
        else:
            for x in batches:
                sae.step(x)
        elapsed = time.perf_counter() - start
        clock, train_seconds = clock + elapsed, train_seconds + elapsed
        curve.append({"seconds": clock, "fvu": validation_fvu(sae.reconstruct, X_val)})
    return {"curve": curve, "cells_per_s": len(X_train) * len(orders) / train_seconds}


def ladder(n_epochs: int) -> list[int]:
    """Epoch budgets 1, 2, 4, ... up to and including ``n_epochs``."""
    budgets = [2**i for i in range(int(math.log2(n_epochs)) + 1)]
    return budgets if budgets[-1] == n_epochs else [*budgets, n_epochs]


def run_ours(X_train: np.ndarray, X_val: torch.Tensor, case: dict) -> dict:
    """Fresh complete fits up the epoch ladder until the smallest target is met; each fit's whole wall time."""
    curve, cells_per_s = [], None
    for n_epochs in ladder(case["n_epochs"]):
        start = time.perf_counter()
        result = fit(
            X_train, n_features=case["m"], k=case["k"], activation="topk", batch_size=BATCH, n_epochs=n_epochs,
            validation_fraction=0, device="cpu", progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        curve.append({"n_epochs": n_epochs, "seconds": seconds, "fvu": validation_fvu(result.model.reconstruct, X_val)})
        cells_per_s = len(X_train) * n_epochs / sum(result.history["seconds"])  # of the longest fit so far
        if curve[-1]["fvu"] <= min(case["targets"]):
            break
    return {"curve": curve, "cells_per_s": cells_per_s, "lr": result.params["lr"]}


def time_to(curve: list[dict], target: float) -> float | None:
    """The first time on the curve at which the FVU is at most the target (None: never, within the budget)."""
    return next((point["seconds"] for point in curve if point["fvu"] <= target), None)


def median_or_none(values: list[float | None]) -> float | None:
    """Median where a None (never reached) counts as slower than any time; None if the median is such a run."""
    ranked = sorted(values, key=lambda v: math.inf if v is None else v)
    middle = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]
    return None if None in middle else statistics.mean(middle)


def summarise(name: str, runs: list[dict], targets: tuple[float, ...]) -> dict:
    """Medians over rounds of one library's cells/s and time to each target, with its final FVU."""
    return {
        "cells_per_s": statistics.median(run["cells_per_s"] for run in runs),
        "seconds_to_fvu": {str(t): median_or_none([time_to(run["curve"], t) for run in runs]) for t in targets},
        "final_fvu": statistics.median(run["curve"][-1]["fvu"] for run in runs),
        "runs": runs,
    }


def ratios(libraries: dict, targets: tuple[float, ...]) -> dict:
    """Per target: the fastest peer's time over ours (above 1: ours is faster; None when either never got there)."""
    out = {}
    for t in map(str, targets):
        ours = libraries["cellsae_kit"]["seconds_to_fvu"][t]
        peers = {n: lib["seconds_to_fvu"][t] for n, lib in libraries.items() if n != "cellsae_kit"}
        reached = {n: s for n, s in peers.items() if s is not None}
        fastest = min(reached, key=reached.get) if reached else None
        out[t] = {
            "fastest_peer": fastest,
            "fastest_peer_seconds": reached.get(fastest),
            "ours_seconds": ours,
            "fastest_peer_over_ours": reached[fastest] / ours if fastest and ours else None,
        }
    return out


def measure(name: str, case: dict, peers: list, rounds: int, seed: int, peer_lr: str) -> dict:
    """Round robin over ours and the available peers on one case; medians over rounds."""
    load_before, started = os.getloadavg()[0], time.perf_counter()
    X = load_case(name, case["n_cells"], seed)
    train_idx, val_idx = split(len(X), seed)
    X_train, X_val = X[train_idx], torch.from_numpy(X[val_idx])
    orders = epoch_orders(len(train_idx), case["n_epochs"], seed)
    runs: dict[str, list[dict]] = {"cellsae_kit": [], **{peer.dist: [] for peer in peers}}
    for r in range(rounds):
        runs["cellsae_kit"].append(run_ours(X_train, X_val, case))
        lr = runs["cellsae_kit"][-1]["lr"] if peer_lr == "ours" else None
        for peer in peers:
            runs[peer.dist].append(run_peer(peer, torch.from_numpy(X_train), X_val, case, orders, lr))
        for lib, lib_runs in runs.items():
            last = lib_runs[-1]
            print(f"{name} round {r + 1} {lib}: {last['cells_per_s']:.0f} cells/s, FVU {last['curve'][-1]['fvu']:.4f}")
    libraries = {lib: summarise(lib, lib_runs, case["targets"]) for lib, lib_runs in runs.items()}
    return {
        "n_cells": len(X),
        "d": X.shape[1],
        "n_train": len(train_idx),
        "n_validation": len(val_idx),
        **{key: case[key] for key in ("m", "k", "n_epochs")},
        "targets": list(case["targets"]),
        "libraries": libraries,
        "fastest_peer_over_ours": ratios(libraries, case["targets"]),
        "rounds": rounds,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "seconds": time.perf_counter() - started,
    }


# ---- figure -----------------------------------------------------------------------------------------------------

COLOURS = {"cellsae_kit": "#1f77b4", "sae-lens": "#ff7f0e", "overcomplete": "#2ca02c"}
COLOURS |= {"eai-sparsify": "#d62728", "dictionary-learning": "#9467bd"}


def median_curve(runs: list[dict]) -> tuple[list[float], list[float]]:
    """Point by point median of the rounds' curves (the rounds evaluate at the same epochs)."""
    n = min(len(run["curve"]) for run in runs)
    seconds = [statistics.median(run["curve"][i]["seconds"] for run in runs) for i in range(n)]
    return seconds, [statistics.median(run["curve"][i]["fvu"] for run in runs) for i in range(n)]


def figure(out: dict, path: Path) -> None:
    """Validation FVU against wall seconds, one line per library, one panel per case, the targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.3, not 3 x 10^-1
    # between the decades only 2, 3 and 5 are labelled, so that the labels do not overlap
    sparse = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "235" else "")
    cases = out["cases"]
    fig, axes = plt.subplots(1, len(cases), figsize=(6.2 * len(cases), 4.6), squeeze=False)
    for ax, (name, case) in zip(axes[0], cases.items(), strict=True):
        for lib, summary in case["libraries"].items():
            seconds, values = median_curve(summary["runs"])
            ours = lib == "cellsae_kit"
            label = "cellsae_kit (fresh fit per budget)" if ours else lib
            style = {"marker": "o", "lw": 2.2, "ms": 5} if ours else {"marker": ".", "lw": 1.4, "ms": 4}
            ax.plot(seconds, values, label=label, color=COLOURS.get(lib), **style)
        for target in case["targets"]:
            ax.axhline(target, color="#777777", lw=0.8, ls="--")
            ax.annotate(f"FVU {target:g}", (1.0, target), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=8, color="#555555")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain if high / low < 4 else sparse)  # a short axis: label them all
        ax.set_xlabel("wall seconds (peers: training clock, evaluation excluded; ours: whole fit call)")
        ax.set_ylabel("validation FVU (held-out 10 %)")
        ax.set_title(
            f"{name}: {case['n_cells']:,} cells x {case['d']}, m={case['m']}, k={case['k']}, {case['n_epochs']} epochs",
            fontsize=10,
        )
        ax.grid(True, which="both", alpha=0.25)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=8, frameon=False)
    fig.suptitle(f"TopK SAE, fp32, Adam, batch {BATCH}, {out['threads']} thread(s) on {out['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ---- main -------------------------------------------------------------------------------------------------------


def main() -> None:
    """Run the cases and write the JSON and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the libraries")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, the same for every library")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peer-lr", default="own", choices=["own", "ours"],
        help="the peers' learning rates: each library's default, or the one ours chose (a sensitivity check)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small data, one round: a smoke test")
    parser.add_argument("--replot", type=Path, help="only redraw the figure of this results JSON")
    args = parser.parse_args()
    if args.replot:
        figure(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    skipped = {peer.dist: why for peer in PEERS if (why := available(peer))}
    peers = [peer for peer in PEERS if peer.dist not in skipped]
    suffix = ("_peer_lr_ours" if args.peer_lr == "ours" else "") + ("_quick" if args.quick else "")
    path = RESULTS / f"vs_libraries{suffix}.json"
    # A run of some cases keeps the others' results from the file; each case records its own load and time.
    earlier = json.loads(path.read_text())["cases"] if path.exists() else {}
    cases = {name: case for name, case in earlier.items() if name in CASES and name not in args.cases}
    for name in args.cases:
        cases[name] = measure(name, (QUICK if args.quick else CASES)[name], peers, rounds, args.seed, args.peer_lr)
    cases = {name: cases[name] for name in CASES if name in cases}
    out = {
        "benchmark": "vs_libraries",
        "device": cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "env_OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "batch_size": BATCH,
        "peer_lr": args.peer_lr,
        "versions": {"cellsae_kit": dist_version("cellsae_kit")} | {p.dist: dist_version(p.dist) for p in peers},
        "skipped": skipped,
        "note": __doc__.split("\n\n", 1)[1].split("\n\nInstall")[0],
        "cases": cases,
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    figure(out, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    main()
