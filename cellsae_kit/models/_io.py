"""Save and load models as safetensors with a JSON config; loading runs no code from the file."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from .._atomic import atomic_path
from ._sae import SparseAutoencoder, check_stored_config, check_weights
from ._train import resolve_device

FORMAT = "cellsae_kit.SparseAutoencoder/1"


def save(model: SparseAutoencoder, path: str | Path) -> Path:
    """Write a model to a ``.safetensors`` file; its JSON config travels in the file's metadata.

    Parameters
    ----------
    model
        The model to save.
    path
        Target file; ``.safetensors`` is appended when missing.

    Returns
    -------
    The path written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from cellsae_kit.models import SparseAutoencoder, save, load
    >>> path = save(SparseAutoencoder(8, 16, k=2), pathlib.Path(tempfile.mkdtemp()) / "sae")
    >>> load(path).n_features
    16
    """
    path = model_path(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "config": json.dumps(model.config())})
    return path


def model_path(path: str | Path) -> Path:
    """Return the file :func:`save` writes for ``path``: ``.safetensors`` appended when missing."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def load(path: str | Path, *, device: str = "cpu") -> SparseAutoencoder:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path
        The ``.safetensors`` file.
    device
        Where to put the weights.

    Returns
    -------
    The model, in eval mode.

    Examples
    --------
    See :func:`save`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}; pass the path that cellsae_kit.models.save returned.")
    target = resolve_device(device)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(
                    f"{path} was not written by cellsae_kit.models.save (format {metadata.get('format')!r})."
                )
            try:
                config = json.loads(metadata.get("config", "null"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} has a garbled model config ({err}); write the model again.") from err
            config = check_stored_config(config, str(path))
            # shapes and dtypes from the header, before any weight is read into memory
            header = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}
            check_weights(config, header, str(path))
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"{path} is not a safetensors file written by cellsae_kit ({err}).") from err
    model = SparseAutoencoder.from_weights(config, tensors, source=str(path))
    return model.to(target).eval()
