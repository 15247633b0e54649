"""The SAE engine: pure torch/numpy, no AnnData."""

from ._autoencoder import Autoencoder, AutoencoderResult, fit_autoencoder
from ._check import as_float32, check_data, check_sparse
from ._config import FitConfig
from ._data import ChunkedRows
from ._defaults import (
    auto_batch_size,
    auto_k,
    auto_lr,
    auto_n_epochs,
    auto_n_features,
    auto_prefixes,
    auto_validation_fraction,
    resolve,
)
from ._encode import encode_blocks, encode_rows
from ._io import load, save
from ._metrics import DENSE_THRESHOLD, CodeCounts, TrainingFVU, activation_stats, fvu, max_decoder_cosine
from ._sae import ACTIVATIONS, Codes, SparseAutoencoder
from ._train import FitResult, fit, geometric_median, resolve_device

__all__ = [
    "ACTIVATIONS",
    "DENSE_THRESHOLD",
    "Autoencoder",
    "AutoencoderResult",
    "ChunkedRows",
    "CodeCounts",
    "Codes",
    "FitConfig",
    "FitResult",
    "SparseAutoencoder",
    "TrainingFVU",
    "activation_stats",
    "as_float32",
    "auto_batch_size",
    "auto_k",
    "auto_lr",
    "auto_n_epochs",
    "auto_n_features",
    "auto_prefixes",
    "auto_validation_fraction",
    "check_data",
    "check_sparse",
    "encode_blocks",
    "encode_rows",
    "fit",
    "fit_autoencoder",
    "fvu",
    "geometric_median",
    "load",
    "max_decoder_cosine",
    "resolve",
    "resolve_device",
    "save",
]
