"""``tl.encode`` and ``tl.get_model``: apply a trained SAE to cells."""

from __future__ import annotations

from copy import copy as shallow_copy
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from .. import get
from .._docs import doc_params
from ..io import Dictionary, read_dictionary
from ..models import SparseAutoencoder, load, resolve_device
from ._input import model_input
from ._store import map_to_genes, store


@doc_params
def get_model(adata: AnnData, key: str = "sae") -> SparseAutoencoder:
    """Rebuild the trained SAE stored in ``adata.uns[key]``.

    The model carries its input (``use_rep``, ``layer`` and, for expression, the gene names) in its
    ``metadata``, so it can be saved with :func:`cellsae_kit.models.save` and applied elsewhere.

    Parameters
    ----------
    {adata}
    {key}

    Returns
    -------
    The model on the CPU, in eval mode.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.get_model(adata).n_features
    32
    """
    return get.sae(adata, key).model


@doc_params
def encode(
    adata: AnnData,
    model: SparseAutoencoder | AnnData | Dictionary | str | Path | None = None,
    *,
    key: str = "sae",
    key_added: str | None = None,
    batch_size: int = 8192,
    device: str = "auto",
    copy: bool = False,
) -> AnnData | None:
    """Encode cells with a trained SAE.

    The input is the one the SAE was trained on (the same ``obsm`` key, or expression with the same genes, which
    are put in the model's order). Use it to encode new cells with a reference SAE, or to recompute activations
    from an ``.h5ad`` file alone.

    Parameters
    ----------
    {adata}
    model
        The SAE: ``None`` (the one in ``adata.uns[key]``), an AnnData holding one under ``uns[key]``, a dictionary
        folder written by :func:`cellsae_kit.io.write_dictionary` (or read by :func:`cellsae_kit.io.read_dictionary`),
        a file written by :func:`cellsae_kit.models.save`, or a :class:`~cellsae_kit.models.SparseAutoencoder`.
        A dictionary of an SAE trained on PCA projects the cells' expression (genes aligned by name) through the
        reference's loadings into ``obsm["<use_rep>_<key_added>"]``, and its feature names, annotation and
        provenance come along into ``uns[key_added]``.
    {key}
    key_added
        Name of the outputs (default ``key``): ``obsm["X_<key_added>"]``, and ``uns[key_added]`` with the
        model's parameters and weights when the model came from elsewhere.
    batch_size
        Cells encoded at once.
    {device}
    {copy}

    {copy_returns}

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> ref = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(ref, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> query = ref[:100].copy()
    >>> del query.obsm["X_sae"]
    >>> csk.tl.encode(query, ref)
    >>> query.obsm["X_sae"].shape
    (100, 32)
    """
    if key_added is not None:
        get.check_key(key_added)
    get.check_adata(adata)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a whole number of cells >= 1.")
    own_model, record = model is None, {}
    if model is None:
        model = get_model(adata, key)
    elif isinstance(model, AnnData | MuData):
        source = get.sae(model, key)
        # what describes the model travels with it; what describes the reference's cells stays behind
        record = {name: source.entry[name] for name in ("metrics", "history") if name in source.entry}
        model = source.model
    elif isinstance(model, str | Path) and Path(model).is_dir():
        model = read_dictionary(model)
    elif isinstance(model, str | Path):
        model = load(model)
    elif not isinstance(model, SparseAutoencoder | Dictionary):
        raise TypeError(
            f"model is a {type(model).__name__}; pass None, an AnnData or MuData, a dictionary, a model file or an SAE."
        )
    key_added = key if key_added is None else key_added
    dictionary = model if isinstance(model, Dictionary) else None
    projected = None
    if dictionary is not None:
        get.check_adata(adata, mudata=False)
        model = shallow_copy(dictionary.model)  # its own metadata below; the weights are shared
        if dictionary.components is not None:
            projected = dictionary.project(adata)
            model.metadata = model.metadata | {"use_rep": f"{dictionary.use_rep}_{key_added}"}
    if projected is None:
        _, X = model_input(
            adata,
            model,
            "the SAE",
            "encode the same representation it was trained on (for PCA, project the new cells with the reference "
            "loadings: write the SAE with cellsae_kit.io.write_dictionary and encode with the folder).",
        )
    else:
        X = projected
    model = model.to(resolve_device(device))
    codes = model.transform(X, batch_size=batch_size)

    adata = adata.copy() if copy else adata
    if own_model and key_added == key:
        adata.obsm[f"X_{key}"] = codes
    else:
        store(adata, model.cpu(), key_added, codes=codes)
        adata.uns[key_added] |= {name: value.copy() for name, value in record.items()}
    if dictionary is not None:
        _carry(adata, dictionary, model, key_added, projected)
    return adata if copy else None


def _carry(adata: AnnData, dictionary: Dictionary, model: SparseAutoencoder, key: str, projected) -> None:
    """Write what a dictionary brings beside the codes: the projected input, gene loadings, names and provenance."""
    entry = adata.uns[key]
    if projected is not None:
        adata.obsm[model.metadata["use_rep"]] = projected
        components = _align(dictionary.components, dictionary.genes, adata.var_names)
        adata.varm[f"{key}_loadings"] = map_to_genes(model, components)
        entry["params"]["loadings"] = "dictionary"
    if dictionary.features is not None:
        entry["features"] = dictionary.features.copy()
    if dictionary.annotation is not None:
        entry["annotation"] = dictionary.annotation.copy()
    params = dict(dictionary.annotation_params)
    if dictionary.top_genes is not None:
        index, values = dictionary.top_genes
        loadings = np.zeros((len(dictionary.annotation_genes), model.n_features), dtype=np.float32)
        np.put_along_axis(loadings, index.T, values.T, axis=0)
        adata.varm[f"{key}_annotation_loadings"] = _align(loadings, dictionary.annotation_genes, adata.var_names)
        params["loadings"] = f"{key}_annotation_loadings"
    if params:
        entry["annotation_params"] = params
    entry["dictionary"] = _without_none(dictionary.provenance)


def _align(values: np.ndarray, genes: list[str], var_names: pd.Index) -> np.ndarray:
    """Rows of ``values`` (one per gene of ``genes``) put in the order of ``var_names``; zero for other genes."""
    out = np.zeros((len(var_names), values.shape[1]), dtype=values.dtype)
    rows = pd.Index(genes).get_indexer(var_names)
    out[rows >= 0] = values[rows[rows >= 0]]
    return out


def _without_none(value):
    # h5ad cannot store None
    if isinstance(value, dict):
        return {name: _without_none(v) for name, v in value.items() if v is not None}
    return value
