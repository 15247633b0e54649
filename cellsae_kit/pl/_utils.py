"""Shared pieces of the plots: scanpy's show/save/return_fig rules, the stored tables, short term labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..tl._input import check_adata

# Panel titles of about this many characters fit over a scanpy embedding panel at the default size.
TITLE_WIDTH = 34
FIGURE_EXTENSIONS = (".png", ".pdf", ".svg")


def term_label(term: object, width: int = TITLE_WIDTH, max_lines: int = 1) -> str:
    """Shorten a gene-set name to at most ``max_lines`` lines of ``width`` characters, ending in "…" when cut.

    Examples
    --------
    >>> from cellsae_kit.pl._utils import term_label
    >>> term_label("regulation of B cell receptor signaling pathway", width=30)
    'regulation of B cell receptor…'
    >>> print(term_label("regulation of B cell receptor signaling pathway", width=30, max_lines=2))
    regulation of B cell receptor
    signaling pathway
    """
    text = " ".join(str(term).split())
    lines = textwrap.wrap(text, width=width, break_long_words=True, break_on_hyphens=False)
    if len(lines) <= max_lines:
        return "\n".join(lines)
    kept = lines[:max_lines]
    kept[-1] = kept[-1][: width - 1].rstrip(" ,;:") + "…"
    return "\n".join(kept)


def sae_entry(adata: AnnData, key: str) -> dict:
    """Return ``uns[key]`` of a trained SAE; a clear error naming ``tl.sae`` when it is missing."""
    check_adata(adata)
    entry = adata.uns.get(key)
    if not isinstance(entry, dict) or "params" not in entry:
        trained = [k for k, v in adata.uns.items() if isinstance(v, dict) and {"params", "weights"} <= set(v)]
        hint = f" SAEs found: {', '.join(map(repr, trained))}." if trained else " Run cellsae_kit.tl.sae first."
        raise KeyError(f"adata.uns has no SAE under key={key!r}.{hint}")
    return entry


def feature_table(adata: AnnData, key: str) -> pd.DataFrame:
    """Return the feature table ``uns[key]["features"]``; a clear error naming ``tl.feature_stats`` when missing."""
    table = sae_entry(adata, key).get("features")
    if not isinstance(table, pd.DataFrame):
        raise KeyError(
            f"uns[{key!r}] has no feature table ('features'); run cellsae_kit.tl.feature_stats(adata, key={key!r}) "
            "first (with groupby= to see locality)."
        )
    return table


def best_terms(adata: AnnData, key: str) -> dict[int, str]:
    """Best term of each annotated feature, by feature number; empty when ``tl.annotate_features`` has not run."""
    entry = adata.uns.get(key)
    table = entry.get("features") if isinstance(entry, dict) else None
    if not isinstance(table, pd.DataFrame) or "best_term" not in table:
        return {}
    named = table["best_term"].dropna()
    return {int(feature): str(term) for feature, term in named.items()}


def feature_title(feature: int, terms: dict[int, str], width: int = TITLE_WIDTH, max_lines: int = 2) -> str:
    """``"feature 17"``, with its best term (at most ``max_lines`` lines) below when it has one."""
    title = f"feature {feature}"
    return f"{title}\n{term_label(terms[feature], width, max_lines)}" if feature in terms else title


def feature_number(feature: object, n_features: int, key: str) -> int:
    """Check one feature number (``17`` or ``"17"``) against the SAE's features."""
    valid = f"the SAE under key={key!r} has features 0-{n_features - 1}"
    if isinstance(feature, bool | np.bool_) or not isinstance(feature, int | np.integer | str):
        raise TypeError(f"Feature {feature!r} is not a feature number; {valid}.")
    try:
        index = int(feature)
    except ValueError:
        raise ValueError(f"Feature {feature!r} is not a feature number; {valid}.") from None
    if not 0 <= index < n_features:
        raise ValueError(f"Feature {index} does not exist: {valid}.")
    return index


def finish(
    fig: Figure,
    axes: Axes | list[Axes],
    *,
    name: str,
    show: bool | None,
    save: str | bool | None,
    return_fig: bool,
) -> Figure | Axes | list[Axes] | None:
    """End a plot as scanpy does: save, then return the figure, show it, or return the axes.

    ``save=True`` writes ``<sc.settings.figdir>/<name>.<sc.settings.file_format_figs>``; a string is appended to
    ``name`` (``save="_b_cells.png"`` writes ``<name>_b_cells.png``), its extension choosing the format.
    """
    if save:
        suffix, ext = ("", sc.settings.file_format_figs) if save is True else (str(save), None)
        for candidate in FIGURE_EXTENSIONS:
            if suffix.endswith(candidate):
                suffix, ext = suffix[: -len(candidate)], candidate[1:]
                break
        figdir = Path(sc.settings.figdir)
        figdir.mkdir(parents=True, exist_ok=True)
        path = figdir / f"{name}{suffix}{sc.settings.plot_suffix}.{ext or sc.settings.file_format_figs}"
        fig.savefig(path, bbox_inches="tight")  # at rcParams["savefig.dpi"], which set_figure_params sets
    if return_fig:
        return fig
    show = sc.settings.autoshow if show is None else show
    if show:
        plt.show()
    if save:
        plt.close(fig)
    return None if show else axes
