"""Array cores and checks that several tools share (each tool module imports from here, never from a sibling).

The expression-matched null (``_null``) and the term clusters (``_terms``) are shared layers of the same kind.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ..models import DENSE_THRESHOLD, check_data
from ._input import get_input

logger = logging.getLogger("cellsae_kit")
# Float64 elements held at once by a chunk (128 MB): bounds memory whatever the numbers of cells and genes.
CHUNK_ELEMENTS = 2**24


class Match(NamedTuple):
    """A one-to-one matching of the features of run ``a`` to those of run ``b``.

    ``a`` and ``b`` are feature numbers (``a`` increasing), ``score`` the cosine of the decoder directions
    (:func:`match_features`) or the Pearson r of the activations (:func:`match_activations`) of each pair.
    Features of the larger run beyond the smaller run's size stay unmatched.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._shared import match_features
    >>> match_features(np.eye(2), np.eye(2)[::-1]).b
    array([1, 0])
    """

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray


def unit_rows(W: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (all-zero rows stay zero), in float64."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return np.divide(W, norms, out=np.zeros_like(W), where=norms > 0)


def hungarian(similarity: np.ndarray) -> Match:
    from scipy.optimize import linear_sum_assignment  # imported here: scipy.optimize is large

    a, b = linear_sum_assignment(similarity, maximize=True)
    return Match(a, b, similarity[a, b])


def match_features(W_a: np.ndarray, W_b: np.ndarray) -> Match:
    """Match the features of two SAEs by the direction of their decoder rows (Hungarian assignment).

    The decoder rows are scaled to unit length and the one-to-one matching that maximises the summed cosine
    similarity is found with :func:`scipy.optimize.linear_sum_assignment`, as in Paulo & Belrose (2025). The
    sign matters: an SAE feature and its negative are different features (activations are never negative).

    Parameters
    ----------
    W_a, W_b
        Decoder matrices, features x input dimensions, with the same number of input dimensions.

    Returns
    -------
    The matched pairs and their cosines (:class:`Match`).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._shared import match_features
    >>> W = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    >>> m = match_features(W, W[[2, 0, 1]])
    >>> m.b, m.score
    (array([1, 2, 0]), array([1., 1., 1.]))
    """
    W_a, W_b = np.asarray(W_a), np.asarray(W_b)
    if W_a.ndim != 2 or W_b.ndim != 2 or W_a.shape[1] != W_b.shape[1]:
        raise ValueError(
            f"The decoders have shapes {W_a.shape} and {W_b.shape}; both must be features x input dimensions with "
            "the same input dimensions (SAEs trained on the same representation)."
        )
    return hungarian(unit_rows(W_a) @ unit_rows(W_b).T)


def check_seeds(n: object, name: str) -> int:
    """Check a number of training runs (at least two, to have something to compare)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"{name}={n!r} must be an integer of at least 2: stability compares runs with each other.")
    return int(n)


