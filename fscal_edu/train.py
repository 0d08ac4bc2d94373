"""Episodic training: AdamW with warm-up and cosine decay, clipping, validation mAP, checkpoints, resume.

Every batch is a set of fresh episodes from the *base* classes; validation uses the fixed *val*
episodes (val classes are never trained on); the test classes are only touched by evaluation.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .config import Config
from .data.episodes import RandomEpisodes, World, collate
from .inference import evaluate_model
from .losses import fscal_loss
from .model import FSCAL
from .utils import FscalError, get_device, seed_everything, where

CHECKPOINT_FORMAT = "fscal-edu-checkpoint-v1"


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def save_checkpoint(path, model: FSCAL, optimizer=None, scheduler=None, *, step: int = 0,
                    best: float = -1.0, extra: dict | None = None) -> Path:
    """Write atomically: to ``path.tmp`` first, then rename, so a crash never leaves half a file."""
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict(),
             "step": step, "best": best, "torch_rng": torch.get_rng_state(), "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path) -> dict:
    """Load a checkpoint dict with ``weights_only=True``; clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FscalError(f"{where(file=path)}: checkpoint file is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FscalError(f"{where(file=path)}: not a readable checkpoint (corrupt or not a torch "
                         f"file): {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise FscalError(f"{where(file=path, field='format')}: not an fscal-edu checkpoint "
                         f"(expected {CHECKPOINT_FORMAT!r}, found {found!r})")
    return state


def load_model(path, *, feature_dim: int | None = None, device=None) -> FSCAL:
    """Rebuild the model from a checkpoint; ``feature_dim`` checks it against the data's width."""
    state = read_checkpoint(path)
    try:
        cfg = Config.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise FscalError(f"{where(file=path, field='config')}: {e}") from None
    if feature_dim is not None and feature_dim != cfg.feature_dim:
        raise FscalError(f"{where(file=path, field='feature_dim')}: the checkpoint was trained on "
                         f"features of width {cfg.feature_dim}, the data has width {feature_dim}")
    model = FSCAL(cfg)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise FscalError(f"{where(file=path, field='model')}: weights do not fit the config: "
                         f"{str(e).splitlines()[0][:200]}") from None
    return model.to(get_device(device) if not isinstance(device, torch.device) else device).eval()


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def lr_factor(step: int, cfg: Config) -> float:
    """Linear warm-up for ``cfg.warmup`` steps, then cosine decay to 5% at ``cfg.steps``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(cfg: Config, data, out, *, seed: int = 0, device=None, resume: bool = False,
          progress: bool = True, callback=None, stop_at: int | None = None) -> dict:
    """Train ``FSCAL(cfg)`` on the base classes of ``data``; write ``out/{best,last}.pt``,
    ``out/config.json`` and ``out/metrics.jsonl``. Returns the last validation metrics.

    ``resume=True`` continues ``out/last.pt`` to exactly the numbers an uninterrupted run gives.
    ``callback(record)`` is called with every logged record (the notebook's live plot uses it).
    ``stop_at`` ends the loop early at that step, as an interruption would (tests of resume).
    """
    world = data if isinstance(data, World) else World(data)
    if world.meta.feature_dim != cfg.feature_dim:
        cfg = cfg.replace(feature_dim=world.meta.feature_dim)
    if cfg.blind:
        cfg = cfg.replace(relation=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = get_device(device) if not isinstance(device, torch.device) else device
    seed_everything(seed)
    model = FSCAL(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    step, best = 0, -1.0
    log_path = out / "metrics.jsonl"
    if resume:
        state = read_checkpoint(out / "last.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step, best = state["step"], state["best"]
        kept = [ln for ln in log_path.read_text().splitlines() if json.loads(ln)["step"] <= step]
        log_path.write_text("".join(ln + "\n" for ln in kept))
    else:
        log_path.write_text("")
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "seed": seed, "data": str(world.root)},
                                                indent=1) + "\n")
    episodes = RandomEpisodes(world, "base", cfg.shots, cfg.steps * cfg.batch_size, cfg.T, cfg.T_S, seed)
    amp = device.type == "cuda"

    def log(record):
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if callback is not None:
            callback(record)

    def validate():
        metrics, _ = evaluate_model(model, world, "val", cfg.shots, limit=cfg.val_episodes, device=device)
        model.train()
        return {"val_mAP@0.5": metrics["mAP@0.5"], "val_average_mAP": metrics["average_mAP"]}

    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(range(step, min(cfg.steps, stop_at or cfg.steps)), desc=f"train {cfg.preset}", disable=not progress,
               initial=step, total=cfg.steps)
    model.train()
    for step in bar:
        batch = collate([episodes[i] for i in range(step * cfg.batch_size, (step + 1) * cfg.batch_size)])
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out_ = model(batch["query"], batch["support"])
        terms = fscal_loss(model, out_, batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        record = {"step": step + 1, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                  **{k: round(v.item(), 5) for k, v in terms.items()}}
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            record.update(validate())
            record["time_s"] = round(time.perf_counter() - start, 2)
            if record["val_mAP@0.5"] > best:
                best = record["val_mAP@0.5"]
                save_checkpoint(out / "best.pt", model, step=step + 1, best=best)
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, step=step + 1, best=best)
        log(record)
    return {"best_val_mAP@0.5": best, "steps": cfg.steps, "train_time_s": round(time.perf_counter() - start, 2),
            "cpu_time_s": round(time.process_time() - cpu_start, 2)}


def main_train(args) -> int:
    """``fscal-edu train``: train, then print the best validation mAP as a last line of JSON."""
    from .config import get_config
    overrides = {"shots": args.shots} | ({"steps": args.steps} if args.steps else {})
    cfg = get_config(args.preset, ablate=args.ablate, **overrides)
    summary = train(cfg, args.data, args.out, seed=args.seed, device=args.device, resume=args.resume)
    print(f"wrote {args.out}/best.pt, last.pt, config.json, metrics.jsonl")
    print(json.dumps(summary))
    return 0
