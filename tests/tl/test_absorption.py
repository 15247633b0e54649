import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from anndata import AnnData
from scipy import sparse
from sklearn.metrics import f1_score

import cellsae_kit as csk
from cellsae_kit.tl._absorption import ALL_CHILDREN, TREE_COLUMNS, absorption_scores, tree_absorption_scores
from tests.conftest import assert_unchanged, snapshot

T_CELLS = [
    "CD4+/CD25 T Reg",
    "CD4+/CD45RA+/CD25- Naive T",
    "CD4+/CD45RO+ Memory",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
]


def constructed():
    """Children a and b (100 cells each) of parent P, 100 other cells, 20 cells labelled P itself.

    Feature 0 (the parent's) is silent in 30 cells of a, where a's own feature 1 fires instead (30% absorbed);
    it is also silent in 10 cells of b where b's feature 2 is silent too (missed, not absorbed).
    """
    rng = np.random.default_rng(0)
    labels = np.array(["a"] * 100 + ["b"] * 100 + ["other"] * 100 + ["P"] * 20)
    codes = np.zeros((320, 5))
    codes[:300, 4] = rng.random(300) < 0.1  # a feature firing at random
    codes[:, 0] = np.isin(labels, ["a", "b", "P"]) * rng.uniform(1, 2, 320)
    absorbed = rng.choice(100, 30, replace=False)
    codes[absorbed, 0] = 0
    codes[:100, 1] = rng.uniform(1, 2, 100)
    codes[100:190, 2] = rng.uniform(1, 2, 90)
    codes[190:200, 0] = 0  # b's last 10 cells: neither feature fires
    codes[200:300, 3] = 1.0
    return codes, labels


def test_known_absorption_fraction():
    codes, labels = constructed()
    table = absorption_scores(sparse.csr_matrix(codes), labels, {"P": ["a", "b"]}).set_index("child")
    a, b, total = table.loc["a"], table.loc["b"], table.loc[ALL_CHILDREN]
    assert (a["parent_feature"], a["child_feature"], b["child_feature"]) == (0, 1, 2)
    assert a["absorption"] == 0.30 and (a["n_cells"], a["n_parent_silent"], a["n_absorbed"]) == (100, 30, 30)
    assert b["absorption"] == 0.0 and (b["n_cells"], b["n_parent_silent"], b["n_absorbed"]) == (100, 10, 0)
    # the parent's own label counts in the denominator of the summary row: 30 absorbed of 220 cells
    assert (total["n_cells"], total["n_parent_silent"], total["n_absorbed"]) == (220, 40, 30)
    assert total["absorption"] == pytest.approx(30 / 220) and total["child_feature"] == -1
    # F1 of "fires" against sklearn, and the chosen features are the best ones
    is_parent = np.isin(labels, ["a", "b", "P"])
    f1_parent = [f1_score(is_parent, codes[:, j] > 0) for j in range(5)]
    assert a["parent_f1"] == pytest.approx(max(f1_parent)) and int(np.argmax(f1_parent)) == 0
    f1_b = [f1_score(labels == "b", codes[:, j] > 0) for j in range(1, 5)]
    assert b["child_f1"] == pytest.approx(max(f1_b))
    assert np.isnan(table["decoder_cosine"]).all()


def test_threshold_and_decoder_cosine():
    codes, labels = constructed()
    codes[absorbed_too := np.arange(60, 70), 0] = 0.01  # weakly on: absorbed only above a threshold
    codes[absorbed_too, 1] = 1.5
    W_dec = np.random.default_rng(1).normal(size=(5, 8))
    low = absorption_scores(codes, labels, {"P": ["a", "b"]}, W_dec=W_dec).set_index("child")
    high = absorption_scores(codes, labels, {"P": ["a", "b"]}, W_dec=W_dec, threshold=0.05).set_index("child")
    n_low = int(((codes[:100, 0] == 0) & (codes[:100, 1] > 0)).sum())
    assert low.loc["a", "n_absorbed"] == n_low and high.loc["a", "n_absorbed"] == n_low + 10
    unit = W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)
    assert low.loc["a", "decoder_cosine"] == pytest.approx(unit[0] @ unit[1])
    assert low.loc["b", "decoder_cosine"] == pytest.approx(unit[0] @ unit[2])


