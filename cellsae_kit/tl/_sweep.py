"""``tl.sae_sweep`` and ``tl.stability_sweep``: train a grid of settings over seeds and compare them."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .. import get
from .._docs import doc_params
from ..models import FitConfig, fit, resolve
from ._compare import THRESHOLDS, check_thresholds, compare_runs, summarise
from ._input import get_input
from ._shared import Truth, check_seeds, correlations, get_truth


def _one_run(X: Any, setting: dict, seed: int, truth: np.ndarray | None, fit_kwargs: dict, threads: int) -> dict:
    """Train one SAE of the grid; what the sweep keeps of it (small enough to send back from a worker)."""
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    result = fit(X, random_state=seed, progress=False, **setting, **fit_kwargs)
    run = {
        "decoder": result.model.W_dec.detach().cpu().numpy(),
        "codes": result.codes,
        "metrics": result.metrics,
        "params": result.params,
        "seconds": time.perf_counter() - started,
    }
    if truth is not None:
        best = np.abs(np.nan_to_num(correlations(result.codes, truth))).max(axis=0)
        run["median_best_abs_r"] = float(np.median(best))
    return run


def sweep_runs(
    X: Any,
    settings: Sequence[dict[str, Any]],
    *,
    n_seeds: int = 3,
    random_state: int = 0,
    thresholds: Sequence[float] = THRESHOLDS,
    truth: np.ndarray | None = None,
    n_jobs: int = 1,
    progress: bool = True,
    **fit_kwargs: Any,
) -> pd.DataFrame:
    """Train ``n_seeds`` SAEs for each setting; their agreement and reconstruction error per setting.

    The array core of :func:`sae_sweep` and :func:`stability_sweep`; see :func:`sae_sweep` for the columns.

    Parameters
    ----------
    X
        Cells x input dimensions.
    settings
        Options of :func:`cellsae_kit.models.fit` per setting, e.g. ``[{"n_features": 32, "k": 4}, ...]``.
    n_seeds
        Runs per setting (seeds ``random_state``, ``random_state + 1``, ...).
    random_state
        First seed.
    thresholds
        Cosines at which a matched feature counts as shared.
    truth
        Cells x known variables: adds each run's median best ``|r|`` (``median_best_abs_r``).
    n_jobs
        Runs trained at the same time, in separate processes (joblib); each gets a share of the CPU cores.
    progress
        Show a progress bar over the runs.
    **fit_kwargs
        Options shared by every run.

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.tl._sweep import sweep_runs
    >>> X = np.random.default_rng(0).normal(size=(200, 6)).astype("float32")
    >>> table = sweep_runs(X, [{"n_features": 8}, {"n_features": 16}], n_seeds=2, k=2, n_epochs=2, progress=False)
    >>> table["n_features"].tolist()
    [8, 16]
    """
    n_seeds = check_seeds(n_seeds, "n_seeds")
    thresholds = check_thresholds(thresholds)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or not (n_jobs >= 1 or n_jobs == -1):
        raise ValueError(f"n_jobs={n_jobs!r} must be a whole number of processes (1 or more, or -1 for all cores).")
    n_jobs = (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)
    seeds = [random_state + i for i in range(n_seeds)]
    jobs = [(setting, seed) for setting in settings for seed in seeds]
    threads = max(1, torch.get_num_threads() // n_jobs) if n_jobs > 1 else 0
    calls = (delayed(_one_run)(X, setting, seed, truth, fit_kwargs, threads) for setting, seed in jobs)
    runs = Parallel(n_jobs=n_jobs, return_as="generator")(calls)
    runs = list(tqdm(runs, total=len(jobs), desc="training SAEs", unit="run", disable=not progress))
    rows = []
    for i in range(len(settings)):
        group = runs[i * n_seeds : (i + 1) * n_seeds]
        pairs, _ = compare_runs([r["decoder"] for r in group], [r["codes"] for r in group], thresholds=thresholds)
        metrics = pd.DataFrame([r["metrics"] for r in group])
        used = group[0]["params"]
        row = {name: used[name] for name in ("n_features", "k", "activation") if name in used} | summarise(pairs)
        row |= {
            "fvu_train": float(metrics["fvu_train"].mean()),
            "fvu_validation": float(metrics["fvu_validation"].mean()),
            "fvu_validation_sd": float(metrics["fvu_validation"].std(ddof=0)),
            "l0": float(metrics["l0"].mean()),
            "dead_fraction": float(metrics["dead_fraction"].mean()),
            "seconds": float(np.mean([r["seconds"] for r in group])),
        }
        if truth is not None:
            row["median_best_abs_r"] = float(np.mean([r["median_best_abs_r"] for r in group]))
        rows.append(row)
    return pd.DataFrame(rows)


def _params(use_rep: str, layer: str | None, n_seeds: int, random_state: int, sae_kwargs: dict) -> dict:
    """Return what a sweep stores of its call (the options that h5ad can hold)."""
    plain = {name: value for name, value in sae_kwargs.items() if isinstance(value, int | float | str | bool)}
    return {"use_rep": use_rep, "n_seeds": int(n_seeds), "random_state": int(random_state), **plain} | (
        {"layer": layer} if layer else {}
    )


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
    get.check_key(key_added)
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
        [{"n_features": size} for size in check_sizes(n_features)],
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
        "params": _params(data.use_rep, layer, n_seeds, random_state, sae_kwargs)
        | {"thresholds": np.asarray(check_thresholds(thresholds))},
    }
    return adata if copy else None


RECOMMEND_RULE = (
    "the lowest validation FVU among settings whose features are alive (dead fraction <= 0.2); of the settings "
    "within 5% of that FVU, the one whose features come back best with another seed (highest mean matched "
    "decoder cosine), then the smaller dictionary"
)


def recommend(table: pd.DataFrame) -> int:
    """Return the row of the recommended setting of a sweep table (the rule is ``RECOMMEND_RULE``; no truth used).

    Examples
    --------
    >>> import pandas as pd
    >>> from cellsae_kit.tl._sweep import recommend
    >>> table = pd.DataFrame({
    ...     "n_features": [32, 64, 128], "mean_cosine": [0.9, 0.85, 0.5],
    ...     "fvu_validation": [0.30, 0.205, 0.20], "dead_fraction": [0.0, 0.0, 0.0]})
    >>> recommend(table)  # 128 reconstructs a little better, but 64's features come back
    1
    """
    fvu = table["fvu_validation"].fillna(table["fvu_train"]) if "fvu_train" in table else table["fvu_validation"]
    alive = table["dead_fraction"] <= 0.2
    if not alive.any():
        alive = table["dead_fraction"] == table["dead_fraction"].min()
    near = table[alive & (fvu <= fvu[alive].min() * 1.05)]
    return int(near.sort_values(["mean_cosine", "n_features"], ascending=[False, True]).index[0])


def sweep_grid(n_cells: int, n_inputs: int) -> tuple[list[int], list[int]]:
    """Return the default grid of a sweep: half, once and twice the default dictionary, and k at 1/4, 1/2 and 1.

    Examples
    --------
    >>> from cellsae_kit.tl._sweep import sweep_grid
    >>> sweep_grid(700, 50)
    ([32, 64, 128], [2, 4, 8])
    """
    config, _ = resolve(FitConfig(), n_cells, n_inputs)
    sizes = sorted({max(8, config.n_features // 2), config.n_features, 2 * config.n_features})
    ks = sorted({max(1, config.k // 4), max(1, config.k // 2), config.k})
    return sizes, ks


def _grid(values: Sequence | str, default: list, name: str) -> list:
    if isinstance(values, str) and values == "auto":
        return default
    values = [values] if np.isscalar(values) else list(values)
    if not values:
        raise ValueError(f"{name}={values!r} lists no values; pass one or more, or 'auto'.")
    return values


@doc_params
def sae_sweep(
    adata: AnnData,
    use_rep: str | None = None,
    *,
    layer: str | None = None,
    n_features: Sequence[int] | str = "auto",
    k: Sequence[int] | str = "auto",
    activation: Sequence[str] | str = "batchtopk",
    n_seeds: int = 2,
    truth: Truth | None = None,
    refit: bool = True,
    key_added: str = "sae",
    random_state: int = 0,
    n_jobs: int = 1,
    device: str = "auto",
    progress: bool = True,
    copy: bool = False,
    **sae_kwargs: Any,
) -> AnnData | None:
    """Train a grid of SAE settings over several seeds, compare them, and recommend one.

    Answers "how many features, how sparse?" the way cNMF chooses its number of programs: every combination of
    ``n_features``, ``k`` and ``activation`` is trained ``n_seeds`` times with different seeds; each setting gets
    its validation FVU, L0, dead fraction and cross-seed stability (the fraction of features two runs share, as
    in :func:`stability`), and with ``truth`` the recovery of known variables (median best ``|r|``, as in
    :func:`recovery`). The recommended setting follows a rule that never looks at the truth: the lowest
    validation FVU among settings whose features are alive (dead fraction at most 0.2); of the settings within
    5% of that FVU, the one whose features come back best with another seed (highest mean matched decoder
    cosine), then the smaller dictionary. On small data the validation FVU itself rises for dictionaries that
    overfit. Draw the choice with :func:`cellsae_kit.pl.sae_sweep`.

    Parameters
    ----------
    {adata}
    {use_rep}
    {layer}
    n_features
        Dictionary sizes; ``"auto"``: half, once and twice the default of :func:`sae` for these data.
    k
        Active features per cell; ``"auto"``: a quarter, half and all of the default (ignored for ReLU).
    activation
        One or more of ``"batchtopk"``, ``"topk"``, ``"relu"``.
    n_seeds
        Runs per setting (seeds ``random_state``, ``random_state + 1``, ...), at least 2.
    truth
        Known variables to score recovery against: an ``obsm`` key (``"true_programs"`` of
        :func:`cellsae_kit.datasets.simulate`) or a cells x variables array. Reported, never used to choose.
    refit
        Train the recommended setting with :func:`sae` under ``key_added`` (seed ``random_state``).
    {key_added}
        The table goes to ``uns["<key_added>_sweep"]``.
    random_state
        First seed.
    n_jobs
        Runs trained at the same time in separate processes (``-1``: one per CPU core); keep 1 on a GPU.
    {device}
    progress
        Show a progress bar over the runs.
    {copy}
    **sae_kwargs
        Further options of :func:`sae` for every run (``n_epochs``, ``lr``, ...).

    {copy_returns}
    Writes ``uns["<key_added>_sweep"]``: ``sweep``, one row per setting with ``n_features``, ``k``,
    ``activation``, the means over pairs of runs of ``shared_at_<t>``, ``mean_cosine``, ``mean_activation_r``
    and ``activation_shared_at_<t>``, the means over runs of ``fvu_train``, ``fvu_validation`` (and its standard
    deviation), ``l0``, ``dead_fraction``, ``seconds`` and, with ``truth``, ``median_best_abs_r``, and
    ``recommended`` (one ``True``); ``rule`` (the rule in words) and ``params``. With ``refit``, also what
    :func:`sae` writes under ``key_added``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae_sweep(adata, "X_pca", n_features=[16, 32], k=[2, 4], n_epochs=5, progress=False)
    >>> table = adata.uns["sae_sweep"]["sweep"]
    >>> table.shape[0], int(table["recommended"].sum())
    (4, 1)
    >>> adata.uns["sae"]["params"]["n_features"] in (16, 32)
    True
    """
    get.check_key(key_added)
    data = get_input(adata, use_rep, layer)
    unknown = set(sae_kwargs) - set(FitConfig.options()) - {"loadings"}
    if unknown:
        raise TypeError(
            f"sae_sweep got {', '.join(sorted(unknown))}, which tl.sae does not take; the options are "
            f"{', '.join(FitConfig.options())}."
        )
    truth_values = None if truth is None else get_truth(adata, truth)[0]
    sizes, ks = sweep_grid(*data.X.shape)
    sizes = check_sizes(_grid(n_features, sizes, "n_features"))
    ks = _grid(k, ks, "k")
    activations = _grid(activation, ["batchtopk"], "activation")
    settings = []
    for act in activations:
        for size in sizes:
            for k_ in [None] if act == "relu" else ks:
                setting = {"n_features": size, "activation": act} | ({} if k_ is None else {"k": k_})
                if k_ is None or k_ < size:
                    FitConfig.make(**setting)  # a bad value fails here, before any training
                    settings.append(setting)
    if not settings:
        raise ValueError(f"No setting of the grid has k < n_features (n_features={sizes}, k={ks}); lower k.")
    fit_kwargs = {name: value for name, value in sae_kwargs.items() if name != "loadings"}
    table = sweep_runs(
        data.X,
        settings,
        n_seeds=n_seeds,
        random_state=random_state,
        truth=truth_values,
        n_jobs=n_jobs,
        progress=progress,
        device=device,
        input_name=data.name,
        **fit_kwargs,
    )
    chosen = recommend(table)
    table["recommended"] = table.index == chosen
    from .. import tl  # the public tool (importing it at the top would be circular)

    target = adata.copy() if copy else adata
    if refit:
        tl.sae(
            target,
            use_rep,
            layer=layer,
            key_added=key_added,
            random_state=random_state,
            device=device,
            progress=progress,
            **settings[chosen],
            **sae_kwargs,
        )
    target.uns[f"{key_added}_sweep"] = {
        "sweep": table,
        "rule": RECOMMEND_RULE,
        "params": _params(data.use_rep, layer, n_seeds, random_state, sae_kwargs)
        | ({"truth": truth} if isinstance(truth, str) else {}),
    }
    return target if copy else None
