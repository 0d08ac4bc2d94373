"""Proposals: multi-scale anchors, temporal IoU, 1-D RoIAlign, training labels, AR@AN.

Everything here lives in snippet coordinates (see :mod:`fscal_edu.data.features`): a query of
``T`` snippets is the line ``[0, T]``, snippet ``i`` covers ``[i, i + 1)`` and sits at ``i + 0.5``.
A segment is a float pair ``(start, end)`` with ``start <= end``.

The pipeline: lay a few hundred windows of a geometric set of lengths over
the query (:func:`make_anchors`), read a fixed number of feature points inside and around each
window (:func:`roi_align_1d`) so that every proposal becomes one fixed-size token, and, for
training, say which anchors are foreground and how their boundaries should move
(:func:`assign_labels`, :func:`encode`, :func:`decode`). :func:`average_recall` measures how well
the proposals cover the ground truth before any classifier has a say.

The model holds RoIAlign over its anchors as one :class:`RoIAlign` operator and turns each read
proposal into a token with :func:`roi_align_mlp`: RoIAlign, then the proposal MLP, the same
numbers as :func:`roi_align_1d` followed by the MLP, computed in the cheaper order.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from einops import einsum, rearrange, repeat

from .config import LossConfig, ModelConfig
from .data.features import interpolate_at, interpolation_weights
from .utils import FscalError, where

# the defaults have one home each: anchor lengths in the model's config, the labelling thresholds
# in the loss's; the tIoU thresholds of AR@AN and mAP (0.5:0.05:0.95, as ActivityNet) here
ANCHOR_LENGTHS = ModelConfig.anchor_lengths
TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
# decode() clamps the predicted log width ratio to +-log(1000 / 16) (a width changes by at most
# a factor 62.5), the usual guard that keeps exp() finite on an untrained regressor.
MAX_LOG_WIDTH = math.log(1000.0 / 16)


def make_anchors(T: int, lengths=ANCHOR_LENGTHS, stride_frac: float = 0.25) -> torch.Tensor:
    """All windows of the given lengths that fit in ``[0, T]``: ``(N, 2)`` float32 ``[start, end]``.

    A window of length L slides with stride ``max(1, round(L * stride_frac))`` from start 0 while
    it stays inside the query. Ordered by length (as given), then by start. For T = 128 and the
    default lengths that is 361 anchors.
    """
    if T <= 0:
        raise FscalError(f"{where(field='T')}: the query needs at least one snippet, got T = {T}")
    rows = []
    for L in lengths:
        if L <= 0:
            raise FscalError(f"{where(field='lengths')}: anchor lengths must be positive, got {L}")
        if L > T:
            continue
        stride = max(1, round(L * stride_frac))
        starts = torch.arange(0, T - L + 1, stride, dtype=torch.float32)  # (n_L,)
        rows.append(torch.stack([starts, starts + L], dim=1))              # (n_L, 2)
    if not rows:
        raise FscalError(f"{where(field='lengths')}: no anchor length in {tuple(lengths)} fits "
                         f"in a query of T = {T} snippets")
    return torch.cat(rows)


def check_segments(x, name: str = "segments") -> None:
    """Raise :class:`FscalError` if ``x (..., 2)`` holds NaN/inf or an inverted segment (end < start)."""
    xp = torch if isinstance(x, torch.Tensor) else np
    if x.shape[-1] != 2:
        raise FscalError(f"{where(field=name)}: segments must have shape (..., 2), got {tuple(x.shape)}")
    if not bool(xp.isfinite(x).all()):
        raise FscalError(f"{where(field=name)}: NaN or inf in segment boundaries")
    bad = x[..., 1] < x[..., 0]
    if bool(bad.any()):
        first = [int(i) for i in (bad.nonzero() if xp is torch else np.argwhere(bad))[0]]
        raise FscalError(f"{where(field=name)}: inverted segment (end < start) at index {first}: "
                         f"{[float(v) for v in x[tuple(first)]]}")


def tiou(a, b):
    """Temporal IoU of every pair: ``a (..., N, 2)``, ``b (..., M, 2)`` -> ``(..., N, M)``.

    Works on torch tensors (differentiable, any device) and on numpy arrays (returns numpy, computed
    in float64 with the very operations of the official ActivityNet ``segment_iou``, so that
    evaluation reproduces its numbers bit for bit). Leading dimensions broadcast. Two segments with
    an empty union (both of length zero) have tIoU 0.

        tIoU(a, b) = |a ∩ b| / |a ∪ b|,   |a ∩ b| = max(0, min(a_e, b_e) - max(a_s, b_s)),
                                          |a ∪ b| = (b_e - b_s) + (a_e - a_s) - |a ∩ b|
    """
    xp = torch if isinstance(a, torch.Tensor) else np
    if xp is np:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    check_segments(a, "a")
    check_segments(b, "b")
    a_s, a_e = a[..., :, None, 0], a[..., :, None, 1]                  # (..., N, 1)
    b_s, b_e = b[..., None, :, 0], b[..., None, :, 1]                  # (..., 1, M)
    inter = (xp.minimum(a_e, b_e) - xp.maximum(a_s, b_s)).clip(min=0)   # (..., N, M)
    union = (b_e - b_s) + (a_e - a_s) - inter                           # (..., N, M)
    return inter / xp.where(union > 0, union, 1)                        # inter = 0 where union = 0


def roi_positions(segments: torch.Tensor, inside: int = 8, context: int = 2,
                  context_frac: float = 0.25) -> torch.Tensor:
    """Where RoIAlign reads a segment: ``(..., 2)`` -> ``(..., context + inside + context)``.

    With width ``w = e - s``: ``inside`` points at the centres of ``inside`` equal bins of
    ``[s, e]``, and ``context`` points at the bin centres of each side's context window, of width
    ``context_frac * w`` (``[s - context_frac * w, s]`` on the left, ``[e, e + context_frac * w]``
    on the right). Order: left context, inside, right context.
    """
    u_in = (torch.arange(inside, dtype=segments.dtype, device=segments.device) + 0.5) / inside
    u_ctx = (torch.arange(context, dtype=segments.dtype, device=segments.device) + 0.5) / context
    # offsets in units of w, measured from s
    rel = torch.cat([(u_ctx - 1) * context_frac, u_in, 1 + u_ctx * context_frac])  # (P,)
    s, e = segments[..., 0:1], segments[..., 1:2]                                   # (..., 1)
    return s + rel * (e - s)                                                        # (..., P)


def roi_align_1d(feats: torch.Tensor, segments: torch.Tensor, inside: int = 8, context: int = 2,
                 context_frac: float = 0.25) -> torch.Tensor:
    """1-D RoIAlign with context: ``feats (B, T, C)``, ``segments (B, N, 2)`` or ``(N, 2)`` ->
    ``(B, N, inside + 2 * context, C)``.

    Each segment is read at the points of :func:`roi_positions`; a point between two snippet
    centres mixes the two linearly, a point beyond the first or last centre takes that snippet
    (:func:`fscal_edu.data.features.interpolate_at`). Differentiable with respect to ``feats``
    and ``segments``; the points follow the segment, so every proposal gives the same number of
    values whatever its length.
    """
    B = feats.shape[0]
    if segments.dim() == 2:
        segments = repeat(segments, "n two -> b n two", b=B)
    check_segments(segments)
    pos = roi_positions(segments.to(feats.dtype), inside, context, context_frac)  # (B, N, P)
    P = pos.shape[-1]
    x = interpolate_at(feats, rearrange(pos, "b n p -> b (n p)"))                # (B, N*P, C)
    return rearrange(x, "b (n p) c -> b n p c", p=P)                            # (B, N, P, C)


def roi_align_matrix(segments: torch.Tensor, T: int, inside: int = 8, context: int = 2,
                     context_frac: float = 0.25) -> torch.Tensor:
    """1-D RoIAlign as a matrix: ``segments (N, 2)`` -> a sparse ``Phi (N * P, T)``.

    Reading a point between two snippet centres is linear in the features, so RoIAlign over
    fixed segments is one matrix with two non-zeros per row (weights ``1 - w`` and ``w`` on the
    two neighbouring snippets, :func:`fscal_edu.data.features.interpolation_weights`):

        roi_align_1d(E, segments)[b]  ==  (Phi @ E[b]).reshape(N, P, C)

    Row ``n * P + p`` is point ``p`` of segment ``n``. :class:`RoIAlign` holds it for
    :func:`roi_align_mlp`.
    """
    pos = roi_positions(segments, inside, context, context_frac)             # (N, P)
    N, P = pos.shape
    lo, hi, w = interpolation_weights(pos, T)                               # (N, P) each
    rows = torch.arange(N * P, device=segments.device)
    index = torch.stack([torch.cat([rows, rows]), torch.cat([lo.flatten(), hi.flatten()])])
    values = torch.cat([(1 - w).flatten(), w.flatten()])
    return torch.sparse_coo_tensor(index, values, (N * P, T), check_invariants=True).coalesce()  # (N*P, T)


class RoIAlign(nn.Module):
    """1-D RoIAlign over fixed segments of a ``T``-snippet axis (the query's anchors, or a whole
    support clip), the operator the model holds: ``RoIAlign(...)(E)`` is :func:`roi_align_1d`,
    ``E (B, T, C)`` -> ``(B, N, P, C)``.

    It also keeps :func:`roi_align_matrix` folded for :func:`roi_align_mlp`: :meth:`matrix` is
    ``Phi (N, T * P)`` with entry ``(n, t * P + p)`` the weight of snippet t in point p of segment
    n. Its buffers are not saved with the model (they follow from the config).
    """

    def __init__(self, segments: torch.Tensor, T: int, inside: int = 8, context: int = 2,
                 context_frac: float = 0.25):
        super().__init__()
        self.inside, self.context, self.context_frac = inside, context, context_frac
        self.P = inside + 2 * context
        Phi = roi_align_matrix(segments, T, inside, context, context_frac)         # (N*P, T)
        row, t = Phi.indices()
        self.register_buffer("segments", segments.clone(), persistent=False)       # (N, 2)
        self.register_buffer("index", torch.stack([row // self.P, t * self.P + row % self.P]),
                             persistent=False)                                      # (2, 2*N*P)
        self.register_buffer("weight", Phi.values(), persistent=False)             # (2*N*P,)
        self.shape = (Phi.shape[0] // self.P, T * self.P)

    def forward(self, E: torch.Tensor) -> torch.Tensor:       # (B, T, C) -> (B, N, P, C)
        return roi_align_1d(E, self.segments, self.inside, self.context, self.context_frac)

    def matrix(self) -> torch.Tensor:
        """The folded RoIAlign matrix, sparse ``(N, T * P)`` in the buffers' dtype and device."""
        return torch.sparse_coo_tensor(self.index, self.weight, self.shape, is_coalesced=True,
                                       check_invariants=False)                     # (N, T*P)


