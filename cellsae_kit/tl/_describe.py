"""``tl.describe_features``: one plain sentence per feature, each claim checked on held-out cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import get
from .._docs import doc_params
from ._shared import correlation, feature_table, get_expression

# A held-out AUROC from which a name is trusted, and from which it is a fair guess.
HIGH_AUROC, MEDIUM_AUROC = 0.8, 0.65
# A top gene is reported when it correlates with the feature at least this much on the held-out cells too.
MIN_GENE_R = 0.1
CONFIDENCE = ["high", "medium", "low"]


def _percent(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 or x == 0 else "<1%"


def _genes(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe_one(facts: dict) -> tuple[str, str]:
    """Write the sentence and the confidence of one feature from its checked facts (the text core).

    ``facts`` holds ``feature``, ``frequency`` (share of held-out cells it fires in), optionally ``group`` with
    ``in_group`` and ``elsewhere`` (shares of cells) and ``same_group`` (the annotation cells agree), ``genes``
    (top genes confirmed on held-out cells), ``term``, ``cluster``, ``n_terms``, ``pval`` (matched, adjusted),
    ``auroc`` (held-out), ``stability`` (mean matched decoder cosine across seeds).

    Examples
    --------
    >>> import textwrap
    >>> from cellsae_kit.tl._describe import describe_one
    >>> text, confidence = describe_one({"feature": "3", "frequency": 0.12, "group": "B", "in_group": 0.8,
    ...     "elsewhere": 0.02, "same_group": True, "genes": ["CD79A", "MS4A1"], "term": "B cell activation",
    ...     "cluster": "B cell activation", "n_terms": 1, "pval": 1e-4, "auroc": 0.91})
    >>> print(textwrap.fill(text, 100))
    Feature 3 fires in 80% of B cells and 2% of other cells; it raises CD79A and MS4A1; programme: B cell
    activation (matched adj. p 0.0001; held-out AUROC 0.91).
    >>> confidence
    'high'
    """
    feature = facts["feature"]
    if facts["frequency"] == 0:
        return f"Feature {feature} never fires in the held-out cells (dead).", "low"
    if facts.get("group") is not None:
        where = (
            f"fires in {_percent(facts['in_group'])} of {facts['group']} cells and {_percent(facts['elsewhere'])} "
            "of other cells"
        )
        if not facts.get("same_group", True):
            where += " (on the annotation cells its main group differs)"
    else:
        where = f"fires in {_percent(facts['frequency'])} of cells"
    parts = [f"Feature {feature} {where}"]
    if facts.get("genes"):
        parts.append(f"it raises {_genes(facts['genes'])}")
    term, auroc = facts.get("term"), facts.get("auroc")
    if term is None:
        parts.append("no gene set passes the expression-matched null")
    else:
        n_terms = int(facts["n_terms"])
        extra = f"; one of {n_terms} significant terms of the '{facts['cluster']}' cluster" if n_terms > 1 else ""
        check = f"; held-out AUROC {auroc:.2f}" if auroc is not None and np.isfinite(auroc) else ""
        parts.append(f"programme: {term} (matched adj. p {facts['pval']:.2g}{check}{extra})")
    text = "; ".join(parts) + "."
    stability = facts.get("stability")
    if stability is not None and np.isfinite(stability):
        text += f" Found again across seeds with decoder cosine {stability:.2f}."
    checked = term is not None and auroc is not None and np.isfinite(auroc)
    located = facts.get("group") is not None and facts.get("same_group", False) and facts["in_group"] >= 0.5
    if checked and auroc >= HIGH_AUROC and (located or facts.get("group") is None):
        confidence = "high"
    elif (checked and auroc >= MEDIUM_AUROC) or located:
        confidence = "medium"
    else:
        confidence = "low"
    return text, confidence


@doc_params
def describe_features(
    adata: AnnData,
    key: str = "sae",
    *,
    groupby: str | None = None,
    n_genes: int = 3,
    layer: str | None = None,
    use_raw: bool | None = None,
    mod: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Write one sentence per feature saying where it fires, what it raises, which programme and how sure.

    Every claim is checked on the cells :func:`annotate_features` held out, which never entered the loadings or
    the names: where the feature fires (its group with the highest mean activation, the share of that group's
    cells it is active in against the other cells, and whether the annotation cells give the same group), what it
    raises (its top genes by the annotation's loadings that also correlate with it at r >= 0.1 on the held-out
    cells), which programme (the representative term of :func:`annotate_features` with its expression-matched
    adjusted p, the number of related terms, and the held-out AUROC of :func:`score_annotations` when it ran), and
    how stable (the ``stability`` column of :func:`cellsae_kit.tl.stability` or :func:`cellsae_kit.tl.consensus`,
    when present). No language model: the sentence is assembled from these numbers.

    The confidence is ``"high"`` for a name whose held-out AUROC is at least 0.8 (and, with ``groupby``, a
    feature active in at least half of one group on both halves); ``"medium"`` for an AUROC of at least 0.65, or
    for a feature located in one group without a trusted name; ``"low"`` otherwise.

    Parameters
    ----------
    {adata}
    {key}
    groupby
        ``obs`` column of cell groups (cell types, clusters) to say where the feature fires.
    n_genes
        Top genes named per feature (fewer when fewer hold up on the held-out cells).
    layer, use_raw
        Expression for the gene check, as in :func:`annotate_features`.
    {mod}
    {copy}

    {copy_returns}
    Adds the columns ``description`` and ``confidence`` (``"high"``, ``"medium"``, ``"low"``) to
    ``uns[key]["features"]``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", progress=False)
    >>> csk.tl.annotate_features(adata, "go_bp")
    >>> csk.tl.score_annotations(adata, "go_bp")
    >>> csk.tl.describe_features(adata, groupby="bulk_labels")
    >>> adata.uns["sae"]["features"]["confidence"].isin(["high", "medium", "low"]).all()
    np.True_
    """
    codes = get.codes(adata, key)
    stored = get.sae(adata, key)
    entry = stored.entry
    params = entry.get("annotation_params")
    table = stored.features
    if not isinstance(params, dict) or table is None or "best_term" not in table:
        raise KeyError(
            f"uns[{key!r}] has no annotation to describe; run cellsae_kit.tl.annotate_features(adata, key={key!r}) "
            "first (and cellsae_kit.tl.score_annotations for the held-out check)."
        )
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 0:
        raise ValueError(f"n_genes={n_genes!r} must be a whole number, 0 or more.")
    held_names = np.asarray(entry.get("annotation_held_out", []), dtype=str)
    held = adata.obs_names.isin(held_names) if len(held_names) else np.ones(adata.n_obs, dtype=bool)
    if len(held_names) and held.sum() < len(held_names) / 2:
        raise ValueError(
            f"Only {int(held.sum())} of the {len(held_names)} cells held out by annotate_features are in adata (was "
            f"it subset?); run cellsae_kit.tl.annotate_features(adata, key={key!r}) again on these cells."
        )
    groups = get.groups(adata, groupby) if groupby is not None else None
    genes_of = get.genes(adata, key, params.get("mod", mod)) if get.is_mudata(adata) else adata
    name = params.get("loadings", f"{key}_loadings")
    if n_genes and name not in genes_of.varm:
        raise KeyError(f"varm[{name!r}], the annotation's loadings, is gone; run tl.annotate_features again.")

    rows_held, rows_train = np.flatnonzero(held), np.flatnonzero(~held)
    if not len(rows_train):  # held_out=0: annotated and checked on the same cells
        rows_train = rows_held
    on_held = feature_table(codes[rows_held], None if groups is None else groups.to_numpy()[rows_held])
    on_train = feature_table(codes[rows_train], None if groups is None else groups.to_numpy()[rows_train])
    top_by_feature: dict[int, list[str]] = {}
    if n_genes:
        loadings = np.asarray(genes_of.varm[name])
        candidates = np.argsort(-loadings, axis=0, kind="stable")[: 4 * n_genes]
        expression, _ = get_expression(genes_of, layer, use_raw)
        used = np.unique(candidates)
        check = correlation(expression[rows_held][:, used], codes[rows_held])
        where = {gene: i for i, gene in enumerate(used)}
        for f in range(codes.shape[1]):
            good = [g for g in candidates[:, f] if loadings[g, f] > 0 and check[where[g], f] >= MIN_GENE_R]
            top_by_feature[f] = [str(genes_of.var_names[g]) for g in good[:n_genes]]

    descriptions, confidences = [], []
    active_held = codes[rows_held].tocsc()
    labels = None if groups is None else groups.to_numpy()[rows_held]
    features = [str(f) for f in range(codes.shape[1])]
    for f, feature in enumerate(features):
        facts: dict = {"feature": feature, "frequency": float(on_held["frequency"].iat[f])}
        if labels is not None and facts["frequency"] > 0:
            group = on_held["best_group"].iat[f]
            active = np.zeros(len(rows_held), dtype=bool)
            active[active_held.indices[active_held.indptr[f] : active_held.indptr[f + 1]]] = True
            inside = labels == group
            facts |= {
                "group": str(group),
                "in_group": float(active[inside].mean()),
                "elsewhere": float(active[~inside].mean()) if (~inside).any() else 0.0,
                "same_group": on_train["best_group"].iat[f] == group,
            }
        facts["genes"] = top_by_feature.get(f, [])
        row = table.loc[feature] if feature in table.index else table.iloc[f]
        if pd.notna(row["best_term"]):
            facts |= {
                "term": str(row["best_term"]),
                "cluster": str(row.get("best_term_cluster", row["best_term"])),
                "n_terms": _n_terms(entry, feature),
                "pval": float(row.get("best_term_pval_matched_adj", row.get("best_term_pval_adj", np.nan))),
                "auroc": float(row["best_term_auroc"]) if "best_term_auroc" in table else None,
            }
        if "stability" in table:
            facts["stability"] = float(row["stability"])
        text, confidence = describe_one(facts)
        descriptions.append(text)
        confidences.append(confidence)
    columns = pd.DataFrame(
        {"description": descriptions, "confidence": pd.Categorical(confidences, categories=CONFIDENCE)},
        index=pd.Index(features, name="feature"),
    )
    adata = adata.copy() if copy else adata
    get.sae(adata, key).add_features(columns)
    return adata if copy else None


def _n_terms(entry: dict, feature: str) -> float:
    """Significant terms in the cluster of a feature's best term (1 when the table does not say)."""
    annotation = entry.get("annotation")
    if not isinstance(annotation, pd.DataFrame) or "n_terms" not in annotation:
        return 1.0
    first = annotation[(annotation["feature"].astype(str) == str(feature)) & (annotation["rank"] == 1)]
    return float(first["n_terms"].iloc[0]) if len(first) and pd.notna(first["n_terms"].iloc[0]) else 1.0
