"""Episodic training: AdamW with warm-up and cosine decay, clipping, validation mAP, checkpoints, resume.

Every batch is a set of fresh episodes from the *base* classes; validation uses the fixed *val*
episodes (val classes are never trained on); the test classes are only touched by evaluation.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import distributed
from .checkpoints import save_checkpoint
from .config import Config
from .data.episodes import RandomEpisodes, World, collate
from .inference import evaluate_model
from .losses import fscal_loss, relation_draw
from .model import FSCAL
from .runs import Run, lock_run, open_run, validate_training_data
from .runtime import configure_process, cores, free_threads
from .utils import FscalError, check_int, get_device, seed_everything, where


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warm-up for ``cfg.optim.warmup`` steps, then cosine decay to 5% at ``cfg.optim.steps``."""
    if step < cfg.optim.warmup:
        return (step + 1) / cfg.optim.warmup
    progress = (step - cfg.optim.warmup) / max(1, cfg.optim.steps - cfg.optim.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: Config, data, out, *, seed: int = 0, device=None, resume: bool = False,
          overwrite: bool = False, threads: int | None = None, progress: bool = True, callback=None,
          stop_at: int | None = None, feature_dim: str | None = None, precision: str = "auto",
          workers: int | None = None, parts=None) -> dict:
    """Train ``FSCAL(cfg)`` on the base classes of ``data``; write ``out/{best,last}.pt``,
    ``out/config.json`` and ``out/metrics.jsonl``. Returns the best validation mAP@0.5 and timings.

    ``resume=True`` continues ``out/last.pt`` to exactly the numbers an uninterrupted run gives.
    ``callback(record)`` is called with every logged record (the notebook's live plot uses it).
    ``stop_at`` ends the loop early at that step, as an interruption would (tests of resume).
    ``feature_dim="data"`` takes the data's feature width; otherwise a config whose
    ``data.feature_dim`` differs from the data's is an error.
    ``precision``: ``"auto"`` (bf16 autocast on CUDA, float32 elsewhere), ``"bf16"`` or ``"fp32"``;
    autocast covers forward and loss. ``workers``: DataLoader processes that build the batches
    ahead of time (default 2 on CUDA, 0 = in this process, elsewhere); they never change the numbers.
    ``parts`` (:class:`fscal_edu.parts.Parts`, default the library's own functions): the functions
    the model and the loss run (``FSCAL(cfg, parts)``, ``fscal_loss(..., parts=parts)``); the
    reference parts give exactly the numbers of ``parts=None``.

    ``threads``: torch's CPU thread count for this run, stored in it (a resume uses the stored one).
    Default ``None``: one thread per free core (:func:`~fscal_edu.runtime.free_threads`; under
    torchrun on CPU, the cores shared out among the local processes). Nothing else sets it: an
    earlier :func:`~fscal_edu.runtime.configure_process` call does not. Same seed and thread
    count, same numbers.

    Under ``torchrun`` (:mod:`fscal_edu.distributed`) every process runs this function on its share
    of each global batch, and the losses are those of the global batch, so N processes log what one
    process logs; rank 0 alone validates, logs and writes the files. ``last.pt`` holds every rank's
    CPU and CUDA random state (``extra["rng"]``, gathered by rank 0) for an exact resume.

    The run directory is owned (:mod:`fscal_edu.runs`): one that holds a run is an error unless
    ``resume`` (which must be this very run: same config, seed, data) or ``overwrite`` (the old
    run is moved aside first); every file the run reads is checked before anything is written.
    """
    world, cfg = _checked_inputs(cfg, data, feature_dim, precision, stop_at)
    dist = distributed.setup(get_device(device))     # torchrun's process group, or this one process
    finished, run = False, None
    try:
        run = _open_run(Path(out), world, cfg, dist, seed=seed, threads=threads, resume=resume,
                        overwrite=overwrite, progress=progress and dist.is_main)
        t = _build(cfg, world, run, dist, seed=seed, precision=precision, parts=parts)
        stop = min(cfg.optim.steps, stop_at or cfg.optim.steps)
        loader = training_loader(world, cfg, seed, run.step, stop, dist, workers)
        summary = _loop(t, loader, stop, progress=progress and dist.is_main, callback=callback)
        finished = True
        return summary
    finally:
        if run is not None:
            run.release()            # the folder's lock, on every exit path (an error, Ctrl-C)
        _leave(dist, finished)


# ---------------------------------------------------------------------------------------------
# The steps of train()
# ---------------------------------------------------------------------------------------------

@dataclass
class _Training:
    """What the loop works on: the run, the model (``net``: itself, or DDP around it), its optimiser."""
    cfg: Config
    world: World
    run: Run
    dist: distributed.Dist
    model: FSCAL
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    seed: int
    amp: bool
    parts: object = None


