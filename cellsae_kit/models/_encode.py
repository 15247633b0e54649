"""Encoding cells into sparse codes: tensors in, CSR out (shared by the model, streaming and training)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import sparse

from ._check import as_float32

if TYPE_CHECKING:
    from ._sae import Codes, SparseAutoencoder


def to_tensor(X: np.ndarray | sparse.spmatrix, device: torch.device | str) -> torch.Tensor:
    """Turn a dense or sparse block of cells into a float32 tensor on ``device``."""
    if sparse.issparse(X):
        X = X.toarray()
    return torch.as_tensor(as_float32(X), device=device)


def codes_to_csr(codes: Codes, n_cells: int, n_features: int) -> sparse.csr_matrix:
    """Turn per-cell codes into a CSR block, dropping zeros."""
    values = codes.values.detach().float().cpu().numpy()
    if codes.indices is None:
        out = sparse.csr_matrix(values)
    else:
        indices = codes.indices.cpu().numpy()
        rows = np.repeat(np.arange(n_cells), indices.shape[1]) if codes.rows is None else codes.rows.cpu().numpy()
        out = sparse.csr_matrix((values.ravel(), (rows, indices.ravel())), shape=(n_cells, n_features))
    out.eliminate_zeros()
    out.sort_indices()
    return out.astype(np.float32)


@torch.no_grad()
def encode_blocks(
    model: SparseAutoencoder, rows: Any, *, batch_size: int = 8192
) -> Iterator[tuple[int, torch.Tensor, Codes, sparse.csr_matrix]]:
    """Encode cells one block of consecutive rows at a time, holding only that block's inputs and codes.

    Parameters
    ----------
    model
        A trained SAE (its device is used; it is in evaluation mode while the blocks are produced).
    rows
        Cells x inputs: a :class:`ChunkedRows`, or anything that slices rows (``h5py``/``zarr`` arrays, numpy,
        scipy sparse).
    batch_size
        Cells encoded at once.

    Yields
    ------
    Each block's first row, its inputs (on the model's device), its codes and the same codes as CSR (float32,
    zeros dropped): what :func:`encode_rows` stacks, for a caller that writes the blocks somewhere instead.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import SparseAutoencoder, encode_blocks
    >>> model = SparseAutoencoder(5, 16, k=2)
    >>> X = np.random.default_rng(0).normal(size=(50, 5)).astype("float32")
    >>> [(start, block.shape) for start, _, _, block in encode_blocks(model, X, batch_size=20)]
    [(0, (20, 16)), (20, (20, 16)), (40, (10, 16))]
    """
    if len(rows.shape) != 2 or rows.shape[1] != model.n_inputs:
        raise ValueError(
            f"The cells to encode have shape {tuple(rows.shape)} but the SAE takes {model.n_inputs} inputs per cell; "
            "pass cells x inputs of the representation it was trained on."
        )
    was_training = model.training
    model.eval()
    device = model.b_dec.device
    # Read whole chunks, about a batch or more at a time: a read that ends inside a storage chunk (zarr, chunked
    # HDF5) decompresses all of it, and again for the next read.
    chunk = getattr(rows, "chunk_size", batch_size)
    step = chunk * max(1, batch_size // chunk)
    try:
        for read_start in range(0, rows.shape[0], step):
            cells = rows[read_start : read_start + step]
            for offset in range(0, cells.shape[0], batch_size):
                x = to_tensor(cells[offset : offset + batch_size], device)
                codes = model.encode(x)
                yield read_start + offset, x, codes, codes_to_csr(codes, x.shape[0], model.n_features)
    finally:
        model.train(was_training)


@torch.no_grad()  # on_block runs without gradients too
def encode_rows(
    model: SparseAutoencoder,
    rows: Any,
    *,
    batch_size: int = 8192,
    on_block: Callable[[int, torch.Tensor, Codes], None] | None = None,
) -> sparse.csr_matrix:
    """Encode cells block by block into one CSR matrix, without holding the input or a second copy of the codes.

    Parameters
    ----------
    model
        A trained SAE (its device is used).
    rows
        Cells x inputs: a :class:`ChunkedRows`, or anything that slices rows (``h5py``/``zarr`` arrays, numpy,
        scipy sparse).
    batch_size
        Cells encoded at once (blocks of consecutive rows).
    on_block
        Called with each block's first row, its inputs (on the model's device) and its codes, for example to
        measure the reconstruction error in the same pass.

    Returns
    -------
    The activations (cells x features, float32); equal to :meth:`SparseAutoencoder.transform` with the same
    ``batch_size`` when it divides the chunk size or the chunk size divides it (otherwise the batches differ and
    the values agree to float rounding). :func:`encode_blocks` gives the same codes a block at a time.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import ChunkedRows, SparseAutoencoder, encode_rows
    >>> model = SparseAutoencoder(5, 16, k=2)
    >>> X = np.random.default_rng(0).normal(size=(50, 5)).astype("float32")
    >>> codes = encode_rows(model, ChunkedRows(X, chunk_size=8), batch_size=16)
    >>> codes.shape, (codes != model.transform(X, batch_size=16)).nnz
    ((50, 16), 0)
    """
    n_cells, m = rows.shape[0], model.n_features
    # TopK stores at most k values per cell: one allocation of the final size, no copy when it is done.
    per_cell = model.k if model.activation != "relu" else min(m, 16)
    capacity = max(1, n_cells * per_cell)
    index_dtype = np.int32 if max(capacity, m) < 2**31 else np.int64
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    indices, data, nnz = np.empty(capacity, index_dtype), np.empty(capacity, np.float32), 0
    for start, x, codes, block in encode_blocks(model, rows, batch_size=batch_size):
        if on_block is not None:
            on_block(start, x, codes)
        if nnz + block.nnz > len(data):  # BatchTopK or ReLU keep more than expected: grow geometrically
            new = max(2 * len(data), nnz + block.nnz)
            indices, data = _grown(indices, nnz, new), _grown(data, nnz, new)
        indices[nnz : nnz + block.nnz], data[nnz : nnz + block.nnz] = block.indices, block.data
        # in int64: the block's int32 offsets plus the codes so far can pass 2**31
        indptr[start + 1 : start + x.shape[0] + 1] = block.indptr[1:].astype(np.int64) + nnz
        nnz += block.nnz
    # give back the unused capacity (ReLU and BatchTopK keep fewer or more than the first guess)
    indices.resize(nnz, refcheck=False)
    data.resize(nnz, refcheck=False)
    if nnz >= 2**31:
        indices = indices.astype(np.int64)
    indptr = indptr.astype(indices.dtype)
    return sparse.csr_matrix((data, indices, indptr), shape=(n_cells, m))


def _grown(values: np.ndarray, n: int, size: int) -> np.ndarray:
    """Copy the first ``n`` values into a new array of ``size``, which owns its memory (so it can shrink later)."""
    out = np.empty(size, values.dtype)
    out[:n] = values[:n]
    return out