def roi_align_mlp(E: torch.Tensor, roi: RoIAlign, mlp: nn.Sequential) -> torch.Tensor:
    """RoIAlign, then an MLP that reads the P points side by side: ``E (B, T, d)`` -> ``(B, N, h_out)``,
    exactly ``mlp(rearrange(roi(E), "b n p d -> b n (p d)"))``, computed in the cheaper order.

    ``mlp`` starts with a linear layer ``x -> x W^T + b`` of ``P d`` inputs and ``h`` outputs (the
    proposal MLP: ``h = 2d``). RoIAlign reads point p of every segment as ``R_p = Phi_p E``
    ``(N, d)`` (``Phi_p (N, T)``: two weights per row); the layer reads ``[R_1; ...; R_P]`` side by
    side. Split its weight into one block per point, ``W_p = W[:, p d : (p + 1) d]^T`` ``(d, h)``;
    then, as matrix products associate,

        W [R_1; ...; R_P] + b  =  sum_p R_p W_p + b  =  sum_p (Phi_p E) W_p + b  =  sum_p Phi_p (E W_p) + b

    Both orders give the same numbers. Many segments (the query's N_Q = 361 anchors on T = 128
    snippets): ``E W_p`` costs T rows instead of N, so the first layer runs on the snippets and
    one sparse product interpolates its output (25 instead of 71 MFLOP per episode, quick preset).
    Few segments (``N < T``: a whole support clip, N = 1): RoIAlign first, as a dense product, then
    the layer. The rest of ``mlp`` follows.
    """
    first, rest = mlp[0], mlp[1:]
    B, T = E.shape[:2]
    P = roi.P
    Phi = roi.matrix()                                                               # (N, T*P)
    if Phi.shape[0] < T:     # few segments: R = RoIAlign(E), then W [R_1; ...; R_P] + b
        Phi_p = rearrange(Phi.to_dense().to(E.dtype), "n (t p) -> n t p", p=P)        # (N, T, P)
        R = einsum(Phi_p, E, "n t p, b t d -> b n p d")                               # (B, N, P, d)
        Z = first(rearrange(R, "b n p d -> b n (p d)"))                               # (B, N, h)
    else:                    # many segments: sum_p Phi_p (E W_p) + b, one sparse product for the batch
        W_p = rearrange(first.weight, "h (p d) -> d (p h)", p=P)                     # (d, P*h)
        H = rearrange(E @ W_p, "b t (p h) -> (t p) (b h)", p=P)                     # (T*P, B*h)
        # in Phi's dtype (float32, or float64 for a .double() model) with autocast off: autocast
        # would run the sparse product in bf16, whose backward then fails (Float vs BFloat16)
        with torch.autocast(E.device.type, enabled=False):
            Z = rearrange(torch.sparse.mm(Phi, H.to(Phi.dtype)), "n (b h) -> b n h", b=B) + first.bias  # (B, N, h)
    return rest(Z)                                                                   # (B, N, h_out)


