import itertools
import threading

import anndata as ad
import h5py
import numpy as np
import pytest
import torch
import zarr
from anndata.io import sparse_dataset
from scipy import sparse

from cellsae_kit.models import ChunkedRows, SparseAutoencoder, activation_stats, encode_rows, fit
from cellsae_kit.models._data import Stream, prefetch
from cellsae_kit.models._encode import codes_to_csr
from cellsae_kit.models._metrics import codes_stats
from tests.conftest import sparse_dictionary_data

CPU = torch.device("cpu")
FAST = {"n_features": 32, "k": 3, "n_epochs": 4, "batch_size": 64, "progress": False}


class Recorder:
    """A numpy array that logs every block of rows read from it."""

    def __init__(self, X):
        self.X, self.shape, self.dtype, self.reads = X, X.shape, X.dtype, []

    def __getitem__(self, rows):
        self.reads.append(rows)
        return self.X[rows]


def numbered(n_cells, n_dims=3):
    """Each row holds its own row number, so batches tell which cells they contain."""
    return np.repeat(np.arange(n_cells, dtype=np.float32)[:, None], n_dims, axis=1)


def plan(rows, validation_fraction=0.1, seed=0):
    return Stream.plan(rows, validation_fraction, np.random.default_rng(seed), CPU)


