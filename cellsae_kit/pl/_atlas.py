"""``pl.atlas``: a static folder (HTML, one small script per feature, PNGs) that any browser opens from ``file://``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse
from tqdm.auto import tqdm

from .. import get
from .._atomic import atomic_path
from .._docs import doc_params

ASSETS = ("index.html", "atlas.js", "atlas.css")
# Genes per feature kept in the index for search: enough to find a feature by its marker, small for 16k features.
N_INDEX_GENES = 5
IMAGE_SIZE = 180  # pixels per side of each embedding image
# Columns the index may sort by, in this order, with their labels (the stability columns of tl.stability).
SORTS = {
    "frequency": "frequency",
    "stability": "stability (decoder)",
    "stability_activation": "stability (activations)",
    "best_term_auroc": "held-out AUROC",
    "mean_active": "mean activation when active",
}


@doc_params
def atlas(
    adata: AnnData | MuData,
    path: str | Path,
    key: str = "sae",
    *,
    groupby: str | None = None,
    basis: str = "umap",
    images: Literal["all"] | int | bool = "all",
    n_genes: int = 10,
    n_terms: int = 5,
    n_neighbors: int = 8,
    mod: str | None = None,
    title: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a static feature atlas: a folder any browser opens offline, from ``file://`` or a static web host.

    ``index.html`` lists every feature of the feature table (:func:`cellsae_kit.tl.feature_stats` and the tools
    that extend it), searchable by gene, term, group and description, sortable by the frequency, stability and
    held-out AUROC columns that exist, with filters for dead, dense and local/global features. A click (or the
    address ``index.html#feature=17``) shows one feature: its cells on the embedding coloured by activation, its
    top genes of both signs, its strongest programmes with their adjusted p-values from
    :func:`cellsae_kit.tl.annotate_features`, its activation per group, every column of its row in the feature
    table (stability, description, ...) and its nearest features by decoder cosine.

    No server and no network: the page is plain JavaScript, and its data are scripts (``data/index.js``,
    ``features/<N>.js``, each assigning a JSON object) because browsers refuse ``fetch()`` of local files. A
    feature's script is loaded only when it is shown. The folder is built beside ``path`` and renamed into place,
    so a failure leaves no half-written atlas.

    Parameters
    ----------
    {adata}
    path
        The folder to write (``"atlas/"``); it must not exist unless ``overwrite``.
    {key}
    groupby
        A categorical ``obs`` column (cell types, clusters): the mean activation and the share of active cells per
        group are shown for each feature.
    basis
        The embedding of the images, ``obsm["X_<basis>"]`` (``"umap"``, ``"X_umap"``, ``"tsne"`` ...).
    images
        Which features get an image: ``"all"``, an integer ``N`` (the ``N`` most frequent features), or ``False``
        (none; then ``basis`` is not needed). Dead features (active in no cell) never get one. Each image is a
        180 x 180 PNG drawn directly, without a figure, so that 16k of them take seconds.
    n_genes
        Genes listed per sign (raised and lowered) from ``varm["<key>_loadings"]``; the first
        five raised ones are searchable in the index.
    n_terms
        Programmes listed per feature (at most the ``n_top`` kept by :func:`cellsae_kit.tl.annotate_features`).
    n_neighbors
        Nearest features listed per feature, by cosine of the decoder rows.
    {mod}
    title
        Title of the pages (default: ``"Feature atlas: <key>"``).
    overwrite
        Replace an existing folder at ``path``.
    progress
        Show a progress bar over the features.

    Returns
    -------
    The folder written; open its ``index.html``. ``adata`` is not changed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.feature_stats(adata, groupby="bulk_labels")
    >>> folder = csk.pl.atlas(adata, pathlib.Path(tempfile.mkdtemp()) / "atlas", groupby="bulk_labels", progress=False)
    >>> sorted(p.name for p in folder.iterdir())
    ['atlas.css', 'atlas.js', 'data', 'features', 'img', 'index.html']
    >>> len(list((folder / "features").iterdir()))
    32
    """
    get.check_adata(adata)
    stored = get.sae(adata, key)
    codes = stored.codes.tocsc(copy=True)  # one column per feature is read at a time
    codes.eliminate_zeros()  # stored zeros are no activity (and are never drawn)
    n_features = codes.shape[1]
    table = _aligned(stored.feature_table(), n_features, key)
    labels = None if groupby is None else get.groups(adata, groupby)
    drawn = _chosen_images(images, codes)
    coords = _embedding(adata, basis) if drawn else None
    for name, value in {"n_genes": n_genes, "n_terms": n_terms, "n_neighbors": n_neighbors}.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name}={value!r} must be a whole number, 0 or more.")
    holder = stored.genes(mod)
    loadings = np.asarray(holder.varm[f"{key}_loadings"]) if f"{key}_loadings" in holder.varm else None
    if loadings is not None and loadings.shape[1] != n_features:
        raise ValueError(
            f"varm['{key}_loadings'] has {loadings.shape[1]} columns but the SAE has {n_features} features; "
            f"recompute them with cellsae_kit.tl.feature_genes(adata, key={key!r})."
        )
    path = _check_target(path, overwrite)

    top = _top_genes(loadings, holder.var_names, int(n_genes)) if loadings is not None else None
    terms, term_meta = _terms(stored.entry, int(n_terms))
    neighbors = _neighbors(stored, int(n_neighbors), n_features)
    per_group = None if labels is None else _group_activity(codes, labels)
    columns = {name: _json_column(table[name]) for name in table.columns}
    meta = {
        "title": title or f"Feature atlas: {key}",
        "key": key,
        "n_features": n_features,
        "n_cells": int(codes.shape[0]),
        "basis": None if coords is None else _basis_name(basis),
        "groupby": groupby,
        "groups": None if labels is None else [str(g) for g in labels.cat.categories],
        "has_genes": top is not None,
        "has_terms": terms is not None,
    } | term_meta
    index = _index(meta, columns, top)

    with atomic_path(path) as tmp:
        for folder in ("data", "features", "img"):
            (tmp / folder).mkdir(parents=True)
        assets = resources.files(__package__) / "atlas_assets"
        for name in ASSETS:
            (tmp / name).write_text(assets.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
        (tmp / "data" / "index.js").write_text(_script("window.ATLAS_INDEX = ", index), encoding="utf-8")
        painter = None if coords is None else _Painter(coords)
        for f in tqdm(range(n_features), desc="writing atlas", unit="feature", disable=not progress):
            column = codes[:, f]
            data: dict[str, Any] = {
                "id": f,
                "stats": {name: values[f] for name, values in columns.items()},
                "max": _number(column.data.max()) if column.nnz else 0.0,
                "image": None,
            }
            if painter is not None and f in drawn:
                painter.save(column, tmp / "img" / f"{f}.png")
                data["image"] = f"img/{f}.png"
            if top is not None:
                data["genes"] = {sign: [[g, _number(v)] for g, v in genes[f]] for sign, genes in top.items()}
            if terms is not None:
                data["terms"] = terms.get(str(f), [])
            if neighbors is not None:
                data["neighbors"] = [[int(j), _number(c)] for j, c in zip(*neighbors[f], strict=True)]
            if per_group is not None:
                data["groups"] = {name: [_number(v) for v in matrix[:, f]] for name, matrix in per_group.items()}
            (tmp / "features" / f"{f}.js").write_text(_script("atlasFeature(", data, ");"), encoding="utf-8")
    return path


def _aligned(table: pd.DataFrame, n_features: int, key: str) -> pd.DataFrame:
    """Return the feature table in feature order (a user may have sorted it), one row per feature."""
    if len(table) != n_features:
        raise ValueError(
            f"uns[{key!r}]['features'] has {len(table)} rows but the SAE has {n_features} features; run "
            f"cellsae_kit.tl.feature_stats(adata, key={key!r}) again."
        )
    names = [str(i) for i in range(n_features)]
    index = table.index.astype(str)
    return table.set_axis(index).reindex(names) if set(index) == set(names) else table.set_axis(names)


def _chosen_images(images: object, codes: sparse.csc_matrix) -> set[int]:
    """Choose the features that get an image: all, the ``N`` most frequent, or none; never a dead one."""
    if images is False:
        return set()
    counts = np.diff(codes.indptr)  # how many cells each feature is active in
    if images is True or images == "all":
        images = codes.shape[1]
    elif isinstance(images, bool) or not isinstance(images, int | np.integer) or images < 0:
        raise ValueError(f"images={images!r} must be 'all', a number of features (the most frequent) or False.")
    # A dead feature's image would show only grey cells: large dictionaries have thousands of them.
    order = np.argsort(-counts, kind="stable")[: int(images)]
    return {int(f) for f in order if counts[f] > 0}


def _basis_name(basis: str) -> str:
    return basis if basis.startswith("X_") else f"X_{basis}"


def _embedding(adata: AnnData | MuData, basis: str) -> np.ndarray:
    """Return the first two columns of ``obsm["X_<basis>"]``; a clear error when it is missing."""
    if not isinstance(basis, str):
        raise TypeError(f"basis={basis!r} must be the name of an embedding such as 'umap'.")
    name = _basis_name(basis)
    if name not in adata.obsm:
        have = ", ".join(repr(k) for k in adata.obsm) or "none"
        raise KeyError(
            f"adata.obsm has no {name!r} for basis={basis!r} (embeddings: {have}); compute one first (e.g. "
            "scanpy.tl.umap(adata)), or pass images=False for an atlas without images."
        )
    coords = np.asarray(adata.obsm[name], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2 or not np.isfinite(coords[:, :2]).all():
        raise ValueError(f"adata.obsm[{name!r}] must hold at least two finite coordinates per cell.")
    return coords[:, :2]


def _check_target(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another path for the atlas.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists already; pass overwrite=True to replace it, or choose another path.")
    return path


def _number(value: object) -> float | None:
    """Round to a float for JSON with four significant digits (enough to read, small to store); ``None`` for NaN."""
    value = float(value)
    return float(f"{value:.4g}") if np.isfinite(value) else None


def _json_column(values: pd.Series) -> list:
    """One column of the feature table as JSON values: numbers, booleans, strings or ``None``."""
    if pd.api.types.is_bool_dtype(values):
        return [bool(v) for v in values]
    if pd.api.types.is_numeric_dtype(values):
        return [_number(v) for v in values]
    return [None if pd.isna(v) else str(v) for v in values.astype(object)]


def _top_genes(loadings: np.ndarray, names: pd.Index, n: int) -> dict[str, list[list[tuple[str, float]]]]:
    """Per feature, the ``n`` genes with the largest positive and the most negative loadings (zeros left out)."""
    names = np.asarray(names, dtype=str)
    found: dict[str, list] = {"positive": [], "negative": []}
    order = np.argsort(-loadings, axis=0, kind="stable")
    for f in range(loadings.shape[1]):
        column = loadings[:, f]
        up, down = order[:n, f], order[::-1, f][:n]
        found["positive"].append([(names[g], column[g]) for g in up if column[g] > 0])
        found["negative"].append([(names[g], column[g]) for g in down if column[g] < 0])
    return found


def _terms(entry: dict, n_terms: int) -> tuple[dict[str, list] | None, dict]:
    """Each feature's strongest programmes from the tidy annotation table, and how to read them."""
    table = entry.get("annotation")
    if not isinstance(table, pd.DataFrame):
        return None, {}
    params = entry.get("annotation_params", {})
    matched = params.get("null", "none") == "expression" and "z" in table
    stat, pval = ("z", "pval_matched_adj") if matched else ("score", "pval_adj")
    rows = table[table["term"].notna()].sort_values(["feature", "rank"])
    found: dict[str, list] = {}
    for feature, group in rows.groupby(rows["feature"].astype(str), sort=False):
        found[feature] = [
            {
                "term": str(row.term),
                "cluster": None if pd.isna(row.cluster) else str(row.cluster),
                "n_terms": _number(row.n_terms) if "n_terms" in group else None,
                "stat": _number(getattr(row, stat)),
                "p": _number(getattr(row, pval)),
            }
            for row in group.head(n_terms).itertuples()
        ]
    meta = {
        "net": str(params.get("net", "")),
        "stat": "z against genes of matched expression" if matched else "enrichment score",
        "pvalue": "adjusted p (expression-matched null)" if matched else "adjusted p",
        "alpha": float(params.get("alpha", 0.05)),
    }
    return found, meta


def _neighbors(stored: get.StoredSAE, n: int, n_features: int) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per feature, its ``n`` nearest other features by cosine of the decoder rows (``None`` without weights)."""
    try:
        decoder = np.asarray(stored.decoder, dtype=np.float64)
    except KeyError:
        return None
    n = min(n, n_features - 1)
    if n <= 0 or decoder.shape[0] != n_features:
        return None
    norms = np.linalg.norm(decoder, axis=1, keepdims=True)
    unit = np.divide(decoder, norms, out=np.zeros_like(decoder), where=norms > 0)
    nearest = np.empty((n_features, n), dtype=np.int64)
    cosines = np.empty((n_features, n))
    for start in range(0, n_features, 1024):  # blocks keep the 16k x 16k similarity out of memory
        block = unit[start : start + 1024] @ unit.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # not its own neighbour
        part = np.argpartition(-block, n - 1, axis=1)[:, :n]
        values = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        nearest[start : start + len(block)] = np.take_along_axis(part, order, axis=1)
        cosines[start : start + len(block)] = np.take_along_axis(values, order, axis=1)
    return [(nearest[f], cosines[f]) for f in range(n_features)]


def _group_activity(codes: sparse.csc_matrix, labels: pd.Series) -> dict[str, np.ndarray]:
    """Compute, groups x features, the mean activation over all cells of a group and the share active."""
    onehot = sparse.csr_matrix(
        (np.ones(len(labels)), (labels.cat.codes.to_numpy(), np.arange(len(labels)))),
        shape=(len(labels.cat.categories), len(labels)),
    )
    sizes = np.maximum(np.asarray(onehot.sum(axis=1)).ravel(), 1)[:, None]
    active = codes.copy()
    active.data = (active.data > 0).astype(np.float64)
    return {
        "mean": np.asarray((onehot @ codes).todense()) / sizes,
        "active": np.asarray((onehot @ active).todense()) / sizes,
    }


def _coded(values: list) -> tuple[list[str], list[int]]:
    """Strings as a vocabulary and one index per feature (-1 for none): small for 16k features."""
    vocabulary = sorted({v for v in values if v is not None})
    where = {v: i for i, v in enumerate(vocabulary)}
    return vocabulary, [-1 if v is None else where[v] for v in values]


def _index(meta: dict, columns: dict[str, list], top: dict | None) -> dict:
    """Keep what the index page needs to list, search, sort and filter, and no more."""
    index = dict(meta)
    index["sort"] = [[name, label] for name, label in SORTS.items() if name in columns]
    kept: dict[str, Any] = {name: columns[name] for name, _ in index["sort"]}
    for name in ("dead", "dense"):
        if name in columns:
            kept[name] = [1 if v else 0 for v in columns[name]]
    vocabularies: dict[str, list[str]] = {}
    for name in ("best_term", "best_term_cluster", "best_group", "locality"):
        if name in columns:
            vocabularies[name], kept[name] = _coded(columns[name])
    if "description" in columns:
        kept["description"] = columns["description"]
    if top is not None:
        genes = [[g for g, _ in row[:N_INDEX_GENES]] for row in top["positive"]]
        vocabularies["genes"], _ = _coded([g for row in genes for g in row])
        where = {g: i for i, g in enumerate(vocabularies["genes"])}
        kept["genes"] = [[where[g] for g in row] for row in genes]
    index["columns"] = kept
    index["vocabularies"] = vocabularies
    return index


def _script(before: str, data: dict, after: str = ";") -> str:
    """Write a script that hands ``data`` to the page (JSON is JavaScript); browsers load scripts from ``file://``."""
    return before + json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False) + after + "\n"


class _Painter:
    """Draws the cells on the embedding coloured by one feature's activation, as small PNGs without a figure."""

    def __init__(self, coords: np.ndarray, size: int = IMAGE_SIZE) -> None:
        from matplotlib import colormaps

        dot = 2 if len(coords) <= 20_000 else 1
        margin = 4
        low, high = coords.min(axis=0), coords.max(axis=0)
        span = max(float((high - low).max()), 1e-12)
        scale = (size - 2 * margin - dot) / span
        offset = margin + ((size - 2 * margin - dot) - (high - low) * scale) / 2  # centred on both axes
        x = np.rint((coords[:, 0] - low[0]) * scale + offset[0]).astype(np.int64)
        y = np.rint((high[1] - coords[:, 1]) * scale + offset[1]).astype(np.int64)  # rows grow downwards
        self.x, self.y, self.dot = x, y, dot
        self.base = np.full((size, size, 3), 255, dtype=np.uint8)
        self._paint(self.base, np.arange(len(coords)), np.array([[217, 217, 217]], dtype=np.uint8))
        # Reds from a visible pink upwards: the weakest activation still stands out from the grey cells.
        self.colours = (colormaps["Reds"](np.linspace(0.3, 1.0, 256))[:, :3] * 255).astype(np.uint8)

    def _paint(self, image: np.ndarray, cells: np.ndarray, colours: np.ndarray) -> None:
        for dy in range(self.dot):
            for dx in range(self.dot):
                image[self.y[cells] + dy, self.x[cells] + dx] = colours

    def save(self, column: sparse.csc_matrix, path: Path) -> None:
        """Write one feature's image: active cells drawn last, the strongest on top."""
        from PIL import Image

        image = self.base.copy()
        if column.nnz:
            order = np.argsort(column.data, kind="stable")
            values = column.data[order]
            levels = np.rint(values / values.max() * 255).astype(np.int64)
            self._paint(image, column.indices[order], self.colours[levels])
        Image.fromarray(image).save(path, format="PNG")
