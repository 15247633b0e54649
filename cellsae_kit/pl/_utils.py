"""Shared pieces of the plots: scanpy's show/save/return_fig rules, the best terms, short term labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import scanpy as sc
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import get

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


def best_terms(adata: AnnData, key: str) -> dict[int, str]:
    """Best term of each annotated feature, by feature number; empty without an SAE under ``key`` or an annotation.

    Activations can be drawn without a stored SAE (only ``obsm["X_<key>"]``), so a missing SAE is no error here.
    """
    try:
        stored = get.sae(adata, key)
    except KeyError:
        return {}
    return stored.best_terms()


def feature_title(feature: int, terms: dict[int, str], width: int = TITLE_WIDTH, max_lines: int = 2) -> str:
    """``"feature 17"``, with its best term (at most ``max_lines`` lines) below when it has one."""
    title = f"feature {feature}"
    return f"{title}\n{term_label(terms[feature], width, max_lines)}" if feature in terms else title


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