def test_wrapper_stores_the_table_and_survives_h5ad(tmp_path):
    codes, labels = constructed()
    W_dec = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    adata = AnnData(np.zeros((320, 2), dtype=np.float32), obsm={"X_sae": sparse.csr_matrix(codes)})
    adata.obs["type"] = pd.Categorical(labels)
    adata.uns["sae"] = {"params": {"n_features": 5}, "weights": {"W_dec": W_dec}}
    csk.tl.absorption(adata, groupby="type", hierarchy={"P": ["a", "b"]})
    table = adata.uns["sae"]["absorption"]
    expected = absorption_scores(codes, labels, {"P": ["a", "b"]}, W_dec=W_dec)
    pd.testing.assert_frame_equal(table, expected)
    assert table.loc[table["child"] == "a", "absorption"].item() == 0.30
    assert adata.uns["sae"]["params"]["absorption"] == {"groupby": "type", "threshold": 0.0}
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["sae"]["absorption"]
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    copied = csk.tl.absorption(adata, groupby="type", hierarchy={"P": ["a"]}, copy=True)
    assert copied.uns["sae"]["absorption"]["child"].tolist() == ["a", ALL_CHILDREN]
    assert adata.uns["sae"]["absorption"]["child"].tolist() == ["a", "b", ALL_CHILDREN]


@pytest.fixture(scope="module")
def _pbmc_sae():
    adata = sc.datasets.pbmc68k_reduced()
    torch.set_num_threads(1)  # the autouse fixture of conftest runs after module-scoped ones
    csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    return adata


@pytest.fixture
def pbmc_sae(_pbmc_sae):
    return _pbmc_sae.copy()


def test_t_cells_over_their_subtypes(pbmc_sae):
    csk.tl.absorption(pbmc_sae, groupby="bulk_labels", hierarchy={"T cell": T_CELLS})
    table = pbmc_sae.uns["sae"]["absorption"]
    assert table["child"].tolist() == [*T_CELLS, ALL_CHILDREN]
    labels = pbmc_sae.obs["bulk_labels"].astype(str).to_numpy()
    codes = pbmc_sae.obsm["X_sae"].toarray()
    is_t = np.isin(labels, T_CELLS)
    parent = int(table["parent_feature"].iloc[0])
    assert (table["parent_feature"] == parent).all()
    f1 = [f1_score(is_t, codes[:, j] > 0) for j in range(codes.shape[1])]
    assert table["parent_f1"].iloc[0] == pytest.approx(max(f1))
    for row in table.iloc[:-1].itertuples():
        in_child = labels == row.child
        by_hand = np.mean((codes[in_child, parent] == 0) & (codes[in_child, row.child_feature] > 0))
        assert row.absorption == pytest.approx(by_hand) and row.n_cells == in_child.sum()
    assert table["n_absorbed"].iloc[-1] == table["n_absorbed"].iloc[:-1].sum()
    assert table["n_cells"].iloc[-1] == is_t.sum()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"groupby": "nope"}, KeyError, "not a column"),
        ({"hierarchy": {"T cell": ["CD4+ T"]}}, ValueError, "not groups of"),
        ({"hierarchy": {"T cell": []}}, ValueError, "lists no children"),
        ({"hierarchy": {"T cell": "CD8+ Cytotoxic T"}}, TypeError, "list of child groups"),
        ({"hierarchy": ["CD8+ Cytotoxic T"]}, TypeError, "dict"),
        ({"hierarchy": {"CD8+ Cytotoxic T": ["CD8+ Cytotoxic T"]}}, ValueError, "parent itself"),
        ({"threshold": -1.0}, ValueError, "threshold"),
        ({"threshold": 1e9}, ValueError, "No feature fires"),
        ({"key": "missing"}, KeyError, "X_missing"),
    ],
)
def test_bad_input_leaves_adata_unchanged(pbmc_sae, kwargs, error, message):
    before = snapshot(pbmc_sae)
    table_before = pbmc_sae.uns["sae"].copy()
    with pytest.raises(error, match=message):
        csk.tl.absorption(pbmc_sae, **({"groupby": "bulk_labels", "hierarchy": {"T cell": T_CELLS}} | kwargs))
    assert_unchanged(pbmc_sae, before)
    assert sorted(pbmc_sae.uns["sae"]) == sorted(table_before) and "absorption" not in pbmc_sae.uns["sae"]


