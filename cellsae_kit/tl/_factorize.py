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

Method = Literal["pca", "ica", "nmf", "dictionary"]
FACTORIZE_METHODS: tuple[str, ...] = ("pca", "ica", "nmf", "dictionary")


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
        ``"pca"``, ``"ica"`` (FastICA), ``"nmf"`` or ``"dictionary"`` (MiniBatchDictionaryLearning).
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
    each dimension is first shifted by its minimum over the cells so that the input is non-negative) and sparse
    dictionary learning (``"dictionary"``, MiniBatchDictionaryLearning with lasso codes, on the centred input
    scaled to unit variance per dimension on average; sparsity by ``alpha``, default 1). Compare them with
    :func:`cellsae_kit.tl.recovery`.

    Parameters
    ----------
    {adata}
    use_rep
        The representation: an ``obsm`` key, or ``"X"``.
    method
        ``"pca"``, ``"ica"``, ``"nmf"`` or ``"dictionary"``.
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
