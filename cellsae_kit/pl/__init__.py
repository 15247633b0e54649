"""Plotting: scanpy-style functions that draw what the tools stored (``csk.pl.features(adata, [3, 17])``)."""

from ._features import features

__all__ = ["features"]