def test_uns_entry_must_exist(pbmc_sae):
    del pbmc_sae.uns["sae"]
    with pytest.raises(KeyError, match="run cellsae_kit.tl.sae"):
        csk.tl.absorption(pbmc_sae, groupby="bulk_labels", hierarchy={"T cell": T_CELLS})


# --- the truth mode: true programmes and their tree ---


def constructed_tree():
    """Lineage L (programme 0) over subtypes a (programme 1, cells 0-99) and b (programme 2, cells 100-199);
    lineage M (programme 3) over subtype c (programme 4, cells 200-299).

    Feature 0 follows L but is silenced in half of a's cells (0-49), where a's feature 1 fires: absorption of a
    is exactly 0.5; b's feature 2 fires in all of b's cells with the parent's: 0; pooled 50 / 200 = 0.25.
    """
    rng = np.random.default_rng(0)
    n = 300
    truth = np.zeros((n, 5))
    truth[:200, 0] = rng.uniform(1, 2, 200)
    truth[:100, 1] = rng.uniform(1, 2, 100)
    truth[100:200, 2] = rng.uniform(1, 2, 100)
    truth[200:, 3] = rng.uniform(1, 2, 100)
    truth[200:, 4] = rng.uniform(1, 2, 100)
    codes = np.zeros((n, 6))
    codes[:, 0] = truth[:, 0]
    codes[:50, 0] = 0.0
    codes[:, 1] = truth[:, 1]
    codes[:, 2] = truth[:, 2]
    codes[:, 3] = truth[:, 3]
    codes[:, 4] = truth[:, 4]
    codes[:, 5] = rng.random(n) < 0.1  # a feature firing at random
    return codes, truth


def tree_adata(codes, truth):
    adata = AnnData(np.zeros((len(codes), 2), dtype=np.float32), obsm={"X_sae": sparse.csr_matrix(codes)})
    adata.obsm["true_programs"] = truth.astype(np.float32)
    tree = pd.DataFrame(
        {"lineage": ["L", "L", "M"], "lineage_program": [0, 0, 3], "subtype_program": [1, 2, 4]},
        index=pd.Index(["a", "b", "c"]),
    )
    adata.uns["simulation"] = {"params": {"design": "hierarchy"}, "tree": tree}
    adata.uns["sae"] = {"params": {"n_features": 6}}
    return adata


