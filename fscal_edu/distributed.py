"""One to N training processes on PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m fscal_edu train ...`` starts N copies of the ``fscal-edu train``
process; torchrun tells each one who it is through environment variables (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` reads them and
joins the process group (NCCL on CUDA, gloo on CPU); without them it returns a one-process
:class:`Dist` that does nothing, so the same training code serves 1 and N processes.

**One global batch.** The preset's ``batch_size`` stays the *global* batch: each of the R ranks
draws ``B_local = batch_size / R`` episodes, rank r taking the items
``step * batch_size + r * B_local + j`` (:func:`rank_items`). Item i depends only on (seed, i),
so R processes train on exactly the episodes one process trains on, and the losses
(:mod:`fscal_edu.losses`) are written as functions of the global batch:

* a mean over a set (the positives of the batch, say) is ``local sum / global count``: the counts
  are summed over ranks (:meth:`Dist.all_sum`, no gradient), and each rank's share is multiplied
  by R before ``backward`` because DDP *averages* gradients over ranks;
* the cross-episode negatives pair episode b with episode b-1 *of the global batch*:
  :meth:`Dist.roll_global` gathers the per-episode support summaries of all ranks with the
  autograd-aware ``all_gather`` (its backward sends each rank the gradient of its own rows).

Rank 0 alone validates, logs and writes checkpoints; the others wait at :meth:`Dist.barrier`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch.utils.data import Sampler

from .utils import FscalError, get_device


@dataclass
class Dist:
    """Who this process is in the run: ``rank`` of ``world_size``, its ``device``; collectives.

    With ``world_size == 1`` every method is the one-process identity (no process group needed).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1         # processes on this machine (they share its cores)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None        # "nccl" or "gloo" when a process group is up
    owns_group: bool = False          # setup() started the group, so teardown() ends it
    side_group: object = None         # a second group for the loss's collectives (not DDP's buckets)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # --- the global batch ---------------------------------------------------------------------

    def local_batch(self, batch_size: int) -> int:
        """``B_local = batch_size / R``; an error naming the field when R does not divide it."""
        return local_batch_size(batch_size, self.world_size)

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a ``(batch_size, ...)`` global tensor."""
        b = self.local_batch(batch_size)
        return slice(self.rank * b, (self.rank + 1) * b)

    # --- collectives (identities with one process) ---------------------------------------------

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over ranks, as a new detached tensor (counts, logged loss terms)."""
        x = x.detach().clone()
        if self.distributed:
            y = x.float() if self.backend == "gloo" and x.dtype in (torch.bfloat16, torch.float16) else x
            tdist.all_reduce(y, group=self.side_group)
            x = y.to(x.dtype)
        return x

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``(B_local, ...)`` on every rank -> ``(R * B_local, ...)``, rank order; differentiable.

        The backward sums, over ranks, the gradients that reach each rank's rows and hands them to
        their owner (the autograd-aware all-gather of :class:`_GatherRows`).
        """
        if not self.distributed:
            return x
        dtype = x.dtype
        cast = self.backend == "gloo" and dtype in (torch.bfloat16, torch.float16)   # gloo: float32 only
        y = x.float() if cast else x
        out = _GatherRows.apply(y, self) if y.requires_grad else _all_gather_cat(y, self)
        return out.to(dtype) if cast else out

    def roll_global(self, x: torch.Tensor, shift: int = 1) -> torch.Tensor:
        """The rows of ``torch.roll(global_batch, shift, 0)`` that belong to this rank.

        With one process: ``torch.roll(x, shift, 0)``, i.e. row b gets episode b-1 (row 0 the
        last). With R ranks: the same rows of the *global* batch, so the first episode of rank r
        is paired with the last episode of rank r-1. Differentiable; ``roll`` and slicing only (no
        gather by duplicate index, whose CPU backward is not deterministic).
        """
        if not self.distributed:
            return torch.roll(x, shift, 0)
        full = self.gather(x)                                               # (R * B_local, ...)
        b = x.shape[0]
        return torch.roll(full, shift, 0)[self.rank * b:(self.rank + 1) * b]

    def all_gather_object(self, obj) -> list:
        """Every rank's ``obj`` (a small picklable thing: RNG states), in rank order."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out


def _all_gather_cat(x: torch.Tensor, d: Dist) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(d.world_size)]
    tdist.all_gather(parts, x.contiguous(), group=d.side_group)
    return torch.cat(parts, 0)                                              # (R * B_local, ...)


