"""Open data that stays on disk for streamed training: a backed AnnData, an ``.h5ad`` file or a zarr store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import zarr
from anndata import AnnData
from anndata.io import read_elem, sparse_dataset

from ..models import ChunkedRows
from ._input import Input, get_input, rep_name


def is_streamed(adata: Any) -> bool:
    """Whether ``adata`` is a path or a backed AnnData, whose cells are read from disk chunk by chunk."""
    return isinstance(adata, str | Path) or bool(getattr(adata, "isbacked", False))


def open_streamed(
    adata: AnnData | str | Path,
    use_rep: str | None,
    layer: str | None,
    *,
    chunk_size: int | None = None,
    obs: bool = True,
) -> tuple[AnnData, Input]:
    """Return the AnnData that receives the results and the input as :class:`~cellsae_kit.models.ChunkedRows`.

    A backed AnnData keeps ``X`` on disk (anndata loads ``obsm`` and ``layers`` into memory when it opens the
    file); a path gives a new AnnData with the file's ``obs``, ``var`` and ``varm`` only, and the input is read
    from the file itself, whether it is ``X``, a layer or an ``obsm`` entry. ``obs=False`` leaves the file's
    ``obs`` unread (an AnnData of no cells, for results that go to a file of their own).
    """
    if isinstance(adata, str | Path):
        root, path = open_store(Path(adata))
        array, name = _element(root, path.name, use_rep, layer)
        target = AnnData(
            obs=read_elem(root["obs"]) if obs else None,
            var=read_elem(root["var"]),
            varm=read_elem(root["varm"]) if "varm" in root else None,
        )
    elif adata.is_view:  # anndata cannot store new entries in a view of a backed object
        raise ValueError(
            "adata is a view of a backed AnnData, which cannot take the results. Load the cells into memory "
            "(adata[cells].to_memory()), or write them to a file of their own (adata[cells].write_h5ad(path)) and "
            "train on that."
        )
    elif (use_rep in (None, "X")) and layer is None:
        array, name, target = adata.X, f"adata.X (backed by {Path(adata.filename).name})", adata
        if array is None:
            raise ValueError(f"{name} is empty (None); store data there or choose another input.")
    else:  # anndata holds obsm and layers of a backed object in memory already
        data = get_input(adata, use_rep, layer)
        array, name, target = data.X, data.name, adata
    rows = ChunkedRows(array, chunk_size=chunk_size, name=name)
    return target, Input(rows, "X" if use_rep is None else use_rep, layer, name)


def open_store(path: Path) -> tuple[Any, Path]:
    """Open an ``.h5ad`` file with h5py or a zarr store with zarr, read-only."""
    if not path.exists():
        raise FileNotFoundError(
            f"There is no file or folder at {path}; pass the path of an .h5ad file or a .zarr store written by "
            "anndata (or an AnnData opened with scanpy.read_h5ad(path, backed='r'))."
        )
    if path.is_dir():
        try:
            return zarr.open_group(path, mode="r"), path
        except Exception as err:
            raise ValueError(f"{path} is a folder but no zarr store ({err}); write one with adata.write_zarr.") from err
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an .h5ad (HDF5) file; pass a file written by adata.write_h5ad or a zarr store written by "
            "adata.write_zarr."
        )
    try:
        return h5py.File(path, "r"), path
    except OSError as err:
        raise ValueError(
            f"{path} cannot be read as an .h5ad file ({err}); it may be truncated (an interrupted copy or write). "
            "Write or copy it again."
        ) from err


def _element(root: Any, file: str, use_rep: str | None, layer: str | None) -> tuple[Any, str]:
    """Find the matrix named by ``use_rep`` / ``layer`` in an opened store, without reading it."""
    use_rep = rep_name(use_rep, layer)
    if use_rep != "X":
        group, key, what = "obsm", use_rep, f"use_rep={use_rep!r}"
    elif layer is not None:
        group, key, what = "layers", layer, f"layer={layer!r}"
    else:
        group, key, what = None, "X", "X"
    parent = root if group is None else root.get(group)
    if parent is None or key not in parent:
        available = list(parent.keys()) if parent is not None and group is not None else []
        if group == "obsm" and "X" in root:
            available.insert(0, "X")
        raise KeyError(
            f"{what} is not in {file}{'' if group is None else f' (its {group})'}. Available: "
            f"{', '.join(map(repr, available)) or 'none'}."
        )
    elem = parent[key]
    name = f"{key} of {file}" if group is None else f"{group}[{key!r}] of {file}"
    if isinstance(elem, h5py.Group | zarr.Group):
        encoding = elem.attrs.get("encoding-type")
        if encoding not in ("csr_matrix", "csc_matrix"):
            raise TypeError(
                f"{name} is stored as {encoding or 'a group'}, not a matrix; choose a numeric matrix (an array or a "
                "sparse matrix)."
            )
        elem = sparse_dataset(elem)
    return elem, name
