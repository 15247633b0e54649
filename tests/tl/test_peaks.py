import numpy as np
import pandas as pd
import pytest

import cellsae_kit as csk
from cellsae_kit.tl._peaks import link_peaks, parse_peaks
from tests.conftest import assert_unchanged, snapshot

GENES = pd.DataFrame(
    {
        "chrom": ["chr1", "chr1", "chr2"],
        "start": [1_000, 10_000, 500],
        "end": [2_000, 12_000, 900],
        "strand": ["+", "-", "+"],
    },
    index=["PLUS", "MINUS", "OTHER"],
)


def test_parse_peaks_reads_both_separators():
    table = parse_peaks(["chr1:10-20", "chr2-30-45", "GL000194.1-5-9"])
    assert table["chrom"].tolist() == ["chr1", "chr2", "GL000194.1"]
    assert table["start"].tolist() == [10, 30, 5] and table["end"].tolist() == [20, 45, 9]
    with pytest.raises(ValueError, match="gene_column"):
        parse_peaks(["chr1:10-20", "peak_7"])


def test_link_peaks_body_and_strand_aware_promoter():
    peaks = parse_peaks(
        [
            "chr1-1500-1600",  # inside PLUS
            "chr1-600-700",  # 300-400 bp upstream of PLUS (+ strand: before its start)
            "chr1-2100-2200",  # downstream of PLUS: not its promoter
            "chr1-12300-12400",  # upstream of MINUS (- strand: after its end)
            "chr1-9500-9600",  # downstream of MINUS
            "chr2-1000-1100",  # after OTHER
            "chr3-1-100000",  # another chromosome
        ]
    )
    links = link_peaks(peaks, GENES, window=500).toarray()
    expected = np.zeros((7, 3))
    expected[0, 0] = expected[1, 0] = expected[3, 1] = 1
    np.testing.assert_array_equal(links, expected)
    # without strands both sides count
    unstranded = link_peaks(peaks, GENES.drop(columns="strand"), window=500).toarray()
    assert unstranded[2, 0] == 1 and unstranded[4, 1] == 1 and unstranded[5, 2] == 1 and unstranded[6].sum() == 0
    # by brute force over every pair
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 20_000, 300)
    many = pd.DataFrame({"chrom": "chr1", "start": starts, "end": starts + rng.integers(1, 800, 300)})
    low = np.where(GENES["strand"] == "-", GENES["start"], GENES["start"] - 500)
    high = np.where(GENES["strand"] == "-", GENES["end"] + 500, GENES["end"])
    brute = (many["start"].to_numpy()[:, None] < high) & (many["end"].to_numpy()[:, None] > low)
    brute &= (GENES["chrom"] == "chr1").to_numpy()
    np.testing.assert_array_equal(link_peaks(many, GENES, window=500).toarray(), brute.astype(float))


@pytest.fixture
def mdata():
    mdata = csk.datasets.simulate(300, 6, 3, modalities=("rna", "atac"), n_genes=40, n_peaks=60)
    atac = mdata.mod["atac"]
    atac.var_names = [f"chr1-{100 * i}-{100 * i + 50}" for i in range(60)]
    mdata.update()
    csk.tl.sae(mdata, "atac:X", n_features=8, k=2, n_epochs=3, progress=False)
    return mdata


def test_peaks_to_genes_means_the_peaks_of_each_gene(mdata):
    genes = pd.DataFrame(
        {"chrom": "chr1", "start": [0, 1_000, 50_000], "end": [250, 1_450, 60_000]},
        index=["gene_0", "gene_1", "gene_unlinked"],
    )
    table = csk.tl.peaks_to_genes(mdata, genes, window=0)
    peaks = mdata.mod["atac"].varm["sae_loadings"]
    np.testing.assert_allclose(table.loc["gene_0"], peaks[[0, 1, 2]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(table.loc["gene_1"], peaks[10:15].mean(axis=0), rtol=1e-6)
    assert "gene_unlinked" not in table.index
    written = mdata.mod["rna"].varm["sae_atac_loadings"]
    np.testing.assert_allclose(written[0], table.loc["gene_0"], rtol=1e-6)
    assert not written[2:].any()  # genes of the RNA modality without peaks

    top = csk.tl.peaks_to_genes(mdata, genes, window=0, aggregate="max", inplace=False)
    np.testing.assert_allclose(top.loc["gene_1"], peaks[10:15].max(axis=0), rtol=1e-6)


def test_peaks_to_genes_from_a_var_column_and_annotation(mdata):
    atac = mdata.mod["atac"]
    atac.var["gene"] = [f"gene_{i % 5}" if i < 50 else None for i in range(60)]
    table = csk.tl.peaks_to_genes(mdata, gene_column="gene")
    assert table.index.tolist() == [f"gene_{i}" for i in range(5)]
    peaks = atac.varm["sae_loadings"]
    np.testing.assert_allclose(table.loc["gene_3"], peaks[[i for i in range(50) if i % 5 == 3]].mean(axis=0), rtol=1e-5)
    net = pd.DataFrame({"source": ["A"] * 3 + ["B"] * 3, "target": [f"gene_{i}" for i in (0, 1, 2, 2, 3, 4)]})
    csk.tl.annotate_features(mdata, net, mod="rna", loadings="sae_atac_loadings", tmin=2)
    assert mdata.uns["sae"]["annotation_params"]["loadings"] == "sae_atac_loadings"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "genes= .* or gene_column="),
        ({"gene_column": "nearest"}, KeyError, "not a column"),
        ({"genes": GENES.drop(columns="end")}, KeyError, "end"),
        ({"genes": GENES.assign(chrom="chrZ")}, ValueError, "same chromosome names"),
        ({"genes": GENES, "aggregate": "sum"}, ValueError, "'mean' or 'max'"),
        ({"genes": GENES, "mod": "prot"}, KeyError, "modality 'prot'"),
        ({"genes": GENES, "key": "other"}, KeyError, "X_other"),
    ],
)
def test_bad_input(mdata, kwargs, error, message):
    before = {name: snapshot(m) for name, m in mdata.mod.items()}
    with pytest.raises(error, match=message):
        csk.tl.peaks_to_genes(mdata, **kwargs)
    for name, m in mdata.mod.items():
        assert_unchanged(m, before[name])


def test_unparsable_peak_names(mdata):
    mdata.mod["atac"].var_names = [f"peak_{i}" for i in range(60)]
    with pytest.raises(ValueError, match="not coordinates"):
        csk.tl.peaks_to_genes(mdata, GENES)


def test_peaks_without_loadings(mdata):
    del mdata.mod["atac"].varm["sae_loadings"]
    with pytest.raises(KeyError, match="feature_genes"):
        csk.tl.peaks_to_genes(mdata, GENES)
