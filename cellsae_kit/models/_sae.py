"""The sparse autoencoder module: TopK, BatchTopK and ReLU + L1 in one class."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import nn

Activation = Literal["topk", "batchtopk", "relu"]
#: The activations a :class:`SparseAutoencoder` can use.
ACTIVATIONS: tuple[str, ...] = ("topk", "batchtopk", "relu")


class Codes(NamedTuple):
    """Sparse activations of a batch.

    ``values`` and ``indices`` have one row per cell and ``k`` columns (TopK), or are flat with ``rows`` naming the
    cell of each entry, in increasing order (BatchTopK in training). ReLU models return dense ``values`` and
    ``indices=None``.

    Examples
    --------
    >>> import torch
    >>> from cellsae_kit.models import SparseAutoencoder
    >>> codes = SparseAutoencoder(6, 12, k=2).encode(torch.randn(3, 6))
    >>> codes.indices.shape
    torch.Size([3, 2])
    """

    values: torch.Tensor
    indices: torch.Tensor | None
    rows: torch.Tensor | None = None


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder (SAE) on cell representations.

    Features are the rows of the decoder ``W_dec`` (``n_features x n_inputs``). The encoder subtracts the decoder
    bias ``b_dec`` (the data centre) before projecting, so the code describes each cell relative to the centre.
    Inputs are multiplied by ``input_scale`` first (set during fitting so that the mean distance from the centre
    is ``sqrt(n_inputs)``), which makes learning rates and penalties comparable between representations.

    Parameters
    ----------
    n_inputs
        Dimension of the input representation.
    n_features
        Number of dictionary features (latents).
    activation
        ``"topk"`` keeps the ``k`` largest pre-activations of each cell; ``"batchtopk"`` keeps the ``k x batch``
        largest of a training batch and a learned threshold at inference; ``"relu"`` is a ReLU with an L1 penalty
        weighted by the decoder row norms.
    k
        Active features per cell (TopK) or on average (BatchTopK). Ignored by ReLU.
    l1_coef
        Weight of the L1 penalty of the ReLU SAE. Ignored by TopK and BatchTopK.
    metadata
        JSON-serialisable information stored with the model (for example which input it was trained on).

    Examples
    --------
    >>> import torch
    >>> from cellsae_kit.models import SparseAutoencoder
    >>> sae = SparseAutoencoder(20, 128, k=4)
    >>> x_hat, codes = sae(torch.randn(10, 20))
    >>> x_hat.shape, codes.values.shape
    (torch.Size([10, 20]), torch.Size([10, 4]))
    """

    def __init__(
        self,
        n_inputs: int,
        n_features: int,
        *,
        activation: Activation = "topk",
        k: int = 16,
        l1_coef: float = 0.05,
        metadata: dict[str, Any] | None = None,
    ):
        super().__init__()
        check_config(n_inputs, n_features, activation, k, l1_coef)
        self.n_inputs, self.n_features = int(n_inputs), int(n_features)
        self.activation, self.k, self.l1_coef = activation, int(k), float(l1_coef)
        self.metadata = dict(metadata or {})
        self.W_enc = nn.Parameter(torch.empty(n_inputs, n_features))
        self.b_enc = nn.Parameter(torch.zeros(n_features))
        self.W_dec = nn.Parameter(torch.empty(n_features, n_inputs))
        self.b_dec = nn.Parameter(torch.zeros(n_inputs))
        self.register_buffer("input_scale", torch.ones(()))
        # BatchTopK inference threshold, calibrated on training cells to keep k features per cell on average.
        self.register_buffer("threshold", torch.zeros(()))
        self.reset_parameters()

    @property
    def unit_norm_decoder(self) -> bool:
        """Whether decoder rows are kept at unit norm (TopK, BatchTopK); ReLU weights its L1 by the norm instead."""
        return self.activation != "relu"

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw unit-norm decoder rows and tie the encoder to them (``W_enc = W_dec^T``)."""
        with torch.no_grad():
            w = torch.randn(self.n_features, self.n_inputs, generator=generator)
            w /= w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable)."""
        return {
            "n_inputs": self.n_inputs,
            "n_features": self.n_features,
            "activation": self.activation,
            "k": self.k,
            "l1_coef": self.l1_coef,
            "metadata": self.metadata,
        }

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Compute encoder pre-activations ``(x * input_scale - b_dec) @ W_enc + b_enc``."""
        return (x * self.input_scale - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> Codes:
        """Encode a batch into sparse codes (see :class:`Codes`)."""
        return self.select(self.pre_activations(x))

    def select(self, pre: torch.Tensor) -> Codes:
        """Apply the sparsifying activation to pre-activations."""
        if self.activation == "relu":
            return Codes(F.relu(pre), None)
        if self.activation == "batchtopk" and not self.training:
            return Codes(pre * (pre > self.threshold), None)
        if self.activation == "batchtopk":
            n_keep = min(self.k * pre.shape[0], pre.numel())
            flat = F.relu(pre).flatten().topk(n_keep, sorted=False).indices.sort().values
            rows = torch.div(flat, self.n_features, rounding_mode="floor")
            return Codes(pre.flatten()[flat].clamp_min(0), flat % self.n_features, rows)
        values, indices = pre.topk(self.k, dim=1, sorted=False)
        return Codes(F.relu(values), indices)

    def decode(self, codes: Codes, n_cells: int | None = None) -> torch.Tensor:
        """Reconstruct a batch in scaled input units from its codes, touching only the active decoder rows."""
        if codes.indices is None:
            out = codes.values @ self.W_dec
        elif codes.rows is None:
            weights = codes.values.to(self.W_dec.dtype)
            out = F.embedding_bag(codes.indices, self.W_dec, per_sample_weights=weights, mode="sum")
        else:  # BatchTopK in training: a variable number of features per cell, rows sorted
            n_cells = int(codes.rows.max()) + 1 if n_cells is None else n_cells
            offsets = torch.searchsorted(codes.rows, torch.arange(n_cells, device=codes.rows.device))
            weights = codes.values.to(self.W_dec.dtype)
            out = F.embedding_bag(codes.indices, self.W_dec, offsets, per_sample_weights=weights, mode="sum")
        return out + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Codes]:
        """Return the reconstruction in scaled units and the codes."""
        codes = self.encode(x)
        return self.decode(codes, x.shape[0]), codes

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct a batch in the original input units."""
        return self(x)[0] / self.input_scale

    @torch.no_grad()
    def transform(self, X: np.ndarray | sparse.spmatrix, *, batch_size: int = 8192) -> sparse.csr_matrix:
        """Encode cells into a CSR matrix of activations (cells x features, float32).

        Parameters
        ----------
        X
            Cells x inputs, dense or sparse.
        batch_size
            Cells encoded at once.

        Returns
        -------
        The activations; zeros are not stored.
        """
        was_training = self.training
        self.eval()
        device = self.b_dec.device
        blocks = []
        for start in range(0, X.shape[0], batch_size):
            x = to_tensor(X[start : start + batch_size], device)
            codes = self.encode(x)
            blocks.append(codes_to_csr(codes, x.shape[0], self.n_features))
        self.train(was_training)
        if not blocks:
            return sparse.csr_matrix((0, self.n_features), dtype=np.float32)
        return sparse.vstack(blocks, format="csr")

    def weights(self) -> dict[str, np.ndarray]:
        """Return the parameters and buffers as float32 numpy arrays."""
        return {name: t.detach().cpu().float().numpy().copy() for name, t in self.state_dict().items()}

    @classmethod
    def from_weights(cls, config: dict[str, Any], weights: dict[str, Any]) -> SparseAutoencoder:
        """Build a model from :meth:`config` and :meth:`weights` output, checking every shape."""
        model = cls(**config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(weights))
        if missing:
            raise ValueError(f"The stored SAE weights lack {missing}; the model cannot be rebuilt.")
        state = {}
        for name, ref in expected.items():
            value = torch.as_tensor(np.asarray(weights[name], dtype=np.float32))
            if value.shape != ref.shape:
                raise ValueError(f"Stored weight {name!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}.")
            state[name] = value
        model.load_state_dict(state)
        return model


def check_config(n_inputs: int, n_features: int, activation: str, k: int, l1_coef: float) -> None:
    """Raise a clear error for an impossible SAE configuration."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not known; choose one of {', '.join(ACTIVATIONS)}.")
    if int(n_inputs) < 1:
        raise ValueError(f"The input has {n_inputs} dimensions; an SAE needs at least one.")
    if int(n_features) < 1:
        raise ValueError(f"n_features={n_features}: an SAE needs at least one feature; pass n_features >= 1.")
    if activation != "relu" and not 1 <= int(k) < int(n_features):
        raise ValueError(
            f"k={k} with n_features={n_features}: k (active features per cell) must be at least 1 and smaller "
            "than n_features; lower k or raise n_features."
        )
    if not np.isfinite(l1_coef) or l1_coef < 0:
        raise ValueError(f"l1_coef={l1_coef} must be a finite number >= 0.")


def to_tensor(X: np.ndarray | sparse.spmatrix, device: torch.device | str) -> torch.Tensor:
    """Turn a dense or sparse block of cells into a float32 tensor on ``device``."""
    if sparse.issparse(X):
        X = X.toarray()
    return torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)


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