@pytest.mark.parametrize(
    ("n_cells", "chunk_size", "buffer_chunks", "batch_size"), [(1000, 64, 4, 100), (997, 50, 1, 64), (300, 7, 3, 300)]
)
@pytest.mark.parametrize("as_sparse", [False, True])
def test_an_epoch_covers_every_training_cell_exactly_once(n_cells, chunk_size, buffer_chunks, batch_size, as_sparse):
    X = numbered(n_cells)
    rows = ChunkedRows(sparse.csr_matrix(X) if as_sparse else X, chunk_size=chunk_size, buffer_chunks=buffer_chunks)
    stream = plan(rows)
    batch_size = stream.batch_size(batch_size)
    batches = [b[:, 0].numpy().astype(int) for b in stream.epoch(0, batch_size)]
    seen = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(seen), stream.train_indices())
    assert len(batches) == stream.steps_per_epoch(batch_size)
    assert all(len(b) == batch_size for b in batches[:-1])
    # the validation cells are whole chunks that training never sees, and the two sets cover the data
    val = stream.validation_indices()
    assert len(val) > 0 and np.intersect1d(seen, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([seen, val])), np.arange(n_cells))
    assert set(np.unique(val // chunk_size)) == set(stream.val_chunks)


def test_reads_are_whole_contiguous_chunks_each_read_once_per_epoch():
    recorder = Recorder(numbered(1000))
    rows = ChunkedRows(recorder, chunk_size=64, buffer_chunks=3)
    stream = plan(rows)
    recorder.reads.clear()
    list(stream.epoch(0, 100))
    read = []
    for block in recorder.reads:
        assert isinstance(block, slice) and block.step is None
        assert block.start % 64 == 0 and (block.stop % 64 == 0 or block.stop == 1000)
        assert block.stop - block.start <= 3 * 64  # never more than a buffer at once
        read.extend(range(block.start, block.stop))
    np.testing.assert_array_equal(np.sort(read), stream.train_indices())


def test_chunks_are_shuffled_and_mixed_within_buffers():
    rows = ChunkedRows(numbered(2000), chunk_size=50, buffer_chunks=4)
    stream = plan(rows, validation_fraction=0)
    first, second = ([b[:, 0].numpy().astype(int) for b in stream.epoch(e, 100)] for e in (0, 1))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))
    # every batch mixes cells from several chunks, and chunks are not visited in storage order
    assert all(len(np.unique(b // 50)) > 1 for b in first)
    chunks = np.concatenate(first) // 50
    _, first_seen = np.unique(chunks, return_index=True)
    assert not np.all(np.diff(first_seen) > 0)


def test_shards_split_the_chunks_and_one_process_steps_through_both():
    recorder = Recorder(numbered(1000))
    rows = ChunkedRows(recorder, chunk_size=40, n_shards=2)
    whole = plan(rows)
    assert np.intersect1d(*whole.shards).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate(whole.shards)), whole.train_chunks)
    parts = []
    for shard in (0, 1):
        one = Stream(**{**whole.__dict__, "shard": shard})
        recorder.reads.clear()
        parts.append([b[:, 0].numpy().astype(int) for b in one.epoch(3, 128)])
        read_chunks = {block.start // 40 for block in recorder.reads}
        assert read_chunks <= set(whole.shards[shard])  # each process reads only its own chunks
    together = [b[:, 0].numpy().astype(int) for b in whole.epoch(3, 128)]
    assert len(together) == len(parts[0]) == len(parts[1]) == whole.steps_per_epoch(128)
    for batch, a, b in zip(together, *parts, strict=True):
        assert len(a) == len(b) == 64
        np.testing.assert_array_equal(batch, np.concatenate([a, b]))
    seen = np.concatenate(together)
    assert len(np.unique(seen)) == len(seen)  # no cell twice; the rest of a shard's last buffer is dropped


def test_evaluation_batches_stay_within_the_batch_size():
    stream = plan(ChunkedRows(numbered(1000), chunk_size=300))
    sizes = [x.shape[0] for x in stream.cells(stream.train_indices(), 128)]
    assert max(sizes) == 128 and sum(sizes) == len(stream.train_indices())


def test_streamed_fit_centres_on_the_training_mean_and_holds_out_chunks():
    X, _, _ = sparse_dictionary_data(n_cells=600)
    X = X + 3
    result = fit(ChunkedRows(X, chunk_size=20), **(FAST | {"n_epochs": 1, "lr": 1e-12}))
    model = result.model
    train = result.train_indices
    # fewer than 20,000 training cells: the sample of chunks is all of them, so the centre is their exact mean
    np.testing.assert_allclose(model.b_dec.detach().numpy() / float(model.input_scale), X[train].mean(0), atol=1e-5)
    spread = np.linalg.norm(X[train] - X[train].mean(0), axis=1).mean()
    assert float(model.input_scale) == pytest.approx(np.sqrt(X.shape[1]) / spread, rel=1e-5)
    val = result.validation_indices
    assert len(val) == 60 and np.all(np.diff(val.reshape(-1, 20), axis=1) == 1)  # three whole chunks
    assert result.codes.shape == (600, 32)


@pytest.mark.filterwarnings("ignore:Writing zarr v2:UserWarning")
@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu"])
def test_disk_stores_train_exactly_like_memory(tmp_path, activation):
    X, _, _ = sparse_dictionary_data(n_cells=500, n_dims=12)
    X[X < 0.3] = 0
    adata = ad.AnnData(sparse.csr_matrix(X))
    adata.obsm["X_rep"] = X
    adata.write_h5ad(tmp_path / "a.h5ad")
    adata.write_zarr(tmp_path / "a.zarr")
    h5 = h5py.File(tmp_path / "a.h5ad", "r")
    store = zarr.open_group(tmp_path / "a.zarr", mode="r")
    sources = {
        "dense": [X, h5["obsm/X_rep"], store["obsm/X_rep"]],
        "csr": [sparse.csr_matrix(X), sparse_dataset(h5["X"]), sparse_dataset(store["X"])],
    }
    kwargs = FAST | {"activation": activation}
    for kind, (in_memory, *on_disk) in sources.items():
        reference = fit(ChunkedRows(in_memory, chunk_size=25), **kwargs)
        for data in on_disk:
            result = fit(ChunkedRows(data, chunk_size=25), **kwargs)
            assert (result.codes != reference.codes).nnz == 0, kind
            assert result.history["fvu_train"] == reference.history["fvu_train"], kind
    # the codes encoded chunk by chunk are the trained model's codes of the cells held in memory
    np.testing.assert_allclose(
        reference.codes.toarray(), reference.model.transform(X, batch_size=4096).toarray(), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("activation", ["topk", "batchtopk", "relu"])
def test_encode_rows_equals_transform(activation):
    torch.manual_seed(0)
    model = SparseAutoencoder(6, 40, activation=activation, k=3)
    with torch.no_grad():
        model.b_enc.fill_(0.5)  # relu: most features fire, more than the first guess of the codes' size
    X = np.random.default_rng(1).normal(size=(333, 6)).astype(np.float32)
    model.eval()
    with torch.no_grad():  # an independent reference: each batch's codes, stacked
        blocks = [
            codes_to_csr(model.encode(torch.from_numpy(X[s : s + 50])), len(X[s : s + 50]), 40)
            for s in range(0, 333, 50)
        ]
    expected = sparse.vstack(blocks, format="csr")
    assert (model.transform(X, batch_size=50) != expected).nnz == 0
    for chunk_size in (10, 120):  # chunks smaller and larger than a batch
        codes = encode_rows(model, ChunkedRows(X, chunk_size=chunk_size), batch_size=50)
        assert codes.shape == expected.shape and (codes != expected).nnz == 0
    assert codes_stats(codes) == activation_stats(expected)
    np.testing.assert_array_equal(codes.indptr, expected.indptr)
    seen = []  # each block's first row, size and codes, without gradients (a callback must not build a graph)
    encode_rows(model, X, batch_size=50, on_block=lambda s, x, c: seen.append((s, len(x), torch.is_grad_enabled())))
    assert seen == [(s, len(X[s : s + 50]), False) for s in range(0, 333, 50)]
    if activation == "relu":
        assert codes.nnz > 333 * 16


def test_chunk_size_follows_the_stores_chunks(tmp_path):
    array = zarr.create_array(tmp_path / "x.zarr", shape=(1000, 4), chunks=(30, 4), dtype="float32")
    assert ChunkedRows(array, chunk_size=100).chunk_size == 120
    # anndata's zarr chunks hold many rows: whole ones, unless a chunk would pass 64 MiB
    array = zarr.create_array(tmp_path / "y.zarr", shape=(10**6, 4), chunks=(125_000, 2), dtype="float32")
    assert ChunkedRows(array, chunk_size=8192).chunk_size == 125_000
    array = zarr.create_array(tmp_path / "z.zarr", shape=(10**6, 200), chunks=(125_000, 2), dtype="float32")
    assert ChunkedRows(array, chunk_size=8192).chunk_size == 8192
    assert ChunkedRows(np.broadcast_to(np.float32(0), (10**6, 20_000))).chunk_size == 838
    assert ChunkedRows(sparse.csr_matrix((10**6, 20_000), dtype=np.float32)).chunk_size == 8192
    assert ChunkedRows(np.zeros((1000, 4)), chunk_size=100).chunk_size == 100
    assert ChunkedRows(np.zeros((100_000, 4))).chunk_size == 1563
    assert ChunkedRows(np.broadcast_to(np.float32(0), (10**7, 4))).chunk_size == 8192


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "message"),
    [
        (np.zeros(5), {}, ValueError, "2-D"),
        (np.array([["a", "b"]]), {}, TypeError, "not real-valued numeric"),
        (np.zeros((0, 3)), {}, ValueError, "at least one cell"),
        (np.zeros((5, 3)), {"chunk_size": 0}, ValueError, "chunk_size=0"),
        (np.zeros((5, 3)), {"buffer_chunks": 0}, ValueError, "buffer_chunks=0"),
        (np.zeros((5, 3)), {"n_shards": 0}, ValueError, "n_shards=0"),
    ],
)
def test_bad_chunked_rows(data, kwargs, error, message):
    with pytest.raises(error, match=message):
        ChunkedRows(data, **kwargs)


def test_column_stored_sparse_is_refused(tmp_path):
    adata = ad.AnnData(sparse.csc_matrix(np.eye(20, 5, dtype=np.float32)))
    adata.write_h5ad(tmp_path / "csc.h5ad")
    with h5py.File(tmp_path / "csc.h5ad", "r") as f, pytest.raises(ValueError, match="stored by columns"):
        ChunkedRows(sparse_dataset(f["X"]))


def test_only_slices_are_read():
    with pytest.raises(TypeError, match="start:stop"):
        ChunkedRows(np.zeros((5, 2)))[[0, 3]]


def test_non_finite_cells_are_named():
    X = np.ones((100, 3), dtype=np.float32)
    X[42, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in cells 40-59"):
        fit(ChunkedRows(X + np.arange(100)[:, None], chunk_size=20, name="my store"), **FAST)


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        (ChunkedRows(numbered(100), chunk_size=100), {}, "leaves none to train on"),
        # more processes than training chunks: 5 chunks, 1 held out, 8 shards
        (ChunkedRows(numbered(100), chunk_size=20, n_shards=8), {}, "fewer training chunks than the 8 processes"),
        (ChunkedRows(numbered(100), chunk_size=20, n_shards=2), {"batch_size": 33}, "multiple of 2"),
        # 2 shards of 40 and 20 training cells cannot each give 25 cells per step
        (ChunkedRows(numbered(80), chunk_size=20, n_shards=2), {"batch_size": 50}, "smaller batch_size"),
    ],
)
def test_shards_larger_than_the_data(rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(rows, **(FAST | kwargs))


def test_prefetch_keeps_order_and_values():
    batches = [torch.full((4, 3), float(i)) for i in range(7)]
    out = list(prefetch(iter(batches), CPU, depth=2))
    assert len(out) == 7 and all(torch.equal(a, b) for a, b in zip(out, batches, strict=True))


def test_prefetch_raises_the_readers_error_after_the_batches_before_it():
    def failing():
        yield torch.zeros(2)
        raise ValueError("cells 8-15 contain NaN")

    seen = []
    with pytest.raises(ValueError, match="cells 8-15 contain NaN"):
        for batch in prefetch(failing(), CPU):
            seen.append(batch)
    assert len(seen) == 1


def test_prefetch_thread_ends_when_the_consumer_stops_early():
    endless = (torch.full((2,), float(i)) for i in itertools.count())
    batches = prefetch(endless, CPU, depth=3)
    assert float(next(batches)[0]) == 0.0 and float(next(batches)[0]) == 1.0
    batches.close()
    assert not any(t.name == "cellsae_kit-prefetch" for t in threading.enumerate())
