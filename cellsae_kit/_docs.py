"""Shared parameter text for numpydoc docstrings (filled in with :func:`doc_params`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

DOCS = {
    "adata": """adata
        Annotated data matrix, cells x genes.""",
    "use_rep": """use_rep
        Input representation: an ``obsm`` key (``"X_pca"``, ``"X_scVI"``, a foundation model's embedding ...) or
        ``"X"`` for the expression matrix itself. ``None`` means ``X`` (or ``layer``).""",
    "layer": """layer
        Train on this layer of expression instead of ``X`` (only with ``use_rep=None`` or ``"X"``).""",
    "key": """key
        Key under which :func:`cellsae_kit.tl.sae` stored the SAE (``uns[key]``, ``obsm["X_<key>"]``).""",
    "key_added": """key_added
        Name of every output: ``obsm["X_<key_added>"]``, ``varm["<key_added>_loadings"]``, ``uns[key_added]``.""",
    "device": """device
        ``"auto"`` (a CUDA GPU when PyTorch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.""",
    "copy": """copy
        Return a modified copy instead of writing into ``adata``.""",
    "show_save": """show
        Show the figure (default: ``scanpy.settings.autoshow``); ``False`` returns the axes.
    save
        Write the figure into ``scanpy.settings.figdir``, as scanpy does: ``True`` names the file after the plot,
        a string is appended to that name and its extension (``".png"``, ``".pdf"``, ``".svg"``) sets the format.""",
    "ax": """ax
        Draw into these axes instead of a new figure.""",
    "return_fig": """return_fig
        Return the figure (or scanpy's plot object) instead of showing it.""",
    "copy_returns": """Returns
    -------
    ``None``, or a copy of ``adata`` with the results when ``copy=True``.""",
}


def doc_params(func: F) -> F:
    """Fill ``{name}`` placeholders of a docstring with the shared text in :data:`DOCS`."""
    if func.__doc__:
        func.__doc__ = func.__doc__.format(**DOCS)
    return func
