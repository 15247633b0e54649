import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from sklearn.neighbors import KNeighborsClassifier

import cellsae_kit as csk
from cellsae_kit.models._sae import Codes
from cellsae_kit.tl._steer import select_cells, steering_shift
from tests.conftest import assert_unchanged, snapshot

MONO = ("bulk_labels", "CD14+ Monocyte")
CD34 = ("bulk_labels", "CD34+")


@pytest.fixture(scope="module")
def _trained():
    adata = sc.datasets.pbmc68k_reduced()
    torch.set_num_threads(1)  # the autouse fixture of conftest runs after module-scoped ones
    csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    return adata


@pytest.fixture
def trained(_trained):
    return _trained.copy()


def _direction(adata, feature, key="sae"):
    weights = adata.uns[key]["weights"]
    return weights["W_dec"][feature].astype(np.float64) / float(weights["input_scale"])


def test_shift_is_the_change_of_the_sae_reconstruction(trained):
    model = csk.tl.get_model(trained)
    codes = trained.obsm["X_sae"][:50].toarray()
    steered = codes.copy()
    steered[:, 7] = 2.5
    with torch.no_grad():
        decode = [
            (model.decode(Codes(torch.as_tensor(c), None)) / model.input_scale).double().numpy()
            for c in (codes, steered)
        ]
    shift = steering_shift(codes[:, 7], steered[:, 7], _direction(trained, 7))
    np.testing.assert_allclose(shift, decode[1] - decode[0], atol=1e-5)