def _checked_inputs(cfg: Config, data, feature_dim, precision: str, stop_at) -> tuple[World, Config]:
    """The world, and the config with the data's feature width if asked; bad arguments fail here."""
    if stop_at is not None:
        check_int(stop_at, at_least=1, field="stop_at")
    world = data if isinstance(data, World) else World(data)
    if feature_dim == "data":
        cfg = cfg.replace(feature_dim=world.meta.feature_dim)
    elif feature_dim is not None:
        raise FscalError(f"{where(field='feature_dim')}: must be None or 'data', got {feature_dim!r}")
    if world.meta.feature_dim != cfg.data.feature_dim:
        raise FscalError(f"{where(file=world.root / 'features.json', field='feature_dim')}: the data has "
                         f"features of width {world.meta.feature_dim}, the config's data.feature_dim is "
                         f"{cfg.data.feature_dim} (pass feature_dim=\"data\" to take the data's width)")
    if precision not in ("auto", "bf16", "fp32"):
        raise FscalError(f"{where(field='precision')}: choose auto, bf16 or fp32, got {precision!r}")
    return world, cfg


def _open_run(out: Path, world: World, cfg: Config, dist, *, seed: int, threads, resume: bool,
              overwrite: bool, progress: bool) -> Run:
    """Process set-up and the run folder: the thread count, the ownership and resume checks, the
    data checks, then (rank 0) the run's first files."""
    dist.local_batch(cfg.optim.batch_size)            # a clear error when R does not divide the batch
    how = "asked" if threads else "one per free core"
    if threads is None and dist.distributed and dist.device.type == "cpu":
        threads, how = max(1, cores() // dist.local_world_size), "the cores shared by the local ranks"
    threads = threads or free_threads()                                        # recorded in the run
    run = open_run(out, cfg, seed=seed, dataset=world.root, threads=threads, resume=resume, overwrite=overwrite)
    configure_process(threads=run.threads)
    if progress:
        how = "the run's own" if resume else how
        print(f"torch threads: {run.threads} ({how}, of {cores()} cores; --threads N to choose)")
    if dist.is_main:
        validate_training_data(world, cfg, progress=progress)
    dist.barrier()               # every rank has checked the run directory before rank 0 writes
    if dist.is_main:             # the first write, under the folder's lock: the inputs are valid
        run = lock_run(run, cfg, seed=seed)
    return run


def _build(cfg: Config, world: World, run: Run, dist, *, seed: int, precision: str, parts=None) -> _Training:
    """Model and optimiser: AdamW, warm-up + cosine; on resume, their states and the random state."""
    device = dist.device
    seed_everything(seed)
    model = FSCAL(cfg, parts).to(device)
    if not cfg.switches.relation:    # never used: frozen, so that DDP needs no find_unused_parameters
        model.head.g.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    if run.state is not None:
        model.load_state_dict(run.state["model"])
        optimizer.load_state_dict(run.state["optimizer"])
        scheduler.load_state_dict(run.state["scheduler"])
        ranks = (run.state.get("extra") or {}).get("rng") or [{"cpu": run.state["torch_rng"]}]
        distributed.set_rng_state(ranks[dist.rank] if dist.rank < len(ranks) else ranks[0], device)
    net = model if not dist.distributed else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **_no_buffer_sync())
    amp = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return _Training(cfg, world, run, dist, model, net, optimizer, scheduler, seed, amp, parts)


def _loop(t: _Training, loader: DataLoader, stop: int, *, progress: bool, callback) -> dict:
    """The steps ``run.step <= step < stop``: one optimiser step each, validation and checkpoints
    every ``eval_every`` steps, one logged record per step. Returns the run's summary."""
    opt, best = t.cfg.optim, t.run.best
    start, cpu_start, waited = time.perf_counter(), time.process_time(), 0.0
    bar = tqdm(range(t.run.step, stop), desc=f"train {t.cfg.preset}", disable=not progress,
               initial=t.run.step, total=opt.steps)
    t.model.train()
    batches = iter(loader)
    for step in bar:
        t0 = time.perf_counter()
        batch = next(batches)                    # this rank's B / R episodes of the global batch
        waited += time.perf_counter() - t0
        record = _step(t, step, batch)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if (step + 1) % opt.eval_every == 0 or step + 1 == opt.steps:
            best = _validate_and_save(t, record, best)
        if t.dist.is_main:
            t.run.log(record)
            if callback is not None:
                callback(record)
    return {"best_val_mAP@0.5": best, "steps": opt.steps, "train_time_s": round(time.perf_counter() - start, 2),
            "cpu_time_s": round(time.process_time() - cpu_start, 2), "data_wait_s": round(waited, 3)}