def test_known_absorption_of_a_true_parent():
    codes, truth = constructed_tree()
    table = tree_absorption_scores(codes, truth, {0: [1, 2], 3: [4]})
    assert list(table.columns) == TREE_COLUMNS and len(table) == 5
    by = table.set_index(["parent", "child"])
    a, b, pooled = by.loc[("0", "1")], by.loc[("0", "2")], by.loc[("0", ALL_CHILDREN)]
    assert (a["parent_feature"], a["child_feature"], b["child_feature"]) == (0, 1, 2)
    assert (a["n_cells"], a["n_absorbed"], a["absorption"]) == (100, 50, 0.5)
    assert (b["n_cells"], b["n_absorbed"], b["absorption"]) == (100, 0, 0.0)
    assert (pooled["n_cells"], pooled["n_absorbed"], pooled["absorption"]) == (200, 50, 0.25)
    assert (a["n_parent_on"], a["n_parent_silent"], pooled["n_parent_on"], pooled["n_parent_silent"]) == (
        100,
        50,
        200,
        50,
    )
    c = by.loc[("3", "4")]
    assert (c["parent_feature"], c["child_feature"], c["absorption"]) == (3, 4, 0.0)
    # the features are the best-correlated ones (Pearson r by numpy), the parent's own excluded for the children
    r = np.corrcoef(codes.T, truth.T)[:6, 6:]
    assert a["parent_r"] == pytest.approx(r[:, 0].max()) and int(np.argmax(r[:, 0])) == 0
    assert a["child_r"] == pytest.approx(r[1:, 1].max())
    assert pooled["child_feature"] == -1 and np.isnan(pooled["child_r"]) and np.isnan(table["decoder_cosine"]).all()


def test_tree_threshold_and_a_child_feature_outside_its_subtype():
    codes, truth = constructed_tree()
    codes[150:160, 0] = 0.01  # weakly on in 10 of b's cells: silent only above a threshold
    codes[150:160, 1] = 1.0  # and a's feature fires there too (a sibling's cells count: the parent is on)
    W_dec = np.random.default_rng(1).normal(size=(6, 4))
    low = tree_absorption_scores(codes, truth, {0: [1, 2]}, W_dec=W_dec).set_index("child")
    high = tree_absorption_scores(codes, truth, {0: [1, 2]}, W_dec=W_dec, threshold=0.05).set_index("child")
    assert (low.loc["1", "n_cells"], low.loc["1", "n_absorbed"]) == (110, 50)
    assert (high.loc["1", "n_cells"], high.loc["1", "n_absorbed"]) == (110, 60)
    assert high.loc["2", "n_absorbed"] == 10 and high.loc[ALL_CHILDREN, "n_absorbed"] == 60
    unit = W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)
    assert low.loc["1", "decoder_cosine"] == pytest.approx(unit[0] @ unit[1])


def test_wrapper_reads_the_tree_and_survives_h5ad(tmp_path):
    codes, truth = constructed_tree()
    adata = tree_adata(codes, truth)
    csk.tl.absorption(adata, truth="true_programs")
    table = adata.uns["sae"]["absorption"]
    assert table["parent"].tolist() == ["L", "L", "L", "M", "M"]
    assert table["child"].tolist() == ["a", "b", ALL_CHILDREN, "c", ALL_CHILDREN]
    assert table["absorption"].tolist() == [0.5, 0.0, 0.25, 0.0, 0.0]
    assert adata.uns["sae"]["params"]["absorption"] == {"truth": "true_programs", "threshold": 0.0}
    # the same numbers from an explicit tree of column numbers
    explicit = csk.tl.absorption(adata, truth="true_programs", hierarchy={0: [1, 2], 3: [4]}, copy=True)
    cols = ["parent_feature", "child_feature", "n_cells", "n_absorbed", "absorption"]
    pd.testing.assert_frame_equal(explicit.uns["sae"]["absorption"][cols], table[cols])
    adata.write_h5ad(tmp_path / "tree.h5ad")
    back = ad.read_h5ad(tmp_path / "tree.h5ad").uns["sae"]["absorption"]
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


@pytest.fixture(scope="module")
def _tree_sae():
    torch.set_num_threads(1)
    adata = csk.datasets.simulate(2000, 16, design="hierarchy", n_lineages=3, n_subtypes=3, n_genes=200)
    csk.tl.embed(adata, "pca", 20, progress=False)
    csk.tl.sae(adata, "X_pca", n_features=64, k=6, n_epochs=15, progress=False, device="cpu")
    return adata


@pytest.fixture
def tree_sae(_tree_sae):
    return _tree_sae.copy()


