"""Quality metrics of a sparse code: array in, number out."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from ._sae import Codes, SparseAutoencoder, sparse_codes

DENSE_THRESHOLD = 0.1


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Fraction of variance unexplained, ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``.

    The mean is taken per input dimension over the cells given, so 0 is perfect and 1 is no better than
    predicting every cell by the centre.

    Parameters
    ----------
    x
        Cells x dimensions, the data.
    x_hat
        The reconstruction, same shape.

    Returns
    -------
    The FVU; ``nan`` when ``x`` has no variance.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import fvu
    >>> x = np.array([[0.0, 1.0], [2.0, 3.0]])
    >>> fvu(x, x)
    0.0
    """
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {x.shape} but x_hat has shape {x_hat.shape}.")
    total = float(((x - x.mean(axis=0)) ** 2).sum())
    return float(((x - x_hat) ** 2).sum()) / total if total > 0 else float("nan")


def activation_stats(codes: sparse.spmatrix | np.ndarray) -> dict[str, float]:
    """L0, dead fraction and dense fraction of a cells x features activation matrix.

    Parameters
    ----------
    codes
        Activations, cells x features; a feature is active in a cell where its value is non-zero.

    Returns
    -------
    ``l0`` (mean active features per cell), ``dead_fraction`` (features active in no cell) and ``dense_fraction``
    (features active in more than 10% of cells).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import activation_stats
    >>> activation_stats(np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 3.0]]))
    {'l0': 1.5, 'dead_fraction': 0.3333333333333333, 'dense_fraction': 0.6666666666666666}
    """
    codes = sparse.csr_matrix(codes)
    if codes.shape[0] == 0:
        raise ValueError("The activation matrix has no cells.")
    return codes_stats(sparse.csr_matrix(codes != 0))  # explicit zeros are not activity


def codes_stats(codes: sparse.csr_matrix) -> dict[str, float]:
    """:func:`activation_stats` of codes without explicit zeros, without copying them."""
    counts = CodeCounts(codes.shape[1])
    counts.add(codes)
    return counts.stats()


class CodeCounts:
    """Count active features block by block, for :func:`activation_stats` of codes that are never held at once.

    Parameters
    ----------
    n_features
        Columns of the codes.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.models import CodeCounts
    >>> counts = CodeCounts(3)
    >>> counts.add(sparse.csr_matrix(np.array([[1.0, 0.0, 0.0]])))
    >>> counts.add(sparse.csr_matrix(np.array([[2.0, 0.0, 3.0]])))
    >>> counts.stats()
    {'l0': 1.5, 'dead_fraction': 0.3333333333333333, 'dense_fraction': 0.6666666666666666}
    """

    def __init__(self, n_features: int):
        self.counts = np.zeros(n_features, dtype=np.int64)
        self.n_cells = 0
        self.nnz = 0

    def add(self, codes: sparse.csr_matrix) -> None:
        """Count a block of cells x features (CSR without explicit zeros)."""
        # bincount makes an int64 copy of what it counts: count a slice at a time, not 8 bytes x nnz at once
        for start in range(0, codes.nnz, 2**22):
            self.counts += np.bincount(codes.indices[start : start + 2**22], minlength=len(self.counts))
        self.n_cells += codes.shape[0]
        self.nnz += codes.nnz

    def stats(self) -> dict[str, float]:
        """``l0``, ``dead_fraction`` and ``dense_fraction`` of the cells counted so far."""
        frequency = self.counts / self.n_cells
        return {
            "l0": float(self.nnz / self.n_cells),
            "dead_fraction": float(np.mean(frequency == 0)),
            "dense_fraction": float(np.mean(frequency > DENSE_THRESHOLD)),
        }


