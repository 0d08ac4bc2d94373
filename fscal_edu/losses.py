"""Training losses: ``L = L_cls + lambda_reg * L_reg + lambda_rel * L_rel``.

The loss only compares the model's outputs with the targets: everything it needs, the relation
logits included, comes out of :meth:`fscal_edu.model.FSCAL.forward` (so a wrapped model, e.g.
``DistributedDataParallel``, trains the same way).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig
from .model import FSCALOutput
from .proposals import assign_labels


def balanced_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """BCE in which the positives and the negatives weigh one half each.

    A query has a few hundred proposals and only a handful of positives: a plain mean would
    teach "always say no". Entries where ``valid`` is False (the ignored band) do not count.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pos, neg = valid & (targets > 0.5), valid & (targets <= 0.5)
    parts = [loss[m].mean() for m in (pos, neg) if m.any()]
    return sum(parts) / len(parts) if parts else logits.sum() * 0


def fscal_loss(out: FSCALOutput, batch: dict, cfg: LossConfig) -> dict:
    """All loss terms for one batch; ``"loss"`` is the weighted sum that training minimises.

    * ``cls``: proposals with tIoU >= pos_iou to an instance of the common class are positive,
      < neg_iou negative (instances of *other* classes are negatives too), the rest ignored.
    * ``reg``: SmoothL1 between predicted and target offsets, positives only.
    * ``rel`` (when ``out`` carries relation logits, i.e. the model has the relation module and
      ran in training mode): a relation score rho_{n,l} for every (proposal, support) pair: 1 for
      positive proposals with their own episode's supports, 0 for negative proposals, and 0 for
      positive proposals paired with the supports of episode b-1 when its class differs
      (cross-episode negatives). Those negatives are the only term that says "this proposal is
      an action, but not *that* action".
    """
    labels, targets, _ = assign_labels(out.anchors, batch["gt"], batch["gt_mask"],
                                       pos_iou=cfg.pos_iou, neg_iou=cfg.neg_iou)     # (B, N), (B, N, 2)
    pos, valid = labels == 1, labels >= 0
    terms = {"cls": balanced_bce(out.logits, pos.float(), valid)}
    terms["reg"] = (F.smooth_l1_loss(out.deltas[pos], targets[pos]) if pos.any()
                    else out.deltas.sum() * 0)
    loss = terms["cls"] + cfg.lambda_reg * terms["reg"]
    if out.relation is not None:
        # the relation module looks at every positive and a random share (rel_neg_frac) of the negatives
        keep = pos | (valid & ~pos & (torch.rand(pos.shape, device=pos.device) < cfg.rel_neg_frac))  # (B, N)
        other = torch.roll(torch.arange(len(labels), device=labels.device), 1)      # episode b-1
        differs = (batch["label"] != batch["label"][other]).to(pos.device)          # (B,)
        cross = pos & differs[:, None]                                               # (B, N)
        # own supports: rho towards 1 for positives, 0 for negatives                 (M, K)
        rho_own = out.relation[keep]
        # cross-episode negatives: positives of episode b against the supports of episode b-1
        rho_x = out.relation_cross[cross]                                            # (M_x, K)
        logits = torch.cat([rho_own.flatten(), rho_x.flatten()])
        t = torch.cat([pos[keep].float()[:, None].expand_as(rho_own).flatten(), rho_x.new_zeros(rho_x.numel())])
        terms["rel"] = balanced_bce(logits, t, torch.ones_like(t, dtype=torch.bool))
        loss = loss + cfg.lambda_rel * terms["rel"]
    terms["loss"] = loss
    return terms
