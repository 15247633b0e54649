"""Tools: read and write AnnData (``import cellsae_kit as csk; csk.tl.sae(adata, "X_pca")``)."""

from ._absorption import absorption
from ._annotate import annotate_features, score_annotations
from ._consensus import consensus
from ._describe import describe_features
from ._embed import embed
from ._encode import encode, get_model
from ._factorize import factorize
from ._genes import feature_genes, top_genes
from ._joint import joint_embedding
from ._peaks import peaks_to_genes
from ._rank import rank_features_groups
from ._recovery import completeness, recovery
from ._sae import sae
from ._stability import stability
from ._stats import feature_stats
from ._steer import steer
from ._sweep import sae_sweep, stability_sweep

__all__ = [
    "absorption",
    "annotate_features",
    "describe_features",
    "score_annotations",
    "encode",
    "feature_genes",
    "feature_stats",
    "get_model",
    "joint_embedding",
    "peaks_to_genes",
    "rank_features_groups",
    "sae",
    "stability",
    "sae_sweep",
    "stability_sweep",
    "steer",
    "top_genes",
    "completeness",
    "consensus",
    "embed",
    "factorize",
    "recovery",
]
