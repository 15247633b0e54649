"""``tl.sae``: train a sparse autoencoder on a representation of the cells and store it the scverse way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anndata import AnnData

from .. import get
from .._docs import doc_params
from ..models import FitConfig, fit
from ._input import get_input
from ._store import find_maps, store_fit
from ._stream import is_streamed, open_streamed
from ._write import check_output, is_writer, write_fit


@doc_params
def sae(
    adata: AnnData | str | Path,
    use_rep: str | None = None,
    *,
    layer: str | None = None,
    n_features: int | str = "auto",
    k: int | str = "auto",
    activation: str = "auto",
    l1_coef: float = 0.05,
    n_epochs: int | str | None = "auto",
    batch_size: int | str = "auto",
    lr: float | str | None = "auto",
    validation_fraction: float | str = "auto",
    loadings: str | None = None,
    key_added: str = "sae",
    random_state: int = 0,
    device: str = "auto",
    precision: str = "float32",
    progress: bool = True,
    copy: bool = False,
    chunk_size: int | None = None,
    write_to: str | Path | None = None,
    overwrite: bool = False,
    **fit_kwargs: Any,
) -> AnnData | None:
    """Train a sparse autoencoder (SAE) on a representation of the cells.

    An SAE rewrites each cell as a few active *features* out of a large dictionary; each feature is a direction
    in the representation (and, through a linear map, a gene program). Training uses the modern recipes:
    centring on the data mean, unit-norm decoder rows, AuxK and resampling against dead features, a learning
    rate scaled to the dictionary size with warm-up and decay, and the best epoch on held-out cells kept.

    The defaults (``"auto"``) are derived from the number of cells and the input dimension ``d``
    (:func:`cellsae_kit.models.resolve`; the table they come from is written by ``benchmarks/defaults.py``): a
    BatchTopK SAE with ``k = min(32, d / 2)`` active features per cell and a dictionary of ``8 k`` features, both
    made smaller when there are fewer than 8 training cells per feature, and fewer features for an input of
    under ~25 dimensions (at most ``d^2 / 8``); batches of about 1/32 of the cells (32 to 1024); 4,000 steps (2
    to 300 epochs) at a learning rate of ``4e-3`` (lower above 256 features and above 150 input dimensions)
    without early stopping; a validation set of 10% of the cells but at least 50. The chosen values are stored in
    ``uns[key]["params"]`` and the rule of each in ``uns[key]["params"]["rules"]``. An explicit value is used as
    given, with a warning when it does not fit the data (``k`` at or above the input dimension, more features
    than training cells, a validation set of a handful of cells, thousands of epochs).
    :func:`cellsae_kit.tl.sae_sweep` compares settings when the defaults are in doubt.

    Data larger than memory is streamed from disk: pass an AnnData opened with
    ``scanpy.read_h5ad(path, backed="r")`` (anndata keeps its ``X`` on disk) or the path of an ``.h5ad`` file or a
    ``.zarr`` store (then the input stays on disk whichever it is). Minibatches come from contiguous chunks of
    cells read in a shuffled order (see :class:`cellsae_kit.models.ChunkedRows`), and the activations are encoded
    chunk by chunk into a CSR matrix in memory (a few values per cell). A path returns a new AnnData holding the
    file's ``obs``, ``var`` and ``varm`` and the results; save it with ``write_h5ad``. With ``write_to``, the
    activations are not held at all but written block by block into a new file, so that memory stays flat in the
    number of cells. For several GPUs or nodes use ``torchrun ... -m cellsae_kit.train`` (see the README).

    Parameters
    ----------
    {adata}
        Or a backed AnnData, or the path of an ``.h5ad`` file or ``.zarr`` store: streamed from disk (see above).
    {use_rep}
    {layer}
    {n_features}
    {k}
    {activation}
    {l1_coef}
    {n_epochs}
    {batch_size}
    {lr}
    {validation_fraction}
    loadings
        ``varm`` key of the genes x dimensions map of ``use_rep`` (for example ``"PCs"`` for ``"X_pca"``), used to
        express features as gene loadings. By default it is looked up (``PCs`` for PCA, a ``varm`` entry named
        like ``use_rep``); representations without one (scVI, foundation models) get no ``varm`` entry.
    {key_added}
    {random_state}
    {device}
    {precision}
    progress
        Show a progress bar.
    {copy}
    chunk_size
        Cells per chunk read from disk when the input is streamed (default: at most 8192).
    write_to
        Write the results into this new ``.h5ad`` file or ``.zarr`` store instead of an AnnData in memory: the
        cells' ``obs``, the input's ``var`` and ``varm``, and what is listed under *Writes* below, with
        ``obsm["X_<key_added>"]`` appended a block of encoded cells at a time (never held whole; a progress bar
        shows it). The file holds what ``write_h5ad`` / ``write_zarr`` of the results in memory would (read it
        with ``scanpy.read_h5ad`` or ``anndata.read_zarr``, then :func:`cellsae_kit.get.sae`), but not the input
        data itself (``X``, ``layers``, other ``obsm`` entries). It appears complete or not at all (written under
        a temporary name, renamed at the end). ``adata`` is left unchanged and nothing is returned; under
        ``torchrun`` rank 0 writes. Checked before training: the suffix, an existing file, the folder.
    overwrite
        Replace an existing ``write_to`` (otherwise a ``FileExistsError``).
    **fit_kwargs
        Further options of :class:`cellsae_kit.models.FitConfig` (``center``, ``patience``, ``aux_coef``, ...),
        and ``init_decoder`` / ``freeze_decoder`` of :func:`cellsae_kit.models.fit`.

    {copy_returns}
    ``None`` when ``write_to`` is given.

    Writes

    - ``obsm["X_<key_added>"]``: activations, cells x features (CSR, float32);
    - ``varm["<key_added>_loadings"]``: genes x features, when a linear map to genes exists (expression input,
      or a representation with loadings such as PCA; genes outside the map get zero rows);
    - ``uns[key_added]``: ``params``, ``metrics`` (FVU on train and validation cells, L0, dead and dense
      fractions, maximum decoder cosine), ``history`` (per epoch), ``weights`` (enough to encode new cells with
      :func:`cellsae_kit.tl.encode`), ``validation_indices`` and, for expression input, ``var_names``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import cellsae_kit as csk
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> csk.tl.sae(adata, "X_pca", n_features=64, k=4, n_epochs=20, progress=False)
    >>> adata.obsm["X_sae"].shape, adata.varm["sae_loadings"].shape
    ((700, 64), (765, 64))

    Streamed from a file (a path returns a new AnnData with the results):

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pbmc.h5ad"
    >>> adata.write_h5ad(path)
    >>> on_disk = csk.tl.sae(path, "X_pca", n_features=64, k=4, n_epochs=5, progress=False)
    >>> on_disk.obsm["X_sae"].shape
    (700, 64)

    Activations of data larger than memory go straight into a new file (the same content as
    ``on_disk.write_h5ad``):

    >>> out = path.with_name("pbmc_sae.h5ad")
    >>> csk.tl.sae(path, "X_pca", n_features=64, k=4, n_epochs=5, progress=False, write_to=out)
    >>> written = sc.read_h5ad(out)
    >>> (written.obsm["X_sae"] != on_disk.obsm["X_sae"]).nnz
    0
    >>> csk.get.sae(written).metrics["l0"] == on_disk.uns["sae"]["metrics"]["l0"]
    True
    """
    get.check_key(key_added)
    from_path = isinstance(adata, str | Path)
    given = {name: value for name, value in fit_kwargs.items() if name not in ("init_decoder", "freeze_decoder")}
    config = FitConfig.make(
        n_features=n_features,
        k=k,
        activation=activation,
        l1_coef=l1_coef,
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        validation_fraction=validation_fraction,
        random_state=random_state,
        device=device,
        precision=precision,
        **given,
    )
    source, to_file = adata, write_to is not None
    if to_file:
        if copy:
            raise ValueError("copy=True and write_to= both ask for the results: leave copy=False with write_to=.")
        write_to = check_output(write_to, overwrite=overwrite, source=adata)
    if is_streamed(adata):
        if copy and not from_path:
            raise ValueError(
                "copy=True cannot copy a backed AnnData (its data stay on disk): leave copy=False, and the results go "
                "into the object in memory (save them with adata.write_h5ad(new_path)), or pass the file's path."
            )
        adata, data = open_streamed(adata, use_rep, layer, chunk_size=chunk_size, obs=not to_file)
    else:
        data = get_input(adata, use_rep, layer)
    maps = find_maps(adata, data, loadings)
    metadata = {"use_rep": data.use_rep} | ({"layer": data.layer} if data.layer else {})
    if data.is_expression:
        metadata["var_names"] = (adata.mod[data.mod] if data.mod else adata).var_names.tolist()
    extra = {name: value for name, value in fit_kwargs.items() if name not in given}
    kind = "expression" if data.is_expression else "joint" if get.is_mudata(adata) and data.mod is None else "embedding"
    result = fit(
        data.X,
        config,
        progress=progress,
        input_name=data.name,
        input_kind=kind,
        metadata=metadata,
        encode=not to_file,
        **extra,
    )
    if to_file:
        if is_writer():  # the results go to the file, not into an AnnData of the cells
            target = adata if from_path else AnnData(var=adata.var.copy(), varm=dict(adata.varm))
            write_fit(write_to, source, target, data, maps, result, key_added, progress=progress)
        return None
    if result.codes is None:  # another process under torchrun: rank 0 holds the results
        return None
    # Everything succeeded: only now touch the user's object.
    adata = adata.copy() if copy and not from_path else adata
    store_fit(adata, data, maps, result, key_added)
    return adata if copy or from_path else None
