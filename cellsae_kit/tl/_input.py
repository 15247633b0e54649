"""Choosing and checking the input of an SAE in an AnnData object."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from ..models import check_data


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


def is_mudata(adata: object) -> bool:
    """Whether ``adata`` is a MuData object (multimodal data)."""
    return isinstance(adata, MuData)


def check_adata(adata: object, *, mudata: bool = True) -> None:
    """Raise a clear error unless ``adata`` is an AnnData (or, where ``mudata``, a MuData) object."""
    if isinstance(adata, AnnData) or (mudata and is_mudata(adata)):
        return
    if is_mudata(adata):
        raise TypeError(
            "This function works on one modality: pass an AnnData such as mdata.mod['rna'] (its own obsm and uns)."
        )
    raise TypeError(f"Expected an AnnData or MuData object, got {type(adata).__name__}.")


def get_modality(mdata: MuData, mod: str, what: str = "use_rep") -> AnnData:
    """Return ``mdata.mod[mod]``, checking that it exists and holds the same cells as the MuData."""
    if mod not in mdata.mod:
        raise KeyError(
            f"{what} names the modality {mod!r}, which the MuData does not have; modalities: "
            f"{', '.join(map(repr, mdata.mod))}."
        )
    cells = mdata.mod[mod].obs_names
    if not cells.equals(mdata.obs_names):
        raise ValueError(
            f"mdata.mod[{mod!r}] holds {len(cells)} cells, not the MuData's {mdata.n_obs} in the same order; keep "
            "the cells measured in every modality first (muon.pp.intersect_obs(mdata))."
        )
    return mdata.mod[mod]


def get_var(adata: AnnData | MuData, key: str = "sae", mod: str | None = None) -> AnnData:
    """Return the object that holds the genes (``var``, ``varm``, expression): ``adata``, or a MuData's modality.

    For a MuData without ``mod``, the one modality with ``varm["<key>_loadings"]`` is taken when there is exactly
    one (an SAE on ``"rna:X_pca"``); otherwise ``mod`` must name one.
    """
    if not is_mudata(adata):
        if mod is not None:
            raise ValueError(f"mod={mod!r} chooses a modality of a MuData; adata is an AnnData: leave mod out.")
        return adata
    if mod is None:
        having = [name for name, m in adata.mod.items() if f"{key}_loadings" in m.varm]
        if len(having) == 1:
            return adata.mod[having[0]]
        raise ValueError(
            f"adata is a MuData: name the modality with mod=, one of {', '.join(map(repr, adata.mod))} (with "
            f"varm['{key}_loadings']: {', '.join(map(repr, having)) or 'none'})."
        )
    return get_modality(adata, mod, "mod")


def modality_name(adata: AnnData | MuData, genes: AnnData) -> str | None:
    """Name the modality ``genes`` of ``adata`` (``None`` for an AnnData)."""
    if not is_mudata(adata):
        return None
    return next(name for name, m in adata.mod.items() if m is genes)


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
    check_adata(adata)
    if is_mudata(adata):
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
    data = get_input(get_modality(mdata, mod), rep, layer)
    return Input(data.X, use_rep, layer, f"mdata.mod[{mod!r}]" + data.name.removeprefix("adata"), mod)


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
