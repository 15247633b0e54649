"""Writing a fitted SAE into an AnnData or MuData: what ``tl.sae`` stores, and the maps from its input to genes."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from .. import get
from ..models import FitResult, SparseAutoencoder
from ._input import Input

logger = logging.getLogger("cellsae_kit")


def store_fit(adata: AnnData, data: Input, maps: dict, result: FitResult, key_added: str) -> None:
    """Write what :func:`sae` stores for a fit: activations, gene loadings, parameters, metrics and history."""
    gene_loadings = {mod: map_to_genes(result.model, genes_by_dims) for mod, (_, genes_by_dims) in maps.items()}
    store(adata, result.model, key_added, codes=result.codes, gene_loadings=gene_loadings)
    uns = adata.uns[key_added]
    uns["params"] |= _drop_none(
        {**result.params, "use_rep": data.use_rep, "layer": data.layer, "loadings": _map_names(maps)}
    )
    uns["metrics"] = {name: float(value) for name, value in result.metrics.items()}
    uns["history"] = pd.DataFrame(result.history)
    uns["validation_indices"] = result.validation_indices.astype(np.int64)


def store(
    adata: AnnData,
    model: SparseAutoencoder,
    key: str,
    *,
    codes: Any,
    gene_loadings: dict[str | None, np.ndarray] | None = None,
) -> None:
    """Write activations, loadings, parameters and weights of an SAE into ``adata`` under one key.

    ``gene_loadings`` maps a modality (``None`` for an AnnData) to its features' loadings; a MuData keeps them in
    each modality's ``varm``, never in its global ``varm``, whose keys are the modality names. ``codes=None``
    leaves ``obsm`` alone (the activations were written to a file block by block).
    """
    if codes is not None:
        adata.obsm[f"X_{key}"] = codes
    for mod, values in (gene_loadings or {}).items():
        (adata if mod is None else adata.mod[mod]).varm[f"{key}_loadings"] = values
    meta = model.metadata
    params = {name: value for name, value in model.config().items() if name != "metadata"}
    params |= {"use_rep": meta.get("use_rep", "X"), "n_inputs": model.n_inputs} | _drop_none(
        {"layer": meta.get("layer")}
    )
    entry = {"params": params, "weights": model.weights()}
    if "var_names" in meta:
        entry["var_names"] = np.asarray(meta["var_names"], dtype=object)
    adata.uns[key] = entry


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    # h5ad cannot store None
    return {name: value for name, value in d.items() if value is not None}


def _find_loadings(adata: AnnData, data: Input, loadings: str | None) -> str | None:
    """Find the ``varm`` key of a genes x dimensions map for the input representation, or ``None``."""
    n_dims = data.X.shape[1]
    if data.is_expression:
        if loadings is not None:
            raise ValueError("loadings= is only for obsm representations; expression input needs no map.")
        return None
    if loadings is not None:
        if loadings not in adata.varm:
            raise KeyError(f"loadings={loadings!r} is not in adata.varm. Available: {', '.join(adata.varm) or 'none'}.")
        if adata.varm[loadings].shape[1] != n_dims:
            raise ValueError(
                f"adata.varm[{loadings!r}] has {adata.varm[loadings].shape[1]} columns but {data.name} has {n_dims} "
                "dimensions; pass the loadings of that representation."
            )
        return loadings
    for key in _candidates(data.rep):
        if key in adata.varm and adata.varm[key].shape[1] == n_dims:
            return key
    return None


def _candidates(rep: str) -> list[str]:
    """``varm`` keys that may hold the genes x dimensions map of ``obsm[rep]``."""
    keys = [rep, rep.removeprefix("X_")]
    if rep.removeprefix("X_") == "pca":
        keys.append("PCs")
    if rep.removeprefix("X_") == "mofa":
        keys.append("LFs")  # muon's name for MOFA's weights
    return keys


def find_maps(
    adata: AnnData | MuData, data: Input, loadings: str | None
) -> dict[str | None, tuple[str | None, np.ndarray]]:
    """Genes x dimensions maps of the input with their ``varm`` keys, per modality (``None``: an AnnData)."""
    if not get.is_mudata(adata) or data.mod is not None:
        genes = adata if data.mod is None else adata.mod[data.mod]
        found = _find_loadings(genes, data, loadings)
        maps = {data.mod: (found, _genes_by_dims(data, genes.varm[found] if found else None))}
    else:
        maps = {name: _joint_map(adata, name, data, loadings) for name in adata.mod}
    maps = {mod: found for mod, found in maps.items() if found[1] is not None}
    if not maps:
        logger.info("No genes x dimensions map for %s: no gene loadings are written.", data.name)
    return maps


def _joint_map(mdata: MuData, mod: str, data: Input, loadings: str | None) -> tuple[str | None, np.ndarray | None]:
    """One modality's rows of the map of a joint representation: in its own ``varm``, or in the global one."""
    n_dims = data.X.shape[1]
    keys = [loadings] if loadings is not None else _candidates(data.rep)
    own = mdata.mod[mod].varm
    for key in keys:
        if key in own and own[key].shape[1] == n_dims:
            return key, _genes_by_dims(data, own[key])
    for key in keys:
        # The global varm stacks every modality's features; varmap gives each one's row (1-based, 0: absent).
        if key in mdata.varm and key not in mdata.mod and np.ndim(mdata.varm[key]) == 2:
            if mdata.varm[key].shape[1] != n_dims:
                continue
            rows = np.asarray(mdata.varmap[mod]).ravel()
            order = np.argsort(rows)[rows[np.argsort(rows)] > 0]  # global rows of the modality's features, in order
            return key, _genes_by_dims(data, np.asarray(mdata.varm[key])[order])
    if loadings is not None and not any(loadings in m.varm for m in mdata.mod.values()) and loadings not in mdata.varm:
        raise KeyError(f"loadings={loadings!r} is in no modality's varm nor in mdata.varm.")
    return None, None


def _map_names(maps: dict[str | None, tuple[str | None, np.ndarray]]) -> str | dict[str, str] | None:
    """Name the maps' ``varm`` keys: one for an AnnData, one per modality for a MuData (none for expression)."""
    names = {mod: key for mod, (key, _) in maps.items() if key is not None}
    return names.get(None) if None in maps else names or None


def _genes_by_dims(data: Input, values: Any) -> np.ndarray | None:
    """Return the map in float64; an empty array for expression input, where the decoder is the map."""
    if data.is_expression:
        return np.empty((0, 0))
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float64)
    # scanpy leaves NaN rows in varm["PCs"] for genes the PCA did not use (e.g. non-highly-variable genes):
    # those genes get zero loadings, as documented.
    return np.where(np.isfinite(values), values, 0.0)


def map_to_genes(model: SparseAutoencoder, genes_by_dims: np.ndarray) -> np.ndarray:
    """Map each feature's decoder direction, in the input's units, to genes (genes x features)."""
    decoder = model.W_dec.detach().cpu().double().numpy().T / float(model.input_scale)
    if genes_by_dims.size == 0:
        return decoder.astype(np.float32)
    return (genes_by_dims @ decoder).astype(np.float32)
