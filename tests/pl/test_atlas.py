"""pl.atlas: the folder it writes, the numbers in each feature's script against independent computations, errors."""

import json

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from PIL import Image

import cellsae_kit as csk
from cellsae_kit.pl import _atlas
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import LONG_TERM, is_png

N_FEATURES = 32


def _feature(folder, f):
    text = (folder / "features" / f"{f}.js").read_text(encoding="utf-8")
    assert text.startswith("atlasFeature(") and text.endswith(");\n")
    return json.loads(text.removeprefix("atlasFeature(").removesuffix(");\n"))


def _index(folder):
    text = (folder / "data" / "index.js").read_text(encoding="utf-8")
    assert text.startswith("window.ATLAS_INDEX = ") and text.endswith(";\n")
    return json.loads(text.removeprefix("window.ATLAS_INDEX = ").removesuffix(";\n"))


@pytest.fixture(scope="module")
def written(_analysed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("atlas") / "atlas"
    returned = csk.pl.atlas(_analysed, folder, groupby="bulk_labels", n_genes=6, n_terms=3, progress=False)
    return _analysed, returned


def test_folder_structure(written):
    adata, folder = written
    names = ["atlas.css", "atlas.js", "data", "features", "img", "index.html"]
    assert sorted(p.name for p in folder.iterdir()) == names
    assert sorted(p.name for p in (folder / "features").iterdir()) == sorted(f"{f}.js" for f in range(N_FEATURES))
    images = sorted((folder / "img").iterdir())
    live = np.flatnonzero(np.asarray((adata.obsm["X_sae"] > 0).sum(axis=0)).ravel())
    assert sorted(int(p.stem) for p in images) == live.tolist() and all(is_png(p) for p in images)
    assert Image.open(images[0]).size == (_atlas.IMAGE_SIZE, _atlas.IMAGE_SIZE)
    html = (folder / "index.html").read_text()
    assert '<script src="data/index.js">' in html and '<script src="atlas.js">' in html
    # Nothing may come from the network: no address of another host in the page, its script or its style.
    for name in ("index.html", "atlas.js", "atlas.css"):
        assert "http" not in (folder / name).read_text(), name
    assert not list(folder.parent.glob(".*partial*"))  # the temporary sibling is gone


def test_top_genes_are_the_sorted_loadings(written):
    adata, folder = written
    loadings = adata.varm["sae_loadings"]
    for f in (0, 1, 7):
        data = _feature(folder, f)
        column = loadings[:, f]
        up = [g for g in np.argsort(-column)[:6] if column[g] > 0]
        down = [g for g in np.argsort(column)[:6] if column[g] < 0]
        assert [g for g, _ in data["genes"]["positive"]] == list(adata.var_names[up])
        assert [g for g, _ in data["genes"]["negative"]] == list(adata.var_names[down])
        np.testing.assert_allclose([v for _, v in data["genes"]["positive"]], column[up], rtol=1e-3)


def test_nearest_features_by_decoder_cosine(written):
    adata, folder = written
    decoder = np.asarray(adata.uns["sae"]["weights"]["W_dec"], dtype=np.float64)
    unit = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -2)
    for f in (0, 5, 31):
        data = _feature(folder, f)
        expected = np.argsort(-cosine[f])[:8]
        assert [j for j, _ in data["neighbors"]] == expected.tolist()
        np.testing.assert_allclose([c for _, c in data["neighbors"]], cosine[f, expected], rtol=1e-3, atol=1e-6)


def test_terms_and_adjusted_p_from_the_annotation(written):
    adata, folder = written
    table = adata.uns["sae"]["annotation"]
    rows = table[table["feature"].astype(str) == "0"].sort_values("rank").head(3)
    data = _feature(folder, 0)
    assert [t["term"] for t in data["terms"]] == rows["term"].astype(str).tolist()
    np.testing.assert_allclose([t["p"] for t in data["terms"]], rows["pval_matched_adj"], rtol=1e-3)
    np.testing.assert_allclose([t["stat"] for t in data["terms"]], rows["z"], rtol=1e-3)
    assert data["terms"][0]["term"] == LONG_TERM


