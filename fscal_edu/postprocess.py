"""Post-processing: from a few hundred scored proposals to a short list of detections in seconds.

Neighbouring anchors overlap, so a good detector scores many near-copies of each instance highly.
Non-maximum suppression keeps the best of each cluster: **hard NMS** deletes every segment that
overlaps an already kept one by more than a threshold; **Gaussian Soft-NMS** (Bodla et al., 2017)
only lowers their scores, by ``exp(-tIoU^2 / sigma)``, so that a second instance next to the first
is demoted rather than lost (sigma 0.5, top 100). Then snippet coordinates
become seconds through the one conversion of :mod:`fscal_edu.data.features`, and the detections
of many videos (or episodes) become an ActivityNet results JSON.
"""
from __future__ import annotations

import numpy as np
import torch

from .data.features import index_to_seconds
from .proposals import check_segments, tiou
from .utils import FscalError, where


def _check(segments: torch.Tensor, scores: torch.Tensor) -> None:
    if segments.dim() != 2 or scores.shape != segments.shape[:1]:
        raise FscalError(f"{where(field='scores')}: expected segments (N, 2) and scores (N,), got "
                         f"{tuple(segments.shape)} and {tuple(scores.shape)}")
    check_segments(segments)
    if not bool(torch.isfinite(scores).all()):
        raise FscalError(f"{where(field='scores')}: NaN or inf in {int((~torch.isfinite(scores)).sum())} "
                         f"score(s)")


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def nms_1d(segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5,
           top_k: int | None = None) -> torch.Tensor:
    """Hard NMS: indices of the kept segments, best score first (``LongTensor (M,)``).

    Visit segments by decreasing score (ties: input order); keep one unless it overlaps an
    already kept segment with tIoU > ``iou_threshold``. Stop after ``top_k`` kept segments.
    (A sequential loop, so it runs in numpy on the CPU; the result comes back on the input's device.)
    """
    _check(segments, scores)
    order = np.argsort(-_numpy(scores), kind="stable")                  # (N,)
    iou = tiou(_numpy(segments)[order], _numpy(segments)[order])         # (N, N)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        if top_k is not None and len(keep) >= top_k:
            break
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=segments.device)


def soft_nms_1d(segments: torch.Tensor, scores: torch.Tensor, sigma: float = 0.5,
                score_floor: float = 1e-3, top_k: int = 100):
    """Gaussian Soft-NMS: ``(segments (M, 2), scores (M,))``, sorted by the new scores, best first.

    Repeatedly take the highest-scoring remaining segment m, keep it, and decay every other
    remaining segment i by its overlap with m:

        s_i <- s_i * exp(-tIoU(m, i)^2 / sigma)

    Segments whose score falls below ``score_floor`` are dropped; at most ``top_k`` are kept.
    As sigma -> 0 any overlap kills a segment: hard NMS at threshold 0. (Sequential, so numpy on
    the CPU; the results come back on the input's device and dtype.) Only the kept segment's row
    of tIoU is computed at each step: memory O(M), time O(top_k * M), so the merged windows of a
    long video (thousands of detections) cost no M x M matrix.
    """
    _check(segments, scores)
    if sigma <= 0:
        raise FscalError(f"{where(field='sigma')}: Soft-NMS needs sigma > 0, got {sigma}")
    seg = _numpy(segments)                                                     # (M, 2)
    s = _numpy(scores)
    alive = s >= score_floor
    kept_idx, kept_scores = [], []
    while alive.any() and len(kept_idx) < top_k:
        m = int(np.argmax(np.where(alive, s, -np.inf)))
        kept_idx.append(m)
        kept_scores.append(s[m])
        alive[m] = False
        s = s * np.exp(-tiou(seg[m:m + 1], seg)[0] ** 2 / sigma)               # (M,) decay by overlap with m
        alive &= s >= score_floor
    idx = torch.tensor(kept_idx, dtype=torch.long, device=segments.device)
    return segments[idx], torch.tensor(kept_scores, dtype=scores.dtype, device=scores.device)


def to_seconds(segments, *, duration: float, num_snippets: int, meta=None, feat_len=None) -> np.ndarray:
    """Snippet coordinates ``(..., 2)`` -> seconds ``(..., 2)`` (float64), clipped to ``[0, duration]``.

    Goes through :func:`fscal_edu.data.features.index_to_seconds`, the package's one conversion
    (``meta``/``feat_len`` as there, for strided features).
    """
    if isinstance(segments, torch.Tensor):
        segments = segments.detach().cpu().numpy()
    seconds = index_to_seconds(np.asarray(segments, dtype=np.float64), duration=duration,
                               num_snippets=num_snippets, meta=meta, feat_len=feat_len)
    return np.clip(seconds, 0.0, duration)


# The version string of every results JSON fscal-edu writes (ActivityNet's format, version 1.3).
RESULTS_VERSION = "VERSION 1.3"


def results_json(results: dict) -> dict:
    """The one writer of the ActivityNet results JSON: ``{"version", "results", "external_data"}``,
    ``results`` being ``{video_or_episode_id: [{"label", "score", "segment": [start_s, end_s]}, ...]}``.

    Training-free baselines, the model's predictions and relabelled copies all go through here, so
    every results file carries the same ``version`` (:data:`RESULTS_VERSION`).
    """
    return {"version": RESULTS_VERSION, "results": results,
            "external_data": {"used": False, "details": "fscal-edu"}}


