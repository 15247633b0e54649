r"""Train an SAE on data on disk from the command line, in one process or many (``torchrun``).

One process::

    python -m cellsae_kit.train cells.h5ad --use-rep X_scVI --n-features 4096 --k 32 --output sae.safetensors

Four GPUs of one node (each process reads its own shard of the chunks; ``--batch-size`` is the global batch)::

    torchrun --nproc_per_node=4 -m cellsae_kit.train cells.zarr --use-rep X_scVI --n-features 16384 --k 32 \
        --batch-size 32768 --epochs 20 --output sae.safetensors --activations cells_sae.h5ad

Several nodes: add ``--nnodes=2 --node_rank=<0 or 1> --rdzv_backend=c10d --rdzv_endpoint=<host>:29500`` to the
``torchrun`` options on each node. GPUs communicate through NCCL, CPUs through gloo. Rank 0 writes the model
(:func:`cellsae_kit.models.save`; load it with :func:`cellsae_kit.models.load` or apply it with
:func:`cellsae_kit.tl.encode`), optionally the activations (an AnnData with the input's ``obs``, ``var`` and
``varm`` and what :func:`cellsae_kit.tl.sae` stores), and prints the metrics as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .models import ACTIVATIONS, fit, save
from .tl._sae import _find_maps, store_fit
from .tl._stream import open_streamed


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``python -m cellsae_kit.train``.

    Examples
    --------
    >>> from cellsae_kit.train import parser
    >>> parser().parse_args(["cells.h5ad", "--output", "sae"]).batch_size
    1024
    """
    p = argparse.ArgumentParser(
        prog="python -m cellsae_kit.train",
        description="Train a sparse autoencoder on cells streamed from an .h5ad file or a zarr store; run it under "
        "torchrun for several processes (GPUs: NCCL, CPUs: gloo).",
    )
    p.add_argument("input", type=Path, help="an .h5ad file or a .zarr store written by anndata")
    p.add_argument("--use-rep", default=None, help="obsm key to train on (default: X, the expression)")
    p.add_argument("--layer", default=None, help="layer of expression to train on instead of X")
    p.add_argument("--n-features", type=int, default=512, help="dictionary size")
    p.add_argument("--k", type=int, default=16, help="active features per cell (topk) or on average (batchtopk)")
    p.add_argument("--activation", choices=ACTIVATIONS, default="topk")
    p.add_argument("--l1-coef", type=float, default=0.05, help="L1 weight of the relu SAE")
    p.add_argument("--batch-size", type=int, default=1024, help="global batch: split evenly between the processes")
    p.add_argument("--epochs", type=int, default=None, help="passes over the cells (default: about 3,000 steps)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 2e-4 / sqrt(n_features / 2**14))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation-fraction", type=float, default=0.1, help="fraction of chunks held out")
    p.add_argument("--chunk-size", type=int, default=None, help="cells per chunk read from disk (default: <= 8192)")
    p.add_argument("--device", default="auto", help="auto (a GPU per process when there are GPUs), cpu or cuda:N")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--output", type=Path, required=True, help="model file (.safetensors is appended when missing)")
    p.add_argument("--activations", type=Path, default=None, help="write activations and metadata to this .h5ad/.zarr")
    p.add_argument("--key-added", default="sae", help="key of the activations and metadata in that file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train as ``python -m cellsae_kit.train`` does; return the metrics (on rank 0; empty on the other ranks).

    Parameters
    ----------
    argv
        Command-line arguments (see :func:`parser`); default: ``sys.argv[1:]``.

    Returns
    -------
    The final metrics of :func:`cellsae_kit.models.fit` on rank 0, with ``world_size``; ``{}`` elsewhere.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import scanpy as sc
    >>> from cellsae_kit.train import main
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> sc.datasets.pbmc68k_reduced().write_h5ad(folder / "pbmc.h5ad")
    >>> args = [str(folder / "pbmc.h5ad"), "--use-rep", "X_pca", "--n-features", "32", "--k", "4", "--epochs", "2"]
    >>> metrics = main([*args, "--output", str(folder / "sae"), "--no-progress"])
    >>> (folder / "sae.safetensors").exists(), metrics["world_size"]
    (True, 1.0)
    """
    args = parser().parse_args(argv)
    started_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started_group = True
    try:
        world = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        device = args.device
        if device == "auto" and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        target, data = open_streamed(args.input, args.use_rep, args.layer, chunk_size=args.chunk_size)
        maps = _find_maps(target, data, None)
        metadata = {"use_rep": data.use_rep} | ({"layer": data.layer} if data.layer else {})
        if data.is_expression:
            metadata["var_names"] = target.var_names.tolist()
        result = fit(
            data.X,
            n_features=args.n_features,
            activation=args.activation,
            k=args.k,
            l1_coef=args.l1_coef,
            batch_size=args.batch_size,
            n_epochs=args.epochs,
            lr=args.lr,
            validation_fraction=args.validation_fraction,
            random_state=args.seed,
            device=device,
            precision=args.precision,
            progress=not args.no_progress and rank == 0,
            input_name=data.name,
            metadata=metadata,
        )
        if rank != 0:
            return {}
        save(result.model.cpu(), args.output)
        if args.activations is not None:
            store_fit(target, data, maps, result, args.key_added)
            if args.activations.suffix == ".zarr":
                target.write_zarr(args.activations)
            else:
                target.write_h5ad(args.activations)
        return {name: float(value) for name, value in result.metrics.items()} | {"world_size": float(world)}
    finally:
        if started_group:
            dist.destroy_process_group()


if __name__ == "__main__":
    metrics = main()
    if metrics:
        print(json.dumps(metrics))
