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
from ._shared import feature_table, get_expression

COLUMNS = ["feature", "term", "score", "pval_adj", "rank"]


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


def enrich(
    loadings: pd.DataFrame, net: pd.DataFrame, *, method: str = "ulm", tmin: int = 5, n_top: int = 10
) -> pd.DataFrame:
    """Gene-set enrichment of each feature's gene loadings (the array core of :func:`annotate_features`).

    Parameters
    ----------
    loadings
        Features x genes, one row per feature (index: feature names), genes as columns.
    net
        decoupler network with ``source``, ``target`` and optionally ``weight``.
    method
        A decoupler method that gives scores and adjusted p-values (``"ulm"``, ``"mlm"``, ``"zscore"``, ...).
    tmin
        Smallest number of a set's genes that must be among the columns of ``loadings``.
    n_top
        Terms kept per feature, the highest scores first.

    Returns
    -------
    A tidy table with the columns ``feature``, ``term``, ``score``, ``pval_adj`` (Benjamini-Hochberg over the
    terms of each feature, as decoupler computes it) and ``rank`` (1 = highest score). Every feature of
    ``loadings`` appears: one with all-zero loadings gets a single row with missing term and score.

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
        result = (pd.DataFrame(index=live.index), pd.DataFrame(index=live.index))
    if result is None or len(result) != 2:
        raise ValueError(f"decoupler's {method!r} gives no p-values; try 'ulm', 'mlm' or 'zscore'.")
    scores, pvals_adj = (frame.reindex(loadings.index) for frame in result)
    n_keep = min(int(n_top), scores.shape[1])
    values = scores.to_numpy(dtype=np.float64)
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), axis=1, kind="stable")[:, :n_keep]
    rows = []
    for i, feature in enumerate(loadings.index):
        if np.isnan(values[i]).all():
            rows.append({"feature": feature, "term": np.nan, "score": np.nan, "pval_adj": np.nan, "rank": np.nan})
            continue
        for rank, j in enumerate(order[i], start=1):
            term = scores.columns[j]
            rows.append(
                {
                    "feature": feature,
                    "term": term,
                    "score": values[i, j],
                    "pval_adj": float(pvals_adj.iat[i, j]),
                    "rank": float(rank),
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    # Categorical columns keep missing terms writable to .h5ad (object columns with NaN are not).
    table["feature"] = pd.Categorical(table["feature"], categories=list(loadings.index))
    table["term"] = pd.Categorical(table["term"])
    return table


@doc_params
def annotate_features(
    adata: AnnData,
    net: str | Path | pd.DataFrame = "go_bp",
    key: str = "sae",
    *,
    method: str = "ulm",
    tmin: int = 5,
    n_top: int = 10,
    alpha: float = 0.05,
    transform: Literal["rank", None] = "rank",
    mod: str | None = None,
    loadings: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Annotate each SAE feature with the gene sets its gene loadings raise, using decoupler.

    A feature's column of ``varm["<key>_loadings"]`` says how much the feature raises each gene. decoupler's
    univariate linear model (``method="ulm"``) asks, for each gene set, whether the set's genes have larger
    loadings than the other genes: a positive score with a small adjusted p-value names what the feature does.
    Genes whose loadings are zero for every feature (e.g. genes the PCA did not use) carry no information and are
    left out of the test.

    Parameters
    ----------
    {adata}
    net
        ``"go_bp"`` (GO Biological Process) or ``"progeny"`` (the bundled offline sets, see
        :func:`cellsae_kit.datasets.genesets`), a path to a GMT or table file, or a DataFrame with ``source``,
        ``target`` and optionally ``weight`` columns (e.g. a resource from ``decoupler.op`` when online).
    {key}
    method
        decoupler method: ``"ulm"`` (default), ``"mlm"``, ``"zscore"``, ...
    tmin
        Gene sets with fewer genes among the data's genes are skipped.
    n_top
        Terms kept per feature, the highest scores first.
    alpha
        A feature's best term is its highest positive score with adjusted p-value below ``alpha``.
    transform
        ``"rank"`` (default) replaces each feature's loadings by normal scores of their ranks before the test;
        ``None`` tests the loadings as they are. Loadings are heavy-tailed, and a linear model on them calls a set
        significant for one extreme gene: on ``pbmc68k_reduced`` gene sets with randomly drawn genes named 38 % of
        the features of an SAE from their raw loadings and 1.4 % after the rank transform (real GO BP sets: 65 %
        and 37 %; ``benchmarks/annotation.py``).
    {mod}
    loadings
        ``varm`` key of the loadings to test (default ``"<key>_loadings"``; for example the gene loadings of ATAC
        features written by :func:`cellsae_kit.tl.peaks_to_genes`).
    {copy}

    {copy_returns}
    Writes ``uns[key]["annotation"]`` (tidy: ``feature``, ``term``, ``score``, ``pval_adj``, ``rank``; every
    feature present, all-zero ones with missing terms), ``uns[key]["annotation_params"]``, and the columns
    ``best_term``, ``best_term_score`` and ``best_term_pval_adj`` of the feature table ``uns[key]["features"]``
    (made as by :func:`cellsae_kit.tl.feature_stats` when missing).

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> csk.tl.annotate_features(adata, "progeny")
    >>> adata.uns["sae"]["annotation"].columns.tolist()
    ['feature', 'term', 'score', 'pval_adj', 'rank']
    """
    codes = get.codes(adata, key)
    genes_of = get.genes(adata, key, mod)
    mod = get.modality_name(adata, genes_of)
    name = f"{key}_loadings" if loadings is None else loadings
    if name not in genes_of.varm:
        raise KeyError(
            f"adata.varm has no {name!r} (genes x features loadings). tl.sae fills it when trained on expression or "
            f"on a PCA with loadings; for other representations run cellsae_kit.tl.feature_genes(adata, key={key!r})."
        )
    values = np.asarray(genes_of.varm[name], dtype=np.float64)
    if values.shape[1] != codes.shape[1]:
        raise ValueError(
            f"varm[{name!r}] has {values.shape[1]} columns but the SAE has {codes.shape[1]} features; "
            "recompute the loadings with cellsae_kit.tl.feature_genes."
        )
    if not np.isfinite(values).all():
        raise ValueError(f"varm[{name!r}] has NaN or infinite values; recompute it with cellsae_kit.tl.feature_genes.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} must be between 0 and 1.")
    if int(n_top) < 1:
        raise ValueError(f"n_top={n_top} must be at least 1.")
    informative = np.abs(values).sum(axis=1) > 0
    if not informative.any():
        raise ValueError(f"All features are dead: every loading in varm[{name!r}] is zero, so nothing can be named.")
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
            f"{int(sizes.max())}); lower tmin or use loadings over more genes (cellsae_kit.tl.feature_genes)."
        )

    features = pd.Index([str(i) for i in range(codes.shape[1])], name="feature")
    if transform not in ("rank", None):
        raise ValueError(f"transform={transform!r} is not known; choose 'rank' or None.")
    matrix = pd.DataFrame(values[informative].T, index=features, columns=genes)
    if transform == "rank":
        matrix = normal_scores(matrix)
    annotation = enrich(matrix, network.loc[shared], method=method, tmin=tmin, n_top=n_top)

    hits = annotation[(annotation["score"] > 0) & (annotation["pval_adj"] < alpha)]
    best = hits.sort_values("score", ascending=False).drop_duplicates("feature").set_index("feature")
    terms = pd.DataFrame(
        {
            "best_term": pd.Categorical(best["term"].reindex(features).astype(object)),
            "best_term_score": best["score"].reindex(features),
            "best_term_pval_adj": best["pval_adj"].reindex(features),
        },
        index=features,
    )
    adata = adata.copy() if copy else adata
    stored = get.sae(adata, key)
    old = [] if stored.features is None else [c for c in stored.features if c.startswith("best_term")]
    # the first table gets the statistics too; a new annotation replaces every best_term column of the last one
    stored.add_features(terms if stored.features is not None else feature_table(codes).join(terms), drop=old)
    entry = stored.entry
    entry["annotation"] = annotation
    entry["annotation_params"] = {
        "net": net if isinstance(net, str) else str(net) if isinstance(net, Path) else "DataFrame",
        "method": method,
        "tmin": int(tmin),
        "n_top": int(n_top),
        "alpha": float(alpha),
        "n_genes": int(informative.sum()),
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

    The feature's own top genes are left out of the term when the cells are scored: a set that was named only
    because it holds one of the feature's marker genes would otherwise predict the feature's cells through that
    very gene. What remains tests whether the rest of the programme moves with the feature.

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
    active in no or all cells).

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
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
    auroc = pd.Series(np.nan, index=table.index, dtype=np.float64)
    if len(named):
        loadings = genes_of.varm[f"{key}_loadings"] if n_exclude else None
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
            cell_activity(expression, adata.obs_names, genes_of.var_names, sets, method, tmin)
            if len(sets)
            else pd.DataFrame(index=adata.obs_names)
        )
        codes = codes.tocsc()
        for feature in named.index:
            active = np.zeros(codes.shape[0], dtype=bool)
            column = int(feature)
            active[codes.indices[codes.indptr[column] : codes.indptr[column + 1]]] = True
            if 0 < active.sum() < len(active) and feature in activity:
                auroc[feature] = roc_auc_score(active, activity[feature].to_numpy())
    adata = adata.copy() if copy else adata
    get.sae(adata, key).add_features(auroc.to_frame("best_term_auroc"))
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