def _step(t: _Training, step: int, batch: dict) -> dict:
    """One optimiser step on this rank's share of the global batch; the record of the global losses."""
    opt, dist, device = t.cfg.optim, t.dist, t.dist.device
    batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.amp):
        # everything the loss needs comes out of forward (DDP sees every parameter it uses)
        out = t.net(batch["query"], batch["support"], mask=batch["mask"], partners=dist.roll_global)
        draw = relation_draw(t.seed, step, opt.batch_size, out.logits.shape[1])[dist.rows(opt.batch_size)]
        terms = fscal_loss(out, batch, t.cfg.loss, draw=draw, dist=dist, parts=t.parts)   # this rank's share
    t.optimizer.zero_grad(set_to_none=True)
    (terms["loss"] * dist.world_size).backward()    # DDP averages over the R ranks; the shares add up
    grad_norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), opt.grad_clip)
    t.optimizer.step()
    t.scheduler.step()
    names = list(terms)
    totals = dist.all_sum(torch.stack([terms[k].detach().float() for k in names])).tolist()   # global terms
    return {"step": step + 1, "lr": t.scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
            **{k: round(v, 5) for k, v in zip(names, totals)}}


def _validate_and_save(t: _Training, record: dict, best: float) -> float:
    """Rank 0: validation mAP on the fixed val episodes into ``record``, ``best.pt`` when it is the
    best so far, ``last.pt`` always (with every rank's random state). Returns the best mAP@0.5."""
    dist, out, step = t.dist, t.run.out, record["step"]
    rng = dist.all_gather_object(distributed.rng_state(dist.device))   # every rank's, for an exact resume
    if dist.is_main:
        metrics, _ = evaluate_model(t.model, t.world, "val", t.cfg.data.shots, limit=t.cfg.optim.val_episodes,
                                    device=dist.device)
        t.model.train()
        record.update({"val_mAP@0.5": metrics["mAP@0.5"], "val_average_mAP": metrics["average_mAP"]})
        if record["val_mAP@0.5"] > best:
            best = record["val_mAP@0.5"]
            save_checkpoint(out / "best.pt", t.model, step=step, best=best)
        # last.pt carries every record so far, this one included: a kill before log() loses nothing
        save_checkpoint(out / "last.pt", t.model, t.optimizer, t.scheduler, step=step, best=best,
                        extra=t.run.checkpoint_extra(record) | {"rng": rng, "world_size": dist.world_size})
    dist.barrier()                       # the other ranks wait for rank 0's validation and files
    return best


def _leave(dist, finished: bool) -> None:
    """Teardown: leave the process group. After an error, without the last barrier, which would
    wait for ranks that may never reach it."""
    if finished:
        distributed.teardown(dist)
    elif dist.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _no_buffer_sync() -> dict:
    """The model's buffers (anchors, RoIAlign weights) are the same on every rank: no sync per forward."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def training_loader(world: World, cfg: Config, seed: int, start: int, stop: int, dist=None,
                    workers: int | None = None) -> DataLoader:
    """This rank's batches for the steps ``start <= step < stop``: the items
    ``step * batch_size + rank * B_local + j`` of :class:`RandomEpisodes`
    (:func:`fscal_edu.distributed.rank_items`), built by ``workers`` processes ahead of time.

    Item i depends only on (seed, i): workers, ranks and resuming never change the numbers. The
    features come from the shared float16 store; each worker keeps 1 / workers of the clip cache
    (:meth:`World.clip`), so that more workers do not mean more memory.
    """
    dist = dist or distributed.Dist()
    cuda = dist.device.type == "cuda"
    workers = (2 if cuda else 0) if workers is None else workers
    check_int(workers, at_least=0, field="workers")                            # DataLoader processes
    episodes = RandomEpisodes(world, "base", cfg.data.shots, cfg.optim.steps * cfg.optim.batch_size,
                              cfg.data.T, cfg.data.T_S, seed, mode=cfg.data.query_mode,
                              neg_frac=cfg.data.window_neg_frac, twin_partners=cfg.switches.twin_negatives,
                              pool=cfg.data.window_pool, average=cfg.data.resample_average)
    sampler = distributed.StepBatches(start, stop, cfg.optim.batch_size, dist.rank, dist.world_size)
    return DataLoader(episodes, batch_sampler=sampler, collate_fn=collate, num_workers=workers, pin_memory=cuda,
                      prefetch_factor=4 if workers else None, persistent_workers=False,
                      worker_init_fn=_share_clip_cache if workers else None,
                      generator=torch.Generator())   # never draws from the global RNG


def _share_clip_cache(worker_id: int) -> None:
    """In a DataLoader worker: this worker's share of the clip cache's budget."""
    info = torch.utils.data.get_worker_info()
    world = info.dataset.world
    world.CLIP_CACHE_BYTES = type(world).CLIP_CACHE_BYTES // info.num_workers
