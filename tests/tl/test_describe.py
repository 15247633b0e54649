import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit.tl._describe import describe_one
from tests.conftest import assert_unchanged, snapshot


@pytest.fixture
def known():
    """Two groups; feature 0 fires in group A and raises genes g0-g29, feature 1 fires at random, feature 2 is dead."""
    rng = np.random.default_rng(0)
    n_cells, n_genes = 400, 300
    group = np.where(np.arange(n_cells) < 100, "A", "B")
    in_a = group == "A"
    # genes of every expression level, so that a programme's genes share strata with other genes
    base = np.exp(rng.uniform(np.log(0.05), np.log(5.0), n_genes))
    expression = rng.gamma(2.0, base / 2.0, size=(n_cells, n_genes))
    expression[np.ix_(in_a, np.arange(30))] += 1.5
    codes = np.zeros((n_cells, 3))
    codes[in_a, 0] = rng.uniform(0.5, 1.5, in_a.sum())
    codes[rng.random(n_cells) < 0.3, 1] = 1.0
    genes = [f"g{i}" for i in range(n_genes)]
    adata = AnnData(
        expression.astype(np.float32), obs=pd.DataFrame({"group": group}, index=[f"c{i}" for i in range(n_cells)])
    )
    adata.var_names = genes
    adata.obsm["X_sae"] = sparse.csr_matrix(codes, dtype=np.float32)
    adata.uns["sae"] = {"params": {}}
    sets = {"programme A": genes[:15]} | {
        f"random {i}": list(rng.choice(genes[20:], 15, replace=False)) for i in range(30)
    }
    net = pd.DataFrame([(s, g) for s, members in sets.items() for g in members], columns=["source", "target"])
    return adata, net


def test_describes_a_feature_whose_truth_is_known(known):
    adata, net = known
    csk.tl.annotate_features(adata, net)
    csk.tl.score_annotations(adata, net)
    csk.tl.describe_features(adata, groupby="group")
    table = adata.uns["sae"]["features"]
    text = table.loc["0", "description"]
    assert text.startswith("Feature 0 fires in 100% of A cells and 0% of other cells; it raises g")
    assert "programme: programme A (matched adj. p" in text
    assert float(text.split("held-out AUROC ")[1][:4]) >= 0.9
    raised = text.split("it raises ")[1].split(";")[0].replace(" and ", ", ").split(", ")
    assert len(raised) == 3 and all(int(g[1:]) < 30 for g in raised)
    assert table.loc["0", "confidence"] == "high"
    assert "no gene set passes the expression-matched null" in table.loc["1", "description"]
    assert table.loc["1", "confidence"] == "low"
    assert table.loc["2", "description"] == "Feature 2 never fires in the held-out cells (dead)."


def test_describe_without_groups_and_with_stability(known):
    adata, net = known
    csk.tl.annotate_features(adata, net)
    csk.get.sae(adata).add_features(pd.DataFrame({"stability": [0.95, 0.4, 0.0]}, index=["0", "1", "2"]))
    csk.tl.describe_features(adata, n_genes=0)
    text = adata.uns["sae"]["features"].loc["0", "description"]
    assert text.startswith("Feature 0 fires in ") and "of cells; programme: programme A" in text
    assert "it raises" not in text and text.endswith("Found again across seeds with decoder cosine 0.95.")


def test_describe_one_confidence_rules():
    base = {"feature": "1", "frequency": 0.1, "genes": ["X"], "term": "T", "cluster": "T", "n_terms": 3, "pval": 0.01}
    assert describe_one(base | {"auroc": 0.85})[1] == "high"
    assert describe_one(base | {"auroc": 0.7})[1] == "medium"
    assert describe_one(base | {"auroc": 0.55})[1] == "low"
    located = {"group": "B", "in_group": 0.9, "elsewhere": 0.01, "same_group": True}
    assert describe_one(base | located | {"auroc": 0.55})[1] == "medium"
    assert describe_one(base | located | {"same_group": False, "auroc": 0.9})[1] == "medium"
    text, _ = describe_one(base | {"auroc": 0.85})
    assert "one of 3 significant terms of the 'T' cluster" in text


def test_describe_bad_input(known):
    adata, net = known
    before = snapshot(adata)
    with pytest.raises(KeyError, match="annotate_features"):
        csk.tl.describe_features(adata)
    assert_unchanged(adata, before)
    csk.tl.annotate_features(adata, net)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="n_genes"):
        csk.tl.describe_features(adata, n_genes=-1)
    with pytest.raises(KeyError, match="nope"):
        csk.tl.describe_features(adata, groupby="nope")
    assert_unchanged(adata, before)
    held = adata.obs_names.isin(adata.uns["sae"]["annotation_held_out"])
    with pytest.raises(ValueError, match="held out"):
        csk.tl.describe_features(adata[~held].copy())
