"""``tl.stability`` and ``tl.stability_sweep``: which features come back when the SAE is trained again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from tqdm.auto import tqdm

from .. import get
from .._docs import doc_params
from ..models import FitConfig, fit
from ._input import get_input, model_input
from ._shared import Match, check_seeds, correlations, hungarian, match_features

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
    >>> from cellsae_kit.tl._stability import activation_correlations
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
    >>> from cellsae_kit.tl._stability import match_activations
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
    >>> from cellsae_kit.tl._stability import compare_runs
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


def _run_of(adata: AnnData, key: str) -> dict:
    """Read the input, decoder and activations of the SAE under ``key``; clear errors when incomplete."""
    stored = get.sae(adata, key)
    return {
        "key": key,
        "decoder": stored.decoder,
        "codes": stored.codes,
        "use_rep": stored.use_rep,
        "layer": stored.layer,
        "n_inputs": stored.n_inputs,
    }


def _describe(run: dict) -> str:
    layer = f", layer {run['layer']!r}" if run["layer"] else ""
    return f"{run['key']!r} ({run['use_rep']}{layer}, {run['n_inputs']} dimensions)"


def _check_same_input(runs: list[dict]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if (run["n_inputs"], run["use_rep"], run["layer"]) != (first["n_inputs"], first["use_rep"], first["layer"]):
            raise ValueError(
                f"The SAEs {_describe(first)} and {_describe(run)} were trained on different inputs; stability "
                "compares runs on the same representation. Pass keys of SAEs trained with the same use_rep."
            )


def _retrain(adata: AnnData, key: str, seeds: list[int], device: str, progress: bool) -> list[dict]:
    """Train the SAE under ``key`` again with its stored options and other seeds."""
    stored = get.sae(adata, key)
    if "consensus" in stored.params:
        raise ValueError(
            f"The SAE under {key!r} is a consensus SAE (its decoder was held at the consensus), so training it again "
            "with other seeds would not repeat it. Compare it with another consensus SAE or stored runs: "
            "stability(adata, keys=[...], key=...)."
        )
    data, X = model_input(
        adata,
        stored.model,
        f"the SAE under {key!r}",
        "it cannot be trained again on this object. Compare stored runs with keys= instead.",
    )
    config = replace(stored.config, device=device)
    runs = []
    for seed in tqdm(seeds, desc="training SAEs", unit="seed", disable=not progress):
        result = fit(X, replace(config, random_state=seed), progress=False, input_name=data.name)
        decoder = result.model.W_dec.detach().cpu().numpy()
        runs.append({"key": f"seed {seed}", "decoder": decoder, "codes": result.codes})
    return runs


@doc_params
def stability(
    adata: AnnData,
    keys: Sequence[str] | str | None = None,
    *,
    key: str = "sae",
    n_seeds: int = 5,
    thresholds: Sequence[float] = THRESHOLDS,
    activations: bool = True,
    device: str = "auto",
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """How reproducible the features of an SAE are: match them with the features of other training runs.

    SAEs trained on the same cells with different seeds learn partly different features. Each pair of runs is
    matched one-to-one by the direction of the decoder rows (Hungarian assignment on cosine similarity, as in
    Paulo & Belrose 2025); a feature found again at cosine >= 0.9 is the same direction in the representation.
    The same is done in cell space: the activations of matched features are correlated over the cells, and the
    features are matched a second time on that correlation.

    Either compare SAEs already stored (``keys``, each trained by :func:`cellsae_kit.tl.sae` or
    :func:`cellsae_kit.tl.consensus` on the same input), or let the function train ``n_seeds - 1`` more runs
    with the stored parameters of the SAE under ``key`` and the seeds 0, 1, 2, ... other than its own (these
    runs are not stored).

    Parameters
    ----------
    {adata}
    keys
        Keys of stored SAEs to compare with the one under ``key`` (which is added when missing). ``None``:
        train new runs.
    {key}
        Its features are scored and the summary is written under it.
    n_seeds
        Number of runs in all, the stored one included, when ``keys`` is ``None``.
    thresholds
        Cosines (and activation correlations) at which a matched feature counts as shared.
    activations
        Also compare the activations (cell-space agreement).
    {device}
        Used when training new runs.
    progress
        Show a progress bar over the new runs.
    {copy}

    {copy_returns}
    Writes

    - ``uns[key]["features"]["stability"]``: for each feature, the mean over the other runs of the cosine with
      its matched feature (1: found again in every run, exactly); with ``activations``, ``stability_activation``,
      the mean Pearson r of its activations with those of the same matched features. The feature table of
      :func:`cellsae_kit.tl.feature_stats` is extended, or created with these columns alone;
    - ``uns[key]["stability"]``: ``shared_at_<t>`` (the fraction of features matched at cosine >= t, averaged
      over pairs of runs), ``mean_cosine``, ``mean_activation_r`` and ``activation_shared_at_<t>`` (the
      fraction matched at r >= t when matching on activations); ``pairs``, the same numbers for each pair of
      runs; ``runs``, the runs compared (new runs are named ``"seed <n>"``) and ``thresholds``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=32, k=4, n_epochs=5, progress=False)
    >>> csk.tl.stability(adata, n_seeds=3, progress=False)
    >>> adata.uns["sae"]["stability"]["pairs"].shape[0], adata.uns["sae"]["features"]["stability"].shape
    (3, (32,))
    """
    get.check_adata(adata, mudata=True)
    thresholds = check_thresholds(thresholds)
    reference = _run_of(adata, key)
    if keys is None:
        n_seeds = check_seeds(n_seeds, "n_seeds")
        own = int(get.sae(adata, key).params.get("random_state", -1))
        seeds = [s for s in range(n_seeds) if s != own][: n_seeds - 1]
        others = _retrain(adata, key, seeds, device, progress)
        settings = {"seeds": np.asarray(seeds, dtype=np.int64)}
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        if len(set(keys)) != len(keys):
            raise ValueError(f"keys={keys!r} lists an SAE twice; name each run once.")
        others = [_run_of(adata, k) for k in keys if k != key]
        if not others:
            raise ValueError(
                f"keys={keys!r} names no SAE besides key={key!r}; give at least one other run to compare with, or "
                "keys=None to train new runs."
            )
        _check_same_input([reference, *others])
        settings = {}
    runs = [reference, *others]
    pairs, features = compare_runs(
        [run["decoder"] for run in runs],
        [run["codes"] for run in runs] if activations else None,
        names=[run["key"] for run in runs],
        thresholds=thresholds,
    )

    adata = adata.copy() if copy else adata
    get.sae(adata, key).add_features(features)
    adata.uns[key]["stability"] = summarise(pairs) | {
        "pairs": pairs,
        "runs": np.asarray([run["key"] for run in runs], dtype=object),
        "thresholds": np.asarray(thresholds),
        **settings,
    }
    return adata if copy else None


def sweep_runs(
    X: Any,
    sizes: Sequence[int],
    *,
    n_seeds: int = 3,
    random_state: int = 0,
    thresholds: Sequence[float] = THRESHOLDS,
    progress: bool = True,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Train ``n_seeds`` SAEs for each dictionary size; their agreement and reconstruction error per size.

    The array core of :func:`stability_sweep`; see there for the columns.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._stability import sweep_runs
    >>> X = np.random.default_rng(0).normal(size=(200, 6)).astype("float32")
    >>> sweep_runs(X, [8, 16], n_seeds=2, k=2, n_epochs=2, progress=False)["n_features"].tolist()
    [8, 16]
    """
    sizes = check_sizes(sizes)
    n_seeds = check_seeds(n_seeds, "n_seeds")
    thresholds = check_thresholds(thresholds)
    seeds = [random_state + i for i in range(n_seeds)]
    rows = []
    bar = tqdm(total=len(sizes) * n_seeds, desc="training SAEs", unit="run", disable=not progress)
    for size in sizes:
        results = []
        for seed in seeds:
            results.append(fit(X, n_features=size, random_state=seed, progress=False, **fit_kwargs))
            bar.update()
        pairs, features = compare_runs(
            [r.model.W_dec.detach().cpu().numpy() for r in results],
            [r.codes for r in results],
            thresholds=thresholds,
        )
        metrics = pd.DataFrame([r.metrics for r in results])
        rows.append(
            {"n_features": size}
            | summarise(pairs)
            | {
                "fvu_train": float(metrics["fvu_train"].mean()),
                "fvu_validation": float(metrics["fvu_validation"].mean()),
                "fvu_validation_sd": float(metrics["fvu_validation"].std(ddof=0)),
                "l0": float(metrics["l0"].mean()),
                "dead_fraction": float(metrics["dead_fraction"].mean()),
            }
        )
    bar.close()
    return pd.DataFrame(rows)


