"""Defaults derived from the data: what ``"auto"`` means for each option of a fit.

Each rule is a function of the number of cells and the input dimension, found by experiment
(``benchmarks/defaults.py`` writes the table they come from). :func:`resolve` replaces every ``"auto"`` of a
config and returns the rule text of each, which ``tl.sae`` stores beside the values in ``uns[key]["params"]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._config import FitConfig

AUTO = "auto"
InputKind = Literal["embedding", "expression", "joint"]
KINDS = ("embedding", "expression", "joint")

# The measured constants (benchmarks/results/defaults.json).
K_MAX = 32  # a simulated cell has ~30 of 100 programs on: k=20 recovers a median |r| of 0.86 of them, k=32 0.99
FEATURES_PER_K = 8  # features fire in about 1/8 of the cells: specific enough for cell types and markers
CELLS_PER_FEATURE = 8  # more features than a training cell per 8 overfit small data
SMALL_INPUT = 8  # under ~25 dimensions fewer features reconstruct held-out cells better (krumsiek11, 11 genes)
STEPS = 4000  # the features separate into programs late, after a plateau of the validation error
MAX_EPOCHS = 300  # bounds training on a few hundred cells to seconds
MIN_VALIDATION_CELLS = 50
LR = 4e-3
# Adam moves each coordinate by about lr a step, a unit decoder row of d inputs by about lr * sqrt(d): above the
# widest inputs the rate was tuned on, it falls as 1 / sqrt(d) (benchmarks/lr_rule.py)
LR_INPUTS = 150
PREFIX_LEVELS = 5  # Matryoshka prefixes at n_features / 16, / 8, / 4, / 2 and n_features
MIN_PREFIX = 4  # a prefix of fewer features is left out (unless the dictionary itself is that small)

RULES = {
    "n_features": (
        f"a power of 2 near min({FEATURES_PER_K} x k, input dimension^2 / {SMALL_INPUT}), between 16 and 16384"
    ),
    "k": (
        f"min({K_MAX}, input dimension / 2, training cells / {CELLS_PER_FEATURE * FEATURES_PER_K}, n_features / 2), "
        "at least 1"
    ),
    "activation": "batchtopk",
    "prefixes": (
        f"n_features / 16, / 8, / 4, / 2 and n_features (rounded down; sizes under {MIN_PREFIX} features left out), "
        'for activation="matryoshka"'
    ),
    "resample": (
        'True, except for activation="matryoshka" and "jumprelu" (measured: resampled features die again in '
        "Matryoshka's last prefix, and JumpReLU's resampled thresholds overshoot the target L0; AuxK revives "
        "their dead features)"
    ),
    "batch_size": "a power of 2 near training cells / 32, between 32 and 1024",
    "lr": f"{LR:g} x sqrt(256 / n_features), at most {LR:g}, times sqrt({LR_INPUTS} / input dimension) above "
    f"{LR_INPUTS} dimensions",
    "n_epochs": f"enough for {STEPS} steps, between 2 and {MAX_EPOCHS} epochs",
    "patience": "n_epochs (no early stopping; the best validation epoch is kept)",
    "validation_fraction": f"0.1, raised to hold at least {MIN_VALIDATION_CELLS} cells (at most 0.25)",
}


def _power_of_two(x: float, low: int, high: int) -> int:
    return int(min(high, max(low, 2 ** round(math.log2(max(x, 1))))))


def auto_prefixes(n_features: int) -> tuple[int, ...]:
    """Return the nested dictionary sizes of a Matryoshka SAE: 1/16, 1/8, 1/4, 1/2 and all of the features.

    Halving from the whole dictionary gives each level twice the features of the one before, as the levels of a
    hierarchy (lineage, type, subtype, state) hold more programmes each; five levels put the smallest prefix at
    1/16 of the dictionary (16 features of the default 256 for 32 active, enough for the broad lineage
    programmes). Sizes are rounded down and those under 4 features are left out.

    Examples
    --------
    >>> from cellsae_kit.models import auto_prefixes
    >>> auto_prefixes(256), auto_prefixes(100), auto_prefixes(16), auto_prefixes(3)
    ((16, 32, 64, 128, 256), (6, 12, 25, 50, 100), (4, 8, 16), (3,))
    """
    n_features = int(n_features)
    sizes = {n_features // 2**level for level in range(PREFIX_LEVELS)}
    return tuple(sorted(s for s in sizes if s >= min(MIN_PREFIX, n_features)))


def auto_validation_fraction(n_cells: int) -> float:
    """Held-out fraction: 0.1, raised so that the validation FVU rests on at least 50 cells (at most 0.25).

    Examples
    --------
    >>> from cellsae_kit.models import auto_validation_fraction
    >>> auto_validation_fraction(10_000), auto_validation_fraction(200)
    (0.1, 0.25)
    """
    return round(min(0.25, max(0.1, MIN_VALIDATION_CELLS / max(n_cells, 1))), 4)


def auto_n_features(n_train: int, n_inputs: int) -> int:
    """Return the dictionary size: 8 features per active one, fewer for an input of under ~25 dimensions.

    The number of active features ``k`` (:func:`auto_k`) already holds the dictionary to one feature per 8
    training cells. An input of few dimensions holds few directions: on ``krumsiek11`` (11 genes) 32 features
    leave 40 % of them dead at 4x the validation FVU of 16.

    Examples
    --------
    >>> from cellsae_kit.models import auto_n_features
    >>> auto_n_features(9_000, 150), auto_n_features(630, 50), auto_n_features(576, 11)
    (256, 64, 16)
    """
    k = auto_k(n_train, n_inputs)
    return _power_of_two(min(FEATURES_PER_K * k, n_inputs**2 / SMALL_INPUT), 16, 16384)


def auto_k(n_train: int, n_inputs: int, n_features: int | None = None) -> int:
    """Return the active features per cell: 32, fewer for a low-dimensional input or few cells.

    At most half the input dimension (with k near the dimension an SAE copies its input without being sparse),
    one per 64 training cells (a dictionary of 8 features per active one then has a feature per 8 training cells;
    more overfit small data), and half of ``n_features`` when it is given.

    Examples
    --------
    >>> from cellsae_kit.models import auto_k
    >>> auto_k(9_000, 150), auto_k(630, 50), auto_k(576, 11), auto_k(9_000, 150, n_features=16)
    (32, 8, 5, 8)
    """
    by_cells = _power_of_two(n_train / CELLS_PER_FEATURE, 16, 16384) // FEATURES_PER_K
    k = min(K_MAX, n_inputs // 2, by_cells)
    if n_features is not None:
        k = min(k, n_features // 2)
    return max(1, k)


def auto_batch_size(n_train: int) -> int:
    """Cells per step: about 32 steps per pass over the data, between 32 and 1024 cells.

    Examples
    --------
    >>> from cellsae_kit.models import auto_batch_size
    >>> auto_batch_size(9_000), auto_batch_size(150), auto_batch_size(1_000_000)
    (256, 32, 1024)
    """
    return _power_of_two(n_train / 32, 32, 1024)


def auto_lr(n_features: int, n_inputs: int | None = None) -> float:
    """Adam learning rate: 4e-3 for up to 256 features, falling as ``1 / sqrt(n_features)`` above.

    Inputs of more than 150 dimensions (genes, a foundation model's embedding) get a rate smaller by
    ``sqrt(150 / n_inputs)``: Adam moves every coordinate by about the rate, so a unit-norm decoder row moves by
    about ``lr * sqrt(n_inputs)``, and on 2,000 genes the rate tuned on embeddings spoilt the data-based
    initialisation in the first steps (``benchmarks/lr_rule.py``).

    Parameters
    ----------
    n_features
        Dictionary size.
    n_inputs
        Input dimension (``None``: no correction).

    Returns
    -------
    The learning rate.

    Examples
    --------
    >>> from cellsae_kit.models import auto_lr
    >>> auto_lr(256), auto_lr(1024), auto_lr(256, 50), auto_lr(256, 600)
    (0.004, 0.002, 0.004, 0.002)
    """
    wide = 1.0 if n_inputs is None else min(1.0, math.sqrt(LR_INPUTS / n_inputs))
    return LR * min(1.0, math.sqrt(256 / n_features)) * wide


def auto_n_epochs(n_train: int, batch_size: int) -> int:
    """Return the passes over the data: enough for 4,000 steps, at least 2 and at most 300.

    Examples
    --------
    >>> from cellsae_kit.models import auto_n_epochs
    >>> auto_n_epochs(9_000, 256), auto_n_epochs(150, 32), auto_n_epochs(1_000_000, 1024)
    (112, 300, 5)
    """
    steps_per_epoch = math.ceil(n_train / batch_size)
    return int(min(MAX_EPOCHS, max(2, math.ceil(STEPS / steps_per_epoch))))


def resolve(
    config: FitConfig, n_cells: int, n_inputs: int, kind: InputKind = "embedding"
) -> tuple[FitConfig, dict[str, str]]:
    """Replace each ``"auto"`` option of ``config`` by its rule's value for data of this shape.

    Parameters
    ----------
    config
        The options; those set to ``"auto"`` are derived, the others kept.
    n_cells
        Number of cells (before the validation split).
    n_inputs
        Input dimension.
    kind
        ``"embedding"`` (an ``obsm`` representation), ``"expression"`` (genes, peaks, proteins) or ``"joint"``
        (an embedding of several modalities; the embedding's rules).

    Returns
    -------
    The config with concrete values, and the rule text of each derived option (see ``RULES``).

    Examples
    --------
    >>> from cellsae_kit.models import FitConfig, resolve
    >>> config, rules = resolve(FitConfig(), 10_000, 150)
    >>> config.n_features, config.k, config.activation, config.batch_size, config.n_epochs
    (256, 32, 'batchtopk', 256, 112)
    >>> rules["k"]
    'min(32, input dimension / 2, training cells / 64, n_features / 2), at least 1'
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not known; choose one of {', '.join(map(repr, KINDS))}.")
    chosen: dict[str, object] = {}

    def pick(name: str, value):
        chosen[name] = value
        return value

    def get(name: str, derive):
        value = getattr(config, name)
        return pick(name, derive()) if value == AUTO else value

    fraction = get("validation_fraction", lambda: auto_validation_fraction(n_cells))
    n_train = max(1, n_cells - (0 if fraction == 0 else max(1, round(fraction * n_cells))))
    n_features = get("n_features", lambda: auto_n_features(n_train, n_inputs))
    get("k", lambda: auto_k(n_train, n_inputs, n_features))
    activation = get("activation", lambda: "batchtopk")
    if activation == "matryoshka":  # the other activations have no prefixes: theirs stays "auto"
        get("prefixes", lambda: auto_prefixes(n_features))
    get("resample", lambda: activation not in ("matryoshka", "jumprelu"))
    batch_size = get("batch_size", lambda: auto_batch_size(n_train))
    get("lr", lambda: auto_lr(n_features, n_inputs))
    n_epochs = get("n_epochs", lambda: auto_n_epochs(n_train, min(batch_size, n_train)))
    get("patience", lambda: n_epochs)
    return replace(config, **chosen), {name: RULES[name] for name in chosen}


def warn_settings(
    config: FitConfig, n_train: int, n_validation: int, n_inputs: int, steps_per_epoch: int, rules: dict[str, str]
) -> None:
    """Warn about explicit settings that do not fit the data, naming the setting ``"auto"`` would choose."""
    explicit = [name for name in ("k", "n_features", "validation_fraction", "n_epochs") if name not in rules]
    # (the prefixes are left "auto": explicit ones may not fit the dictionary "auto" would choose)
    auto, _ = resolve(replace(config, **dict.fromkeys(explicit, AUTO), prefixes=AUTO), n_train + n_validation, n_inputs)
    problems = []
    if "k" in explicit and config.activation != "relu" and config.k >= n_inputs:
        problems.append(
            f"k={config.k} active features per cell for an input of {n_inputs} dimensions: with k at or above the "
            "input dimension an SAE copies its input without being sparse (FVU near 0, features that mean nothing); "
            f"pass k={auto.k} or leave k='auto'"
        )
    if "n_features" in explicit and config.n_features > n_train:
        problems.append(
            f"n_features={config.n_features} for {n_train} training cells: most features can only fit single cells "
            f"or die, and the validation error rises; pass n_features={auto.n_features} or leave n_features='auto'"
        )
    if "validation_fraction" in explicit and 0 < n_validation < 20:
        problems.append(
            f"the validation set holds {n_validation} cells, too few for a reliable validation FVU and early "
            f"stopping; pass validation_fraction={auto.validation_fraction} or leave it 'auto'"
        )
    if "n_epochs" in explicit and config.n_epochs >= 1000 and config.n_epochs > 3 * auto.n_epochs:
        problems.append(
            f"n_epochs={config.n_epochs} for {n_train} training cells is {config.n_epochs * steps_per_epoch} steps, "
            f"far more than an SAE needs to converge; pass n_epochs={auto.n_epochs} or leave n_epochs='auto'"
        )
    if problems:
        warnings.warn("; ".join(problems) + ".", UserWarning, stacklevel=4)