def encode(anchors: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Regression targets of ``gt`` relative to ``anchors`` (both ``(..., 2)``) -> ``(..., 2)``.

        t_c = (c_gt - c_a) / w_a,     t_w = log(w_gt / w_a)

    with centres ``c = (s + e) / 2`` and widths ``w = e - s``.
    """
    c_a, w_a = (anchors[..., 0] + anchors[..., 1]) / 2, anchors[..., 1] - anchors[..., 0]
    c_g, w_g = (gt[..., 0] + gt[..., 1]) / 2, gt[..., 1] - gt[..., 0]
    return torch.stack([(c_g - c_a) / w_a, torch.log(w_g / w_a)], dim=-1)


def decode(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`encode`: segments ``(..., 2)`` from anchors and ``deltas (..., 2)``.

        c = c_a + t_c * w_a,     w = w_a * exp(t_w)

    ``t_w`` is clamped to ``[-MAX_LOG_WIDTH, MAX_LOG_WIDTH]`` so an untrained head cannot overflow.
    """
    c_a, w_a = (anchors[..., 0] + anchors[..., 1]) / 2, anchors[..., 1] - anchors[..., 0]
    c = c_a + deltas[..., 0] * w_a
    w = w_a * torch.exp(deltas[..., 1].clamp(-MAX_LOG_WIDTH, MAX_LOG_WIDTH))
    return torch.stack([c - w / 2, c + w / 2], dim=-1)


def assign_labels(anchors: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor,
                  pos_iou: float = LossConfig.pos_iou, neg_iou: float = LossConfig.neg_iou, *, tiou=tiou):
    """Training labels of every anchor in every query of the batch.

    ``anchors (N, 2)``, ``gt (B, G, 2)`` (padded), ``gt_mask (B, G)`` bool (True = a real instance).
    Returns ``labels (B, N)`` long, ``targets (B, N, 2)`` float, ``best_iou (B, N)``:

    - ``best_iou`` is each anchor's highest tIoU with a real instance (0 if the query has none);
    - label 1 (foreground) if ``best_iou >= pos_iou``, 0 (background) if ``< neg_iou``, and -1
      (ignored by the loss) in between;
    - **choice** (as Faster R-CNN): an instance that no anchor covers at ``pos_iou`` (a short one)
      still gets a positive: the anchor(s) with the highest tIoU to it (ties: all of them) are
      marked 1 if that tIoU is at least ``neg_iou``;
    - ``targets = encode(anchor, its best-matching instance)`` on positives, 0 elsewhere.

    ``tiou`` (default :func:`tiou`; a student's own in ``fscal_edu.parts``) is called once per query
    of the batch, ``tiou(anchors (N, 2), gt[b] (G, 2)) -> (N, G)``, and the results stacked.
    """
    gt = torch.where(gt_mask[..., None], gt, torch.zeros_like(gt))      # padding -> [0, 0]
    anchors_b = anchors.to(gt.dtype)                                     # (N, 2)
    # tIoU of every anchor with every instance, one query at a time         (B, N, G)
    iou = torch.stack([torch.as_tensor(tiou(anchors_b, gt_b)) for gt_b in gt])
    iou = iou.masked_fill(~gt_mask[:, None, :], -1.0)
    best_iou, best_gt = iou.max(dim=2)                                   # (B, N)
    best_iou = best_iou.clamp(min=0)
    labels = torch.full_like(best_gt, -1)
    labels[best_iou < neg_iou] = 0
    labels[best_iou >= pos_iou] = 1
    # every instance's best anchor(s), if good enough, become positives too
    per_gt_best = iou.max(dim=1, keepdim=True).values                    # (B, 1, G)
    is_best = (iou == per_gt_best) & (per_gt_best >= neg_iou) & gt_mask[:, None, :]
    labels[is_best.any(dim=2)] = 1
    matched = torch.gather(gt, 1, repeat(best_gt, "b n -> b n two", two=2))   # (B, N, 2)
    targets = encode(repeat(anchors, "n two -> b n two", b=gt.shape[0]).to(gt.dtype), matched)
    targets = torch.where((labels == 1)[..., None], targets, torch.zeros_like(targets))
    return labels, targets, best_iou


def average_recall(proposals: dict, ground_truth: dict, num_proposals=tuple(range(1, 101)),
                   tiou_thresholds=TIOU_THRESHOLDS) -> dict:
    """Average recall at N proposals per video (AR@AN) and the area under that curve.

    ``proposals``: video -> ``(n, 2)`` segments sorted by score, best first; ``ground_truth``:
    video -> ``(g, 2)``. An instance is recalled at tIoU threshold θ by the top N proposals of its
    video if any of them has tIoU >= θ with it (no one-to-one matching, as in the official
    ActivityNet proposal evaluator). Then

        R(N, θ) = (# recalled instances) / (# instances),   AR(N) = mean_θ R(N, θ)
        AUC = 100 * ∫ AR(N) dN / N_max   (trapezoids over the given N, as ActivityNet reports it)

    Returns ``{"an": (A,), "ar": (A,), "recall": (A, K), "auc": float}`` (numpy arrays). The top N
    per video equals the official "average number of proposals" when every video has at least
    ``max(num_proposals)`` proposals.
    """
    an = np.asarray(num_proposals, dtype=np.int64)
    thr = np.asarray(tiou_thresholds, dtype=np.float64)
    hits = np.zeros((len(an), len(thr)))
    n_gt = 0
    for vid, gt in ground_truth.items():
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
        n_gt += len(gt)
        props = np.asarray(proposals.get(vid, np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)
        if len(gt) == 0 or len(props) == 0:
            continue
        # best tIoU of each instance among the top-n proposals, for every n
        best = np.maximum.accumulate(tiou(gt, props), axis=1)           # (g, n)
        top = best[:, np.minimum(an, len(props)) - 1]                   # (g, A)
        hits += (top[:, :, None] >= thr).sum(axis=0)                    # (A, K)
    if n_gt == 0:
        raise FscalError(f"{where(field='ground_truth')}: no ground-truth instance to recall")
    recall = hits / n_gt                                                # (A, K)
    ar = recall.mean(axis=1)                                            # (A,)
    auc = 100.0 * float(np.trapezoid(ar, an)) / float(an[-1])
    return {"an": an, "ar": ar, "recall": recall, "auc": auc}


def proposal_names(segments) -> list:
    """``[start, end)`` labels for proposals given as ``(N, 2)`` snippet coordinates."""
    return [f"[{s:.0f}, {e:.0f})" for s, e in np.asarray(segments, dtype=float)]