def correlations(codes: np.ndarray | sparse.spmatrix, truth: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Pearson r between every column of ``codes`` and every column of ``truth`` (features x variables).

    Sparse matrices stay sparse (the cross-products are sparse products). A constant column (a dead SAE
    feature) has r = 0 with everything.

    Parameters
    ----------
    codes
        Cells x features, dense or sparse.
    truth
        Cells x variables, dense or sparse (the activations of another SAE, say).

    Returns
    -------
    Features x variables, float64, in [-1, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._shared import correlations
    >>> correlations(np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]), np.array([[3.0], [2.0], [1.0]]))
    array([[-1.],
           [ 0.]])
    """
    n = codes.shape[0]
    (mean_a, sd_a), (mean_b, sd_b) = moments(codes), moments(truth)
    a, b = (
        sparse.csr_matrix(m, dtype=np.float64) if sparse.issparse(m) else np.asarray(m, np.float64)
        for m in (codes, truth)
    )
    cross = a.T @ b
    cross = cross.toarray() if sparse.issparse(cross) else np.asarray(cross)
    covariance = cross / n - np.outer(mean_a, mean_b)
    scale = np.outer(sd_a, sd_b)
    r = np.divide(covariance, scale, out=np.zeros_like(covariance), where=scale > 0)
    return np.clip(r, -1.0, 1.0)


def as_float(X: np.ndarray | sparse.spmatrix) -> np.ndarray | sparse.csr_matrix:
    return sparse.csr_matrix(X, dtype=np.float64) if sparse.issparse(X) else np.asarray(X, dtype=np.float64)


def as_matrix(X: Any) -> np.ndarray | sparse.csr_matrix:
    # CSR slices rows and columns quickly without a copy of the whole matrix; other sparse formats are converted.
    return (X if X.format == "csr" else sparse.csr_matrix(X)) if sparse.issparse(X) else np.asarray(X)


def gene_chunks(expr: Any, n_features: int) -> Iterator[tuple[slice, Any]]:
    """Yield column blocks of ``expr`` (float64) small enough that a block times the features fits a chunk."""
    n_cells, n_genes = expr.shape
    width = max(1, CHUNK_ELEMENTS // max(n_features, 1 if sparse.issparse(expr) else n_cells))
    for start in range(0, n_genes, width):
        block = slice(start, min(start + width, n_genes))
        yield block, as_float(expr[:, block])


def column_moments(block: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sum and sum of squares of each column."""
    if sparse.issparse(block):
        return np.asarray(block.sum(axis=0)).ravel(), np.asarray(block.multiply(block).sum(axis=0)).ravel()
    return block.sum(axis=0), np.einsum("ij,ij->j", block, block)


def cross(codes_t: sparse.csr_matrix, block: Any) -> np.ndarray:
    """Features x genes cross-product ``codes.T @ block`` as a dense array."""
    product = codes_t @ block
    return product.toarray() if sparse.issparse(product) else np.asarray(product)


