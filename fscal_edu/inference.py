"""Inference on fixed episodes: scores and boundaries -> Soft-NMS -> seconds -> results JSON -> mAP."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data.episodes import EpisodeDataset, World, check_episodes, collate, episode_tensors
from .distributed import unwrap
from .evaluation import evaluate_fscal
from .postprocess import merge_detections, merge_window_edges, results_json
from .proposals import decode, proposal_names
from .utils import FscalError, check_int, where


@torch.no_grad()
def predict(model, world: World, episodes: list[dict], *, batch_size: int = 32, device=None,
            progress: bool = False, workers: int = 0, skip=(), query_mode: str | None = None,
            window_merge: bool | None = None) -> dict:
    """Run the model on ``episodes`` in batches; return an ActivityNet results JSON dict.

    ``workers`` DataLoader processes build the batches ahead of the model (pinned memory on CUDA).
    With ``cfg.data.query_mode == "window"`` a long query is read as overlapping windows
    (:class:`~fscal_edu.data.episodes.EpisodeDataset`); the detections of all its windows, mapped
    onto the video's snippet axis, are merged before one Soft-NMS and the conversion to seconds;
    ``cfg.data.window_pool`` reads the windows at a coarser rate, and ``cfg.data.window_merge`` adds
    the segments of an action cut by window edges put back together
    (:func:`~fscal_edu.postprocess.merge_window_edges`).
    ``skip`` names cross-attention stages to bypass (``FSCAL.forward``'s ``skip``; checked first).
    ``query_mode`` (``"resample"`` or ``"window"``) reads the queries another way than the model
    was trained with (a probe; default: the model's own ``cfg.data.query_mode``); ``window_merge``
    likewise switches the merge of detections cut by window edges on or off.
    """
    model = unwrap(model)                        # the model inside a DistributedDataParallel
    skip = model.check_skip(skip)                # a bad name fails before any data is read
    check_episodes(episodes, world.annotations)  # fields, known videos, unique ids: before any work
    reading = {k: v for k, v in (("query_mode", query_mode), ("window_merge", window_merge)) if v is not None}
    cfg = model.cfg.replace(**reading)                                       # a copy: the model's stays
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    data = EpisodeDataset(world, episodes, cfg.data.T, cfg.data.T_S, mode=cfg.data.query_mode,
                          stride=cfg.data.stride, pool=cfg.data.window_pool, average=cfg.data.resample_average)
    loader = DataLoader(data, batch_size=batch_size, collate_fn=collate, num_workers=workers,
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
                        generator=torch.Generator())     # never draws from the global RNG
    windows, axes = {}, {}                 # episode id -> [(segments, scores, offset, span)] of its windows
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        out = model(batch["query"].to(device, non_blocking=True), batch["support"].to(device, non_blocking=True),
                    mask=batch["mask"].to(device, non_blocking=True), skip=skip)
        finite = torch.isfinite(out.logits).all(1) & torch.isfinite(out.deltas).flatten(1).all(1)   # (B,)
        if not bool(finite.all()):            # the inputs are checked finite: the weights overflow
            raise FscalError(f"{where(field='model')}: the model's outputs hold NaN or inf on episode "
                             f"{batch['id'][int((~finite).nonzero()[0])]!r} (finite weights that overflow: "
                             f"a damaged checkpoint or a training that diverged)")
        scores = torch.sigmoid(out.logits.float()).cpu()                        # (B, N)
        if out.valid is not None:                                               # proposals in the padding
            scores = torch.where(out.valid.cpu(), scores, 0.0)
        segments = decode(out.anchors.cpu(), out.deltas.float().cpu())          # (B, N, 2) in the window
        for b, eid in enumerate(batch["id"]):   # onto the video's axis: + the window's offset
            windows.setdefault(eid, []).append((segments[b] + batch["offset"][b], scores[b], batch["offset"][b],
                                                int(batch["mask"][b].sum())))
            axes[eid] = batch["axis"][b]
    results = {}
    for ep in episodes:                          # all windows of an episode merged, then one Soft-NMS
        segs, scores, _, _ = zip(*windows[ep["id"]])
        if cfg.data.window_merge and cfg.data.query_mode == "window" and len(segs) > 1:
            joined = merge_window_edges(windows[ep["id"]], axis=axes[ep["id"]], score_floor=cfg.post.score_floor)
            segs, scores = (joined[0], *segs), (joined[1], *scores)     # merged first: they win ties
        results[ep["id"]] = merge_detections(torch.cat(segs), torch.cat(scores), cfg, world,
                                             video=ep["query"], axis=axes[ep["id"]])
    return results_json(results)


def evaluate_model(model, world: World, split: str, shots: int, *, limit: int | None = None,
                   batch_size: int = 32, device=None, progress: bool = False, workers: int = 0,
                   skip=(), query_mode: str | None = None, window_merge: bool | None = None) -> tuple[dict, dict]:
    """Predict the fixed ``split`` episodes and score them with the FS-CAL protocol (``skip``: stages
    bypassed, ``query_mode``: queries read another way, see :func:`predict`)."""
    if limit is not None:                        # a negative limit would drop episodes from the end
        check_int(limit, at_least=1, field="limit")
    episodes = world.episodes(split, shots)[:limit]
    results = predict(model, world, episodes, batch_size=batch_size, device=device, progress=progress,
                      workers=workers, skip=skip, query_mode=query_mode, window_merge=window_merge)
    return evaluate_fscal(episodes, world.annotations, results), results


def episode_outputs(model, world: World, episode: dict) -> dict:
    """Run ``model`` on one episode: ``{"attention": {stage: StageAttention}, "detections": [...]
    (its results-JSON entry, Soft-NMS applied), "proposals": names of the N_Q anchors, "top":
    index of the best-scored proposal}`` (what the attention explorer of notebook 08 draws)."""
    model = unwrap(model)
    cfg = model.cfg
    t = episode_tensors(world, episode, cfg.data.T, cfg.data.T_S)
    with torch.no_grad():
        out = model.eval()(t["query"][None], t["support"][None])
    return {"attention": out.attention, "detections": predict(model, world, [episode])["results"][episode["id"]],
            "proposals": proposal_names(out.anchors), "top": int(out.logits[0].argmax())}
