"""``tl.absorption``: how often a parent feature stays silent while a child feature stands in for it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ._shared import Truth, correlations, get_tree, get_truth, unit_rows

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
#: Columns of the table of the truth mode (``truth=``).
TREE_COLUMNS = [
    "parent",
    "child",
    "parent_program",
    "child_program",
    "parent_feature",
    "parent_r",
    "child_feature",
    "child_r",
    "n_parent_on",
    "n_parent_silent",
    "n_cells",
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


def tree_absorption_scores(
    codes: np.ndarray | sparse.spmatrix,
    truth: np.ndarray,
    hierarchy: Mapping[int, Sequence[int]],
    *,
    names: Sequence[str] | None = None,
    W_dec: np.ndarray | None = None,
    threshold: float = 0.0,
) -> pd.DataFrame:
    """Feature absorption of each true parent programme into its children (the array core of the truth mode).

    Parameters
    ----------
    codes
        Activations, cells x features.
    truth
        True programme activities, cells x programmes; a programme is on in a cell where its value is not zero.
    hierarchy
        ``{parent: [children]}`` as column numbers of ``truth``.
    names
        A label for each column of ``truth`` (default: the column numbers); the table's ``parent`` and ``child``.
    W_dec
        Decoder, features x dimensions, for the ``decoder_cosine`` column (NaN without it).
    threshold
        A feature fires in a cell where its activation is above this.

    Returns
    -------
    The table described in :func:`absorption` (mode ``truth=``).

    Examples
    --------
    Programme 0 is the parent of programmes 1 and 2; feature 0 follows the parent but is silent in cell 1,
    where feature 1 (programme 1's) fires: 1 of the 2 cells in which programme 0 is on and feature 1 fires.

    >>> import numpy as np
    >>> from cellsae_kit.tl._absorption import tree_absorption_scores
    >>> truth = np.array([[1.0, 1, 0], [1, 1, 0], [1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0]])
    >>> codes = np.array([[2.0, 1, 0], [0, 1, 0], [2, 0, 1], [2, 0, 1], [0, 0, 0], [0, 0, 0]])
    >>> table = tree_absorption_scores(codes, truth, {0: [1, 2]})
    >>> table[["child", "child_feature", "n_cells", "n_absorbed", "absorption"]]
                child  child_feature  n_cells  n_absorbed  absorption
    0               1              1        2           1        0.50
    1               2              2        2           0        0.00
    2  (all children)             -1        4           1        0.25
    """
    codes = sparse.csr_matrix(codes, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim != 2 or truth.shape[0] != codes.shape[0]:
        raise ValueError(
            f"truth has shape {truth.shape} but codes has {codes.shape[0]} cells; pass cells x programmes, one row "
            "per cell."
        )
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold={threshold} must be a finite activation >= 0 (0: any activation counts).")
    names = [str(i) for i in range(truth.shape[1])] if names is None else [str(n) for n in names]
    hierarchy = _check_program_tree(hierarchy, truth.shape[1])
    used = sorted({p for parent, children in hierarchy.items() for p in (parent, *children)})
    column = {program: i for i, program in enumerate(used)}
    r = correlations(codes, truth[:, used])  # features x used programmes, as tl.recovery correlates them
    fires = codes.tocsc() > threshold
    unit = None
    if W_dec is not None:
        W_dec = np.asarray(W_dec, dtype=np.float64)
        if W_dec.shape[0] != codes.shape[1]:
            raise ValueError(f"W_dec has {W_dec.shape[0]} rows but there are {codes.shape[1]} features.")
        unit = unit_rows(W_dec)

    def fired(feature: int) -> np.ndarray:
        return fires[:, feature].toarray().ravel()

    rows = []
    for parent, children in hierarchy.items():
        r_parent = r[:, column[parent]]
        parent_feature = int(np.argmax(r_parent))
        if not r_parent[parent_feature] > 0:
            raise ValueError(
                f"No feature's activations correlate positively with the parent programme {names[parent]!r}; "
                "its feature (and so absorption) is undefined. Train an SAE with more features or a lower sparsity."
            )
        on = truth[:, parent] != 0
        silent = ~fired(parent_feature)
        any_child = np.zeros(len(on), dtype=bool)
        base = {"parent": names[parent], "parent_program": parent, "parent_feature": parent_feature}
        base["parent_r"] = float(r_parent[parent_feature])
        for child in children:
            r_child = r[:, column[child]].copy()
            r_child[parent_feature] = -np.inf  # the parent's own feature cannot stand in for itself
            child_feature = int(np.argmax(r_child))
            ok = r_child[child_feature] > 0
            child_fires = fired(child_feature) if ok else np.zeros(len(on), dtype=bool)
            any_child |= child_fires
            scope = on & (truth[:, child] != 0)
            counted = on & child_fires
            rows.append(
                base
                | {
                    "child": names[child],
                    "child_program": child,
                    "child_feature": child_feature if ok else -1,
                    "child_r": float(r_child[child_feature]) if ok else np.nan,
                    "n_parent_on": int(scope.sum()),
                    "n_parent_silent": int((scope & silent).sum()),
                    **_rate(counted, silent),
                    "decoder_cosine": float(unit[parent_feature] @ unit[child_feature])
                    if unit is not None and ok
                    else np.nan,
                }
            )
        rows.append(
            base
            | {
                "child": ALL_CHILDREN,
                "child_program": -1,
                "child_feature": -1,
                "child_r": np.nan,
                "n_parent_on": int(on.sum()),
                "n_parent_silent": int((on & silent).sum()),
                **_rate(on & any_child, silent),
                "decoder_cosine": np.nan,
            }
        )
    table = pd.DataFrame(rows, columns=TREE_COLUMNS)
    for name in ("parent_program", "child_program", "parent_feature", "child_feature"):
        table[name] = table[name].astype(np.int64)
    for name in ("n_parent_on", "n_parent_silent", "n_cells", "n_absorbed"):
        table[name] = table[name].astype(np.int64)
    return table


def _rate(counted: np.ndarray, silent: np.ndarray) -> dict[str, float | int]:
    n_cells, n_absorbed = int(counted.sum()), int((counted & silent).sum())
    return {"n_cells": n_cells, "n_absorbed": n_absorbed, "absorption": n_absorbed / n_cells if n_cells else np.nan}


def _check_program_tree(hierarchy: object, n_programs: int) -> dict[int, list[int]]:
    """Check ``{parent programme: [child programmes]}`` given as column numbers of the truth."""
    if not isinstance(hierarchy, Mapping) or not hierarchy:
        raise TypeError(
            "hierarchy must be a non-empty dict {parent programme: [child programmes]}, such as {0: [4, 5, 6]}, "
            "naming columns of the truth."
        )
    checked = {}
    for parent, children in hierarchy.items():
        if isinstance(children, str) or not isinstance(children, Sequence | np.ndarray | pd.Index):
            raise TypeError(f"hierarchy[{parent!r}] must be a list of child programmes, got {children!r}.")
        programs = [parent, *children]
        bad = [p for p in programs if isinstance(p, bool) or not isinstance(p, int | np.integer)]
        bad += [p for p in programs if p not in bad and not 0 <= p < n_programs]
        if bad:
            raise ValueError(
                f"hierarchy names programmes {bad} that are not columns of the truth (0 to {n_programs - 1})."
            )
        if not len(children):
            raise ValueError(f"hierarchy[{parent!r}] lists no children; give the programmes under {parent!r}.")
        if parent in children or len(set(children)) < len(children):
            raise ValueError(f"hierarchy[{parent!r}] lists the parent itself or a child twice: {list(children)}.")
        checked[int(parent)] = [int(c) for c in children]
    return checked


@doc_params
def absorption(
    adata: AnnData,
    key: str = "sae",
    *,
    groupby: str | None = None,
    hierarchy: Mapping[str, Sequence[str]] | Mapping[int, Sequence[int]] | None = None,
    truth: Truth | None = None,
    threshold: float = 0.0,
    copy: bool = False,
) -> AnnData | None:
    """Measure feature absorption: a parent feature that stays silent where a child feature fires instead.

    Chanin et al. ("A is for Absorption", arXiv 2409.14507) found that an SAE feature which looks like a clean
    detector of a general concept (the parent) fails to fire on some of its instances, because a more specific
    feature (a child) has absorbed the parent's direction there; sparsity rewards this, and it makes features
    look more reliable than they are. For cells the hierarchy is a lineage and its subtypes (T cells over CD4+
    and CD8+ T cells). "Fires" means an activation above ``threshold``. Two modes give the hierarchy:

    **Groups of cells** (``groupby=`` and ``hierarchy=``), for labelled data:

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
    altogether); ``n_parent_silent`` counts them together with the absorbed ones.

    **True programmes** (``truth=``), for simulated data whose truth records the tree, as
    :func:`cellsae_kit.datasets.simulate` with ``design="hierarchy"`` does: ``truth`` names the true programmes
    (``"true_programs"``), and the tree is read from ``uns["simulation"]["tree"]`` (each lineage's programme is
    the parent of its subtypes' programmes), or given as ``hierarchy={{parent: [children]}}`` in column numbers of
    the truth. A programme is on in a cell where its true value is not zero (the simulation multiplies a
    switched-off programme by exactly zero). The measure is taken against the truth, not against labels:

    1. The parent feature is the feature whose activations correlate best (largest Pearson r over all cells,
       as :func:`cellsae_kit.tl.recovery` correlates them) with the true parent programme.
    2. Each child's feature is, among the other features, the one correlating best with the child programme.
    3. Absorption of a child = among the cells where the parent programme is truly on and the child's feature
       fires, the fraction where the parent feature is silent: ``n_absorbed / n_cells``. The
       ``"(all children)"`` row pools the children: among the cells where the parent is on and any child's
       feature fires, the fraction where the parent feature is silent (NaN when no such cell exists).

    This follows Chanin et al. in spirit: the reference for the parent is the known parent programme (their
    ground-truth label), and a cell counts as absorbed only where a child's feature stands in for the silent
    parent; ``n_parent_silent`` also counts the cells the SAE misses altogether. Neither mode applies Chanin et
    al.'s filter on the absorbing feature's direction (against a linear probe of the parent);
    ``decoder_cosine`` reports that overlap for each child instead.

    The truth mode was added as an option of this function rather than a new one so that one name answers one
    question, with the same table layout (a row per child and a summary row per parent) and the same ``uns``
    slot; ``truth=`` is named as in :func:`cellsae_kit.tl.recovery`.

    Parameters
    ----------
    {adata}
    {key}
    groupby
        A categorical ``obs`` column holding the child groups (and possibly parents). Leave out with ``truth``.
    hierarchy
        With ``groupby``: ``{{parent: [children]}}``, each parent's child groups, labels of ``obs[groupby]`` (a
        parent need not be a label). With ``truth``: ``{{parent: [children]}}`` as column numbers of the truth;
        default: the simulated tree.
    truth
        An ``obsm`` key of the true programmes (cells x programmes; ``"true_programs"`` of a simulation), or
        such an array or DataFrame (then ``hierarchy`` is needed).
    threshold
        A feature fires where its activation is above this (default: any non-zero activation).
    {copy}

    {copy_returns}
    Writes ``uns[key]["absorption"]`` and ``uns[key]["params"]["absorption"]`` (the mode's arguments).
    With ``groupby``: one row per parent and child plus a ``"(all children)"`` row per parent, with columns
    ``parent``, ``child``, ``parent_feature``, ``parent_f1``, ``child_feature`` (-1 in the summary row),
    ``child_f1``, ``n_cells`` (cells of the child, or of the parent), ``n_parent_silent`` (of those, cells where
    the parent feature is silent), ``n_absorbed`` (of those, cells where the child feature fires),
    ``absorption`` (``n_absorbed / n_cells``) and ``decoder_cosine`` (cosine between the two features' decoder
    directions; an absorbing feature usually carries part of the parent's direction).
    With ``truth``: the same layout (the summary rows are the table per parent) with columns ``parent`` and
    ``child`` (the lineage and subtype names of a simulation, else the programme numbers), ``parent_program``
    and ``child_program`` (columns of the truth; -1 in the summary row), ``parent_feature``, ``parent_r``,
    ``child_feature`` (-1 in the summary row, or where no feature correlates positively with the child),
    ``child_r``, ``n_parent_on`` (cells where the parent and the child programme are on; in the summary row,
    where the parent is), ``n_parent_silent`` (of those, cells where the parent feature is silent), ``n_cells``
    (cells where the parent is on and the child's feature, or any child's in the summary row, fires),
    ``n_absorbed`` (of those, cells where the parent feature is silent), ``absorption`` and ``decoder_cosine``.

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

    On a simulated hierarchy of 2 lineages with 2 subtypes each, against the true programmes:

    >>> sim = csk.datasets.simulate(1000, 8, design="hierarchy", n_lineages=2, n_subtypes=2, n_genes=100)
    >>> csk.tl.embed(sim, "pca", 10)
    >>> csk.tl.sae(sim, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    >>> csk.tl.absorption(sim, truth="true_programs")
    >>> table = sim.uns["sae"]["absorption"]
    >>> table.loc[table["child"] == "(all children)", ["parent", "parent_program"]]
          parent  parent_program
    2  lineage_0               0
    5  lineage_1               1
    """
    codes = get.codes(adata, key)
    stored = get.sae(adata, key)
    weights = stored.entry.get("weights")
    W_dec = weights.get("W_dec") if isinstance(weights, Mapping) else None
    if truth is not None:
        if groupby is not None:
            raise ValueError(
                "Pass either groupby= and hierarchy= (a hierarchy of groups of cells) or truth= (true programmes "
                "and their tree), not both."
            )
        values, names, label = get_truth(adata, truth)
        if hierarchy is None:
            if not isinstance(truth, str):
                raise TypeError(
                    "truth= is an array, so the simulation's tree cannot be matched to its columns; pass "
                    "hierarchy={parent programme: [child programmes]} as column numbers, or an obsm key as truth=."
                )
            tree = get_tree(adata, values.shape[1])
            hierarchy = {}
            for program, rows in tree.groupby("lineage_program", sort=False):
                hierarchy[int(program)] = rows["subtype_program"].astype(int).tolist()
            names = list(names)
            for subtype, row in tree.iterrows():
                names[int(row["lineage_program"])] = str(row["lineage"])
                names[int(row["subtype_program"])] = str(subtype)
        table = tree_absorption_scores(codes, values, hierarchy, names=names, W_dec=W_dec, threshold=threshold)
        params = {"truth": label, "threshold": float(threshold)}
    else:
        if groupby is None:
            raise TypeError(
                "absorption needs a hierarchy: groupby= and hierarchy= for groups of cells, or truth= for the true "
                "programmes of a simulation (datasets.simulate(..., design='hierarchy') records the tree)."
            )
        groups = get.groups(adata, groupby)
        labels = groups.astype(str).to_numpy()
        present = set(labels)
        # Empty categories cannot be children: they have no cells to be absorbed in.
        hierarchy = check_hierarchy(hierarchy, [str(c) for c in groups.cat.categories if str(c) in present], groupby)
        table = absorption_scores(codes, labels, hierarchy, W_dec=W_dec, threshold=threshold)
        params = {"groupby": groupby, "threshold": float(threshold)}
    adata = adata.copy() if copy else adata
    adata.uns[key]["absorption"] = table
    adata.uns[key].setdefault("params", {})["absorption"] = params
    return adata if copy else None
