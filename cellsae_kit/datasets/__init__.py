"""Data: simulations with known ground truth and bundled offline gene sets (``csk.datasets.genesets("go_bp")``)."""

from ._genesets import genesets
from ._simulate import simulate

__all__: list[str] = ["genesets", "simulate"]
