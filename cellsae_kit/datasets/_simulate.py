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

Design = Literal["cell_type", "independent", "hierarchy"]
Noise = Literal["poisson", "negative_binomial"]
DESIGNS: tuple[str, ...] = ("cell_type", "independent", "hierarchy")
# Defaults of the hierarchical design: 4 lineages of 3 subtypes each.
N_LINEAGES = 4
N_SUBTYPES = 3
#: The programme levels of the hierarchical design, as stored in ``uns["simulation"]["program_level"]``.
LEVELS: tuple[str, ...] = ("lineage", "subtype", "state")
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
    n_lineages: int | None = None,
    n_subtypes: int | Sequence[int] | None = None,
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
       ``design="hierarchy"``: a tree of ``n_lineages`` lineages (default 4), each split into subtypes
       (``n_subtypes`` per lineage, default 3, or one count per lineage), for the absorption of a parent
       feature into its children (:func:`cellsae_kit.tl.absorption`). The columns of ``obsm["true_programs"]``
       split, in this order, into one lineage programme per lineage (columns ``0 .. n_lineages - 1``), one
       subtype programme per subtype (the next ``sum(n_subtypes)`` columns, lineage by lineage) and, with the
       rest of ``n_programs``, state programmes. The cells are split evenly over the subtypes (in random
       order); in each cell its lineage's programme (shared by all subtypes of the lineage) and its subtype's
       programme are on and the other tree programmes off. Each state programme is switched on independently in
       every cell with probability ``p_active`` and scaled by a continuous intensity, uniform on [0, 1] per cell
       (a graded state such as activation or cycling). So that no level is systematically weaker, the evenly
       spaced rates of step 1 go to the programmes in a random order (``uns["simulation"]["rates"]`` holds
       each programme's own).
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
        ``design="independent"`` and ``design="hierarchy"`` (whose cell types are the subtypes).
    modalities
        ``("rna",)`` gives an AnnData; several, such as ``("rna", "atac")`` or ``("rna", "prot")``, give a
        :class:`mudata.MuData` with one modality each.
    n_genes, n_peaks, n_proteins
        Features of the ``rna``, ``atac`` and ``prot`` modalities.
    design
        ``"cell_type"``, ``"independent"`` or ``"hierarchy"`` (see above).
    p_active
        Probability that a program is on in a cell type's mask (or in a cell, for ``"independent"`` and for the
        state programmes of ``"hierarchy"``).
    p_gene
        Probability that a program drives a gene.
    n_covariates
        Number of covariates (the study: 3).
    noise
        ``"poisson"`` or ``"negative_binomial"``.
    theta
        Inverse dispersion of the negative binomial.
    n_lineages
        Number of lineages of ``design="hierarchy"`` (default 4); only for that design.
    n_subtypes
        Subtypes per lineage of ``design="hierarchy"``: one number for all lineages (default 3) or one per
        lineage; only for that design. ``n_programs`` must be at least ``n_lineages + sum(n_subtypes)``, the
        programmes of the tree; the rest are state programmes.
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
        - ``obs["cell_type"]`` (``design="cell_type"``; for ``"hierarchy"`` the subtype, named
          ``"type_<lineage>.<subtype>"``, after ``obs["lineage"]``), ``obs["covariate"]`` and
          ``obs["covariate_offset"]``;
        - ``varm["true_loadings"]``: features x programs, 1 where a program drives the feature;
        - for RNA, gene positions on a made-up genome in ``var`` (``chrom``, ``start``, ``end``, ``strand``); for
          ATAC, peaks named by their coordinates (``"chr1-12000-12500"``), each in the body or promoter of the gene
          it regulates (the gene sharing the most programs with the peak, named in ``var["gene"]``);
        - ``uns["simulation"]``: ``params``, ``rates`` of the programs, ``covariate_means`` and, for the cell-type
          design, ``cell_type_masks`` (cell types x programs, boolean). For ``"hierarchy"`` also
          ``cell_type_masks`` (subtypes x programs: the lineage and subtype programme on in each subtype; the
          state programmes, switched on per cell, are False there), ``program_level`` (``"lineage"``,
          ``"subtype"`` or ``"state"`` per programme) and the ``tree``: a DataFrame indexed by subtype with
          columns ``lineage``, ``lineage_program`` (the column of ``obsm["true_programs"]`` of the parent
          programme) and ``subtype_program`` (that of the child programme), which
          :func:`cellsae_kit.tl.absorption` reads with ``truth="true_programs"``.

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

    Two lineages of two and three subtypes, 7 tree programmes and 3 state programmes:

    >>> tree = csk.datasets.simulate(600, 10, design="hierarchy", n_lineages=2, n_subtypes=[2, 3], n_genes=100)
    >>> tree.uns["simulation"]["tree"]
              lineage  lineage_program  subtype_program
    type_0.0  lineage_0                0                2
    type_0.1  lineage_0                0                3
    type_1.0  lineage_1                1                4
    type_1.1  lineage_1                1                5
    type_1.2  lineage_1                1                6
    >>> tree.uns["simulation"]["program_level"].tolist()
    ['lineage', 'lineage', 'subtype', 'subtype', 'subtype', 'subtype', 'subtype', 'state', 'state', 'state']
    """
    modalities = _check(
        n_cells, n_programs, n_cell_types, modalities, design, p_active, p_gene, n_covariates, noise, theta
    )
    subtypes = _check_tree(n_cells, n_programs, design, n_lineages, n_subtypes)
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
    tree = None
    if design == "cell_type":
        masks = structure.random((n_cell_types, n_programs)) < p_active
        for program in np.flatnonzero(~masks.any(axis=0)):
            masks[structure.integers(n_cell_types), program] = True
    elif design == "hierarchy":
        tree, masks, levels = _tree(subtypes, n_programs)
        n_cell_types = len(tree)
        rates = rates[structure.permutation(n_programs)]

    activity = cells.poisson(rates, size=(n_cells, n_programs)).astype(np.float64)
    covariate = cells.integers(n_covariates, size=n_cells)
    offset = cells.normal(covariate_means[covariate], COVARIATE_SD)
    if tree is not None:
        # Subtypes split the cells evenly (every subtype programme varies); state programmes are switched on
        # per cell and scaled by a continuous intensity.
        cell_type = cells.permutation(np.arange(n_cells) % n_cell_types)
        on = masks[cell_type].astype(np.float64)
        states = levels == "state"
        on[:, states] = (cells.random((n_cells, int(states.sum()))) < p_active) * cells.random(
            (n_cells, int(states.sum()))
        )
    elif masks is not None:
        cell_type = cells.integers(n_cell_types, size=n_cells)
        on = masks[cell_type]
    else:
        cell_type = None
        on = cells.random((n_cells, n_programs)) < p_active
    programs = (activity + offset[:, None]) * on

    obs = pd.DataFrame(index=pd.Index([f"cell_{i}" for i in range(n_cells)]))
    if tree is not None:
        lineages = list(dict.fromkeys(tree["lineage"]))
        obs["lineage"] = pd.Categorical.from_codes(
            pd.Index(lineages).get_indexer(tree["lineage"].to_numpy()[cell_type]), lineages
        )
        obs["cell_type"] = pd.Categorical.from_codes(cell_type, list(tree.index))
    elif cell_type is not None:
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
        | ({"n_cell_types": n_cell_types} if masks is not None else {})
        | (
            {"n_lineages": len(subtypes), "n_subtypes": list(subtypes), "n_states": int((levels == "state").sum())}
            if tree is not None
            else {}
        ),
        "rates": rates,
        "covariate_means": covariate_means,
    } | ({"cell_type_masks": masks} if masks is not None else {})
    if tree is not None:
        uns |= {"tree": tree, "program_level": levels}

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


def _tree(subtypes: list[int], n_programs: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Build the hierarchical design's tree (one row per subtype), the subtypes' masks and each programme's level."""
    n_lineages, n_types = len(subtypes), sum(subtypes)
    lineage = np.repeat(np.arange(n_lineages), subtypes)
    names = [f"type_{i}.{j}" for i, n in enumerate(subtypes) for j in range(n)]
    tree = pd.DataFrame(
        {
            "lineage": [f"lineage_{i}" for i in lineage],
            "lineage_program": lineage.astype(np.int64),
            "subtype_program": np.arange(n_lineages, n_lineages + n_types, dtype=np.int64),
        },
        index=pd.Index(names),
    )
    masks = np.zeros((n_types, n_programs), dtype=bool)
    masks[np.arange(n_types), lineage] = True
    masks[np.arange(n_types), tree["subtype_program"].to_numpy()] = True
    levels = np.array(
        ["lineage"] * n_lineages + ["subtype"] * n_types + ["state"] * (n_programs - n_lineages - n_types)
    )
    return tree, masks, levels


