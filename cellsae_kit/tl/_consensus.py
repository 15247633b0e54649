"""``tl.consensus``: a consensus SAE from many training runs, in the spirit of consensus NMF (cNMF)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from .. import get
from .._docs import doc_params
from ..models import FitConfig, fit, resolve
from ._input import get_input
from ._shared import check_seeds, match_features, unit_rows

Refit = Literal["encoder", "finetune"]
REFITS: tuple[str, ...] = ("encoder", "finetune")
# cNMF's defaults: neighbours = 30% of the runs; outliers have a mean distance to them above 0.5 (unit vectors:
# the neighbours' mean cosine is below about 0.875).
NEIGHBOR_FRACTION = 0.3
DENSITY_THRESHOLD = 0.5
SUPPORT_COSINE = 0.9


class Consensus(NamedTuple):
    """What :func:`consensus_dictionary` returns.

    Attributes
    ----------
    dictionary
        The consensus features, features x input dimensions, unit rows, the largest cluster first.
    labels
        Consensus feature of each pooled decoder row; -1 for the outliers dropped before clustering.
    density
        Mean Euclidean distance of each pooled (unit) row to its nearest neighbours among the pooled rows.
    run
        The run each pooled row came from.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._consensus import consensus_dictionary
    >>> result = consensus_dictionary([np.eye(3), np.eye(3)], 3, n_neighbors=1)
    >>> np.bincount(result.labels).tolist()
    [2, 2, 2]
    """

    dictionary: np.ndarray
    labels: np.ndarray
    density: np.ndarray
    run: np.ndarray


def consensus_dictionary(
    decoders: Sequence[np.ndarray],
    n_features: int,
    *,
    n_neighbors: int | None = None,
    density_threshold: float = DENSITY_THRESHOLD,
    random_state: int = 0,
) -> Consensus:
    """Pool the features of many runs into a consensus dictionary (the array core of :func:`consensus`).

    As in cNMF (Kotliar et al., eLife 2019): scale every decoder row to unit length, drop outliers (rows whose
    mean Euclidean distance to their ``n_neighbors`` nearest pooled rows exceeds ``density_threshold``: a
    direction few other runs found), cluster the rest into ``n_features`` groups with k-means, and take each
    cluster's element-wise median, scaled to unit length.

    Parameters
    ----------
    decoders
        Decoder matrices of the runs (features x input dimensions), dead features already removed.
    n_features
        Size of the consensus dictionary.
    n_neighbors
        Neighbours for the density; default 30% of the runs (at least 1), as in cNMF.
    density_threshold
        Largest mean distance to the neighbours a row may have (unit rows: 0 identical, 2 opposite).
    random_state
        Seed of k-means.

    Returns
    -------
    A :class:`Consensus`.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._consensus import consensus_dictionary
    >>> rng = np.random.default_rng(0)
    >>> atoms = np.eye(4)
    >>> runs = [atoms + 0.05 * rng.normal(size=atoms.shape) for _ in range(5)]
    >>> result = consensus_dictionary(runs, 4)
    >>> np.abs(result.dictionary @ atoms.T).max(axis=1).round(2)
    array([1., 1., 1., 1.])
    """
    from sklearn.cluster import KMeans
    from sklearn.neighbors import NearestNeighbors

    if not decoders:
        raise ValueError("No runs to pool; pass the decoder matrix of at least one run.")
    dims = {np.shape(d)[1] for d in decoders}
    if len(dims) != 1:
        raise ValueError(f"The runs' decoders have {sorted(dims)} input dimensions; pool runs on one input only.")
    pooled = unit_rows(np.vstack(decoders))
    run = np.concatenate([np.full(np.shape(d)[0], i) for i, d in enumerate(decoders)])
    live = np.linalg.norm(pooled, axis=1) > 0
    n_neighbors = check_filter(n_neighbors, density_threshold, len(decoders))
    if live.sum() <= n_neighbors:
        raise ValueError(
            f"The runs have {int(live.sum())} live features in all, too few for n_neighbors={n_neighbors}; train "
            "more runs or larger dictionaries."
        )
    density = np.full(len(pooled), np.inf)
    distances, _ = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(pooled[live]).kneighbors(pooled[live])
    density[live] = distances[:, 1:].mean(axis=1)  # column 0 is the row itself
    kept = density <= density_threshold
    if kept.sum() < n_features:
        raise ValueError(
            f"Only {int(kept.sum())} of {len(pooled)} pooled features lie within distance {density_threshold} of "
            f"their {n_neighbors} nearest neighbours, fewer than the {n_features} consensus features asked for. "
            "Ask for fewer features (the runs do not agree on that many), train more runs, or raise "
            "density_threshold."
        )
    clusters = KMeans(n_clusters=n_features, n_init=10, random_state=random_state).fit_predict(pooled[kept])
    # The largest cluster (the direction most runs found) becomes feature 0.
    order = np.argsort(-np.bincount(clusters, minlength=n_features), kind="stable")
    rank = np.empty(n_features, dtype=np.int64)
    rank[order] = np.arange(n_features)
    labels = np.full(len(pooled), -1, dtype=np.int64)
    labels[kept] = rank[clusters]
    members = pooled[kept]
    dictionary = np.vstack([np.median(members[labels[kept] == f], axis=0) for f in range(n_features)])
    for f in np.flatnonzero(np.linalg.norm(dictionary, axis=1) == 0):  # opposite members cancel: use the mean
        dictionary[f] = members[labels[kept] == f].mean(axis=0)
    return Consensus(unit_rows(dictionary), labels, density, run)


def check_filter(n_neighbors: int | None, density_threshold: float, n_runs: int) -> int:
    """Check the outlier filter's settings; return the number of neighbours (default: 30% of the runs)."""
    n_neighbors = max(1, int(NEIGHBOR_FRACTION * n_runs)) if n_neighbors is None else n_neighbors
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"n_neighbors={n_neighbors!r} must be a positive integer (cNMF: 30% of the runs).")
    if isinstance(density_threshold, bool) or not (
        isinstance(density_threshold, int | float | np.number) and density_threshold > 0
    ):
        raise ValueError(f"density_threshold={density_threshold!r} must be a positive number (cNMF's default: 0.5).")
    return int(n_neighbors)


