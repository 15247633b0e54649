"""datasets.genesets: the bundled GO BP and PROGENy sets, user GMT/table files and DataFrames, and bad input."""

import gzip
import hashlib
import re
from pathlib import Path

import decoupler as dc
import numpy as np
import pandas as pd
import pytest

import cellsae_kit as csk
from cellsae_kit.datasets._genesets import DATA

PROGENY_PATHWAYS = {
    "Androgen", "EGFR", "Estrogen", "Hypoxia", "JAK-STAT", "MAPK", "NFkB",
    "p53", "PI3K", "TGFb", "TNFa", "Trail", "VEGF", "WNT",
}  # fmt: skip


@pytest.fixture
def small_net() -> pd.DataFrame:
    """Three gene sets of sizes 12, 3 and 11; names with spaces, one weighted set."""
    rng = np.random.default_rng(0)
    rows = [("T cell activation", f"G{i}", 1.0) for i in range(12)]
    rows += [("tiny set", g, 1.0) for g in ("CD3E", "CD3D", "NA")]  # "NA" is a gene symbol, not a missing value
    rows += [("weighted programme", f"H{i}", float(w)) for i, w in enumerate(rng.normal(size=11))]
    return pd.DataFrame(rows, columns=["source", "target", "weight"])


def _sizes(net: pd.DataFrame) -> pd.Series:
    return net.groupby("source")["target"].nunique()


# The bundled resources


def test_go_bp_loads():
    go = csk.datasets.genesets("go_bp")
    assert go.columns.tolist() == ["source", "target", "weight", "go_id"]
    assert go["weight"].dtype == np.float64
    assert (go["weight"] == 1).all()
    assert not go.isna().any().any()
    assert not go.duplicated(["source", "target"]).any()
    sizes = _sizes(go)
    assert sizes.between(10, 500).all()
    assert len(sizes) > 5000
    # Names are unique per GO id, so a name identifies a term.
    assert (go.groupby("source")["go_id"].nunique() == 1).all()
    assert (go.groupby("go_id")["source"].nunique() == 1).all()


def test_go_bp_known_facts():
    go = csk.datasets.genesets("go_bp")
    co2 = go[go["source"] == "carbon dioxide transport"]
    assert set(co2["go_id"]) == {"GO:0015670"}
    genes = set(co2["target"])
    assert {"HBB", "HBA1", "CA2", "AQP1", "RHAG"} <= genes
    assert "CD3E" not in genes
    # Annotations are propagated: the parent term holds the genes of its children.
    gas = set(go.loc[go["source"] == "gas transport", "target"])
    assert genes <= gas
    assert set(go.loc[go["source"] == "oxygen transport", "target"]) <= gas
    assert set(go.loc[go["source"] == "alpha-beta T cell differentiation", "target"]) <= set(
        go.loc[go["source"] == "T cell differentiation", "target"]
    )
    # Terms above 500 genes are left out by the build.
    assert "T cell activation" not in set(go["source"])


def test_progeny_loads_and_known_weights():
    pg = csk.datasets.genesets("progeny")
    assert pg.columns.tolist() == ["source", "target", "weight", "p_value"]
    assert set(pg["source"]) == PROGENY_PATHWAYS
    assert (_sizes(pg) == 500).all()
    assert not pg.isna().any().any()
    assert (pg["weight"] > 0).any() and (pg["weight"] < 0).any()
    weight = pg.set_index(["source", "target"])["weight"]
    # Textbook targets are induced by their pathway.
    for pathway, gene in [("NFkB", "NFKBIA"), ("p53", "CDKN1A"), ("p53", "MDM2"), ("Hypoxia", "VEGFA")]:
        assert weight[pathway, gene] > 0, (pathway, gene)
    # The most significant genes are kept, in order of p-value.
    assert pg.groupby("source")["p_value"].apply(lambda p: p.is_monotonic_increasing).all()
    assert pg["p_value"].max() < 0.1


def test_bundled_files_match_provenance():
    text = (DATA / "PROVENANCE.md").read_text()
    rows = re.findall(r"^\| (\S+\.tsv\.gz) \| (\d+) \| (\d+) \| (\d+) \| ([0-9a-f]{64}) \|$", text, flags=re.M)
    assert {r[0] for r in rows} == {"go_bp_human.tsv.gz", "progeny_human.tsv.gz"}
    for name, n_rows, n_sets, n_bytes, digest in rows:
        path = DATA / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name
        assert path.stat().st_size == int(n_bytes)
        table = pd.read_csv(path, sep="\t", keep_default_na=False)
        assert len(table) == int(n_rows)
        assert table["source"].nunique() == int(n_sets)
    assert sum((DATA / r[0]).stat().st_size for r in rows) < 5e6  # keep the wheel small


def test_bundled_is_cached_and_returns_a_copy():
    first = csk.datasets.genesets("progeny")
    first.loc[:, "weight"] = 0.0
    second = csk.datasets.genesets("progeny")
    assert (second["weight"] != 0).any()
    assert second is not first


@pytest.mark.parametrize(("min_size", "max_size"), [(50, 60), (None, 12), (400, None)])
def test_size_filter(min_size, max_size):
    go = csk.datasets.genesets("go_bp", min_size=min_size, max_size=max_size)
    full = _sizes(csk.datasets.genesets("go_bp", min_size=None, max_size=None))
    expected = full[(full >= (min_size or 0)) & (full <= (max_size or np.inf))]
    assert _sizes(go).sort_index().equals(expected.sort_index())


