"""``io.write_dictionary`` and ``io.read_dictionary``: a trained SAE that travels with its input and its names.

A dictionary is a folder::

    dictionary.json     format, input definition, genes, provenance, and the SHA-256 of every other file
    model.safetensors   the weights and config (cellsae_kit.models.save)
    arrays.safetensors  for PCA input: the gene loadings and the gene means that project new cells; with an
                        annotation: each feature's top genes by its annotation loadings
    features.json       the feature table (names, descriptions, checks), pandas' "table" JSON
    annotation.json     the annotation table, the same way

Everything is JSON or safetensors, so reading one runs no code from it; a file whose checksum differs from the
manifest's is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._atomic import atomic_path
from .._docs import doc_params
from ..models import SparseAutoencoder, load, save

FORMAT = "cellsae_kit.dictionary/1"
TABLES = ("features", "annotation")
MANIFEST = "dictionary.json"
N_TOP_GENES = 100  # per feature: enough for score_annotations(n_exclude=...) and for reading, small for 16k features
TOLERANCE = 1e-3  # largest projection error accepted, relative to the representation's largest value
VERSIONS = ("cellsae_kit", "anndata", "scanpy", "torch", "numpy")


@dataclass(frozen=True)
class Dictionary:
    """A dictionary read by :func:`read_dictionary`.

    Attributes
    ----------
    model
        The SAE, on the CPU, in eval mode.
    use_rep
        The representation it reads (``"X"`` for expression).
    genes
        Genes of the projection or of the expression input, in order; ``None`` for another representation.
    components, mean
        For PCA input: genes x dimensions loadings and the gene means that project new cells; else ``None``.
    layer
        Expression layer of the projection or input (``None``: ``X``).
    features, annotation
        The feature and annotation tables, when the SAE was annotated or described.
    annotation_params
        What :func:`cellsae_kit.tl.annotate_features` was run with.
    top_genes
        For each feature, its ``N_TOP_GENES`` genes with the largest annotation loadings (indices into
        ``annotation_genes``), and those loadings.
    annotation_genes
        The genes of the annotation loadings.
    provenance
        Data set, cells, versions and date of writing.

    Examples
    --------
    Read one with :func:`read_dictionary` and apply it with ``cellsae_kit.tl.encode(adata, dictionary)``:

    >>> import numpy as np
    >>> from cellsae_kit.io import Dictionary
    >>> from cellsae_kit.models import SparseAutoencoder
    >>> Dictionary(SparseAutoencoder(2, 8, k=1), "X_umap").model.n_features
    8
    """

    model: SparseAutoencoder
    use_rep: str
    genes: list[str] | None = None
    components: np.ndarray | None = None
    mean: np.ndarray | None = None
    layer: str | None = None
    features: pd.DataFrame | None = None
    annotation: pd.DataFrame | None = None
    annotation_params: dict[str, Any] = field(default_factory=dict)
    top_genes: tuple[np.ndarray, np.ndarray] | None = None
    annotation_genes: list[str] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def project(self, adata: AnnData) -> np.ndarray:
        """Project cells onto a PCA dictionary's components, genes aligned by name (missing genes: the reference mean).

        Parameters
        ----------
        adata
            New cells, with expression processed as the reference's (same normalisation, log and scaling).

        Returns
        -------
        Cells x dimensions, float32.

        Examples
        --------
        >>> import numpy as np
        >>> import pandas as pd
        >>> from anndata import AnnData
        >>> from cellsae_kit.models import SparseAutoencoder
        >>> from cellsae_kit.io import Dictionary
        >>> d = Dictionary(SparseAutoencoder(1, 4, k=1), "X_pca", ["a", "b"], np.array([[1.0], [0.0]]), np.zeros(2))
        >>> d.project(AnnData(np.array([[3.0, 5.0]]), var=pd.DataFrame(index=["b", "a"]))).tolist()
        [[5.0]]
        """
        if self.components is None or self.genes is None or self.mean is None:
            raise ValueError(
                f"This dictionary's SAE reads {self.use_rep!r}, not a PCA it can project; give the cells that "
                "representation and pass them to cellsae_kit.tl.encode."
            )
        genes = pd.Index(self.genes)
        X = adata.X if self.layer is None else adata.layers[self.layer]
        where = "adata.X" if self.layer is None else f"adata.layers[{self.layer!r}]"
        if self.layer is not None and self.layer not in adata.layers:
            raise KeyError(f"The dictionary projects {where}, which adata lacks; store that expression there.")
        found = adata.var_names.get_indexer(genes)
        used = np.flatnonzero(np.abs(self.components).sum(axis=1) > 0)  # genes the PCA used
        present = used[found[used] >= 0]
        if not len(present):
            raise ValueError(
                f"None of the {len(used)} genes of the dictionary's PCA are in adata.var_names (e.g. "
                f"{genes[used[0]]!r} vs {adata.var_names[0]!r}); use the same gene names (symbols or IDs) as the "
                "reference."
            )
        missing = len(used) - len(present)
        if missing:
            examples = ", ".join(genes[used[found[used] < 0]][:3])
            warnings.warn(
                f"{missing} of the {len(used)} genes of the dictionary's PCA are missing from adata.var_names (e.g. "
                f"{examples}); they are taken at the reference's mean, which biases the projection as they get more.",
                UserWarning,
                stacklevel=3,
            )
        X = X[:, found[present]]
        X = X.toarray() if sparse.issparse(X) else np.asarray(X)
        components = np.asarray(self.components, dtype=np.float64)[present]
        return ((X - self.mean[present]) @ components).astype(np.float32)


@doc_params
def write_dictionary(
    adata: AnnData,
    path: str | Path,
    key: str = "sae",
    *,
    source: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trained SAE with its input definition, feature names and provenance to a folder.

    The folder holds everything needed to apply the SAE to other cells with :func:`cellsae_kit.tl.encode`
    (``tl.encode(new, "folder/")``): the weights; the input's definition (the representation's name and
    dimension; for PCA the gene loadings ``varm["PCs"]`` and the gene means, so that new cells are projected as the
    reference was; for expression the gene names); the feature table with its names, descriptions and checks; and
    where it came from.

    For PCA input the projection is checked before anything is written: projecting this object's expression must
    give back ``obsm[use_rep]``, else new cells would be projected differently from the cells the SAE learnt on.

    Parameters
    ----------
    {adata}
    path
        The folder to write.
    {key}
    source
        A name for the data set it was trained on (kept in the provenance).
    overwrite
        Replace an existing folder.

    Returns
    -------
    The folder written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> sc.pp.pca(adata)  # this copy's X_pca comes from a different X; projecting new cells needs the real one
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> folder = csk.io.write_dictionary(adata, pathlib.Path(tempfile.mkdtemp()) / "pbmc", source="pbmc68k_reduced")
    >>> sorted(p.name for p in folder.iterdir())
    ['arrays.safetensors', 'dictionary.json', 'model.safetensors']
    """
    get.check_adata(adata, mudata=False)
    stored = get.sae(adata, key)
    model = stored.model
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it, or choose another folder.")
    if path.exists() and not (path / MANIFEST).is_file():
        raise FileExistsError(f"{path} exists and is no dictionary; it is not replaced. Choose another folder.")
    arrays: dict[str, np.ndarray] = {}
    spec: dict[str, Any] = {"use_rep": stored.use_rep, "n_inputs": stored.n_inputs}
    if stored.use_rep == "X":
        spec |= {"genes": stored.var_names, "layer": stored.layer}
    else:
        projection = _pca_projection(adata, stored)
        if projection is not None:
            arrays["components"], arrays["mean"], layer = projection
            spec |= {"projection": "pca", "genes": list(map(str, adata.var_names)), "layer": layer}
    features, annotation = stored.features, stored.entry.get("annotation")
    params = dict(stored.entry.get("annotation_params", {}))
    loadings_name = params.get("loadings")
    if loadings_name in adata.varm:
        index, values = _top_genes(np.asarray(adata.varm[loadings_name], dtype=np.float32))
        arrays |= {"top_genes_index": index, "top_genes_value": values}
        spec["annotation_genes"] = list(map(str, adata.var_names))
    provenance = {
        "source": source,
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "key": key,
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {name: _version(name) for name in VERSIONS},
        "metrics": stored.metrics,
    }
    with atomic_path(path) as tmp:
        tmp.mkdir()
        save(model, tmp / "model.safetensors")
        if arrays:
            from safetensors.numpy import save_file

            save_file({name: np.ascontiguousarray(a) for name, a in arrays.items()}, str(tmp / "arrays.safetensors"))
        if features is not None:
            (tmp / "features.json").write_text(_table_json(features))
        if isinstance(annotation, pd.DataFrame):
            (tmp / "annotation.json").write_text(_table_json(annotation))
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        manifest = {"format": FORMAT, "input": spec, "annotation_params": params, "provenance": provenance}
        (tmp / MANIFEST).write_text(json.dumps(manifest | {"files": files}, indent=1, default=_json_value))
    return path


