import time

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest

import cellsae_kit as csk
from cellsae_kit.tl._peaks import link_peaks, parse_peaks

SMALL = {"n_cells": 3000, "n_programs": 12, "n_cell_types": 6, "n_genes": 150}


@pytest.fixture(scope="module")
def sim():
    return csk.datasets.simulate(**SMALL)


def test_layout(sim):
    assert isinstance(sim, ad.AnnData) and sim.shape == (3000, 150)
    assert sim.X.dtype == np.float32 and np.array_equal(sim.X, sim.layers["counts"])
    assert np.all(sim.X >= 0) and np.all(sim.X == np.round(sim.X))
    assert sim.obsm["true_programs"].shape == sim.obsm["true_activity"].shape == (3000, 12)
    assert sim.varm["true_loadings"].shape == (150, 12)
    assert list(sim.obs.columns) == ["cell_type", "covariate", "covariate_offset"]
    assert sim.obs["cell_type"].cat.categories.size == 6 and sim.obs["covariate"].cat.categories.size == 3
    assert sim.uns["simulation"]["cell_type_masks"].shape == (6, 12)


def test_truth_follows_the_study_design(sim):
    truth = sim.uns["simulation"]
    rates = truth["rates"]
    assert rates[0] == 1.0 and rates[-1] == pytest.approx(10.9)
    np.testing.assert_allclose(np.diff(rates), np.diff(rates)[0])
    # Poisson activities with those rates: mean and variance per program
    activity = sim.obsm["true_activity"].astype(np.float64)
    assert np.all(activity == np.round(activity))
    np.testing.assert_allclose(activity.mean(0), rates, rtol=0.06)
    np.testing.assert_allclose(activity.var(0), rates, rtol=0.15)
    # covariate i adds Normal(i, 0.1) to all programs, then the cell type's mask switches programs on or off
    cov = sim.obs["covariate"].cat.codes.to_numpy()
    offset = sim.obs["covariate_offset"].to_numpy(np.float64)
    for i in range(3):
        assert offset[cov == i].mean() == pytest.approx(i, abs=0.01)
        assert offset[cov == i].std() == pytest.approx(0.1, rel=0.1)
    masks = truth["cell_type_masks"]
    on = masks[sim.obs["cell_type"].cat.codes.to_numpy()]
    np.testing.assert_allclose(sim.obsm["true_programs"], (activity + offset[:, None]) * on, atol=1e-5)
    # counts scatter around the programs read through the Bernoulli gene map (Poisson: variance = mean)
    mu = np.maximum(sim.obsm["true_programs"].astype(np.float64) @ sim.varm["true_loadings"].T, 0)
    residual = sim.X - mu
    assert abs(residual.mean()) < 0.05
    assert residual.var() == pytest.approx(mu.mean(), rel=0.05)


def test_densities_match_the_study():
    adata = csk.datasets.simulate(500, 100, 40, n_genes=2000)
    assert adata.uns["simulation"]["cell_type_masks"].mean() == pytest.approx(0.3, abs=0.02)
    assert adata.varm["true_loadings"].mean() == pytest.approx(0.1, abs=0.005)


def test_every_program_varies_even_with_few_cell_types():
    adata = csk.datasets.simulate(400, 30, 2, n_genes=50, random_state=3)
    assert adata.uns["simulation"]["cell_type_masks"].any(axis=0).all()
    assert (np.ptp(adata.obsm["true_programs"], axis=0) > 0).all()


def test_independent_design_switches_programs_per_cell():
    adata = csk.datasets.simulate(4000, 20, design="independent", n_genes=50, p_active=0.3)
    assert "cell_type" not in adata.obs and "cell_type_masks" not in adata.uns["simulation"]
    offset = adata.obs["covariate_offset"].to_numpy()[:, None]
    programs = adata.obsm["true_programs"]
    on = programs != 0  # a switched-on program is activity + offset, zero with probability zero
    np.testing.assert_allclose(programs[on], (adata.obsm["true_activity"] + offset)[on], atol=1e-5)
    assert on.mean() == pytest.approx(0.3, abs=0.01)
    # independent per cell: the on/off patterns are (nearly) all different, unlike 40 shared masks
    assert len(np.unique(on, axis=0)) > 3500
    assert abs(np.corrcoef(on[:, 0], on[:, 1])[0, 1]) < 0.05


def test_negative_binomial_is_overdispersed():
    adata = csk.datasets.simulate(2000, 10, 5, n_genes=100, noise="negative_binomial", theta=5.0)
    mu = np.maximum(adata.obsm["true_programs"].astype(np.float64) @ adata.varm["true_loadings"].T, 0)
    residual = adata.X - mu
    assert residual.var() == pytest.approx((mu + mu**2 / 5.0).mean(), rel=0.08)


