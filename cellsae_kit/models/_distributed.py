"""What the processes of a ``torchrun`` job share so that they train one model, as one process would.

Every process holds the same model and reads its own shard of the chunks; after each backward pass the gradients
are averaged over the processes (what ``DistributedDataParallel`` does, here in one flat all-reduce, because the
training step calls the encoder, the top-k and the decoder separately rather than the module's ``forward``). The
rest of the bookkeeping must be identical everywhere: which features fired (all-reduced), the AuxK variance of the
whole batch, the BatchTopK (and Matryoshka) cut-off of the whole batch, JumpReLU's mean L0 in its penalty, and
the cells drawn for resampling (all ranks draw with the same generator from the gathered errors, and the chosen
cells' inputs are summed from their owners).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._sae import Codes, SparseAutoencoder

# Newer torch calls all_gather_into_tensor all_gather_single and warns on the old name.
_all_gather = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)


class Sync:
    """One process: nothing to share; each method is what a single process computes."""

    world_size = 1
    rank = 0

    @staticmethod
    def current(device: torch.device) -> Sync:
        """:class:`ProcessGroup` when ``torch.distributed`` runs with several processes, else :class:`Sync`."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return ProcessGroup(device)
        return Sync()

    def broadcast(self, model: SparseAutoencoder) -> None:
        """Start every process from rank 0's weights."""

    def select(self, model: SparseAutoencoder, pre: torch.Tensor) -> Codes:
        """Sparsify pre-activations (BatchTopK: over the whole batch)."""
        return model.select(pre)

    def fired(self, fired: torch.Tensor, n_cells: int) -> tuple[torch.Tensor, int]:
        """Features that fired anywhere in the batch, and the batch's cells."""
        return fired, n_cells

    def variance(self, residual: torch.Tensor) -> torch.Tensor:
        """Return the summed per-dimension variance of the batch's residuals."""
        return (residual - residual.mean(0)).pow(2).sum(1).mean()

    def average(self, value: torch.Tensor) -> torch.Tensor:
        """Return the mean of a number over the processes (each holds an equal part of the batch)."""
        return value

    def gradients(self, model: SparseAutoencoder) -> None:
        """Average the gradients over the processes."""

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """One value per cell of the whole batch (processes in rank order)."""
        return values

    def take(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Rows of the whole batch by their position in it."""
        return x[cells]

    def fvu(self, acc, n_inputs: int) -> None:
        """Sum an FVU accumulator (``sse``, ``sum``, ``sumsq``, ``n``) over the processes, in place."""

    def total(self, *values: float) -> tuple[float, ...]:
        """Sum numbers over the processes."""
        return values


class ProcessGroup(Sync):
    """Several processes in a ``torch.distributed`` group (NCCL on GPUs, gloo on CPUs)."""

    def __init__(self, device: torch.device):
        self.world_size, self.rank, self.device = dist.get_world_size(), dist.get_rank(), device

    def broadcast(self, model: SparseAutoencoder) -> None:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, 0)

    def select(self, model: SparseAutoencoder, pre: torch.Tensor) -> Codes:
        if not model.batch_selection or not model.training:
            return model.select(pre)
        # Keep the k x (whole batch) largest activations: the cut-off is the smallest of them across processes.
        positive = F.relu(pre).flatten()
        n_keep = model.k * pre.shape[0] * self.world_size
        top = positive.detach().topk(min(n_keep, positive.numel()), sorted=False).values
        pooled = torch.empty(self.world_size * top.numel(), dtype=top.dtype, device=top.device)
        _all_gather(pooled, top)
        cut = pooled.topk(min(n_keep, pooled.numel()), sorted=False).values.min()
        flat = torch.nonzero((positive >= cut) & (positive > 0)).squeeze(1)
        rows = torch.div(flat, model.n_features, rounding_mode="floor")
        return Codes(pre.flatten()[flat].clamp_min(0), flat % model.n_features, rows)

    def fired(self, fired: torch.Tensor, n_cells: int) -> tuple[torch.Tensor, int]:
        counts = fired.to(torch.int32)
        dist.all_reduce(counts)
        return counts > 0, n_cells * self.world_size  # every process takes an equal part of the batch

    def variance(self, residual: torch.Tensor) -> torch.Tensor:
        r = residual.detach().double()
        stats = torch.cat(
            [r.sum(0), r.pow(2).sum().reshape(1), torch.tensor([r.shape[0]], dtype=r.dtype, device=r.device)]
        )
        dist.all_reduce(stats)
        n = stats[-1]
        mean = stats[:-2] / n
        return (stats[-2] / n - mean.pow(2).sum()).to(residual.dtype)

    def average(self, value: torch.Tensor) -> torch.Tensor:
        out = value.detach().clone()
        dist.all_reduce(out)
        return out / self.world_size

    def gradients(self, model: SparseAutoencoder) -> None:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        out = torch.empty(self.world_size * values.numel(), dtype=values.dtype, device=values.device)
        _all_gather(out, values.contiguous())
        return out

    def take(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        own = torch.div(cells, x.shape[0], rounding_mode="floor") == self.rank
        out = torch.zeros(len(cells), x.shape[1], dtype=x.dtype, device=x.device)
        out[own] = x[cells[own] - self.rank * x.shape[0]]
        dist.all_reduce(out)  # each row is non-zero on its owner only, so the sum is exact
        return out

    def fvu(self, acc, n_inputs: int) -> None:
        total = acc.sum if torch.is_tensor(acc.sum) else torch.zeros(n_inputs, dtype=torch.float64)
        extra = torch.tensor([float(acc.sse), float(acc.sumsq), acc.n], dtype=torch.float64)
        stats = torch.cat([total.double().to(self.device), extra.to(self.device)])
        dist.all_reduce(stats)
        acc.sum = stats[:n_inputs]
        acc.sse, acc.sumsq, acc.n = float(stats[n_inputs]), float(stats[n_inputs + 1]), int(stats[n_inputs + 2])

    def total(self, *values: float) -> tuple[float, ...]:
        stats = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(stats)
        return tuple(stats.tolist())