def check_sizes(sizes: Sequence[int]) -> list[int]:
    """Check dictionary sizes: distinct positive integers, returned in increasing order."""
    values = [sizes] if np.isscalar(sizes) else list(sizes)
    if not values or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in values):
        raise ValueError(f"n_features={sizes!r} must be one or more positive integers, such as [32, 64, 128].")
    if len(set(values)) != len(values):
        raise ValueError(f"n_features={sizes!r} lists a size twice.")
    return sorted(int(s) for s in values)


@doc_params
def stability_sweep(
    adata: AnnData,
    use_rep: str | None = None,
    n_features: Sequence[int] = (32, 64, 128, 256),
    *,
    layer: str | None = None,
    n_seeds: int = 3,
    thresholds: Sequence[float] = THRESHOLDS,
    key_added: str = "stability_sweep",
    random_state: int = 0,
    device: str = "auto",
    progress: bool = True,
    copy: bool = False,
    **sae_kwargs: Any,
) -> AnnData | None:
    """Choose a dictionary size: how reproducible the features are, and how well they reconstruct, per size.

    Like the choice of K in consensus NMF (cNMF), where stability and error are plotted against the number of
    programs: for every size, ``n_seeds`` SAEs are trained with different seeds and compared as in
    :func:`stability`. A size where the fraction of shared features drops while the error hardly improves is
    larger than the data supports. Draw it with :func:`cellsae_kit.pl.stability`; then train the chosen size
    with :func:`cellsae_kit.tl.sae` or :func:`cellsae_kit.tl.consensus`. Nothing but the table is stored.

    Parameters
    ----------
    {adata}
    {use_rep}
    n_features
        Dictionary sizes to try.
    {layer}
    n_seeds
        Runs per size (seeds ``random_state``, ``random_state + 1``, ...).
    thresholds
        Cosines at which a matched feature counts as shared.
    key_added
        The table is written into ``uns[key_added]``.
    random_state
        First seed.
    {device}
    progress
        Show a progress bar over the runs.
    {copy}
    **sae_kwargs
        Options of :func:`cellsae_kit.tl.sae` for every run (``k``, ``activation``, ``n_epochs``, ...).

    {copy_returns}
    Writes ``uns[key_added]``: ``sweep``, one row per size with the means over pairs of runs of
    ``shared_at_<t>``, ``mean_cosine``, ``mean_activation_r`` and ``activation_shared_at_<t>`` (see
    :func:`stability`), and the means over runs of ``fvu_train``, ``fvu_validation`` (with its standard
    deviation ``fvu_validation_sd``), ``l0`` and ``dead_fraction``; and ``params``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.stability_sweep(adata, "X_pca", [16, 32], n_seeds=2, k=4, n_epochs=5, progress=False)
    >>> adata.uns["stability_sweep"]["sweep"]["n_features"].tolist()
    [16, 32]
    """
    data = get_input(adata, use_rep, layer)
    for name in ("n_features", "random_state", "key_added", "copy"):
        if name in sae_kwargs:
            raise TypeError(f"{name} is an argument of stability_sweep itself; pass it once.")
    options = set(FitConfig.options()) - {"n_features", "random_state", "device"}
    unknown = set(sae_kwargs) - options - {"loadings"}
    if unknown:
        raise TypeError(
            f"stability_sweep got {', '.join(sorted(unknown))}, which tl.sae does not take for training; the options "
            f"are {', '.join(sorted(options))}."
        )
    # a sweep stores no gene loadings, so loadings= (which tl.sae accepts) has nothing to do here
    sae_kwargs = {name: value for name, value in sae_kwargs.items() if name != "loadings"}
    table = sweep_runs(
        data.X,
        n_features,
        n_seeds=n_seeds,
        random_state=random_state,
        thresholds=thresholds,
        progress=progress,
        device=device,
        input_name=data.name,
        **sae_kwargs,
    )
    adata = adata.copy() if copy else adata
    adata.uns[key_added] = {
        "sweep": table,
        "params": {
            "use_rep": data.use_rep,
            "n_seeds": int(n_seeds),
            "random_state": int(random_state),
            "thresholds": np.asarray(check_thresholds(thresholds)),
            **{name: value for name, value in sae_kwargs.items() if isinstance(value, int | float | str | bool)},
        }
        | ({"layer": layer} if layer else {}),
    }
    return adata if copy else None
