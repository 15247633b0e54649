"""Interactive widgets for notebooks (``csk.widgets.FeatureExplorer(adata)``)."""

from __future__ import annotations

__all__ = ["FeatureExplorer"]


def __getattr__(name: str) -> type:
    # ipywidgets is an optional dependency: importing cellsae_kit must work without it.
    if name != "FeatureExplorer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from ._explorer import FeatureExplorer
    except ModuleNotFoundError as error:
        if error.name != "ipywidgets":
            raise
        raise ImportError(
            "FeatureExplorer needs ipywidgets (and a Jupyter notebook to show it): pip install 'ipywidgets>=8'."
        ) from error
    return FeatureExplorer
