"""Real data sets downloaded on demand: the NeurIPS 2021 human bone marrow multiome and CITE-seq (GEO GSE194122).

Each file is fetched once with pooch into a cache folder, decompressed there and checked on every later load.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import warnings
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import anndata as ad
import numpy as np
import pandas as pd
import pooch
from tqdm.auto import tqdm

from .._atomic import atomic_path, remove_orphans, temporary_path
from .._docs import doc_params
from ._mudata import make_mudata

if TYPE_CHECKING:
    from mudata import MuData

BASE_URL = "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE194nnn/GSE194122/suppl/"
DATA_ENV = "CELLSAE_KIT_DATA"
URL_ENV = "CELLSAE_KIT_BASE_URL"
OBS_COLUMNS = ("cell_type", "batch")
CHUNK = 1 << 20


class Remote(NamedTuple):
    """A file of the GEO series and how its features split into modalities."""

    loader: str
    file: str
    modalities: dict[str, str]  # var["feature_types"] value -> modality name


MULTIOME = Remote(
    "bone_marrow_multiome",
    "GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz",
    {"GEX": "rna", "ATAC": "atac"},
)
CITE = Remote(
    "bone_marrow_cite",
    "GSE194122_openproblems_neurips2021_cite_BMMC_processed.h5ad.gz",
    {"GEX": "rna", "ADT": "prot"},
)
REMOTES = (MULTIOME, CITE)


@doc_params
def bone_marrow_multiome(
    path: str | Path | None = None, *, cache_dir: str | Path | None = None, progress: bool = True
) -> MuData:
    """Human bone marrow multiome (10x RNA + ATAC of the same cells), the reference study's data.

    The NeurIPS 2021 single-cell challenge data (Luecken et al. 2021; GEO GSE194122,
    ``GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz``): about 69,000 bone marrow mononuclear
    cells from 10 donors at 4 sites, 13,431 genes and 116,490 ATAC peaks, with expert cell type labels. The
    download is about 2.7 GB, and reading it needs tens of GB of memory (the normalised matrix and the counts,
    both sparse).

    Parameters
    ----------
    {download}

    Returns
    -------
    A :class:`mudata.MuData` with modalities ``"rna"`` (the file's ``"GEX"`` features) and ``"atac"``
    (``"ATAC"`` peaks, named ``chr1-9776-10668``), each with the file's ``X`` (normalised), ``layers["counts"]``
    and ``var``. The cells' columns (``cell_type``, ``batch``, donor and QC columns) are in ``mdata.obs`` and the
    file's embeddings (``GEX_X_pca``, ``GEX_X_umap``, ``ATAC_lsi_full`` ...) in ``mdata.obsm``; ``mdata.uns`` keeps
    the file's ``uns``. ``mdata.push_obs()`` copies the ``obs`` columns into the modalities.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> mdata = csk.datasets.bone_marrow_multiome()  # doctest: +SKIP

    Or from a copy on disk; here a tiny file in the same layout (genes and peaks in one AnnData):

    >>> import tempfile
    >>> import numpy as np
    >>> import pandas as pd
    >>> from anndata import AnnData
    >>> x = np.ones((2, 3), dtype=np.float32)
    >>> obs = pd.DataFrame({{"cell_type": ["HSC", "NK"], "batch": "s1d1"}}, index=["c1", "c2"])
    >>> var = pd.DataFrame({{"feature_types": ["GEX", "GEX", "ATAC"]}}, index=["CD34", "NCAM1", "chr1-9776-10668"])
    >>> path = tempfile.mkdtemp() + "/multiome.h5ad"
    >>> AnnData(x, obs=obs, var=var, layers={{"counts": x}}).write_h5ad(path)
    >>> mdata = csk.datasets.bone_marrow_multiome(path, progress=False)
    >>> mdata.mod["rna"].shape, mdata.mod["atac"].var_names.tolist(), mdata.obs["cell_type"].tolist()
    ((2, 2), ['chr1-9776-10668'], ['HSC', 'NK'])
    """
    return _load(MULTIOME, path, cache_dir, progress)


@doc_params
def bone_marrow_cite(
    path: str | Path | None = None, *, cache_dir: str | Path | None = None, progress: bool = True
) -> MuData:
    """Human bone marrow CITE-seq (10x RNA + surface proteins of the same cells).

    The CITE-seq half of the NeurIPS 2021 single-cell challenge (Luecken et al. 2021; GEO GSE194122,
    ``GSE194122_openproblems_neurips2021_cite_BMMC_processed.h5ad.gz``): about 90,000 bone marrow mononuclear
    cells, their genes and antibody-derived tags (ADT) for over a hundred surface proteins, with expert cell type
    labels.

    Parameters
    ----------
    {download}

    Returns
    -------
    A :class:`mudata.MuData` with modalities ``"rna"`` (the file's ``"GEX"`` features) and ``"prot"`` (``"ADT"``
    features, named by protein, e.g. ``CD34``), each with the file's ``X`` (normalised), ``layers["counts"]`` and
    ``var``. The cells' columns (``cell_type``, ``batch``, donor and QC columns) are in ``mdata.obs`` and the
    file's embeddings (``GEX_X_pca``, ``ADT_X_umap`` ...) in ``mdata.obsm``; ``mdata.uns`` keeps the file's
    ``uns``. ``mdata.push_obs()`` copies the ``obs`` columns into the modalities.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> mdata = csk.datasets.bone_marrow_cite()  # doctest: +SKIP

    Or from a copy on disk; here a tiny file in the same layout (genes and proteins in one AnnData):

    >>> import tempfile
    >>> import numpy as np
    >>> import pandas as pd
    >>> from anndata import AnnData
    >>> x = np.ones((2, 3), dtype=np.float32)
    >>> obs = pd.DataFrame({{"cell_type": ["HSC", "NK"], "batch": "s1d2"}}, index=["c1", "c2"])
    >>> var = pd.DataFrame({{"feature_types": ["GEX", "ADT", "ADT"]}}, index=["NCAM1", "CD56", "CD34"])
    >>> path = tempfile.mkdtemp() + "/cite.h5ad"
    >>> AnnData(x, obs=obs, var=var, layers={{"counts": x}}).write_h5ad(path)
    >>> mdata = csk.datasets.bone_marrow_cite(path, progress=False)
    >>> list(mdata.mod), mdata.mod["prot"].var_names.tolist()
    (['rna', 'prot'], ['CD56', 'CD34'])
    """
    return _load(CITE, path, cache_dir, progress)


def _load(remote: Remote, path: str | Path | None, cache_dir: str | Path | None, progress: bool) -> MuData:
    if path is not None:
        return _read_local(Path(path).expanduser(), remote, cache_dir, progress)

    folder = cache_folder(cache_dir)
    remove_orphans(folder)  # of a process killed while downloading or decompressing
    target = folder / remote.file.removesuffix(".gz")
    record = target.with_name(target.name + ".sha256.json")
    if target.exists():
        _check_cached(target, record, remote, progress)
        return to_mudata(_read_h5ad(target, remote), remote, str(target))

    url = (os.environ.get(URL_ENV) or BASE_URL).rstrip("/") + "/" + remote.file
    recorded = _read_record(record) if record.exists() else {}
    downloaded = _download(url, folder, remote, recorded, record, progress)
    try:
        with atomic_path(target) as tmp:
            try:
                sha256 = _decompress(downloaded, tmp, progress)
            except (gzip.BadGzipFile, EOFError, zlib.error) as err:
                raise ValueError(
                    f"The file downloaded from {url} is not a complete gzip file ({err}); the transfer was probably "
                    f"cut short. Nothing was kept in {folder}. Try again; if this persists, download the file "
                    f"yourself and pass it with {remote.loader}(path=...)."
                ) from None
            mdata = to_mudata(_read_h5ad(tmp, remote), remote, url)
            # Record first: a cached file is then never left without its checksum.
            entry = {
                "url": url,
                "downloaded": remote.file,
                "downloaded_sha256": _sha256(downloaded, False),
                "file": target.name,
                "sha256": sha256,
                "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            _write_atomic(record, json.dumps(entry, indent=2) + "\n")
    finally:
        # The decompressed file is what we keep and check; the 2.7 GB download would only double the disk use.
        downloaded.unlink(missing_ok=True)
    return mdata


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """Return the folder that downloads are cached in, created if needed.

    Parameters
    ----------
    cache_dir
        This folder; ``None`` means the environment variable ``CELLSAE_KIT_DATA`` if it is set, else the
        platform's cache folder (``~/.cache/cellsae_kit`` on Linux).

    Returns
    -------
    The folder.

    Examples
    --------
    >>> import tempfile
    >>> from cellsae_kit.datasets._download import cache_folder
    >>> cache_folder(tempfile.mkdtemp() + "/data").is_dir()
    True
    """
    folder = Path(cache_dir or os.environ.get(DATA_ENV) or pooch.os_cache("cellsae_kit")).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def to_mudata(adata: ad.AnnData, remote: Remote, where: str) -> MuData:
    """Check one combined AnnData of the series and split it into modalities by ``var["feature_types"]``.

    Parameters
    ----------
    adata
        Cells x features of every modality, with ``var["feature_types"]``.
    remote
        Which file of the series it should be (:data:`MULTIOME` or :data:`CITE`).
    where
        How errors name the file.

    Returns
    -------
    The MuData described in :func:`bone_marrow_multiome`.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from anndata import AnnData
    >>> from cellsae_kit.datasets._download import CITE, to_mudata
    >>> x = np.ones((1, 2), dtype=np.float32)
    >>> obs = pd.DataFrame({"cell_type": ["NK"], "batch": "s1d2"}, index=["c1"])
    >>> var = pd.DataFrame({"feature_types": ["GEX", "ADT"]}, index=["NCAM1", "CD56"])
    >>> list(to_mudata(AnnData(x, obs=obs, var=var, layers={"counts": x}), CITE, "my file").mod)
    ['rna', 'prot']
    """
    expected = list(remote.modalities)
    if "feature_types" not in adata.var.columns:
        raise ValueError(
            f"{where} has no var['feature_types'] column, which tells {' from '.join(expected)} features apart; "
            f"{remote.loader} reads {remote.file} (or its decompressed .h5ad) from GEO GSE194122."
        )
    types = adata.var["feature_types"].astype(str).to_numpy()
    found = sorted(set(types))
    if found != sorted(expected):
        other = next((r.loader for r in REMOTES if sorted(r.modalities) == found), None)
        hint = f"; this looks like the file that {other} reads" if other else ""
        raise ValueError(
            f"{where} has the feature types {found} in var['feature_types'], but {remote.loader} expects "
            f"{sorted(expected)}{hint}. Pass {remote.file} (or its decompressed .h5ad)."
        )
    missing = [c for c in OBS_COLUMNS if c not in adata.obs.columns]
    if missing:
        raise ValueError(
            f"{where} lacks the cell annotation column(s) {missing} in obs (it has {list(adata.obs.columns)}); "
            f"the GEO file has them. Pass the unchanged {remote.file}, or add the columns to your copy."
        )
    if "counts" not in adata.layers:
        raise ValueError(
            f"{where} has no layers['counts'] with the raw counts; the GEO file has them. Pass the unchanged "
            f"{remote.file}, or store the counts in your copy's layers['counts']."
        )
    if adata.n_obs == 0:
        raise ValueError(f"{where} has no cells; the download or your copy is incomplete.")

    mods = {}
    for feature_type, name in remote.modalities.items():
        columns = np.flatnonzero(types == feature_type)
        mods[name] = ad.AnnData(
            adata.X[:, columns],
            obs=pd.DataFrame(index=adata.obs_names),
            var=adata.var.iloc[columns].copy(),
            # anndata 0.13 lists X as layers[None]; it is passed on as X
            layers={key: value[:, columns] for key, value in adata.layers.items() if key is not None},
            varm={key: np.asarray(value)[columns] for key, value in adata.varm.items()},
        )
    mdata = make_mudata(mods)  # obs is set here, below
    for column in adata.obs.columns:
        mdata.obs[column] = adata.obs[column].values
    for key, value in adata.obsm.items():
        mdata.obsm[key] = value
    mdata.uns.update(adata.uns)
    return mdata


def _read_local(path: Path, remote: Remote, cache_dir: str | Path | None, progress: bool) -> MuData:
    if not path.is_file():
        raise FileNotFoundError(
            f"There is no file at {path}. Pass the path of {remote.file} (or its decompressed .h5ad), or leave "
            f"path=None to download it."
        )
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return to_mudata(_read_h5ad(path, remote), remote, str(path))
    if not name.endswith(".h5ad.gz"):
        raise ValueError(
            f"{path} is neither an .h5ad nor an .h5ad.gz file; pass {remote.file} as downloaded from GEO, or its "
            "decompressed .h5ad."
        )
    # A temporary copy next to the cache, which is meant for large files (unlike /tmp, often a small disk).
    with temporary_path(cache_folder(cache_dir)) as tmp:
        try:
            _decompress(path, tmp, progress)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise ValueError(
                f"{path} is not a complete gzip file ({err}); download it again, or pass the decompressed .h5ad."
            ) from None
        return to_mudata(_read_h5ad(tmp, remote), remote, str(path))


def _download(url: str, folder: Path, remote: Remote, recorded: dict, record: Path, progress: bool) -> Path:
    import requests

    known = recorded.get("downloaded_sha256")
    if progress:
        tqdm.write(f"Downloading {url} into {folder}", file=sys.stderr)
    # pooch's own messages advise on its `known_hash` argument, which is not ours to give: keep them quiet.
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        # pooch downloads into a temporary file in `folder` and renames it only once complete (and matching
        # `known`), so an interrupted transfer leaves nothing behind.
        return Path(
            pooch.retrieve(
                url,
                known_hash=f"sha256:{known}" if known else None,
                fname=remote.file,
                path=folder,
                downloader=pooch.HTTPDownloader(progressbar=progress, chunk_size=CHUNK),
            )
        )
    except requests.exceptions.RequestException as err:
        raise ConnectionError(
            f"Could not download {url} into {folder} ({type(err).__name__}: {err}); nothing was kept there. "
            f"Check the internet connection and try again, or download the file yourself (e.g. `wget {url}`) and "
            f"pass it with {remote.loader}(path='.../{remote.file}')."
        ) from err
    except ValueError as err:
        if not known:
            raise
        raise ValueError(
            f"The file at {url} is not the one first downloaded on {recorded.get('recorded', '?')} (its SHA256 "
            f"differs from the one recorded in {record}), so it was not kept. If the data set was updated on "
            f"purpose, delete {record} to accept the new version; otherwise pass your earlier copy with "
            f"{remote.loader}(path=...)."
        ) from err
    finally:
        logger.setLevel(level)


def _check_cached(target: Path, record: Path, remote: Remote, progress: bool) -> None:
    sha256 = _sha256(target, progress)
    if not record.exists():
        # A file placed in the cache by hand: trust it now and protect it from later changes.
        entry = {"file": target.name, "sha256": sha256, "recorded": datetime.now(UTC).isoformat(timespec="seconds")}
        _write_atomic(record, json.dumps(entry, indent=2) + "\n")
        return
    expected = _read_record(record).get("sha256")
    if sha256 != expected:
        raise ValueError(
            f"The cached file {target} has changed since it was downloaded (its SHA256 is {sha256}, {record} "
            f"recorded {expected}); it may be damaged. Delete it (rm '{target}') and call {remote.loader}() "
            "again to download it anew."
        )


def _read_h5ad(path: Path, remote: Remote) -> ad.AnnData:
    try:
        with warnings.catch_warnings():
            # The file holds every modality: a gene and its protein may share a name (CD4). Names repeated within
            # one modality are still reported when the modality is built.
            warnings.filterwarnings("ignore", "Variable names are not unique", UserWarning)
            return ad.read_h5ad(path)
    except OSError as err:
        raise ValueError(
            f"{path} could not be read as an .h5ad file ({err}); pass {remote.file} from GEO GSE194122, or its "
            "decompressed .h5ad."
        ) from None


def _decompress(source: Path, target: Path, progress: bool) -> str:
    """Decompress ``source`` into ``target``; returns the SHA256 of the decompressed bytes."""
    digest = hashlib.sha256()
    with (
        open(source, "rb") as raw,
        tqdm.wrapattr(
            raw, "read", total=source.stat().st_size, desc=f"Decompressing {source.name}", disable=not progress
        ) as watched,
        gzip.GzipFile(fileobj=watched) as unzipped,
        open(target, "wb") as out,
    ):
        while chunk := unzipped.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _sha256(path: Path, progress: bool) -> str:
    digest = hashlib.sha256()
    with (
        open(path, "rb") as handle,
        tqdm(
            total=path.stat().st_size, unit="B", unit_scale=True, desc=f"Checking {path.name}", disable=not progress
        ) as bar,
    ):
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _read_record(record: Path) -> dict:
    """Read a checksum record; a damaged one gets an error that says how to start afresh."""
    try:
        entry = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise ValueError(
            f"The checksum record {record} is damaged ({err}); delete it (rm '{record}') and load the data again "
            "(the cached file is then checked anew and a new record written)."
        ) from None
    if not isinstance(entry, dict):
        raise ValueError(f"The checksum record {record} holds no record; delete it and load the data again.")
    return entry


def _write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