def correlation(expr: np.ndarray | sparse.spmatrix, codes: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Pearson correlation of every gene with every feature's activation (the array core of ``"correlation"``).

    Computed from sparse cross-products in blocks of genes, so sparse expression is never made dense.

    Parameters
    ----------
    expr
        Expression, cells x genes, dense or sparse.
    codes
        Activations, cells x features, dense or sparse.

    Returns
    -------
    Genes x features (float64). Dead features and constant genes get zeros (their correlation is undefined).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._shared import correlation
    >>> expr = np.array([[1.0, 5.0], [2.0, 4.0], [3.0, 3.0]])
    >>> codes = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    >>> correlation(expr, codes)
    array([[ 1.,  0.],
           [-1.,  0.]])
    """
    expr = as_matrix(expr)
    codes = sparse.csr_matrix(codes, dtype=np.float64)
    out = np.zeros((expr.shape[1], codes.shape[1]))
    for block, X in gene_chunks(expr, codes.shape[1]):  # the shared Pearson kernel, a block of genes at a time
        out[block] = correlations(codes, X).T
    return out


def moments(codes: np.ndarray | sparse.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations; exactly constant columns get a standard deviation of 0."""
    if sparse.issparse(codes):
        codes = sparse.csr_matrix(codes, dtype=np.float64)
        mean = np.asarray(codes.mean(axis=0)).ravel()
        var = np.asarray(codes.multiply(codes).mean(axis=0)).ravel() - mean**2
        constant = (codes.max(axis=0).toarray().ravel() == codes.min(axis=0).toarray().ravel()) if codes.nnz else None
        constant = np.ones(codes.shape[1], bool) if constant is None else constant
    else:
        codes = np.asarray(codes, dtype=np.float64)
        mean = codes.mean(axis=0)
        var = ((codes - mean) ** 2).mean(axis=0)
        constant = np.ptp(codes, axis=0) == 0
    sd = np.sqrt(np.maximum(var, 0.0))
    sd[constant] = 0.0
    return mean, sd


def log_normalize(counts: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Scale each cell to the median total count and take ``log1p`` (the array core of :func:`embed`).

    Parameters
    ----------
    counts
        Cells x genes, non-negative.

    Returns
    -------
    Dense float32 log-normalised expression. Cells without counts stay zero.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._shared import log_normalize
    >>> log_normalize(np.array([[1.0, 1.0], [2.0, 6.0]])).round(3)
    array([[1.253, 1.253],
           [0.811, 1.558]], dtype=float32)
    """
    counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=1)
    target = np.median(totals[totals > 0]) if (totals > 0).any() else 1.0
    factor = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(counts * factor[:, None]).astype(np.float32)


LOCAL_MAX_GROUPS = 1.5


def feature_table(codes: sparse.csr_matrix, groups: pd.Categorical | None = None) -> pd.DataFrame:
    """Per-feature statistics of a cells x features activation matrix (the array core of :func:`feature_stats`).

    Parameters
    ----------
    codes
        Activations, cells x features.
    groups
        Optional group of each cell.

    Returns
    -------
    One row per feature; see :func:`feature_stats` for the columns.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.tl._shared import feature_table
    >>> feature_table(sparse.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0]])))[["frequency", "mean_active", "dead"]]
             frequency  mean_active   dead
    feature
    0              1.0          2.0  False
    1              0.0          0.0   True
    """
    codes = sparse.csc_matrix(codes)
    n_cells = codes.shape[0]
    nnz = np.diff(codes.indptr)
    total = np.asarray(codes.sum(axis=0)).ravel()
    frequency = nnz / n_cells
    table = pd.DataFrame(
        {
            "frequency": frequency,
            "mean_active": np.divide(total, nnz, out=np.zeros(len(nnz)), where=nnz > 0),
            "max": codes.max(axis=0).toarray().ravel() if codes.nnz else np.zeros(codes.shape[1]),
            "dead": nnz == 0,
            "dense": frequency > DENSE_THRESHOLD,
        },
        index=pd.Index([str(i) for i in range(codes.shape[1])], name="feature"),
    )
    if groups is None:
        return table
    groups = pd.Categorical(groups)
    onehot = sparse.csr_matrix(
        (np.ones(n_cells), (groups.codes, np.arange(n_cells))), (len(groups.categories), n_cells)
    )
    sizes = np.asarray(onehot.sum(axis=1)).ravel()
    # Mean activation per group, so that a large group does not look like a feature's home just by its size.
    means = np.asarray((onehot @ codes).todense()) / np.maximum(sizes, 1)[:, None]
    mass = means.sum(axis=0)
    p = np.divide(means, mass, out=np.zeros_like(means), where=mass > 0)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=0)
    effective = np.where(mass > 0, np.exp(entropy), 0.0)
    table["best_group"] = pd.Categorical(
        np.where(mass > 0, np.asarray(groups.categories)[means.argmax(axis=0)], None), categories=groups.categories
    )
    table["best_group_share"] = p.max(axis=0)
    table["n_groups_effective"] = effective
    table["locality"] = pd.Categorical(
        np.select([mass == 0, effective <= LOCAL_MAX_GROUPS], ["dead", "local"], "global"),
        categories=["local", "global", "dead"],
    )
    return table


def get_expression(adata: AnnData, layer: str | None, use_raw: bool | None) -> tuple[Any, str]:
    """Return the expression matrix for ``adata.var_names`` (raw, a layer or X) and how to name it."""
    if use_raw is None:
        use_raw = layer is None and adata.raw is not None
    if use_raw and layer is not None:
        raise ValueError(f"use_raw=True and layer={layer!r} both name the expression; pass one of them.")
    if use_raw and adata.raw is None:
        names = [k for k in adata.layers if k is not None]  # anndata 0.13 lists X as layers[None]
        layers = f" or layer= one of {', '.join(map(repr, names))}" if names else ""
        raise ValueError(f"use_raw=True but adata.raw is empty; pass use_raw=False (use adata.X){layers}.")
    if not use_raw:
        data = get_input(adata, None, layer)
        X, name = data.X, data.name
    else:
        raw_genes = adata.raw.var_names
        if not raw_genes.is_unique:
            raise ValueError("adata.raw has duplicate gene names; make them unique (raw.var_names_make_unique()).")
        where = raw_genes.get_indexer(adata.var_names)
        if (where < 0).any():
            missing = adata.var_names[where < 0]
            raise ValueError(
                f"adata.raw lacks {len(missing)} of the {adata.n_vars} genes of adata.var_names (e.g. "
                f"{', '.join(missing[:3])}), so it cannot give loadings for every gene; pass use_raw=False, or "
                "layer= a layer of log-normalised expression."
            )
        X = adata.raw.X
        # varm holds one row per gene of adata.var: raw genes outside it (e.g. not highly variable) are left out.
        if len(raw_genes) != adata.n_vars or (where != np.arange(adata.n_vars)).any():
            X = X[:, where]
            logger.info(
                "adata.raw has %d genes; loadings are computed for the %d genes of adata.var_names only.",
                len(raw_genes),
                adata.n_vars,
            )
        name = "adata.raw.X"
        check_data(X, name)
    negative = (X.data.min() if X.nnz else 0) < 0 if sparse.issparse(X) else np.min(X) < 0
    if negative:
        fix = "use_raw=True (adata.raw)" if adata.raw is not None and not use_raw else "layer= a log-normalised layer"
        warnings.warn(
            f"{name} has negative values, so it looks scaled (z-scored per gene). Loadings from scaled data weigh "
            "small changes of rarely expressed genes like large changes of markers and are harder to interpret; "
            f"pass {fix} to use log-normalised expression instead.",
            UserWarning,
            stacklevel=3,
        )
    return X, name


Truth = str | np.ndarray | pd.DataFrame


def check_truth(truth: Any, n_cells: int, name: str = "truth") -> tuple[np.ndarray, list[str]]:
    """Check a cells x variables matrix of true values; return it as float64 with the variables' names.

    Parameters
    ----------
    truth
        Array or DataFrame, cells x variables.
    n_cells
        The number of cells it must have.
    name
        How errors name it.

    Returns
    -------
    The values and the variable names (DataFrame columns, else ``"0"``, ``"1"``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._shared import check_truth
    >>> check_truth(np.array([[1.0, 2.0], [1.0, 3.0]]), 2)
    Traceback (most recent call last):
    ...
    ValueError: truth has variables that are constant across cells (0), so a correlation or R^2 with them ...
    """
    names = [str(c) for c in truth.columns] if isinstance(truth, pd.DataFrame) else None
    values = truth.to_numpy() if isinstance(truth, pd.DataFrame) else truth
    if sparse.issparse(values):
        values = values.toarray()
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{name} has {values.ndim} dimensions; expected cells x variables.")
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {values.dtype}; the true variables must be real numbers.")
    if values.shape[0] != n_cells:
        raise ValueError(
            f"{name} has {values.shape[0]} cells (rows) but the data has {n_cells}; pass one row per cell, in the "
            "same order (subset both the same way)."
        )
    if values.shape[1] == 0:
        raise ValueError(f"{name} has no variables (columns).")
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=0))
        raise ValueError(
            f"{name} has NaN or infinite values in {int((~finite.all(axis=1)).sum())} cells (variables "
            f"{_list(bad, names)}); the truth must be known in every cell: subset to the cells where it is."
        )
    constant = np.flatnonzero(np.ptp(values, axis=0) == 0)
    if len(constant):
        raise ValueError(
            f"{name} has variables that are constant across cells ({_list(constant, names)}), so a correlation "
            "or R^2 with them is undefined; drop those columns."
        )
    return values, names or [str(i) for i in range(values.shape[1])]


def _list(idx: np.ndarray, names: list[str] | None, limit: int = 10) -> str:
    shown = [names[i] if names else str(i) for i in idx[:limit]]
    return ", ".join(shown) + (f" and {len(idx) - limit} more" if len(idx) > limit else "")


def get_truth(adata: AnnData, truth: Truth) -> tuple[np.ndarray, list[str], str]:
    """Return the true variables named by an ``obsm`` key (or given as an array), their names and a label."""
    if isinstance(truth, str):
        if truth not in adata.obsm:
            available = ", ".join(repr(k) for k in adata.obsm) or "none"
            raise KeyError(
                f"truth={truth!r} is not in adata.obsm (available: {available}). Simulated data from "
                "cellsae_kit.datasets.simulate keeps its true programs in obsm['true_programs']; or pass a "
                "cells x variables array."
            )
        values, names = check_truth(adata.obsm[truth], adata.n_obs, f"adata.obsm[{truth!r}]")
        return values, names, truth
    values, names = check_truth(truth, adata.n_obs)
    return values, names, "array"


#: Columns of the programme tree that ``datasets.simulate(design="hierarchy")`` stores in ``uns["simulation"]``.
TREE_COLUMNS = ("lineage", "lineage_program", "subtype_program")


def get_tree(adata: AnnData, n_programs: int, key: str = "simulation") -> pd.DataFrame:
    """Return the programme tree of a hierarchical simulation, ``uns[key]["tree"]``, checked against the truth.

    Parameters
    ----------
    adata
        Data from :func:`cellsae_kit.datasets.simulate` with ``design="hierarchy"``.
    n_programs
        Number of columns of the true programmes the tree's programme numbers must index.
    key
        The ``uns`` entry of the simulation.

    Returns
    -------
    One row per subtype (the index), with its ``lineage`` and the column numbers of the lineage's programme
    (``lineage_program``, the parent) and of its own (``subtype_program``, the child).

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> from cellsae_kit.tl._shared import get_tree
    >>> adata = csk.datasets.simulate(200, 8, design="hierarchy", n_lineages=2, n_subtypes=2, n_genes=30)
    >>> get_tree(adata, 8)["subtype_program"].tolist()
    [2, 3, 4, 5]
    """
    entry = adata.uns.get(key)
    tree = entry.get("tree") if isinstance(entry, dict) else None
    if tree is None:
        design = entry.get("params", {}).get("design") if isinstance(entry, dict) else None
        found = f"the simulation has design={design!r}, which has no tree" if design else f"uns[{key!r}] has no tree"
        raise ValueError(
            f"The truth records no hierarchy ({found}): simulate with cellsae_kit.datasets.simulate(..., "
            "design='hierarchy'), or pass hierarchy={parent programme: [child programmes]} with truth=, or "
            "groupby= and hierarchy= for groups of cells."
        )
    missing = [c for c in TREE_COLUMNS if not isinstance(tree, pd.DataFrame) or c not in tree.columns]
    if missing:
        raise ValueError(
            f"uns[{key!r}]['tree'] must be a DataFrame with columns {', '.join(TREE_COLUMNS)} (as "
            f"cellsae_kit.datasets.simulate writes it); it lacks {', '.join(missing)}."
        )
    programs = tree[["lineage_program", "subtype_program"]].to_numpy()
    if not np.issubdtype(programs.dtype, np.integer) or programs.min() < 0 or programs.max() >= n_programs:
        raise ValueError(
            f"uns[{key!r}]['tree'] names programmes outside the {n_programs} columns of the truth; pass the truth "
            "the simulation wrote (obsm['true_programs']) for the cells it simulated."
        )
    return tree.loc[:, list(TREE_COLUMNS)].copy()
