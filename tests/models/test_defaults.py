import warnings

import numpy as np
import pytest

from cellsae_kit.models import (
    FitConfig,
    auto_batch_size,
    auto_k,
    auto_lr,
    auto_n_epochs,
    auto_n_features,
    auto_validation_fraction,
    fit,
    resolve,
)
from cellsae_kit.models._defaults import RULES


@pytest.mark.parametrize(
    ("n_cells", "n_inputs", "expected"),
    [
        # the simulation of benchmarks/recovery.py at 80 and 150 PCs: the measured recipe's 256 features, k=32
        (10_000, 80, {"n_features": 256, "k": 32, "batch_size": 256, "n_epochs": 112, "lr": 4e-3}),
        (10_000, 150, {"n_features": 256, "k": 32, "batch_size": 256, "n_epochs": 112, "lr": 4e-3}),
        # pbmc68k_reduced's X_pca: one feature per 8 training cells, a feature on in about 1 cell in 8
        (700, 50, {"n_features": 64, "k": 8, "batch_size": 32, "n_epochs": 200, "validation_fraction": 0.1}),
        # krumsiek11: 11 genes, so k stays well below 11, and a small dictionary for a small input
        (640, 11, {"n_features": 16, "k": 5, "batch_size": 32}),
        # 16 dimensions: 8 x k would be 64 features, the small-input rule keeps 32
        (10_000, 16, {"n_features": 32, "k": 8}),
        # a couple of hundred cells: a small dictionary, a validation set of 50 cells, at most 300 epochs
        (200, 30, {"n_features": 16, "k": 2, "validation_fraction": 0.25, "n_epochs": 300}),
        # a million cells: large batches, a few epochs
        (1_000_000, 50, {"n_features": 256, "k": 25, "batch_size": 1024, "n_epochs": 5}),
        # wide expression: 30,000 genes on 300 cells
        (300, 30_000, {"n_features": 32, "k": 4, "n_epochs": 300}),
    ],
)
def test_rules_give_the_measured_settings_for_each_shape(n_cells, n_inputs, expected):
    config, rules = resolve(FitConfig(), n_cells, n_inputs)
    assert {name: getattr(config, name) for name in expected} == pytest.approx(expected)
    assert config.activation == "batchtopk" and config.patience == config.n_epochs
    assert config.k < config.n_features and config.k <= n_inputs // 2
    # every rule but the Matryoshka prefixes' (derived only for activation="matryoshka")
    assert set(rules) == set(RULES) - {"prefixes"} and all(rules[name] == RULES[name] for name in rules)


def test_explicit_values_are_kept_and_only_auto_is_derived():
    config, rules = resolve(FitConfig(n_features=512, k=16, lr=1e-3), 10_000, 150)
    assert (config.n_features, config.k, config.lr) == (512, 16, 1e-3)
    assert "n_features" not in rules and "k" not in rules and "lr" not in rules and "batch_size" in rules
    # None was the spelling of "derived" before "auto"
    assert FitConfig(n_epochs=None, lr=None).n_epochs == "auto"


def test_single_rules():
    assert auto_validation_fraction(100_000) == 0.1
    assert auto_validation_fraction(300) == pytest.approx(50 / 300, abs=1e-4)
    assert auto_validation_fraction(20) == 0.25
    assert auto_n_features(100, 50) == 16  # never below 16
    assert auto_n_features(10**8, 10**4) == 256  # 8 x k with k = 32
    assert auto_k(100, 2) == 1 and auto_k(100, 64, n_features=2) == 1
    assert auto_k(100, 64) == 2 and auto_k(250, 64) == 4  # one per 64 training cells, at least 2 (16 features)
    assert auto_k(10**6, 150, n_features=512) == 32 and auto_k(10**6, 150, n_features=16) == 8
    assert auto_n_features(10**6, 11) == 16 and auto_n_features(10**6, 24) == 64  # input dimension^2 / 8
    assert auto_batch_size(10) == 32 and auto_batch_size(10**7) == 1024
    assert auto_lr(64) == 4e-3 and auto_lr(4096) == pytest.approx(1e-3)
    assert auto_lr(256, 150) == 4e-3 and auto_lr(256, 2400) == pytest.approx(1e-3)  # wide inputs: 1 / sqrt(d)
    assert auto_n_epochs(10, 32) == 300 and auto_n_epochs(10**7, 1024) == 2


def test_bad_kind_and_bad_values():
    with pytest.raises(ValueError, match="kind='image' is not known"):
        resolve(FitConfig(), 100, 10, "image")
    with pytest.raises(TypeError, match="n_features='many' must be an integer"):
        FitConfig(n_features="many")


def _data(n_cells, n_inputs, seed=0):
    return np.random.default_rng(seed).normal(size=(n_cells, n_inputs)).astype(np.float32)


def test_fit_stores_the_rule_beside_each_derived_value():
    result = fit(_data(300, 12), n_epochs=3, progress=False)
    assert result.params["n_features"] == auto_n_features(250, 12) == 16
    assert result.params["k"] == auto_k(250, 12, 16) == 4
    assert result.params["rules"]["n_features"] == RULES["n_features"] and "n_epochs" not in result.params["rules"]
    assert len(result.validation_indices) == 50


def test_k_at_or_above_the_input_dimension_warns_with_the_better_k():
    with pytest.warns(UserWarning, match=r"k=16 active features per cell for an input of 11 dimensions.*pass k=5"):
        fit(_data(640, 11), n_features=64, k=16, n_epochs=2, progress=False)


def test_guard_rails_name_the_setting_that_fits():
    with pytest.warns(UserWarning, match=r"n_features=512 for 150 training cells.*pass n_features=16"):
        fit(_data(200, 20), n_features=512, k=4, n_epochs=2, progress=False)
    with pytest.warns(UserWarning, match=r"validation set holds 10 cells.*validation_fraction=0.25"):
        fit(_data(100, 20), validation_fraction=0.1, n_epochs=2, progress=False)
    with pytest.warns(UserWarning, match=r"n_epochs=2000 for 150 training cells.*pass n_epochs=300"):
        fit(_data(200, 20), n_epochs=2000, patience=1, progress=False)


def test_the_defaults_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(_data(200, 20), n_epochs=2, progress=False)
        fit(_data(60, 3), n_epochs=2, progress=False)
