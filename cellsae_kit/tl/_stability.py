"""``tl.stability``: which features come back when the SAE is trained again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from anndata import AnnData
from tqdm.auto import tqdm

from .. import get
from .._docs import doc_params
from ..models import fit
from ._compare import THRESHOLDS, check_thresholds, compare_runs, summarise
from ._input import model_input
from ._shared import check_seeds


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