def test_seeding():
    a = csk.datasets.simulate(200, 5, 3, n_genes=30, random_state=1)
    b = csk.datasets.simulate(200, 5, 3, n_genes=30, random_state=1)
    c = csk.datasets.simulate(200, 5, 3, n_genes=30, random_state=2)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsm["true_programs"], b.obsm["true_programs"])
    assert not np.array_equal(a.X, c.X)


def test_multimodal_mudata():
    kwargs = {"n_cells": 300, "n_programs": 8, "n_cell_types": 4, "n_genes": 60}
    mdata = csk.datasets.simulate(**kwargs, modalities=("rna", "atac"), n_peaks=90)
    rna_only = csk.datasets.simulate(**kwargs)
    assert isinstance(mdata, md.MuData) and set(mdata.mod) == {"rna", "atac"}
    assert isinstance(mdata.obs["cell_type"].dtype, pd.CategoricalDtype)
    # each modality draws from its own stream: adding ATAC leaves the RNA as it was
    np.testing.assert_array_equal(mdata.mod["rna"].X, rna_only.X)
    np.testing.assert_array_equal(mdata.obsm["true_programs"], rna_only.obsm["true_programs"])
    atac = mdata.mod["atac"]
    assert atac.shape == (300, 90) and atac.varm["true_loadings"].shape == (90, 8)
    assert atac.X.mean() < 0.2 * rna_only.X.mean()
    assert list(mdata.obs.columns) == ["cell_type", "covariate", "covariate_offset"]
    np.testing.assert_array_equal(atac.obsm["true_programs"], mdata.obsm["true_programs"])
    prot = csk.datasets.simulate(**kwargs, modalities=("rna", "prot"), n_proteins=20).mod["prot"]
    assert prot.shape == (300, 20) and prot.X.mean() > rna_only.X.mean()


def test_round_trips_through_h5ad(sim, tmp_path):
    sim.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    np.testing.assert_array_equal(back.uns["simulation"]["cell_type_masks"], sim.uns["simulation"]["cell_type_masks"])
    assert back.uns["simulation"]["params"]["design"] == "cell_type"


def test_ten_thousand_cells_in_seconds():
    started = time.perf_counter()
    adata = csk.datasets.simulate(10_000)
    assert adata.shape == (10_000, 2000) and adata.obsm["true_programs"].shape == (10_000, 100)
    assert time.perf_counter() - started < 20  # about 2 s on the 2-core CI machine


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"design": "lineage"}, "design='lineage' is not known"),
        ({"design": "independent", "n_cell_types": 5}, "no cell types"),
        ({"modalities": ("rna", "hic")}, "modalities"),
        ({"modalities": ("rna", "rna")}, "distinct"),
        ({"modalities": ()}, "modalities"),
        ({"p_active": 0.0}, "p_active"),
        ({"p_gene": 1.5}, "p_gene"),
        ({"n_genes": 0}, "n_genes"),
        ({"n_cells": 1}, "n_cells"),
        ({"n_cell_types": 2.5}, "n_cell_types"),
        ({"noise": "gaussian"}, "noise"),
        ({"noise": "negative_binomial", "theta": 0}, "theta"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        csk.datasets.simulate(**({"n_cells": 50, "n_programs": 3, "n_genes": 10} | kwargs))


def test_peaks_sit_at_genes_they_share_programs_with():
    mdata = csk.datasets.simulate(200, 10, 4, modalities=("rna", "atac"), n_genes=100, n_peaks=300)
    rna, atac = mdata.mod["rna"], mdata.mod["atac"]
    assert {"chrom", "start", "end", "strand"} <= set(rna.var.columns)
    links = link_peaks(parse_peaks(atac.var_names), rna.var, window=2_000).toarray()
    own = rna.var_names.get_indexer(atac.var["gene"])
    assert (links[np.arange(atac.n_vars), own] == 1).all()  # every peak lies at its own gene
    shared = atac.varm["true_loadings"] @ rna.varm["true_loadings"].T
    assert (shared[np.arange(atac.n_vars), own] == shared.max(axis=1)).all()
    # RNA alone is unchanged by the positions: the same counts as within the MuData
    alone = csk.datasets.simulate(200, 10, 4, n_genes=100)
    np.testing.assert_array_equal(alone.X, rna.X)
    assert alone.var["start"].equals(rna.var["start"])
