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


HIERARCHY = {"n_cells": 3000, "n_programs": 20, "design": "hierarchy", "n_genes": 150}


@pytest.fixture(scope="module")
def tree_sim():
    return csk.datasets.simulate(**HIERARCHY)


def test_hierarchy_truth_is_consistent(tree_sim):
    sim, truth = tree_sim, tree_sim.uns["simulation"]
    tree, levels = truth["tree"], truth["program_level"]
    # 4 lineages of 3 subtypes: programmes 0-3 are the lineages', 4-15 the subtypes', 16-19 states
    assert list(sim.obs.columns) == ["lineage", "cell_type", "covariate", "covariate_offset"]
    assert sim.obs["lineage"].cat.categories.tolist() == [f"lineage_{i}" for i in range(4)]
    assert (
        sim.obs["cell_type"].cat.categories.tolist()
        == tree.index.tolist()
        == [f"type_{i}.{j}" for i in range(4) for j in range(3)]
    )
    assert levels.tolist() == ["lineage"] * 4 + ["subtype"] * 12 + ["state"] * 4
    assert tree["lineage_program"].tolist() == [i for i in range(4) for _ in range(3)]
    assert tree["subtype_program"].tolist() == list(range(4, 16))
    assert truth["params"]["n_subtypes"] == [3, 3, 3, 3] and truth["params"]["n_states"] == 4
    # the subtypes split the cells evenly; each cell's lineage is its subtype's
    assert sim.obs["cell_type"].value_counts().tolist() == [250] * 12
    cell_type = sim.obs["cell_type"].astype(str).to_numpy()
    assert (sim.obs["lineage"].astype(str).to_numpy() == tree.loc[cell_type, "lineage"].to_numpy()).all()
    # every subtype's cells have their lineage programme and their own programme on, every other tree programme
    # off; a lineage programme is shared by all subtypes of the lineage
    programs = sim.obsm["true_programs"]
    on = programs != 0
    expected = np.zeros((sim.n_obs, 16), dtype=bool)
    expected[np.arange(sim.n_obs), tree.loc[cell_type, "lineage_program"].to_numpy()] = True
    expected[np.arange(sim.n_obs), tree.loc[cell_type, "subtype_program"].to_numpy()] = True
    np.testing.assert_array_equal(on[:, :16], expected)
    np.testing.assert_array_equal(truth["cell_type_masks"][:, :16], expected[np.argsort(cell_type)][::250])
    assert not truth["cell_type_masks"][:, 16:].any()
    for lineage, rows in tree.groupby("lineage"):
        in_lineage = sim.obs["lineage"] == lineage
        assert (
            on[in_lineage, rows["lineage_program"].iloc[0]].all()
            and not on[~in_lineage, rows["lineage_program"].iloc[0]].any()
        )
    # tree programmes are activity + offset where on; states scale that by an intensity uniform on [0, 1]
    level = (sim.obsm["true_activity"] + sim.obs["covariate_offset"].to_numpy()[:, None]).astype(np.float64)
    np.testing.assert_allclose(programs[:, :16][on[:, :16]], level[:, :16][on[:, :16]], atol=1e-5)
    intensity = programs[:, 16:][on[:, 16:]] / level[:, 16:][on[:, 16:]]
    assert intensity.min() >= -1e-4 and intensity.max() <= 1 + 1e-4
    assert np.mean(intensity) == pytest.approx(0.5, abs=0.03)
    assert on[:, 16:].mean() == pytest.approx(0.3, abs=0.02)
    # the study's rates, given to the programmes in a random order
    np.testing.assert_allclose(np.sort(truth["rates"]), np.linspace(1.0, 10.9, 20))
    assert (np.ptp(programs, axis=0) > 0).all()


def test_hierarchy_of_unequal_lineages_without_states():
    sim = csk.datasets.simulate(200, 7, design="hierarchy", n_lineages=2, n_subtypes=[2, 3], n_genes=40)
    tree = sim.uns["simulation"]["tree"]
    assert tree["lineage"].tolist() == ["lineage_0"] * 2 + ["lineage_1"] * 3
    assert tree["subtype_program"].tolist() == [2, 3, 4, 5, 6]
    assert "state" not in sim.uns["simulation"]["program_level"].tolist()
    assert sim.obs["lineage"].value_counts().sort_index().tolist() == [80, 120]
    again = csk.datasets.simulate(200, 7, design="hierarchy", n_lineages=2, n_subtypes=[2, 3], n_genes=40)
    np.testing.assert_array_equal(again.X, sim.X)


def test_hierarchy_in_a_mudata():
    mdata = csk.datasets.simulate(300, 10, design="hierarchy", n_lineages=2, n_subtypes=2, modalities=("rna", "prot"))
    assert list(mdata.obs.columns[:2]) == ["lineage", "cell_type"]
    assert mdata.mod["prot"].uns["simulation"]["tree"].equals(mdata.uns["simulation"]["tree"])


def test_hierarchy_round_trips_through_h5ad(tree_sim, tmp_path):
    tree_sim.write_h5ad(tmp_path / "tree.h5ad")
    back = ad.read_h5ad(tmp_path / "tree.h5ad")
    pd.testing.assert_frame_equal(back.uns["simulation"]["tree"], tree_sim.uns["simulation"]["tree"])
    assert back.uns["simulation"]["program_level"].tolist() == tree_sim.uns["simulation"]["program_level"].tolist()
    np.testing.assert_array_equal(
        back.uns["simulation"]["cell_type_masks"], tree_sim.uns["simulation"]["cell_type_masks"]
    )
    assert back.obs["lineage"].equals(tree_sim.obs["lineage"]) and back.obs["cell_type"].equals(
        tree_sim.obs["cell_type"]
    )
    assert back.uns["simulation"]["params"]["design"] == "hierarchy"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_programs": 15}, r"n_programs >= 16"),
        ({"n_cell_types": 5}, "leave out n_cell_types"),
        ({"n_lineages": 0}, "n_lineages"),
        ({"n_lineages": 2.5}, "n_lineages"),
        ({"n_subtypes": 0}, "n_subtypes"),
        ({"n_subtypes": [2, 2]}, "one count per lineage"),
        ({"n_subtypes": "3"}, "n_subtypes"),
        ({"n_subtypes": [2, 2, 0, 1]}, "n_subtypes"),
        ({"n_cells": 10}, "one cell per subtype"),
        ({"design": "cell_type", "n_lineages": 3}, "design='hierarchy'"),
        ({"design": "independent", "n_subtypes": 2}, "design='hierarchy'"),
    ],
)
def test_hierarchy_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        csk.datasets.simulate(**({"n_cells": 50, "n_programs": 20, "n_genes": 10, "design": "hierarchy"} | kwargs))