def test_genes_through_the_pca_loadings_and_a_decoder_agree(trained):
    before = trained.obsm["X_sae"].toarray()[:, 17]
    cells = (trained.obs["bulk_labels"] == "CD34+").to_numpy()
    csk.tl.steer(trained, 17, value=2.0, cells=cells, store_rep=True)
    result = trained.uns["sae_steer"]
    shift = steering_shift(before[cells], np.full(cells.sum(), 2.0), _direction(trained, 17))
    pcs = np.nan_to_num(trained.varm["PCs"])
    by_hand = pd.Series(pcs @ shift.mean(axis=0), index=trained.var_names)
    genes = result["genes"]
    assert result["params"]["genes_from"] == "varm['PCs']" and genes.index.name == "gene"
    np.testing.assert_allclose(genes["delta"], by_hand[genes.index], rtol=1e-6, atol=1e-9)
    assert genes["delta"].abs().is_monotonic_decreasing
    moved = trained.obsm["X_sae_steer"]
    np.testing.assert_allclose(moved[cells], trained.obsm["X_pca"][cells] + shift, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(moved[~cells], trained.obsm["X_pca"][~cells])
    assert result["cells"].tolist() == np.flatnonzero(cells).tolist()
    # the same through a decoder callable: representation -> expression
    csk.tl.steer(trained, 17, value=2.0, cells=cells, decoder=lambda rep: rep @ pcs.T, key_added="via_decoder")
    other = trained.uns["via_decoder"]["genes"]
    assert trained.uns["via_decoder"]["params"]["genes_from"] == "decoder"
    np.testing.assert_allclose(other["delta"], by_hand[other.index], rtol=1e-4, atol=1e-4)
    _check_summary(result["summary"], cells.sum(), before[cells].mean(), 2.0, shift)


def _check_summary(summary, n, activation_before, activation_after, shift):
    assert summary["n_cells"] == n
    assert summary["activation_before"] == pytest.approx(activation_before)
    assert summary["activation_after"] == pytest.approx(activation_after)
    assert summary["shift"] == pytest.approx(np.linalg.norm(shift, axis=1).mean())


def test_value_scale_and_target(trained):
    codes = trained.obsm["X_sae"].toarray()
    labels = trained.obs["bulk_labels"].to_numpy()
    feature = int(codes[labels == "CD14+ Monocyte"].mean(axis=0).argmax())
    mono_mean = codes[labels == "CD14+ Monocyte", feature].mean()
    mono = labels == "CD14+ Monocyte"
    csk.tl.steer(trained, str(feature), scale=0.5, cells=MONO)
    steered = trained.uns["sae_steer"]
    assert steered["summary"]["activation_after"] == pytest.approx(0.5 * mono_mean)
    assert steered["params"] | {"scale": 0} == {
        "feature": feature,
        "mode": "scale",
        "scale": 0,
        "key": "sae",
        "use_rep": "X_pca",
        "n_neighbors": 15,
        "genes_from": "varm['PCs']",
    }
    csk.tl.steer(trained, feature, target=MONO, scale=1.5, cells=CD34)
    steered = trained.uns["sae_steer"]
    assert steered["summary"]["activation_after"] == pytest.approx(1.5 * mono_mean)
    assert steered["params"]["mode"] == "target" and steered["params"]["target"] == list(MONO)
    assert steered["params"]["value"] == pytest.approx(1.5 * mono_mean) and steered["params"]["scale"] == 1.5
    assert steered["summary"]["n_cells"] == 13
    csk.tl.steer(trained, feature, target=MONO, cells=CD34)
    assert trained.uns["sae_steer"]["summary"]["activation_after"] == pytest.approx(mono_mean)
    # switching a feature off where it fires moves cells against its direction
    csk.tl.steer(trained, feature, value=0, cells=mono)
    assert trained.uns["sae_steer"]["summary"]["activation_after"] == 0
    shift = steering_shift(codes[mono, feature], np.zeros(mono.sum()), _direction(trained, feature))
    assert trained.uns["sae_steer"]["summary"]["shift"] == pytest.approx(np.linalg.norm(shift, axis=1).mean())


def test_cells_can_be_named_every_way(trained):
    mask = (trained.obs["bulk_labels"] == "CD34+").to_numpy()
    rows = np.flatnonzero(mask)
    expected = rows.tolist()
    for cells in (
        mask,
        rows[::-1],
        list(trained.obs_names[rows]),
        trained.obs_names[rows],
        CD34,
        ("bulk_labels", ["CD34+"]),
    ):
        assert select_cells(trained, cells).tolist() == expected
    assert len(select_cells(trained, ("bulk_labels", ["CD34+", "CD56+ NK"]))) == 13 + 31
    assert len(select_cells(trained, None)) == trained.n_obs


def test_label_transfer_and_h5ad(trained, tmp_path):
    csk.tl.steer(trained, 3, value=5.0, cells=CD34, groupby="bulk_labels", n_neighbors=10, copy=False)
    result = trained.uns["sae_steer"]
    rows = result["cells"]
    rep = trained.obsm["X_pca"]
    knn = KNeighborsClassifier(n_neighbors=10).fit(rep, trained.obs["bulk_labels"].astype(str))
    shift = steering_shift(trained.obsm["X_sae"][rows].toarray()[:, 3], np.full(len(rows), 5.0), _direction(trained, 3))
    after = pd.Series(knn.predict(rep[rows] + shift)).value_counts()
    before = pd.Series(knn.predict(rep[rows])).value_counts()
    transfer = result["transfer"]
    assert list(transfer.index) == list(trained.obs["bulk_labels"].cat.categories)
    assert transfer["after"][transfer["after"] > 0].to_dict() == after.to_dict()
    assert transfer["before"][transfer["before"] > 0].to_dict() == before.to_dict()
    assert result["predictions"].index.tolist() == trained.obs_names[rows].tolist()
    distances = knn.kneighbors(rep[rows])[0][:, -1]
    assert result["summary"]["neighbour_distance"] == pytest.approx(np.median(distances))
    trained.write_h5ad(tmp_path / "steered.h5ad")
    back = ad.read_h5ad(tmp_path / "steered.h5ad").uns["sae_steer"]
    pd.testing.assert_frame_equal(back["transfer"], transfer, check_dtype=False)
    pd.testing.assert_frame_equal(back["genes"], result["genes"])
    assert back["params"]["groupby"] == "bulk_labels"


def test_without_a_map_to_genes_only_the_move_is_reported(trained):
    trained.obsm["X_rep"] = trained.obsm["X_pca"][:, :20].copy()
    csk.tl.sae(trained, "X_rep", n_features=32, k=4, n_epochs=5, progress=False, key_added="rep_sae")
    result = csk.tl.steer(trained, 1, value=3.0, key="rep_sae", copy=True).uns["rep_sae_steer"]
    assert "genes" not in result and result["params"]["genes_from"] == "none" and result["summary"]["shift"] > 0
    assert "rep_sae_steer" not in trained.uns


def _simulated_sae(adata, k):
    """An SAE on simulated counts that learns the programs as features (BatchTopK, no centring, 40 epochs)."""
    recipe = {"activation": "batchtopk", "batch_size": 256, "lr": 4e-3, "n_epochs": 40, "center": "none"}
    csk.tl.sae(adata, n_features=32, k=k, progress=False, **recipe)
    return adata


def test_steering_a_true_program_raises_its_genes_only():
    # Programs switched on independently (no cell types tying programs together) act linearly on the counts, so
    # an SAE on the counts without centring learns them as features (|r| > 0.99 with the truth).
    adata = _simulated_sae(csk.datasets.simulate(1000, 6, design="independent", n_genes=200, random_state=0), k=2)
    variables = csk.tl.recovery(adata)["variables"]
    program = int(variables["best_abs_r"].to_numpy().argmax())
    assert variables["best_abs_r"].iloc[program] > 0.99
    feature = int(variables["best_feature"].iloc[program])
    on = adata.obsm["true_programs"][:, program] > 0
    adata.obs["program"] = pd.Categorical(np.where(on, "on", "off"))
    # the cells without the program get the feature's mean activation in the cells with it
    csk.tl.steer(adata, feature, target=("program", "on"), cells=("program", "off"))
    delta = adata.uns["sae_steer"]["genes"]["delta"].reindex(adata.var_names).to_numpy()
    loadings = adata.varm["true_loadings"]
    own = loadings[:, program] != 0
    others = ~own & (loadings != 0).any(axis=1)
    counts = adata.X
    true_effect = counts[on].mean(axis=0) - counts[~on].mean(axis=0)
    # Noise: a gene's standard deviation over the steered cells before steering (the Poisson spread of its counts).
    noise = counts[~on].std(axis=0)
    assert own.sum() >= 10 and others.sum() >= 50
    # every gene of the program rises by at least 80% of the real difference between cells with and without it
    assert (delta[own] > 0.8 * true_effect[own]).all()
    assert (delta[own] > 0.5 * noise[own]).all()
    # genes of the other programs stay within a quarter of their noise
    assert (np.abs(delta[others]) < 0.25 * noise[others]).all()
    # genes that no program drives (never expressed) do not move
    assert np.abs(delta[~own & ~others]).max(initial=0) < 0.05


def test_steering_towards_a_cell_type_moves_the_label_transfer():
    adata = _simulated_sae(csk.datasets.simulate(1000, 8, 4, n_genes=200, random_state=0), k=3)
    csk.tl.rank_features_groups(adata, "cell_type")
    ranking = adata.uns["rank_features_groups"]
    tested = 0
    for cell_type in adata.obs["cell_type"].cat.categories:
        if ranking["auroc"][cell_type][0] < 0.9:
            continue  # a type without a feature of its own (a mask with few programs)
        tested += 1
        feature = int(ranking["names"][cell_type][0])
        others = (adata.obs["cell_type"] != cell_type).to_numpy()
        towards = []
        for scale in (0.5, 1.5, 3.0):
            csk.tl.steer(
                adata, feature, target=("cell_type", cell_type), scale=scale, cells=others, groupby="cell_type"
            )
            towards.append(adata.uns["sae_steer"]["transfer"].loc[cell_type])
        assert towards[0]["before"] == 0  # other cells are not mistaken for the type to begin with
        counts = [t["after"] for t in towards]
        assert counts == sorted(counts) and counts[-1] > counts[0] and counts[-1] > 0.5 * others.sum()
        if tested == 2:
            break
    assert tested == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"feature": 64}, ValueError, "out of range"),
        ({"feature": "CD14"}, ValueError, "not a feature number"),
        ({"cells": np.ones(699, bool)}, ValueError, "boolean mask of 699 values"),
        ({"cells": [0, 700]}, ValueError, "outside 0-699"),
        ({"cells": ["not-a-cell"]}, ValueError, "not in adata.obs_names"),
        ({"cells": ("bulk_labels", "T cell")}, ValueError, "not labels of"),
        ({"cells": np.zeros(700, bool)}, ValueError, "selects no cells"),
        ({"value": 1.0, "scale": 2.0}, ValueError, "either value= .* or scale="),
        ({"value": None}, ValueError, "Say how to steer"),
        ({"value": 1.0, "target": MONO}, ValueError, "value= and target= both"),
        ({"value": -1.0}, ValueError, "activations are >= 0"),
        ({"value": np.nan}, ValueError, "activations are >= 0"),
        ({"value": None, "target": MONO, "scale": -1.5}, ValueError, "scale=-1.5 is not allowed"),
        ({"value": "high"}, TypeError, "must be a number"),
        ({"value": None, "target": ("bulk_labels", "T cell")}, ValueError, "not labels of"),
        ({"key": "missing"}, KeyError, "X_missing"),
        ({"decoder": lambda rep: rep}, ValueError, "decoder returned shape"),
        ({"decoder": lambda rep: np.full((rep.shape[0], 765), np.nan)}, ValueError, "NaN"),
        ({"decoder": "scvi"}, TypeError, "decoder must be a function"),
        ({"groupby": "nope"}, KeyError, "not a column"),
        ({"key_added": "sae", "store_rep": True}, ValueError, "overwrite the SAE"),
        ({"groupby": "bulk_labels", "n_neighbors": 0}, ValueError, "n_neighbors"),
    ],
)
def test_bad_input_leaves_adata_unchanged(trained, kwargs, error, message):
    before = snapshot(trained)
    with pytest.raises(error, match=message):
        csk.tl.steer(trained, **({"feature": 3, "value": 1.0} | kwargs))
    assert_unchanged(trained, before)
