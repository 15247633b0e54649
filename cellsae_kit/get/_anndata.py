"""Checked access to the parts of an AnnData or MuData that the tools read: modalities, genes, groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData


def is_mudata(adata: object) -> bool:
    """Return whether ``adata`` is a MuData object (multimodal data).

    Examples
    --------
    >>> import anndata as ad
    >>> import cellsae_kit as csk
    >>> csk.get.is_mudata(ad.AnnData())
    False
    """
    return isinstance(adata, MuData)


def check_adata(adata: object, *, mudata: bool = True) -> None:
    """Raise a clear error unless ``adata`` is an AnnData (or, where ``mudata``, a MuData) object.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> csk.get.check_adata([[1.0]])
    Traceback (most recent call last):
    ...
    TypeError: Expected an AnnData or MuData object, got list.
    """
    if isinstance(adata, AnnData) or (mudata and is_mudata(adata)):
        return
    if is_mudata(adata):
        raise TypeError(
            "This function works on one modality: pass an AnnData such as mdata.mod['rna'] (its own obsm and uns)."
        )
    raise TypeError(f"Expected an AnnData or MuData object, got {type(adata).__name__}.")


def modality(mdata: MuData, mod: str, what: str = "use_rep") -> AnnData:
    """Return ``mdata.mod[mod]``, checking that it exists and holds the same cells as the MuData.

    ``what`` names the argument that chose the modality, for the error message.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> mdata = csk.datasets.simulate(50, 5, 2, modalities=("rna", "atac"), n_genes=20, n_peaks=40)
    >>> csk.get.modality(mdata, "rna").n_vars
    20
    """
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


def genes(adata: AnnData | MuData, key: str = "sae", mod: str | None = None) -> AnnData:
    """Return the object that holds the genes (``var``, ``varm``, expression): ``adata``, or a MuData's modality.

    For a MuData without ``mod``, the one modality with ``varm["<key>_loadings"]`` is taken when there is exactly
    one (an SAE on ``"rna:X_pca"``); otherwise ``mod`` must name one.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.get.genes(adata) is adata
    True
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
    return modality(adata, mod, "mod")


def modality_name(adata: AnnData | MuData, genes: AnnData) -> str | None:
    """Name the modality ``genes`` of ``adata`` (``None`` for an AnnData).

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> mdata = csk.datasets.simulate(50, 5, 2, modalities=("rna", "atac"), n_genes=20, n_peaks=40)
    >>> csk.get.modality_name(mdata, mdata.mod["atac"])
    'atac'
    """
    if not is_mudata(adata):
        return None
    return next(name for name, m in adata.mod.items() if m is genes)


MAX_NUMERIC_GROUPS = 100  # integer cluster labels are groups; more distinct numbers than this are a measurement


def groups(adata: AnnData, groupby: str) -> pd.Series:
    """Return the categorical ``obs[groupby]`` column; a clear error when it is missing or incomplete.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> csk.get.groups(sc.datasets.pbmc68k_reduced(), "bulk_labels").cat.categories.size
    10
    """
    if groupby not in adata.obs:
        raise KeyError(f"groupby={groupby!r} is not a column of adata.obs. Columns: {', '.join(adata.obs.columns)}.")
    values = adata.obs[groupby]
    if values.isna().any():
        raise ValueError(
            f"adata.obs[{groupby!r}] has {int(values.isna().sum())} missing values; fill them or subset the cells."
        )
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    n_unique = values.nunique()
    if numeric and (n_unique > MAX_NUMERIC_GROUPS or not np.allclose(values, np.round(values))):
        raise ValueError(
            f"adata.obs[{groupby!r}] is a continuous number ({n_unique} distinct values), not groups of cells; "
            "choose a categorical column (cell types, clusters) or bin it first, e.g. "
            f"adata.obs['{groupby}_bins'] = pd.qcut(adata.obs[{groupby!r}], 5)."
        )
    return values.astype("category")
