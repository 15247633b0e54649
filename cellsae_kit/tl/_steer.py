"""``tl.steer``: set or scale one feature in chosen cells, and see where the cells move and which genes change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ._input import model_input
from ._store import find_maps

logger = logging.getLogger("cellsae_kit")

Cells = np.ndarray | Sequence[int] | Sequence[str] | pd.Index | pd.Series | tuple[str, Any] | None
Decoder = Callable[[np.ndarray], np.ndarray | pd.DataFrame]


def steered_activations(before: np.ndarray, *, value: float | None = None, scale: float | None = None) -> np.ndarray:
    """Steer one feature's activations: set all to ``value``, or multiply each by ``scale``.

    Parameters
    ----------
    before
        The feature's activations in the steered cells.
    value
        Activation to set (>= 0).
    scale
        Factor (>= 0) for each cell's own activation.

    Returns
    -------
    The steered activations, float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._steer import steered_activations
    >>> steered_activations(np.array([0.0, 2.0]), scale=1.5), steered_activations(np.array([0.0, 2.0]), value=3.0)
    (array([0., 3.]), array([3., 3.]))
    """
    if (value is None) == (scale is None):
        raise ValueError(
            "Pass either value= (set the feature's activation to this number) or scale= (multiply each cell's own "
            "activation), not both and not neither."
        )
    for name, number in (("value", value), ("scale", scale)):
        if number is not None:
            _check_number(name, number)
    before = np.asarray(before, dtype=np.float64)
    return np.full_like(before, float(value)) if value is not None else before * float(scale)


def _check_number(name: str, number: object) -> None:
    if isinstance(number, bool) or not isinstance(number, int | float | np.integer | np.floating):
        raise TypeError(f"{name}={number!r} must be a number.")
    if not np.isfinite(number) or number < 0:
        raise ValueError(
            f"{name}={number} is not allowed: SAE activations are >= 0 and finite (value=0 switches a feature off)."
        )


def steering_shift(before: np.ndarray, after: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Move of each cell in the representation when one feature's activation goes from ``before`` to ``after``.

    An SAE decodes linearly (``x = codes @ W_dec + b_dec``, divided by the input scale), so changing one feature
    moves a cell along that feature's decoder direction by the change in activation. Adding this move to the
    cell's actual representation, rather than replacing the cell by its reconstruction, keeps the SAE's
    reconstruction error out of the answer.

    Parameters
    ----------
    before, after
        The feature's activation in each cell, before and after steering.
    direction
        The feature's decoder row in input units (``W_dec[feature] / input_scale``).

    Returns
    -------
    Cells x dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._steer import steering_shift
    >>> steering_shift(np.array([0.0, 1.0]), np.array([2.0, 1.0]), np.array([1.0, -1.0]))
    array([[ 2., -2.],
           [ 0., -0.]])
    """
    change = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    return change[:, None] * np.asarray(direction, dtype=np.float64)[None, :]


def select_cells(adata: AnnData, cells: Cells, name: str = "cells") -> np.ndarray:
    """Sorted row numbers of the cells named by a mask, row numbers, ``obs_names`` or a ``(column, label)`` pair.

    Examples
    --------
    >>> import scanpy as sc
    >>> from cellsae_kit.tl._steer import select_cells
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> len(select_cells(adata, ("bulk_labels", "CD34+"))), select_cells(adata, [5, 2]).tolist()
    (13, [2, 5])
    """
    if cells is None:
        return np.arange(adata.n_obs)
    if isinstance(cells, tuple):
        if len(cells) != 2 or not isinstance(cells[0], str):
            raise TypeError(
                f"{name}={cells!r}: a tuple names cells by an obs column and its label(s), such as "
                "('bulk_labels', 'CD34+'); give several cells as a list or an array."
            )
        column, wanted = cells
        groups = get.groups(adata, column).astype(str)
        wanted = [str(w) for w in ([wanted] if isinstance(wanted, str) else wanted)]
        missing = [w for w in wanted if w not in set(groups)]
        if missing:
            raise ValueError(
                f"{name}={cells!r}: {missing} are not labels of adata.obs[{column!r}] (it has "
                f"{', '.join(map(repr, groups.unique()))})."
            )
        return np.flatnonzero(groups.isin(wanted).to_numpy())
    values = np.asarray(cells.to_numpy() if isinstance(cells, pd.Series | pd.Index) else cells)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (a mask, row numbers or cell names), not {values.shape}.")
    if values.dtype == bool:
        if len(values) != adata.n_obs:
            raise ValueError(
                f"{name} is a boolean mask of {len(values)} values but adata has {adata.n_obs} cells; give one "
                "value per cell, in the order of adata.obs_names."
            )
        index = np.flatnonzero(values)
    elif np.issubdtype(values.dtype, np.integer):
        bad = values[(values < 0) | (values >= adata.n_obs)]
        if len(bad):
            raise ValueError(f"{name} has row numbers outside 0-{adata.n_obs - 1}: {bad[:5].tolist()}.")
        index = np.unique(values)
    elif values.dtype.kind in "OUS":
        index = adata.obs_names.get_indexer(values.astype(str))
        if (index < 0).any():
            missing = values[index < 0][:5].tolist()
            raise ValueError(f"{name} names cells that are not in adata.obs_names, e.g. {missing}.")
        index = np.unique(index)
    else:
        raise TypeError(
            f"{name} has dtype {values.dtype}; give a boolean mask, row numbers, cell names or a (column, label) pair."
        )
    if len(index) == 0:
        raise ValueError(f"{name} selects no cells; choose at least one.")
    return index


