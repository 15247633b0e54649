"""Tools: read and write AnnData (``import cellsae_kit as csk; csk.tl.sae(adata, "X_pca")``)."""

from ._encode import encode, get_model
from ._sae import sae

__all__ = ["encode", "get_model", "sae"]
