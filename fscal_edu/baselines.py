"""Training-free baselines: what a few-shot localizer must beat."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import reduce
from torch.utils.data import DataLoader

from .config import Config
from .data.episodes import EpisodeDataset, World, collate
from .evaluation import evaluate_fscal
from .postprocess import detections_to_results, results_json
from .proposals import make_anchors, roi_align_1d


def prototype_scores(query: torch.Tensor, support: torch.Tensor, anchors: torch.Tensor, cfg: Config):
    """Prototype matching: cosine similarity between each proposal's mean feature and the support prototype.

    ``query (B, T, C)``, ``support (B, K, T_S, C)`` -> scores ``(B, N)`` in [0, 1]. The prototype
    is the mean of every snippet of every support: a bag of features, blind to temporal order
    and to the query's context.
    """
    R = roi_align_1d(query, anchors, inside=cfg.model.roi_inside, context=0)           # (B, N, P, C)
    proposal = reduce(R, "b n p c -> b n c", "mean")                             # (B, N, C)
    prototype = reduce(support, "b k t c -> b c", "mean")                        # (B, C)
    cos = F.cosine_similarity(proposal, prototype.unsqueeze(1), dim=-1)          # (B, N)
    return (cos + 1) / 2


@torch.no_grad()
def evaluate_prototype(world: World, split: str, shots: int, cfg: Config | None = None,
                       batch_size: int = 64) -> tuple[dict, dict]:
    """Score prototype matching on the fixed episodes exactly like a trained model."""
    cfg = cfg or Config().replace(feature_dim=world.meta.feature_dim)
    episodes = world.episodes(split, shots)
    anchors = make_anchors(cfg.data.T, cfg.model.anchor_lengths, cfg.model.anchor_stride_frac)
    results = {}
    loader = DataLoader(EpisodeDataset(world, episodes, cfg.data.T, cfg.data.T_S), batch_size=batch_size,
                        collate_fn=collate)
    for batch in loader:
        scores = prototype_scores(batch["query"], batch["support"], anchors, cfg)
        segments = anchors.expand(len(scores), -1, -1)
        detections_to_results(batch, segments, scores, cfg, world, results)
    preds = results_json(results)
    return evaluate_fscal(episodes, world.annotations, preds), preds
