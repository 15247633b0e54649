"""Comparing SAE runs: matching their features by decoder cosine and by activation, and summarising the pairs.

Shared by ``tl.stability`` and the sweeps (``tl.stability_sweep``, ``tl.sae_sweep``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ._shared import Match, correlations, hungarian, match_features

THRESHOLDS = (0.7, 0.9)


def activation_correlations(codes_a: np.ndarray | sparse.spmatrix, codes_b: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Pearson r between every feature of ``codes_a`` and every feature of ``codes_b`` over the same cells.

    Sparse activations stay sparse (their cross-product is a sparse product); a feature that is constant over
    the cells (a dead one) has r = 0 with everything.

    Parameters
    ----------
    codes_a, codes_b
        Activations, cells x features, of the same cells in the same order.

    Returns
    -------
    Features of ``a`` x features of ``b``, float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._compare import activation_correlations
    >>> codes_a = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    >>> activation_correlations(codes_a, np.array([[2.0], [0.0], [4.0]])).round(2)
    array([[ 1.  ],
           [-0.87]])
    """
    if codes_a.shape[0] != codes_b.shape[0]:
        raise ValueError(
            f"The activations cover {codes_a.shape[0]} and {codes_b.shape[0]} cells; compare runs on the same cells."
        )
    return correlations(codes_a, codes_b)


def match_activations(codes_a: np.ndarray | sparse.spmatrix, codes_b: np.ndarray | sparse.spmatrix) -> Match:
    """Match the features of two SAEs by the correlation of their activations over the same cells (Hungarian).

    The cell-space counterpart of :func:`match_features`: two features agree when they fire in the same cells,
    whatever their directions.

    Parameters
    ----------
    codes_a, codes_b
        Activations, cells x features, of the same cells.

    Returns
    -------
    The matched pairs and their Pearson r (:class:`Match`).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._compare import match_activations
    >>> codes = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    >>> match_activations(codes, codes[:, ::-1]).b
    array([1, 0])
    """
    return hungarian(activation_correlations(codes_a, codes_b))


def shared_column(threshold: float, activation: bool = False) -> str:
    """Name of the column with the fraction of features shared at ``threshold`` (``"shared_at_0.9"``)."""
    return f"{'activation_' if activation else ''}shared_at_{threshold:g}"


def compare_runs(
    decoders: Sequence[np.ndarray],
    codes: Sequence[np.ndarray | sparse.spmatrix] | None = None,
    *,
    names: Sequence[str] | None = None,
    reference: int = 0,
    thresholds: Sequence[float] = THRESHOLDS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare every pair of runs, and score each feature of the reference run (the array core of :func:`stability`).

    Parameters
    ----------
    decoders
        Decoder matrices of the runs (features x input dimensions).
    codes
        Their activations over the same cells, to compare in cell space too.
    names
        Names of the runs (default ``"0"``, ``"1"``, ...).
    reference
        The run whose features are scored.
    thresholds
        Cosines (and correlations) at which a matched feature counts as shared.

    Returns
    -------
    One row per pair of runs: ``run_a``, ``run_b``, ``mean_cosine`` of the matched features and
    ``shared_at_<t>``, the fraction of the smaller dictionary's features matched at cosine >= t; with
    ``codes`` also ``mean_activation_r`` (activation correlation of the same pairs) and
    ``activation_shared_at_<t>`` (fraction matched at r >= t when matching on activations instead). Then one
    row per feature of the reference: ``stability``, its mean matched cosine over the other runs (0 where a
    smaller run leaves it unmatched), and with ``codes`` ``stability_activation``, the mean correlation of its
    activations with those of the same partners.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._compare import compare_runs
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(4, 50))
    >>> pairs, features = compare_runs([W, W[::-1], rng.normal(size=(4, 50))])
    >>> pairs[["run_a", "run_b", "shared_at_0.9"]]
      run_a run_b  shared_at_0.9
    0     0     1            1.0
    1     0     2            0.0
    2     1     2            0.0
    >>> features["stability"].round(2).tolist()  # cosine 1 with run 1, low with run 2: about 0.5
    [0.45, 0.5, 0.53, 0.52]
    """
    n_runs = len(decoders)
    names = [str(i) for i in range(n_runs)] if names is None else [str(n) for n in names]
    if n_runs < 2 or len(names) != n_runs or (codes is not None and len(codes) != n_runs):
        raise ValueError(f"Need at least two runs with one name (and activation matrix) each; got {n_runs} runs.")
    thresholds = check_thresholds(thresholds)
    rows = []
    n_ref = np.shape(decoders[reference])[0]
    cosines, correlations = [], []
    for i in range(n_runs):
        for j in range(i + 1, n_runs):
            match = match_features(decoders[i], decoders[j])
            row = {"run_a": names[i], "run_b": names[j], "mean_cosine": float(match.score.mean())}
            n_pairs = len(match.a)
            row |= {shared_column(t): float(np.sum(match.score >= t) / n_pairs) for t in thresholds}
            if codes is not None:
                r = activation_correlations(codes[i], codes[j])
                row["mean_activation_r"] = float(r[match.a, match.b].mean())
                by_activation = hungarian(r)
                row |= {shared_column(t, True): float(np.sum(by_activation.score >= t) / n_pairs) for t in thresholds}
            rows.append(row)
            if reference in (i, j):
                ours, theirs = (match.a, match.b) if reference == i else (match.b, match.a)
                cosine = np.zeros(n_ref)
                cosine[ours] = match.score
                cosines.append(cosine)
                if codes is not None:
                    agreement = np.zeros(n_ref)
                    agreement[ours] = r[match.a, match.b]
                    correlations.append(agreement)
    features = pd.DataFrame(
        {"stability": np.mean(cosines, axis=0)}, index=pd.Index([str(f) for f in range(n_ref)], name="feature")
    )
    if codes is not None:
        features["stability_activation"] = np.mean(correlations, axis=0)
    return pd.DataFrame(rows), features


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Check similarity thresholds: one or more numbers in (-1, 1]."""
    values = (thresholds,) if np.isscalar(thresholds) else tuple(thresholds)
    numbers = all(isinstance(t, int | float | np.number) and not isinstance(t, bool | np.bool_) for t in values)
    if not values or not numbers or not all(-1 < float(t) <= 1 for t in values):
        raise ValueError(f"thresholds={thresholds!r} must be cosines between -1 and 1, such as (0.7, 0.9).")
    return tuple(float(t) for t in values)


def summarise(pairs: pd.DataFrame) -> dict[str, float]:
    """Mean over pairs of runs of every numeric column of a pairs table."""
    return {name: float(pairs[name].mean()) for name in pairs.columns if name not in ("run_a", "run_b")}
