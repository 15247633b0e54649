"""``tl.factorize``: classical factorisations of a representation (PCA, ICA, NMF, dictionary learning) as baselines."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from .. import get
from .._docs import doc_params
from ..models import fvu
from ._input import get_input

Method = Literal["pca", "ica", "nmf", "cnmf", "dictionary"]
FACTORIZE_METHODS: tuple[str, ...] = ("pca", "ica", "nmf", "cnmf", "dictionary")
# cNMF (Kotliar et al. 2019): NMF runs pooled, outlier components dropped, the rest clustered to a consensus.
CNMF_RUNS = 10
CNMF_OUTLIER_QUANTILE = 0.9  # components farther from their neighbours than 90% of the others are dropped


def factorize_array(
    X: np.ndarray,
    method: Method = "pca",
    n_components: int | None = None,
    *,
    random_state: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Factorise a cells x dimensions matrix into codes and components (the array core of :func:`factorize`).

    Parameters
    ----------
    X
        Cells x dimensions (dense).
    method
        ``"pca"``, ``"ica"`` (FastICA), ``"nmf"``, ``"cnmf"`` (consensus NMF) or ``"dictionary"``
        (MiniBatchDictionaryLearning).
    n_components
        Number of components; by default the input dimension.
    random_state
        Seed.
    **kwargs
        Options of the scikit-learn estimator.

    Returns
    -------
    ``codes`` (cells x components, float32), ``components`` (components x dimensions), ``offset`` (what is added
    back to ``codes @ components`` to reconstruct ``X``), ``fvu`` of that reconstruction, and ``params`` (the
    estimator's options, the seed and, for NMF, that a shift was applied).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._factorize import factorize_array
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> out = factorize_array(X, "pca")
    >>> out["codes"].shape, round(out["fvu"], 6)
    ((50, 4), 0.0)
    """
    from sklearn.decomposition import NMF, PCA, FastICA, MiniBatchDictionaryLearning
    from sklearn.exceptions import ConvergenceWarning

    if method not in FACTORIZE_METHODS:
        raise ValueError(f"method={method!r} is not known; choose one of {', '.join(map(repr, FACTORIZE_METHODS))}.")
    X = np.asarray(X, dtype=np.float64)
    n_cells, n_dims = X.shape
    n_components = n_dims if n_components is None else n_components
    if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer) or n_components < 1:
        raise ValueError(f"n_components={n_components!r} must be a positive integer.")
    if method in ("pca", "ica") and n_components > min(n_cells, n_dims):
        raise ValueError(
            f"{method.upper()} finds at most min(cells, dimensions) = {min(n_cells, n_dims)} components of a "
            f"{n_cells} x {n_dims} input, not n_components={n_components}; use method='nmf' or 'dictionary' "
            "for an overcomplete basis."
        )
    params: dict[str, Any] = {"method": method, "n_components": int(n_components), "random_state": random_state}
    params |= kwargs
    mean = X.mean(axis=0)
    if method == "pca":
        model = PCA(n_components, random_state=random_state, **kwargs)
        codes = model.fit_transform(X)
        components, offset = model.components_, model.mean_
    elif method == "ica":
        options = {"whiten": "unit-variance", "max_iter": 1000, "tol": 1e-4} | kwargs
        model = FastICA(n_components, random_state=random_state, **options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            codes = model.fit_transform(X)
        _rewarn(caught, "ICA", "max_iter")
        components, offset = model.mixing_.T, model.mean_
    elif method == "nmf":
        # NMF needs non-negative input: shift each dimension by its minimum over the cells, so that its smallest
        # value is 0 (a per-dimension shift keeps the geometry; the shift is added back to reconstruct).
        offset = X.min(axis=0)
        options = {"init": "nndsvda" if n_components <= min(n_cells, n_dims) else "random", "max_iter": 500}
        model = NMF(n_components, random_state=random_state, **(options | kwargs))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            codes = model.fit_transform(X - offset)
        _rewarn(caught, "NMF", "max_iter")
        components = model.components_
        params["shift"] = "per-dimension minimum subtracted"
    elif method == "cnmf":
        offset = X.min(axis=0)
        components = consensus_nmf(X - offset, n_components, random_state=random_state, **kwargs)
        codes = _nnls_codes(X - offset, components)
        params |= {"shift": "per-dimension minimum subtracted", "n_runs": kwargs.get("n_runs", CNMF_RUNS)}
    else:
        # Centred and scaled to unit variance per dimension on average, so that the sparsity penalty alpha means
        # the same for any representation.
        scale = float(np.sqrt(((X - mean) ** 2).sum(axis=1).mean() / n_dims)) or 1.0
        options = {
            "alpha": 1.0,
            "batch_size": 256,
            "fit_algorithm": "cd",
            "transform_algorithm": "lasso_cd",
            "max_iter": 20,
        } | kwargs
        options.setdefault("transform_alpha", options["alpha"])
        model = MiniBatchDictionaryLearning(n_components, random_state=random_state, **options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            codes = model.fit_transform((X - mean) / scale) * scale
        _rewarn(caught, "Dictionary learning", "max_iter")
        components, offset = model.components_, mean
        params |= {name: options[name] for name in ("alpha", "transform_alpha", "max_iter")}
    reconstruction = codes @ components + offset
    return {
        "codes": codes.astype(np.float32),
        "components": np.asarray(components, dtype=np.float32),
        "offset": np.asarray(offset, dtype=np.float32),
        "fvu": fvu(X, reconstruction),
        "params": params,
    }


def consensus_nmf(
    X: np.ndarray, n_components: int, *, n_runs: int = CNMF_RUNS, random_state: int = 0, max_iter: int = 500
) -> np.ndarray:
    """Consensus NMF components (components x dimensions) of a non-negative matrix, as cNMF finds them.

    NMF is run ``n_runs`` times from random starts; the components of all runs, scaled to unit length, are pooled;
    those far from their nearest neighbours (mean distance above the 90th percentile) are dropped as one-run
    outliers; k-means groups the rest into ``n_components`` clusters, and each cluster's median is a consensus
    component.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._factorize import consensus_nmf
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((200, 2)) @ np.array([[1.0, 0, 0, 1], [0, 1.0, 1, 0]])
    >>> H = consensus_nmf(X, 2, n_runs=4)
    >>> sorted(np.round(H / H.max(axis=1, keepdims=True), 1).tolist())
    [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]]
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    if isinstance(n_runs, bool) or not isinstance(n_runs, int) or n_runs < 2:
        raise ValueError(f"n_runs={n_runs!r} must be an integer of at least 2 (consensus needs several runs).")
    pooled = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for run in range(n_runs):
            model = NMF(n_components, init="random", random_state=random_state + run, max_iter=max_iter)
            model.fit(X)
            pooled.append(model.components_)
    _rewarn(caught, "NMF", "max_iter")
    pooled = np.concatenate(pooled)
    pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    distance = np.linalg.norm(pooled[:, None, :] - pooled[None, :, :], axis=2)
    n_neighbours = max(1, n_runs // 3)
    density = np.sort(distance, axis=1)[:, 1 : n_neighbours + 1].mean(axis=1)
    kept = pooled[density <= np.quantile(density, CNMF_OUTLIER_QUANTILE)]
    labels = KMeans(n_components, n_init=10, random_state=random_state).fit_predict(kept)
    consensus = np.stack([np.median(kept[labels == c], axis=0) for c in range(n_components)])
    return consensus / np.maximum(np.linalg.norm(consensus, axis=1, keepdims=True), 1e-12)


def _nnls_codes(X: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Non-negative codes of each cell for fixed components (NMF with the components held fixed)."""
    from sklearn.decomposition import non_negative_factorization

    codes, _, _ = non_negative_factorization(
        X, H=components, n_components=len(components), update_H=False, max_iter=1000
    )
    return codes


def _rewarn(caught: list, name: str, option: str) -> None:
    """Say once, in our words, that a scikit-learn fit did not converge; pass other warnings on."""
    from sklearn.exceptions import ConvergenceWarning

    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        warnings.warn(
            f"{name} did not converge; the components may be poor. Pass a larger {option} (or fewer components).",
            RuntimeWarning,
            stacklevel=3,
        )


@doc_params
def factorize(
    adata: AnnData,
    use_rep: str,
    method: Method = "pca",
    *,
    n_components: int | None = None,
    key_added: str | None = None,
    random_state: int = 0,
    copy: bool = False,
    **kwargs: Any,
) -> AnnData | None:
    """Factorise a representation with a classical method, stored like an SAE so that the same tools score it.

    Baselines for :func:`cellsae_kit.tl.sae` on the same input: principal components (``"pca"``), independent
    components (``"ica"``, FastICA with unit-variance whitening), non-negative matrix factorisation (``"nmf"``;
    each dimension is first shifted by its minimum over the cells so that the input is non-negative), consensus
    NMF (``"cnmf"``: 10 NMF runs pooled, outliers dropped, k-means medians, codes refitted by non-negative least
    squares, as cNMF does) and sparse
    dictionary learning (``"dictionary"``, MiniBatchDictionaryLearning with lasso codes, on the centred input
    scaled to unit variance per dimension on average; sparsity by ``alpha``, default 1). Compare them with
    :func:`cellsae_kit.tl.recovery`, and name them like SAE features: :func:`cellsae_kit.get.codes` reads each
    signed component (PCA, ICA, dictionary) as two non-negative features, its positive side (feature ``i``) and
    its negative side (feature ``n_components + i``), so :func:`cellsae_kit.tl.annotate_features`,
    :func:`cellsae_kit.tl.score_annotations` and :func:`cellsae_kit.tl.describe_features` run on them unchanged.

    Parameters
    ----------
    {adata}
    use_rep
        The representation: an ``obsm`` key, or ``"X"``.
    method
        ``"pca"``, ``"ica"``, ``"nmf"``, ``"cnmf"`` or ``"dictionary"``.
    n_components
        Number of components; by default the dimension of ``use_rep``. PCA and ICA cannot exceed it.
    key_added
        Name of the outputs, by default ``"<method>_<use_rep without X_>"`` (``"ica_pca"`` for ICA of
        ``"X_pca"``): ``obsm["X_<key_added>"]`` and ``uns[key_added]``.
    random_state
        Seed.
    {copy}
    **kwargs
        Options of the scikit-learn estimator (for example ``alpha`` or ``max_iter``).

    {copy_returns}
    Writes ``obsm["X_<key_added>"]`` (cells x components, float32, dense) and ``uns[key_added]`` with
    ``params``, ``components`` (components x dimensions of ``use_rep``), ``offset`` (added back to
    ``codes @ components`` to reconstruct the input) and ``metrics`` (``fvu`` of that reconstruction).

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> adata = csk.datasets.simulate(300, 10, 4, n_genes=100)
    >>> csk.tl.embed(adata, "pca", 20)
    >>> csk.tl.factorize(adata, "X_pca", "ica", n_components=10)
    >>> adata.obsm["X_ica_pca"].shape
    (300, 10)
    """
    if key_added is not None:
        get.check_key(key_added)
    data = get_input(adata, use_rep)
    source = data.rep.removeprefix("X_") if data.mod is None else f"{data.mod}_{data.rep.removeprefix('X_')}"
    key_added = f"{method}_{source}" if key_added is None else key_added
    if f"X_{key_added}" == data.use_rep:
        raise ValueError(f"key_added={key_added!r} would overwrite the input obsm['X_{key_added}']; choose another.")
    X = data.X.toarray() if hasattr(data.X, "toarray") else data.X
    result = factorize_array(X, method, n_components, random_state=random_state, **kwargs)

    # Everything succeeded: only now touch the user's object.
    adata = adata.copy() if copy else adata
    adata.obsm[f"X_{key_added}"] = result["codes"]
    adata.uns[key_added] = {
        "params": result["params"] | {"use_rep": data.use_rep},
        "components": result["components"],
        "offset": result["offset"],
        "metrics": {"fvu": result["fvu"]},
    }
    return adata if copy else None
