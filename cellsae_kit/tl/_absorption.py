"""``tl.absorption``: how often a parent feature stays silent while a child feature stands in for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ._shared import unit_rows

#: ``child`` of the row that sums a parent's children.
ALL_CHILDREN = "(all children)"
COLUMNS = [
    "parent",
    "child",
    "parent_feature",
    "parent_f1",
    "child_feature",
    "child_f1",
    "n_cells",
    "n_parent_silent",
    "n_absorbed",
    "absorption",
    "decoder_cosine",
]


def f1_scores(active: sparse.csc_matrix, is_in: np.ndarray) -> np.ndarray:
    """F1 score of "the feature fires" as a classifier of the cells in ``is_in``, for every feature.

    Parameters
    ----------
    active
        Cells x features, 1 where a feature fires.
    is_in
        Boolean mask of the cells of the group.

    Returns
    -------
    ``2 TP / (2 TP + FP + FN)`` per feature (0 for a feature that never fires in the group).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._absorption import f1_scores
    >>> active = sparse.csc_matrix(np.array([[1, 0], [1, 1], [0, 1]]))
    >>> f1_scores(active, np.array([True, True, False])).round(3)
    array([1. , 0.5])
    """
    fires = np.asarray(active.sum(axis=0)).ravel()
    tp = np.asarray(active[np.flatnonzero(is_in)].sum(axis=0)).ravel()
    fp = fires - tp
    fn = is_in.sum() - tp
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


def check_hierarchy(hierarchy: object, categories: Sequence[str], groupby: str) -> dict[str, list[str]]:
    """Check ``{parent: [children]}`` against the groups of ``obs[groupby]``; return it with string labels."""
    if not isinstance(hierarchy, Mapping) or not hierarchy:
        raise TypeError(
            "hierarchy must be a non-empty dict {parent: [children]}, such as {'T cell': ['CD4+ T', 'CD8+ T']}, "
            f"whose children are groups of adata.obs[{groupby!r}]."
        )
    known = set(categories)
    checked = {}
    for parent, children in hierarchy.items():
        if isinstance(children, str) or not isinstance(children, Sequence | np.ndarray | pd.Index):
            raise TypeError(f"hierarchy[{parent!r}] must be a list of child groups, got {children!r}.")
        children = [str(c) for c in children]
        if not children:
            raise ValueError(f"hierarchy[{parent!r}] lists no children; give the groups that make up {parent!r}.")
        unknown = [c for c in children if c not in known]
        if unknown:
            raise ValueError(
                f"The children {unknown} of {parent!r} are not groups of adata.obs[{groupby!r}]; its groups are "
                f"{', '.join(map(repr, categories))}."
            )
        if str(parent) in children or len(set(children)) < len(children):
            raise ValueError(f"hierarchy[{parent!r}] lists the parent itself or a child twice: {children}.")
        checked[str(parent)] = children
    return checked


def absorption_scores(
    codes: np.ndarray | sparse.spmatrix,
    labels: Sequence[str] | np.ndarray,
    hierarchy: Mapping[str, Sequence[str]],
    *,
    W_dec: np.ndarray | None = None,
    threshold: float = 0.0,
) -> pd.DataFrame:
    """Feature absorption for each parent and child group (the array core of :func:`absorption`).

    Parameters
    ----------
    codes
        Activations, cells x features.
    labels
        Group of each cell.
    hierarchy
        ``{parent: [children]}``, children being labels; see :func:`absorption` for the rule.
    W_dec
        Decoder, features x dimensions, for the ``decoder_cosine`` column (NaN without it).
    threshold
        A feature fires in a cell where its activation is above this.

    Returns
    -------
    The table described in :func:`absorption`.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._absorption import absorption_scores
    >>> codes = np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])  # feature 0 silent in cell 1
    >>> table = absorption_scores(codes, ["a", "a", "a", "x"], {"A": ["a"]})
    >>> table[["parent", "child", "parent_feature", "child_feature", "absorption"]].round(3)
      parent           child  parent_feature  child_feature  absorption
    0      A               a               0              1       0.333
    1      A  (all children)               0             -1       0.333
    """
    labels = np.asarray(labels).astype(str)
    codes = sparse.csc_matrix(codes)
    if codes.shape[0] != len(labels):
        raise ValueError(f"codes has {codes.shape[0]} cells but labels has {len(labels)}; pass one label per cell.")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold={threshold} must be a finite activation >= 0 (0: any activation counts).")
    categories = list(dict.fromkeys(labels))
    hierarchy = check_hierarchy(hierarchy, categories, "groupby")
    active = sparse.csc_matrix(codes > threshold, dtype=np.float64)
    unit = None
    if W_dec is not None:
        W_dec = np.asarray(W_dec, dtype=np.float64)
        if W_dec.shape[0] != codes.shape[1]:
            raise ValueError(f"W_dec has {W_dec.shape[0]} rows but there are {codes.shape[1]} features.")
        unit = unit_rows(W_dec)
    rows = []
    for parent, children in hierarchy.items():
        # A parent that is itself a label (cells annotated only to the coarse level) counts with its children.
        members = children + ([parent] if parent in categories else [])
        in_parent = np.isin(labels, members)
        parent_f1 = f1_scores(active, in_parent)
        parent_feature = int(np.argmax(parent_f1))
        if parent_f1[parent_feature] == 0:
            raise ValueError(
                f"No feature fires in the cells of {parent!r} (above threshold={threshold}); absorption is undefined."
            )
        silent = np.asarray(active[:, parent_feature].todense()).ravel() == 0
        total = {"n_cells": 0, "n_parent_silent": 0, "n_absorbed": 0}
        for child in children:
            in_child = labels == child
            child_f1 = f1_scores(active, in_child)
            child_f1[parent_feature] = -1.0  # the parent's own feature cannot stand in for itself
            child_feature = int(np.argmax(child_f1))
            fires = np.asarray(active[:, child_feature].todense()).ravel() > 0
            counts = {
                "n_cells": int(in_child.sum()),
                "n_parent_silent": int((in_child & silent).sum()),
                "n_absorbed": int((in_child & silent & fires).sum()),
            }
            total = {name: total[name] + value for name, value in counts.items()}
            cosine = np.nan if unit is None else float(unit[parent_feature] @ unit[child_feature])
            rows.append(
                {
                    "parent": parent,
                    "child": child,
                    "parent_feature": parent_feature,
                    "parent_f1": float(parent_f1[parent_feature]),
                    "child_feature": child_feature,
                    "child_f1": float(max(child_f1[child_feature], 0.0)),
                    **counts,
                    "absorption": counts["n_absorbed"] / counts["n_cells"],
                    "decoder_cosine": cosine,
                }
            )
        # Cells labelled only with the parent have no child feature: they count in the denominator only.
        total["n_cells"] = int(in_parent.sum())
        total["n_parent_silent"] = int((in_parent & silent).sum())
        rows.append(
            {
                "parent": parent,
                "child": ALL_CHILDREN,
                "parent_feature": parent_feature,
                "parent_f1": float(parent_f1[parent_feature]),
                "child_feature": -1,
                "child_f1": np.nan,
                **total,
                "absorption": total["n_absorbed"] / total["n_cells"],
                "decoder_cosine": np.nan,
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("parent_feature", "child_feature", "n_cells", "n_parent_silent", "n_absorbed"):
        table[column] = table[column].astype(np.int64)
    return table


@doc_params
def absorption(
    adata: AnnData,
    key: str = "sae",
    *,
    groupby: str,
    hierarchy: Mapping[str, Sequence[str]],
    threshold: float = 0.0,
    copy: bool = False,
) -> AnnData | None:
    """Measure feature absorption: a parent feature that stays silent where a child feature fires instead.

    Chanin et al. ("A is for Absorption", arXiv 2409.14507) found that an SAE feature which looks like a clean
    detector of a general concept (the parent) fails to fire on some of its instances, because a more specific
    feature (a child) has absorbed the parent's direction there; sparsity rewards this, and it makes features
    look more reliable than they are. For cells the hierarchy is a lineage and its subtypes (T cells over CD4+
    and CD8+ T cells). The rule, with "fires" meaning an activation above ``threshold``:

    1. The parent's cells are the cells of its children in ``obs[groupby]``, plus the cells labelled with the
       parent itself when it is a group there.
    2. The parent feature is the feature with the highest F1 score of "fires" as a classifier of the parent's
       cells against all other cells (ties: the lowest feature number).
    3. Each child's feature is, among the other features, the one with the highest F1 score for that child's
       cells against all other cells (siblings included).
    4. The absorption of a child is the fraction of the child's cells in which the parent feature is silent
       while the child's feature fires. The row ``child="(all children)"`` sums the absorbed cells of all children
       over all of the parent's cells (cells labelled only with the parent count in the denominator).

    Cells where both the parent and the child feature are silent are not absorption (the SAE misses them
    altogether); ``n_parent_silent`` counts them together with the absorbed ones. Chanin et al. also require the
    absorbing feature to carry part of the parent's direction (measured against a linear probe of the parent);
    no such filter is applied here, and ``decoder_cosine`` reports that overlap for each child instead.

    Parameters
    ----------
    {adata}
    {key}
    groupby
        A categorical ``obs`` column holding the child groups (and possibly parents).
    hierarchy
        ``{{parent: [children]}}``: each parent's child groups, labels of ``obs[groupby]``. A parent need not be
        a label.
    threshold
        A feature fires where its activation is above this (default: any non-zero activation).
    {copy}

    {copy_returns}
    Writes ``uns[key]["absorption"]``, one row per parent and child plus a ``"(all children)"`` row per parent,
    with columns ``parent``, ``child``, ``parent_feature``, ``parent_f1``, ``child_feature`` (-1 in the
    summary row), ``child_f1``, ``n_cells`` (cells of the child, or of the parent), ``n_parent_silent`` (of
    those, cells where the parent feature is silent), ``n_absorbed`` (of those, cells where the child feature
    fires), ``absorption`` (``n_absorbed / n_cells``) and ``decoder_cosine`` (cosine between the two features'
    decoder directions; an absorbing feature usually carries part of the parent's direction).

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> t_cells = [
    ...     "CD4+/CD25 T Reg",
    ...     "CD4+/CD45RA+/CD25- Naive T",
    ...     "CD4+/CD45RO+ Memory",
    ...     "CD8+ Cytotoxic T",
    ...     "CD8+/CD45RA+ Naive Cytotoxic",
    ... ]
    >>> csk.tl.absorption(adata, groupby="bulk_labels", hierarchy={{"T cell": t_cells}})
    >>> table = adata.uns["sae"]["absorption"]
    >>> table.shape, int(table["n_cells"].iloc[-1]), bool(table["absorption"].between(0, 1).all())
    ((6, 11), 192, True)
    """
    codes = get.codes(adata, key)
    stored = get.sae(adata, key)
    groups = get.groups(adata, groupby)
    labels = groups.astype(str).to_numpy()
    present = set(labels)
    # Empty categories cannot be children: they have no cells to be absorbed in.
    hierarchy = check_hierarchy(hierarchy, [str(c) for c in groups.cat.categories if str(c) in present], groupby)
    weights = stored.entry.get("weights")
    W_dec = weights.get("W_dec") if isinstance(weights, Mapping) else None
    table = absorption_scores(codes, labels, hierarchy, W_dec=W_dec, threshold=threshold)
    adata = adata.copy() if copy else adata
    adata.uns[key]["absorption"] = table
    adata.uns[key].setdefault("params", {})["absorption"] = {"groupby": groupby, "threshold": float(threshold)}
    return adata if copy else None
