"""The reader of a stored SAE: ``uns[key]``, ``obsm["X_<key>"]`` and ``varm["<key>_loadings"]`` as one object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from ..models import FitConfig, SparseAutoencoder, check_sparse
from ._anndata import check_adata, genes

MODEL_FIELDS = ("n_inputs", "n_features", "activation", "k", "l1_coef")
SIGNED_FACTORS = ("pca", "ica", "dictionary")  # tl.factorize methods whose codes take both signs


def keys(adata: AnnData | MuData) -> list[str]:
    """List the keys of the SAEs stored in ``adata.uns`` (entries with ``params`` and ``weights``).

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=16, k=2, n_epochs=2, progress=False)
    >>> csk.get.keys(adata)
    ['sae']
    """
    return [k for k, v in adata.uns.items() if isinstance(v, dict) and {"params", "weights"} <= set(v)]


def _hint(adata: AnnData | MuData) -> str:
    """Say which SAEs exist, or how to train one."""
    found = keys(adata)
    if found:
        return f"SAEs found: {', '.join(map(repr, found))}; pass one of them as key=, or train an SAE first."
    return (
        "No SAE is stored yet: train an SAE first. Run cellsae_kit.tl.sae first, for example "
        "cellsae_kit.tl.sae(adata, 'X_pca'); to keep several, run cellsae_kit.tl.sae with key_added= and pass "
        "that key."
    )


def codes(adata: AnnData | MuData, key: str = "sae") -> sparse.csr_matrix:
    """Return the activations ``obsm["X_<key>"]`` of an SAE as CSR (cells x features).

    Only the activations need to exist (not the rest of the SAE); a clear error when they are missing. For a
    factorisation of :func:`cellsae_kit.tl.factorize` with signed codes (PCA, ICA, dictionary learning), each
    component ``i`` of ``m`` becomes two features: its positive side (feature ``i``) and its negative side
    (feature ``m + i``), so that every tool reads non-negative features.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=16, k=2, n_epochs=2, progress=False)
    >>> csk.get.codes(adata).shape
    (700, 16)
    """
    check_adata(adata)
    name = f"X_{key}"
    if name not in adata.obsm:
        if key in keys(adata):
            hint = f" Encode the cells again with cellsae_kit.tl.encode(adata, key={key!r})."
        else:
            hint = " " + _hint(adata)
        raise KeyError(f"adata.obsm has no {name!r} (activations of an SAE stored under key={key!r}).{hint}")
    check_key(key, "key")
    values = adata.obsm[name]
    if hasattr(values, "to_numpy"):  # a DataFrame
        values = values.to_numpy()
    if factor_method(adata, key) in SIGNED_FACTORS and isinstance(values, np.ndarray) and values.ndim == 2:
        # Each signed component is two features, its positive and its negative side: activations are never negative.
        values = np.hstack([np.maximum(values, 0), np.maximum(-values, 0)])
    if not (sparse.issparse(values) or isinstance(values, np.ndarray)) or np.ndim(values) != 2:
        raise TypeError(f"adata.obsm[{name!r}] is a {type(values).__name__}; SAE activations are a 2-D matrix.")
    if not np.issubdtype(values.dtype, np.number) or values.dtype == bool:
        raise TypeError(f"adata.obsm[{name!r}] has dtype {values.dtype}; SAE activations are numbers.")
    if sparse.issparse(values):
        check_sparse(values, f"adata.obsm[{name!r}]")
    values = sparse.csr_matrix(values) if not sparse.issparse(values) or values.format != "csr" else values
    stored = values.data
    if stored.size and not (np.isfinite(stored).all() and stored.min() >= 0):
        raise ValueError(
            f"adata.obsm[{name!r}] has NaN, infinite or negative values, which SAE activations never have; it was "
            f"changed after training. Encode the cells again with cellsae_kit.tl.encode(adata, key={key!r})."
        )
    return values


def factor_method(adata: AnnData | MuData, key: str) -> str | None:
    """Name the method of a factorisation stored by ``tl.factorize`` under ``key`` (``None`` for anything else).

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> adata = csk.datasets.simulate(100, 5, 2, n_genes=30)
    >>> csk.tl.embed(adata, "pca", 10)
    >>> csk.tl.factorize(adata, "X_pca", "ica", n_components=4)
    >>> csk.get.factor_method(adata, "ica_pca"), csk.get.codes(adata, "ica_pca").shape
    ('ica', (100, 8))
    """
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "weights" in entry or "components" not in entry:
        return None
    method = entry.get("params", {}).get("method")
    return method if isinstance(method, str) else None


def check_key(key: object, name: str = "key_added") -> str:
    """Return ``key`` if it can name stored results (a non-empty string without ``/``), else a clear error.

    Examples
    --------
    >>> from cellsae_kit.get import check_key
    >>> check_key("sae")
    'sae'
    >>> check_key(5)
    Traceback (most recent call last):
    ...
    TypeError: key_added=5 must be a string such as 'sae' (it names the keys of obsm, varm and uns).
    """
    if not isinstance(key, str):
        raise TypeError(f"{name}={key!r} must be a string such as 'sae' (it names the keys of obsm, varm and uns).")
    if not key or "/" in key:
        raise ValueError(f"{name}={key!r} must be a non-empty name without '/' (h5ad and zarr files use '/' as paths).")
    return key


def sae(adata: AnnData | MuData, key: str = "sae") -> StoredSAE:
    """Read the SAE stored under ``key`` by :func:`cellsae_kit.tl.sae` (or ``tl.consensus``, ``tl.encode``).

    Parameters
    ----------
    adata
        The AnnData or MuData holding the SAE.
    key
        Its key: ``uns[key]``, ``obsm["X_<key>"]``, ``varm["<key>_loadings"]``.

    Returns
    -------
    A :class:`StoredSAE`; a ``KeyError`` that lists the stored SAEs when ``uns[key]`` does not exist. An entry
    without weights (activations computed elsewhere) can be read; what needs the weights then says so.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=16, k=2, n_epochs=2, progress=False)
    >>> stored = csk.get.sae(adata)
    >>> stored.n_features, stored.use_rep, stored.model.k
    (16, 'X_pca', 2)
    """
    check_adata(adata)
    if not isinstance(adata.uns.get(key), dict):
        raise KeyError(f"adata has no SAE under {key!r} (uns[{key!r}] with its params and weights). {_hint(adata)}")
    return StoredSAE(adata, key)


def feature_index(feature: object, n_features: int, key: str = "sae") -> int:
    """Check one feature number (``17`` or ``"17"``) against an SAE's ``n_features``; return it as an int.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> csk.get.feature_index("17", 32)
    17
    >>> csk.get.feature_index(40, 32)
    Traceback (most recent call last):
    ...
    ValueError: feature=40 is out of range; the SAE under key='sae' has features 0-31 (integers 0 to 31, ...).
    """
    last = n_features - 1
    valid = f"the SAE under key={key!r} has features 0-{last} (integers 0 to {last}, or strings like '17')"
    if isinstance(feature, bool | np.bool_) or not isinstance(feature, int | np.integer | str):
        raise TypeError(f"feature={feature!r} must be a feature number; {valid}.")
    try:
        index = int(feature)
    except ValueError:
        raise ValueError(f"feature={feature!r} is not a feature number; {valid}.") from None
    if not 0 <= index < n_features:
        raise ValueError(f"feature={feature!r} is out of range; {valid}.")
    return index


def _plain(value: Any) -> Any:
    """Turn numpy scalars read back from a file into Python values."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class StoredSAE:
    """An SAE stored in an AnnData or MuData: one place that knows where each part lives.

    Make one with :func:`cellsae_kit.get.sae`. Reading never changes ``adata``; :meth:`add_features` is the one
    way tools write columns into the feature table.

    Attributes
    ----------
    adata
        The object holding it.
    key
        Its key.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=16, k=2, n_epochs=2, progress=False)
    >>> stored = csk.get.sae(adata)
    >>> stored.codes.shape, stored.loadings().shape, sorted(stored.metrics)[:2]
    ((700, 16), (765, 16), ['best_epoch', 'dead_fraction'])
    """

    adata: AnnData | MuData
    key: str = "sae"

    @property
    def entry(self) -> dict:
        """``uns[key]`` itself (a dict the tools extend)."""
        return self.adata.uns[self.key]

    @property
    def params(self) -> dict[str, Any]:
        """The stored parameters, numpy scalars turned into Python values."""
        return {name: _plain(value) for name, value in self.entry.get("params", {}).items()}

    @property
    def config(self) -> FitConfig:
        """The fit options the SAE was trained with (:class:`~cellsae_kit.models.FitConfig`)."""
        return FitConfig.from_params(self.params)

    @property
    def metrics(self) -> dict[str, float]:
        """Final FVU, L0, dead and dense fractions, ... (empty when the SAE came from elsewhere)."""
        return {name: _plain(value) for name, value in self.entry.get("metrics", {}).items()}

    @property
    def history(self) -> pd.DataFrame | None:
        """Per-epoch training curves, when stored."""
        history = self.entry.get("history")
        return history if isinstance(history, pd.DataFrame) else None

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, ... as stored."""
        if not isinstance(self.entry.get("weights"), dict):
            raise KeyError(
                f"uns[{self.key!r}] holds no weights, so it is no SAE that cellsae_kit.tl.sae trained; train one "
                f"with cellsae_kit.tl.sae(adata, ..., key_added={self.key!r})."
            )
        return self.entry["weights"]

    @property
    def decoder(self) -> np.ndarray:
        """The decoder, features x input dimensions, in the model's scaled units."""
        return np.asarray(self.weights["W_dec"])

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.decoder.shape[0])

    @property
    def n_inputs(self) -> int:
        """Dimension of the input."""
        return int(self.decoder.shape[1])

    @property
    def use_rep(self) -> str:
        """The input representation, an ``obsm`` key, ``"<modality>:<key>"`` or ``"X"``."""
        return str(self.params.get("use_rep", "X"))

    @property
    def layer(self) -> str | None:
        """The layer of expression trained on, if any."""
        layer = self.params.get("layer")
        return None if layer is None else str(layer)

    @property
    def var_names(self) -> list[str] | None:
        """The genes of an SAE trained on expression, in its input order; ``None`` for a representation."""
        names = self.entry.get("var_names")
        return None if names is None else [str(g) for g in names]

    @property
    def model(self) -> SparseAutoencoder:
        """The trained model rebuilt from the weights, on the CPU and in eval mode, carrying its input in metadata."""
        params = self.params
        missing = [name for name in MODEL_FIELDS if name not in params]
        if missing:
            raise KeyError(
                f"uns[{self.key!r}]['params'] lacks {', '.join(missing)}; it was not written by cellsae_kit.tl.sae."
            )
        metadata: dict[str, Any] = {"use_rep": self.use_rep}
        if self.layer is not None:
            metadata["layer"] = self.layer
        if self.var_names is not None:
            metadata["var_names"] = self.var_names
        extra = [name for name in SparseAutoencoder.extra_fields(str(params["activation"])) if name in params]
        config = {name: params[name] for name in (*MODEL_FIELDS, *extra)} | {"metadata": metadata}
        return SparseAutoencoder.from_weights(config, self.weights).eval()

    @property
    def codes(self) -> sparse.csr_matrix:
        """The activations ``obsm["X_<key>"]`` (CSR), checked against the decoder's number of features."""
        values = codes(self.adata, self.key)
        if values.shape[1] != self.n_features:
            raise ValueError(
                f"adata.obsm['X_{self.key}'] has {values.shape[1]} features but the SAE under {self.key!r} has "
                f"{self.n_features}; the activations are not this SAE's. Encode the cells again with "
                f"cellsae_kit.tl.encode(adata, adata, key={self.key!r})."
            )
        return values

    def genes(self, mod: str | None = None) -> AnnData:
        """Return the object with the genes (``adata``, or the MuData modality with the loadings)."""
        return genes(self.adata, self.key, mod)

    def loadings(self, mod: str | None = None, name: str | None = None) -> np.ndarray:
        """Genes x features loadings ``varm[name]`` (default ``"<key>_loadings"``); a clear error when missing."""
        holder = self.genes(mod)
        name = f"{self.key}_loadings" if name is None else name
        if name not in holder.varm:
            raise KeyError(
                f"genes.varm has no {name!r} (genes x features loadings). cellsae_kit.tl.sae fills it when trained "
                "on expression or on a representation with a linear map to genes (PCA); for any other run "
                f"cellsae_kit.tl.feature_genes(adata, key={self.key!r})."
            )
        return np.asarray(holder.varm[name])

    def feature_index(self, feature: object) -> int:
        """Check one feature number (``17`` or ``"17"``) against the SAE's features; return it as an int."""
        return feature_index(feature, self.n_features, self.key)

    @property
    def features(self) -> pd.DataFrame | None:
        """The feature table ``uns[key]["features"]`` (one row per feature), or ``None`` before any tool wrote it."""
        table = self.entry.get("features")
        return table if isinstance(table, pd.DataFrame) else None

    def feature_table(self) -> pd.DataFrame:
        """Return the feature table; a clear error naming ``tl.feature_stats`` when it does not exist yet."""
        if self.features is None:
            raise KeyError(
                f"uns[{self.key!r}] has no feature table ('features'); run cellsae_kit.tl.feature_stats(adata, "
                f"key={self.key!r}) first (with groupby= to see locality)."
            )
        return self.features

    def best_terms(self) -> dict[int, str]:
        """Best term of each annotated feature, by feature number; empty before ``tl.annotate_features``."""
        table = self.features
        if table is None or "best_term" not in table:
            return {}
        return {int(feature): str(term) for feature, term in table["best_term"].dropna().items()}

    def add_features(self, columns: pd.DataFrame, drop: Sequence[str] = ()) -> None:
        """Write columns into the feature table: the one rule every tool follows.

        Rows are matched by feature name (the index, ``"0"``, ``"1"``, ...), whatever order the table is in (a
        user may have sorted it), or by position when the table's index is not the feature names. Columns of the
        same name are replaced, as are those in ``drop`` (results of the same tool that no longer apply); all
        other columns, written by other tools, are kept. Without a table of the right length, ``columns`` becomes
        the table.
        """
        table = self.features
        if table is None or len(table) != len(columns):
            self.entry["features"] = columns.copy()
            return
        table = table.drop(columns=[c for c in table.columns if c in columns.columns or c in drop])
        names = table.index.astype(str)
        columns = columns.set_axis(columns.index.astype(str))
        aligned = columns.reindex(names) if set(names) == set(columns.index) else columns
        self.entry["features"] = table.join(aligned.set_axis(table.index))