def _check_tree(n_cells: int, n_programs: int, design: str, n_lineages: object, n_subtypes: object) -> list[int] | None:
    """Check the tree of ``design="hierarchy"``; return the number of subtypes of each lineage."""
    if design != "hierarchy":
        if n_lineages is not None or n_subtypes is not None:
            raise ValueError(
                f"n_lineages and n_subtypes shape the tree of design='hierarchy'; with design={design!r} leave "
                "them out (or pass design='hierarchy')."
            )
        return None
    n_lineages = N_LINEAGES if n_lineages is None else n_lineages
    _check_count(n_lineages, "n_lineages")
    n_subtypes = N_SUBTYPES if n_subtypes is None else n_subtypes
    if isinstance(n_subtypes, int | np.integer) and not isinstance(n_subtypes, bool):
        n_subtypes = [int(n_subtypes)] * n_lineages
    elif isinstance(n_subtypes, Sequence | np.ndarray) and not isinstance(n_subtypes, str):
        n_subtypes = list(n_subtypes)
        if len(n_subtypes) != n_lineages:
            raise ValueError(
                f"n_subtypes={n_subtypes!r} gives {len(n_subtypes)} counts for n_lineages={n_lineages} lineages; "
                "pass one count per lineage, or one number for all."
            )
    else:
        raise ValueError(f"n_subtypes={n_subtypes!r} must be an integer or one integer per lineage.")
    for count in n_subtypes:
        _check_count(count, "each of n_subtypes")
    n_subtypes = [int(count) for count in n_subtypes]
    n_tree = n_lineages + sum(n_subtypes)
    if n_programs < n_tree:
        raise ValueError(
            f"n_programs={n_programs} is fewer than the tree's {n_tree} programmes ({n_lineages} lineage + "
            f"{sum(n_subtypes)} subtype programmes); pass n_programs >= {n_tree} (the rest are state programmes) "
            "or fewer lineages or subtypes."
        )
    if n_cells < sum(n_subtypes):
        raise ValueError(
            f"n_cells={n_cells} is fewer than the {sum(n_subtypes)} subtypes; pass at least one cell per subtype."
        )
    return n_subtypes


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
        raise ValueError(f"design={design!r} is not known; choose 'cell_type', 'independent' or 'hierarchy'.")
    if design == "independent" and n_cell_types is not None:
        raise ValueError(
            "design='independent' switches programs on in each cell independently, so there are no cell types; "
            "leave out n_cell_types (or use design='cell_type')."
        )
    if design == "hierarchy" and n_cell_types is not None:
        raise ValueError(
            "design='hierarchy' makes its cell types from the tree (n_lineages lineages of n_subtypes subtypes "
            "each); leave out n_cell_types and set n_lineages and n_subtypes instead."
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
