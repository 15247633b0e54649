"""``tl.annotate_features``: name features by the gene sets their loadings raise (decoupler on features x genes)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import get
from .._docs import doc_params
from ._null import expression_strata, matched_pvalues
from ._shared import correlation, feature_table, get_expression, moments
from ._terms import MIN_JACCARD, cluster_terms, membership

COLUMNS = ["feature", "rank", "term", "cluster", "n_terms", "score", "pval_adj", "z", "pval_matched_adj"]
Null = Literal["expression", "none"]
MIN_HALF = 20  # cells on each side of the held-out split
NULLS = ("expression", "none")


def get_net(net: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Return a decoupler network (``source``, ``target``, ``weight``) from a name, a file or a DataFrame."""
    from ..datasets import genesets

    # Bundled sets are already limited to 10-500 genes; a user's own sets are taken as given (tmin still applies).
    return genesets(net, min_size=None, max_size=None)


def normal_scores(loadings: pd.DataFrame) -> pd.DataFrame:
    """Replace each row by the normal quantiles of its ranks; all-zero rows stay zero.

    Examples
    --------
    >>> import pandas as pd
    >>> from cellsae_kit.tl._annotate import normal_scores
    >>> normal_scores(pd.DataFrame([[0.1, 50.0, -2.0]])).round(2).values.tolist()
    [[0.0, 0.97, -0.97]]
    """
    from scipy import stats  # imported here: scipy.stats is slow to load and large

    values = loadings.to_numpy(dtype=np.float64)
    ranks = stats.rankdata(values, axis=1)
    scores = stats.norm.ppf((ranks - 0.5) / values.shape[1])
    scores[~(values != 0).any(axis=1)] = 0.0
    return pd.DataFrame(scores, index=loadings.index, columns=loadings.columns)


