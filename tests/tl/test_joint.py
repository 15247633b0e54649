"""MuData: joint representations, SAEs on them, loadings per modality, and the .h5mu round trip."""

import sys

import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.decomposition import TruncatedSVD

import cellsae_kit as csk
from cellsae_kit.tl._joint import reduce_modality
from tests.conftest import assert_unchanged, snapshot


def mu_snapshot(mdata):
    return {"global": snapshot(mdata), **{name: snapshot(mod) for name, mod in mdata.mod.items()}}


def assert_mu_unchanged(mdata, before):
    assert_unchanged(mdata, before["global"])
    for name, mod in mdata.mod.items():
        assert_unchanged(mod, before[name])


@pytest.fixture(scope="module")
def _mdata():
    mdata = csk.datasets.simulate(600, 8, 4, modalities=("rna", "atac"), n_genes=120, n_peaks=200)
    for mod in mdata.mod.values():
        sc.pp.normalize_total(mod)
        sc.pp.log1p(mod)
        sc.pp.pca(mod, n_comps=10)
    return mdata


@pytest.fixture
def mdata(_mdata):
    return _mdata.copy()


def decoder_in_input_units(mdata, key="sae"):
    model = csk.tl.get_model(mdata, key)
    return model.W_dec.detach().double().numpy().T / float(model.input_scale)


def test_reduce_modality_pca_matches_svd_of_the_log_normalised_counts():
    counts = np.random.default_rng(0).poisson(3.0, (200, 40)).astype(float)
    coords, back = reduce_modality(counts, 6)

    totals = counts.sum(axis=1, keepdims=True)
    logged = np.log1p(counts / totals * np.median(totals))
    centred = logged - logged.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :6] * s[:6]
    weight = np.sqrt(reference.var(axis=0, ddof=1).sum())
    # PCA signs are arbitrary: compare column by column up to sign
    signs = np.sign(np.sum(coords * reference, axis=0))
    np.testing.assert_allclose(coords * signs, reference / weight, atol=5e-4)
    np.testing.assert_allclose(coords @ back.T, reference @ vt[:6], atol=5e-4)  # the map back to the features


def test_reduce_modality_lsi_drops_the_depth_component():
    counts = sparse.random(150, 300, density=0.1, format="csr", random_state=0)
    counts.data = np.ceil(counts.data * 3)
    coords, back = reduce_modality(counts, 5, lsi=True)

    tf = counts.multiply(1 / counts.sum(axis=1)).tocsr() * 1e4
    idf = np.log1p(counts.shape[0] / np.maximum(np.asarray(counts.sum(axis=0)).ravel(), 1e-300))
    tfidf = np.log1p(tf.toarray()) * idf
    svd = TruncatedSVD(6, random_state=0).fit(tfidf)
    reference = svd.transform(tfidf)[:, 1:]
    weight = np.sqrt(reference.var(axis=0, ddof=1).sum())
    signs = np.sign(np.sum(coords * reference, axis=0))
    np.testing.assert_allclose(coords * signs, reference / weight, atol=1e-3)


def test_joint_embedding_layout(mdata):
    csk.tl.joint_embedding(mdata, n_comps={"rna": 6, "atac": 4})
    joint = mdata.obsm["X_joint"]
    assert joint.shape == (600, 10)
    assert mdata.uns["joint"]["dims"] == {"rna": [0, 6], "atac": [6, 10]}
    # equal weight: each block has total variance 1
    np.testing.assert_allclose(joint[:, :6].var(axis=0, ddof=1).sum(), 1, rtol=1e-4)
    np.testing.assert_allclose(joint[:, 6:].var(axis=0, ddof=1).sum(), 1, rtol=1e-4)
    rna, atac = mdata.mod["rna"].varm["joint"], mdata.mod["atac"].varm["joint"]
    assert rna.shape == (120, 10) and atac.shape == (200, 10)
    assert not rna[:, 6:].any() and not atac[:, :6].any() and rna[:, :6].any() and atac[:, 6:].any()
    assert "joint" not in mdata.varm  # global varm keys stay mudata's own


