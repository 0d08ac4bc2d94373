"""Episodic training: AdamW with warm-up and cosine decay, clipping, validation mAP, checkpoints, resume.

Every batch is a set of fresh episodes from the *base* classes; validation uses the fixed *val*
episodes (val classes are never trained on); the test classes are only touched by evaluation.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoints import save_checkpoint
from .config import Config
from .data.episodes import RandomEpisodes, World, collate
from .inference import evaluate_model
from .losses import fscal_loss
from .model import FSCAL
from .runs import check_positive, config_from_options, open_run, validate_training_data
from .runtime import asked_threads, configure_process, cores, free_threads
from .utils import FscalError, get_device, seed_everything, where


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warm-up for ``cfg.optim.warmup`` steps, then cosine decay to 5% at ``cfg.optim.steps``."""
    if step < cfg.optim.warmup:
        return (step + 1) / cfg.optim.warmup
    progress = (step - cfg.optim.warmup) / max(1, cfg.optim.steps - cfg.optim.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: Config, data, out, *, seed: int = 0, device=None, resume: bool = False,
          overwrite: bool = False, threads: int | None = None, progress: bool = True, callback=None,
          stop_at: int | None = None, feature_dim: str | None = None) -> dict:
    """Train ``FSCAL(cfg)`` on the base classes of ``data``; write ``out/{best,last}.pt``,
    ``out/config.json`` and ``out/metrics.jsonl``. Returns the last validation metrics.

    ``resume=True`` continues ``out/last.pt`` to exactly the numbers an uninterrupted run gives.
    ``callback(record)`` is called with every logged record (the notebook's live plot uses it).
    ``stop_at`` ends the loop early at that step, as an interruption would (tests of resume).
    ``feature_dim="data"`` takes the data's feature width; otherwise a config whose
    ``data.feature_dim`` differs from the data's is an error.

    The run directory is owned (:mod:`fscal_edu.runs`): one that holds a run is an error unless
    ``resume`` (which must be this very run: same config, seed, data) or ``overwrite`` (the old
    run is moved aside first); every file the run reads is checked before anything is written.
    ``threads``: torch's CPU thread count, stored in the run (a resume uses the stored one);
    by default the count given to :func:`~fscal_edu.runtime.configure_process`, else one thread
    per free core (:func:`~fscal_edu.runtime.free_threads`). Same seed and thread count, same numbers.
    """
    if stop_at is not None:
        check_positive("stop_at", stop_at)
    world = data if isinstance(data, World) else World(data)
    if feature_dim == "data":
        cfg = cfg.replace(feature_dim=world.meta.feature_dim)
    elif feature_dim is not None:
        raise ValueError(f"train: feature_dim must be None or 'data', got {feature_dim!r}")
    if world.meta.feature_dim != cfg.data.feature_dim:
        raise FscalError(f"{where(file=world.root / 'features.json', field='feature_dim')}: the data has "
                         f"features of width {world.meta.feature_dim}, the config's data.feature_dim is "
                         f"{cfg.data.feature_dim} (pass feature_dim=\"data\" to take the data's width)")
    out = Path(out)
    device = get_device(device)
    threads = threads or asked_threads()        # an explicit count, else the process's, else the policy
    how = "asked" if threads else "one per free core"
    threads = threads or free_threads()                                        # recorded in the run
    run = open_run(out, cfg, seed=seed, dataset=world.root, threads=threads, resume=resume, overwrite=overwrite)
    configure_process(threads=run.threads)
    if progress:
        how = "the run's own" if resume else how
        print(f"torch threads: {run.threads} ({how}, of {cores()} cores; --threads N to choose)")
    validate_training_data(world, cfg, progress=progress)
    run.begin()                  # the first write: the inputs are valid
    seed_everything(seed)
    model = FSCAL(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    step, best = run.step, run.best
    if run.state is not None:
        model.load_state_dict(run.state["model"])
        optimizer.load_state_dict(run.state["optimizer"])
        scheduler.load_state_dict(run.state["scheduler"])
        torch.set_rng_state(run.state["torch_rng"])
    opt = cfg.optim
    episodes = RandomEpisodes(world, "base", cfg.data.shots, opt.steps * opt.batch_size, cfg.data.T, cfg.data.T_S, seed)
    amp = device.type == "cuda"

    def log(record):
        run.log(record)
        if callback is not None:
            callback(record)

    def validate():
        metrics, _ = evaluate_model(model, world, "val", cfg.data.shots, limit=cfg.optim.val_episodes, device=device)
        model.train()
        return {"val_mAP@0.5": metrics["mAP@0.5"], "val_average_mAP": metrics["average_mAP"]}

    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(range(step, min(opt.steps, stop_at or opt.steps)), desc=f"train {cfg.preset}", disable=not progress,
               initial=step, total=cfg.optim.steps)
    model.train()
    for step in bar:
        batch = collate([episodes[i] for i in range(step * cfg.optim.batch_size, (step + 1) * cfg.optim.batch_size)])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out_ = model(batch["query"], batch["support"])
        terms = fscal_loss(out_, batch, cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        record = {"step": step + 1, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                  **{k: round(v.item(), 5) for k, v in terms.items()}}
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if (step + 1) % cfg.optim.eval_every == 0 or step + 1 == cfg.optim.steps:
            record.update(validate())
            if record["val_mAP@0.5"] > best:
                best = record["val_mAP@0.5"]
                save_checkpoint(out / "best.pt", model, step=step + 1, best=best)
            # last.pt carries every record so far, this one included: a kill before log() loses nothing
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, step=step + 1, best=best,
                            extra=run.checkpoint_extra(record))
        log(record)
    return {"best_val_mAP@0.5": best, "steps": cfg.optim.steps, "train_time_s": round(time.perf_counter() - start, 2),
            "cpu_time_s": round(time.process_time() - cpu_start, 2)}


def main_train(args) -> int:
    """``fscal-edu train``: train, then print the best validation mAP as a last line of JSON."""
    cfg, seed = config_from_options(out=args.out, resume=args.resume, preset=args.preset, shots=args.shots,
                                    steps=args.steps, ablate=args.ablate, seed=args.seed)
    summary = train(cfg, args.data, args.out, seed=seed, device=args.device, resume=args.resume,
                    overwrite=args.overwrite, threads=args.threads, feature_dim="data")
    written = [name for name in ("best.pt", "last.pt", "config.json", "metrics.jsonl")
               if (Path(args.out) / name).is_file()]
    print(f"wrote {args.out}/: {', '.join(written)}")
    print(json.dumps(summary))
    return 0
