"""``tl.sae``: train a sparse autoencoder on a representation of the cells and store it the scverse way."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from .._docs import doc_params
from ..models import FitResult, SparseAutoencoder, fit
from ..models._sae import Activation
from ._input import Input, get_input, is_mudata
from ._stream import is_streamed, open_streamed

logger = logging.getLogger("cellsae_kit")


@doc_params
def sae(
    adata: AnnData | str | Path,
    use_rep: str | None = None,
    *,
    layer: str | None = None,
    n_features: int = 512,
    k: int = 16,
    activation: Activation = "topk",
    l1_coef: float = 0.05,
    n_epochs: int | None = None,
    batch_size: int = 1024,
    lr: float | None = None,
    validation_fraction: float = 0.1,
    loadings: str | None = None,
    key_added: str = "sae",
    random_state: int = 0,
    device: str = "auto",
    precision: str = "float32",
    progress: bool = True,
    copy: bool = False,
    **fit_kwargs: Any,
) -> AnnData | None:
    """Train a sparse autoencoder (SAE) on a representation of the cells.

    An SAE rewrites each cell as a few active *features* out of a large dictionary; each feature is a direction
    in the representation (and, through a linear map, a gene program). Training uses the modern recipes:
    centring on the data mean, unit-norm decoder rows, AuxK and resampling against dead features, a learning
    rate scaled to the dictionary size with warm-up and decay, and early stopping on held-out cells.

    Data larger than memory is streamed from disk: pass an AnnData opened with
    ``scanpy.read_h5ad(path, backed="r")`` (anndata keeps its ``X`` on disk) or the path of an ``.h5ad`` file or a
    ``.zarr`` store (then the input stays on disk whichever it is). Minibatches come from contiguous chunks of
    cells read in a shuffled order (see :class:`cellsae_kit.models.ChunkedRows`), and the activations are encoded
    chunk by chunk into a CSR matrix in memory (a few values per cell). A path returns a new AnnData holding the
    file's ``obs``, ``var`` and ``varm`` and the results; save it with ``write_h5ad``. For several GPUs or nodes
    use ``torchrun ... -m cellsae_kit.train`` (see the README).

    Parameters
    ----------
    {adata}
        Or a backed AnnData, or the path of an ``.h5ad`` file or ``.zarr`` store: streamed from disk (see above).
    {use_rep}
    {layer}
    n_features
        Dictionary size (number of features).
    k
        Active features per cell (``"topk"``) or on average (``"batchtopk"``).
    activation
        ``"topk"``, ``"batchtopk"`` or ``"relu"`` (ReLU with an L1 penalty weighted by the decoder norms).
    l1_coef
        L1 weight for ``activation="relu"``.
    n_epochs
        Passes over the cells; by default enough for about 3,000 optimisation steps.
    batch_size
        Cells per optimisation step.
    lr
        Learning rate; by default ``2e-4 / sqrt(n_features / 2**14)``.
    validation_fraction
        Fraction of cells held out for the validation FVU and early stopping.
    loadings
        ``varm`` key of the genes x dimensions map of ``use_rep`` (for example ``"PCs"`` for ``"X_pca"``), used to
        express features as gene loadings. By default it is looked up (``PCs`` for PCA, a ``varm`` entry named
        like ``use_rep``); representations without one (scVI, foundation models) get no ``varm`` entry.
    {key_added}
    random_state
        Seed; CPU runs with the same seed give identical results.
    {device}
    precision
        ``"float32"``, or ``"bfloat16"`` (autocast on a GPU).
    progress
        Show a progress bar.
    {copy}
    **fit_kwargs
        Further options of :func:`cellsae_kit.models.fit` (``center``, ``patience``, ``aux_coef``, ...).

    {copy_returns}
    Writes

    - ``obsm["X_<key_added>"]``: activations, cells x features (CSR, float32);
    - ``varm["<key_added>_loadings"]``: genes x features, when a linear map to genes exists (expression input,
      or a representation with loadings such as PCA; genes outside the map get zero rows);
    - ``uns[key_added]``: ``params``, ``metrics`` (FVU on train and validation cells, L0, dead and dense
      fractions, maximum decoder cosine), ``history`` (per epoch), ``weights`` (enough to encode new cells with
      :func:`cellsae_kit.tl.encode`), ``validation_indices`` and, for expression input, ``var_names``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> adata.obsm["X_sae"].shape, adata.varm["sae_loadings"].shape
    ((700, 64), (765, 64))

    Streamed from a file (a path returns a new AnnData with the results):

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pbmc.h5ad"
    >>> adata.write_h5ad(path)
    >>> on_disk = csk.tl.sae(path, "X_pca", n_features=64, k=4, n_epochs=5, progress=False)
    >>> on_disk.obsm["X_sae"].shape
    (700, 64)
    """
    from_path = isinstance(adata, str | Path)
    if is_streamed(adata):
        if copy and not from_path:
            raise ValueError(
                "copy=True cannot copy a backed AnnData (its data stay on disk): leave copy=False, and the results go "
                "into the object in memory (save them with adata.write_h5ad(new_path)), or pass the file's path."
            )
        adata, data = open_streamed(adata, use_rep, layer)
    else:
        data = get_input(adata, use_rep, layer)
    maps = _find_maps(adata, data, loadings)
    metadata = {"use_rep": data.use_rep} | ({"layer": data.layer} if data.layer else {})
    if data.is_expression:
        metadata["var_names"] = (adata.mod[data.mod] if data.mod else adata).var_names.tolist()
    result = fit(
        data.X,
        n_features=n_features,
        activation=activation,
        k=k,
        l1_coef=l1_coef,
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        validation_fraction=validation_fraction,
        random_state=random_state,
        device=device,
        precision=precision,
        progress=progress,
        input_name=data.name,
        metadata=metadata,
        **fit_kwargs,
    )
    # Everything succeeded: only now touch the user's object.
    adata = adata.copy() if copy and not from_path else adata
    store_fit(adata, data, maps, result, key_added)
    return adata if copy or from_path else None


def store_fit(adata: AnnData, data: Input, maps: dict, result: FitResult, key_added: str) -> None:
    """Write what :func:`sae` stores for a fit: activations, gene loadings, parameters, metrics and history."""
    gene_loadings = {mod: _gene_loadings(result.model, genes_by_dims) for mod, (_, genes_by_dims) in maps.items()}
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
    each modality's ``varm``, never in its global ``varm``, whose keys are the modality names.
    """
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


def _find_maps(
    adata: AnnData | MuData, data: Input, loadings: str | None
) -> dict[str | None, tuple[str | None, np.ndarray]]:
    """Genes x dimensions maps of the input with their ``varm`` keys, per modality (``None``: an AnnData)."""
    if not is_mudata(adata) or data.mod is not None:
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


def _gene_loadings(model: SparseAutoencoder, genes_by_dims: np.ndarray) -> np.ndarray:
    """Map each feature's decoder direction, in the input's units, to genes (genes x features)."""
    decoder = model.W_dec.detach().cpu().double().numpy().T / float(model.input_scale)
    if genes_by_dims.size == 0:
        return decoder.astype(np.float32)
    return (genes_by_dims @ decoder).astype(np.float32)