def test_sae_on_a_joint_representation_writes_loadings_per_modality(mdata):
    csk.tl.joint_embedding(mdata, n_comps=5)
    csk.tl.sae(mdata, "X_joint", n_features=16, k=3, n_epochs=10, progress=False)
    assert mdata.obsm["X_sae"].shape == (600, 16)
    assert "sae_loadings" not in mdata.varm
    decoder = decoder_in_input_units(mdata)
    for name in ("rna", "atac"):
        expected = mdata.mod[name].varm["joint"].astype(np.float64) @ decoder
        np.testing.assert_allclose(mdata.mod[name].varm["sae_loadings"], expected, rtol=1e-4, atol=1e-6)
    assert mdata.uns["sae"]["params"]["loadings"] == {"rna": "joint", "atac": "joint"}


def test_sae_on_one_modality(mdata):
    csk.tl.sae(mdata, "rna:X_pca", n_features=16, k=3, n_epochs=10, progress=False)
    expected = mdata.mod["rna"].varm["PCs"] @ decoder_in_input_units(mdata)
    np.testing.assert_allclose(mdata.mod["rna"].varm["sae_loadings"], expected, rtol=1e-4, atol=1e-6)
    assert "sae_loadings" not in mdata.mod["atac"].varm

    csk.tl.sae(mdata, "atac:X", n_features=16, k=3, n_epochs=5, progress=False, key_added="peaks")
    assert mdata.mod["atac"].varm["peaks_loadings"].shape == (200, 16)
    assert list(mdata.uns["peaks"]["var_names"]) == mdata.mod["atac"].var_names.tolist()


def test_a_global_map_is_split_by_modality(mdata):
    # MOFA through muon stores weights for all features in the global varm ("LFs").
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(mdata.n_vars, 4))
    mdata.varm["LFs"] = weights
    mdata.obsm["X_mofa"] = rng.normal(size=(mdata.n_obs, 4)).astype(np.float32)
    csk.tl.sae(mdata, "X_mofa", n_features=8, k=2, n_epochs=5, progress=False)
    decoder = decoder_in_input_units(mdata)
    for mod in mdata.mod.values():
        rows = mdata.var_names.get_indexer(mod.var_names)
        np.testing.assert_allclose(mod.varm["sae_loadings"], weights[rows] @ decoder, rtol=1e-4, atol=1e-6)


def test_h5mu_round_trip_and_encode(mdata, tmp_path):
    csk.tl.joint_embedding(mdata, n_comps=5)
    csk.tl.sae(mdata, "X_joint", n_features=16, k=3, n_epochs=10, progress=False)
    csk.tl.sae(mdata, "rna:X", n_features=16, k=3, n_epochs=5, progress=False, key_added="genes")
    csk.tl.feature_stats(mdata, groupby="cell_type")
    csk.tl.rank_features_groups(mdata, "cell_type")
    path = tmp_path / "sae.h5mu"
    mdata.write(path)
    back = md.read_h5mu(path)

    for key in ("X_joint", "X_sae", "X_genes"):
        a, b = mdata.obsm[key], back.obsm[key]
        np.testing.assert_array_equal(
            a.toarray() if sparse.issparse(a) else a, b.toarray() if sparse.issparse(b) else b
        )
    for name in ("rna", "atac"):
        np.testing.assert_array_equal(mdata.mod[name].varm["sae_loadings"], back.mod[name].varm["sae_loadings"])
    np.testing.assert_array_equal(mdata.mod["rna"].varm["genes_loadings"], back.mod["rna"].varm["genes_loadings"])
    assert back.uns["sae"]["features"].equals(mdata.uns["sae"]["features"])
    assert "rank_features_groups" in back.uns

    for key in ("sae", "genes"):
        del back.obsm[f"X_{key}"]
        csk.tl.encode(back, key=key)
        assert (back.obsm[f"X_{key}"] != mdata.obsm[f"X_{key}"]).nnz == 0