def support_scores(
    dictionary: np.ndarray, decoders: Sequence[np.ndarray], threshold: float = SUPPORT_COSINE
) -> pd.DataFrame:
    """How well each consensus feature is found by each run: Hungarian match of the dictionary to every run.

    Parameters
    ----------
    dictionary
        The consensus features, features x input dimensions.
    decoders
        The runs' decoder matrices.
    threshold
        Cosine at which a run counts as having found the feature.

    Returns
    -------
    One row per consensus feature: ``stability``, the mean over the runs of the cosine of its matched feature
    (0 where a run has too few live features to match it), and ``support``, the fraction of runs whose matched
    feature has a cosine of at least ``threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._consensus import support_scores
    >>> support_scores(np.eye(2), [np.eye(2), np.array([[1.0, 0.0], [1.0, 1.0]])])
             stability  support
    feature
    0         1.000000      1.0
    1         0.853553      0.5
    """
    cosines = np.zeros((len(decoders), len(dictionary)))
    for i, decoder in enumerate(decoders):
        match = match_features(dictionary, decoder)
        cosines[i, match.a] = match.score
    return pd.DataFrame(
        {"stability": cosines.mean(axis=0), "support": (cosines >= threshold).mean(axis=0)},
        index=pd.Index([str(f) for f in range(len(dictionary))], name="feature"),
    )


