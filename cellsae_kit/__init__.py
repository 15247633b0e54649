"""cellsae_kit: sparse autoencoders for interpretable biology in single-cell representations."""

import sys
from importlib.metadata import PackageNotFoundError, version

from . import datasets, models, pl, tl, widgets

try:
    __version__ = version("cellsae_kit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

sys.modules.update({f"{__name__}.{m}": globals()[m] for m in ["datasets", "models", "pl", "tl", "widgets"]})

__all__ = ["datasets", "models", "pl", "tl", "widgets", "__version__"]
