"""Data: simulations with ground truth, bundled offline gene sets, and real data sets downloaded with checks."""

from ._download import bone_marrow_cite, bone_marrow_multiome
from ._genesets import genesets
from ._simulate import simulate

__all__: list[str] = ["bone_marrow_cite", "bone_marrow_multiome", "genesets", "simulate"]
