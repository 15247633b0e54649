import base64
import sys
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import scanpy as sc

import cellsae_kit as csk
from cellsae_kit.widgets import FeatureExplorer
from tests.conftest import assert_unchanged, snapshot


class _Cells(HTMLParser):
    """The text of each table row's cells, header rows left out."""

    def __init__(self):
        super().__init__()
        self.rows, self._row, self._in_cell = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag == "td":
            self._in_cell = True
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_cell = False
        elif tag == "tr" and self._row:
            self.rows.append(self._row)

    def handle_data(self, data):
        if self._in_cell:
            self._row[-1] += data


def rows(html_text):
    parser = _Cells()
    parser.feed(html_text)
    return parser.rows


def plot_of(explorer):
    (bundle,) = explorer.plot.outputs
    png = base64.b64decode(bundle["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return bundle["data"]["text/plain"], png


def options(explorer):
    return [value for _, value in explorer.feature.options]


@pytest.fixture(scope="module")
def _analysed():
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    csk.tl.feature_stats(adata, groupby="bulk_labels")
    csk.tl.annotate_features(adata, "progeny")
    return adata


@pytest.fixture
def analysed(_analysed):
    return _analysed.copy()


def test_features_are_listed_best_named_first(analysed):
    explorer = FeatureExplorer(analysed)
    table = analysed.uns["sae"]["features"]
    named = table["best_term_score"].notna()
    assert 0 < named.sum() < len(table)  # both kinds present, so the order below can fail
    expected = sorted(
        range(len(table)),
        key=lambda i: (not named.iat[i], -np.nan_to_num(table["best_term_score"].iat[i]), -table["frequency"].iat[i]),
    )
    assert options(explorer) == expected
    assert explorer.feature.value == expected[0]
    first_label = explorer.feature.options[0][0]
    assert first_label.startswith(f"{expected[0]} · {table['best_term'].iat[expected[0]]}")

    # With the cell-level check, its AUROC comes first.
    csk.tl.score_annotations(analysed, "progeny")
    explorer.refresh()
    auroc = analysed.uns["sae"]["features"]["best_term_auroc"]
    listed = options(explorer)
    ranked = auroc.dropna().sort_values(ascending=False, kind="stable")
    assert listed[: len(ranked)] == [int(f) for f in ranked.index]
    assert "AUROC" in explorer.feature.options[0][0]


def test_choosing_a_feature_updates_every_panel(analysed):
    before = snapshot(analysed)
    explorer = FeatureExplorer(analysed, groupby="bulk_labels")
    first = explorer.feature.value
    old_text, old_png = plot_of(explorer)
    assert old_text == f"feature {first} on umap"
    old = [explorer.summary.value, explorer.genes.value, explorer.terms.value, explorer.groups.value]

    chosen = next(i for i in options(explorer)[1:] if analysed.obsm["X_sae"][:, i].nnz > 20)
    explorer.feature.value = chosen
    text, png = plot_of(explorer)
    assert text == f"feature {chosen} on umap" and png != old_png
    new = [explorer.summary.value, explorer.genes.value, explorer.terms.value, explorer.groups.value]
    assert all(a != b for a, b in zip(old, new, strict=True))
    assert f"Feature {chosen}</b>" in explorer.summary.value

    # genes: exactly tl.top_genes
    expected = csk.tl.top_genes(analysed, chosen, n=15)
    genes = rows(explorer.genes.value)
    assert [r[0] for r in genes] == expected["gene"].tolist()
    np.testing.assert_allclose([float(r[1]) for r in genes], expected["loading"], rtol=1e-2)

    # terms: the stored annotation of this feature, best first
    annotation = analysed.uns["sae"]["annotation"]
    mine = annotation[annotation["feature"] == str(chosen)].sort_values("rank").head(8)
    assert [r[0] for r in rows(explorer.terms.value)] == mine["term"].astype(str).tolist()

    # groups: mean activation and active fraction per group, by hand
    activation = analysed.obsm["X_sae"][:, chosen].toarray().ravel()
    labels = analysed.obs["bulk_labels"].to_numpy()
    shown = {r[0]: (int(r[1]), float(r[2].rstrip("%")), float(r[3])) for r in rows(explorer.groups.value)}
    assert set(shown) == set(labels)
    for group, (n, active, mean) in shown.items():
        cells = activation[labels == group]
        assert n == len(cells)
        assert active == pytest.approx(100 * (cells > 0).mean(), abs=0.051)  # shown to one decimal
        assert mean == pytest.approx(cells.mean(), rel=1e-2, abs=1e-3)
    means = [v[2] for v in shown.values()]
    assert means == sorted(means, reverse=True)
    assert_unchanged(analysed, before)  # the explorer only reads


def test_search_by_gene_and_by_term(analysed):
    explorer = FeatureExplorer(analysed)
    everything = options(explorer)
    tops = {i: csk.tl.top_genes(analysed, i, n=15)["gene"].tolist() for i in range(32)}

    gene = tops[explorer.feature.options[5][1]][0]
    explorer.search.value = gene.lower()  # case is ignored
    expected = {i for i, genes in tops.items() if any(gene.lower() in g.lower() for g in genes)}
    assert set(options(explorer)) == expected and len(expected) < 32
    assert options(explorer) == [i for i in everything if i in expected]  # the order is kept
    assert explorer.feature.value in expected
    assert gene in [r[0] for r in rows(explorer.genes.value)]
    assert plot_of(explorer)[0] == f"feature {explorer.feature.value} on umap"

    annotation = analysed.uns["sae"]["annotation"]
    hits = annotation[(annotation["z"] > 0) & (annotation["pval_matched_adj"] < 0.05)]
    term = hits["term"].astype(str).value_counts().index[0]
    explorer.search.value = term
    by_term = {int(f) for f in hits.loc[hits["term"] == term, "feature"]}
    by_gene = {i for i, genes in tops.items() if any(term.lower() in g.lower() for g in genes)}
    assert set(options(explorer)) == by_term | by_gene and by_term

    explorer.search.value = "no such programme"
    assert explorer.feature.value is None and explorer.feature.options == ()
    assert "No feature" in explorer.summary.value and explorer.plot.outputs == ()
    explorer.search.value = ""
    assert options(explorer) == everything and explorer.feature.value == everything[0]
    assert plot_of(explorer)[0] == f"feature {everything[0]} on umap"


def test_changing_basis_and_grouping_updates_only_their_panels(analysed):
    explorer = FeatureExplorer(analysed)
    assert explorer.groupby.value == "bulk_labels"  # taken from tl.feature_stats
    assert set(explorer.basis.options) == {"umap", "pca"}
    text, png = plot_of(explorer)
    genes, groups = explorer.genes.value, explorer.groups.value

    explorer.basis.value = "pca"
    new_text, new_png = plot_of(explorer)
    assert new_text == f"feature {explorer.feature.value} on pca" and new_png != png
    assert explorer.genes.value == genes and explorer.groups.value == groups

    explorer.groupby.value = "louvain"
    shown = [r[0] for r in rows(explorer.groups.value)]
    assert sorted(shown) == sorted(analysed.obs["louvain"].cat.categories)
    assert "per louvain" in explorer.groups.value
    assert plot_of(explorer)[1] == new_png


def test_missing_parts_are_explained(analysed):
    bare = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(bare, "X_pca", n_features=32, k=4, n_epochs=10, progress=False)
    explorer = FeatureExplorer(bare)
    frequency = np.diff(bare.obsm["X_sae"].tocsc().indptr) / bare.n_obs
    assert options(explorer) == sorted(range(32), key=lambda i: (-frequency[i], i))
    assert "annotate_features" in explorer.terms.value
    assert explorer.groupby.value is None and "Group by" in explorer.groups.value
    assert explorer.search.placeholder == "gene"
    assert rows(explorer.genes.value)  # loadings from the PCA exist

    del bare.varm["sae_loadings"]
    explorer = FeatureExplorer(bare, basis="X_umap")
    assert "feature_genes" in explorer.genes.value and explorer.search.disabled
    assert explorer.basis.value == "umap"

    # annotated but not checked against the cells
    assert 'score_annotations(adata, "progeny"' in FeatureExplorer(analysed).terms.value


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"key": "other"}, KeyError, "SAEs found: 'sae'"),
        ({"basis": "tsne"}, KeyError, r"available: (pca, umap|umap, pca)\)"),
        ({"groupby": "cell_type"}, KeyError, "not a column"),
    ],
)
def test_bad_input(analysed, kwargs, error, message):
    before = snapshot(analysed)
    with pytest.raises(error, match=message):
        FeatureExplorer(analysed, **kwargs)
    assert_unchanged(analysed, before)


