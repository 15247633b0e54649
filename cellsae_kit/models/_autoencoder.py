"""A small MLP autoencoder that makes cell representations of chosen size (the reference study's latent models)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import sparse
from torch import nn
from tqdm.auto import tqdm

from ._check import as_float32, check_data
from ._encode import to_tensor
from ._train import resolve_device, split


class Autoencoder(nn.Module):
    """An MLP autoencoder with a linear latent layer.

    The encoder is ``Linear -> ReLU`` for each hidden layer, then a linear map to the latent space; the decoder
    mirrors it. Inputs are centred per dimension and divided by one overall scale (both stored as buffers and
    set by :func:`fit_autoencoder`), so that the loss is comparable between data sets.

    Parameters
    ----------
    n_inputs
        Input dimension (genes).
    n_latent
        Latent dimension.
    hidden
        Sizes of the hidden layers of the encoder (the decoder uses them in reverse).

    Examples
    --------
    >>> import torch
    >>> from cellsae_kit.models import Autoencoder
    >>> ae = Autoencoder(100, 8, hidden=(32,))
    >>> x_hat, z = ae(torch.randn(5, 100))
    >>> x_hat.shape, z.shape
    (torch.Size([5, 100]), torch.Size([5, 8]))
    """

    def __init__(self, n_inputs: int, n_latent: int, hidden: tuple[int, ...] = (256,)):
        super().__init__()
        for value, name in [(n_inputs, "n_inputs"), (n_latent, "n_latent"), *((h, "hidden") for h in hidden)]:
            if int(value) < 1:
                raise ValueError(f"{name}={value} must be at least 1.")
        self.n_inputs, self.n_latent, self.hidden = int(n_inputs), int(n_latent), tuple(int(h) for h in hidden)
        sizes = [self.n_inputs, *self.hidden, self.n_latent]
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])
        self.register_buffer("center", torch.zeros(self.n_inputs))
        self.register_buffer("scale", torch.ones(()))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent coordinates of raw inputs ``x`` (cells x inputs)."""
        return self.encoder((x - self.center) / self.scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the reconstruction (in the standardised units the loss uses) and the latent coordinates."""
        z = self.encode(x)
        return self.decoder(z), z

    @torch.no_grad()
    def transform(self, X: np.ndarray | sparse.spmatrix, *, batch_size: int = 8192) -> np.ndarray:
        """Latent coordinates of every cell of ``X`` (float32, cells x latent), in evaluation mode."""
        was_training = self.training
        self.eval()
        device = self.center.device
        out = [
            self.encode(to_tensor(X[s : s + batch_size], device)).cpu().numpy()
            for s in range(0, X.shape[0], batch_size)
        ]
        self.train(was_training)
        return np.concatenate(out).astype(np.float32)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@dataclass
class AutoencoderResult:
    """What :func:`fit_autoencoder` returns.

    Attributes
    ----------
    model
        The trained autoencoder (best validation epoch), in eval mode.
    latent
        Latent coordinates of every input cell (float32, cells x latent).
    history
        Per-epoch ``epoch``, ``loss`` (training MSE in standardised units) and ``fvu_validation``.
    metrics
        ``fvu_train``, ``fvu_validation``, ``best_epoch`` and ``n_epochs``.
    validation_indices
        Row numbers of the validation cells.
    params
        The resolved training parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import fit_autoencoder
    >>> result = fit_autoencoder(np.random.default_rng(0).random((60, 10)), 2, n_epochs=2, progress=False)
    >>> sorted(result.metrics)
    ['best_epoch', 'fvu_train', 'fvu_validation', 'n_epochs']
    """

    model: Autoencoder
    latent: np.ndarray
    history: dict[str, list[float]]
    metrics: dict[str, float]
    validation_indices: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def fit_autoencoder(
    X: np.ndarray | sparse.spmatrix,
    n_latent: int,
    *,
    hidden: tuple[int, ...] | None = None,
    n_epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    validation_fraction: float = 0.1,
    patience: int = 10,
    random_state: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    input_name: str = "the input",
) -> AutoencoderResult:
    """Train an MLP autoencoder with mean squared error, Adam and early stopping on held-out cells.

    Parameters
    ----------
    X
        Cells x inputs, for example log-normalised expression (sparse rows are densified a batch at a time).
    n_latent
        Latent dimension (the reference study used 20, 150 and 1000).
    hidden
        Hidden layer sizes of the encoder; by default one layer of ``max(256, 2 * n_latent)`` units.
    n_epochs
        Maximum passes over the training cells; by default enough for about 4,000 steps (10 to 200 epochs).
    batch_size
        Cells per step.
    lr, weight_decay
        Adam's learning rate and weight decay.
    validation_fraction
        Fraction of cells held out for early stopping.
    patience
        Stop after this many epochs without a better validation error; the best epoch's weights are kept.
    random_state
        Seed for initialisation, split and shuffling; CPU runs with the same seed are identical.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    progress
        Show a progress bar.
    input_name
        How errors name the data.

    Returns
    -------
    An :class:`AutoencoderResult`. The FVU is that of the standardised inputs (1 = no better than the mean cell).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import fit_autoencoder
    >>> X = np.random.default_rng(0).random((200, 30)).astype("float32")
    >>> fit_autoencoder(X, 4, n_epochs=3, progress=False).latent.shape
    (200, 4)
    """
    check_data(X, input_name)
    if X.shape[0] < 2:
        raise ValueError(f"{input_name} has a single cell; an autoencoder needs at least two.")
    if int(n_latent) < 1:
        raise ValueError(f"n_latent={n_latent} must be at least 1.")
    if batch_size < 1 or (n_epochs is not None and n_epochs < 1) or patience < 1:
        raise ValueError(f"batch_size={batch_size}, n_epochs={n_epochs} and patience={patience} must be at least 1.")
    device = resolve_device(device)
    hidden = (max(256, 2 * int(n_latent)),) if hidden is None else tuple(hidden)
    rng = np.random.default_rng(random_state)
    train_idx, val_idx = split(X.shape[0], validation_fraction, rng)
    batch_size = min(int(batch_size), len(train_idx))
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    if n_epochs is None:
        n_epochs = int(min(200, max(10, math.ceil(4000 / steps_per_epoch))))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        model = Autoencoder(X.shape[1], n_latent, hidden)
    sample = X[train_idx]
    sample = np.asarray(sample.toarray() if sparse.issparse(sample) else sample, dtype=np.float64)
    center = sample.mean(axis=0)
    scale = float(np.sqrt(((sample - center) ** 2).sum(axis=1).mean() / X.shape[1]))
    if scale == 0:
        raise ValueError(f"All cells of {input_name} are identical; there is no variation to encode.")
    with torch.no_grad():
        model.center.copy_(torch.as_tensor(center, dtype=torch.float32))
        model.scale.fill_(scale)
    model.to(device).train()
    data = X if sparse.issparse(X) else torch.as_tensor(as_float32(X), device=device)

    def rows(idx: np.ndarray) -> torch.Tensor:
        return data[torch.as_tensor(idx, device=device)] if torch.is_tensor(data) else to_tensor(data[idx], device)

    @torch.no_grad()
    def fvu(idx: np.ndarray) -> float:
        was_training = model.training
        model.eval()
        sse = total = 0.0
        for start in range(0, len(idx), 8192):
            x = rows(idx[start : start + 8192])
            target = (x - model.center) / model.scale
            sse += float((model(x)[0] - target).pow(2).sum())
            total += float((x - x.new_tensor(center)).pow(2).sum() / model.scale**2)
        model.train(was_training)
        return sse / total if total > 0 else float("nan")

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, list[float]] = {"epoch": [], "loss": [], "fvu_validation": []}
    best = (math.inf, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    bar = tqdm(range(n_epochs), desc="training autoencoder", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        order = train_idx[rng.permutation(len(train_idx))]
        loss_sum = 0.0
        for start in range(0, len(order), batch_size):
            x = rows(np.sort(order[start : start + batch_size]))
            x_hat, _ = model(x)
            loss = (x_hat - (x - model.center) / model.scale).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * x.shape[0]
        score = fvu(val_idx) if len(val_idx) else loss_sum / len(order)
        history["epoch"].append(epoch + 1)
        history["loss"].append(loss_sum / len(order))
        history["fvu_validation"].append(score if len(val_idx) else float("nan"))
        if score < best[0]:
            best = (score, epoch + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
        bar.set_postfix(fvu=f"{score:.3f}", refresh=False)
        if epoch + 1 - best[1] >= patience:
            break
    bar.close()

    model.load_state_dict(best[2])
    model.eval()
    metrics = {
        "fvu_train": fvu(train_idx),
        "fvu_validation": fvu(val_idx) if len(val_idx) else float("nan"),
        "best_epoch": best[1],
        "n_epochs": len(history["epoch"]),
    }
    params = {
        "n_latent": int(n_latent),
        "hidden": list(hidden),
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "validation_fraction": validation_fraction,
        "patience": patience,
        "random_state": random_state,
        "device": str(device),
    }
    return AutoencoderResult(model, model.transform(X), history, metrics, val_idx, params)
