"""An SAE on pbmc68k_reduced with every table the plots read, trained once for all plotting tests."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import cellsae_kit as csk

# Longer than any panel title: the plots must shorten it.
LONG_TERM = "positive regulation of a made-up biological process that this feature's top genes share on purpose"


def _net(adata):
    """Gene sets: one long-named set of feature 0's top genes, one of feature 1's, and random sets."""
    rng = np.random.default_rng(0)
    genes = adata.var_names[np.abs(adata.varm["sae_loadings"]).sum(axis=1) > 0]
    sets = {
        LONG_TERM: csk.tl.top_genes(adata, 0, n=15)["gene"].tolist(),
        "short set": csk.tl.top_genes(adata, 1, n=15)["gene"].tolist(),
    }
    sets.update({f"random set {i}": rng.choice(genes, 15, replace=False).tolist() for i in range(10)})
    return pd.DataFrame([(s, g) for s, members in sets.items() for g in members], columns=["source", "target"])


@pytest.fixture(scope="session")
def _analysed():
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    csk.tl.feature_stats(adata, groupby="bulk_labels")
    csk.tl.rank_features_groups(adata, "bulk_labels")
    csk.tl.annotate_features(adata, _net(adata))
    assert adata.uns["sae"]["features"].loc["0", "best_term"] == LONG_TERM  # a precondition of the title tests
    return adata


@pytest.fixture
def analysed(_analysed):
    """A fresh copy of the analysed data for each test (tests may break it on purpose)."""
    yield _analysed.copy()
    plt.close("all")


@pytest.fixture
def figdir(tmp_path):
    """scanpy's figure directory, pointed at the test's own folder (a settings property: monkeypatch cannot undo it)."""
    old = sc.settings.figdir
    sc.settings.figdir = tmp_path
    yield tmp_path
    sc.settings.figdir = old


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