def predictions_to_results(detections: dict, label: str = "common") -> dict:
    """An ActivityNet results JSON dict (:func:`results_json`) from
    ``{video_or_episode_id: (segments_seconds (M, 2), scores (M,))}``.

    Every detection gets ``label`` (FS-CAL episodes have one class, never named to the model:
    :func:`fscal_edu.evaluation.fscal_predictions` relabels them for scoring).
    """
    results = {}
    for vid, (segs, scores) in detections.items():
        segs = np.asarray(segs.detach().cpu() if isinstance(segs, torch.Tensor) else segs, dtype=np.float64)
        scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores,
                            dtype=np.float64)
        results[vid] = [{"label": label, "score": float(sc), "segment": [float(a), float(b)]}
                        for (a, b), sc in zip(segs.reshape(-1, 2), scores.reshape(-1))]
    return results_json(results)


def _touching(seg: np.ndarray, sc: np.ndarray, at: np.ndarray, top: int) -> list:
    """The ``top`` best-scored ``(start, end, score)`` among the segments where ``at`` is True."""
    idx = np.flatnonzero(at)
    idx = idx[np.argsort(-sc[idx], kind="stable")[:top]]
    return [(float(seg[i, 0]), float(seg[i, 1]), float(sc[i])) for i in idx]


def merge_window_edges(windows, *, axis: int, tol: float = 2.0, top: int = 5,
                       score_floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Segments of an action cut by window edges, put back together: ``(segments (M, 2), scores (M,))``.

    ``windows``: one ``(segments (N, 2), scores (N,), offset, span)`` per window of one query, the
    segments already on the video's axis (of ``axis`` rows). A window sees a long instance only up
    to its edge, so it reports a piece ``[s, edge]``; the next window reports ``[edge', e]``. Walking
    the windows in order, each of the ``top`` best segments that reach (within ``tol`` rows) the right
    edge of a window is joined to each of the ``top`` best segments of the next window that start at
    its left edge and meet or overlap it:

        merged = [min(s_a, s_b), e_b],   score = max(score_a, score_b)

    A merged segment that again reaches the right edge stays open and is extended by the window
    after (an instance longer than two windows); it is reported once it ends inside a window or is
    not extended. The pieces are kept: Soft-NMS, run on pieces and merged segments together, keeps
    whichever scores best (merged ones first, longest first on a tie).
    """
    merged, open_ = [], []                      # open_: (start, end, score, pieces) at the last right edge
    for seg, sc, offset, span in sorted(windows, key=lambda w: w[2]):
        seg, sc = _numpy(seg).reshape(-1, 2), _numpy(sc).reshape(-1)        # (N, 2), (N,)
        left, right, live = float(offset), float(offset + span), sc >= score_floor
        joined, extended = [], set()
        if open_ and left > 0:
            for b_s, b_e, b_sc in _touching(seg, sc, live & (seg[:, 0] <= left + tol), top):
                for k, (a_s, a_e, a_sc, n) in enumerate(open_):
                    if b_s <= a_e + tol and b_e > a_e:          # meet or overlap, and reach further
                        joined.append((min(a_s, b_s), b_e, max(a_sc, b_sc), n + 1))
                        extended.add(k)
        merged += [m for k, m in enumerate(open_) if k not in extended and m[3] > 1]   # not extended: done
        inner = right < axis - tol                            # an inner edge: what reaches it stays open
        merged += [m for m in joined if not (inner and m[1] >= right - tol)]          # ends in this window
        at_edge = joined + [m + (1,) for m in _touching(seg, sc, live & (seg[:, 1] >= right - tol), top)]
        open_ = sorted((m for m in at_edge if m[1] >= right - tol), key=lambda m: (-m[2], m[0]))[:top] if inner else []
    merged += [m for m in open_ if m[3] > 1]
    if not merged:
        return torch.zeros(0, 2), torch.zeros(0)
    merged.sort(key=lambda m: (-m[2], m[0] - m[1]))           # best first, the longest on a tie
    out = torch.tensor([m[:3] for m in merged], dtype=torch.float32)           # (M, 3)
    return out[:, :2], out[:, 2]


def merge_detections(segments: torch.Tensor, scores: torch.Tensor, cfg, world, *, video: str,
                     axis: int) -> list[dict]:
    """One episode's scored segments ``(M, 2)``, ``(M,)`` (positions on an axis of ``axis`` snippets
    of its query ``video``) -> Soft-NMS -> its results-JSON entries, in seconds."""
    seg, sc = soft_nms_1d(segments, scores, sigma=cfg.post.soft_nms_sigma,
                          score_floor=cfg.post.score_floor, top_k=cfg.post.top_k)
    sec = to_seconds(seg, duration=world.duration(video), num_snippets=axis, meta=world.meta,
                     feat_len=len(world.raw_features(video)))
    return [{"label": "common", "score": float(s), "segment": [float(a), float(e)]}
            for (a, e), s in zip(sec.tolist(), sc.tolist()) if e > a]


def detections_to_results(batch: dict, segments: torch.Tensor, scores: torch.Tensor, cfg, world,
                          results: dict) -> None:
    """Each item of ``batch`` is one whole episode: its scored segments ``(B, N, 2)`` (snippet
    coordinates of its query tensor), Soft-NMS, into ``results`` in seconds
    (:func:`merge_detections`; windows of one episode are merged by
    :func:`fscal_edu.inference.predict`)."""
    for b, eid in enumerate(batch["id"]):
        results[eid] = merge_detections(segments[b] + batch["offset"][b], scores[b], cfg, world,
                                        video=batch["video"][b], axis=batch["axis"][b])