def decoded_genes(decoder: Decoder, before: np.ndarray, after: np.ndarray, var_names: pd.Index) -> pd.Series:
    """Mean change per gene when a user's ``decoder`` maps the representation to expression, before and after.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from cellsae_kit.tl._steer import decoded_genes
    >>> decoded_genes(lambda r: 2 * r, np.zeros((2, 2)), np.ones((2, 2)), pd.Index(["a", "b"])).tolist()
    [2.0, 2.0]
    """
    outputs = []
    for rep in (before, after):
        out = decoder(rep.astype(np.float32))
        columns = pd.Index(out.columns.astype(str)) if isinstance(out, pd.DataFrame) else None
        out = out.to_numpy() if isinstance(out, pd.DataFrame) else out
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)  # a torch tensor
        n_genes = len(var_names) if columns is None else len(columns)
        if out.shape != (rep.shape[0], n_genes):
            raise ValueError(
                f"The decoder returned shape {out.shape} for {rep.shape[0]} cells; it must return cells x genes, "
                f"{(rep.shape[0], len(var_names))} here (one column per gene of adata, or a DataFrame with genes as "
                "columns)."
            )
        if not np.issubdtype(out.dtype, np.number) or not np.isfinite(out).all():
            raise ValueError("The decoder returned non-numeric, NaN or infinite values; it must return expression.")
        outputs.append((out.astype(np.float64), columns))
    (out_before, columns), (out_after, _) = outputs
    return pd.Series((out_after - out_before).mean(axis=0), index=var_names if columns is None else columns)


def _linear_genes(
    adata: AnnData, data: Any, stored: get.StoredSAE, shift: np.ndarray
) -> tuple[pd.DataFrame | None, str]:
    """Mean change per gene through the input's linear map (identity for expression, PCA loadings ...)."""
    loadings = stored.params.get("loadings")
    maps = find_maps(adata, data, loadings if isinstance(loadings, str) else None)
    mean_shift = shift.mean(axis=0)
    parts, sources = [], []
    for mod, (varm_key, genes_by_dims) in maps.items():
        genes = adata if mod is None else adata.mod[mod]
        if genes_by_dims.size == 0:  # expression input: the representation is the genes
            names = pd.Index(np.asarray(stored.var_names or genes.var_names).astype(str))
            delta, source = mean_shift, "identity (expression input)"
        else:
            names, delta, source = genes.var_names, genes_by_dims @ mean_shift, f"varm[{varm_key!r}]"
        part = pd.DataFrame({"delta": delta}, index=pd.Index(names, name="gene"))
        if mod is not None:
            part.insert(0, "modality", mod)
        parts.append(part)
        sources.append(source if mod is None else f"{mod}: {source}")
    if not parts:
        return None, "none"
    return pd.concat(parts), "; ".join(sources)


def _rank_genes(table: pd.DataFrame) -> pd.DataFrame:
    order = np.argsort(-np.abs(table["delta"].to_numpy()), kind="stable")
    return table.iloc[order]


