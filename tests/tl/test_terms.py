import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from cellsae_kit.tl._terms import cluster_terms, jaccard, membership


def test_membership_keeps_sets_with_enough_data_genes():
    net = pd.DataFrame({"source": ["A"] * 3 + ["B"] * 3, "target": ["g0", "g1", "g1", "g2", "x", "y"]})
    terms, members = membership(net, pd.Index(["g0", "g1", "g2"]), tmin=2)
    assert list(terms) == ["A"] and members.toarray().tolist() == [[1.0, 1.0, 0.0]]  # duplicates counted once


def test_jaccard_by_hand():
    rng = np.random.default_rng(0)
    dense = rng.random((6, 30)) < 0.3
    got = jaccard(sparse.csr_matrix(dense.astype(float)))
    for i in range(6):
        for j in range(6):
            union = (dense[i] | dense[j]).sum()
            assert got[i, j] == pytest.approx((dense[i] & dense[j]).sum() / union if union else 0.0)


def test_nested_terms_form_one_cluster_named_after_the_most_general():
    genes = 100
    sets = {
        "immune response": range(0, 40),
        "leukocyte activation": range(0, 36),
        "T cell activation": range(0, 30),  # nested chain, Jaccard >= 0.75 with each other
        "T cell receptor signalling": range(0, 8),  # nested but small: Jaccard 0.2-0.27, its own programme
        "translation": range(60, 80),
        "cytoplasmic translation": range(60, 78),
    }
    dense = np.zeros((len(sets), genes))
    for row, members in enumerate(sets.values()):
        dense[row, list(members)] = 1
    table = cluster_terms(pd.Index(list(sets)), sparse.csr_matrix(dense))
    assert (
        table.loc[["immune response", "leukocyte activation", "T cell activation"], "cluster"]
        .eq("immune response")
        .all()
    )
    assert table.loc["T cell receptor signalling", "cluster"] == "T cell receptor signalling"
    assert table.loc["cytoplasmic translation", "cluster"] == "translation"
    assert table["n_genes"].tolist() == [40, 36, 30, 8, 20, 18]
    assert table["cluster"].nunique() == 3
    with pytest.raises(ValueError, match="min_jaccard"):
        cluster_terms(pd.Index(list(sets)), sparse.csr_matrix(dense), min_jaccard=0)