def test_a_grouping_with_missing_values_is_explained_in_its_panel(analysed):
    analysed.obs["partial"] = (
        analysed.obs["bulk_labels"].astype(str).where(analysed.obs["n_genes"] > analysed.obs["n_genes"].median())
    )
    analysed.obs["partial"] = analysed.obs["partial"].astype("category")
    explorer = FeatureExplorer(analysed)
    explorer.groupby.value = "partial"
    assert "missing values" in explorer.groups.value


def test_without_ipywidgets_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    monkeypatch.delitem(sys.modules, "cellsae_kit.widgets._explorer")
    with pytest.raises(ImportError, match="pip install 'ipywidgets"):
        csk.widgets.FeatureExplorer  # noqa: B018


def test_explorer_on_a_mudata_shows_the_chosen_modality():
    mdata = csk.datasets.simulate(400, 6, 3, modalities=("rna", "atac"), n_genes=60, n_peaks=90)
    csk.tl.joint_embedding(mdata, n_comps=5)
    mdata.obsm["X_umap"] = mdata.obsm["X_joint"][:, :2]
    csk.tl.sae(mdata, "X_joint", n_features=12, k=3, n_epochs=5, progress=False)
    explorer = FeatureExplorer(mdata, mod="atac")
    chosen = explorer.feature.value
    peaks = [r[0] for r in rows(explorer.genes.value)]
    assert peaks == csk.tl.top_genes(mdata, chosen, mod="atac", n=15)["gene"].tolist()
    assert all(p.startswith("chr") for p in peaks)
    explorer.search.value = peaks[0]
    assert chosen in options(explorer)
    assert [r[0] for r in rows(FeatureExplorer(mdata, mod="rna").genes.value)][0].startswith("gene_")
