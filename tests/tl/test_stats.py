import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit.tl._stats import feature_table
from tests.conftest import assert_unchanged, snapshot


def test_feature_table_by_hand():
    codes = np.zeros((6, 4))
    codes[:3, 0] = [1.0, 2.0, 3.0]  # only in group a: local
    codes[:, 1] = 1.0  # everywhere: global and dense
    codes[3, 2] = 4.0  # one cell of group b
    groups = pd.Categorical(["a", "a", "a", "b", "b", "b"])
    table = feature_table(sparse.csr_matrix(codes), groups)
    np.testing.assert_allclose(table["frequency"], [0.5, 1.0, 1 / 6, 0.0])
    np.testing.assert_allclose(table["mean_active"], [2.0, 1.0, 4.0, 0.0])
    np.testing.assert_allclose(table["max"], [3.0, 1.0, 4.0, 0.0])
    assert table["dead"].tolist() == [False, False, False, True]
    assert table["dense"].tolist() == [True, True, True, False]
    assert table["best_group"].tolist()[:3] == ["a", "a", "b"] and pd.isna(table["best_group"].iloc[3])
    np.testing.assert_allclose(table["n_groups_effective"], [1.0, 2.0, 1.0, 0.0])
    assert table["locality"].tolist() == ["local", "global", "local", "dead"]
    np.testing.assert_allclose(table["best_group_share"], [1.0, 0.5, 1.0, 0.0])


def test_group_size_does_not_decide_the_home_group():
    # feature active at 1.0 in all 2 cells of a small group and at 0.5 in 10 of 100 cells of a big one
    codes = np.zeros((102, 1))
    codes[:2, 0] = 1.0
    codes[2:12, 0] = 0.5
    table = feature_table(sparse.csr_matrix(codes), pd.Categorical(["small"] * 2 + ["big"] * 100))
    assert table["best_group"].iloc[0] == "small"


def test_feature_stats_on_pbmc(pbmc):
    csk.tl.sae(pbmc, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    pbmc.uns["sae"]["features"] = pd.DataFrame({"best_term": ["x"] * 64}, index=[str(i) for i in range(64)])
    csk.tl.feature_stats(pbmc, groupby="bulk_labels")
    table = pbmc.uns["sae"]["features"]
    assert len(table) == 64 and "best_term" in table  # other tools' columns survive
    codes = pbmc.obsm["X_sae"].toarray()
    np.testing.assert_allclose(table["frequency"], (codes > 0).mean(0))
    assert set(table["best_group"].dropna()) <= set(pbmc.obs["bulk_labels"].cat.categories)


def test_feature_stats_bad_input(pbmc):
    before = snapshot(pbmc)
    with pytest.raises(KeyError, match="Run cellsae_kit.tl.sae first"):
        csk.tl.feature_stats(pbmc)
    assert_unchanged(pbmc, before)
    csk.tl.sae(pbmc, "X_pca", n_features=16, k=2, n_epochs=5, progress=False)
    pbmc.obs["with_nan"] = pbmc.obs["bulk_labels"].astype(object)
    pbmc.obs.iloc[0, pbmc.obs.columns.get_loc("with_nan")] = np.nan
    before = snapshot(pbmc)
    with pytest.raises(KeyError, match="not a column of adata.obs"):
        csk.tl.feature_stats(pbmc, groupby="cell_type")
    with pytest.raises(ValueError, match="1 missing values"):
        csk.tl.feature_stats(pbmc, groupby="with_nan")
    with pytest.raises(KeyError, match="SAEs found: 'sae'"):
        csk.tl.feature_stats(pbmc, key="other")
    assert_unchanged(pbmc, before)