class RunningFVU:
    """The FVU of cells seen a batch at a time: the squared error and the sums for the variance around their mean.

    Examples
    --------
    >>> import torch
    >>> from cellsae_kit.models._metrics import RunningFVU
    >>> acc = RunningFVU()
    >>> acc.add(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [1.0]]))
    >>> acc.value()
    0.5
    """

    def __init__(self):
        self.sse = self.sum = self.sumsq = 0.0
        self.n = 0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Count a batch of cells ``x`` and its reconstruction ``x_hat``."""
        # Sums in float64 on the device (0-d tensors), so that adding a batch does not wait for it.
        self.sse = self.sse + (x - x_hat).pow(2).sum(dtype=torch.float64)
        self.sum = self.sum + x.sum(0, dtype=torch.float64)
        self.sumsq = self.sumsq + x.pow(2).sum(dtype=torch.float64)
        self.n += x.shape[0]

    def value(self) -> float:
        """Return the FVU of the cells counted so far (``nan`` before any, or when they have no variance)."""
        total = float(self.sumsq) - float((self.sum**2).sum()) / self.n if self.n else 0.0
        return float(self.sse) / total if total > 0 else float("nan")


class TrainingFVU:
    """Count the FVU of a model's training cells over the blocks that encode every cell.

    A caller that encodes the cells itself (``fit(..., encode=False)``, then :func:`encode_blocks` into a file)
    gets the training error from that pass instead of a second one over the data.

    Parameters
    ----------
    model
        The trained SAE.
    train_indices
        Rows of the training cells (``train_indices`` of :class:`FitResult`).
    n_cells
        Rows encoded in all.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import SparseAutoencoder, TrainingFVU, encode_blocks
    >>> model = SparseAutoencoder(5, 16, k=2)
    >>> X = np.random.default_rng(0).normal(size=(50, 5)).astype("float32")
    >>> error = TrainingFVU(model, np.arange(40), len(X))
    >>> for start, x, codes, _ in encode_blocks(model, X, batch_size=20):
    ...     error.add(start, x, codes)
    >>> 0 < error.value() < 2
    True
    """

    def __init__(self, model: SparseAutoencoder, train_indices: np.ndarray, n_cells: int):
        train_indices = np.asarray(train_indices)
        if train_indices.size and (train_indices.min() < 0 or train_indices.max() >= n_cells):
            raise ValueError(
                f"train_indices must be rows of the {n_cells} cells encoded (0 to {n_cells - 1}); pass "
                "FitResult.train_indices of a fit on the same cells."
            )
        self.model = model
        self.training = np.zeros(n_cells, dtype=bool)
        self.training[train_indices] = True
        self.acc = RunningFVU()

    @torch.no_grad()
    def add(self, start: int, x: torch.Tensor, codes: Codes) -> None:
        """Count the training cells of a block: its first row, its inputs and its codes (as :func:`encode_blocks`)."""
        keep = torch.as_tensor(self.training[start : start + x.shape[0]], device=x.device)
        x_hat = self.model.decode(sparse_codes(codes), x.shape[0]).float()
        self.acc.add((x * self.model.input_scale)[keep], x_hat[keep])

    def value(self) -> float:
        """Return the training cells' FVU (``nan`` when none was counted)."""
        return self.acc.value()


def max_decoder_cosine(W_dec: np.ndarray | torch.Tensor, *, chunk_size: int = 4096) -> float:
    """Largest cosine similarity between two different decoder rows (features).

    Computed in chunks so that large dictionaries never need the full features x features matrix.

    Parameters
    ----------
    W_dec
        Features x inputs decoder matrix (a tensor is compared on its own device).
    chunk_size
        Rows compared at once.

    Returns
    -------
    The maximum off-diagonal cosine; ``nan`` for a single feature.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import max_decoder_cosine
    >>> max_decoder_cosine(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    0.7071067...
    """
    # a tensor stays on its device: on a GPU the features x features products of a large dictionary are cheap
    w = W_dec.detach().float() if torch.is_tensor(W_dec) else torch.as_tensor(np.asarray(W_dec, dtype=np.float32))
    if w.shape[0] < 2:
        return float("nan")
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = -1.0
    for start in range(0, w.shape[0], chunk_size):
        sim = w[start : start + chunk_size] @ w.T
        rows = torch.arange(sim.shape[0], device=w.device)
        sim[rows, rows + start] = -1.0
        best = max(best, float(sim.max()))
    return best
