"""``tl.joint_embedding``: one representation of the cells from several modalities of a MuData."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ..models import check_data
from ._shared import log_normalize

JOINT_METHODS: tuple[str, ...] = ("concat_pca", "mofa")


def reduce_modality(
    X: np.ndarray | sparse.spmatrix, n_comps: int, *, lsi: bool = False, normalize: bool = True, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one modality to ``n_comps`` dimensions of unit total variance (the array core of ``joint_embedding``).

    PCA of log-normalised counts, or for chromatin accessibility LSI: TF-IDF (muon's) then a truncated SVD whose
    first component, which follows sequencing depth, is dropped. The coordinates are divided by the square root of
    their total variance, so that each modality weighs the same once concatenated.

    Parameters
    ----------
    X
        Cells x features: counts when ``normalize`` (PCA) or for ``lsi``, else processed values.
    n_comps
        Dimensions kept.
    lsi
        LSI instead of PCA.
    normalize
        Log-normalise counts before the PCA (ignored for LSI, which has its own normalisation).
    random_state
        Seed of the solver.

    Returns
    -------
    The coordinates (cells x ``n_comps``) and the map back to the features (features x ``n_comps``): the
    modality's (TF-IDF or centred) values are approximately ``coordinates @ map.T``.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._joint import reduce_modality
    >>> counts = np.random.default_rng(0).poisson(2.0, (100, 30)).astype(float)
    >>> coords, back = reduce_modality(counts, 5)
    >>> coords.shape, back.shape, round(float(coords.var(axis=0, ddof=1).sum()), 6)
    ((100, 5), (30, 5), 1.0)
    """
    from sklearn.decomposition import PCA, TruncatedSVD

    if lsi:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # muon's import asks scanpy for __version__
            import muon.atac as atac

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # peaks without counts: muon sets them to zero
            values = atac.pp.tfidf(AnnData(sparse.csr_matrix(X, dtype=np.float64)), inplace=False)
        svd = TruncatedSVD(n_comps + 1, random_state=random_state).fit(values)
        coords, back = svd.transform(values)[:, 1:], svd.components_[1:].T
    else:
        values = log_normalize(X) if normalize else (X.toarray() if sparse.issparse(X) else np.asarray(X))
        pca = PCA(n_comps, random_state=random_state).fit(values)
        coords, back = pca.transform(values), pca.components_.T
    weight = np.sqrt(coords.var(axis=0, ddof=1).sum())
    # coordinates / w reconstruct through (map * w)
    return (coords / weight).astype(np.float32), (back * weight).astype(np.float32)


