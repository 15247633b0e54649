"""Shared parameter text for numpydoc docstrings (filled in with :func:`doc_params`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

DOCS = {
    "adata": """adata
        Annotated data matrix, cells x genes (or a :class:`mudata.MuData` with several modalities).""",
    "use_rep": """use_rep
        Input representation: an ``obsm`` key (``"X_pca"``, ``"X_scVI"``, a foundation model's embedding ...) or
        ``"X"`` for the expression matrix itself. ``None`` means ``X`` (or ``layer``). For a MuData: a joint
        representation in its ``obsm`` (``"X_mofa"``, ``"X_joint"`` from :func:`cellsae_kit.tl.joint_embedding`) or
        ``"<modality>:<key>"`` such as ``"rna:X_pca"`` (``"rna:X"`` for the modality's expression).""",
    "mod": """mod
        For a MuData, the modality whose genes, peaks or proteins to use (``"rna"``, ``"atac"``, ``"prot"``);
        default: the only modality holding ``varm["<key>_loadings"]``.""",
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
    "download": """path
        A copy of the file on disk (the ``.h5ad.gz`` from GEO, or the decompressed ``.h5ad``); nothing is
        downloaded. A ``.h5ad.gz`` is decompressed into a temporary file in the cache folder on every call: pass
        the ``.h5ad`` to save that time.
    cache_dir
        Folder for downloads; default: the environment variable ``CELLSAE_KIT_DATA``, else the platform's cache
        folder (``~/.cache/cellsae_kit`` on Linux). The file is downloaded once and decompressed there, and its
        SHA256 is recorded next to it (``<file>.sha256.json``); every later load checks the file against it.
        Set ``CELLSAE_KIT_BASE_URL`` to download from a mirror of the GEO folder.
    progress
        Show progress bars for the download, decompression and checksum.""",
    "plot_returns": """Returns
    -------
    The figure with ``return_fig=True``, the axes when ``show=False``, else ``None``.""",
    "copy_returns": """Returns
    -------
    ``None``, or a copy of ``adata`` with the results when ``copy=True``.""",
}


def doc_params(func: F) -> F:
    """Fill ``{name}`` placeholders of a docstring with the shared text in :data:`DOCS`."""
    if func.__doc__:
        func.__doc__ = func.__doc__.format(**DOCS)
    return func
