"""scripts/atlas_check.py on a real atlas of csk.pl.atlas, opened from file:// in headless Chromium."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
import scanpy as sc

import cellsae_kit as csk

ROOT = Path(__file__).parents[1]
CHROMIUM = Path("/usr/bin/chromium")

pytest.importorskip("playwright", reason="the atlas check needs the Python package playwright")
if not CHROMIUM.exists():
    pytest.skip(f"the atlas check needs {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _load_checker():
    sys.path.insert(0, str(ROOT / "scripts"))  # atlas_check imports book_check beside it
    spec = importlib.util.spec_from_file_location("atlas_check", ROOT / "scripts" / "atlas_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


atlas_check = _load_checker()


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    csk.tl.feature_stats(adata, groupby="bulk_labels")
    csk.tl.annotate_features(adata, "progeny")
    folder = csk.pl.atlas(adata, tmp_path_factory.mktemp("atlas") / "atlas", groupby="bulk_labels", progress=False)
    return adata, folder


def _expected(adata):
    """A gene and a term to search, with the live features each must find, computed from the AnnData."""
    table = adata.uns["sae"]["features"]
    live = [f for f in range(32) if not table.loc[str(f), "dead"]]
    tops = {f: csk.tl.top_genes(adata, f, n=5)["gene"].tolist() for f in live}
    gene = tops[live[0]][0]
    terms = table["best_term"].dropna().astype(str)
    term = terms.value_counts().index[0]
    return {
        gene: [f for f in live if gene in tops[f]],
        term: [int(f) for f, t in terms.items() if t == term and int(f) in live],
    }


def test_searches_from_index_match_the_anndata(atlas):
    adata, folder = atlas
    table = adata.uns["sae"]["features"]
    live = [f for f in range(32) if not table.loc[str(f), "dead"]]
    tops = {f: csk.tl.top_genes(adata, f, n=5)["gene"].tolist() for f in live}
    frequent = max(live, key=lambda f: (table.loc[str(f), "frequency"], -f))
    gene = tops[frequent][0]
    terms = table.loc[[str(f) for f in live], "best_term"].dropna().astype(str)
    counts = terms.value_counts()
    term = sorted(counts.index[counts == counts.max()])[0]
    expected = {gene: [f for f in live if gene in tops[f]], term: [int(f) for f, t in terms.items() if t == term]}
    assert atlas_check.searches_from_index(atlas_check.read_index(folder)) == expected
    assert all(expected.values())


def test_searches_from_an_atlas_without_genes_or_terms():
    index = {"n_features": 2, "columns": {"dead": [0, 1], "frequency": [0.5, 0.0]}, "vocabularies": {}}
    assert atlas_check.searches_from_index(index) == {}


def test_a_good_atlas_passes(atlas, tmp_path):
    adata, folder = atlas
    searches = _expected(adata)
    report = atlas_check.check_atlas(folder, searches, tmp_path / "shots", features=[3, 0, 31], timeout=20)
    assert report.problems == []
    assert report.pages == ["index", "feature=3", "feature=0", "feature=31"]
    assert [p.name for p in report.screenshots] == ["atlas_index.png", "atlas_feature.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in report.screenshots)


def test_a_search_that_misses_is_caught(atlas):
    adata, folder = atlas
    gene, found = next(iter(_expected(adata).items()))
    missed = sorted(set(range(32)) - set(found))
    report = atlas_check.check_atlas(folder, {"NO_SUCH_GENE_XYZ": [], gene: range(32)}, features=[])
    assert {p.detail for p in report.problems} == {
        "'NO_SUCH_GENE_XYZ' finds no feature",
        f"{gene!r} does not find features {missed}",
    }


def test_network_requests_broken_images_and_errors_are_caught(atlas, tmp_path):
    _, good = atlas
    folder = shutil.copytree(good, tmp_path / "broken")
    html = (folder / "index.html").read_text()
    cdn = '<script src="https://cdn.example.invalid/lib.js"></script><script>throw new Error("boom")</script>'
    (folder / "index.html").write_text(html.replace("</head>", cdn + "</head>"))
    (folder / "img" / "0.png").write_bytes(b"not a PNG")
    script = folder / "features" / "0.js"
    script.write_text(script.read_text().replace('"stats":{', '"stats":{"leaked":"undefined",'))
    report = atlas_check.check_atlas(folder, features=[0], timeout=20)
    kinds = sorted({p.kind for p in report.problems})
    assert kinds == ["JavaScript error", "missing image", "network", "text"]
    assert any("cdn.example.invalid" in p.detail for p in report.problems)


def test_cli_exit_codes(atlas, tmp_path, capsys):
    _, folder = atlas
    assert atlas_check.main([str(folder), "--feature", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 views passed" in out
    searches = atlas_check.searches_from_index(atlas_check.read_index(folder))
    assert [line for line in out.splitlines() if line.startswith("search: ")] == [
        f"search: {text!r} must find features {sorted(found)}" for text, found in searches.items()
    ]
    assert atlas_check.main([str(folder), "--search", "NO_SUCH_GENE_XYZ", "--feature", "1"]) == 1
    assert atlas_check.main([str(tmp_path / "nothing")]) == 2
    (tmp_path / "other" / "data").mkdir(parents=True)
    (tmp_path / "other" / "data" / "index.js").write_text("var x = 1;")
    assert atlas_check.main([str(tmp_path / "other")]) == 2
    assert "does not start with 'window.ATLAS_INDEX = '" in capsys.readouterr().err