@doc_params
def joint_embedding(
    mdata: MuData,
    modalities: Sequence[str] | None = None,
    method: Literal["concat_pca", "mofa"] = "concat_pca",
    *,
    n_comps: int | dict[str, int] = 20,
    lsi: Sequence[str] = ("atac",),
    normalize: bool = True,
    layer: str | None = "counts",
    key_added: str = "joint",
    random_state: int = 0,
    copy: bool = False,
) -> MuData | None:
    """Build one representation of the cells from several modalities, for an SAE on multi-omics data.

    ``"concat_pca"`` reduces each modality on its own (PCA of log-normalised counts; LSI for chromatin
    accessibility), scales each to the same total variance and concatenates them: with equal ``n_comps`` every
    modality weighs the same. Each modality also gets the map from the joint dimensions back to its features
    (zero outside its own block), so that :func:`cellsae_kit.tl.sae` on the joint representation writes gene,
    peak and protein loadings into each modality. ``"mofa"`` runs MOFA+ through :func:`muon.tl.mofa` (needs the
    optional package ``mofapy2``), which writes ``obsm["X_mofa"]`` and its weights ``varm["LFs"]``; ``tl.sae``
    splits those by modality as well.

    Parameters
    ----------
    mdata
        Multimodal data (:class:`mudata.MuData`), with the same cells in every modality used.
    modalities
        Modalities to combine; default: all.
    method
        ``"concat_pca"`` or ``"mofa"``.
    n_comps
        Dimensions per modality (a number, or one per modality such as ``{{"rna": 30, "atac": 20}}``); for
        ``"mofa"`` the number of factors.
    lsi
        Modalities reduced by LSI instead of PCA (chromatin accessibility).
    normalize
        Log-normalise counts before PCA; with ``False`` the values are used as they are (already processed).
    layer
        Layer holding each modality's counts; ``None`` or a modality without that layer uses ``X``.
    key_added
        Names of the outputs: ``obsm["X_<key_added>"]`` on the MuData, ``varm[key_added]`` in each modality and
        ``uns[key_added]`` (``params``, ``dims``: the joint columns of each modality).
    random_state
        Seed.
    {copy}

    {copy_returns}

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> mdata = csk.datasets.simulate(300, 10, 4, modalities=("rna", "atac"), n_genes=100, n_peaks=200)
    >>> csk.tl.joint_embedding(mdata, n_comps=10)
    >>> mdata.obsm["X_joint"].shape, mdata.mod["atac"].varm["joint"].shape
    ((300, 20), (200, 20))
    >>> csk.tl.sae(mdata, "X_joint", n_features=32, k=4, n_epochs=10, progress=False)
    >>> mdata.mod["rna"].varm["sae_loadings"].shape, mdata.mod["atac"].varm["sae_loadings"].shape
    ((100, 32), (200, 32))
    """
    get.check_key(key_added)
    if not isinstance(mdata, MuData):
        raise TypeError(
            f"joint_embedding combines the modalities of a MuData, got {type(mdata).__name__}; for one modality "
            "use scanpy.pp.pca or cellsae_kit.tl.embed."
        )
    if method not in JOINT_METHODS:
        raise ValueError(f"method={method!r} is not known; choose 'concat_pca' or 'mofa'.")
    modalities = list(mdata.mod) if modalities is None else list(modalities)
    if not modalities:
        raise ValueError("modalities is empty; name at least one modality of the MuData.")
    mods = {name: get.modality(mdata, name, "modalities") for name in modalities}
    sizes = n_comps if isinstance(n_comps, dict) else dict.fromkeys(modalities, n_comps)
    missing = [name for name in modalities if name not in sizes]
    if missing:
        raise ValueError(f"n_comps gives no size for {', '.join(map(repr, missing))}; add them to the dict.")
    if method == "mofa":
        if modalities != list(mdata.mod):
            raise ValueError("method='mofa' uses every modality; subset the MuData first (or use 'concat_pca').")
        return _mofa(mdata, int(next(iter(sizes.values()))), random_state, copy)

    blocks, maps = [], {}
    for name, mod in mods.items():
        X = mod.layers[layer] if layer is not None and layer in mod.layers else mod.X
        where = f"mdata.mod[{name!r}]" + (f".layers[{layer!r}]" if X is not mod.X else ".X")
        check_data(X, where)
        size = sizes[name]
        limit = min(mod.shape) - (2 if name in lsi else 1)
        if not isinstance(size, int | np.integer) or not 1 <= size <= limit:
            raise ValueError(f"n_comps for {name!r} is {size!r}; it must be an integer from 1 to {limit}.")
        coords, back = reduce_modality(X, int(size), lsi=name in lsi, normalize=normalize, random_state=random_state)
        blocks.append(coords)
        maps[name] = back
    joint = np.hstack(blocks)
    starts = np.cumsum([0] + [b.shape[1] for b in blocks])

    mdata = mdata.copy() if copy else mdata
    mdata.obsm[f"X_{key_added}"] = joint
    for (name, back), start in zip(maps.items(), starts[:-1], strict=True):
        full = np.zeros((back.shape[0], joint.shape[1]), dtype=np.float32)
        full[:, start : start + back.shape[1]] = back
        mdata.mod[name].varm[key_added] = full
    params: dict[str, Any] = {
        "method": method,
        "modalities": modalities,
        "n_comps": {name: int(sizes[name]) for name in modalities},
        "lsi": [name for name in modalities if name in lsi],
        "normalize": normalize,
        "random_state": random_state,
    } | ({"layer": layer} if layer is not None else {})
    dims = {name: [int(starts[i]), int(starts[i + 1])] for i, name in enumerate(modalities)}
    mdata.uns[key_added] = {"params": params, "dims": dims}
    return mdata if copy else None


def _mofa(mdata: MuData, n_factors: int, random_state: int, copy: bool) -> MuData | None:
    try:
        import mofapy2  # noqa: F401
    except ModuleNotFoundError as error:
        raise ImportError(
            "method='mofa' needs the optional package mofapy2: pip install mofapy2 (or use method='concat_pca')."
        ) from error
    import muon

    mdata = mdata.copy() if copy else mdata
    muon.tl.mofa(mdata, use_var=None, n_factors=n_factors, seed=random_state, verbose=False, quiet=True)
    return mdata if copy else None
