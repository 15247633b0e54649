"""Bad input to every public function: a clear error raised by the kit itself, and an unchanged AnnData.

Each case is (function, mutation of a trained toy AnnData, expected exception types, words the message must hold).
The error must come from cellsae_kit's own code (the innermost frame of its traceback is in the package), so a
library's error leaking through fails the case even when its type matches.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import cellsae_kit as csk
from cellsae_kit import models

PACKAGE = str(Path(csk.__file__).parent)


@pytest.fixture(scope="module")
def trained() -> AnnData:
    """200 cells x 30 genes with a PCA, cell groups, a small trained SAE, its feature table and rankings."""
    rng = np.random.default_rng(0)
    X = rng.poisson(2.0, size=(200, 30)).astype(np.float32)
    adata = AnnData(X)
    adata.var_names = [f"G{i}" for i in range(30)]
    adata.obs_names = [f"c{i}" for i in range(200)]
    adata.obs["group"] = pd.Categorical(rng.choice(["a", "b", "c"], 200))
    adata.obs["score"] = rng.normal(size=200)
    adata.obsm["true_programs"] = rng.uniform(size=(200, 4))
    adata.layers["counts"] = X.copy()
    csk.tl.embed(adata, "pca", 10, key_added="pca", progress=False)
    csk.tl.sae(adata, "X_pca", n_features=16, k=2, n_epochs=3, progress=False, device="cpu")
    csk.tl.feature_stats(adata, groupby="group")
    csk.tl.rank_features_groups(adata, "group")
    return adata


def fingerprint(adata: AnnData) -> str:
    """A hash of everything a user would see: X, obs, var, obsm, varm, layers and uns (recursively)."""
    h = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, dict) or hasattr(value, "keys") and not isinstance(value, pd.DataFrame):
            for name in sorted(value.keys(), key=str):
                h.update(str(name).encode())
                add(value[name])
        elif sparse.issparse(value):
            add(value.toarray())
        elif isinstance(value, pd.DataFrame | pd.Series):
            h.update(pickle.dumps(value))
        elif isinstance(value, np.ndarray):
            h.update(str((value.dtype, value.shape)).encode())
            h.update(value.tobytes() if value.dtype != object else repr(value.tolist()).encode())
        else:
            h.update(repr(value).encode())

    for part in (adata.X, adata.obs, adata.var, dict(adata.obsm), dict(adata.varm), adata.uns):
        add(part)
    add({name: adata.layers[name] for name in adata.layers if name is not None})
    return h.hexdigest()


def _with(**changes: Callable[[AnnData], None]):
    return changes


def _obsm(name: str, value: Callable[[AnnData], Any]) -> Callable[[AnnData], None]:
    def change(adata: AnnData) -> None:
        adata.obsm[name] = value(adata)

    return change


def _pca(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[AnnData], None]:
    return _obsm("X_bad", lambda a: transform(np.asarray(a.obsm["X_pca"], dtype=np.float64)))


def _nan_first(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[0, 0] = np.nan
    return x


def _inf_first(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[3, 1] = np.inf
    return x


def _codes(transform: Callable[[sparse.csr_matrix], sparse.csr_matrix]) -> Callable[[AnnData], None]:
    return _obsm("X_sae", lambda a: transform(a.obsm["X_sae"].copy()))


def _negate(c):
    c.data = -c.data
    return c


def _nan_codes(c):
    c.data[0] = np.nan
    return c


def _drop_uns(name: str) -> Callable[[AnnData], None]:
    def change(adata: AnnData) -> None:
        del adata.uns["sae"][name]

    return change


def _dup_genes(adata: AnnData) -> None:
    adata.var_names = ["G0"] * 2 + list(adata.var_names[2:])


def _obs(name: str, value: Callable[[AnnData], Any]) -> Callable[[AnnData], None]:
    def change(adata: AnnData) -> None:
        adata.obs[name] = value(adata)

    return change


def none(adata: AnnData) -> None:
    return None


SAE = {"n_features": 16, "k": 2, "n_epochs": 1, "progress": False, "device": "cpu"}
E = (ValueError,)
T = (TypeError,)
K = (KeyError,)
VT = (ValueError, TypeError)

# (id, mutation, call, expected types, words in the message)
CASES: list[tuple[str, Callable, Callable, tuple, str]] = []


def case(name: str, call: Callable, raises: tuple, words: str, mutate: Callable = none) -> None:
    CASES.append((name, mutate, call, raises, words))


# --- tl.sae: the input ---
sae = csk.tl.sae
case("sae missing rep", lambda a: sae(a, "X_nope", **SAE), K, "X_nope")
case("sae missing layer", lambda a: sae(a, None, layer="nope", **SAE), K, "layer='nope'")
case("sae layer with rep", lambda a: sae(a, "X_pca", layer="counts", **SAE), E, "layer only for expression")
case("sae NaN rep", lambda a: sae(a, "X_bad", **SAE), E, "NaN", _pca(_nan_first))
case("sae inf rep", lambda a: sae(a, "X_bad", **SAE), E, "infinite", _pca(_inf_first))
case("sae beyond float32", lambda a: sae(a, "X_bad", **SAE), E, "float32", _pca(lambda x: x * 1e40))
case("sae tiny values", lambda a: sae(a, "X_bad", **SAE), E, "too little to scale", _pca(lambda x: x * 1e-42))
case("sae constant", lambda a: sae(a, "X_bad", **SAE), E, "same input vector", _pca(lambda x: np.full_like(x, 0.1)))
case(
    "sae tiled rows", lambda a: sae(a, "X_bad", **SAE), E, "same input vector", _pca(lambda x: np.tile(x[:1], (200, 1)))
)
case(
    "sae constant float32",
    lambda a: sae(a, "X_bad", **SAE),
    E,
    "same input vector",
    _obsm("X_bad", lambda a: np.full((200, 10), 0.1, np.float32)),
)
case(
    "sae constant sparse",
    lambda a: sae(a, None, layer="const", **SAE),
    E,
    "same input vector",
    lambda a: a.layers.__setitem__("const", sparse.csr_matrix(np.full((200, 30), 0.1, np.float32))),
)
case("sae object dtype", lambda a: sae(a, "X_bad", **SAE), T, "dtype", _pca(lambda x: x.astype(object)))
case("sae bool dtype", lambda a: sae(a, "X_bad", **SAE), T, "dtype", _pca(lambda x: x > 0))
case("sae complex", lambda a: sae(a, "X_bad", **SAE), T, "dtype", _pca(lambda x: x.astype(complex)))
case("sae zero dims", lambda a: sae(a, "X_bad", **SAE), E, "zero dimensions", _pca(lambda x: x[:, :0]))
case("sae duplicate genes", lambda a: sae(a, None, **SAE), E, "repeated names", _dup_genes)
case("sae not anndata", lambda a: sae(a.X, None, **SAE), VT, "AnnData")
case(
    "sae no file", lambda a: sae("/nonexistent/cells.h5ad", None, **SAE), (FileNotFoundError, ValueError), "cells.h5ad"
)
for key in (5, "", "a/b", None):
    case(f"sae key_added={key!r}", lambda a, key=key: sae(a, "X_pca", key_added=key, **SAE), VT, "key_added")

# --- tl.sae: the options ---
BAD_OPTIONS = {
    "k": [2.5, "2", True, 0, -1, 16, 100],
    "n_features": [8.0, 0, -4, "many", True],
    "n_epochs": [True, 0, -1, 1.5],
    "batch_size": [2.5, 0, -1, "big"],
    "lr": [0, -1, float("inf"), float("nan"), "fast"],
    "validation_fraction": [1.0, -0.1, 1.5, "some"],
    "patience": [-1, 0],
    "k_aux": [-1, 0],
    "dead_window": [-1, 0],
    "aux_coef": [float("nan"), -1],
    "l1_coef": [-1, float("inf")],
    "warmup_fraction": [2, -0.5],
    "decay_fraction": [1.5],
    "random_state": [-1, 1.5, "0"],
    "device": ["tpu", "", "mps", "cuda:x", 3],
    "activation": ["sigmoid", 1],
    "center": ["middle"],
    "init": ["zeros"],
    "precision": ["float16"],
    "resample": ["yes", 1],
}
for option, values in BAD_OPTIONS.items():
    for value in values:
        options = SAE | {option: value}
        case(f"sae {option}={value!r}", lambda a, o=options: sae(a, "X_pca", **o), VT, option)
case("sae unknown option", lambda a: sae(a, "X_pca", n_feature=16, **SAE), T, "n_feature")
case("sae cuda without gpu", lambda a: sae(a, "X_pca", **(SAE | {"device": "cuda"})), E, "CUDA")
case("sae diverging lr", lambda a: sae(a, "X_pca", **(SAE | {"lr": 1e30})), E, "diverged")

# --- tl.encode ---
enc = csk.tl.encode
case("encode batch -4", lambda a: enc(a, batch_size=-4), E, "batch_size")
case("encode batch 0", lambda a: enc(a, batch_size=0), E, "batch_size")
case("encode batch 2.5", lambda a: enc(a, batch_size=2.5), E, "batch_size")
case("encode batch True", lambda a: enc(a, batch_size=True), E, "batch_size")
case("encode missing key", lambda a: enc(a, key="nope"), K, "nope")
case("encode model type", lambda a: enc(a, model=[1, 2]), T, "model is a list")
case(
    "encode missing file", lambda a: enc(a, model="/nonexistent/sae.safetensors"), (FileNotFoundError,), "No model file"
)
case("encode key_added 5", lambda a: enc(a, key_added=5), T, "key_added")
case("encode NaN input", lambda a: enc(a), E, "NaN", lambda a: a.obsm.__setitem__("X_pca", _nan_first(a.obsm["X_pca"])))
case(
    "encode wrong dims",
    lambda a: enc(a),
    E,
    "dimensions",
    lambda a: a.obsm.__setitem__("X_pca", np.asarray(a.obsm["X_pca"])[:, :5].copy()),
)
case("encode device tpu", lambda a: enc(a, device="tpu"), E, "device")
case("encode not anndata", lambda a: enc(a.X), T, "AnnData")

# --- get ---
case("get.codes missing", lambda a: csk.get.codes(a, "nope"), K, "X_nope")
case("get.codes key type", lambda a: csk.get.codes(a, 3), (KeyError, TypeError), "3")
case("get.codes negative", lambda a: csk.get.codes(a), E, "negative", _codes(_negate))
case("get.codes NaN", lambda a: csk.get.codes(a), E, "NaN", _codes(_nan_codes))
case("get.codes strings", lambda a: csk.get.codes(a), T, "X_sae", _obsm("X_sae", lambda a: np.full((200, 3), "x")))
case("get.sae missing", lambda a: csk.get.sae(a, "nope"), K, "nope")
case("get.sae no params", lambda a: csk.get.sae(a).model, K, "params", _drop_uns("params"))
case("get.sae no weights", lambda a: csk.get.sae(a).model, K, "weights", _drop_uns("weights"))
case("get.groups missing", lambda a: csk.get.groups(a, "nope"), K, "nope")
case(
    "get.groups NaN", lambda a: csk.get.groups(a, "g2"), E, "missing values", _obs("g2", lambda a: [None] + ["x"] * 199)
)
case("get.groups continuous", lambda a: csk.get.groups(a, "score"), E, "continuous")
case("get.check_adata list", lambda a: csk.get.check_adata([1]), T, "AnnData")
case("get.genes mod on AnnData", lambda a: csk.get.genes(a, mod="rna"), E, "mod='rna'")
case("get.feature_index too big", lambda a: csk.get.feature_index(999, 16), E, "999")
case("get.feature_index text", lambda a: csk.get.feature_index("seventeen", 16), E, "seventeen")
case("get.feature_index float", lambda a: csk.get.feature_index(1.5, 16), T, "1.5")
case("get.check_key empty", lambda a: csk.get.check_key(""), E, "non-empty")


def _tamper_weights(name: str, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[AnnData], None]:
    def change(adata: AnnData) -> None:
        adata.uns["sae"]["weights"][name] = value(np.asarray(adata.uns["sae"]["weights"][name]))

    return change


case("model NaN weight", lambda a: csk.get.sae(a).model, E, "NaN", _tamper_weights("W_dec", lambda w: w * np.nan))
case(
    "model int weight",
    lambda a: csk.get.sae(a).model,
    E,
    "floating",
    _tamper_weights("W_dec", lambda w: w.astype(np.int64)),
)
case("model bool weight", lambda a: csk.get.sae(a).model, E, "floating", _tamper_weights("W_enc", lambda w: w > 0))
case("model wrong shape", lambda a: csk.get.sae(a).model, E, "shape", _tamper_weights("W_dec", lambda w: w[:, :3]))
case(
    "model negative scale",
    lambda a: csk.get.sae(a).model,
    E,
    "input_scale",
    _tamper_weights("input_scale", lambda w: -w),
)
case(
    "model huge claim",
    lambda a: csk.get.sae(a).model,
    E,
    "shape",
    lambda a: a.uns["sae"]["params"].update(n_inputs=2048, n_features=65536),
)
case("model k text", lambda a: csk.get.sae(a).model, E, "k=", lambda a: a.uns["sae"]["params"].update(k="two"))

# --- feature statistics and ranking ---
rank = csk.tl.rank_features_groups
case("stats missing key", lambda a: csk.tl.feature_stats(a, "nope"), K, "nope")
case("stats missing groupby", lambda a: csk.tl.feature_stats(a, groupby="nope"), K, "nope")
case("stats continuous groupby", lambda a: csk.tl.feature_stats(a, groupby="score"), E, "continuous")
case("stats negative codes", lambda a: csk.tl.feature_stats(a), E, "negative", _codes(_negate))
case("rank missing groupby", lambda a: rank(a, "nope"), K, "nope")
case("rank groups empty", lambda a: rank(a, "group", groups=[]), E, "names no group")
case("rank groups repeated", lambda a: rank(a, "group", groups=["a", "a"]), E, "more than once")
case("rank groups unknown", lambda a: rank(a, "group", groups=["z"]), E, "'z'")
case("rank reference tested", lambda a: rank(a, "group", groups=["a"], reference="a"), E, "compared with itself")
case("rank reference unknown", lambda a: rank(a, "group", reference="z"), E, "reference='z'")
case("rank method", lambda a: rank(a, "group", method="t-test"), E, "method")
case("rank n_features 0", lambda a: rank(a, "group", n_features=0), E, "n_features")
case("rank n_features big", lambda a: rank(a, "group", n_features=99), E, "n_features")
case("rank continuous", lambda a: rank(a, "score"), E, "continuous")
case("rank key_added", lambda a: rank(a, "group", key_added=""), E, "key_added")
case("rank NaN codes", lambda a: rank(a, "group"), E, "NaN", _codes(_nan_codes))

# --- genes and annotation ---
case("feature_genes method", lambda a: csk.tl.feature_genes(a, method="mi", progress=False), E, "method")
case("feature_genes layer", lambda a: csk.tl.feature_genes(a, layer="nope", progress=False), K, "nope")
case("feature_genes key", lambda a: csk.tl.feature_genes(a, "nope", progress=False), K, "nope")
case("feature_genes key_added", lambda a: csk.tl.feature_genes(a, key_added="x/y", progress=False), E, "key_added")
case(
    "feature_genes NaN layer",
    lambda a: csk.tl.feature_genes(a, layer="bad", progress=False),
    E,
    "NaN",
    lambda a: a.layers.__setitem__("bad", _nan_first(np.asarray(a.X, dtype=np.float64))),
)
case("feature_genes negative codes", lambda a: csk.tl.feature_genes(a, progress=False), E, "negative", _codes(_negate))
case("top_genes big feature", lambda a: csk.tl.top_genes(a, 99), (ValueError, IndexError, KeyError), "99")
case("top_genes sign", lambda a: csk.tl.top_genes(a, 0, sign="up"), E, "sign")
case("top_genes n 0", lambda a: csk.tl.top_genes(a, 0, n=0), E, "n=")
case("top_genes loadings key", lambda a: csk.tl.top_genes(a, 0, loadings="nope"), K, "nope")
NET = pd.DataFrame({"source": ["s"] * 6, "target": [f"G{i}" for i in range(6)], "weight": 1.0})
ann = csk.tl.annotate_features
case("annotate unknown net", lambda a: ann(a, "kegg"), (ValueError, FileNotFoundError), "kegg")
case("annotate net columns", lambda a: ann(a, pd.DataFrame({"a": [1]})), (ValueError, KeyError), "source")
case(
    "annotate no shared genes",
    lambda a: ann(a, NET.assign(target=[f"X{i}" for i in range(6)])),
    E,
    "share no genes",
)
case("annotate alpha 0", lambda a: ann(a, NET, alpha=0), E, "alpha")
case("annotate n_top 0", lambda a: ann(a, NET, n_top=0), E, "n_top")
case("annotate transform", lambda a: ann(a, NET, transform="log"), E, "transform")
case("annotate loadings key", lambda a: ann(a, NET, loadings="nope"), K, "nope")
case("annotate tmin", lambda a: ann(a, NET, tmin=50), E, "tmin")
case("annotate key", lambda a: ann(a, NET, key="nope"), K, "nope")
case("score_annotations key", lambda a: csk.tl.score_annotations(a, NET, key="nope"), K, "nope")

# --- stability, consensus and sweeps ---
case("stability missing keys", lambda a: csk.tl.stability(a, ["sae", "nope"], progress=False), K, "nope")
case("stability n_seeds 1", lambda a: csk.tl.stability(a, n_seeds=1, progress=False), E, "n_seeds")
case("stability n_seeds text", lambda a: csk.tl.stability(a, n_seeds="5", progress=False), VT, "n_seeds")
case(
    "stability thresholds",
    lambda a: csk.tl.stability(a, ["sae", "sae"], thresholds=[2.0], progress=False),
    E,
    "threshold",
)
con = csk.tl.consensus
case("consensus missing rep", lambda a: con(a, "X_nope", n_runs=2, progress=False), K, "X_nope")
case("consensus n_runs 1", lambda a: con(a, "X_pca", n_runs=1, progress=False), E, "n_runs")
case("consensus n_runs text", lambda a: con(a, "X_pca", n_runs="10", progress=False), VT, "n_runs")
case("consensus density", lambda a: con(a, "X_pca", n_runs=2, density_threshold=-1, progress=False), E, "density")
case("consensus refit", lambda a: con(a, "X_pca", n_runs=2, refit="all", progress=False), E, "refit")
case("consensus key_added", lambda a: con(a, "X_pca", n_runs=2, key_added=7, progress=False), T, "key_added")
case("consensus bad k", lambda a: con(a, "X_pca", n_runs=2, k=2.5, activation="topk", progress=False), E, "k=2.5")
case("consensus NaN", lambda a: con(a, "X_bad", n_runs=2, progress=False), E, "NaN", _pca(_nan_first))
sweep = csk.tl.sae_sweep
case("sweep empty grid", lambda a: sweep(a, "X_pca", n_features=[], progress=False), E, "n_features")
case("sweep n_seeds 0", lambda a: sweep(a, "X_pca", n_seeds=0, progress=False), E, "n_seeds")
case("sweep missing rep", lambda a: sweep(a, "X_nope", progress=False), K, "X_nope")
case("sweep truth missing", lambda a: sweep(a, "X_pca", truth="nope", progress=False), K, "nope")
case("sweep bad k", lambda a: sweep(a, "X_pca", n_features=[16], k=[2.5], n_seeds=1, progress=False), E, "k=2.5")
case("sweep key_added", lambda a: sweep(a, "X_pca", key_added="", progress=False), E, "key_added")
case("sweep n_jobs 0", lambda a: sweep(a, "X_pca", n_jobs=0, progress=False), E, "n_jobs")
case("stability_sweep empty", lambda a: csk.tl.stability_sweep(a, "X_pca", [], progress=False), E, "n_features")
case(
    "stability_sweep n_seeds 1",
    lambda a: csk.tl.stability_sweep(a, "X_pca", [16], n_seeds=1, progress=False),
    E,
    "n_seeds",
)

# --- simulations' truth ---
case("recovery truth missing", lambda a: csk.tl.recovery(a, truth="nope"), K, "nope")
case("recovery truth shape", lambda a: csk.tl.recovery(a, truth=np.ones((5, 2))), E, "5")
case("recovery truth NaN", lambda a: csk.tl.recovery(a, truth=_nan_first(np.ones((200, 2)))), E, "NaN")
case("recovery threshold", lambda a: csk.tl.recovery(a, truth="true_programs", threshold=2), E, "threshold")
case("completeness rep", lambda a: csk.tl.completeness(a, "X_nope"), K, "X_nope")
case("completeness test_size", lambda a: csk.tl.completeness(a, "X_pca", test_size=1.5), E, "test_size")

# --- embeddings, factor models, steering, absorption ---
case("embed method", lambda a: csk.tl.embed(a, "umap", progress=False), E, "method")
case("embed n_latent 0", lambda a: csk.tl.embed(a, "pca", 0, progress=False), E, "n_latent")
case("embed n_latent big", lambda a: csk.tl.embed(a, "pca", 500, progress=False), E, "n_latent")
case("embed layer", lambda a: csk.tl.embed(a, "pca", 5, layer="nope", progress=False), K, "nope")
case("factorize method", lambda a: csk.tl.factorize(a, "X_pca", "lda"), E, "method")
case("factorize rep", lambda a: csk.tl.factorize(a, "X_nope"), K, "X_nope")
case("factorize n_components 0", lambda a: csk.tl.factorize(a, "X_pca", n_components=0), E, "n_components")
case("factorize too many", lambda a: csk.tl.factorize(a, "X_pca", n_components=50), E, "n_components")
case("steer feature big", lambda a: csk.tl.steer(a, 99, value=1.0), (ValueError, IndexError, KeyError), "99")
case("steer no value", lambda a: csk.tl.steer(a, 0), E, "value")
case("steer both", lambda a: csk.tl.steer(a, 0, value=1.0, scale=2.0), E, "scale")
case("steer NaN value", lambda a: csk.tl.steer(a, 0, value=float("nan")), E, "value")
case("absorption groupby", lambda a: csk.tl.absorption(a, groupby="nope", hierarchy={"a": ["b"]}), K, "nope")
case("absorption hierarchy", lambda a: csk.tl.absorption(a, groupby="group", hierarchy={"T": ["z", "a"]}), E, "'z'")
case("absorption no children", lambda a: csk.tl.absorption(a, groupby="group", hierarchy={"T": []}), E, "no children")
case("absorption no tree", lambda a: csk.tl.absorption(a, truth="true_programs"), E, "design='hierarchy'")
case("absorption truth missing", lambda a: csk.tl.absorption(a, truth="nope"), K, "nope")
case("absorption no hierarchy", lambda a: csk.tl.absorption(a), (TypeError,), "truth=")
case(
    "absorption truth and groupby",
    lambda a: csk.tl.absorption(a, truth="true_programs", groupby="group", hierarchy={"T": ["a"]}),
    E,
    "not both",
)
case(
    "absorption programme out of range",
    lambda a: csk.tl.absorption(a, truth="true_programs", hierarchy={0: [9]}),
    E,
    "not columns of the truth",
)
case("peaks_to_genes no genes", lambda a: csk.tl.peaks_to_genes(a), (TypeError, ValueError), "genes=")
case("joint_embedding anndata", lambda a: csk.tl.joint_embedding(a), (TypeError, ValueError), "MuData")

# --- plots ---
case("pl.features missing key", lambda a: csk.pl.features(a, 0, key="nope", show=False), K, "nope")
case("pl.features big feature", lambda a: csk.pl.features(a, 99, basis="pca", show=False), E, "99")
case("pl.features no basis", lambda a: csk.pl.features(a, 0, show=False), (KeyError, ValueError), "basis='umap'")
case("pl.training no history", lambda a: csk.pl.training(a, show=False), K, "history", _drop_uns("history"))
case(
    "pl.top_genes big feature", lambda a: csk.pl.top_genes(a, 99, show=False), (ValueError, IndexError, KeyError), "99"
)
case("pl.sae_sweep missing", lambda a: csk.pl.sae_sweep(a, show=False), K, "sae_sweep")
case("pl.stability missing", lambda a: csk.pl.stability(a, show=False), K, "stability_sweep")
case("pl.steering missing", lambda a: csk.pl.steering(a, show=False), K, "sae_steer")
case("pl.annotation missing", lambda a: csk.pl.annotation(a, 0, show=False), K, "annotat")
case("pl.feature_stability missing", lambda a: csk.pl.feature_stability(a, show=False), K, "stability")
case("pl.dotplot missing key", lambda a: csk.pl.rank_features_groups_dotplot(a, key="nope", show=False), K, "nope")
case(
    "pl.dotplot n_features 0",
    lambda a: csk.pl.rank_features_groups_dotplot(a, n_features=0, show=False),
    E,
    "n_features",
)

# --- models (arrays, no AnnData) ---
X = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
FIT = {"n_features": 8, "k": 2, "n_epochs": 1, "progress": False}
case("fit NaN", lambda a: models.fit(_nan_first(X), **FIT), E, "NaN")
case("fit one cell", lambda a: models.fit(X[:1], **FIT), E, "single cell")
case("fit 3-D", lambda a: models.fit(X[None], **FIT), E, "dimensions")
case("fit list", lambda a: models.fit(X.tolist(), **FIT), T, "list")
case("fit strings", lambda a: models.fit(X.astype(str), **FIT), T, "dtype")
case("fit unknown option", lambda a: models.fit(X, n_featuers=8), T, "n_featuers")
case("fit init_decoder shape", lambda a: models.fit(X, init_decoder=np.ones((3, 3)), **FIT), E, "init_decoder")
case("fit freeze without decoder", lambda a: models.fit(X, freeze_decoder=True, **FIT), E, "init_decoder")
case("FitConfig k >= n_features", lambda a: models.FitConfig(n_features=8, k=8), E, "smaller than n_features")
case("resolve kind", lambda a: models.resolve(models.FitConfig(), 100, 10, "image"), E, "kind='image'")
case("resolve_device", lambda a: models.resolve_device("gpu"), E, "device")
case("ChunkedRows 1-D", lambda a: models.ChunkedRows(np.ones(5)), E, "2-D")
case("ChunkedRows chunk 0", lambda a: models.ChunkedRows(X, chunk_size=0), E, "chunk_size")
case("ChunkedRows CSC", lambda a: models.ChunkedRows(_FakeCSC()), E, "CSC")
case("ChunkedRows NaN read", lambda a: models.ChunkedRows(_nan_first(X))[0:10], E, "NaN")
case("SparseAutoencoder k", lambda a: models.SparseAutoencoder(8, 4, k=4), E, "k=4")
case("SparseAutoencoder activation", lambda a: models.SparseAutoencoder(8, 4, activation="gelu"), E, "activation")
case("encode_rows dims", lambda a: models.encode_rows(models.SparseAutoencoder(5, 8, k=2), X), E, "5 inputs")
case("load missing", lambda a: models.load("/nonexistent.safetensors"), (FileNotFoundError,), "No model file")
case("geometric_median NaN", lambda a: models.geometric_median(_nan_first(X)), E, "NaN")
case("fvu shapes", lambda a: models.fvu(X, X[:, :3]), E, "shape")
case("check_sparse indices", lambda a: models.check_sparse(_malformed("indices")), E, "malformed")
case("check_sparse indptr", lambda a: models.check_sparse(_malformed("indptr")), E, "malformed")
case("check_data CSR indices", lambda a: models.check_data(_malformed("indices")), E, "malformed")

# --- data sets ---
case("simulate n_cells 0", lambda a: csk.datasets.simulate(0, 5), E, "n_cells")
case("simulate design", lambda a: csk.datasets.simulate(50, 5, design="tree"), E, "design")
case("simulate modality", lambda a: csk.datasets.simulate(50, 5, modalities=("rna", "hic")), E, "hic")
case("simulate p_active", lambda a: csk.datasets.simulate(50, 5, p_active=2), E, "p_active")
case("simulate noise", lambda a: csk.datasets.simulate(50, 5, noise="gauss"), E, "noise")
case("simulate hierarchy n_programs", lambda a: csk.datasets.simulate(50, 5, design="hierarchy"), E, "n_programs")
case(
    "simulate hierarchy n_cell_types",
    lambda a: csk.datasets.simulate(50, 20, 4, design="hierarchy"),
    E,
    "n_cell_types",
)
case("simulate n_lineages cell_type", lambda a: csk.datasets.simulate(50, 5, n_lineages=2), E, "design='hierarchy'")
case("genesets unknown", lambda a: csk.datasets.genesets("kegg"), (ValueError, FileNotFoundError), "kegg")
case("genesets sizes", lambda a: csk.datasets.genesets("go_bp", min_size=50, max_size=10), E, "min_size")


class _FakeCSC:
    shape = (10, 3)
    dtype = np.dtype(np.float32)
    format = "csc"


def _malformed(part: str) -> sparse.csr_matrix:
    M = sparse.random(30, 8, density=0.3, format="csr", dtype=np.float32, random_state=0)
    if part == "indices":
        M.indices[2] = 10**6
    else:
        M.indptr[10:15] = 0
    return M


@pytest.mark.parametrize(("name", "mutate", "call", "raises", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error_from_the_kit_and_changes_nothing(trained, name, mutate, call, raises, words):
    adata = trained.copy()
    mutate(adata)
    before = fingerprint(adata)
    with pytest.raises(raises) as caught:
        call(adata)
    frame = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert frame.filename.startswith(PACKAGE), f"raised by {frame.filename}:{frame.lineno}, not by the kit"
    message = str(caught.value.args[0]) if caught.value.args else ""
    assert words.lower() in message.lower(), message
    assert fingerprint(adata) == before, "the failed call changed the AnnData"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 150
    json.dumps([c[0] for c in CASES])  # ids are plain text
