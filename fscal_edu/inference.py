"""Inference on fixed episodes: scores and boundaries -> Soft-NMS -> seconds -> results JSON -> mAP."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data.episodes import EpisodeDataset, World, collate
from .evaluation import evaluate_fscal
from .postprocess import soft_nms_1d, to_seconds
from .proposals import decode


def detections_to_results(batch: dict, segments: torch.Tensor, scores: torch.Tensor, cfg, world: World,
                          results: dict) -> None:
    """Soft-NMS each episode's scored segments (snippet coordinates) and add them in seconds."""
    for b, eid in enumerate(batch["id"]):
        seg, sc = soft_nms_1d(segments[b], scores[b], sigma=cfg.soft_nms_sigma,
                              score_floor=cfg.score_floor, top_k=cfg.top_k)
        sec = to_seconds(seg, duration=batch["duration"][b], num_snippets=cfg.T, meta=world.meta,
                         feat_len=len(world.features(batch["video"][b])))
        results[eid] = [{"label": "common", "score": float(s), "segment": [float(a), float(e)]}
                        for (a, e), s in zip(sec.tolist(), sc.tolist()) if e > a]


@torch.no_grad()
def predict(model, world: World, episodes: list[dict], *, batch_size: int = 32, device=None,
            progress: bool = False) -> dict:
    """Run the model on ``episodes`` in batches; return an ActivityNet results JSON dict."""
    cfg = model.cfg
    device = device or next(model.parameters()).device
    model.eval()
    loader = DataLoader(EpisodeDataset(world, episodes, cfg.T, cfg.T_S), batch_size=batch_size,
                        collate_fn=collate)
    results = {}
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        out = model(batch["query"].to(device), batch["support"].to(device))
        scores = torch.sigmoid(out.logits.float()).cpu()                        # (B, N)
        segments = decode(out.anchors.cpu(), out.deltas.float().cpu())          # (B, N, 2)
        detections_to_results(batch, segments, scores, cfg, world, results)
    return {"version": "fscal-edu", "external_data": {}, "results": results}


def evaluate_model(model, world: World, split: str, shots: int, *, limit: int | None = None,
                   batch_size: int = 32, device=None, progress: bool = False) -> tuple[dict, dict]:
    """Predict the fixed ``split`` episodes and score them with the FS-CAL protocol."""
    episodes = world.episodes(split, shots)[:limit]
    results = predict(model, world, episodes, batch_size=batch_size, device=device, progress=progress)
    return evaluate_fscal(episodes, world.annotations, results), results


def main_evaluate(args) -> int:
    """``fscal-edu evaluate``: print the metric table, then one JSON object as the last line."""
    import json

    from .baselines import evaluate_prototype
    from .train import load_model
    from .utils import get_device

    world = World(args.data)
    if args.baseline:
        metrics, results = evaluate_prototype(world, args.split, args.shots)
        name = f"baseline {args.baseline}"
    else:
        device = get_device(args.device)
        model = load_model(args.checkpoint, feature_dim=world.meta.feature_dim, device=device)
        metrics, results = evaluate_model(model, world, args.split, args.shots, device=device, progress=True)
        name = args.checkpoint
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f)
    print(f"{name}: {args.split} split, {args.shots}-shot, {len(world.episodes(args.split, args.shots))} episodes")
    print("tIoU   pooled mAP   per-class mAP")
    for t, a, b in zip(metrics["tiou_thresholds"], metrics["mAP"], metrics["per_class"]["mAP"]):
        print(f"{t:.2f}   {a:.4f}       {b:.4f}")
    print(f"avg    {metrics['average_mAP']:.4f}       {metrics['per_class']['average_mAP']:.4f}")
    summary = {"mAP@0.5": metrics["mAP@0.5"], "average_mAP": metrics["average_mAP"],
               "per_class_mAP@0.5": metrics["per_class"]["mAP@0.5"], "split": args.split, "shots": args.shots}
    print(json.dumps(summary))
    return 0
