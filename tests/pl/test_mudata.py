"""Every plot on a MuData: activations and tables on the MuData, loadings in the modalities."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import cellsae_kit as csk


@pytest.fixture(scope="module")
def mdata():
    mdata = csk.datasets.simulate(400, 6, 3, modalities=("rna", "atac"), n_genes=60, n_peaks=90)
    csk.tl.joint_embedding(mdata, n_comps=5)
    mdata.obsm["X_umap"] = mdata.obsm["X_joint"][:, :2]
    csk.tl.sae(mdata, "X_joint", n_features=12, k=3, n_epochs=5, progress=False)
    csk.tl.feature_stats(mdata, groupby="cell_type")
    csk.tl.rank_features_groups(mdata, "cell_type")
    truth = mdata.mod["rna"].varm["true_loadings"]
    genes = mdata.mod["rna"].var_names
    net = pd.DataFrame(
        [(f"program_{p}", g) for p in range(truth.shape[1]) for g in genes[truth[:, p] > 0]],
        columns=["source", "target"],
    )
    csk.tl.annotate_features(mdata, net, mod="rna", tmin=3)
    return mdata


def test_every_plot_draws_from_a_mudata(mdata, tmp_path):
    feature = int(np.argmax(np.diff(mdata.obsm["X_sae"].tocsc().indptr)))
    best = mdata.uns["sae"]["features"]["best_term"].iloc[feature]
    axes = csk.pl.features(mdata, [feature], show=False)
    assert str(best) in axes.get_title()
    peaks = csk.pl.top_genes(mdata, feature, mod="atac", n=15, show=False)
    assert [t.get_text() for t in peaks.get_yticklabels()] == csk.tl.top_genes(mdata, feature, mod="atac", n=15)[
        "gene"
    ].tolist()
    csk.pl.annotation(mdata, [feature], show=False)
    csk.pl.feature_stats(mdata, show=False)
    csk.pl.training(mdata, show=False)
    dotplot = csk.pl.rank_features_groups_dotplot(mdata, n_features=1, show=False)
    for number in plt.get_fignums():
        plt.figure(number).savefig(tmp_path / f"figure_{number}.png", dpi=60)
    assert dotplot is not None and len(list(tmp_path.glob("*.png"))) >= 5
    plt.close("all")