def test_encode_new_cells_checks_genes_of_the_modality(mdata):
    csk.tl.sae(mdata, "rna:X", n_features=16, k=3, n_epochs=5, progress=False)
    query = mdata[:50].copy()
    del query.obsm["X_sae"]
    query.mod["rna"].var_names = [f"other_{i}" for i in range(query.mod["rna"].n_vars)]
    query.update()
    with pytest.raises(ValueError, match="genes are missing from adata.var_names"):
        csk.tl.encode(query, mdata)


@pytest.mark.parametrize(
    ("use_rep", "error", "message"),
    [
        ("prot:X_pca", KeyError, "modality 'prot'"),
        ("X_nothing", KeyError, "joint representation"),
        (None, KeyError, "'<modality>:<obsm key>'"),
        ("rna:X_nothing", KeyError, "X_nothing"),
    ],
)
def test_sae_bad_input(mdata, use_rep, error, message):
    before = mu_snapshot(mdata)
    with pytest.raises(error, match=message):
        csk.tl.sae(mdata, use_rep, n_features=8, k=2, n_epochs=2, progress=False)
    assert_mu_unchanged(mdata, before)


def test_modalities_with_different_cells_are_refused(mdata):
    mdata.mod["atac"] = mdata.mod["atac"][:500].copy()
    mdata.update()
    before = mu_snapshot(mdata)
    with pytest.raises(ValueError, match="intersect_obs"):
        csk.tl.sae(mdata, "atac:X_pca", n_features=8, k=2, n_epochs=2, progress=False)
    with pytest.raises(ValueError, match="intersect_obs"):
        csk.tl.joint_embedding(mdata)
    assert_mu_unchanged(mdata, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"modalities": ["rna", "prot"]}, KeyError, "modality 'prot'"),
        ({"modalities": []}, ValueError, "at least one modality"),
        ({"n_comps": 500}, ValueError, "from 1 to"),
        ({"n_comps": {"rna": 5}}, ValueError, "'atac'"),
        ({"method": "wnn"}, ValueError, "concat_pca"),
    ],
)
def test_joint_embedding_bad_input(mdata, kwargs, error, message):
    before = mu_snapshot(mdata)
    with pytest.raises(error, match=message):
        csk.tl.joint_embedding(mdata, **kwargs)
    assert_mu_unchanged(mdata, before)


def test_joint_embedding_refuses_nan_and_anndata(mdata):
    with pytest.raises(TypeError, match="MuData"):
        csk.tl.joint_embedding(mdata.mod["rna"])
    mdata.mod["rna"].layers["counts"][0, 0] = np.nan
    before = mu_snapshot(mdata)
    with pytest.raises(ValueError, match="NaN"):
        csk.tl.joint_embedding(mdata)
    assert_mu_unchanged(mdata, before)


def test_mofa_without_mofapy2_says_what_to_install(mdata, monkeypatch):
    monkeypatch.setitem(sys.modules, "mofapy2", None)
    with pytest.raises(ImportError, match="pip install mofapy2"):
        csk.tl.joint_embedding(mdata, method="mofa")


