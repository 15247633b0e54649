import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import cellsae_kit as csk  # noqa: E402
from tests.conftest import assert_unchanged, snapshot  # noqa: E402


@pytest.fixture
def trained(pbmc):
    csk.tl.sae(pbmc, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    return pbmc


def test_draws_each_feature_with_its_activations(trained, tmp_path):
    before = snapshot(trained)
    fig = csk.pl.features(trained, [3, "5"], return_fig=True)
    assert_unchanged(trained, before)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("feature")]
    assert [ax.get_title() for ax in panels] == ["feature 3", "feature 5"]
    colours = panels[0].collections[0].get_array()
    np.testing.assert_allclose(np.sort(colours), np.sort(trained.obsm["X_sae"][:, 3].toarray().ravel()), rtol=1e-6)
    fig.savefig(tmp_path / "features.png")
    plt.close("all")


def test_single_feature_on_an_exact_obsm_key(trained):
    ax = csk.pl.features(trained, 0, basis="X_pca", show=False)
    assert ax.get_title() == "feature 0"
    plt.close("all")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"features": [99]}, ValueError, "features 0-31"),
        ({"features": ["CD3E"]}, ValueError, "not a feature number"),
        ({"features": []}, ValueError, "empty"),
        ({"features": [0], "basis": "tsne"}, KeyError, "compute it first"),
        ({"features": [0], "key": "other"}, KeyError, "SAEs found: 'sae'"),
    ],
)
def test_bad_input(trained, kwargs, error, message):
    before = snapshot(trained)
    with pytest.raises(error, match=message):
        csk.pl.features(trained, **kwargs)
    assert_unchanged(trained, before)
