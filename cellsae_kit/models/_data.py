"""Cells read in contiguous chunks: shuffled chunk order, rows shuffled within a buffer of a few chunks.

Reading whole chunks keeps every read a sequential slice of the store (fast on disks, and on zarr or HDF5 where data
is compressed by blocks), while shuffling the chunk order and then the rows of a buffer still mixes cells from
across the data set into each minibatch (the scheme of annbatch and scDataset). annbatch itself is not used: it
needs Python >= 3.12 and its own sharded zarr layout, while this works on any ``.h5ad`` or zarr store as written.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse

from ._check import check_sparse
from ._encode import to_tensor

MAX_CHUNK = 8192
MIN_CHUNKS = 64
MAX_CHUNK_BYTES = 64 * 2**20
SAMPLE_CELLS = 20_000


class ChunkedRows:
    """Cells x dimensions that are read in contiguous chunks of rows, for training on data that stays on disk.

    Pass it to :func:`cellsae_kit.models.fit` instead of an array. Each epoch reads the training chunks in a
    shuffled order, ``buffer_chunks`` at a time (each read one contiguous slice of the store), and shuffles the
    rows of that buffer into minibatches, so memory holds a few chunks rather than the data set. The data
    centre, the scale and the data-based initialisation come from a random sample of chunks (about 20,000 cells),
    the validation cells are a random set of whole chunks, and the final activations are encoded chunk by chunk.

    Parameters
    ----------
    data
        Anything with ``shape`` whose ``data[start:stop]`` returns those rows as a numpy array or a scipy sparse
        matrix: an ``h5py.Dataset`` (a backed ``.h5ad``), a ``zarr.Array``, anndata's backed sparse matrix
        (``anndata.io.sparse_dataset`` of a CSR group), a numpy array or a scipy CSR matrix.
    chunk_size
        Rows per chunk, the unit of reading and of shuffling. Default: enough for 64 chunks, at most 8192 rows
        (and at most 64 MiB of dense rows).
        It is rounded up to whole storage chunks of ``data`` (zarr and chunked HDF5 decompress whole storage
        chunks; anndata writes zarr with chunks of many thousand rows) while a chunk stays under 64 MiB and there
        are at least 8 chunks.
    buffer_chunks
        Chunks read together and shuffled row by row: more mixes better and holds more in memory.
    n_shards
        How many processes share the training chunks (each reads its own subset). Default: the number of
        processes when ``torch.distributed`` runs (``torchrun``), else 1. One process with ``n_shards=N`` steps
        through exactly the minibatches of an ``N``-process run (each process's part in rank order), which makes
        the two comparable.
    name
        How messages name the data, e.g. ``"obsm['X_pca'] of pbmc.h5ad"``.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import ChunkedRows
    >>> rows = ChunkedRows(np.arange(20.0).reshape(10, 2), chunk_size=4)
    >>> rows.n_chunks, rows.bounds(2)
    (3, (8, 10))
    >>> rows[2:4]
    array([[4., 5.],
           [6., 7.]], dtype=float32)
    """

    def __init__(
        self,
        data: Any,
        *,
        chunk_size: int | None = None,
        buffer_chunks: int = 4,
        n_shards: int | None = None,
        name: str = "the input",
    ):
        shape = tuple(getattr(data, "shape", ()))
        if len(shape) != 2:
            raise ValueError(f"{name} has shape {shape}; expected a 2-D cells x dimensions matrix.")
        dtype = np.dtype(getattr(data, "dtype", np.float32))
        if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
            raise TypeError(f"{name} has dtype {dtype}, which is not real-valued numeric; store it as float.")
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"{name} has shape {shape}: it needs at least one cell and one dimension.")
        if sparse.issparse(data):
            check_sparse(data, name)
        if sparse.issparse(data) and data.format != "csr":
            data = sparse.csr_matrix(data)  # slicing rows of a CSC or COO matrix is slow or impossible
        if getattr(data, "format", "csr") == "csc":
            raise ValueError(
                f"{name} is stored by columns (CSC), so a block of cells cannot be read as one slice; rewrite it "
                "as CSR (for an AnnData: adata.X = adata.X.tocsr(), then write the file again)."
            )
        if chunk_size is None:
            chunk_size = min(MAX_CHUNK, max(1, math.ceil(shape[0] / MIN_CHUNKS)))
            if not (sparse.issparse(data) or hasattr(data, "format")):  # wide dense rows: keep chunks small
                chunk_size = min(chunk_size, max(1, MAX_CHUNK_BYTES // (shape[1] * dtype.itemsize)))
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size={chunk_size} must be at least 1.")
        stored = (getattr(data, "chunks", None) or (0,))[0]
        rounded = math.ceil(int(chunk_size) / stored) * stored if stored > 1 else int(chunk_size)
        # A partial storage chunk costs the decompression of all of it: read whole ones, unless that makes chunks
        # too large to hold or too few to shuffle.
        if rounded * shape[1] * dtype.itemsize <= MAX_CHUNK_BYTES and shape[0] >= 8 * rounded:
            chunk_size = rounded
        if int(buffer_chunks) < 1:
            raise ValueError(f"buffer_chunks={buffer_chunks} must be at least 1.")
        if n_shards is not None and int(n_shards) < 1:
            raise ValueError(f"n_shards={n_shards} must be at least 1.")
        self.data, self.name = data, name
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.chunk_size, self.buffer_chunks = int(chunk_size), int(buffer_chunks)
        self.n_shards = None if n_shards is None else int(n_shards)
        self.ndim = 2

    @property
    def n_chunks(self) -> int:
        """Number of chunks (the last one may be shorter)."""
        return math.ceil(self.shape[0] / self.chunk_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        """First and one-past-last row of a chunk."""
        return chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.shape[0])

    def sizes(self, chunks: np.ndarray) -> np.ndarray:
        """Rows in each of the given chunks."""
        chunks = np.asarray(chunks, dtype=np.int64)
        return np.minimum((chunks + 1) * self.chunk_size, self.shape[0]) - chunks * self.chunk_size

    def rows(self, chunks: np.ndarray) -> np.ndarray:
        """Row numbers of the given chunks, in the given order."""
        parts = [np.arange(*self.bounds(int(c))) for c in chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def read(self, start: int, stop: int) -> np.ndarray | sparse.csr_matrix:
        """Read rows ``start:stop`` in one slice, as float32 (CSR stays CSR); non-finite values raise."""
        try:
            block = self.data[start:stop]
        except (ValueError, IndexError, OSError, RuntimeError) as err:  # h5py, zarr and scipy on damaged data
            raise ValueError(
                f"{self.name} cannot be read in cells {start}-{stop - 1}: the file is damaged or its sparse structure "
                f"is malformed ({err}). Write the data again from a copy you trust."
            ) from err
        if sparse.issparse(block):
            check_sparse(block, f"{self.name} (cells {start}-{stop - 1})")
            block = sparse.csr_matrix(block, dtype=np.float32)
            values = block.data
        else:
            block = values = np.asarray(block, dtype=np.float32)
        if not np.isfinite(values).all():
            raise ValueError(
                f"{self.name} contains NaN or infinite values in cells {start}-{stop - 1}; remove or impute them "
                "first (for example write the finite cells to a new file)."
            )
        return block

    def read_chunks(self, chunks: np.ndarray, max_rows: int | None = None) -> Iterator[np.ndarray | sparse.spmatrix]:
        """Read the given chunks in storage order, consecutive ones in one slice of at most ``max_rows`` rows."""
        for start, stop in _runs(self, np.sort(np.asarray(chunks, dtype=np.int64)), max_rows):
            yield self.read(start, stop)

    def __getitem__(self, rows: slice) -> np.ndarray | sparse.csr_matrix:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("ChunkedRows reads contiguous blocks of rows only: index it with start:stop.")
        start, stop, _ = rows.indices(self.shape[0])
        return self.read(start, max(start, stop))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"ChunkedRows({self.name}, {self.shape[0]} cells x {self.shape[1]}, {self.n_chunks} chunks of "
            f"{self.chunk_size})"
        )


def _runs(rows: ChunkedRows, chunks: np.ndarray, max_rows: int | None) -> Iterator[tuple[int, int]]:
    """Row ranges covering sorted chunks: neighbouring chunks merge, up to ``max_rows`` rows (whole chunks)."""
    limit = max(1, (max_rows or rows.shape[0]) // rows.chunk_size)  # whole chunks per read
    i = 0
    while i < len(chunks):
        j = i + 1
        while j < len(chunks) and chunks[j] == chunks[j - 1] + 1 and j - i < limit:
            j += 1
        yield rows.bounds(int(chunks[i]))[0], rows.bounds(int(chunks[j - 1]))[1]
        i = j


def _stack(blocks: list) -> np.ndarray | sparse.csr_matrix:
    if len(blocks) == 1:
        return blocks[0]
    if sparse.issparse(blocks[0]):
        return sparse.vstack(blocks, format="csr")
    return np.concatenate(blocks)


@dataclass
class Stream:
    """One fit's use of a :class:`ChunkedRows`: its training and validation chunks, shards and shuffling seed.

    ``shard`` is this process's shard under ``torchrun``; ``None`` steps through all shards together (their
    parts of each minibatch stacked in shard order), which is what one process does.
    """

    rows: ChunkedRows
    train_chunks: np.ndarray
    val_chunks: np.ndarray
    shards: list[np.ndarray]
    seed: int
    device: torch.device
    shard: int | None = None

    @classmethod
    def plan(
        cls,
        rows: ChunkedRows,
        validation_fraction: float,
        rng: np.random.Generator,
        device: torch.device,
        *,
        world_size: int = 1,
        rank: int = 0,
    ) -> Stream:
        """Hold out whole chunks for validation and deal the training chunks to the shards."""
        if not 0 <= validation_fraction < 1:
            raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1).")
        n_shards = world_size if rows.n_shards is None else rows.n_shards
        if world_size > 1 and n_shards != world_size:
            raise ValueError(
                f"ChunkedRows(n_shards={n_shards}) but {world_size} processes are training; leave n_shards unset "
                "under torchrun."
            )
        n = rows.n_chunks
        n_val = 0 if validation_fraction == 0 else max(1, round(validation_fraction * n))
        if n - n_val < 1:
            raise ValueError(
                f"{rows.name} has {rows.shape[0]} cells in {n} chunk(s) of {rows.chunk_size}: holding out {n_val} for "
                "validation leaves none to train on; use a smaller chunk_size or validation_fraction=0."
            )
        if n - n_val < n_shards:
            raise ValueError(
                f"{rows.name} has {rows.shape[0]} cells in {n} chunks of {rows.chunk_size}: after {n_val} "
                f"validation chunk(s) that leaves fewer training chunks than the {n_shards} processes that each "
                "need their own; use fewer processes, a smaller chunk_size or more cells."
            )
        perm = rng.permutation(n)
        train, val = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        dealt = rng.permutation(train)
        shards = [np.sort(dealt[s::n_shards]) for s in range(n_shards)]
        seed = int(rng.integers(2**63 - 1))
        return cls(rows, train, val, shards, seed, device, rank if world_size > 1 else None)

    @property
    def n_shards(self) -> int:
        """Number of shards (processes)."""
        return len(self.shards)

    def train_indices(self) -> np.ndarray:
        """Row numbers of the training cells."""
        return self.rows.rows(self.train_chunks)

    def validation_indices(self) -> np.ndarray:
        """Row numbers of the validation cells."""
        return self.rows.rows(self.val_chunks)

    def batch_size(self, batch_size: int) -> int:
        """Return the global batch, capped at the training cells; several shards must split it evenly."""
        n_train = int(self.rows.sizes(self.train_chunks).sum())
        n = self.n_shards
        if n > 1 and batch_size % n:
            raise ValueError(
                f"batch_size={batch_size} is the global batch of {n} processes and must split evenly between "
                f"them; pass a multiple of {n}."
            )
        return min(batch_size, n_train - n_train % n)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Minibatches per epoch: all cells with one shard; several shards stop when the smallest runs out."""
        n = self.n_shards
        if n == 1:
            return math.ceil(int(self.rows.sizes(self.train_chunks).sum()) / batch_size)
        smallest = min(int(self.rows.sizes(s).sum()) for s in self.shards)
        if smallest < batch_size // n:
            raise ValueError(
                f"The smallest of the {n} processes' shares of the training cells has {smallest} cells, fewer than "
                f"its part of a batch ({batch_size // n}); use fewer processes or a smaller batch_size."
            )
        return smallest // (batch_size // n)

    def sample(self, rng: np.random.Generator, n_cells: int | None = None) -> np.ndarray | sparse.csr_matrix:
        """Training cells of randomly chosen whole chunks, at least ``n_cells`` of them (or all).

        By default 20,000 cells, fewer for wide inputs (at least 4096), because the centring densifies the sample
        in float64: about 128 MiB.
        """
        if n_cells is None:
            n_cells = min(SAMPLE_CELLS, max(4096, 2**27 // (8 * self.rows.shape[1])))
        order = rng.permutation(self.train_chunks)
        take = int(np.searchsorted(np.cumsum(self.rows.sizes(order)), n_cells)) + 1
        return _stack(list(self.rows.read_chunks(order[:take])))

    def epoch(self, epoch: int, batch_size: int, device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """Yield one epoch's minibatches on the device (or ``device``): this process's part under torchrun."""
        n = self.n_shards
        mine = range(n) if self.shard is None else [self.shard]
        parts = [self._shard_blocks(s, epoch, batch_size // n if n > 1 else batch_size) for s in mine]
        for _ in range(self.steps_per_epoch(batch_size)):
            yield to_tensor(_stack([next(part) for part in parts]), self.device if device is None else device)

    def _shard_blocks(self, shard: int, epoch: int, size: int) -> Iterator[np.ndarray | sparse.csr_matrix]:
        """One shard's cells in blocks of ``size``: chunks in shuffled order, rows shuffled within each buffer."""
        rng = np.random.default_rng([self.seed, epoch, shard])
        chunks = rng.permutation(self.shards[shard])
        left = []
        for i in range(0, len(chunks), self.rows.buffer_chunks):
            block = _stack(left + list(self.rows.read_chunks(chunks[i : i + self.rows.buffer_chunks])))
            block = block[rng.permutation(block.shape[0])]
            full = block.shape[0] // size * size
            for start in range(0, full, size):
                # a copy: a view would keep the whole buffer alive while the next one is read (and after the epoch)
                yield block[start : start + size].copy()
            left = [block[full:].copy()] if full < block.shape[0] else []
        if left:
            yield left[0]  # already a copy

    def cells(self, idx: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Yield the cells of ``idx`` (whole chunks) in order; under torchrun each process its share of chunks."""
        chunks = np.unique(np.asarray(idx) // self.rows.chunk_size)
        if self.shard is not None:
            chunks = chunks[self.shard :: self.n_shards]
        for block in self.rows.read_chunks(chunks, batch_size):
            for start in range(0, block.shape[0], batch_size):  # chunks can be larger than a batch
                yield to_tensor(block[start : start + batch_size], self.device)


_DONE = object()


def prefetch(batches: Iterator[torch.Tensor], device: torch.device, depth: int = 2) -> Iterator[torch.Tensor]:
    """Yield host batches on ``device`` while a thread prepares the next ``depth`` of them.

    The thread reads, densifies and, for a GPU, copies each batch into pinned (page-locked) memory, so that the
    copy to the GPU is asynchronous and overlaps with the computation on the previous batch. The batches keep
    their order, an error in the thread is raised here, and the thread ends when the consumer stops early.
    """
    pin = device.type == "cuda"
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for batch in batches:
                if not hand_over(batch.pin_memory() if pin else batch):
                    return
        except BaseException as err:  # noqa: BLE001 (raised again in the consumer's thread)
            hand_over(err)
            return
        hand_over(_DONE)

    thread = threading.Thread(target=work, name="cellsae_kit-prefetch", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item.to(device, non_blocking=pin)
    finally:
        stop.set()
        thread.join()
