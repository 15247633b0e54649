"""``tl.peaks_to_genes``: turn peak loadings into gene loadings, so that ATAC features can be named with gene sets."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from .. import get
from .._docs import doc_params

PEAK = re.compile(r"^(?P<chrom>[^:\-\s]+)[:\-](?P<start>\d+)-(?P<end>\d+)$")


def parse_peaks(names: pd.Index | list[str]) -> pd.DataFrame:
    """Read peak coordinates from names such as ``"chr1:9776-10668"`` or ``"chr1-9776-10668"``.

    Parameters
    ----------
    names
        Peak names.

    Returns
    -------
    A DataFrame with ``chrom``, ``start`` and ``end``, indexed by the names.

    Examples
    --------
    >>> from cellsae_kit.tl._peaks import parse_peaks
    >>> parse_peaks(["chr1-100-600", "chrX:5-50"])
                 chrom  start  end
    chr1-100-600  chr1    100  600
    chrX:5-50     chrX      5   50
    """
    names = pd.Index(names).astype(str)
    parts = names.str.extract(PEAK)
    bad = parts["chrom"].isna().to_numpy()
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {len(names)} peak names are not coordinates like 'chr1:9776-10668' or "
            f"'chr1-9776-10668' (e.g. {', '.join(map(repr, names[bad][:3]))}); pass gene_column= naming a var "
            "column with each peak's gene instead."
        )
    table = pd.DataFrame(
        {"chrom": parts["chrom"].to_numpy(), "start": parts["start"].astype(np.int64).to_numpy()},
        index=names,
    )
    table["end"] = parts["end"].astype(np.int64).to_numpy()
    if (table["end"] < table["start"]).any():
        raise ValueError("Some peaks end before they start; check the peak names.")
    return table


def link_peaks(peaks: pd.DataFrame, genes: pd.DataFrame, window: int = 2000) -> sparse.csr_matrix:
    """Link peaks to the genes whose body or promoter they overlap (the array core of :func:`peaks_to_genes`).

    A gene's region is its body plus ``window`` bases upstream of its start site (strand-aware when ``genes``
    has a ``strand`` column of ``"+"``/``"-"``; both sides otherwise). A peak links to a gene when the two
    intervals overlap (half-open coordinates, as in BED files).

    Parameters
    ----------
    peaks
        ``chrom``, ``start``, ``end`` per peak (e.g. from :func:`parse_peaks`).
    genes
        ``chrom``, ``start``, ``end`` and optionally ``strand`` per gene, indexed by gene name.
    window
        Promoter length in bases.

    Returns
    -------
    Peaks x genes, 1 where linked (CSR, float32).

    Examples
    --------
    >>> import pandas as pd
    >>> from cellsae_kit.tl._peaks import link_peaks, parse_peaks
    >>> peaks = parse_peaks(["chr1-100-200", "chr1-5000-5100", "chr2-100-200"])
    >>> genes = pd.DataFrame(
    ...     {"chrom": ["chr1"], "start": [1000], "end": [3000], "strand": ["+"]}, index=["GENE1"]
    ... )
    >>> link_peaks(peaks, genes, window=1000).toarray().ravel().tolist()
    [1.0, 0.0, 0.0]
    """
    missing = [c for c in ("chrom", "start", "end") if c not in genes]
    if missing:
        raise KeyError(f"genes lacks the column(s) {', '.join(missing)}; give chrom, start, end (and strand).")
    if window < 0:
        raise ValueError(f"window={window} must be zero or positive.")
    start = genes["start"].to_numpy(np.int64)
    end = genes["end"].to_numpy(np.int64)
    if "strand" in genes:
        strand = genes["strand"].astype(str).to_numpy()
        low = np.where(strand == "-", start, start - window)
        high = np.where(strand == "-", end + window, end)
    else:
        low, high = start - window, end + window
    rows, cols = [], []
    peak_chrom = peaks["chrom"].astype(str).to_numpy()
    gene_chrom = genes["chrom"].astype(str).to_numpy()
    for chrom in np.intersect1d(peak_chrom, gene_chrom):
        p = np.flatnonzero(peak_chrom == chrom)
        order = p[np.argsort(peaks["start"].to_numpy()[p], kind="stable")]
        p_start = peaks["start"].to_numpy(np.int64)[order]
        p_end = peaks["end"].to_numpy(np.int64)[order]
        longest = int((p_end - p_start).max())
        for g in np.flatnonzero(gene_chrom == chrom):
            # Peaks sorted by start: only those starting within (low - longest, high) can overlap [low, high).
            first, last = np.searchsorted(p_start, [low[g] - longest, high[g]])
            hits = order[first:last][p_end[first:last] > low[g]]
            rows.extend(hits)
            cols.extend([g] * len(hits))
    data = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(peaks), len(genes)))


@doc_params
def peaks_to_genes(
    adata: MuData | AnnData,
    genes: pd.DataFrame | None = None,
    key: str = "sae",
    *,
    mod: str = "atac",
    gene_column: str | None = None,
    window: int = 2000,
    aggregate: Literal["mean", "max"] = "mean",
    target: str = "rna",
    key_added: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame:
    """Turn the peak loadings of SAE features into gene loadings, to name ATAC features with gene sets.

    Each peak is linked to genes, either through coordinates (the peak names, such as ``"chr1-9776-10668"``, and a
    table of gene positions: a peak links to a gene whose body or promoter it overlaps) or through a ``var``
    column that already names each peak's gene (peak annotations from Cell Ranger ARC or ArchR). A gene's loading
    on a feature is then the mean (or maximum) loading of its peaks; genes without peaks get zero.

    Parameters
    ----------
    {adata}
    genes
        Gene positions: ``chrom``, ``start``, ``end`` and optionally ``strand``, indexed by gene name (for
        example from a GTF file or ``pybiomart``). Not needed with ``gene_column``.
    {key}
    mod
        The modality with the peaks (for a MuData).
    gene_column
        A ``var`` column of the peaks holding the gene each peak belongs to (empty or missing: none).
    window
        Promoter length in bases upstream of a gene's start site.
    aggregate
        ``"mean"`` or ``"max"`` of a gene's peak loadings.
    target
        For a MuData: the modality (usually ``"rna"``) whose ``varm`` receives the gene loadings, aligned to its
        genes, so that :func:`cellsae_kit.tl.annotate_features` with ``mod=target, loadings=key_added`` names the
        features; ignored when the MuData has no such modality.
    key_added
        ``varm`` key of the gene loadings in ``target`` (default ``"<key>_<mod>_loadings"``).
    inplace
        Write the gene loadings into ``target`` (they are returned either way).

    Returns
    -------
    Genes x features loadings as a DataFrame, one row per gene with at least one peak.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> import cellsae_kit as csk
    >>> mdata = csk.datasets.simulate(300, 6, 3, modalities=("rna", "atac"), n_genes=50, n_peaks=80)
    >>> mdata.mod["atac"].var["gene"] = np.random.default_rng(0).choice(mdata.mod["rna"].var_names, 80)
    >>> csk.tl.sae(mdata, "atac:X", n_features=16, k=3, n_epochs=5, progress=False)
    >>> table = csk.tl.peaks_to_genes(mdata, gene_column="gene")
    >>> table.shape[1], mdata.mod["rna"].varm["sae_atac_loadings"].shape
    (16, (50, 16))
    """
    if key_added is not None:
        get.check_key(key_added)
    codes = get.codes(adata, key)
    peaks_of = get.modality(adata, mod, "mod") if get.is_mudata(adata) else adata
    name = f"{key}_loadings"
    if name not in peaks_of.varm:
        raise KeyError(
            f"The peaks have no varm[{name!r}]; train the SAE on the peaks (use_rep='{mod}:X' or '{mod}:X_lsi') or "
            f"compute peak loadings with cellsae_kit.tl.feature_genes(..., mod={mod!r})."
        )
    loadings = np.asarray(peaks_of.varm[name], dtype=np.float64)
    if loadings.shape[1] != codes.shape[1]:
        raise ValueError(f"varm[{name!r}] has {loadings.shape[1]} columns for an SAE with {codes.shape[1]} features.")
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate={aggregate!r} is not known; choose 'mean' or 'max'.")

    if gene_column is not None:
        if gene_column not in peaks_of.var:
            raise KeyError(
                f"gene_column={gene_column!r} is not a column of the peaks' var; columns: "
                f"{', '.join(peaks_of.var.columns) or 'none'}."
            )
        assigned = peaks_of.var[gene_column].astype(object).where(peaks_of.var[gene_column].notna(), "")
        assigned = assigned.astype(str).to_numpy()
        names = pd.Index(sorted(set(assigned) - {""}))
        linked = assigned != ""
        links = sparse.csr_matrix(
            (np.ones(linked.sum(), np.float32), (np.flatnonzero(linked), names.get_indexer(assigned[linked]))),
            shape=(len(assigned), len(names)),
        )
    elif genes is None:
        raise ValueError(
            "Give genes= (a table of gene positions) or gene_column= (a var column naming each peak's gene)."
        )
    else:
        links = link_peaks(parse_peaks(peaks_of.var_names), genes, window)
        names = pd.Index(genes.index.astype(str))
    n_peaks = np.asarray(links.sum(axis=0)).ravel()
    if not n_peaks.any():
        raise ValueError("No peak links to any gene: check that peaks and genes use the same chromosome names.")
    keep = n_peaks > 0
    links, names, n_peaks = links[:, keep], names[keep], n_peaks[keep]
    if aggregate == "mean":
        values = np.asarray(links.T @ loadings) / n_peaks[:, None]
    else:
        links = links.tocsc()
        values = np.vstack(
            [loadings[links.indices[links.indptr[g] : links.indptr[g + 1]]].max(axis=0) for g in range(len(names))]
        )
    table = pd.DataFrame(values, index=pd.Index(names, name="gene"), columns=[str(i) for i in range(codes.shape[1])])

    if inplace and get.is_mudata(adata) and target in adata.mod:
        receiver = adata.mod[target]
        aligned = table.reindex(receiver.var_names.astype(str)).fillna(0.0).to_numpy(np.float32)
        receiver.varm[f"{key}_{mod}_loadings" if key_added is None else key_added] = aligned
        adata.uns[key].setdefault("params", {})["peaks_to_genes"] = {
            "mod": mod,
            "target": target,
            "source": f"var[{gene_column!r}]" if gene_column is not None else "coordinates",
            "window": int(window),
            "aggregate": aggregate,
        }
    return table