class _GatherRows(torch.autograd.Function):
    """All-gather with a gradient: forward concatenates every rank's rows; backward sums the
    gradients of the whole gathered tensor over ranks and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x, d):
        ctx.d, ctx.b = d, x.shape[0]
        return _all_gather_cat(x, d)

    @staticmethod
    def backward(ctx, grad):
        d, b = ctx.d, ctx.b
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad, group=d.side_group)                          # sum over ranks
        return grad[d.rank * b:(d.rank + 1) * b], None


def local_batch_size(batch_size: int, world_size: int) -> int:
    """``batch_size / world_size`` episodes per rank; a clear error when it does not divide."""
    if world_size < 1 or batch_size % world_size:
        raise FscalError(f"field 'batch_size': the global batch of {batch_size} episodes does not split "
                         f"evenly over {world_size} processes; choose a process count that divides "
                         f"{batch_size} (or change the preset's batch_size)")
    return batch_size // world_size


def rank_items(step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The dataset items of ``rank`` at ``step``: ``step * batch_size + rank * B_local + j``.

    Consecutive blocks, rank 0 first, so the ranks' rows one after another are the global batch
    (what :meth:`Dist.roll_global` relies on). Notebook 07's exercise asks for this function
    (:func:`fscal_edu.exercises_dist.check_rank_items`).
    """
    b = local_batch_size(batch_size, world_size)
    first = step * batch_size + rank * b
    return list(range(first, first + b))


class StepBatches(Sampler):
    """A batch sampler for ``DataLoader``: one list of item indices per step, ``start <= step < stop``.

    Resuming at step s starts the sampler at s, so a resumed run reads the items an uninterrupted
    run reads; workers only change *where* an item is built, never which one.
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch_size, self.rank, self.world_size = start, stop, batch_size, rank, world_size
        local_batch_size(batch_size, world_size)          # fail early

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield rank_items(step, self.batch_size, self.rank, self.world_size)

    def __len__(self):
        return max(0, self.stop - self.start)


def env_world() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from torchrun's environment; ``(0, 1, 0)`` without it."""
    def read(name, default):
        value = os.environ.get(name, "")
        if value == "":
            return default
        if not value.isdigit():
            raise FscalError(f"field {name!r}: the environment variable must be a non-negative integer, "
                             f"got {value!r}")
        return int(value)
    rank, world, local = read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0)
    if world < 1 or rank >= world:
        raise FscalError(f"field 'RANK': rank {rank} is outside a world of {world} process(es)")
    return rank, world, local


def setup(device=None) -> Dist:
    """Join the run that torchrun describes in the environment (or none: one process).

    ``device``: as :func:`fscal_edu.utils.get_device`; on CUDA each process takes
    ``cuda:LOCAL_RANK`` (and makes it the current device). Backend: NCCL on CUDA, gloo otherwise.
    A process group that already exists (a notebook or a test started one) is used as it is.
    """
    rank, world, local = env_world()
    device = get_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise FscalError(f"field 'LOCAL_RANK': local process {local} would take {device}, but this "
                             f"machine has {torch.cuda.device_count()} CUDA device(s); start at most that "
                             f"many processes per machine (torchrun --nproc_per_node)")
        torch.cuda.set_device(device)
    if world == 1 and not (tdist.is_available() and tdist.is_initialized()):
        return Dist(device=device)
    if not tdist.is_available():
        raise FscalError("field 'WORLD_SIZE': this PyTorch build has no torch.distributed")
    owns = not tdist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if owns:
        tdist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    else:
        backend = tdist.get_backend()
        rank, world = tdist.get_rank(), tdist.get_world_size()
    side = tdist.new_group(backend=backend) if world > 1 else None
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or world)
    return Dist(rank=rank, world_size=world, local_rank=local, local_world_size=local_world, device=device,
                backend=backend, owns_group=owns, side_group=side)


def teardown(d: Dist) -> None:
    """Leave the process group if :func:`setup` joined it (after a last barrier)."""
    if d.owns_group and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def unwrap(model):
    """The model inside a ``DistributedDataParallel`` (or any ``.module`` wrapper); else the model."""
    return getattr(model, "module", model)


def rng_state(device: torch.device) -> dict:
    """This process's random state: CPU, and CUDA of its device when on CUDA (for exact resume)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
