"""The options of an SAE fit, declared once: :func:`fit`, ``tl.sae``, the CLI and stability read them from here."""

from __future__ import annotations

import math
import re
import textwrap
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from .._docs import DOCS
from ._defaults import AUTO, RULES
from ._sae import BANDWIDTH, Activation, check_prefixes, prefix_sizes

Center = Literal["mean", "median", "none"]
Init = Literal["data", "random"]
Precision = Literal["float32", "bfloat16"]
Auto = Literal["auto"]
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _auto(name: str) -> str:
    return f' ``"auto"`` (the default): {RULES[name]}.'


def _option(default: Any, doc: str, valid: tuple | None = None, *, cli: tuple[str, ...] = ()) -> Any:
    """Declare an option: its default, documentation (one numpydoc paragraph), range and extra CLI spellings."""
    return field(default=default, metadata={"doc": doc, "valid": valid, "cli": cli})


# Ranges: a test and the words that say it.
POSITIVE = (lambda v: v >= 1, "at least 1")
NON_NEGATIVE = (lambda v: v >= 0, "at least 0")
ABOVE_ZERO = (lambda v: v > 0, "greater than 0")
FRACTION = (lambda v: 0 <= v <= 1, "a fraction in [0, 1]")
HOLDOUT = (lambda v: 0 <= v < 1, "in [0, 1): some cells must be left to train on")
FEATURES = (lambda v: v >= 1, "at least 1: an SAE needs at least one feature; pass n_features >= 1")