def test_nets_work_with_decoupler():
    pg = csk.datasets.genesets("progeny")
    genes = pg["target"].unique()
    data = pd.DataFrame(np.random.default_rng(0).normal(size=(4, len(genes))), columns=genes)
    scores, pvals = dc.mt.ulm(data=data, net=pg, verbose=False)
    assert set(scores.columns) == PROGENY_PATHWAYS
    assert np.isfinite(scores.to_numpy()).all()


# User files and DataFrames


@pytest.mark.parametrize("suffix", [".gmt", ".gmt.gz"])
def test_gmt_round_trip(tmp_path, small_net, suffix):
    path = tmp_path / f"sets{suffix}"
    lines = [f"{s}\tsome description\t" + "\t".join(g["target"]) + "\n" for s, g in small_net.groupby("source")]
    text = "".join(lines) + "\n"  # a trailing blank line is allowed
    if suffix.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    net = csk.datasets.genesets(path, min_size=None, max_size=None)
    expected = small_net.assign(weight=1.0)
    pd.testing.assert_frame_equal(
        net.sort_values(["source", "target"]).reset_index(drop=True),
        expected.sort_values(["source", "target"]).reset_index(drop=True),
    )
    # The default size filter drops the 3-gene set; a string path works too.
    assert set(csk.datasets.genesets(str(path))["source"]) == {"T cell activation", "weighted programme"}


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".tsv.gz"])
def test_table_round_trip(tmp_path, small_net, suffix):
    path = tmp_path / f"sets{suffix}"
    small_net.assign(note="x").to_csv(path, sep="," if ".csv" in suffix else "\t", index=False)
    net = csk.datasets.genesets(path, min_size=None, max_size=None)
    pd.testing.assert_frame_equal(net, small_net.assign(note="x"))


def test_dataframe_defaults_weight_and_drops_duplicates(small_net):
    given = pd.concat([small_net, small_net.iloc[:2]])[["target", "source"]]
    before = given.copy()
    net = csk.datasets.genesets(given, min_size=None, max_size=None)
    pd.testing.assert_frame_equal(net, small_net.assign(weight=1.0))
    pd.testing.assert_frame_equal(given, before)  # the user's table is left as it was


# Bad input: clear errors that name the problem and the fix


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'go_bp', 'progeny'.*GMT"):
        csk.datasets.genesets("hallmark")


def test_wrong_type():
    with pytest.raises(TypeError, match="cannot be read from a int.*DataFrame"):
        csk.datasets.genesets(3)


def test_missing_columns(small_net):
    given = small_net.rename(columns={"target": "gene"})
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['target'\].*rename"):
        csk.datasets.genesets(given)


@pytest.mark.parametrize("column", ["source", "target", "weight"])
def test_missing_values(small_net, column):
    given = small_net.copy()
    given.loc[3, column] = np.nan
    with pytest.raises(ValueError, match=f"1 row\\(s\\) with a missing '{column}' \\(first at row 3\\).*dropna"):
        csk.datasets.genesets(given)


def test_missing_value_in_a_file(tmp_path):
    path = tmp_path / "sets.tsv"
    path.write_text("source\ttarget\nA\tCD3E\nA\t\n")
    with pytest.raises(ValueError, match="missing 'target'"):
        csk.datasets.genesets(path)


def test_non_numeric_and_conflicting_weights(small_net):
    with pytest.raises(ValueError, match="non-numeric values in 'weight'"):
        csk.datasets.genesets(small_net.assign(weight="strong"))
    conflicting = pd.concat([small_net, small_net.iloc[[0]].assign(weight=2.0)])
    with pytest.raises(ValueError, match="gene 'G0' in set 'T cell activation'.*different weights.*groupby"):
        csk.datasets.genesets(conflicting)
    with pytest.raises(ValueError, match="infinite weights"):
        csk.datasets.genesets(small_net.assign(weight=np.inf))


@pytest.mark.parametrize("suffix", [".gmt", ".tsv", ".csv"])
def test_empty_file(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        csk.datasets.genesets(path)


def test_header_only_table_and_empty_dataframe(tmp_path):
    path = tmp_path / "header.tsv"
    path.write_text("source\ttarget\n")
    with pytest.raises(ValueError, match="has no rows"):
        csk.datasets.genesets(path)
    with pytest.raises(ValueError, match="has no rows"):
        csk.datasets.genesets(pd.DataFrame(columns=["source", "target"]))


def test_gmt_line_without_genes(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("A\tdesc\tCD3E\tCD3D\nB\tdesc\n")
    with pytest.raises(ValueError, match="Line 2 .* no genes.*separated by tabs"):
        csk.datasets.genesets(path)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "sets.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match="unknown file type '.xlsx'.*\\.gmt"):
        csk.datasets.genesets(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="nor an existing file"):
        csk.datasets.genesets(Path(tmp_path) / "nothing.gmt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_size": 0}, "min_size=0 must be a positive whole number"),
        ({"max_size": 2.5}, "max_size=2.5 must be a positive whole number"),
        ({"min_size": 20, "max_size": 10}, "larger than max_size"),
        ({"min_size": 100}, "No gene set of the DataFrame has between 100 and 500 genes.*widen"),
    ],
)
def test_bad_sizes(small_net, kwargs, message):
    with pytest.raises(ValueError, match=message):
        csk.datasets.genesets(small_net, **kwargs)
