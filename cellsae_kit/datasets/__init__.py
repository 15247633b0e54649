"""Data: simulations with known ground truth and bundled offline gene sets (``csk.datasets.genesets("go_bp")``)."""

from ._genesets import genesets

__all__: list[str] = ["genesets"]
