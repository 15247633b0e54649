"""``widgets.FeatureExplorer``: pick an SAE feature and see where it fires, its genes, its names and its groups."""

from __future__ import annotations

import base64
import html
import io

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from .. import get, pl, tl

# Genes listed per feature; the gene search looks at the same genes, so a hit is always visible in the table.
N_GENES = 15
N_TERMS = 8
# Default alpha of tl.annotate_features, for annotations stored without their parameters.
ALPHA = 0.05
# A bar needs a sized box: a table cell shrinks to its content, and an empty div has none.
BAR = '<div style="width:80px"><div style="background:{colour};width:{width:.0f}%;height:0.8em"></div></div>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Lay out a compact HTML table; cells are HTML already (escape text before)."""
    head = "".join(f"<th style='text-align:left;padding:0 6px'>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:0 6px'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='font-size:90%'><tr>{head}</tr>{body}</table>"


def _hint(text: str) -> str:
    return f"<p style='color:#666'><i>{text}</i></p>"


class FeatureExplorer(w.VBox):
    """Interactive explorer of SAE features: choose one and see its embedding plot, genes, terms and groups.

    Features are listed best-named first: by the AUROC of :func:`cellsae_kit.tl.score_annotations`, then the
    enrichment score of the best term (:func:`cellsae_kit.tl.annotate_features`), then how often they fire. The
    search box keeps the features whose significant terms or top genes contain the text typed (case ignored).
    Whatever is missing from ``adata`` (no annotation, no gene loadings, no grouping) is left out, and the panel
    says what to run to get it. The explorer only reads ``adata``; after running more tools, call :meth:`refresh`.

    Parameters
    ----------
    adata
        Annotated data matrix with an SAE trained by :func:`cellsae_kit.tl.sae`.
    key
        Key under which :func:`cellsae_kit.tl.sae` stored the SAE (``uns[key]``, ``obsm["X_<key>"]``).
    basis
        Embedding to plot on: ``"umap"`` reads ``obsm["X_umap"]`` (an exact ``obsm`` key works too).
    groupby
        Categorical ``obs`` column (cell types, clusters) for the activation per group; default: the one given to
        :func:`cellsae_kit.tl.feature_stats`, if any.
    mod
        For a MuData, the modality whose genes (peaks, proteins) are shown and searched; default: the first one
        with loadings.

    Attributes
    ----------
    feature
        Dropdown of the features; its ``value`` is the feature number shown.
    search
        Text box filtering the features by term or gene name.
    basis
        Dropdown of the embeddings in ``obsm`` (values as ``"umap"``).
    groupby
        Dropdown of the categorical ``obs`` columns (``value`` is ``None`` until one is chosen).
    summary
        HTML line describing the feature: how often and how strongly it fires, its best term.
    plot
        Output with the feature's activation on the embedding (a PNG drawn by :func:`cellsae_kit.pl.features`).
    genes
        HTML table of the feature's top genes (:func:`cellsae_kit.tl.top_genes`).
    terms
        HTML table of the feature's best-scoring gene sets.
    groups
        HTML table of the feature's activation in each group of ``groupby``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    >>> explorer = csk.widgets.FeatureExplorer(adata, groupby="bulk_labels")
    >>> explorer.feature.value in range(32)
    True
    >>> gene = csk.tl.top_genes(adata, 5, n=1)["gene"][0]
    >>> explorer.search.value = gene  # only features with this gene among their top genes remain
    >>> 5 in [value for _, value in explorer.feature.options]
    True
    >>> explorer.feature.value = 5
    >>> gene in explorer.genes.value
    True
    """

    def __init__(
        self,
        adata: AnnData | MuData,
        key: str = "sae",
        *,
        basis: str = "umap",
        groupby: str | None = None,
        mod: str | None = None,
    ):
        self.adata = adata
        self.key = key
        self._mod = mod
        if get.is_mudata(adata):
            self._mod = (
                mod
                if mod is not None
                else next((name for name, m in adata.mod.items() if f"{key}_loadings" in m.varm), next(iter(adata.mod)))
            )
        self._genes = get.genes(adata, key, self._mod)
        self._codes = get.codes(adata, key).tocsc()  # one column per feature is read at a time
        bases = [
            k
            for k, v in adata.obsm.items()
            if k != f"X_{key}" and isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[1] >= 2
        ]
        names = [k[2:] if k.startswith("X_") else k for k in bases]
        found = basis if basis in bases else f"X_{basis}" if f"X_{basis}" in bases else None
        if found is None:
            raise KeyError(
                f"basis={basis!r} is not an embedding in adata.obsm (available: {', '.join(names) or 'none'}); "
                "compute one first, e.g. scanpy.tl.umap(adata)."
            )
        if groupby is None:
            groupby = self._entry().get("params", {}).get("features_groupby")
        if groupby is not None:
            get.groups(adata, groupby)
        columns = [c for c in adata.obs if isinstance(adata.obs[c].dtype, pd.CategoricalDtype)]
        if groupby is not None and groupby not in columns:
            columns.append(groupby)

        self.search = w.Text(description="Search", continuous_update=False, layout=w.Layout(width="260px"))
        self.feature = w.Dropdown(description="Feature", layout=w.Layout(width="520px"))
        self.basis = w.Dropdown(description="Basis", options=names, value=names[bases.index(found)])
        self.groupby = w.Dropdown(description="Group by", options=columns, value=groupby)
        self.summary = w.HTML()
        self.plot = w.Output(layout=w.Layout(width="440px"))
        self.genes = w.HTML(layout=w.Layout(width="260px"))
        self.terms = w.HTML(layout=w.Layout(width="440px"))
        self.groups = w.HTML(layout=w.Layout(width="400px"))
        super().__init__(
            [
                w.HBox([self.search, self.feature]),
                w.HBox([self.basis, self.groupby]),
                self.summary,
                w.HBox([self.plot, self.genes]),
                w.HBox([self.terms, self.groups]),
            ]
        )
        self._quiet = False
        self.refresh()
        self.search.observe(lambda _: self._filter(), "value")
        self.feature.observe(lambda _: self._show() if not self._quiet else None, "value")
        self.basis.observe(lambda _: self._draw_plot(), "value")
        self.groupby.observe(lambda _: self._draw_groups(), "value")

    def _entry(self) -> dict:
        """``uns[key]`` of the SAE, read through :func:`cellsae_kit.get.sae`; empty when only the activations exist."""
        try:
            return get.sae(self.adata, self.key).entry
        except KeyError:
            return {}

    def refresh(self) -> None:
        """Read the SAE's tables from ``adata`` again (after running more tools) and redraw the current feature."""
        entry = self._entry()
        n_features = self._codes.shape[1]
        index = pd.Index([str(i) for i in range(n_features)], name="feature")
        stored = entry.get("features")
        # A table of another length belongs to an earlier SAE under the same key: the counts are recomputed.
        self._features = stored if isinstance(stored, pd.DataFrame) and stored.index.equals(index) else None
        if self._features is not None:
            stats = self._features
        else:
            # The listing needs only how often each feature fires (the frequency of tl.feature_stats): counted from
            # the activations, without writing a feature table into the user's object.
            frequency = np.diff(self._codes.indptr) / self._codes.shape[0]
            stats = pd.DataFrame({"frequency": frequency}, index=index)
        annotation = entry.get("annotation")
        self._annotation = annotation if isinstance(annotation, pd.DataFrame) else None
        self._net = entry.get("annotation_params", {}).get("net", "go_bp")
        alpha = entry.get("annotation_params", {}).get("alpha", ALPHA)
        loadings = self._genes.varm.get(f"{self.key}_loadings")

        order = pd.DataFrame(
            {
                "auroc": stats.get("best_term_auroc", pd.Series(np.nan, index=index)),
                "score": stats.get("best_term_score", pd.Series(np.nan, index=index)),
                "frequency": stats["frequency"],
                "number": np.arange(n_features),
            },
            index=index,
        ).sort_values(["auroc", "score", "frequency", "number"], ascending=[False, False, False, True])
        best = stats["best_term"] if "best_term" in stats else pd.Series(np.nan, index=index)
        self._labels = {}
        self._words = {i: [] for i in range(n_features)}
        for name, row in order.iterrows():
            i = int(name)
            term = best[name]
            parts = [str(i)] + ([str(term)] if pd.notna(term) else [])
            parts += [f"AUROC {row['auroc']:.2f}"] if pd.notna(row["auroc"]) else []
            parts += [f"active in {100 * row['frequency']:.1f}%" if row["frequency"] > 0 else "dead"]
            self._labels[i] = " · ".join(parts)
        if self._annotation is not None:
            stat, pval = self._test()
            hits = self._annotation[(self._annotation[stat] > 0) & (self._annotation[pval] < alpha)]
            for name, term in zip(hits["feature"], hits["term"], strict=True):
                self._words[int(name)].append(str(term).lower())
        if loadings is not None:
            loadings = np.asarray(loadings)
            n_top = min(N_GENES, loadings.shape[0])
            for i in range(n_features):
                # The genes of tl.top_genes(n=N_GENES) as a set; one column at a time keeps memory small.
                column = loadings[:, i]
                genes = np.argpartition(-column, n_top - 1)[:n_top]
                self._words[i] += [str(g).lower() for g in self._genes.var_names[genes[column[genes] > 0]]]
        searchable = [name for name, there in (("term", self._annotation), ("gene", loadings)) if there is not None]
        self.search.placeholder = " or ".join(searchable) or "nothing to search"
        self.search.disabled = not searchable
        self.search.tooltip = (
            "Filter by " + " or ".join(searchable)
            if searchable
            else f"Nothing to search yet: run cellsae_kit.tl.feature_genes(adata, key={self.key!r}) for genes, then "
            f"cellsae_kit.tl.annotate_features(adata, key={self.key!r}) for terms."
        )
        self._filter(redraw=True)

    def _filter(self, redraw: bool = False) -> None:
        """Keep the features whose terms or top genes contain the search text; redraw when the choice changes."""
        text = self.search.value.strip().lower()
        kept = [i for i in self._labels if not text or any(text in word for word in self._words[i])]
        current = self.feature.value
        self._quiet = True
        try:
            self.feature.options = [(self._labels[i], i) for i in kept]
            # ipywidgets resets the choice when options change; keep the feature on screen while it still matches.
            self.feature.value = current if current in kept else kept[0] if kept else None
        finally:
            self._quiet = False
        if redraw or self.feature.value != current:
            self._show()

    def _show(self) -> None:
        """Redraw every panel for the chosen feature."""
        i = self.feature.value
        if i is None:
            self.summary.value = (
                f"<b>No feature has a term or top gene containing {html.escape(self.search.value)!r}</b>; "
                "change the search."
            )
            self.plot.outputs = ()
            self.genes.value = self.terms.value = self.groups.value = ""
            return
        self._draw_summary()
        self._draw_plot()
        self._draw_genes()
        self._draw_terms()
        self._draw_groups()

    def _draw_summary(self) -> None:
        i = self.feature.value
        column = self._codes[:, i]
        n_active = column.nnz
        text = f"<b>Feature {i}</b>: active in {n_active} of {column.shape[0]} cells"
        if n_active:
            text += f" ({100 * n_active / column.shape[0]:.1f}%), mean activation {column.sum() / n_active:.3g}"
        row = self._features.loc[str(i)] if self._features is not None else {}
        if "locality" in row and pd.notna(row["locality"]) and row["locality"] != "dead":
            text += f"; {row['locality']}, most active in {html.escape(str(row['best_group']))}"
        if "best_term" in row and pd.notna(row["best_term"]):
            text += f"; best term <b>{html.escape(str(row['best_term']))}</b>"
            if "best_term_auroc" in row and pd.notna(row["best_term_auroc"]):
                text += f" (AUROC on cells {row['best_term_auroc']:.2f})"
        self.summary.value = text

    def _draw_plot(self) -> None:
        i = self.feature.value
        if i is None:
            return
        fig, ax = plt.subplots(figsize=(4.4, 3.8))
        try:
            pl.features(self.adata, i, self.key, basis=self.basis.value, ax=ax, show=False)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        finally:
            plt.close(fig)  # never left for a notebook's inline backend to show a second time
        png = base64.b64encode(buffer.getvalue()).decode()
        text = f"feature {i} on {self.basis.value}"
        self.plot.outputs = ({"output_type": "display_data", "data": {"image/png": png, "text/plain": text}},)

    def _draw_genes(self) -> None:
        i = self.feature.value
        if f"{self.key}_loadings" not in self._genes.varm:
            self.genes.value = _hint(
                f"No gene loadings (varm['{self.key}_loadings']): run "
                f"cellsae_kit.tl.feature_genes(adata, key={self.key!r}) to see and search genes."
            )
            return
        table = tl.top_genes(self.adata, i, self.key, n=N_GENES, mod=self._mod)
        if table.empty:
            self.genes.value = _hint(f"Feature {i} raises no gene (no positive loading).")
            return
        top = table["loading"].max()
        rows = [
            [html.escape(str(g)), f"{x:.3g}", BAR.format(colour="#b2182b", width=100 * x / top)]
            for g, x in zip(table["gene"], table["loading"], strict=True)
        ]
        self.genes.value = f"<b>Top genes of feature {i}</b>" + _table(["gene", "loading", ""], rows)

    def _test(self) -> tuple[str, str]:
        """Return the statistic and adjusted p-value the features were named by (matched null, or decoupler)."""
        matched = self._entry().get("annotation_params", {}).get("null") == "expression"
        return ("z", "pval_matched_adj") if matched and "z" in self._annotation else ("score", "pval_adj")

    def _draw_terms(self) -> None:
        i = self.feature.value
        if self._annotation is None:
            self.terms.value = _hint(
                f'No gene-set annotation yet: run cellsae_kit.tl.annotate_features(adata, "go_bp", key={self.key!r}) '
                "to name the features and search them by term."
            )
            return
        rows = self._annotation[self._annotation["feature"].astype(str) == str(i)].dropna(subset=["term"])
        if rows.empty:
            self.terms.value = _hint(f"Feature {i} has no term: its gene loadings are all zero.")
            return
        alpha = self._entry().get("annotation_params", {}).get("alpha", ALPHA)
        stat, pval = self._test()
        body = []
        for _, row in rows.sort_values("rank").head(N_TERMS).iterrows():
            name = html.escape(str(row["term"]))
            hit = row[stat] > 0 and row[pval] < alpha
            body.append([f"<b>{name}</b>" if hit else name, f"{row[stat]:.2f}", f"{row[pval]:.2g}"])
        text = f"<b>Best terms of feature {i}</b> (bold: adjusted p &lt; {alpha:g})" + _table(
            ["term", stat, "adj. p"], body
        )
        if self._features is None or "best_term_auroc" not in self._features:
            text += _hint(
                f'Run cellsae_kit.tl.score_annotations(adata, "{self._net}", key={self.key!r}) to check the names '
                "against the cells (and list the features by that check)."
            )
        self.terms.value = text

    def _draw_groups(self) -> None:
        i = self.feature.value
        if i is None:
            return
        if self.groupby.value is None:
            self.groups.value = _hint(
                "Choose a cell grouping in 'Group by' to see the activation per group."
                if self.groupby.options
                else "adata.obs has no categorical column: add cell types or clusters (e.g. scanpy.tl.leiden) to "
                "see the activation per group."
            )
            return
        try:
            groups = get.groups(self.adata, self.groupby.value)
        except (KeyError, ValueError) as error:  # e.g. a column with missing values, chosen in the dropdown
            self.groups.value = _hint(html.escape(str(error).strip("'\"")))
            return
        cells = pd.DataFrame({"group": groups.to_numpy(), "activation": self._codes[:, i].toarray().ravel()})
        # Mean over all of a group's cells, as tl.feature_stats ranks groups, so size does not make a home.
        per_group = cells.groupby("group", observed=True)["activation"].agg(
            cells="size", active=lambda a: (a > 0).mean(), mean="mean"
        )
        per_group = per_group.sort_values("mean", ascending=False, kind="stable")
        top = per_group["mean"].max()
        rows = [
            [
                html.escape(str(group)),
                str(int(row["cells"])),
                f"{100 * row['active']:.1f}%",
                f"{row['mean']:.3g}",
                BAR.format(colour="#2b6c8f", width=100 * row["mean"] / top if top > 0 else 0),
            ]
            for group, row in per_group.iterrows()
        ]
        self.groups.value = f"<b>Feature {i} per {html.escape(self.groupby.value)}</b>" + _table(
            ["group", "cells", "active", "mean", ""], rows
        )