@doc_params
def steer(
    adata: AnnData,
    feature: int | str,
    *,
    value: float | None = None,
    scale: float | None = None,
    target: tuple[str, str] | None = None,
    cells: Cells = None,
    key: str = "sae",
    decoder: Decoder | None = None,
    groupby: str | None = None,
    n_neighbors: int = 15,
    store_rep: bool = False,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Steer cells along one SAE feature and report where they move and which genes change.

    The test of a feature by intervention, as in the reference study (a feature set to a population's mean
    x 1.5 in other cells). Three ways to steer, one per call:

    - ``value=v``: set the feature's activation to ``v`` in every chosen cell;
    - ``scale=s``: multiply each chosen cell's own activation by ``s`` (cells where it is off stay off);
    - ``target=(column, label)``: set it to the feature's mean activation over the cells of that population
      (zeros included), times ``scale`` when given. The study's experiment is one line:
      ``steer(adata, 17, target=("bulk_labels", "CD56+ NK"), scale=1.5, cells=("bulk_labels", "CD34+"))``.

    The change of activation moves each cell along the feature's decoder direction (the SAE decodes linearly); the
    move is added to the cell's actual representation, so the SAE's reconstruction error does not count as a move.
    From there to genes: through the input's linear map when there is one (expression input: the move is in
    genes already; PCA: times the loadings ``varm["PCs"]``, in the units of the expression the PCA was computed
    on), or through ``decoder`` (for example a generative model's decoder), which then takes precedence.

    Where the cells move is read by k-nearest-neighbour label transfer: a
    :class:`~sklearn.neighbors.KNeighborsClassifier` fitted on the unsteered representation of all cells with
    labels ``obs[groupby]`` predicts each steered cell's label before and after the move. Each steered cell's own
    unsteered position stays in the reference, so a small move keeps one of its votes.

    Parameters
    ----------
    {adata}
    feature
        The feature to steer (a number, or a string such as ``"17"``).
    value
        Set the activation to this (>= 0).
    scale
        Multiply each cell's activation (or, with ``target``, the target's mean activation) by this (>= 0).
    target
        ``(column, label)``: use the mean activation of the cells with that label in ``obs[column]``.
    cells
        The cells to steer: a boolean mask over all cells, row numbers, ``obs_names``, or a ``(column, label)``
        pair (the label may be a list of labels); default all cells.
    {key}
    decoder
        A function from a cells x dimensions float32 array of the representation to a cells x genes array of
        expression (one column per gene of ``adata``, or a DataFrame with genes as columns).
    groupby
        A categorical ``obs`` column for label transfer (cell types); without it only genes are reported.
    n_neighbors
        Neighbours of the label transfer.
    store_rep
        Also store the representation with the steered cells moved (all cells) in ``obsm["X_<key_added>"]``.
    key_added
        Name of the result, ``uns[key_added]`` (default ``"<key>_steer"``).
    {copy}

    {copy_returns}
    Writes ``uns[key_added]`` with

    - ``params``: the feature, how it was steered (``mode`` ``"value"``, ``"scale"`` or ``"target"``, the number
      set), ``key``, ``use_rep``, ``groupby``, ``n_neighbors`` and ``genes_from`` (the map used to reach genes);
    - ``cells``: row numbers of the steered cells;
    - ``summary``: ``n_cells``, mean activation ``activation_before`` and ``activation_after``, ``shift`` (mean
      distance moved in the representation) and, with ``groupby``, ``neighbour_distance`` (median distance of
      the steered cells to their ``n_neighbors``-th neighbour before steering: a move much shorter than this
      changes little);
    - with ``groupby``: ``transfer``, counts of the predicted labels of the steered cells (rows: labels; columns
      ``before`` and ``after``) and ``predictions`` (per steered cell);
    - when genes can be reached: ``genes``, the mean change of each gene over the steered cells (``delta``),
      largest change first.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> csk.tl.rank_features_groups(adata, "bulk_labels")
    >>> nk_feature = int(adata.uns["rank_features_groups"]["names"]["CD56+ NK"][0])  # NK cells' top feature
    >>> nk, cd34 = ("bulk_labels", "CD56+ NK"), ("bulk_labels", "CD34+")
    >>> csk.tl.steer(adata, nk_feature, target=nk, scale=1.5, cells=cd34, groupby="bulk_labels")
    >>> result = adata.uns["sae_steer"]
    >>> int(result["transfer"]["before"].sum()), result["genes"].shape, result["params"]["genes_from"]
    (13, (765, 1), "varm['PCs']")
    """
    if key_added is not None:
        get.check_key(key_added)
    get.codes(adata, key)  # the activations are what steering changes: name them first when missing
    stored = get.sae(adata, key)
    model = stored.model
    index = stored.feature_index(feature)
    codes = stored.codes
    key_added = f"{key}_steer" if key_added is None else key_added
    if key_added == key:
        raise ValueError(f"key_added={key_added!r} would overwrite the SAE itself; choose another name.")
    if target is not None and value is not None:
        raise ValueError(
            "value= and target= both set the activation; pass one (target=(column, label) with scale=1.5 sets it "
            "to 1.5 x that population's mean)."
        )
    if value is None and scale is None and target is None:
        raise ValueError(
            "Say how to steer: value= (set the activation), scale= (multiply each cell's own activation) or "
            "target=(column, label) (set it to that population's mean, times scale= when given)."
        )
    rows = select_cells(adata, cells)
    before = codes[rows][:, index].toarray().ravel().astype(np.float64)
    mode = "value" if value is not None else "target" if target is not None else "scale"
    target_scale = 1.0
    if target is not None:
        if not isinstance(target, tuple) or len(target) != 2:
            raise TypeError(f"target={target!r} must be a (column, label) pair, such as ('bulk_labels', 'CD34+').")
        reference = codes[select_cells(adata, target, "target")][:, index].toarray().mean()
        if scale is not None:
            _check_number("scale", scale)
        target_scale = target_scale if scale is None else float(scale)
        value, scale = float(reference) * target_scale, None
        if reference == 0:
            logger.warning("Feature %d never fires in the cells of %r: steering sets it to 0.", index, target)
    after = steered_activations(before, value=value, scale=scale)

    data, rep = model_input(adata, model, f"the SAE under key={key!r}", "it no longer matches the representation.")
    direction = model.W_dec.detach().double().numpy()[index] / float(model.input_scale)
    shift = steering_shift(before, after, direction)
    rep_before = rep[rows]
    rep_before = rep_before.toarray() if sparse.issparse(rep_before) else np.asarray(rep_before, dtype=np.float64)
    rep_after = rep_before + shift

    if decoder is not None:
        if not callable(decoder):
            raise TypeError(f"decoder must be a function from representation to expression, got {decoder!r}.")
        genes = decoded_genes(decoder, rep_before, rep_after, adata.var_names).to_frame("delta")
        genes.index.name, genes_from = "gene", "decoder"
    else:
        genes, genes_from = _linear_genes(adata, data, stored, shift)
    summary = {
        "n_cells": len(rows),
        "activation_before": float(before.mean()),
        "activation_after": float(after.mean()),
        "shift": float(np.linalg.norm(shift, axis=1).mean()),
    }
    transfer = predictions = None
    if groupby is not None:
        transfer, predictions, summary["neighbour_distance"] = _label_transfer(
            adata, rep, rows, rep_before, rep_after, groupby, n_neighbors
        )

    params = {
        "feature": index,
        "mode": mode,
        "key": key,
        "use_rep": data.use_rep,
        "n_neighbors": int(n_neighbors),
        "genes_from": genes_from,
    }
    params |= {"value": float(value)} if value is not None else {"scale": float(scale)}
    if target is not None:
        params |= {"target": [str(target[0]), str(target[1])], "scale": target_scale}
    if groupby is not None:
        params["groupby"] = groupby
    result = {"params": params, "cells": rows.astype(np.int64), "summary": summary}
    if transfer is not None:
        result |= {"transfer": transfer, "predictions": predictions}
    if genes is not None:
        result["genes"] = _rank_genes(genes)
    else:
        logger.info(
            "No map from %s to genes and no decoder: only the move in the representation is reported.", data.name
        )

    # Everything succeeded: only now touch the user's object.
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = result
    if store_rep:
        moved = rep.toarray() if sparse.issparse(rep) else np.array(rep, dtype=np.float32)
        moved[rows] = rep_after
        adata.obsm[f"X_{key_added}"] = moved.astype(np.float32)
    return adata if copy else None


def _label_transfer(
    adata: AnnData,
    rep: Any,
    rows: np.ndarray,
    rep_before: np.ndarray,
    rep_after: np.ndarray,
    groupby: str,
    n_neighbors: int,
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Predicted labels of the steered cells before and after the move, from all cells' unsteered positions."""
    from sklearn.neighbors import KNeighborsClassifier

    groups = get.groups(adata, groupby)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer):
        raise TypeError(f"n_neighbors={n_neighbors!r} must be a whole number.")
    if not 1 <= n_neighbors <= adata.n_obs:
        raise ValueError(f"n_neighbors={n_neighbors} must be between 1 and the number of cells, {adata.n_obs}.")
    labels = groups.astype(str).to_numpy()
    classifier = KNeighborsClassifier(n_neighbors=int(n_neighbors)).fit(rep, labels)
    distances, _ = classifier.kneighbors(rep_before)
    categories = [str(c) for c in groups.cat.categories]
    predictions = pd.DataFrame(
        {
            "before": pd.Categorical(classifier.predict(rep_before), categories=categories),
            "after": pd.Categorical(classifier.predict(rep_after), categories=categories),
        },
        index=adata.obs_names[rows],
    )
    transfer = pd.DataFrame(
        {when: predictions[when].value_counts().reindex(categories).astype(np.int64) for when in ("before", "after")}
    )
    transfer.index.name = groupby
    return transfer, predictions, float(np.median(distances[:, -1]))
