"""The input gate: every matrix an SAE trains on or encodes passes here first (memory, backed, streamed).

It refuses what would crash the interpreter (a malformed sparse structure read by compiled code), what would give
silent NaN (values beyond float32, an input scale that overflows) and what has nothing to learn (a constant input,
up to round-off), each with a message that names the problem and the fix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Below this spread relative to the data's magnitude, the differences between cells are float32 round-off.
CONSTANT_RTOL = 1e-5
# The input is scaled so that a cell lies sqrt(d) from the centre; a spread this small would overflow float32.
MIN_SPREAD = 1e-30


def check_sparse(X: sparse.spmatrix | sparse.sparray, name: str = "the input") -> None:
    """Refuse a sparse matrix whose structure is malformed before compiled code reads it.

    Indices outside the matrix or a decreasing ``indptr`` make scipy's and numpy's C code read or write out of
    bounds (a segmentation fault, or glibc's "double free" abort), so the structure is checked first, in O(nnz).

    Parameters
    ----------
    X
        A scipy sparse matrix or array.
    name
        How messages name the data.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import sparse
    >>> from cellsae_kit.models import check_sparse
    >>> X = sparse.random(10, 5, density=0.5, format="csr", random_state=0)
    >>> check_sparse(X)
    >>> X.indices[0] = 99
    >>> check_sparse(X, "adata.X")
    Traceback (most recent call last):
    ...
    ValueError: adata.X is a malformed CSR matrix (column index 99 is beyond its 5 columns); ...
    """
    # scipy's check_format(full_check=True) checks the same, but prunes and recasts the user's arrays in place
    fmt = X.format
    if fmt not in ("csr", "csc"):
        return  # COO and the others are converted by scipy, which checks them on the way
    n_major, n_minor = (X.shape[0], X.shape[1]) if fmt == "csr" else (X.shape[1], X.shape[0])
    minor = "column" if fmt == "csr" else "row"
    fix = (
        "rebuild it (scipy.sparse.csr_matrix((data, indices, indptr), shape=...)) from arrays you trust, or re-read "
        "the file it came from; a truncated or corrupted .h5ad gives such matrices"
    )
    indptr, indices = np.asarray(X.indptr), np.asarray(X.indices)
    problem = None
    if indptr.ndim != 1 or len(indptr) != n_major + 1:
        problem = f"indptr has {indptr.size} entries, expected {n_major + 1}"
    elif indptr[0] != 0 or (np.diff(indptr) < 0).any():
        problem = "indptr does not start at 0 and rise"
    elif indptr[-1] > min(len(indices), len(X.data)):
        problem = f"indptr ends at {int(indptr[-1])} but there are {min(len(indices), len(X.data))} stored values"
    elif len(indices) and (indices.min() < 0 or indices.max() >= n_minor):
        bad = int(indices.max()) if indices.max() >= n_minor else int(indices.min())
        problem = f"{minor} index {bad} is beyond its {n_minor} {minor}s"
    if problem is not None:
        raise ValueError(f"{name} is a malformed {fmt.upper()} matrix ({problem}); {fix}.")


def check_data(X: Any, name: str = "the input") -> None:
    """Raise a clear error for data an SAE cannot be trained on or applied to.

    Checks the type, shape and dtype, the sparse structure (:func:`check_sparse`), and that every value is finite
    and stays finite as float32 (the precision of training).

    Parameters
    ----------
    X
        Cells x dimensions, dense or sparse.
    name
        How to name the data in messages, e.g. ``"adata.obsm['X_pca']"``.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import check_data
    >>> check_data(np.array([[1.0, np.nan]]), "my embedding")
    Traceback (most recent call last):
    ...
    ValueError: my embedding contains NaN or infinite values in 1 of 1 cells; ...
    """
    if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
        raise TypeError(f"{name} is a {type(X).__name__}; expected a numpy array or a scipy sparse matrix.")
    if X.ndim != 2:
        raise ValueError(f"{name} has {X.ndim} dimensions; expected a 2-D cells x features matrix.")
    if X.dtype == bool or not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {X.dtype}, which is not real-valued numeric; convert it to float.")
    if X.shape[0] == 0:
        raise ValueError(f"{name} has zero cells; there is nothing to encode.")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has zero dimensions; choose a representation with at least one.")
    if sparse.issparse(X):
        check_sparse(X, name)
    values = X.data if sparse.issparse(X) else X
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        if sparse.issparse(X):
            csr = sparse.csr_matrix(X)
            rows = np.repeat(np.arange(X.shape[0]), np.diff(csr.indptr))
            n_bad = len(np.unique(rows[~np.isfinite(csr.data)]))
        else:
            n_bad = int((~np.isfinite(X).all(axis=1)).sum())
        raise ValueError(
            f"{name} contains NaN or infinite values in {n_bad} of {X.shape[0]} cells; remove or impute them first "
            "(for example subset to the finite cells)."
        )
    check_range(values, name)


def check_range(values: np.ndarray, name: str) -> None:
    """Refuse finite values beyond float32's range: they become infinite in training, and every weight NaN."""
    if values.size == 0 or not np.issubdtype(values.dtype, np.floating) or values.dtype.itemsize <= 4:
        return  # every integer, even int64's largest, fits in float32's range
    largest = float(np.abs(values).max())
    if largest > FLOAT32_MAX:
        raise ValueError(
            f"{name} has values up to {largest:.3g}, beyond float32's range ({FLOAT32_MAX:.3g}), in which SAEs "
            "train: they would become infinite and every weight NaN. Rescale it (divide by its largest value, or "
            "log-transform counts) first."
        )


def check_spread(spread: float, magnitude: float, name: str, cells: str = "cells") -> None:
    """Refuse an input whose cells differ by nothing but round-off, or by so little that scaling overflows.

    ``spread`` is the mean distance of the cells from their centre, ``magnitude`` the norm of the centre.
    """
    if not np.isfinite(spread) or spread <= CONSTANT_RTOL * magnitude or spread == 0:
        raise ValueError(
            f"All {cells} of {name} have the same input vector (up to float32 round-off: a mean distance of "
            f"{spread:.3g} from their centre, of norm {magnitude:.3g}); there is no variation for an SAE to learn. "
            "Check that the right representation or layer was chosen."
        )
    if spread < MIN_SPREAD:
        raise ValueError(
            f"The {cells} of {name} differ by about {spread:.3g}, too little to scale in float32; rescale it first "
            "(for example divide it by its standard deviation)."
        )


def as_float32(X: np.ndarray) -> np.ndarray:
    """Return ``X`` as a C-contiguous, writable, native-endian float32 array (a copy only where one is needed).

    torch refuses negative strides (``X[:, ::-1]``, what ``np.linalg`` returns for some PCA outputs), non-native
    byte order and warns on read-only memory; a copy fixes all three.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import as_float32
    >>> x = np.arange(6.0).reshape(2, 3)[:, ::-1]
    >>> as_float32(x).flags["C_CONTIGUOUS"], as_float32(x).dtype
    (True, dtype('float32'))
    """
    return np.require(X, dtype=np.float32, requirements=["C", "W"])
