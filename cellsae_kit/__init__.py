"""cellsae_kit: sparse autoencoders for interpretable biology in single-cell representations."""

import importlib
from importlib.metadata import PackageNotFoundError, version

from . import datasets, get, models, tl

try:
    __version__ = version("cellsae_kit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

# Plotting (matplotlib, scanpy) and the widgets (ipywidgets) load on first use: training and encoding, streamed
# ones above all, then do not carry their memory.
_LAZY = ("pl", "widgets")

__all__ = ["datasets", "get", "models", "pl", "tl", "widgets", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
