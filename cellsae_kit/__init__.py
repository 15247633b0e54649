"""cellsae_kit: sparse autoencoders for interpretable biology in single-cell representations."""

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version


def _running_check() -> bool:
    # True while ``python -m cellsae_kit.check`` imports this package before it runs the check.
    argv = getattr(sys, "orig_argv", [])
    return any(flag == "-m" and module == f"{__name__}.check" for flag, module in zip(argv, argv[1:], strict=False))


try:
    from . import datasets, get, io, models, tl
except ImportError:
    # A dependency is missing or broken. The set-up check needs only the standard library to start: let it run,
    # so that it names the fix; every other import of the package fails here as before.
    if not _running_check():
        raise

try:
    __version__ = version("cellsae_kit")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

# Plotting (matplotlib, scanpy) and the widgets (ipywidgets) load on first use: training and encoding, streamed
# ones above all, then do not carry their memory.
_LAZY = ("pl", "widgets")

__all__ = ["datasets", "get", "io", "models", "pl", "tl", "widgets", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