def read_dictionary(path: str | Path) -> Dictionary:
    """Read a dictionary written by :func:`write_dictionary`, checking every file against its manifest.

    Parameters
    ----------
    path
        The dictionary's folder.

    Returns
    -------
    The dictionary; apply it with ``cellsae_kit.tl.encode(adata, dictionary)``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_umap", n_features=8, k=1, n_epochs=2, progress=False)
    >>> folder = csk.io.write_dictionary(adata, pathlib.Path(tempfile.mkdtemp()) / "umap")
    >>> dictionary = csk.io.read_dictionary(folder)
    >>> dictionary.use_rep, dictionary.model.n_inputs, dictionary.provenance["n_cells"]
    ('X_umap', 2, 700)
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(
            f"No dictionary at {path} (no {MANIFEST}); pass a folder written by cellsae_kit.io.write_dictionary."
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path / MANIFEST} is not valid JSON ({err}); write the dictionary again.") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{path} is not a cellsae_kit dictionary (format {found!r}, expected {FORMAT!r}).")
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        raise ValueError(f"The manifest of {path} lists no model file; write the dictionary again.")
    for name, digest in files.items():
        if Path(name).name != name or not (path / name).is_file():
            raise ValueError(f"{path} lacks {name!r}, which its manifest lists; copy the whole folder.")
        if _sha256(path / name) != digest:
            raise ValueError(
                f"{path / name} differs from the file the dictionary was written with (checksum); it was changed or "
                "damaged. Copy the dictionary again."
            )
    spec, model = manifest.get("input", {}), load(path / "model.safetensors")
    arrays = _read_arrays(path / "arrays.safetensors") if "arrays.safetensors" in files else {}
    genes = spec.get("genes")
    if spec.get("projection") == "pca":
        _check_shape(arrays, "components", (len(genes), model.n_inputs), path)
        _check_shape(arrays, "mean", (len(genes),), path)
    top, annotation_genes = None, spec.get("annotation_genes")
    if "top_genes_index" in arrays:
        index, values = arrays["top_genes_index"], arrays.get("top_genes_value")
        if (
            annotation_genes is None
            or values is None
            or index.shape != values.shape
            or index.shape[0] != model.n_features
            or (index.size and not 0 <= index.min() <= index.max() < len(annotation_genes))
        ):
            raise ValueError(
                f"The top genes in {path} do not match its features and genes; write the dictionary again."
            )
        top = (index.astype(np.int64), values)
    tables = {name: _read_table(path, f"{name}.json") if f"{name}.json" in files else None for name in TABLES}
    if tables["features"] is not None and len(tables["features"]) != model.n_features:
        raise ValueError(
            f"The feature table in {path} has {len(tables['features'])} rows for {model.n_features} features; write "
            "the dictionary again."
        )
    return Dictionary(
        model=model,
        use_rep=str(spec.get("use_rep", "X")),
        genes=None if genes is None else [str(g) for g in genes],
        components=arrays.get("components"),
        mean=arrays.get("mean"),
        layer=spec.get("layer"),
        features=tables["features"],
        annotation=tables["annotation"],
        annotation_params=manifest.get("annotation_params") or {},
        top_genes=top,
        annotation_genes=None if annotation_genes is None else [str(g) for g in annotation_genes],
        provenance=manifest.get("provenance") or {},
    )


def _pca_projection(adata: AnnData, stored) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """Gene loadings, gene means and layer that reproduce ``obsm[use_rep]`` from expression; ``None`` if not PCA."""
    name = stored.params.get("loadings")
    if name != "PCs" or name not in adata.varm:
        return None
    components = np.asarray(adata.varm[name], dtype=np.float64)
    components = np.where(np.isfinite(components), components, 0.0)
    layer = adata.uns.get("pca", {}).get("params", {}).get("layer")
    X = adata.X if layer is None else adata.layers[layer]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    rep = np.asarray(adata.obsm[stored.use_rep], dtype=np.float64)
    cells = np.linspace(0, adata.n_obs - 1, min(adata.n_obs, 2000)).astype(np.int64)
    sample = X[cells]
    sample = sample.toarray() if sparse.issparse(sample) else np.asarray(sample, dtype=np.float64)
    error = np.abs((sample - mean) @ components - rep[cells]).max() / max(np.abs(rep[cells]).max(), 1e-12)
    if not error <= TOLERANCE:
        raise ValueError(
            f"Projecting {'adata.X' if layer is None else f'adata.layers[{layer!r}]'} on varm['PCs'] does not give "
            f"obsm[{stored.use_rep!r}] (largest error {error:.2g} of its range): the expression changed after the "
            "PCA, so new cells could not be projected the same way. Run sc.pp.pca and the SAE again on this "
            "expression, then write the dictionary."
        )
    return components.astype(np.float32), mean.astype(np.float32), layer


def _top_genes(loadings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's genes with the largest loadings (features x n), and those loadings."""
    n = min(N_TOP_GENES, loadings.shape[0])
    top = np.argpartition(-loadings, n - 1, axis=0)[:n]
    values = np.take_along_axis(loadings, top, axis=0)
    order = np.argsort(-values, axis=0, kind="stable")
    top, values = np.take_along_axis(top, order, axis=0), np.take_along_axis(values, order, axis=0)
    return np.ascontiguousarray(top.T.astype(np.int32)), np.ascontiguousarray(values.T.astype(np.float32))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise ValueError(f"{path} is not a safetensors file ({err}); write the dictionary again.") from err


def _check_shape(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...], path: Path) -> None:
    found = arrays.get(name)
    if found is None or found.shape != shape or not np.isfinite(found).all():
        got = None if found is None else found.shape
        raise ValueError(
            f"The {name!r} array in {path} has shape {got}, expected {shape} of finite values; write the dictionary "
            "again."
        )


def _table_json(table: pd.DataFrame) -> str:
    return table.to_json(orient="table", default_handler=str)


def _read_table(path: Path, name: str) -> pd.DataFrame:
    import io

    try:
        return pd.read_json(io.StringIO((path / name).read_text()), orient="table")
    except ValueError as err:
        raise ValueError(f"{path / name} is not a table written by write_dictionary ({err}).") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _json_value(value: Any) -> Any:
    # numpy scalars and arrays from uns
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} cannot be written to the dictionary's manifest.")
