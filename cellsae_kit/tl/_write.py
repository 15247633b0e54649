"""Writing what ``tl.sae`` stores into a new ``.h5ad`` file or zarr store, the activations block by block.

The activations of every cell are never held at once: each block of encoded cells is appended to
``obsm["X_<key>"]`` on disk (anndata's on-disk CSR), and the statistics of the codes (L0, dead and dense fractions)
are counted on the way. The file is written under a temporary name and renamed when complete
(:func:`cellsae_kit._atomic.atomic_path`), so a failed run leaves no half-written file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import torch
import torch.distributed as dist
import zarr
from anndata import AnnData
from anndata.io import read_elem, sparse_dataset, write_elem
from scipy import sparse
from tqdm.auto import tqdm

from .. import get
from .._atomic import atomic_path, same_file
from ..models import CodeCounts, Codes, FitResult, TrainingFVU, encode_blocks
from ._input import Input
from ._store import store_fit
from ._stream import open_store

SUFFIXES = (".h5ad", ".zarr")
CHUNK = 2**18  # values per storage chunk of the appended activations (1 MiB of float32)
STATS_AFTER = "fvu_validation"  # the statistics of the codes follow this metric, as in fit's own metrics


def check_output(path: str | Path, *, overwrite: bool, source: Any) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` if the results can be written there, else a clear error.

    Checked before training, so that a long run does not end in an error: the format (``.h5ad`` or ``.zarr``),
    an existing file (kept unless ``overwrite``), the input file itself, and a folder that cannot be written.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"write_to={str(path)!r} must end in .h5ad or .zarr (the format to write).")
    if get.is_mudata(source):
        raise TypeError("write_to= writes an AnnData file; for a MuData leave write_to=None and use write_h5mu.")
    inputs = [source] if isinstance(source, str | Path) else [getattr(source, "filename", None)]
    if any(name is not None and same_file(path, name) for name in inputs):
        raise ValueError(f"write_to={str(path)!r} is the input file; write the results to a new path.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose a new path.")
    folder = path.parent
    while not folder.exists():  # missing folders are created when the file is written
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write into {folder} ({'not a folder' if not folder.is_dir() else 'no write permission'}); "
            "choose a folder you can write to for write_to=."
        )
    return path


def is_writer() -> bool:
    """Whether this process writes the results: the only one, or rank 0 under ``torchrun``."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def write_fit(
    path: Path,
    source: AnnData | str | Path,
    target: AnnData,
    data: Input,
    maps: dict,
    result: FitResult,
    key: str,
    *,
    progress: bool = True,
) -> None:
    """Write ``source``'s ``obs``, ``target``'s ``var`` and ``varm`` and what :func:`~cellsae_kit.tl.sae` stores.

    ``result`` comes from ``fit(..., encode=False)``: its model encodes ``data.X`` here, block by block, into the
    file; the training cells' FVU, counted in the same pass, and the statistics of the codes join its metrics.
    ``target`` (no cells) receives the loadings and ``uns``.
    """
    with atomic_path(path) as tmp:
        root = _create(tmp)
        try:
            _write_obs(root, source, tmp)
            batch_size = max(int(result.params.get("batch_size", 0)), 4096)  # as fit encodes
            error = TrainingFVU(result.model, result.train_indices, data.X.shape[0])
            stats = write_codes(
                root, f"X_{key}", result.model, data.X, batch_size=batch_size, progress=progress, on_block=error.add
            )
            metrics = _with_stats(result.metrics | {"fvu_train": error.value()}, stats)
            store_fit(target, data, maps, replace(result, metrics=metrics), key)
            for name in ("var", "varm", "uns"):
                write_elem(root, name, dict(getattr(target, name)) if name != "var" else target.var)
            for name in ("obsp", "varp", "layers"):
                write_elem(root, name, {})
        finally:
            if isinstance(root, h5py.File):
                root.close()
        if not isinstance(root, h5py.File):
            zarr.consolidate_metadata(str(tmp))  # as anndata's write_zarr: read_zarr opens it in one read


