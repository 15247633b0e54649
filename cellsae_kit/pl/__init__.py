"""Plotting: scanpy-style functions that draw what the tools stored (``csk.pl.features(adata, [3, 17])``)."""

from ._atlas import atlas
from ._features import features, rank_features_groups_dotplot
from ._genes import annotation, top_genes
from ._stability import feature_stability, stability
from ._steering import steering
from ._sweep import sae_sweep
from ._training import feature_stats, training

__all__ = [
    "atlas",
    "annotation",
    "feature_stability",
    "feature_stats",
    "features",
    "rank_features_groups_dotplot",
    "sae_sweep",
    "stability",
    "steering",
    "top_genes",
    "training",
]
