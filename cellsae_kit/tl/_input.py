"""Choosing and checking the input of an SAE in an AnnData object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from .. import get
from ..models import SparseAutoencoder, check_data


@dataclass
class Input:
    """The matrix an SAE reads, where it came from, and the genes behind it when it is expression."""

    X: np.ndarray | sparse.spmatrix
    use_rep: str
    layer: str | None
    name: str
    mod: str | None = None  # the MuData modality the input comes from ("rna" of "rna:X_pca"); None: global

    @property
    def rep(self) -> str:
        """The key within its object: ``"X_pca"`` for ``use_rep="rna:X_pca"``."""
        return self.use_rep.split(":", 1)[1] if self.mod is not None else self.use_rep

    @property
    def is_expression(self) -> bool:
        """Whether the input is genes (``X`` or a layer), so the decoder itself is a gene loading matrix."""
        return self.rep == "X"


def rep_name(use_rep: str | None, layer: str | None) -> str:
    """``use_rep``, ``"X"`` when it is ``None``; a clear error when a layer is asked for with an ``obsm`` entry."""
    use_rep = "X" if use_rep is None else use_rep
    if use_rep != "X" and layer is not None:
        raise ValueError(
            f"use_rep={use_rep!r} and layer={layer!r} both name an input; pass layer only for expression "
            "(use_rep=None)."
        )
    return use_rep


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
    get.check_adata(adata)
    if get.is_mudata(adata):
        return _get_mudata_input(adata, use_rep, layer)
    use_rep = rep_name(use_rep, layer)
    if use_rep != "X":
        if use_rep not in adata.obsm:
            available = ", ".join(repr(k) for k in ["X", *adata.obsm]) or "none"
            raise KeyError(f"use_rep={use_rep!r} is not in adata.obsm. Available representations: {available}.")
        X, name = adata.obsm[use_rep], f"adata.obsm[{use_rep!r}]"
        if hasattr(X, "to_numpy"):  # a DataFrame in obsm
            X = X.to_numpy()
    elif layer is not None:
        if layer not in adata.layers:
            available = ", ".join(repr(k) for k in adata.layers if k is not None) or "none"  # anndata 0.13: X
            raise KeyError(f"layer={layer!r} is not in adata.layers. Available layers: {available}.")
        X, name = adata.layers[layer], f"adata.layers[{layer!r}]"
    else:
        X, name = adata.X, "adata.X"
    if use_rep == "X":
        check_unique(adata.var_names, "adata.var_names", "adata.var_names_make_unique()")
    if X is None:
        raise ValueError(f"{name} is empty (None); store data there or choose another input.")
    if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
        X = np.asarray(X)  # h5py-backed or array-like; streaming inputs come with the performance issue
    check_data(X, name)
    return Input(X, use_rep, layer, name)


def _get_mudata_input(mdata: MuData, use_rep: str | None, layer: str | None) -> Input:
    """Read a joint representation in the MuData's ``obsm``, or ``"<modality>:<key>"`` within one modality."""
    if use_rep is not None and use_rep in mdata.obsm:
        if layer is not None:
            raise ValueError(f"use_rep={use_rep!r} is a joint representation; layer= is only for '<modality>:X'.")
        X = mdata.obsm[use_rep]
        X = X.to_numpy() if hasattr(X, "to_numpy") else X
        check_data(X, f"mdata.obsm[{use_rep!r}]")
        return Input(X, use_rep, None, f"mdata.obsm[{use_rep!r}]")
    if use_rep is None or ":" not in use_rep:
        joint = ", ".join(repr(k) for k in mdata.obsm) or "none"
        raise KeyError(
            f"use_rep={use_rep!r} names no input of this MuData: give a joint representation in mdata.obsm "
            f"(available: {joint}; make one with cellsae_kit.tl.joint_embedding) or '<modality>:<obsm key>', such "
            f"as '{next(iter(mdata.mod))}:X_pca' ('<modality>:X' for its expression)."
        )
    mod, rep = use_rep.split(":", 1)
    data = get_input(get.modality(mdata, mod), rep, layer)
    return Input(data.X, use_rep, layer, f"mdata.mod[{mod!r}]" + data.name.removeprefix("adata"), mod)


def model_input(adata: AnnData | MuData, model: SparseAutoencoder, what: str, hint: str) -> tuple[Input, Any]:
    """Read the input ``model`` was trained on from ``adata``: its ``use_rep`` or layer, genes in its order.

    ``what`` names the model and ``hint`` says what to do in the error raised when the dimensions differ.
    """
    meta = model.metadata
    data = get_input(adata, meta.get("use_rep", "X"), meta.get("layer"))
    X = data.X
    if "var_names" in meta:
        X = align_genes(adata.mod[data.mod] if data.mod else adata, X, meta["var_names"])
    if X.shape[1] != model.n_inputs:
        raise ValueError(f"{data.name} has {X.shape[1]} dimensions but {what} was trained on {model.n_inputs}; {hint}")
    return data, X


def check_unique(names, where: str, fix: str) -> None:
    """Refuse repeated gene (or cell) names, which make every lookup by name ambiguous."""
    index = pd.Index(names)
    if not index.is_unique:
        repeated = index[index.duplicated()].unique()
        raise ValueError(
            f"{where} has {len(repeated)} repeated names (e.g. {', '.join(map(str, repeated[:3]))}), so genes cannot "
            f"be matched by name; make them unique first ({fix})."
        )


def align_genes(adata: AnnData, X, var_names: list[str]):
    """Columns of ``X`` in the model's gene order; an error names what is missing."""
    check_unique(var_names, "The SAE's gene list", "train it again on data with unique var_names")
    check_unique(adata.var_names, "adata.var_names", "adata.var_names_make_unique()")
    index = adata.var_names.get_indexer(var_names)
    missing = [g for g, i in zip(var_names, index, strict=True) if i < 0]
    if missing:
        raise ValueError(
            f"{len(missing)} of the SAE's {len(var_names)} genes are missing from adata.var_names (e.g. "
            f"{', '.join(missing[:5])}); encode data with the same genes (match the gene identifiers and subset or "
            "reindex adata)."
        )
    if np.array_equal(index, np.arange(adata.n_vars)):
        return X
    return X[:, index]
