import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.figure import Figure

import cellsae_kit as csk
from tests.conftest import assert_unchanged, snapshot
from tests.pl.conftest import is_png


def _swept(truth: bool = True) -> AnnData:
    adata = AnnData(np.zeros((3, 2), dtype=np.float32))
    table = pd.DataFrame(
        {
            "n_features": [64, 32, 64, 32],  # out of order on purpose: each line is sorted by size
            "k": [4, 4, 8, 8],
            "activation": ["batchtopk"] * 4,
            "shared_at_0.9": [0.3, 0.6, 0.2, 0.5],
            "fvu_validation": [0.2, 0.3, 0.1, 0.15],
            "fvu_validation_sd": [0.01, 0.01, 0.02, 0.02],
            "recommended": [False, False, True, False],
        }
    )
    if truth:
        table["median_best_abs_r"] = [0.5, 0.4, 0.9, 0.8]
    adata.uns["sae_sweep"] = {"sweep": table, "rule": "..."}
    return adata


def test_draws_error_stability_and_recovery_with_the_recommendation_starred(figdir):
    adata = _swept()
    before = snapshot(adata)
    error, stable, recovery = csk.pl.sae_sweep(adata, show=False)
    k8 = next(bars for bars in error.containers if bars.get_label() == "k=8").lines[0]
    np.testing.assert_array_equal(k8.get_xdata(), [32, 64])
    np.testing.assert_array_equal(k8.get_ydata(), [0.15, 0.1])
    star = stable.collections[-1].get_offsets()
    np.testing.assert_array_equal(np.asarray(star), [[64, 0.2]])
    assert [t.get_text() for t in recovery.get_xticklabels()] == ["32", "64"] and error.get_xscale() == "log"
    assert "recommended: 64 features, batchtopk, k=8" in error.figure.texts[0].get_text()
    assert_unchanged(adata, before)
    assert isinstance(csk.pl.sae_sweep(_swept(False), return_fig=True), Figure)
    assert len(csk.pl.sae_sweep(_swept(False), show=False)) == 2  # no truth, no recovery panel
    csk.pl.sae_sweep(adata, save=".png", show=False)
    assert is_png(figdir / "sae_sweep.png")


def test_a_missing_sweep_names_the_tool_to_run():
    with pytest.raises(KeyError, match=r"no settings sweep under key='other'.*tl.sae_sweep"):
        csk.pl.sae_sweep(_swept(), "other")
