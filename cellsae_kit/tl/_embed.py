"""``tl.embed``: representations of chosen size from counts (PCA or a small autoencoder), as in the reference study."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ..models import fit_autoencoder
from ._input import get_input
from ._shared import log_normalize

EMBED_METHODS: tuple[str, ...] = ("pca", "autoencoder")


@doc_params
def embed(
    adata: AnnData,
    method: Literal["pca", "autoencoder"] = "pca",
    n_latent: int = 50,
    *,
    normalize: bool = True,
    key_added: str | None = None,
    layer: str | None = None,
    mod: str | None = None,
    random_state: int = 0,
    device: str = "auto",
    progress: bool = True,
    copy: bool = False,
    **fit_kwargs: Any,
) -> AnnData | None:
    """Make a representation of the cells of a chosen size from counts, to study how complete it is.

    By default the counts are scaled to the median total per cell and log-transformed (on a copy; ``adata``
    keeps its values); ``normalize=False`` uses the counts as they are, as the reference study's autoencoders
    did. ``"pca"`` takes the leading principal components (scikit-learn, genes centred, not scaled);
    ``"autoencoder"`` trains a small MLP autoencoder (:func:`cellsae_kit.models.fit_autoencoder`) and keeps its
    linear latent layer, like the latent models of the reference study (latent sizes 20, 150 and 1000). How
    much of the truth a representation holds is measured by :func:`cellsae_kit.tl.completeness`.

    Parameters
    ----------
    {adata}
    method
        ``"pca"`` or ``"autoencoder"``.
    n_latent
        Dimension of the representation.
    normalize
        Scale each cell to the median total count and take ``log1p`` first. On :func:`cellsae_kit.datasets.simulate`
        data the programs act linearly on the counts, so ``normalize=False`` gives the more complete
        representation (measured: PCA with 100 components holds every one of 100 programs with held-out
        R^2 >= 0.9 from counts, but not from log-normalised counts).
    key_added
        Name of the outputs (default: ``method``): ``obsm["X_<key_added>"]``, ``uns[key_added]`` and, for PCA,
        ``varm[key_added]`` (genes x components, which :func:`cellsae_kit.tl.sae` finds to map features to
        genes).
    layer
        Use these counts instead of ``X`` (for example ``"counts"``).
    mod
        For a MuData, the modality to embed (``"rna"``); the representation goes into the MuData's ``obsm``, the
        PCA loadings into the modality's ``varm``.
    random_state
        Seed.
    {device}
        Used by the autoencoder.
    progress
        Show a progress bar (autoencoder).
    {copy}
    **fit_kwargs
        Options of :func:`cellsae_kit.models.fit_autoencoder` (``hidden``, ``n_epochs``, ``lr``, ...).

    {copy_returns}
    Writes ``obsm["X_<key_added>"]`` (cells x ``n_latent``, float32) and ``uns[key_added]`` with ``params``
    and ``metrics``: the fraction of variance of the (log-normalised) expression left unexplained (``fvu``; for
    the autoencoder on its training cells, and ``fvu_validation`` on the held-out ones); for PCA also
    ``variance_ratio`` per component, for the autoencoder the per-epoch ``history``.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> adata = csk.datasets.simulate(300, 10, 4, n_genes=100)
    >>> csk.tl.embed(adata, "pca", 20)
    >>> adata.obsm["X_pca"].shape, adata.varm["pca"].shape
    ((300, 20), (100, 20))
    """
    if key_added is not None:
        get.check_key(key_added)
    from sklearn.decomposition import PCA

    if method not in EMBED_METHODS:
        raise ValueError(f"method={method!r} is not known; choose 'pca' or 'autoencoder'.")
    if isinstance(n_latent, bool) or not isinstance(n_latent, int | np.integer) or n_latent < 1:
        raise ValueError(f"n_latent={n_latent!r} must be a positive integer.")
    if fit_kwargs and method != "autoencoder":
        raise TypeError(f"{', '.join(fit_kwargs)}: options of the autoencoder, not of method={method!r}.")
    get.check_adata(adata)
    if get.is_mudata(adata) and mod is None:
        raise ValueError(
            f"adata is a MuData: name the modality to embed with mod=, one of {', '.join(map(repr, adata.mod))} (or "
            "combine modalities with cellsae_kit.tl.joint_embedding)."
        )
    genes = adata if mod is None else get.genes(adata, mod=mod)
    data = get_input(genes, None, layer)
    values = data.X.data if sparse.issparse(data.X) else data.X
    if values.size and values.min() < 0:
        raise ValueError(
            f"{data.name} has negative values, so it does not hold counts; embed() normalises counts itself. "
            "Pass the raw counts, for example layer='counts'."
        )
    key_added = method if key_added is None else key_added
    if normalize:
        X = log_normalize(data.X)
    else:
        X = data.X.toarray() if sparse.issparse(data.X) else np.asarray(data.X)
        X = X.astype(np.float32)
    params = {"method": method, "n_latent": int(n_latent), "normalize": normalize, "random_state": random_state}
    params |= {"layer": layer} if layer is not None else {}
    entry: dict[str, Any] = {}
    loadings = None
    if method == "pca":
        if n_latent > min(X.shape):
            raise ValueError(
                f"n_latent={n_latent} is more than PCA can give for {X.shape[0]} cells x {X.shape[1]} genes; "
                f"choose at most {min(X.shape)}."
            )
        pca = PCA(n_latent, random_state=random_state)
        latent = pca.fit_transform(X).astype(np.float32)
        loadings = pca.components_.T.astype(np.float32)
        entry["metrics"] = {"fvu": float(1 - pca.explained_variance_ratio_.sum())}
        entry["variance_ratio"] = pca.explained_variance_ratio_
    else:
        result = fit_autoencoder(
            X,
            n_latent,
            random_state=random_state,
            device=device,
            progress=progress,
            input_name=f"log-normalised {data.name}" if normalize else data.name,
            **fit_kwargs,
        )
        latent = result.latent
        params |= {name: value for name, value in result.params.items() if name not in params}
        entry["metrics"] = {
            "fvu": float(result.metrics["fvu_train"]),
            "fvu_validation": float(result.metrics["fvu_validation"]),
        }
        entry["history"] = pd.DataFrame(result.history)

    # Everything succeeded: only now touch the user's object.
    adata = adata.copy() if copy else adata
    adata.obsm[f"X_{key_added}"] = latent
    if loadings is not None:
        (adata if mod is None else adata.mod[mod]).varm[key_added] = loadings
    adata.uns[key_added] = {"params": params} | entry
    return adata if copy else None
