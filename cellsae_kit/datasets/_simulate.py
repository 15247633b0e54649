"""``datasets.simulate``: single-cell counts generated from known programs (the reference study's simulation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from ._mudata import make_mudata

if TYPE_CHECKING:
    from mudata import MuData

Design = Literal["cell_type", "independent"]
Noise = Literal["poisson", "negative_binomial"]
DESIGNS: tuple[str, ...] = ("cell_type", "independent")
NOISES: tuple[str, ...] = ("poisson", "negative_binomial")
# The reference study's constants: program rates 1.0, 1.1, ... 10.9 for 100 programs; covariate offsets
# Normal(i, 0.1) for covariate i.
RATE_RANGE = (1.0, 10.9)
COVARIATE_SD = 0.1
CHUNK_CELLS = 2048
# A made-up genome for the multi-omics simulation: genes 50 kb apart on 5 chromosomes, 500 bp peaks, 2 kb promoters.
N_CHROMOSOMES = 5
GENE_SPACING = 50_000
PEAK_WIDTH = 500
PROMOTER = 2_000


class Modality(NamedTuple):
    """How one modality reads the programs: feature prefix, density of the program map, scale of the mean."""

    prefix: str
    density: float | None  # None: the simulation's p_gene
    scale: float


MODALITIES = {
    "rna": Modality("gene", None, 1.0),
    "atac": Modality("peak", 0.05, 0.05),
    "prot": Modality("protein", 0.1, 5.0),
}


def simulate(
    n_cells: int = 10_000,
    n_programs: int = 100,
    n_cell_types: int | None = None,
    *,
    modalities: Sequence[str] = ("rna",),
    n_genes: int = 2_000,
    n_peaks: int = 5_000,
    n_proteins: int = 50,
    design: Design = "cell_type",
    p_active: float = 0.3,
    p_gene: float = 0.1,
    n_covariates: int = 3,
    noise: Noise = "poisson",
    theta: float = 10.0,
    random_state: int = 0,
) -> AnnData | MuData:
    """Simulate counts driven by known gene programs, as in the reference study's central experiment.

    The generative model of Schuster (arXiv 2410.11468, simulation "large"), with counts drawn around its
    expression means:

    1. Program activities ``X``: ``n_programs`` independent Poisson variables per cell with rates evenly spaced
       from 1.0 to 10.9 (1.0, 1.1, ... 10.9 for the study's 100 programs).
    2. Covariates: each cell belongs to one of ``n_covariates`` covariates (think of batches); covariate ``i``
       adds the same Gaussian offset ``Normal(i, 0.1)`` to all of the cell's programs, giving ``X'``.
    3. Which programs are switched on, giving ``X''`` (``obsm["true_programs"]``):
       ``design="cell_type"`` (the study's): ``n_cell_types`` cell types, each with a binary program mask drawn
       with probability ``p_active`` (0.3); each cell is drawn uniformly from the types and keeps the programs
       of its type's mask. ``design="independent"``: every program is switched on independently in every cell
       with probability ``p_active``; there are no cell types.
    4. Programs map to genes through a Bernoulli(``p_gene`` = 0.1) genes x programs matrix
       (``varm["true_loadings"]``); a gene's expected expression is the sum of its programs' activities.
    5. Counts: Poisson around that mean (``noise="poisson"``) or negative binomial with inverse dispersion
       ``theta`` (variance ``mu + mu^2 / theta``). The study used the noise-free mean itself.

    Other modalities read the same programs through their own Bernoulli map, with their own map density and
    scale of the mean: ``rna`` (``n_genes``; density ``p_gene``; mean as above), ``atac`` (``n_peaks``; density
    0.05; 0.05 x the mean, so most peaks have zero or one count) and ``prot`` (``n_proteins``; density 0.1;
    5 x the mean, as antibody-derived tags are counted more deeply than transcripts).

    The study used 20,000 genes; the default of 2,000 keeps 10,000 cells at about a second (pass
    ``n_genes=20_000`` for the study's size). In the rare case that a program is switched off in every cell
    type's mask (likely only with few cell types), it is switched on in one randomly chosen type, so that every
    true program varies across cells.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_programs
        Number of true programs (the study: 100).
    n_cell_types
        Number of cell types (the study: 40, the default) for ``design="cell_type"``; must be left out for
        ``design="independent"``.
    modalities
        ``("rna",)`` gives an AnnData; several, such as ``("rna", "atac")`` or ``("rna", "prot")``, give a
        :class:`mudata.MuData` with one modality each.
    n_genes, n_peaks, n_proteins
        Features of the ``rna``, ``atac`` and ``prot`` modalities.
    design
        ``"cell_type"`` or ``"independent"`` (see above).
    p_active
        Probability that a program is on in a cell type's mask (or in a cell, for ``"independent"``).
    p_gene
        Probability that a program drives a gene.
    n_covariates
        Number of covariates (the study: 3).
    noise
        ``"poisson"`` or ``"negative_binomial"``.
    theta
        Inverse dispersion of the negative binomial.
    random_state
        Seed. Each modality draws from its own stream, so the RNA of ``("rna", "atac")`` is the same as that of
        ``("rna",)`` with the same seed.

    Returns
    -------
    AnnData or MuData
        For one modality an AnnData, cells x features, with

        - ``X`` and ``layers["counts"]``: counts (float32, dense; simulated cells express most genes);
        - ``obsm["true_programs"]``: ``X''``, the activity of each program in each cell as it drives expression
          (cells x programs, float32); ``obsm["true_activity"]``: ``X``, the Poisson activities before covariate
          offsets and masks;
        - ``obs["cell_type"]`` (``design="cell_type"``), ``obs["covariate"]`` and ``obs["covariate_offset"]``;
        - ``varm["true_loadings"]``: features x programs, 1 where a program drives the feature;
        - for RNA, gene positions on a made-up genome in ``var`` (``chrom``, ``start``, ``end``, ``strand``); for
          ATAC, peaks named by their coordinates (``"chr1-12000-12500"``), each in the body or promoter of the gene
          it regulates (the gene sharing the most programs with the peak, named in ``var["gene"]``);
        - ``uns["simulation"]``: ``params``, ``rates`` of the programs, ``covariate_means`` and, for the cell-type
          design, ``cell_type_masks`` (cell types x programs, boolean).

        For several modalities a MuData with these ``obs``, ``obsm`` and ``uns`` entries, and in each modality its
        own counts and ``varm["true_loadings"]``. Each modality also carries ``obsm["true_programs"]``,
        ``obsm["true_activity"]`` and ``uns["simulation"]``, so that it can be analysed on its own;
        ``mdata.push_obs()`` copies the ``obs`` columns into the modalities as well.

    Examples
    --------
    >>> import cellsae_kit as csk
    >>> adata = csk.datasets.simulate(500, 10, 4, n_genes=200)
    >>> adata.shape, adata.obsm["true_programs"].shape, adata.varm["true_loadings"].shape
    ((500, 200), (500, 10), (200, 10))
    >>> mdata = csk.datasets.simulate(500, 10, 4, modalities=("rna", "atac"), n_genes=200, n_peaks=300)
    >>> mdata.mod["atac"].shape, mdata.obsm["true_programs"].shape
    ((500, 300), (500, 10))
    """
    modalities = _check(
        n_cells, n_programs, n_cell_types, modalities, design, p_active, p_gene, n_covariates, noise, theta
    )
    sizes = {"rna": n_genes, "atac": n_peaks, "prot": n_proteins}
    for name in modalities:
        _check_count(sizes[name], {"rna": "n_genes", "atac": "n_peaks", "prot": "n_proteins"}[name])
    n_cell_types = 40 if n_cell_types is None and design == "cell_type" else n_cell_types

    # Separate streams: the structure, the cells, and each modality's map and noise, so that asking for another
    # modality does not change what the others draw.
    structure = np.random.default_rng([random_state, 0])
    cells = np.random.default_rng([random_state, 1])
    rates = np.linspace(*RATE_RANGE, n_programs)
    covariate_means = np.arange(n_covariates, dtype=np.float64)
    masks = None
    if design == "cell_type":
        masks = structure.random((n_cell_types, n_programs)) < p_active
        for program in np.flatnonzero(~masks.any(axis=0)):
            masks[structure.integers(n_cell_types), program] = True

    activity = cells.poisson(rates, size=(n_cells, n_programs)).astype(np.float64)
    covariate = cells.integers(n_covariates, size=n_cells)
    offset = cells.normal(covariate_means[covariate], COVARIATE_SD)
    if masks is not None:
        cell_type = cells.integers(n_cell_types, size=n_cells)
        on = masks[cell_type]
    else:
        cell_type = None
        on = cells.random((n_cells, n_programs)) < p_active
    programs = (activity + offset[:, None]) * on

    obs = pd.DataFrame(index=pd.Index([f"cell_{i}" for i in range(n_cells)]))
    if cell_type is not None:
        obs["cell_type"] = pd.Categorical.from_codes(cell_type, [f"type_{i}" for i in range(n_cell_types)])
    obs["covariate"] = pd.Categorical.from_codes(covariate, [f"covariate_{i}" for i in range(n_covariates)])
    obs["covariate_offset"] = offset.astype(np.float32)
    truth = {"true_programs": programs.astype(np.float32), "true_activity": activity.astype(np.float32)}
    uns = {
        "params": {
            "n_cells": n_cells,
            "n_programs": n_programs,
            "design": design,
            "p_active": p_active,
            "p_gene": p_gene,
            "n_covariates": n_covariates,
            "noise": noise,
            "theta": theta,
            "random_state": random_state,
            "modalities": list(modalities),
        }
        | ({"n_cell_types": n_cell_types} if masks is not None else {}),
        "rates": rates,
        "covariate_means": covariate_means,
    } | ({"cell_type_masks": masks} if masks is not None else {})

    mods = {}
    for name in modalities:
        index = list(MODALITIES).index(name)
        spec = MODALITIES[name]
        n_features = sizes[name]
        density = p_gene if spec.density is None else spec.density
        loadings = np.random.default_rng([random_state, 2, index]).random((n_features, n_programs)) < density
        counts = _counts(programs, loadings, spec.scale, noise, theta, np.random.default_rng([random_state, 3, index]))
        # Several modalities: the cells' columns live in the MuData's obs only, because mudata 0.3 copies
        # modality columns into it (prefixed) when writing an h5mu; `mdata.push_obs()` hands them down.
        adata = AnnData(counts, obs=obs.copy() if len(modalities) == 1 else pd.DataFrame(index=obs.index))
        adata.var_names = [f"{spec.prefix}_{i}" for i in range(n_features)]
        adata.layers["counts"] = counts.copy()
        adata.varm["true_loadings"] = loadings.astype(np.float32)
        _annotate(adata, truth, uns)
        mods[name] = adata
    if "rna" in mods:
        _place(mods["rna"], mods.get("atac"), np.random.default_rng([random_state, 4]))
    if len(mods) == 1:
        return next(iter(mods.values()))

    mdata = make_mudata(mods)  # obs is set here, below
    for column in obs:
        mdata.obs[column] = obs[column].values  # .values keeps a categorical a categorical
    _annotate(mdata, truth, uns)
    return mdata


def _counts(
    programs: np.ndarray, loadings: np.ndarray, scale: float, noise: str, theta: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw counts around ``scale * programs @ loadings.T``, a block of cells at a time to bound memory."""
    out = np.empty((programs.shape[0], loadings.shape[0]), dtype=np.float32)
    weights = loadings.T.astype(np.float64) * scale
    for start in range(0, programs.shape[0], CHUNK_CELLS):
        # A covariate offset can be slightly negative for a program with zero activity; no mean is below zero.
        mean = np.maximum(programs[start : start + CHUNK_CELLS] @ weights, 0.0)
        if noise == "negative_binomial":
            mean = rng.gamma(theta, mean / theta)  # gamma-Poisson mixture = negative binomial
        out[start : start + CHUNK_CELLS] = rng.poisson(mean)
    return out


def _place(rna: AnnData, atac: AnnData | None, rng: np.random.Generator) -> None:
    """Give genes positions on a genome and put each peak in the body or promoter of a gene it shares programs with.

    Genes get ``var`` columns ``chrom``, ``start``, ``end`` and ``strand``; peaks are renamed to their coordinates
    (``"chr1-12000-12500"``) and get ``var["gene"]``, the gene they regulate, so that peak loadings can be mapped
    to genes from the coordinates or from the column (:func:`cellsae_kit.tl.peaks_to_genes`).
    """
    n_genes = rna.n_vars
    per_chrom = int(np.ceil(n_genes / N_CHROMOSOMES))
    slot = np.arange(n_genes) % per_chrom
    chrom = np.array([f"chr{1 + i // per_chrom}" for i in range(n_genes)])
    start = 10_000 + GENE_SPACING * slot + rng.integers(0, 5_000, n_genes)
    end = start + rng.integers(2_000, 20_000, n_genes)
    strand = np.where(rng.random(n_genes) < 0.5, "+", "-")
    rna.var["chrom"], rna.var["start"], rna.var["end"], rna.var["strand"] = chrom, start, end, strand
    if atac is None:
        return
    # The gene a peak regulates shares the most programs with it (ties broken at random; any gene if none).
    shared = atac.varm["true_loadings"].astype(np.float32) @ rna.varm["true_loadings"].T.astype(np.float32)
    shared += rng.random(shared.shape, dtype=np.float32) * 0.5
    gene = shared.argmax(axis=1)
    in_promoter = rng.random(atac.n_vars) < 0.5
    tss = np.where(strand[gene] == "+", start[gene], end[gene])
    upstream = rng.integers(PEAK_WIDTH, PROMOTER, atac.n_vars)
    promoter_start = np.where(strand[gene] == "+", tss - upstream, tss + upstream - PEAK_WIDTH)
    body_start = start[gene] + (rng.random(atac.n_vars) * (end[gene] - start[gene] - PEAK_WIDTH)).astype(np.int64)
    peak_start = np.where(in_promoter, promoter_start, body_start)
    names = pd.Index([f"{c}-{a}-{a + PEAK_WIDTH}" for c, a in zip(chrom[gene], peak_start, strict=True)])
    while names.has_duplicates:  # two peaks drawn at the same place: move the later one by a base
        repeated = names.duplicated()
        peak_start[repeated] += 1
        names = pd.Index([f"{c}-{a}-{a + PEAK_WIDTH}" for c, a in zip(chrom[gene], peak_start, strict=True)])
    atac.var_names = names
    atac.var["gene"] = rna.var_names[gene].to_numpy()


def _annotate(obj, truth: dict[str, np.ndarray], uns: dict) -> None:
    for key, value in truth.items():
        obj.obsm[key] = value.copy()
    obj.uns["simulation"] = {
        key: (dict(value) if isinstance(value, dict) else value.copy()) for key, value in uns.items()
    }


def _check_count(value: object, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer of at least {minimum}.")


def _check(n_cells, n_programs, n_cell_types, modalities, design, p_active, p_gene, n_covariates, noise, theta):
    _check_count(n_cells, "n_cells", 2)
    _check_count(n_programs, "n_programs")
    _check_count(n_covariates, "n_covariates")
    if design not in DESIGNS:
        raise ValueError(f"design={design!r} is not known; choose 'cell_type' or 'independent'.")
    if design == "independent" and n_cell_types is not None:
        raise ValueError(
            "design='independent' switches programs on in each cell independently, so there are no cell types; "
            "leave out n_cell_types (or use design='cell_type')."
        )
    if n_cell_types is not None:
        _check_count(n_cell_types, "n_cell_types")
    if isinstance(modalities, str):
        modalities = (modalities,)
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if not modalities or unknown or len(set(modalities)) != len(modalities):
        raise ValueError(
            f"modalities={modalities!r}: give one or more distinct names out of {', '.join(map(repr, MODALITIES))}."
        )
    for value, name in ((p_active, "p_active"), (p_gene, "p_gene")):
        if not 0 < value <= 1:
            raise ValueError(f"{name}={value} must be a probability in (0, 1].")
    if noise not in NOISES:
        raise ValueError(f"noise={noise!r} is not known; choose 'poisson' or 'negative_binomial'.")
    if not theta > 0:
        raise ValueError(f"theta={theta} must be positive (smaller means more overdispersed counts).")
    return modalities
