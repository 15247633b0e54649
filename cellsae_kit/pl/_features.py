"""``pl.features``: feature activations on an embedding (UMAP, t-SNE, PCA)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._docs import doc_params
from ..tl._input import get_codes


@doc_params
def features(
    adata: AnnData,
    features: int | str | Sequence[int | str],
    key: str = "sae",
    *,
    basis: str = "umap",
    cmap: str = "viridis",
    show: bool | None = None,
    save: str | bool | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
    **kwargs,
) -> Figure | Axes | list[Axes] | None:
    """Colour cells on an embedding by the activation of SAE features.

    Activations are stored sparse, which scanpy cannot use as a colour directly; this draws them through
    :func:`scanpy.pl.embedding` without adding anything to ``adata``.

    Parameters
    ----------
    {adata}
    features
        Feature numbers (``17`` or ``"17"``), one or several.
    {key}
    basis
        Embedding in ``obsm``: ``"umap"`` reads ``obsm["X_umap"]`` (an exact ``obsm`` key works too).
    cmap
        Colour map for the activations.
    show, save, ax, return_fig
        As in scanpy's plotting functions.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``ncols``, ``size``, ``vmax``, ...).

    Returns
    -------
    As :func:`scanpy.pl.embedding`: the figure with ``return_fig=True``, the axes when ``show=False``, else
    ``None``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> axes = csk.pl.features(adata, [0, 1], show=False)
    >>> len(axes)
    2
    """
    codes = get_codes(adata, key)
    basis_key = basis if basis in adata.obsm else f"X_{basis}"
    if basis_key not in adata.obsm:
        raise KeyError(f"basis={basis!r} is not in adata.obsm ({', '.join(adata.obsm)}); compute it first.")
    wanted = [features] if isinstance(features, int | str) else list(features)
    if not wanted:
        raise ValueError("features is empty; pass at least one feature number.")
    columns = {}
    for f in wanted:
        try:
            i = int(f)
        except (TypeError, ValueError):
            raise ValueError(f"Feature {f!r} is not a feature number.") from None
        if not 0 <= i < codes.shape[1]:
            raise ValueError(f"Feature {i} does not exist: the SAE under {key!r} has features 0-{codes.shape[1] - 1}.")
        columns[f"feature {i}"] = np.asarray(codes[:, i].toarray()).ravel()
    view = AnnData(obs=adata.obs[[]].assign(**columns), obsm={basis_key: np.asarray(adata.obsm[basis_key])})
    return sc.pl.embedding(
        view, basis_key, color=list(columns), cmap=cmap, show=show, save=save, ax=ax, return_fig=return_fig, **kwargs
    )
