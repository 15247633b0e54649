"""Training loop with the modern SAE recipes: centring, tied init, unit-norm decoder, AuxK, schedules."""

from __future__ import annotations

import ctypes
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from tqdm.auto import tqdm

from .._docs import doc_params
from ._check import as_float32, check_data, check_spread
from ._config import DEVICE, FitConfig
from ._data import ChunkedRows, Stream, prefetch
from ._defaults import InputKind, resolve, warn_settings
from ._distributed import Sync
from ._encode import encode_rows, to_tensor
from ._metrics import RunningFVU, TrainingFVU, activation_stats, codes_stats, max_decoder_cosine
from ._sae import Codes, SparseAutoencoder, batch_top, check_config, sparse_decode

K_AUX_CAP = 256
RESAMPLE_NORM = 0.2
L0_TOLERANCE = 1.1  # JumpReLU: the best epoch is chosen among those whose L0 is at most 10% above k
# Steps of fewer multiply-adds than this (batch x features x inputs) run on one CPU thread: their operations are
# too short for threads to pay, and on a busy machine waiting for a descheduled thread made them 10-25x slower.
SMALL_STEP = 2**24


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    model
        The trained model (best validation epoch), in eval mode, on the training device.
    codes
        Activations of every input cell (CSR, cells x features); ``None`` on processes other than rank 0 under
        ``torchrun``.
    history
        Per-epoch lists: ``epoch``, ``loss``, ``fvu_train``, ``fvu_validation``, ``l0``, ``dead_fraction``, ``lr``
        and ``seconds`` (wall time of the epoch, validation included).
    metrics
        Final ``fvu_train``, ``fvu_validation``, ``l0``, ``dead_fraction``, ``dense_fraction``,
        ``max_decoder_cosine``, ``best_epoch`` and ``n_epochs``.
    train_indices, validation_indices
        Row numbers of the training and validation cells.
    params
        The resolved training parameters (learning rate, epochs, device, ...).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import fit
    >>> result = fit(np.random.default_rng(0).normal(size=(100, 5)), n_features=8, k=2, n_epochs=2, progress=False)
    >>> sorted(result.metrics)[:3]
    ['best_epoch', 'dead_fraction', 'dense_fraction']
    """

    model: SparseAutoencoder
    codes: sparse.csr_matrix | None
    history: dict[str, list[float]]
    metrics: dict[str, float]
    train_indices: np.ndarray
    validation_indices: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; check that an explicit CUDA device exists.

    Examples
    --------
    >>> from cellsae_kit.models import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, torch.device) and not DEVICE.fullmatch(str(device)):
        raise ValueError(f"device={device!r} is not known; choose 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} is not supported; choose 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but PyTorch sees no CUDA GPU; use device='cpu'.")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={str(device)!r} was requested but PyTorch sees {torch.cuda.device_count()} GPU(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})."
        )
    return device


def split(n_cells: int, validation_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random train / validation split; the validation set has at least one cell when the fraction is positive."""
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1).")
    n_val = 0 if validation_fraction == 0 else max(1, round(validation_fraction * n_cells))
    if n_cells - n_val < 1:
        raise ValueError(f"{n_cells} cell(s) leave none to train on after the validation split; pass more cells.")
    perm = rng.permutation(n_cells)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def geometric_median(x: np.ndarray, *, n_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
    """Geometric median of the rows of ``x`` by Weiszfeld's algorithm (robust centre for skewed data).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import geometric_median
    >>> geometric_median(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])).round(2)
    array([0.5, 0.5])
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"geometric_median needs a 2-D array of finite values (NaN or inf found, or shape {x.shape}).")
    m = np.median(x, axis=0)
    for _ in range(n_iter):
        w = 1.0 / np.maximum(np.linalg.norm(x - m, axis=1), 1e-12)
        new = (w[:, None] * x).sum(axis=0) / w.sum()
        if np.linalg.norm(new - m) <= tol * max(1.0, np.linalg.norm(m)):
            return new
        m = new
    return m


def _batches(data, train_idx: np.ndarray, batch_size: int, rng: np.random.Generator, device: torch.device, epoch: int):
    """One epoch's minibatches: shuffled cells in memory, or shuffled chunks of a :class:`Stream`.

    Data on the host that train on a GPU are read by a thread, a few batches ahead, into pinned memory
    (:func:`prefetch`); on the CPU a thread would only compete with the computation for the cores.
    """
    on_host = not (isinstance(data, torch.Tensor) and data.device.type == device.type)
    source = torch.device("cpu") if device.type == "cuda" and on_host else device
    if isinstance(data, Stream):
        batches = data.epoch(epoch, batch_size, source)
    else:
        order = train_idx[rng.permutation(len(train_idx))]
        starts = range(0, len(order), batch_size)
        batches = (_rows(data, np.sort(order[s : s + batch_size]), source).float() for s in starts)
    yield from prefetch(batches, device) if source != device else batches


def _cells(data, idx: np.ndarray, batch_size: int, device: torch.device):
    """Yield the given cells in order, a batch at a time (a stream reads its chunks, each process its share)."""
    if isinstance(data, Stream):
        yield from data.cells(idx, batch_size)
        return
    for start in range(0, len(idx), batch_size):
        yield _rows(data, idx[start : start + batch_size], device).float()


def _rows(X: np.ndarray | sparse.spmatrix | torch.Tensor, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(idx, device=X.device)].to(device, non_blocking=True)
    return to_tensor(X[idx], device)


def _centre_and_scale(
    X, train_idx: np.ndarray, center: str, rng: np.random.Generator, name: str = "the input"
) -> tuple[np.ndarray, float]:
    """Find the data centre and the scale that makes the mean distance from it ``sqrt(d)`` (on a sample)."""
    sample = train_idx if len(train_idx) <= 20_000 else np.sort(rng.choice(train_idx, 20_000, replace=False))
    x = X[sample]
    x = np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)
    if center == "mean":
        c = np.asarray(X[train_idx].mean(axis=0, dtype=np.float64)).ravel()
    elif center == "median":
        c = geometric_median(x)
    else:
        c = np.zeros(x.shape[1])
    mean = x.mean(axis=0)
    spread = float(np.linalg.norm(x - mean, axis=1).mean())
    check_spread(spread, float(np.linalg.norm(mean)), name, f"{len(train_idx)} training cells")
    spread = float(np.linalg.norm(x - c, axis=1).mean())
    return c, float(math.sqrt(x.shape[1]) / spread)


def _count_dense(values: torch.Tensor, scratch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return which features fired in dense codes (never negative), their active entries, and the buffer used.

    The comparisons are written as floats into ``scratch`` (grown when too small) and summed per feature: both
    numbers from one pass, several times faster on a CPU than ``amax`` and ``count_nonzero``, whose integer
    reductions are slow there (4096 x 2048 codes on one thread: 2-3 ms against 40 ms, measured).
    """
    n = values.numel()
    if scratch.numel() < n:
        scratch = torch.empty(n, device=values.device)
    counts = torch.gt(values, 0, out=scratch[:n].view(values.shape)).sum(0)
    return counts > 0, counts.sum(dtype=torch.float64), scratch


@torch.no_grad()
def _evaluate(
    model: SparseAutoencoder, X, idx: np.ndarray, batch_size: int, device: torch.device, sync: Sync | None = None
) -> float:
    if len(idx) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    acc = RunningFVU()
    for x in _cells(X, idx, batch_size, device):
        acc.add(x * model.input_scale, model(x)[0].float())
    if sync is not None:
        sync.fvu(acc, model.n_inputs)
    model.train(was_training)
    return acc.value()


def _schedule(total_steps: int, warmup_fraction: float, decay_fraction: float):
    warmup = max(1, int(warmup_fraction * total_steps))
    decay_start = int((1 - decay_fraction) * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if step >= decay_start:
            return max(0.0, (total_steps - step) / max(1, total_steps - decay_start))
        return 1.0

    return factor


@doc_params
def fit(
    X: np.ndarray | sparse.spmatrix | ChunkedRows,
    config: FitConfig | None = None,
    *,
    init_decoder: np.ndarray | None = None,
    freeze_decoder: bool = False,
    progress: bool = True,
    input_name: str = "the input",
    input_kind: InputKind = "embedding",
    metadata: dict[str, Any] | None = None,
    encode: bool = True,
    **options: Any,
) -> FitResult:
    """Train a sparse autoencoder on a cells x dimensions matrix.

    The options are the fields of :class:`FitConfig`: pass a config, keyword arguments (which replace the
    config's fields), or both.

    Parameters
    ----------
    X
        Cells x input dimensions, dense or sparse (CSR rows are densified one minibatch at a time), or a
        :class:`ChunkedRows` over data on disk (a backed ``.h5ad``, zarr), which is streamed: minibatches from
        shuffled chunks, centre and initialisation from a sample of chunks, whole chunks held out for validation.
        Under ``torchrun`` (``torch.distributed`` initialised with several processes) each process streams its
        shard of the chunks, ``batch_size`` is the global batch, and gradients, fired features and resampling are
        shared so that the processes train one model; only rank 0 returns the activations.
    config
        The options (default: ``FitConfig()``).
    init_decoder
        Start from this dictionary instead (features x input dimensions, in the input's units; rows are scaled to
        unit norm), for example a consensus dictionary from :func:`cellsae_kit.tl.consensus`; overrides ``init``.
    freeze_decoder
        Keep the decoder rows at ``init_decoder`` and train only the encoder and biases (resampling of dead
        features, which moves decoder rows, is then off).
    progress
        Show a tqdm progress bar.
    input_name
        How errors name the data.
    input_kind
        ``"embedding"``, ``"expression"`` or ``"joint"``: which rules the ``"auto"`` options follow
        (:func:`resolve`).
    metadata
        Stored with the model (see :class:`SparseAutoencoder`).
    encode
        Encode every cell into ``codes``. ``False`` leaves ``codes=None``, the statistics of the codes out of
        ``metrics`` and ``metrics["fvu_train"]`` NaN, for a caller that encodes the cells itself (for example
        into a file) and counts the training cells' error in the same pass (:class:`TrainingFVU`).
    **options
        Any option of :class:`FitConfig`, replacing the config's value:

    {fit_options}

    Returns
    -------
    A :class:`FitResult`; its ``params`` are the config with the values derived from the data filled in
    (:meth:`FitConfig.params`).

    Examples
    --------
    >>> import numpy as np
    >>> from cellsae_kit.models import FitConfig, fit
    >>> X = np.random.default_rng(0).normal(size=(300, 10)).astype("float32")
    >>> result = fit(X, FitConfig(n_features=32, k=4, n_epochs=5), progress=False)
    >>> result.codes.shape
    (300, 32)
    """
    threads = torch.get_num_threads()
    try:
        return _fit(
            X,
            FitConfig.make(config, **options),
            init_decoder,
            freeze_decoder,
            progress,
            input_name,
            input_kind,
            metadata,
            encode,
        )
    finally:  # small steps run on one thread (SMALL_STEP); the caller's setting comes back
        torch.set_num_threads(threads)


def _fit(
    X,
    config: FitConfig,
    init_decoder,
    freeze_decoder: bool,
    progress: bool,
    input_name: str,
    input_kind: InputKind,
    metadata,
    encode: bool,
) -> FitResult:
    stream = X if isinstance(X, ChunkedRows) else None
    if stream is None:
        check_data(X, input_name)
    n_cells, n_inputs = X.shape
    if n_cells < 2:
        raise ValueError(f"{input_name} has a single cell; an SAE needs at least two (one to train, one to check).")
    config, rules = resolve(config, n_cells, n_inputs, input_kind)
    n_features, activation, k, l1_coef = config.n_features, config.activation, config.k, config.l1_coef
    center, init, precision, random_state = config.center, config.init, config.precision, config.random_state
    aux_coef, resample = config.aux_coef, config.resample
    prefixes = config.prefixes if activation == "matryoshka" else None
    check_config(n_inputs, n_features, activation, k, l1_coef, prefixes=prefixes, bandwidth=config.bandwidth)
    device = resolve_device(config.device)
    if precision == "bfloat16" and device.type != "cuda":
        warnings.warn("precision='bfloat16' needs a CUDA GPU; training in float32 on the CPU.", stacklevel=3)
        precision = "float32"

    sync = Sync.current(device)  # several processes under torchrun: each streams its shard of the chunks
    if sync.world_size > 1 and stream is None:
        X = stream = ChunkedRows(X, name=input_name)

    rng = np.random.default_rng(random_state)
    generator = torch.Generator().manual_seed(int(random_state))
    if stream is None:
        train_idx, val_idx = split(n_cells, config.validation_fraction, rng)
        head, head_idx = X, train_idx  # the cells that centring, scaling and initialisation look at
    else:
        plan = Stream.plan(stream, config.validation_fraction, rng, device, world_size=sync.world_size, rank=sync.rank)
        train_idx, val_idx = plan.train_indices(), plan.validation_indices()
        head = plan.sample(rng)  # a sample of whole chunks
        head_idx = np.arange(head.shape[0])
    n_train = len(train_idx)
    batch_size = min(config.batch_size, n_train) if stream is None else plan.batch_size(config.batch_size)
    steps_per_epoch = math.ceil(n_train / batch_size) if stream is None else plan.steps_per_epoch(batch_size)
    n_epochs, patience, lr = config.n_epochs, config.patience, config.lr
    warn_settings(config, n_train, len(val_idx), n_inputs, steps_per_epoch, rules)
    if device.type == "cpu" and batch_size * n_features * n_inputs < SMALL_STEP:
        torch.set_num_threads(1)
    dead_window = config.dead_window or max(n_train, 10 * batch_size)
    k_aux = config.k_aux or K_AUX_CAP

    centre, scale = _centre_and_scale(head, head_idx, center, rng, input_name)
    model = SparseAutoencoder(
        n_inputs,
        n_features,
        activation=activation,
        k=k,
        l1_coef=l1_coef,
        prefixes=prefixes,
        bandwidth=config.bandwidth,
        metadata=metadata,
    )
    model.reset_parameters(generator)
    with torch.no_grad():
        model.input_scale.fill_(scale)
        model.b_dec.copy_(torch.as_tensor(centre * scale, dtype=torch.float32))
    if init_decoder is not None:
        _init_from_decoder(model, head, head_idx, init_decoder, generator)
    elif init == "data":
        _init_from_cells(model, head, head_idx, generator)
    elif activation == "jumprelu":  # random directions: thresholds that keep k features per cell to start with
        _calibrate_threshold(model, head, np.sort(rng.choice(head_idx, min(len(head_idx), 4096), replace=False)), "cpu")
    if freeze_decoder:
        if init_decoder is None:
            raise ValueError("freeze_decoder=True keeps a given dictionary fixed: pass it as init_decoder=.")
        model.W_dec.requires_grad_(False)
        resample = False
    model.to(device).train()
    sync.broadcast(model)

    # Dense data that fits is moved to the device once; sparse data is densified batch by batch; a stream is read
    # chunk by chunk.
    data = X if stream is None else plan
    if stream is None and not sparse.issparse(X):
        data = torch.from_numpy(as_float32(X))
        if device.type == "cuda" and data.numel() * 4 < 0.25 * torch.cuda.mem_get_info(device)[0]:
            data = data.to(device)

    # The fused kernel updates each parameter in one pass (3-8x faster than the default loop on a CPU, measured).
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(n_epochs * steps_per_epoch, config.warmup_fraction, config.decay_fraction)
    )
    since_fired = torch.zeros(n_features, dtype=torch.long, device=device)
    oldest = 0  # at least since_fired.max(), known on the host
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    history: dict[str, list[float]] = {
        k_: [] for k_ in ("epoch", "loss", "fvu_train", "fvu_validation", "l0", "dead_fraction", "lr", "seconds")
    }
    best = ((True, math.inf), 0, _snapshot(model))
    calibration_data, calibration_idx = (data, train_idx) if stream is None else (head, head_idx)
    calibration_idx = np.sort(rng.choice(calibration_idx, min(len(calibration_idx), 4096), replace=False))
    if stream is not None:  # keep the calibration cells, not the whole sample (a zarr chunk can be 100k cells)
        calibration_data, calibration_idx = head[calibration_idx], np.arange(len(calibration_idx))
        del head

    scratch = torch.empty(0, device=device)  # for _count_dense, kept between steps
    bar = tqdm(range(n_epochs), desc="training SAE", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        # Sums stay on the device during the epoch: reading a number back each step would stall a GPU.
        fvu_acc, loss_sum, active_sum = RunningFVU(), torch.zeros((), device=device), torch.zeros((), device=device)
        for x in _batches(data, train_idx, batch_size, rng, device, epoch):
            target = x * model.input_scale
            with autocast:
                # TopK and BatchTopK select from pre-activations computed without gradients and then attach
                # gradients to the selected entries only, so the backward pass forms no cells x features matrix;
                # ReLU and JumpReLU do the same with their active entries when those are few (train_codes).
                if model.batch_selection and sync.world_size > 1:  # the cut-off is over the whole global batch
                    with torch.no_grad():
                        codes = sync.select(model, model.pre_activations(x))
                    codes, sparsity = model.with_gradients(codes, x), None
                else:
                    codes, sparsity = model.train_codes(x)
                if activation == "matryoshka":
                    prefix_recs = model.decode_prefixes(codes, x.shape[0])
                    x_hat = prefix_recs[-1]
                else:
                    x_hat = model.decode(codes, x.shape[0])
            x_hat = x_hat.float()
            if activation == "matryoshka":
                loss = prefix_loss(target, prefix_recs)
            else:
                loss = (target - x_hat).pow(2).sum(1).mean() / n_inputs
            if activation == "relu":
                loss = loss + l1_coef * sparsity
            elif activation == "jumprelu":
                loss = loss + l0_penalty(sparsity.float(), k, config.l0_coef, sync)

            with torch.no_grad():
                if codes.indices is None:
                    fired, n_active, scratch = _count_dense(codes.values, scratch)
                else:
                    active = codes.values != 0
                    hits = torch.zeros(n_features, dtype=torch.int32, device=device)
                    fired = hits.index_add_(0, codes.indices.flatten(), active.flatten().to(torch.int32)) > 0
                    n_active = active.sum()
                fired, n_step = sync.fired(fired, x.shape[0])
                since_fired.add_(n_step).masked_fill_(fired, 0)
            # A feature dies after dead_window cells without firing. The host keeps an upper bound of the longest
            # wait and asks the device (one sync) only once the bound reaches the window.
            oldest += n_step
            if oldest >= dead_window:
                oldest = int(since_fired.max())
            dead = since_fired >= dead_window if oldest >= dead_window else None
            if aux_coef > 0 and dead is not None:
                loss = loss + aux_coef * _aux_loss(model, x, dead, target - x_hat.detach(), k_aux, sync)

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sync.gradients(model)
            if model.unit_norm_decoder:
                _project_decoder_grad(model)
            optimizer.step()
            scheduler.step()
            if model.unit_norm_decoder:
                with torch.no_grad():
                    model.W_dec /= model.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            if activation == "jumprelu":  # a negative threshold would let negative activations through
                with torch.no_grad():
                    model.threshold.clamp_(min=0.0)
            if resample and dead is not None:
                _resample(model, optimizer, dead, target, x_hat.detach(), generator, sync)
                since_fired.masked_fill_(dead, 0)
            fvu_acc.add(target, x_hat.detach())
            loss_sum += loss.detach() * x.shape[0]
            active_sum += n_active

        if model.batch_selection:
            _calibrate_threshold(model, calibration_data, calibration_idx, device)
        val_fvu = _evaluate(model, data, val_idx, max(batch_size, 4096), device, sync)
        sync.fvu(fvu_acc, n_inputs)
        loss_sum, active_sum = sync.total(float(loss_sum), int(active_sum))
        if not math.isfinite(loss_sum):
            raise ValueError(
                f"Training of the SAE on {input_name} diverged in epoch {epoch + 1}: the loss became {loss_sum}. "
                f"The learning rate lr={lr:g} is the likely cause (leave lr='auto' or lower it); otherwise check "
                "the input for extreme values."
            )
        history["epoch"].append(epoch + 1)
        history["loss"].append(loss_sum / fvu_acc.n)
        history["fvu_train"].append(fvu_acc.value())
        history["fvu_validation"].append(val_fvu)
        history["l0"].append(active_sum / fvu_acc.n)
        history["dead_fraction"].append(0.0 if dead is None else float(dead.float().mean()))
        history["lr"].append(scheduler.get_last_lr()[0])
        history["seconds"].append(time.perf_counter() - started)
        # JumpReLU's L0 is learned: an epoch whose lower error was bought with more features than the target
        # asked for ranks after every epoch near the target.
        over = activation == "jumprelu" and history["l0"][-1] > L0_TOLERANCE * k
        score = (over, val_fvu if len(val_idx) else history["fvu_train"][-1])
        if score < best[0]:
            best = (score, epoch + 1, _snapshot(model))
        bar.set_postfix(fvu=f"{score[1]:.3f}", l0=f"{history['l0'][-1]:.1f}", refresh=False)
        if epoch + 1 - best[1] >= patience:
            break
    bar.close()
    if activation == "jumprelu" and history["l0"][-1] > L0_TOLERANCE * k:
        warnings.warn(
            f"The JumpReLU SAE ended with {history['l0'][-1]:.1f} active features per cell against its target "
            f"k={k}; epoch {best[1]} of {len(history['l0'])}, the best one near the target, is kept. Train "
            "longer (n_epochs) or raise l0_coef to hold the target.",
            stacklevel=3,
        )
    model.load_state_dict(best[2])
    model.eval()
    # The kept epoch's validation error was measured on the same weights; the training cells' error comes from
    # the pass that encodes every cell, when there is one on this process.
    fvu_validation = history["fvu_validation"][best[1] - 1] if best[1] else math.nan
    eval_batch = max(batch_size, 4096)
    codes = None
    if not encode:  # the caller counts it as it encodes the cells (TrainingFVU)
        fvu_train = math.nan
    elif sync.world_size == 1:
        if stream is not None:
            _release_freed_memory()
        codes, fvu_train = _encode_and_score(model, X, train_idx, eval_batch)
    else:  # under torchrun the error is summed over every process's cells; only rank 0 encodes them
        fvu_train = _evaluate(model, data, train_idx, eval_batch, device, sync)
        if sync.rank == 0:
            _release_freed_memory()
            codes = encode_rows(model, stream, batch_size=eval_batch)
    metrics = {
        "fvu_train": fvu_train,
        "fvu_validation": fvu_validation,
        **({} if codes is None else activation_stats(codes) if stream is None else codes_stats(codes)),
        "max_decoder_cosine": max_decoder_cosine(model.W_dec),
        "best_epoch": best[1],
        "n_epochs": len(history["epoch"]),
    }
    used = replace(
        config,
        batch_size=batch_size,
        n_epochs=n_epochs,
        lr=lr,
        patience=patience,
        k_aux=k_aux,
        dead_window=dead_window,
        resample=resample,
        device=str(device),
        precision=precision,
    )
    params = used.params() | ({"rules": rules} if rules else {})
    return FitResult(model, codes, history, metrics, train_idx, val_idx, params)


def _encode_and_score(
    model: SparseAutoencoder, X, train_idx: np.ndarray, batch_size: int
) -> tuple[sparse.csr_matrix, float]:
    """Encode every cell (CSR) and return the FVU of the training cells, reconstructed from the same codes."""
    error = TrainingFVU(model, train_idx, X.shape[0])
    codes = encode_rows(model, X, batch_size=batch_size, on_block=error.add)
    return codes, error.value()


@torch.no_grad()
def _init_from_cells(model: SparseAutoencoder, X, train_idx: np.ndarray, generator: torch.Generator) -> None:
    """Point decoder rows at randomly drawn training cells (relative to the centre), encoder tied.

    Random directions in a strongly anisotropic space (PCA coordinates, for example) mostly point where the data
    has little variance; those features never win a top-k slot and die at once. Cell directions cover the data.
    """
    n_train, m = len(train_idx), model.n_features
    if m <= n_train:
        draw = torch.randperm(n_train, generator=generator)[:m]
    else:
        draw = torch.randint(n_train, (m,), generator=generator)
    picks = train_idx[draw.numpy()]
    x = to_tensor(X[np.sort(picks)], "cpu")
    target = x * model.input_scale - model.b_dec
    w = target + 0.1 * target.norm(dim=1).mean() / math.sqrt(model.n_inputs) * model.W_dec
    w /= w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    model.W_dec.copy_(w)
    model.W_enc.copy_(w.T)
    # Neighbouring cells give near-parallel features that all fire at full strength: shrink the encoder so that
    # the first reconstruction has the least squared error.
    _shrink_encoder(model, x, target)


@torch.no_grad()
def _shrink_encoder(model: SparseAutoencoder, x: torch.Tensor, target: torch.Tensor) -> None:
    """Scale the encoder so that the first reconstruction of ``x`` has the least squared error (at most 1).

    A JumpReLU SAE first gets thresholds that keep ``k`` features per cell on average (the BatchTopK cut-off of
    these cells); they are scaled with the encoder, so the same entries stay active.
    """
    if model.activation == "jumprelu":
        _calibrate_threshold(model, x, np.arange(x.shape[0]), x.device)
    r = model.decode(model.encode(x), x.shape[0]) - model.b_dec
    factor = ((target * r).sum() / (r * r).sum().clamp_min(1e-12)).clamp(1e-3, 1.0)
    model.W_enc.mul_(factor)
    if model.activation == "jumprelu":
        model.threshold.mul_(factor)


def prefix_loss(target: torch.Tensor, reconstructions: list[torch.Tensor]) -> torch.Tensor:
    """Return the Matryoshka loss: the mean over prefixes of the squared error per cell and input dimension.

    The mean rather than the sum of Bussmann et al. (2025) keeps the loss on the scale of the other
    activations' (a dictionary with one prefix has exactly their loss), so ``lr`` and ``aux_coef`` mean the same;
    the gradient's direction is the sum's, and Adam's steps hardly depend on its scale.

    Parameters
    ----------
    target
        The batch in scaled units (cells x inputs).
    reconstructions
        Its reconstruction from each prefix (:meth:`SparseAutoencoder.decode_prefixes`).

    Returns
    -------
    A scalar tensor.

    Examples
    --------
    >>> import torch
    >>> from cellsae_kit.models._train import prefix_loss
    >>> float(prefix_loss(torch.ones(2, 2), [torch.zeros(2, 2), torch.ones(2, 2)]))
    0.5
    """
    n_inputs = target.shape[1]
    errors = [(target - r.float()).pow(2).sum(1).mean() / n_inputs for r in reconstructions]
    return torch.stack(errors).mean()


def l0_penalty(l0: torch.Tensor, k: int, coef: float, sync: Sync | None = None) -> torch.Tensor:
    """Return JumpReLU's sparsity penalty ``coef * (L0 / k - 1)^2`` (``L0``: mean active features per cell).

    A target instead of the paper's ``coef * L0``: the penalty's pull vanishes at ``L0 = k`` and grows on either
    side, so a fit ends near ``k`` active features per cell (as TopK's) whatever the data's scale. Under
    ``torchrun`` the value is the whole batch's, and each process's gradient its share of it.

    Examples
    --------
    >>> import torch
    >>> from cellsae_kit.models._train import l0_penalty
    >>> float(l0_penalty(torch.tensor(12.0), 8, 1.0))
    0.25
    """
    whole = (sync or Sync()).average(l0.detach())
    l0 = l0 + (whole - l0.detach())  # the whole batch's value, the gradient of this process's cells
    return coef * (l0 / k - 1).pow(2)


def _release_freed_memory() -> None:
    """Hand memory freed during training back to the system before the codes of every cell are allocated.

    glibc's allocator keeps the blocks of a training step's temporaries (several MB each) for reuse; over an epoch
    that is a few hundred MB of resident memory that a streamed fit, whose point is a small footprint, would carry
    into encoding. ``malloc_trim`` returns it; elsewhere than glibc this does nothing.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@torch.no_grad()
def _init_from_decoder(model: SparseAutoencoder, X, train_idx: np.ndarray, decoder, generator) -> None:
    """Start from a given dictionary (unit rows), encoder tied and shrunk as in :func:`_init_from_cells`."""
    w = np.asarray(decoder, dtype=np.float64)
    if w.shape != (model.n_features, model.n_inputs) or not np.isfinite(w).all():
        raise ValueError(
            f"init_decoder must be a finite {model.n_features} x {model.n_inputs} array (features x input "
            f"dimensions); got shape {w.shape}."
        )
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"init_decoder has {int((norms == 0).sum())} all-zero rows; every feature needs a direction.")
    w = torch.as_tensor(w / norms, dtype=torch.float32)
    model.W_dec.copy_(w)
    model.W_enc.copy_(w.T)
    picks = train_idx[torch.randperm(len(train_idx), generator=generator)[:4096].numpy()]
    x = to_tensor(X[np.sort(picks)], "cpu")
    target = x * model.input_scale - model.b_dec
    _shrink_encoder(model, x, target)


@torch.no_grad()
def _calibrate_threshold(model: SparseAutoencoder, X, idx: np.ndarray, device: torch.device) -> None:
    """Set the BatchTopK inference threshold so that the given cells keep ``k`` features each on average."""
    pre = F.relu(model.pre_activations(_rows(X, idx, device).float()))
    kept = batch_top(pre, min(model.k * len(idx), pre.numel()), 4 * model.k)
    model.threshold.fill_(float(pre.flatten()[kept].min()))


def _snapshot(model: SparseAutoencoder) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _aux_loss(
    model: SparseAutoencoder,
    x: torch.Tensor,
    dead: torch.Tensor,
    residual: torch.Tensor,
    k_aux: int,
    sync: Sync | None = None,
) -> torch.Tensor:
    """AuxK: reconstruct the residual with the top dead features, normalised by the residual's variance.

    Only the dead features' pre-activations are computed, without gradients; the picked ones are then connected
    to the weights at those entries alone (:meth:`SparseAutoencoder.with_gradients`).
    """
    dead_features = torch.nonzero(dead).squeeze(1)
    with torch.no_grad():
        x_c = x * model.input_scale - model.b_dec
        pre = torch.addmm(model.b_enc[dead_features], x_c, model.W_enc[:, dead_features])
        values, picks = pre.topk(min(k_aux, len(dead_features)), dim=1, sorted=False)
    codes = model.with_gradients(Codes(F.relu(values), dead_features[picks]), x)
    residual_hat = sparse_decode(codes, model.W_dec, x.shape[0]).float()
    variance = (sync or Sync()).variance(residual).clamp_min(1e-12)  # of the whole batch, over all processes
    return (residual_hat - residual).pow(2).sum(1).mean() / variance


@torch.no_grad()
def _resample(model, optimizer, dead, target, x_hat, generator, sync: Sync | None = None) -> None:
    """Point dead features at cells the model reconstructs worst (drawn with probability ~ squared error).

    The new decoder row is the cell's centred input direction, the encoder column the same direction at the
    live features' mean norm, so the feature fires for that cell; Adam's moments for it are reset. Under
    torchrun every process draws the same cells of the whole batch (same generator, gathered errors).
    """
    sync = sync or Sync()
    idx = torch.nonzero(dead).squeeze(1)
    err = sync.gather((target - x_hat).pow(2).sum(1).double()).cpu()
    weights = err if err.sum() > 0 else torch.ones_like(err)
    cells = torch.multinomial(weights, len(idx), replacement=True, generator=generator).to(target.device)
    direction = sync.take(target, cells) - model.b_dec
    lengths = direction.norm(dim=1)
    direction /= lengths[:, None].clamp_min(1e-12)
    alive = ~dead
    # A fifth of the live norm, as in Bricken et al. (2023): the feature wins its cell without swamping others.
    enc_norm = RESAMPLE_NORM * model.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(RESAMPLE_NORM)
    model.W_dec[idx] = direction
    model.W_enc[:, idx] = direction.T * enc_norm
    model.b_enc[idx] = 0.0
    reset = [(model.W_dec, (idx,)), (model.W_enc, (slice(None), idx)), (model.b_enc, (idx,))]
    if model.activation == "jumprelu":  # below the new feature's activation at its cell, as the live ones' median
        pre = enc_norm * lengths
        live = model.threshold[alive].median() if alive.any() else torch.zeros((), device=pre.device)
        model.threshold[idx] = torch.minimum(live, pre / 2)
        reset.append((model.threshold, (idx,)))
    for param, sl in reset:
        for moment in optimizer.state.get(param, {}).values():
            if torch.is_tensor(moment) and moment.shape == param.shape:
                moment[sl] = 0.0


@torch.no_grad()
def _project_decoder_grad(model: SparseAutoencoder) -> None:
    """Remove the gradient component along each unit-norm decoder row, so steps move along the sphere.

    Without gradients: an in-place update of ``W_dec.grad`` by a product with ``W_dec`` would record a graph
    that refers to the gradient itself, a cycle that keeps two decoder-sized tensors alive at every step.
    """
    w, g = model.W_dec, model.W_dec.grad
    if g is not None:
        g.sub_((g * w).sum(1, keepdim=True) * w)