@dataclass(frozen=True)
class FitConfig:
    """The options of an SAE fit (:func:`cellsae_kit.models.fit`), checked when the config is made.

    ``"auto"`` (and ``None``) means "derived from the data when training starts", by the rules of
    :func:`cellsae_kit.models.resolve`; the values a fit used are stored in ``uns[key]["params"]``
    (:meth:`params`), and the rule of each derived one in ``uns[key]["params"]["rules"]``. Repeat a run with
    another seed with ``dataclasses.replace(config, random_state=1)``.

    Attributes
    ----------
    {fit_options}

    Examples
    --------
    >>> from dataclasses import replace
    >>> from cellsae_kit.models import FitConfig
    >>> config = FitConfig(n_features=64, k=4)
    >>> replace(config, random_state=1).random_state
    1
    >>> FitConfig(k=2.5)
    Traceback (most recent call last):
    ...
    ValueError: k=2.5 must be an integer (a whole number such as 2).
    """

    n_features: int | Auto = _option(AUTO, "Dictionary size (number of features)." + _auto("n_features"), FEATURES)
    activation: Activation | Auto = _option(
        AUTO,
        '``"topk"`` (exactly ``k`` features per cell), ``"batchtopk"`` (``k`` per cell on average over a batch, '
        'a threshold at inference), ``"relu"`` (ReLU with an L1 penalty weighted by the decoder norms), '
        '``"matryoshka"`` (BatchTopK trained so that each nested prefix of the dictionary, ``prefixes``, '
        "reconstructs the cells on its own: the first features are the broad ones; Bussmann et al., 2025) or "
        '``"jumprelu"`` (a learned threshold per feature, trained with a straight-through estimator towards an '
        "average of ``k`` active features per cell; Rajamanoharan et al., 2024)." + _auto("activation"),
    )
    k: int | Auto = _option(
        AUTO,
        "Active features per cell (``topk``), on average (``batchtopk``, ``matryoshka``) or the target average "
        "(``jumprelu``, at most the input dimension)." + _auto("k"),
        POSITIVE,
    )
    l1_coef: float = _option(0.05, 'L1 weight of the ReLU SAE (``activation="relu"``).', NON_NEGATIVE)
    prefixes: tuple[int, ...] | Auto = _option(
        AUTO,
        'Nested dictionary sizes of the Matryoshka SAE (``activation="matryoshka"``; ignored by the others), '
        "strictly increasing and at most ``n_features``, which is the last prefix (added when missing). Its loss "
        "is the mean over the prefixes of the reconstruction error from the features below each size."
        + _auto("prefixes"),
    )
    l0_coef: float = _option(
        1.0,
        'Weight of the JumpReLU SAE\'s sparsity penalty ``l0_coef * (L0 / k - 1)^2`` (``activation="jumprelu"``), '
        "which holds the batch's mean number of active features per cell at ``k``.",
        NON_NEGATIVE,
    )
    bandwidth: float = _option(
        BANDWIDTH,
        "Width of the rectangle kernel of the JumpReLU SAE's straight-through estimator (in the scaled input "
        "units, where a cell's mean distance from the centre is ``sqrt(d)``): pre-activations within "
        "``bandwidth / 2`` of a feature's threshold move it.",
        ABOVE_ZERO,
    )
    center: Center = _option(
        "mean",
        'Initialise the decoder bias (subtracted before encoding) at the ``"mean"`` or geometric ``"median"`` of '
        'the training cells, or at zero (``"none"``, as in the reference study).',
    )
    init: Init = _option(
        "data",
        '``"data"`` points the decoder rows at randomly drawn training cells (relative to the centre), which keeps '
        'features alive in anisotropic spaces such as PCA; ``"random"`` draws random unit directions. Either way '
        "the encoder starts as the decoder's transpose.",
    )
    batch_size: int | Auto = _option(
        AUTO,
        "Cells per optimisation step (capped at the number of training cells)." + _auto("batch_size"),
        POSITIVE,
    )
    n_epochs: int | Auto | None = _option(
        AUTO, "Passes over the training cells." + _auto("n_epochs"), POSITIVE, cli=("--epochs",)
    )
    lr: float | Auto | None = _option(
        AUTO,
        "Adam learning rate, with linear warm-up over the first ``warmup_fraction`` of steps and linear decay to "
        "zero over the last ``decay_fraction``." + _auto("lr"),
        ABOVE_ZERO,
    )
    validation_fraction: float | Auto = _option(
        AUTO,
        "Fraction of cells held out for the validation FVU and early stopping (0 turns both off)."
        + _auto("validation_fraction"),
        HOLDOUT,
    )
    patience: int | Auto | None = _option(
        AUTO,
        "Stop after this many epochs without a better validation FVU; the best epoch's weights are kept."
        + _auto("patience"),
        POSITIVE,
    )
    aux_coef: float = _option(
        1 / 32,
        "Weight of the AuxK loss, which lets the dead features with the largest pre-activations reconstruct the "
        "residual error.",
        NON_NEGATIVE,
    )
    k_aux: int | None = _option(
        None, "Dead features used by AuxK per cell (default 256, capped at the dead ones).", POSITIVE
    )
    dead_window: int | None = _option(
        None,
        "A feature is dead once it has not fired for this many training cells (default: one epoch or ten steps, "
        "whichever is more).",
        POSITIVE,
    )
    resample: bool | Auto = _option(
        AUTO,
        "Re-point dead features at the worst-reconstructed cells of the batch (Bricken et al., 2023). AuxK alone "
        "revives features slowly when there are few cells per feature." + _auto("resample"),
    )
    warmup_fraction: float = _option(0.05, "Fraction of the steps over which the learning rate warms up.", FRACTION)
    decay_fraction: float = _option(0.2, "Fraction of the steps, at the end, over which it decays to zero.", FRACTION)
    random_state: int = _option(
        0,
        "Seed for initialisation, split and shuffling. CPU runs with the same seed and the same number of torch "
        "threads (``torch.set_num_threads``) give identical results; another thread count sums in another order, "
        "and results then agree to about 8 digits (small fits, whose steps train on one thread, are identical "
        "whatever the setting).",
        NON_NEGATIVE,
        cli=("--seed",),
    )
    device: str = _option(
        "auto", '``"auto"`` (a CUDA GPU when PyTorch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.'
    )
    precision: Precision = _option(
        "float32", '``"float32"``, or ``"bfloat16"`` (autocast of the forward pass on a GPU; float32 on the CPU).'
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.generic):  # read back from an h5ad
                value = value.item()
            object.__setattr__(self, f.name, _check(f.name, value, f.metadata["valid"]))
        sizes = isinstance(self.k, int) and isinstance(self.n_features, int)
        if sizes and self.activation != "relu" and self.k >= self.n_features:
            raise ValueError(
                f"k={self.k} with n_features={self.n_features}: k (active features per cell) must be smaller "
                "than n_features; lower k or raise n_features."
            )
        if self.activation == "matryoshka" and self.prefixes != AUTO and isinstance(self.n_features, int):
            prefix_sizes(self.n_features, self.prefixes)  # sizes above n_features fail here, before any training

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """Return the names of the options, in their declared order.

        Examples
        --------
        >>> from cellsae_kit.models import FitConfig
        >>> FitConfig.options()[:3]
        ('n_features', 'activation', 'k')
        """
        return tuple(f.name for f in fields(cls))

    @classmethod
    def make(cls, config: FitConfig | None = None, **options: Any) -> FitConfig:
        """Return ``config`` (default: the defaults) with ``options`` replaced; unknown names get a clear error.

        Examples
        --------
        >>> from cellsae_kit.models import FitConfig
        >>> FitConfig.make(FitConfig(k=4), n_features=32).k
        4
        """
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            raise TypeError(
                f"{', '.join(unknown)} {'is not an option' if len(unknown) == 1 else 'are not options'} of an SAE "
                f"fit; the options are {', '.join(cls.options())}."
            )
        return replace(config or cls(), **options)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FitConfig:
        """Rebuild the config of a stored fit from its ``uns[key]["params"]`` (other entries are ignored).

        Examples
        --------
        >>> from cellsae_kit.models import FitConfig
        >>> FitConfig.from_params({"n_features": 32, "k": 4, "use_rep": "X_pca"}).n_features
        32
        """
        return cls.make(**{name: params[name] for name in cls.options() if name in params})

    def params(self) -> dict[str, Any]:
        """Return the options as a plain dict, as stored in ``uns[key]["params"]`` (``None`` entries left out).

        Examples
        --------
        >>> from cellsae_kit.models import FitConfig
        >>> FitConfig(k=16).params()["k"]
        16
        """
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()
            if value is not None
        }