def decoupler_scores(
    loadings: pd.DataFrame, net: pd.DataFrame, method: str = "ulm", tmin: int = 5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decoupler's scores and adjusted p-values, features x terms; rows of all-zero loadings are NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from cellsae_kit.tl._annotate import decoupler_scores
    >>> genes = [f"g{i}" for i in range(40)]
    >>> loadings = pd.DataFrame(np.random.default_rng(0).normal(size=(2, 40)), index=["0", "1"], columns=genes)
    >>> loadings.iloc[0, :10] += 2.0
    >>> net = pd.DataFrame({"source": ["A"] * 10 + ["B"] * 10, "target": genes[:10] + genes[20:30]})
    >>> scores, pvals_adj = decoupler_scores(loadings, net)
    >>> bool(scores.loc["0", "A"] > 5), bool(pvals_adj.loc["0", "A"] < 1e-3)
    (True, True)
    """
    import decoupler as dc

    run = getattr(dc.mt, method, None)
    if run is None or method in ("consensus", "decouple", "show"):
        raise ValueError(f"method={method!r} is not a decoupler method; try 'ulm', 'mlm' or 'zscore'.")
    with warnings.catch_warnings():
        # decoupler warns about the features it drops for all-zero loadings; they are put back below.
        warnings.simplefilter("ignore", UserWarning)
        # Rows of zeros have no variance and would give NaN p-values inside decoupler.
        live = loadings.loc[(loadings != 0).any(axis=1)]
        result = run(live, net, tmin=tmin, verbose=False) if len(live) else None
    if result is None and not len(live):
        terms = pd.Index(sorted(net["source"].astype(str).unique()))
        empty = pd.DataFrame(np.nan, index=loadings.index, columns=terms)
        return empty, empty.copy()
    if result is None or len(result) != 2:
        raise ValueError(f"decoupler's {method!r} gives no p-values; try 'ulm', 'mlm' or 'zscore'.")
    scores, pvals_adj = (frame.reindex(loadings.index) for frame in result)
    return scores, pvals_adj


def enrich(
    loadings: pd.DataFrame,
    net: pd.DataFrame,
    *,
    strata: np.ndarray | None = None,
    null: Null = "expression",
    method: str = "ulm",
    tmin: int = 5,
    n_top: int = 10,
    alpha: float = 0.05,
    min_jaccard: float = MIN_JACCARD,
) -> pd.DataFrame:
    """Gene-set enrichment of each feature's gene loadings, one row per programme (the array core).

    Parameters
    ----------
    loadings
        Features x genes, one row per feature (index: feature names), genes as columns (e.g. normal scores).
    net
        decoupler network with ``source``, ``target`` and optionally ``weight``.
    strata
        Expression stratum of each gene (column) for the matched null (:func:`~cellsae_kit.tl._null.expression_strata`);
        ``None`` puts every gene in one stratum.
    null
        ``"expression"``: terms are ranked and called significant by the matched null; ``"none"``: by decoupler.
    method
        A decoupler method that gives scores and adjusted p-values (``"ulm"``, ``"mlm"``, ``"zscore"``, ...).
    tmin
        Smallest number of a set's genes that must be among the columns of ``loadings``.
    n_top
        Programmes (term clusters) kept per feature, the strongest first.
    alpha
        Adjusted p-value below which a term is significant; a cluster's representative is its most specific
        (smallest) significant term.
    min_jaccard
        Terms sharing at least this Jaccard index of the data's genes (average linkage) are one programme.

    Returns
    -------
    A tidy table: ``feature``, ``rank`` (1 = strongest programme), ``term`` (the cluster's representative),
    ``cluster`` (named after its largest term), ``n_terms`` (significant terms of the cluster for this feature),
    ``score`` and ``pval_adj`` (decoupler's, Benjamini-Hochberg over the terms of each feature), ``z`` and
    ``pval_matched_adj`` (the matched null, adjusted the same way). A feature with all-zero loadings gets one row
    with missing values.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from cellsae_kit.tl._annotate import enrich
    >>> genes = [f"g{i}" for i in range(40)]
    >>> loadings = pd.DataFrame(np.zeros((2, 40)), index=["0", "1"], columns=genes)
    >>> loadings.iloc[0] = np.random.default_rng(0).normal(scale=0.1, size=40)
    >>> loadings.iloc[0, :10] += 1.0
    >>> net = pd.DataFrame({"source": ["A"] * 10 + ["B"] * 10, "target": genes[:10] + genes[20:30]})
    >>> enrich(loadings, net, n_top=1)[["feature", "term", "rank"]]
      feature term  rank
    0       0    A   1.0
    1       1  NaN   NaN
    """
    from scipy import stats

    if null not in NULLS:
        raise ValueError(f"null={null!r} is not known; choose one of {', '.join(map(repr, NULLS))}.")
    genes = pd.Index(loadings.columns.astype(str))
    terms, members = membership(net, genes, tmin)
    features = loadings.index
    live = (loadings != 0).any(axis=1).to_numpy()
    values = loadings.to_numpy(dtype=np.float64).T  # genes x features
    strata = np.zeros(len(genes), dtype=np.int64) if strata is None else np.asarray(strata)
    z, pvals = matched_pvalues(values, members, strata)
    matched_adj = stats.false_discovery_control(pvals, axis=0) if len(terms) else pvals
    scores, pvals_adj = decoupler_scores(loadings, net, method, tmin)
    scores, pvals_adj = (frame.reindex(columns=terms).to_numpy(dtype=np.float64).T for frame in (scores, pvals_adj))
    stat, chosen = (z, matched_adj) if null == "expression" else (np.nan_to_num(scores, nan=-np.inf), pvals_adj)
    significant = (chosen < alpha) & (stat > 0)

    # Cluster only the terms a feature could be named by: its strongest and its significant ones.
    n_candidates = min(len(terms), max(5 * int(n_top), 50))
    strongest = np.argsort(-stat, axis=0, kind="stable")[:n_candidates]
    candidate = np.zeros(stat.shape, dtype=bool)
    np.put_along_axis(candidate, strongest, True, axis=0)
    candidate = (candidate | significant) & live[None, :]
    used = np.flatnonzero(candidate.any(axis=1))
    clusters = cluster_terms(terms[used], members[used], min_jaccard) if len(used) else None
    rows = []
    if clusters is not None:
        term_i, feature_i = np.nonzero(candidate)
        long = pd.DataFrame(
            {
                "feature": features[feature_i],
                "term": terms[term_i],
                "stat": stat[term_i, feature_i],
                "significant": significant[term_i, feature_i],
                "score": scores[term_i, feature_i],
                "pval_adj": pvals_adj[term_i, feature_i],
                "z": z[term_i, feature_i],
                "pval_matched_adj": matched_adj[term_i, feature_i],
            }
        )
        long["cluster"] = clusters["cluster"].reindex(long["term"]).to_numpy()
        long["n_genes"] = clusters["n_genes"].reindex(long["term"]).to_numpy()
        per_cluster = long.groupby(["feature", "cluster"], sort=False)
        long["cluster_stat"] = per_cluster["stat"].transform("max")
        long["n_terms"] = per_cluster["significant"].transform("sum")
        # The representative: the most specific significant term, else the strongest one.
        long["specificity"] = np.where(long["significant"], long["n_genes"], 0)
        long = long.sort_values(["significant", "specificity", "stat"], ascending=[False, True, False])
        best = long.drop_duplicates(["feature", "cluster"]).sort_values("cluster_stat", ascending=False)
        best = best.groupby("feature", sort=False).head(int(n_top))
        best["rank"] = best.groupby("feature", sort=False).cumcount() + 1.0
        rows.append(best)
    dead = pd.DataFrame({"feature": features[~live]})
    table = pd.concat([*rows, dead], ignore_index=True)
    table["feature"] = pd.Categorical(table["feature"], categories=list(features))
    table = table.sort_values(["feature", "rank"], na_position="last").reset_index(drop=True)
    table["term"] = pd.Categorical(table["term"])
    table["cluster"] = pd.Categorical(table["cluster"])
    table["n_terms"] = table["n_terms"].astype(np.float64)
    return table[COLUMNS]


def split_cells(n_cells: int, held_out: float, random_state: int = 0) -> np.ndarray:
    """Mark ``held_out`` of ``n_cells`` cells, drawn at random with ``random_state`` (True = held out).

    Examples
    --------
    >>> from cellsae_kit.tl._annotate import split_cells
    >>> mask = split_cells(10, 0.5)
    >>> int(mask.sum()), mask.tolist() == split_cells(10, 0.5).tolist()
    (5, True)
    """
    if isinstance(held_out, bool) or not isinstance(held_out, int | float) or not 0 <= held_out < 1:
        raise ValueError(f"held_out={held_out!r} must be a fraction in [0, 1) (0 annotates and checks on all cells).")
    mask = np.zeros(n_cells, dtype=bool)
    mask[np.random.default_rng(random_state).permutation(n_cells)[: round(n_cells * held_out)]] = True
    return mask


@doc_params
def annotate_features(
    adata: AnnData,
    net: str | Path | pd.DataFrame = "go_bp",
    key: str = "sae",
    *,
    loadings: str | None = None,
    null: Null = "expression",
    held_out: float = 0.5,
    random_state: int = 0,
    min_jaccard: float = MIN_JACCARD,
    layer: str | None = None,
    use_raw: bool | None = None,
    method: str = "ulm",
    tmin: int = 5,
    n_top: int = 10,
    alpha: float = 0.05,
    transform: Literal["rank", None] = "rank",
    mod: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Name each SAE feature by the gene sets its gene loadings raise, against genes of the same expression.

    1. **Cells.** ``held_out`` of the cells (drawn with ``random_state``) are set aside for
       :func:`score_annotations`; everything below uses the other cells only, so that the check is honest.
    2. **Loadings.** By default each feature's Pearson correlation with every gene's expression (log-normalised:
       ``adata.raw``, ``layer`` or ``X``, as :func:`cellsae_kit.tl.feature_genes`), over all genes; ``loadings``
       names a ``varm`` key to test instead (e.g. the PCA-composed ``"<key>_loadings"``, which cover only the genes
       the PCA used). With ``transform="rank"`` each feature's loadings become normal scores of their ranks.
    3. **A null matched to expression.** A set's statistic is the sum of its genes' scores. Its null
       distribution comes from permuting gene labels within strata of mean expression (10 quantile bins), so a set
       of highly expressed genes (ribosomal proteins, say) must beat other highly expressed genes, not all genes;
       the p-value is the normal tail beyond the permutation distribution's exact mean and variance (see
       ``cellsae_kit.tl._null``). decoupler's test against all genes (``method``) is reported beside it; both are
       Benjamini-Hochberg adjusted over the terms of each feature.
    4. **One term per programme.** Terms sharing at least ``min_jaccard`` of their genes in the data (average
       linkage) form one cluster, named after its largest term; a feature's representative of a cluster is its
       most specific (smallest) significant term. The table lists clusters, not near-duplicates.

    Parameters
    ----------
    {adata}
    net
        ``"go_bp"`` (GO Biological Process) or ``"progeny"`` (the bundled offline sets, see
        :func:`cellsae_kit.datasets.genesets`), a path to a GMT or table file, or a DataFrame with ``source``,
        ``target`` and optionally ``weight`` columns (e.g. a resource from ``decoupler.op`` when online).
    {key}
    loadings
        ``None`` (default): correlations of the activations with expression on the annotation cells, written to
        ``varm["<key>_annotation_loadings"]``. Or a ``varm`` key of genes x features loadings to test as they are
        (for example the gene loadings of ATAC features written by :func:`cellsae_kit.tl.peaks_to_genes`).
    null
        ``"expression"`` (default): best terms from the matched null; ``"none"``: from decoupler's p-values.
    held_out
        Fraction of cells held out for :func:`score_annotations` (0: annotate and check on all cells).
    random_state
        Seed of the split.
    min_jaccard
        Jaccard index (on the data's genes) from which terms are one programme; ``1`` merges only identical sets.
    layer, use_raw
        Expression for the correlations and the strata, as in :func:`cellsae_kit.tl.feature_genes`.
    method
        decoupler method reported beside the matched null: ``"ulm"`` (default), ``"mlm"``, ``"zscore"``, ...
    tmin
        Gene sets with fewer genes among the data's informative genes are skipped.
    n_top
        Programmes kept per feature, the strongest first.
    alpha
        A feature's best term is its strongest programme's representative when that is significant (adjusted
        p-value below ``alpha``).
    transform
        ``"rank"`` (default) replaces each feature's loadings by normal scores of their ranks before the tests;
        ``None`` tests the loadings as they are. Loadings are heavy-tailed, and a linear model on them calls a set
        significant for one extreme gene (``benchmarks/annotation.py`` measures both).
    {mod}
    {copy}

    {copy_returns}
    Writes ``uns[key]["annotation"]`` (tidy, one row per feature and programme: ``feature``, ``rank``,
    ``term``, ``cluster``, ``n_terms``, ``score``, ``pval_adj``, ``z``, ``pval_matched_adj``; all-zero features
    get one row of missing values), ``uns[key]["annotation_params"]``, ``uns[key]["annotation_held_out"]`` (the
    names of the held-out cells), the loadings it computed, and the columns ``best_term``, ``best_term_cluster``,
    ``best_term_score``, ``best_term_pval_adj`` and ``best_term_pval_matched_adj`` of the feature table
    ``uns[key]["features"]`` (made as by :func:`cellsae_kit.tl.feature_stats` when missing).

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", progress=False)
    >>> csk.tl.annotate_features(adata, "progeny")
    >>> adata.uns["sae"]["annotation"].columns.tolist()[:4]
    ['feature', 'rank', 'term', 'cluster']
    """
    codes = get.codes(adata, key)
    genes_of = get.genes(adata, key, mod) if loadings is not None or get.is_mudata(adata) else adata
    mod = get.modality_name(adata, genes_of)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be between 0 and 1.")
    if int(n_top) < 1:
        raise ValueError(f"n_top={n_top} must be at least 1.")
    if transform not in ("rank", None):
        raise ValueError(f"transform={transform!r} is not known; choose 'rank' or None.")
    if null not in NULLS:
        raise ValueError(f"null={null!r} is not known; choose one of {', '.join(map(repr, NULLS))}.")
    if not 0 < min_jaccard <= 1:
        raise ValueError(f"min_jaccard={min_jaccard} must be in (0, 1]; 1 merges only sets with identical genes.")
    held = split_cells(adata.n_obs, held_out, random_state)
    train = np.flatnonzero(~held)
    if held_out and min(held.sum(), len(train)) < MIN_HALF:
        raise ValueError(
            f"held_out={held_out} leaves {len(train)} cells to annotate and {int(held.sum())} to check; each "
            f"needs at least {MIN_HALF}. Pass held_out=0 to annotate and check on all {adata.n_obs} cells."
        )
    expression, source = get_expression(genes_of, layer, use_raw)
    expression = expression[train]
    if loadings is None:
        name = f"{key}_annotation_loadings"
        values = correlation(expression, codes[train])
    else:
        name = loadings
        if name not in genes_of.varm:
            raise KeyError(
                f"adata.varm has no {name!r} (genes x features loadings). Leave loadings=None to correlate the "
                f"activations with expression, or write them with cellsae_kit.tl.feature_genes(adata, key={key!r})."
            )
        values = np.asarray(genes_of.varm[name], dtype=np.float64)
        if values.shape[1] != codes.shape[1]:
            raise ValueError(
                f"varm[{name!r}] has {values.shape[1]} columns but the SAE has {codes.shape[1]} features; "
                "recompute the loadings with cellsae_kit.tl.feature_genes."
            )
        if not np.isfinite(values).all():
            raise ValueError(f"varm[{name!r}] has NaN or infinite values; recompute it with tl.feature_genes.")
    mean, spread = moments(expression)
    informative = (np.abs(values).sum(axis=1) > 0) & (spread > 0)
    if not informative.any():
        raise ValueError(
            f"All features are dead or all genes constant: every loading in varm[{name!r}] is zero, so nothing "
            "can be named."
        )
    genes = genes_of.var_names[informative]
    network = get_net(net)
    shared = network["target"].isin(genes)
    if not shared.any():
        raise ValueError(
            f"The gene sets share no genes with the {len(genes)} informative genes of adata.var_names (e.g. "
            f"{', '.join(genes[:3])}); check that both use gene symbols of the same species."
        )
    sizes = network.loc[shared].groupby("source").size()
    if not (sizes >= tmin).any():
        raise ValueError(
            f"No gene set has at least tmin={tmin} genes among the data's informative genes (largest: "
            f"{int(sizes.max())}); lower tmin or use loadings over more genes (leave loadings=None)."
        )

    features = pd.Index([str(i) for i in range(codes.shape[1])], name="feature")
    matrix = pd.DataFrame(values[informative].T, index=features, columns=genes)
    if transform == "rank":
        matrix = normal_scores(matrix)
    strata = expression_strata(mean[informative], spread[informative])
    annotation = enrich(
        matrix,
        network.loc[shared],
        strata=strata,
        null=null,
        method=method,
        tmin=tmin,
        n_top=n_top,
        alpha=alpha,
        min_jaccard=min_jaccard,
    )
    chosen, stat = ("pval_matched_adj", "z") if null == "expression" else ("pval_adj", "score")
    best = annotation[(annotation["rank"] == 1) & (annotation[chosen] < alpha) & (annotation[stat] > 0)]
    best = best.set_index("feature")
    terms = pd.DataFrame(
        {
            "best_term": pd.Categorical(best["term"].reindex(features).astype(object)),
            "best_term_cluster": pd.Categorical(best["cluster"].reindex(features).astype(object)),
            "best_term_score": best["score"].reindex(features),
            "best_term_pval_adj": best["pval_adj"].reindex(features),
            "best_term_pval_matched_adj": best["pval_matched_adj"].reindex(features),
        },
        index=features,
    )
    adata = adata.copy() if copy else adata
    if loadings is None:
        (adata if mod is None else adata.mod[mod]).varm[name] = values.astype(np.float32)
    stored = get.sae(adata, key)
    old = [] if stored.features is None else [c for c in stored.features if c.startswith("best_term")]
    # the first table gets the statistics too; a new annotation replaces every best_term column of the last one
    stored.add_features(terms if stored.features is not None else feature_table(codes).join(terms), drop=old)
    entry = stored.entry
    entry["annotation"] = annotation
    entry["annotation_held_out"] = np.asarray(adata.obs_names[held], dtype=str)
    entry["annotation_params"] = {
        "net": net if isinstance(net, str) else str(net) if isinstance(net, Path) else "DataFrame",
        "method": method,
        "null": null,
        "tmin": int(tmin),
        "n_top": int(n_top),
        "alpha": float(alpha),
        "min_jaccard": float(min_jaccard),
        "held_out": float(held_out),
        "random_state": int(random_state),
        "n_genes": int(informative.sum()),
        "n_strata": int(strata.max()) + 1,
        "expression": source,
        "transform": "none" if transform is None else transform,
        "loadings": name,
    } | ({"mod": mod} if mod is not None else {})
    return adata if copy else None


@doc_params
def score_annotations(
    adata: AnnData,
    net: str | Path | pd.DataFrame = "go_bp",
    key: str = "sae",
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    method: str = "ulm",
    tmin: int = 5,
    n_exclude: int = 10,
    mod: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Check each feature's best term against the cells it fires in, with the term's per-cell activity.

    :func:`annotate_features` names a feature from its gene loadings alone, and with thousands of gene sets some
    names are lucky. Here decoupler scores every cell for the feature's best term from its expression, and the AUROC
    measures how well that per-cell activity separates the cells where the feature is active from the others:
    about 0.5 means the label says nothing about the cells, close to 1 that the cells that use the feature also run
    the named programme.

    The check runs on the cells :func:`annotate_features` held out (``uns[key]["annotation_held_out"]``): the
    loadings that produced the name never saw them. The feature's own top genes (by those loadings) are left out
    of the term too: a set that was named only because it holds one of the feature's marker genes would otherwise
    predict the feature's cells through that very gene. What remains tests whether the rest of the programme moves
    with the feature.

    Parameters
    ----------
    {adata}
    net
        The gene sets given to :func:`annotate_features`.
    {key}
    layer
        Layer of log-normalised expression for the cell scores.
    use_raw
        Use ``adata.raw`` (default when it exists and no ``layer`` is given).
    method
        decoupler method for the per-cell activities.
    tmin
        As in :func:`annotate_features`; a term left with fewer genes after the exclusion is not scored.
    n_exclude
        The feature's genes with the largest loadings that are left out of its term (0 keeps them all).
    {mod}
    {copy}

    {copy_returns}
    Adds the column ``best_term_auroc`` to ``uns[key]["features"]`` (missing for features without a best term or
    active in no or all held-out cells) and ``uns[key]["annotation_params"]["n_scored_cells"]``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", progress=False)
    >>> csk.tl.annotate_features(adata, "progeny")
    >>> csk.tl.score_annotations(adata, "progeny")
    >>> "best_term_auroc" in adata.uns["sae"]["features"]
    True
    """
    from sklearn.metrics import roc_auc_score

    codes = get.codes(adata, key)
    table = get.sae(adata, key).features
    if table is None or "best_term" not in table:
        raise KeyError(
            f"uns[{key!r}]['features'] has no best terms; run cellsae_kit.tl.annotate_features(adata, key={key!r}) "
            "first."
        )
    genes_of = get.genes(adata, key, mod)
    expression, _ = get_expression(genes_of, layer, use_raw)
    network = get_net(net)
    named = table["best_term"].dropna()
    unknown = sorted(set(named) - set(network["source"]))
    if unknown:
        raise ValueError(
            f"{len(unknown)} best terms (e.g. {unknown[0]!r}) are not in these gene sets; pass the net that "
            "annotate_features used."
        )
    if int(n_exclude) < 0:
        raise ValueError(f"n_exclude={n_exclude} must be 0 or more.")
    entry = get.sae(adata, key).entry
    params = entry.get("annotation_params", {})
    name = params.get("loadings", f"{key}_loadings")
    if n_exclude and name not in genes_of.varm:
        raise KeyError(
            f"varm[{name!r}], the loadings the features were named from, is gone; run "
            f"cellsae_kit.tl.annotate_features(adata, key={key!r}) again."
        )
    held_names = entry.get("annotation_held_out")
    cells = np.arange(adata.n_obs)
    if held_names is not None and len(held_names):
        cells = np.flatnonzero(adata.obs_names.isin(np.asarray(held_names, dtype=str)))
        if len(cells) < MIN_HALF:
            raise ValueError(
                f"Only {len(cells)} of the {len(held_names)} cells held out by annotate_features are in adata (was it "
                f"subset?); run cellsae_kit.tl.annotate_features(adata, key={key!r}) again on these cells."
            )
        expression = expression[cells]
    auroc = pd.Series(np.nan, index=table.index, dtype=np.float64)
    if len(named):
        loadings = genes_of.varm[name] if n_exclude else None
        members = network.groupby("source")["target"].agg(set)
        rows = []
        for feature, term in named.items():
            genes = members[term]
            if n_exclude:
                top = np.argsort(-np.asarray(loadings[:, int(feature)]), kind="stable")[: int(n_exclude)]
                genes = genes - set(genes_of.var_names[top])
            rows += [(feature, gene) for gene in genes]
        # One pseudo-set per feature: its best term without its own top genes.
        sets = pd.DataFrame(rows, columns=["source", "target"]).assign(weight=1.0)
        sets = sets[sets["target"].isin(genes_of.var_names)]
        sets = sets[sets.groupby("source")["target"].transform("size") >= tmin]
        activity = (
            cell_activity(expression, adata.obs_names[cells], genes_of.var_names, sets, method, tmin)
            if len(sets)
            else pd.DataFrame(index=adata.obs_names[cells])
        )
        codes = codes[cells].tocsc()
        for feature in named.index:
            active = np.zeros(codes.shape[0], dtype=bool)
            column = int(feature)
            active[codes.indices[codes.indptr[column] : codes.indptr[column + 1]]] = True
            if 0 < active.sum() < len(active) and feature in activity:
                auroc[feature] = roc_auc_score(active, activity[feature].to_numpy())
    adata = adata.copy() if copy else adata
    stored = get.sae(adata, key)
    stored.add_features(auroc.to_frame("best_term_auroc"))
    if isinstance(stored.entry.get("annotation_params"), dict):
        stored.entry["annotation_params"]["n_scored_cells"] = len(cells)
    return adata if copy else None


def cell_activity(
    expression, cells: pd.Index, genes: pd.Index, net: pd.DataFrame, method: str = "ulm", tmin: int = 5
) -> pd.DataFrame:
    """Per-cell activity (cells x terms) of gene sets from expression with a decoupler method.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from cellsae_kit.tl._annotate import cell_activity
    >>> genes = pd.Index([f"g{i}" for i in range(20)])
    >>> x = np.random.default_rng(0).normal(scale=0.1, size=(2, 20))
    >>> x[0, :5] += 3.0
    >>> net = pd.DataFrame({"source": ["A"] * 5, "target": genes[:5]})
    >>> activity = cell_activity(x, pd.Index(["c0", "c1"]), genes, net)
    >>> bool(activity.loc["c0", "A"] > 10 > activity.loc["c1", "A"])
    True
    """
    import decoupler as dc

    run = getattr(dc.mt, method, None)
    if run is None:
        raise ValueError(f"method={method!r} is not a decoupler method; try 'ulm', 'mlm' or 'zscore'.")
    X = sparse.csr_matrix(expression) if sparse.issparse(expression) else np.asarray(expression)
    # A cell with the same value for every gene (e.g. no counts) has no activity; decoupler would give it NaN.
    squares = X.multiply(X) if sparse.issparse(X) else X**2
    spread = np.asarray(squares.mean(axis=1)).ravel() - np.asarray(X.mean(axis=1)).ravel() ** 2
    varied = spread > 1e-12
    # decoupler reads sparse matrices only from an AnnData; it writes its scores into this scratch object's obsm.
    scratch = AnnData(
        X=X[varied],
        obs=pd.DataFrame(index=np.asarray(cells, dtype=str)[varied]),
        var=pd.DataFrame(index=np.asarray(genes, dtype=str)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run(scratch, net, tmin=tmin, empty=False, verbose=False)
    scores = scratch.obsm[f"score_{method}"]
    return scores.reindex(np.asarray(cells, dtype=str)).set_axis(cells).fillna(0.0)
