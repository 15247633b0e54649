import argparse
import math
from dataclasses import fields, replace

import numpy as np
import pytest
import scanpy as sc

import cellsae_kit as csk
from cellsae_kit.models import FitConfig, fit
from cellsae_kit.train import add_fit_options, main, parser

FAST = {"n_features": 16, "k": 2, "n_epochs": 2, "progress": False, "device": "cpu"}


def _cli_options(p: argparse.ArgumentParser) -> set[str]:
    group = next(g for g in p._action_groups if g.title.startswith("fit options"))
    return {action.dest for action in group._group_actions}


def test_cli_stored_params_and_config_are_one_set_of_options():
    adata = sc.datasets.pbmc68k_reduced()
    csk.tl.sae(adata, "X_pca", **FAST)
    stored = set(adata.uns["sae"]["params"])
    options = set(FitConfig.options())
    assert options == {f.name for f in fields(FitConfig)}
    assert _cli_options(parser()) == options
    # every option is stored (each has a value after the fit), beside what describes the input
    assert options <= stored
    assert stored - options == {"use_rep", "n_inputs", "loadings", "rules"}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"k": 2.5}, ValueError, r"k=2\.5 must be an integer"),
        ({"k": "2"}, TypeError, r"k='2' must be an integer"),
        ({"k": True}, TypeError, r"k=True must be an integer"),
        ({"n_epochs": True}, TypeError, "n_epochs=True must be an integer"),
        ({"batch_size": 2.5}, ValueError, "batch_size=2.5 must be an integer"),
        ({"lr": -1}, ValueError, r"lr=-1\.0 must be greater than 0"),
        ({"lr": math.inf}, ValueError, "lr=inf must be a finite number"),
        ({"warmup_fraction": 2}, ValueError, r"warmup_fraction=2\.0 must be a fraction in \[0, 1\]"),
        ({"decay_fraction": -0.1}, ValueError, "decay_fraction=-0.1 must be a fraction"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction=1.0 must be in"),
        ({"patience": -3}, ValueError, "patience=-3 must be at least 1"),
        ({"k_aux": 0}, ValueError, "k_aux=0 must be at least 1"),
        ({"dead_window": -1}, ValueError, "dead_window=-1 must be at least 1"),
        ({"aux_coef": math.nan}, ValueError, "aux_coef=nan must be a finite number"),
        ({"resample": 1}, TypeError, "resample=1 must be True or False"),
        ({"activation": "gelu"}, ValueError, "activation='gelu' is not known"),
        ({"random_state": -1}, ValueError, "random_state=-1 must be at least 0"),
        ({"n_features": 8, "k": 8}, ValueError, "k=8 with n_features=8"),
        ({"device": 0}, TypeError, "device=0 must be a string"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(options, error, message):
    with pytest.raises(error, match=message):
        FitConfig(**options)
    with pytest.raises(error, match=message):  # the same check behind fit's keyword arguments
        fit(np.ones((10, 3)), **({"n_features": 16, "k": 2, "progress": False} | options))


def test_unknown_option_names_every_option():
    with pytest.raises(TypeError, match="l1 is not an option of an SAE fit; the options are n_features, activation"):
        FitConfig.make(l1=0.1)


def test_values_read_back_from_a_file_are_plain_python():
    config = FitConfig(n_features=np.int64(32), k=np.int64(4), lr=np.float64(1e-3), resample=np.bool_(False))
    assert type(config.n_features) is int and type(config.lr) is float and config.resample is False
    assert FitConfig.from_params({"n_features": 32, "k": 4, "use_rep": "X_pca", "n_inputs": 50}) == FitConfig(
        n_features=32, k=4
    )


def test_a_config_and_keyword_arguments_train_the_same_model():
    X = sc.datasets.pbmc68k_reduced().obsm["X_pca"]
    config = FitConfig(n_features=16, k=2, n_epochs=3, device="cpu")
    a = fit(X, config, progress=False)
    b = fit(X, n_features=16, k=2, n_epochs=3, device="cpu", progress=False)
    c = fit(X, replace(config, random_state=1), progress=False)
    assert (a.codes != b.codes).nnz == 0
    assert (a.codes != c.codes).nnz > 0
    assert a.params == b.params and a.params["n_epochs"] == 3 and a.params["lr"] > 0  # values derived from the data


def test_cli_derives_types_choices_and_aliases_from_the_config():
    p = argparse.ArgumentParser()
    add_fit_options(p)
    args = p.parse_args(["--k", "4", "--epochs", "3", "--seed", "2", "--activation", "relu", "--no-resample"])
    assert (args.k, args.n_epochs, args.random_state, args.activation, args.resample) == (4, 3, 2, "relu", False)
    assert p.parse_args([]).lr == "auto"
    assert (p.parse_args(["--lr", "3e-3"]).lr, p.parse_args(["--n-features", "auto"]).n_features) == (3e-3, "auto")
    with pytest.raises(SystemExit):
        p.parse_args(["--k", "four"])
    with pytest.raises(SystemExit):
        p.parse_args(["--activation", "gelu"])


def test_cli_refuses_a_bad_value_before_reading_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.h5ad"), "--output", str(tmp_path / "m"), "--warmup-fraction", "2"])
    assert "warmup_fraction=2.0 must be a fraction in [0, 1]" in capsys.readouterr().err