@doc_params
def consensus(
    adata: AnnData,
    use_rep: str | None = None,
    *,
    layer: str | None = None,
    n_runs: int = 10,
    n_features: int | str = "auto",
    k: int | str = "auto",
    activation: str = "relu",
    n_neighbors: int | None = None,
    density_threshold: float = DENSITY_THRESHOLD,
    refit: Refit = "encoder",
    key_added: str = "consensus",
    random_state: int = 0,
    device: str = "auto",
    progress: bool = True,
    copy: bool = False,
    **sae_kwargs: Any,
) -> AnnData | None:
    """Train a consensus SAE: the features that many training runs agree on, like consensus NMF (cNMF).

    A single SAE's features depend on its seed (see :func:`stability`). Here ``n_runs`` SAEs are trained with
    the seeds ``random_state``, ``random_state + 1``, ...; their decoder rows (dead features dropped) are scaled
    to unit length and pooled; rows that few other runs found are dropped as outliers by their mean distance to
    the ``n_neighbors`` nearest pooled rows; k-means groups the rest into ``n_features`` clusters, and each
    cluster's median direction becomes a consensus feature. Finally the encoder is trained with the decoder held
    at the consensus dictionary (``refit="encoder"``), or the whole SAE is trained starting from it
    (``"finetune"``).

    Choose ``n_features`` no larger than the data supports: with :func:`stability_sweep` and
    :func:`cellsae_kit.pl.stability` (the fraction of features single runs share falls as the dictionary
    outgrows the data). When the runs agree on fewer directions than ``n_features``, too few rows survive the
    outlier filter and an error says so.

    Parameters
    ----------
    {adata}
    {use_rep}
    {layer}
    n_runs
        SAEs to pool.
    n_features
        Size of each run's dictionary and of the consensus dictionary; ``"auto"``: half the default of :func:`sae`
        for these data (at least 8).
    k
        Active features per cell (see :func:`sae`), for ``activation="topk"`` or ``"batchtopk"``.
    activation
        ``"relu"`` (the default: ReLU with an L1 penalty, ``l1_coef``), ``"topk"``, ``"batchtopk"`` or ``"auto"``.
        On pbmc68k_reduced two consensus SAEs from disjoint seed sets share 94% of their features at decoder
        cosine >= 0.9 with the defaults (ReLU, 32 features; ``benchmarks/defaults.py``); in a separate run with
        the same seeds, 77% with ReLU and 64 features and 44% with BatchTopK and 64 features.
    n_neighbors
        Neighbours of the density filter; default 30% of the runs, as in cNMF.
    density_threshold
        Pooled features whose mean Euclidean distance (between unit vectors) to their neighbours exceeds this
        are outliers; cNMF's default 0.5 keeps directions whose neighbours have a cosine above about 0.875.
    refit
        ``"encoder"``: keep the consensus dictionary and train the encoder and biases; ``"finetune"``: train
        everything, starting from the consensus dictionary (the features may drift from it).
    {key_added}
    random_state
        First seed of the runs; also seeds k-means and the final fit.
    {device}
    progress
        Show progress bars.
    {copy}
    **sae_kwargs
        Options of :func:`sae` for the runs and the final fit (``activation``, ``n_epochs``, ``batch_size``,
        ``loadings`` ...).

    {copy_returns}
    Writes the same entries as :func:`sae` (``obsm["X_<key_added>"]``, ``varm["<key_added>_loadings"]``,
    ``uns[key_added]`` with ``params``, ``metrics``, ``history``, ``weights``), and

    - ``uns[key_added]["features"]``: ``stability``, the mean over the runs of the cosine between the
      consensus feature and its Hungarian-matched feature in that run (the same measure as
      :func:`stability`, against the pooled runs), ``support``, the fraction of runs that found it at
      cosine >= 0.9, and ``cluster_size``, the pooled features in its cluster;
    - ``uns[key_added]["params"]["consensus"]``: ``n_runs``, ``seeds``, ``n_neighbors``, ``density_threshold``,
      ``refit``, ``n_pooled`` (live features pooled) and ``n_outliers``;
    - ``uns[key_added]["runs"]``: one row per run with its seed, validation FVU, L0, dead fraction and number
      of live features.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.consensus(adata, "X_pca", n_runs=4, n_features=16, k=4, n_epochs=10, density_threshold=1, progress=False)
    >>> adata.obsm["X_consensus"].shape, list(adata.uns["consensus"]["features"].columns)
    ((700, 16), ['stability', 'support', 'cluster_size'])
    """
    get.check_key(key_added)
    n_runs = check_seeds(n_runs, "n_runs")
    if refit not in REFITS:
        raise ValueError(f"refit={refit!r} is not known; choose 'encoder' (decoder held fixed) or 'finetune'.")
    for name in ("init_decoder", "freeze_decoder"):
        if name in sae_kwargs:
            raise TypeError(f"{name} is set by consensus itself (through refit=); leave it out.")
    n_neighbors = check_filter(n_neighbors, density_threshold, n_runs)
    options = {name: value for name, value in sae_kwargs.items() if name != "loadings"}
    data = get_input(adata, use_rep, layer)
    if n_features == "auto":  # the directions that many runs agree on are fewer than one run's features
        n_features = max(8, resolve(FitConfig(), *data.X.shape)[0].n_features // 2)
    config = FitConfig.make(
        n_features=n_features, k=k, activation=activation, random_state=random_state, device=device, **options
    )
    config, _ = resolve(config, *data.X.shape)  # every run, and the consensus, has the same size
    seeds = [random_state + i for i in range(n_runs)]
    decoders, runs = [], []
    for seed in tqdm(seeds, desc="consensus: training runs", unit="run", disable=not progress):
        result = fit(data.X, replace(config, random_state=seed), progress=False, input_name=data.name)
        live = result.codes.getnnz(axis=0) > 0
        decoders.append(result.model.W_dec.detach().cpu().double().numpy()[live])
        runs.append({"seed": seed, **{m: result.metrics[m] for m in ("fvu_validation", "l0", "dead_fraction")}})
        runs[-1]["n_live"] = int(live.sum())
    found = consensus_dictionary(
        decoders,
        config.n_features,
        n_neighbors=n_neighbors,
        density_threshold=density_threshold,
        random_state=random_state,
    )
    from .. import tl  # the public tool (importing it at the top would be circular)

    target = adata.copy() if copy else adata
    tl.sae(
        target,
        use_rep,
        layer=layer,
        key_added=key_added,
        progress=progress,
        init_decoder=found.dictionary,
        freeze_decoder=refit == "encoder",
        **({"loadings": sae_kwargs["loadings"]} if "loadings" in sae_kwargs else {}),
        **config.params(),
    )
    stored = get.sae(target, key_added)
    # The stored features: the consensus itself, or where fine-tuning took it from there.
    scores = support_scores(stored.decoder, decoders)
    scores["cluster_size"] = np.bincount(found.labels[found.labels >= 0], minlength=config.n_features)
    stored.add_features(scores)
    entry = stored.entry
    entry["params"]["consensus"] = {
        "n_runs": n_runs,
        "seeds": np.asarray(seeds, dtype=np.int64),
        "n_neighbors": n_neighbors,
        "density_threshold": float(density_threshold),
        "refit": refit,
        "n_pooled": int(len(found.labels)),
        "n_outliers": int((found.labels < 0).sum()),
    }
    entry["runs"] = pd.DataFrame(runs)
    return target if copy else None