def test_simulated_hierarchy_through_a_real_fit(tree_sae):
    csk.tl.absorption(tree_sae, truth="true_programs")
    table = tree_sae.uns["sae"]["absorption"]
    assert table.shape == (3 * 4, len(TREE_COLUMNS))
    summary = table[table["child"] == ALL_CHILDREN]
    assert summary["parent"].tolist() == ["lineage_0", "lineage_1", "lineage_2"]
    assert table.loc[table["child"] != ALL_CHILDREN, "child"].tolist() == [
        f"type_{i}.{j}" for i in range(3) for j in range(3)
    ]
    assert table["absorption"].dropna().between(0, 1).all() and summary["absorption"].notna().all()
    # by hand: the best-correlated features and the pooled rate
    codes = tree_sae.obsm["X_sae"].toarray()
    truth = tree_sae.obsm["true_programs"].astype(np.float64)
    sd = codes.std(axis=0) > 0
    for row in summary.itertuples():
        r = np.zeros(codes.shape[1])
        r[sd] = [np.corrcoef(codes[:, j], truth[:, row.parent_program])[0, 1] for j in np.flatnonzero(sd)]
        assert row.parent_feature == int(np.argmax(r)) and row.parent_r == pytest.approx(r.max())
        children = table[(table["parent"] == row.parent) & (table["child"] != ALL_CHILDREN)]
        on = truth[:, row.parent_program] != 0
        fires = (codes[:, children["child_feature"].to_numpy()] > 0).any(axis=1) & on
        assert row.n_cells == fires.sum()
        assert row.absorption == pytest.approx(np.mean(codes[fires, row.parent_feature] == 0))


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "message"),
    [
        ("no tree", {"truth": "true_programs"}, ValueError, "design='hierarchy'"),
        (None, {"truth": "nope"}, KeyError, "nope"),
        (None, {"key": "missing", "truth": "true_programs"}, KeyError, "X_missing"),
        (None, {"truth": "true_programs", "groupby": "cell_type"}, ValueError, "not both"),
        (None, {}, TypeError, "truth="),
        (None, {"truth": "true_programs", "hierarchy": {0: [99]}}, ValueError, "not columns of the truth"),
        (None, {"truth": "true_programs", "hierarchy": {0: []}}, ValueError, "no children"),
        (None, {"truth": "true_programs", "hierarchy": {0: [0, 4]}}, ValueError, "parent itself"),
        (None, {"truth": "true_programs", "hierarchy": [0, 4]}, TypeError, "dict"),
        ("array", {}, TypeError, "hierarchy="),
        (None, {"truth": "true_programs", "threshold": -1.0}, ValueError, "threshold"),
        ("bad tree", {"truth": "true_programs"}, ValueError, "outside"),
    ],
)
def test_truth_mode_bad_input_leaves_adata_unchanged(tree_sae, change, kwargs, error, message):
    if change == "no tree":
        del tree_sae.uns["simulation"]["tree"]
    elif change == "array":
        kwargs = {"truth": tree_sae.obsm["true_programs"]}
    elif change == "bad tree":
        tree_sae.uns["simulation"]["tree"].loc[:, "subtype_program"] = 99
    before = snapshot(tree_sae)
    with pytest.raises(error, match=message):
        csk.tl.absorption(tree_sae, **kwargs)
    assert_unchanged(tree_sae, before)
    assert "absorption" not in tree_sae.uns["sae"] and "absorption" not in tree_sae.uns["sae"]["params"]


def test_no_tree_in_a_cell_type_simulation_names_the_design():
    adata = csk.datasets.simulate(200, 6, 3, n_genes=30)
    adata.obsm["X_sae"] = sparse.csr_matrix(np.abs(adata.obsm["true_programs"]))
    adata.uns["sae"] = {"params": {}}
    with pytest.raises(ValueError, match="design='cell_type', which has no tree"):
        csk.tl.absorption(adata, truth="true_programs")