def test_gene_tools_take_a_modality(mdata):
    csk.tl.joint_embedding(mdata, n_comps=5)
    csk.tl.sae(mdata, "X_joint", n_features=16, k=3, n_epochs=10, progress=False)

    peaks = mdata.mod["atac"].varm["sae_loadings"][:, 3]
    table = csk.tl.top_genes(mdata, 3, mod="atac", n=5)
    assert table["gene"].tolist() == mdata.mod["atac"].var_names[np.argsort(-peaks)[:5]].tolist()
    with pytest.raises(ValueError, match="mod="):
        csk.tl.top_genes(mdata, 3)  # two modalities have loadings
    with pytest.raises(ValueError, match="leave mod out"):
        csk.tl.top_genes(mdata.mod["rna"], 3, mod="rna")

    # Gene sets made of each true program's genes: a feature that recovers a program is named after it.
    truth = mdata.mod["rna"].varm["true_loadings"]
    genes = mdata.mod["rna"].var_names
    net = pd.DataFrame(
        [(f"program_{p}", g) for p in range(truth.shape[1]) for g in genes[truth[:, p] > 0]],
        columns=["source", "target"],
    )
    csk.tl.annotate_features(mdata, net, mod="rna", tmin=3)
    assert mdata.uns["sae"]["annotation_params"]["mod"] == "rna"
    best = mdata.uns["sae"]["features"]["best_term"]
    variables = csk.tl.recovery(mdata, "sae")["variables"]
    recovered = variables[variables["best_abs_r"] > 0.9]
    assert len(recovered) >= 2
    for program, row in recovered.iterrows():
        assert best.iloc[int(row["best_feature"])] == f"program_{program}"

    csk.tl.score_annotations(mdata, net, mod="rna", tmin=3, n_exclude=2)
    assert mdata.uns["sae"]["features"]["best_term_auroc"].notna().any()


def test_feature_genes_writes_into_the_modality(mdata):
    mdata.obsm["X_latent"] = mdata.obsm["true_programs"] + np.random.default_rng(0).normal(size=(600, 8))
    csk.tl.sae(mdata, "X_latent", n_features=16, k=3, n_epochs=5, progress=False)
    assert not any("sae_loadings" in m.varm for m in mdata.mod.values())  # no map from this latent to genes
    with pytest.raises(ValueError, match="mod="):
        csk.tl.feature_genes(mdata)
    csk.tl.feature_genes(mdata, mod="rna", use_raw=False, progress=False)
    codes = mdata.obsm["X_sae"].toarray()
    expr = mdata.mod["rna"].X.toarray() if sparse.issparse(mdata.mod["rna"].X) else mdata.mod["rna"].X
    expected = np.corrcoef(expr.T, codes.T)[: expr.shape[1], expr.shape[1] :]
    live = codes.std(axis=0) > 0
    np.testing.assert_allclose(
        mdata.mod["rna"].varm["sae_loadings"][:, live], np.nan_to_num(expected[:, live]), atol=1e-4
    )
    assert "sae_loadings" not in mdata.mod["atac"].varm and "sae_loadings" not in mdata.varm
    assert mdata.uns["sae"]["params"]["loadings"] == {"rna": "feature_genes:correlation"}


def test_embed_and_factorize_on_a_mudata(mdata):
    csk.tl.embed(mdata, "pca", 6, mod="atac", layer="counts", key_added="atac_pca")
    assert mdata.obsm["X_atac_pca"].shape == (600, 6) and mdata.mod["atac"].varm["atac_pca"].shape == (200, 6)
    alone = mdata.mod["atac"].copy()
    csk.tl.embed(alone, "pca", 6, layer="counts")
    np.testing.assert_allclose(mdata.obsm["X_atac_pca"], alone.obsm["X_pca"], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mod="):
        csk.tl.embed(mdata, "pca", 6)

    csk.tl.factorize(mdata, "rna:X_pca", "ica", n_components=4)
    assert mdata.obsm["X_ica_rna_pca"].shape == (600, 4)
    csk.tl.factorize(mdata, "X_atac_pca", "pca")
    assert "X_pca_atac_pca" in mdata.obsm


def test_proteins_keep_their_names():
    mdata = csk.datasets.simulate(400, 6, 3, modalities=("rna", "prot"), n_genes=80, n_proteins=20)
    csk.tl.joint_embedding(mdata, n_comps=5)
    csk.tl.sae(mdata, "X_joint", n_features=12, k=3, n_epochs=5, progress=False)
    table = csk.tl.top_genes(mdata, 0, mod="prot", n=5, sign="both")
    assert set(table["gene"]) <= set(mdata.mod["prot"].var_names) and len(table) == 5
    assert mdata.mod["prot"].varm["sae_loadings"].shape == (20, 12)
