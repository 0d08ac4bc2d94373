"""Training losses: ``L = L_cls + lambda_reg * L_reg + lambda_rel * L_rel``.

The loss only compares the model's outputs with the targets: everything it needs, the relation
logits included, comes out of :meth:`fscal_edu.model.FSCAL.forward` (so a wrapped model, e.g.
``DistributedDataParallel``, trains the same way).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import LossConfig
from .model import FSCALOutput
from .proposals import assign_labels, tiou


def touches(anchors: torch.Tensor, segments: torch.Tensor, seg_mask: torch.Tensor) -> torch.Tensor:
    """``anchors (N, 2)``, ``segments (B, G, 2)`` with ``seg_mask (B, G)`` -> ``(B, N)`` bool: the
    anchor overlaps at least one real segment (tIoU > 0: an overlap of positive length)."""
    return ((tiou(anchors.to(segments.dtype), segments) > 0) & seg_mask[:, None, :].to(segments.device)).any(-1)


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, *, dist=None) -> torch.Tensor:
    """BCE in which the positives and the negatives weigh one half each.

    A query has a few hundred proposals and only a handful of positives: a plain mean would
    teach "always say no". Entries where ``valid`` is False (the ignored band) do not count.
    Computed in float32 when the logits are bf16 or fp16 (autocast).

    With several processes (``dist``, :class:`fscal_edu.distributed.Dist`), each mean is this
    rank's sum over the *global* count: the ranks' values add up to the one-process loss.
    """
    x = _wide(logits)
    loss = F.binary_cross_entropy_with_logits(x, targets.to(x.dtype), reduction="none")
    pos, neg = valid & (targets > 0.5), valid & (targets <= 0.5)
    sums = torch.stack([torch.where(pos, loss, 0).sum(), torch.where(neg, loss, 0).sum()])   # (2,)
    return _mean_of_parts(sums, torch.stack([pos.sum(), neg.sum()]), dist)


def _wide(x: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 (autocast's outputs) -> float32; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def _mean_of_parts(sums: torch.Tensor, counts: torch.Tensor, dist=None) -> torch.Tensor:
    """``mean over the parts present of (sum_i / count_i)``, counts summed over ranks (no gradient)."""
    counts = counts.float() if dist is None else dist.all_sum(counts.float())        # (P,) global
    present = counts > 0
    means = sums / counts.clamp(min=1)                                               # (P,)
    return torch.where(present, means, 0).sum() / present.sum().clamp(min=1)


def relation_draw(seed: int, step: int, batch_size: int, n: int) -> torch.Tensor:
    """The relation loss's random numbers for one training step: ``(batch_size, N)`` uniforms.

    Drawn on the CPU from a generator seeded by (seed, step) alone, for the *global* batch, so
    that the share of negatives the relation module sees does not depend on the number of
    processes (each rank takes its rows), on the device, or on where a run was resumed.
    """
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    return torch.rand(batch_size, n, generator=g)


def relation_targets(labels: torch.Tensor, episode_label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the relation module is asked, for every proposal: ``labels (B, N)`` long (1 positive,
    0 negative, -1 not counted), ``episode_label (B,)`` the common class of each episode ->

    - ``own (B, N)`` float: the target of rho_{n,l} with the episode's own supports, 1 for a
      positive proposal, 0 for a negative, -1 where the proposal is not counted;
    - ``cross (B, N)`` bool: the positives whose partner episode b-1 (``torch.roll`` by one over the
      batch) has another class: paired with that episode's supports, they are negatives.
    """
    own = labels.float()                                                             # (B, N)
    # episode b-1's class: the partner of episode b                                  (B,)
    partner = torch.roll(episode_label, 1, 0)
    # cross-episode negatives: positives of an episode whose partner's class differs (B, N)
    cross = (labels == 1) & (episode_label != partner)[:, None]
    return own, cross


def proposal_targets(out: FSCALOutput, batch: dict, cfg: LossConfig, *, tiou=tiou):
    """What the loss asks of each proposal: ``pos (B, N)``, ``valid (B, N)`` (counted at all:
    a negative is ``valid & ~pos``) and the regression ``targets (B, N, 2)``.

    Labels by tIoU with the common class's instances (:func:`~fscal_edu.proposals.assign_labels`);
    not counted: the band between ``neg_iou`` and ``pos_iou``, proposals in a window's padding
    (``out.valid``), and negatives that touch an instance of a class outside the training split
    (``batch["ignore"]``), so that no val or test class reaches training, not even as "no".
    """
    labels, targets, _ = assign_labels(out.anchors, batch["gt"], batch["gt_mask"], pos_iou=cfg.pos_iou,
                                       neg_iou=cfg.neg_iou, tiou=tiou)               # (B, N), (B, N, 2)
    valid = (labels >= 0) & out.valid if out.valid is not None else labels >= 0
    if "ignore" in batch:
        valid = valid & ((labels == 1) | ~touches(out.anchors, batch["ignore"], batch["ignore_mask"]))
    return valid & (labels == 1), valid, targets


