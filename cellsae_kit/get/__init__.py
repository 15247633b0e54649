"""Read what the kit stored, as ``scanpy.get`` does (``csk.get.sae(adata, "sae").codes``).

Every tool, plot and the explorer reads a stored SAE through :func:`sae`, and writes columns into its feature
table through :meth:`StoredSAE.add_features`.
"""

from ._anndata import check_adata, genes, groups, is_mudata, modality, modality_name
from ._stored import StoredSAE, check_key, codes, factor_method, feature_index, keys, sae

__all__ = [
    "StoredSAE",
    "check_adata",
    "check_key",
    "codes",
    "factor_method",
    "feature_index",
    "genes",
    "groups",
    "is_mudata",
    "keys",
    "modality",
    "modality_name",
    "sae",
]