def write_codes(
    root: Any,
    name: str,
    model: Any,
    rows: Any,
    *,
    batch_size: int = 8192,
    progress: bool = True,
    on_block: Callable[[int, torch.Tensor, Codes], None] | None = None,
) -> dict[str, float]:
    """Encode ``rows`` into ``root["obsm"][name]`` (CSR), a block at a time; return the codes' statistics.

    ``on_block`` is called with each block's first row, inputs and codes (as :func:`~cellsae_kit.models.encode_rows`).
    """
    m, n_cells = model.n_features, rows.shape[0]
    per_cell = model.k if model.activation != "relu" else min(m, 16)
    # BatchTopK may keep more than k codes in a cell: 64-bit row offsets where twice the expected count needs them
    index = np.int64 if 2 * n_cells * per_cell >= 2**31 else np.int32
    empty = sparse.csr_matrix((0, m), dtype=np.float32)
    empty.indptr = empty.indptr.astype(index)
    write_elem(root["obsm"], name, empty, dataset_kwargs={"chunks": (CHUNK,)})
    if index is np.int64 and root["obsm"][name]["indptr"].dtype != np.int64:  # scipy may narrow the offsets
        del root["obsm"][name]["indptr"]
        root["obsm"][name].create_dataset("indptr", data=np.zeros(1, np.int64), chunks=(CHUNK,), maxshape=(None,))
    codes = sparse_dataset(root["obsm"][name])
    counts = CodeCounts(m)
    with tqdm(total=n_cells, desc="writing activations", unit="cell", disable=not progress) as bar:
        for start, x, block_codes, block in encode_blocks(model, rows, batch_size=batch_size):
            if on_block is not None:
                on_block(start, x, block_codes)
            codes.append(block)
            counts.add(block)
            bar.update(x.shape[0])
    return counts.stats()


def _with_stats(metrics: dict[str, float], stats: dict[str, float]) -> dict[str, float]:
    """Insert the codes' statistics where :func:`~cellsae_kit.models.fit` puts them."""
    out = {}
    for name, value in metrics.items():
        out[name] = value
        if name == STATS_AFTER:
            out |= stats
    return out | stats


def _create(path: Path) -> Any:
    """Open a new, empty AnnData store at ``path``: HDF5 for ``.h5ad``, zarr (anndata's format) for ``.zarr``."""
    if path.suffix == ".zarr":
        root = zarr.open_group(str(path), mode="w", zarr_format=ad.settings.zarr_write_format)
    else:
        root = h5py.File(path, "w")
    root.attrs["encoding-type"], root.attrs["encoding-version"] = "anndata", "0.1.0"
    write_elem(root, "obsm", {})
    return root


def _write_obs(root: Any, source: AnnData | str | Path, path: Path) -> None:
    """Write the cells' ``obs``: copied as stored when the input file has the output's format (no cells read)."""
    if not isinstance(source, str | Path):  # strings become categories, as anndata's writers make them
        cells = AnnData(obs=source.obs.copy())
        cells.strings_to_categoricals()
        write_elem(root, "obs", cells.obs)
        return
    source = Path(source)
    src, _ = open_store(source)
    try:
        if isinstance(src, h5py.File) and isinstance(root, h5py.File):
            src.copy(src["obs"], root, "obs")
        elif isinstance(src, zarr.Group) and isinstance(root, zarr.Group) and _same_zarr(src, root, source):
            shutil.copytree(source / "obs", path / "obs")
        else:
            write_elem(root, "obs", read_elem(src["obs"]))
    finally:
        if isinstance(src, h5py.File):
            src.close()


def _same_zarr(src: zarr.Group, root: zarr.Group, source: Path) -> bool:
    """Whether the input store's ``obs`` can be copied as files: same zarr format, a folder on this disk."""
    return src.metadata.zarr_format == root.metadata.zarr_format and (source / "obs").is_dir()