def test_activation_per_group_and_stats(written):
    adata, folder = written
    codes = adata.obsm["X_sae"].toarray() if hasattr(adata.obsm["X_sae"], "toarray") else adata.obsm["X_sae"]
    labels = adata.obs["bulk_labels"]
    means = pd.DataFrame(codes).groupby(labels.to_numpy()).mean().reindex(labels.cat.categories)
    active = pd.DataFrame(codes > 0).groupby(labels.to_numpy()).mean().reindex(labels.cat.categories)
    index = _index(folder)
    assert index["groups"] == list(labels.cat.categories)
    table = adata.uns["sae"]["features"]
    for f in (2, 9):
        data = _feature(folder, f)
        np.testing.assert_allclose(data["groups"]["mean"], means[f], rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(data["groups"]["active"], active[f], rtol=1e-3, atol=1e-6)
        assert data["stats"]["frequency"] == pytest.approx(table.loc[str(f), "frequency"], rel=1e-3)
        assert data["stats"]["best_group"] == table.loc[str(f), "best_group"]
        assert data["max"] == pytest.approx(codes[:, f].max(), rel=1e-3)


def test_index_holds_search_sort_and_filter_fields(written):
    adata, folder = written
    index = _index(folder)
    columns, vocabularies = index["columns"], index["vocabularies"]
    assert [name for name, _ in index["sort"]] == ["frequency", "mean_active"]
    assert set(columns) >= {"frequency", "dead", "dense", "locality", "best_term", "best_group", "genes"}
    for f in (0, 3):
        genes = [vocabularies["genes"][g] for g in columns["genes"][f]]
        assert genes == csk.tl.top_genes(adata, f, n=_atlas.N_INDEX_GENES)["gene"].tolist()
    assert vocabularies["best_term"][columns["best_term"][0]] == LONG_TERM
    table = adata.uns["sae"]["features"]
    for f in range(N_FEATURES):
        term = table.loc[str(f), "best_term"]
        assert (columns["best_term"][f] == -1) == pd.isna(term)
        assert columns["frequency"][f] == pytest.approx(table.loc[str(f), "frequency"], rel=1e-3)
    # Small: the index carries no loadings, terms tables or neighbours.
    assert (folder / "data" / "index.js").stat().st_size < 20_000


def test_a_sorted_feature_table_is_read_by_feature(analysed, tmp_path):
    table = analysed.uns["sae"]["features"]
    analysed.uns["sae"]["features"] = table.sort_values("frequency")
    folder = csk.pl.atlas(analysed, tmp_path / "atlas", images=False, progress=False)
    assert _feature(folder, 4)["stats"]["frequency"] == pytest.approx(table.loc["4", "frequency"], rel=1e-3)


def test_images_for_the_most_frequent_only_or_none(analysed, tmp_path):
    folder = csk.pl.atlas(analysed, tmp_path / "five", images=5, progress=False)
    frequency = analysed.uns["sae"]["features"]["frequency"].to_numpy()
    drawn = sorted(int(p.stem) for p in (folder / "img").iterdir())
    assert len(drawn) == 5 and frequency[drawn].min() >= np.sort(frequency)[-5]
    missing = next(f for f in range(N_FEATURES) if f not in drawn)
    assert _feature(folder, missing)["image"] is None and _feature(folder, drawn[0])["image"] == f"img/{drawn[0]}.png"
    dead = next(f for f in range(N_FEATURES) if f not in drawn)
    codes = analysed.obsm["X_sae"].tolil()
    codes[:, dead] = 0  # stored zeros: a dead feature, which gets no image, even with images="all"
    analysed.obsm["X_sae"] = codes.tocsr()
    folder = csk.pl.atlas(analysed, tmp_path / "all", progress=False)
    assert not (folder / "img" / f"{dead}.png").exists() and _feature(folder, dead)["image"] is None
    del analysed.obsm["X_umap"]  # without images, no embedding is needed
    folder = csk.pl.atlas(analysed, tmp_path / "none", images=False, progress=False)
    assert not list((folder / "img").iterdir()) and _index(folder)["basis"] is None


def test_an_existing_folder_is_refused_unless_overwrite(analysed, tmp_path):
    folder = csk.pl.atlas(analysed, tmp_path / "atlas", images=2, progress=False)
    (folder / "stray.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        csk.pl.atlas(analysed, folder, progress=False)
    assert (folder / "stray.txt").exists()
    csk.pl.atlas(analysed, folder, images=2, overwrite=True, progress=False)
    assert not (folder / "stray.txt").exists() and (folder / "index.html").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        csk.pl.atlas(analysed, tmp_path / "file", overwrite=True, progress=False)


def test_a_failure_leaves_no_folder(analysed, tmp_path, monkeypatch):
    def broken(self, column, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_atlas._Painter, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        csk.pl.atlas(analysed, tmp_path / "atlas", progress=False)
    assert list(tmp_path.iterdir()) == []


def _no_table(adata):
    del adata.uns["sae"]["features"]


def _no_umap(adata):
    del adata.obsm["X_umap"]


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (None, {"key": "other"}, KeyError, "No SAE|SAEs found"),
        (_no_table, {}, KeyError, "tl.feature_stats"),
        (None, {"groupby": "no_such_column"}, KeyError, "not a column of adata.obs"),
        (_no_umap, {}, KeyError, "scanpy.tl.umap.*images=False"),
        (None, {"basis": "tsne"}, KeyError, "X_tsne"),
        (None, {"images": "some"}, ValueError, "images="),
        (None, {"n_genes": -1}, ValueError, "n_genes"),
    ],
)
def test_bad_input_is_refused_and_leaves_adata_unchanged(analysed, tmp_path, change, kwargs, error, match):
    if change is not None:
        change(analysed)
    before, entry = snapshot(analysed), dict(analysed.uns["sae"])
    with pytest.raises(error, match=match):
        csk.pl.atlas(analysed, tmp_path / "atlas", progress=False, **kwargs)
    assert_unchanged(analysed, before)
    assert sorted(analysed.uns["sae"]) == sorted(entry)
    if "features" in entry:
        assert analysed.uns["sae"]["features"] is entry["features"]
    assert not (tmp_path / "atlas").exists()


def test_without_loadings_annotation_or_groups(tmp_path):
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", n_features=8, k=2, n_epochs=2, progress=False)
    csk.tl.feature_stats(adata)
    del adata.varm["sae_loadings"]
    folder = csk.pl.atlas(adata, tmp_path / "atlas", progress=False)
    data, index = _feature(folder, 0), _index(folder)
    assert "genes" not in data and "terms" not in data and "groups" not in data
    assert not index["has_genes"] and not index["has_terms"] and "genes" not in index["columns"]


def test_stability_and_description_columns_reach_the_index(analysed, tmp_path):
    stored = csk.get.sae(analysed)
    features = pd.Index([str(f) for f in range(N_FEATURES)], name="feature")
    extra = pd.DataFrame(
        {"stability": np.linspace(0, 1, N_FEATURES), "description": [f"text of {f}" for f in range(N_FEATURES)]},
        index=features,
    )
    stored.add_features(extra)
    folder = csk.pl.atlas(analysed, tmp_path / "atlas", images=False, progress=False)
    index = _index(folder)
    assert [name for name, _ in index["sort"]] == ["frequency", "stability", "mean_active"]
    assert index["columns"]["description"][7] == "text of 7"
    assert index["columns"]["stability"][31] == 1.0
    assert _feature(folder, 7)["stats"]["stability"] == pytest.approx(7 / 31, rel=1e-3)