def fscal_loss(out: FSCALOutput, batch: dict, cfg: LossConfig, *, draw: torch.Tensor | None = None,
               dist=None, parts=None) -> dict:
    """All loss terms for one batch; ``"loss"`` is the weighted sum that training minimises.

    * ``cls``: proposals with tIoU >= pos_iou to an instance of the common class are positive,
      < neg_iou negative (instances of *other* training classes are negatives too), the rest
      ignored, as are padding and val/test-class instances (:func:`proposal_targets`).
    * ``reg``: SmoothL1 between predicted and target offsets, positives only.
    * ``rel`` (when ``out`` carries relation logits, i.e. the model has the relation module and
      ran in training mode): a relation score rho_{n,l} for every (proposal, support) pair: 1 for
      positive proposals with their own episode's supports, 0 for negative proposals, and 0 for
      positive proposals paired with the supports of episode b-1 when its class differs
      (cross-episode negatives). There the same positive proposal gets target 1 or 0 depending
      only on the supports it is paired with.

    ``draw`` (B, N): uniforms that pick the relation module's share of negatives (see
    :func:`relation_draw`; default ``torch.rand``). ``dist``: with several processes, every term
    is this rank's share of the global batch's term (the shares add up to it; see
    :mod:`fscal_edu.distributed`), and episode b-1 is taken from the global batch.
    ``parts`` (:class:`fscal_edu.parts.Parts`, default the library's): the ``tiou`` of the label
    assignment and the ``relation_targets`` (one process; several use the global batch's partner).
    """
    tiou_fn = tiou if parts is None else parts.tiou
    pos, valid, targets = proposal_targets(out, batch, cfg, tiou=tiou_fn)              # (B, N), (B, N), (B, N, 2)
    terms = {"cls": balanced_bce(out.logits, pos.float(), valid, dist=dist)}
    # SmoothL1, the mean over the positives' 2 offsets: sum over this rank / global count
    deltas = _wide(out.deltas)
    reg = F.smooth_l1_loss(deltas, targets.to(deltas.dtype), reduction="none").sum(-1)   # (B, N)
    terms["reg"] = _mean_of_parts(torch.where(pos, reg, 0).sum()[None], 2 * pos.sum()[None], dist)
    loss = terms["cls"] + cfg.lambda_reg * terms["reg"]
    if out.relation is not None:
        # the relation module looks at every positive and a random share (rel_neg_frac) of the negatives
        draw = torch.rand(pos.shape, device=pos.device) if draw is None else draw
        keep = pos | (valid & ~pos & (draw.to(pos.device) < cfg.rel_neg_frac))       # (B, N)
        own, cross = _relation_targets(pos, valid, batch["label"].to(pos.device), dist, parts)   # (B, N) each
        K = out.relation.shape[-1]
        rho = _wide(out.relation)                                                    # (B, N, K) own supports
        rho_x = _wide(out.relation_cross)                                            # (B, N, K) episode b-1's
        own_pos, own_neg = (keep & (own == 1))[..., None], (keep & (own == 0))[..., None]   # (B, N, 1)
        bce = lambda x, t: F.binary_cross_entropy_with_logits(x, torch.full_like(x, t), reduction="none")  # noqa: E731
        # positives: own supports, rho -> 1; negatives: own supports of negative proposals and
        # the cross-episode pairs, rho -> 0
        sums = torch.stack([torch.where(own_pos, bce(rho, 1.0), 0).sum(),
                            torch.where(own_neg, bce(rho, 0.0), 0).sum()
                            + torch.where(cross[..., None], bce(rho_x, 0.0), 0).sum()])
        counts = torch.stack([own_pos.sum() * K, (own_neg.sum() + cross.sum()) * K])
        terms["rel"] = _mean_of_parts(sums, counts, dist)
        loss = loss + cfg.lambda_rel * terms["rel"]
    terms["loss"] = loss
    return terms


def _relation_targets(pos, valid, label, dist, parts):
    """``own (B, N)``, ``cross (B, N)`` of :func:`relation_targets` from the proposals' ``pos`` and
    ``valid``: with one process by ``parts.relation_targets``; with several, episode b-1 is the
    partner in the *global* batch (:meth:`~fscal_edu.distributed.Dist.roll_global`)."""
    # labels: 1 positive, 0 counted negative, -1 not counted                         (B, N)
    labels = torch.where(pos, 1, torch.where(valid, 0, -1))
    if dist is None or not dist.distributed:
        return (relation_targets if parts is None else parts.relation_targets)(labels, label)
    differs = label != dist.roll_global(label)                                       # (B,)
    return labels.float(), pos & differs[:, None]
