"""Quality metrics of a sparse code: array in, number out."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

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