def _kind(name: str) -> tuple[type | tuple[str, ...], bool, bool]:
    """Return an option's type (or its choices), whether it may be ``None`` and whether ``"auto"``."""
    hint = typing.get_type_hints(FitConfig)[name]
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional, auto = type(None) in args, Auto in args
    rest = [a for a in args if a is not type(None) and a is not Auto]
    if typing.get_origin(rest[0]) is Literal:
        return typing.get_args(rest[0]), optional, auto
    return rest[0], optional, auto


def _check(name: str, value: Any, bounds: tuple | None) -> Any:
    """Check one option against its annotation and range; return it as a plain Python value."""
    kind, optional, auto = _kind(name)
    said_auto = isinstance(value, str) and value == AUTO
    if auto and (said_auto or (value is None and optional)):  # None: the spelling of "auto" before 0.2
        return AUTO
    if value is None and optional:
        return None
    if typing.get_origin(kind) is tuple:  # prefix sizes: a list, tuple or array (read back from an h5ad)
        return check_prefixes(value)
    if isinstance(kind, tuple):
        if value not in kind:
            raise ValueError(f"{name}={value!r} is not known; choose one of {', '.join(map(repr, kind))}.")
        return value
    if kind is str:
        if not isinstance(value, str) and type(value).__name__ != "device":  # a torch.device is fine
            raise TypeError(f"{name}={value!r} must be a string such as 'auto', 'cpu' or 'cuda:0'.")
        if name == "device" and not DEVICE.fullmatch(str(value)):
            raise ValueError(f"device={str(value)!r} is not known; choose 'auto', 'cpu', 'cuda' or 'cuda:N'.")
        return str(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be True or False.")
        return value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int and not (number and isinstance(value, int)):
        example = f" such as {round(value)}" if number and math.isfinite(value) else ""
        raise (ValueError if number else TypeError)(f"{name}={value!r} must be an integer (a whole number{example}).")
    if not number:
        raise TypeError(f"{name}={value!r} must be a number.")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r} must be a finite number.")
    if bounds is not None and not bounds[0](value):
        raise ValueError(f"{name}={value!r} must be {bounds[1]}.")
    return value


def _docs() -> dict[str, str]:
    """Return the numpydoc entry of each option (its name, then the indented paragraph), and all of them."""
    entries = {
        f.name: f"{f.name}\n" + textwrap.fill(f.metadata["doc"], 116, initial_indent=" " * 8, subsequent_indent=" " * 8)
        for f in fields(FitConfig)
    }
    return entries | {"fit_options": "\n    ".join(entries.values())}


# The shared docstring text gets each option's entry, so tl.sae and fit document an option in the same words.
DOCS.update(_docs())
FitConfig.__doc__ = FitConfig.__doc__.format(**DOCS)
