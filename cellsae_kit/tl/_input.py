"""Choosing and checking the input of an SAE in an AnnData object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ..models import check_data


@dataclass
class Input:
    """The matrix an SAE reads, where it came from, and the genes behind it when it is expression."""

    X: np.ndarray | sparse.spmatrix
    use_rep: str
    layer: str | None
    name: str

    @property
    def is_expression(self) -> bool:
        """Whether the input is genes (``X`` or a layer), so the decoder itself is a gene loading matrix."""
        return self.use_rep == "X"


def check_adata(adata: object) -> None:
    """Raise a clear error unless ``adata`` is an AnnData object."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")


def get_input(adata: AnnData, use_rep: str | None = None, layer: str | None = None) -> Input:
    """Pick the matrix named by ``use_rep`` / ``layer`` and check that an SAE can use it.

    Parameters
    ----------
    adata
        The data.
    use_rep
        An ``obsm`` key, ``"X"`` or ``None`` (``X`` or ``layer``).
    layer
        A layer of expression, only with ``use_rep`` in ``(None, "X")``.

    Returns
    -------
    The chosen input.
    """
    check_adata(adata)
    use_rep = "X" if use_rep is None else use_rep
    if use_rep != "X":
        if layer is not None:
            raise ValueError(
                f"use_rep={use_rep!r} and layer={layer!r} both name an input; pass layer only for expression "
                "(use_rep=None)."
            )
        if use_rep not in adata.obsm:
            available = ", ".join(repr(k) for k in ["X", *adata.obsm]) or "none"
            raise KeyError(f"use_rep={use_rep!r} is not in adata.obsm. Available representations: {available}.")
        X, name = adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]"
        if hasattr(X, "to_numpy"):  # a DataFrame in obsm
            X = X.to_numpy()
    elif layer is not None:
        if layer not in adata.layers:
            available = ", ".join(repr(k) for k in adata.layers) or "none"
            raise KeyError(f"layer={layer!r} is not in adata.layers. Available layers: {available}.")
        X, name = adata.layers[layer], f"adata.layers[{layer!r}]"
    else:
        X, name = adata.X, "adata.X"
    if X is None:
        raise ValueError(f"{name} is empty (None); store data there or choose another input.")
    if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
        X = np.asarray(X)  # h5py-backed or array-like; streaming inputs come with the performance issue
    check_data(X, name)
    return Input(X, use_rep, layer, name)


def get_codes(adata: AnnData, key: str = "sae"):
    """Return the activations ``obsm["X_<key>"]`` of a trained SAE as CSR; a clear error when they are missing."""
    check_adata(adata)
    name = f"X_{key}"
    if name not in adata.obsm:
        trained = [k for k, v in adata.uns.items() if isinstance(v, dict) and {"params", "weights"} <= set(v)]
        hint = f" SAEs found: {', '.join(map(repr, trained))}." if trained else " Run cellsae_kit.tl.sae first."
        raise KeyError(f"adata.obsm has no {name!r} (activations of an SAE stored under key={key!r}).{hint}")
    codes = adata.obsm[name]
    return sparse.csr_matrix(codes) if not sparse.issparse(codes) or codes.format != "csr" else codes


def get_groups(adata: AnnData, groupby: str):
    """Return the categorical ``obs[groupby]`` column; a clear error when it is missing or incomplete."""
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs. Columns: {', '.join(adata.obs.columns)}.")
    groups = adata.obs[groupby]
    if groups.isna().any():
        raise ValueError(
            f"adata.obs[{groupby!r}] has {int(groups.isna().sum())} missing values; fill them or subset the cells."
        )
    return groups.astype("category") if not isinstance(groups.dtype, pd.CategoricalDtype) else groups
