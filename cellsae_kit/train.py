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
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import torch
import torch.distributed as dist
import zarr
from anndata import AnnData
from anndata.io import read_elem

from . import get
from ._atomic import same_file
from .models import FitConfig, save
from .tl import sae


def parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``python -m cellsae_kit.train``.

    Examples
    --------
    >>> from cellsae_kit.train import parser
    >>> parser().parse_args(["cells.h5ad", "--output", "sae", "--k", "8"]).k
    8
    >>> parser().parse_args(["cells.h5ad", "--output", "sae"]).k
    'auto'
    """
    p = argparse.ArgumentParser(
        prog="python -m cellsae_kit.train",
        description="Train a sparse autoencoder on cells streamed from an .h5ad file or a zarr store; run it under "
        "torchrun for several processes (GPUs: NCCL, CPUs: gloo).",
    )
    p.add_argument("input", type=Path, help="an .h5ad file or a .zarr store written by anndata")
    p.add_argument("--use-rep", default=None, help="obsm key to train on (default: X, the expression)")
    p.add_argument("--layer", default=None, help="layer of expression to train on instead of X")
    add_fit_options(p.add_argument_group("fit options (cellsae_kit.models.FitConfig)"))
    p.add_argument("--chunk-size", type=int, default=None, help="cells per chunk read from disk (default: <= 8192)")
    p.add_argument("--output", type=Path, required=True, help="model file (.safetensors is appended when missing)")
    p.add_argument(
        "--activations",
        type=Path,
        default=None,
        help="write activations, block by block, and metadata here (.h5ad/.zarr)",
    )
    p.add_argument("--key-added", default="sae", help="key of the activations and metadata in that file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_fit_options(group: argparse._ActionsContainer) -> None:
    """Add one option per field of :class:`~cellsae_kit.models.FitConfig` (``--n-features`` for ``n_features``).

    Examples
    --------
    >>> import argparse
    >>> from cellsae_kit.train import add_fit_options
    >>> p = argparse.ArgumentParser()
    >>> add_fit_options(p)
    >>> p.parse_args(["--k", "4", "--no-resample"]).k, p.parse_args(["--no-resample"]).resample
    (4, False)
    """
    hints = typing.get_type_hints(FitConfig)
    for f in fields(FitConfig):
        names = (f"--{f.name.replace('_', '-')}", *f.metadata["cli"])
        text = re.sub(r"``|:\w+:`~?([^`]+)`", r"\1", f.metadata["doc"])
        shown = "" if f.default is None else " (default: %(default)s)"  # a None default is described in the text
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": text + shown}
        kinds = _kinds(hints[f.name])
        if bool in kinds:  # --resample / --no-resample; leaving both out keeps the default ("auto")
            kwargs["action"] = argparse.BooleanOptionalAction
        elif all(isinstance(kind, str) for kind in kinds):
            kwargs["choices"] = kinds
        else:  # a number, or "auto"
            kwargs["type"] = partial(_parse, kinds[0]) if "auto" in kinds else kinds[0]
        group.add_argument(*names, **kwargs)


def _kinds(hint: Any) -> list:
    """Return the types and literal choices an annotation admits, ``None`` left out: ``int | Literal["auto"]``."""
    kinds = []
    for arg in typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,):
        if arg is not type(None):
            kinds += typing.get_args(arg) if typing.get_origin(arg) is typing.Literal else [arg]
    return kinds


def _parse(kind: type, text: str) -> Any:
    if text == "auto":
        return text
    try:
        if typing.get_origin(kind) is tuple:  # sizes such as --prefixes 16,64,256
            return tuple(int(part) for part in text.split(","))
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'auto' or a {kind.__name__}") from None


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
    cli = parser()
    args = cli.parse_args(argv)
    try:
        config = FitConfig(**{name: getattr(args, name) for name in FitConfig.options()})
    except (TypeError, ValueError) as error:
        cli.error(str(error))  # exits with the usage line, as argparse does for its own checks
    output = args.output  # the file models.save writes: .safetensors appended when missing
    if output.suffix != ".safetensors":
        output = output.with_name(output.name + ".safetensors")
    for name, path in (("--output", output), ("--activations", args.activations)):
        if path is not None and same_file(path, args.input):
            cli.error(f"{name} {path} is the input file; write the results to a new path.")
    if args.activations is not None and args.activations.suffix not in (".h5ad", ".zarr"):
        cli.error(f"--activations {args.activations} must end in .h5ad or .zarr (the format to write).")
    if args.activations is not None and same_file(args.activations, output):
        cli.error("--activations and --output name the same file; give each its own path.")
    started_group = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started_group = True
    try:
        world = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        device = args.device  # "auto" under torchrun: each process takes the GPU of its local rank
        if device == "auto" and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        options = {"layer": args.layer, "key_added": args.key_added, "chunk_size": args.chunk_size}
        options |= {"progress": not args.no_progress and rank == 0, **replace(config, device=device).params()}
        if args.activations is None:
            target = sae(args.input, args.use_rep, **options)
        else:  # encoded block by block into the file (rank 0), which appears complete under its name or not at all
            target = sae(args.input, args.use_rep, write_to=args.activations, overwrite=True, **options)
        if rank != 0:
            return {}
        stored = get.sae(target, args.key_added) if target is not None else _stored(args.activations, args.key_added)
        save(stored.model, output)
        return {name: float(value) for name, value in stored.metrics.items()} | {"world_size": float(world)}
    finally:
        if started_group:
            dist.destroy_process_group()


def _stored(path: Path, key: str) -> get.StoredSAE:
    """Read the SAE (``uns[key]``) of a results file without its activations."""
    root = zarr.open_group(path, mode="r") if path.suffix == ".zarr" else h5py.File(path, "r")
    try:
        return get.sae(AnnData(uns={key: read_elem(root["uns"][key])}), key)
    finally:
        if isinstance(root, h5py.File):
            root.close()


if __name__ == "__main__":
    metrics = main()
    if metrics:
        print(json.dumps(metrics))
