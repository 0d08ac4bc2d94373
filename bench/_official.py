"""A line-by-line port of the official ActivityNet ``eval_detection.py`` (pandas removed), the
reference that ``bench/bench_evaluation.py`` times :func:`fscal_edu.evaluation.evaluate_detection`
against. Its per-prediction loop is the reference for correctness. The one liberty: ties in score
are ranked in file order (a stable sort), ties in tIoU go to the instance listed last.
"""
from __future__ import annotations

import numpy as np


def official_segment_iou(target_segment, candidate_segments):
    tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
    tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
    segments_intersection = (tt2 - tt1).clip(0)
    segments_union = (candidate_segments[:, 1] - candidate_segments[:, 0]) \
        + (target_segment[1] - target_segment[0]) - segments_intersection
    return segments_intersection.astype(float) / segments_union


def official_interpolated_prec_rec(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def official_ap(gt, pred, thr):
    """gt: [(video, start, end)], pred: [(video, start, end, score)] of one class."""
    ap = np.zeros(len(thr))
    if not pred:
        return ap
    npos = float(len(gt))
    lock_gt = np.ones((len(thr), len(gt))) * -1
    pred = [pred[i] for i in np.argsort(-np.array([p[3] for p in pred]), kind="stable")]
    tp, fp = np.zeros((len(thr), len(pred))), np.zeros((len(thr), len(pred)))
    by_video = {}
    for i, g in enumerate(gt):
        by_video.setdefault(g[0], []).append(i)
    for idx, p in enumerate(pred):
        if p[0] not in by_video:
            fp[:, idx] = 1
            continue
        rows = by_video[p[0]]
        tiou_arr = official_segment_iou(np.array(p[1:3]), np.array([gt[r][1:3] for r in rows]))
        tiou_sorted_idx = tiou_arr.argsort(kind="stable")[::-1]
        for tidx, tiou_thr in enumerate(thr):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < tiou_thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, rows[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, rows[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cumsum, fp_cumsum = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recall_cumsum = tp_cumsum / npos
    precision_cumsum = tp_cumsum / (tp_cumsum + fp_cumsum)
    for tidx in range(len(thr)):
        ap[tidx] = official_interpolated_prec_rec(precision_cumsum[tidx, :], recall_cumsum[tidx, :])
    return ap


def official_evaluate(gt_json, pred_json, thr=np.linspace(0.5, 0.95, 10), subset=None):
    classes, gt, pred = {}, [], []
    for vid, v in gt_json["database"].items():
        if subset is not None and v["subset"] != subset:
            continue
        for a in v["annotations"]:
            classes.setdefault(a["label"], len(classes))
            gt.append((vid, float(a["segment"][0]), float(a["segment"][1]), classes[a["label"]]))
    for vid, lst in pred_json["results"].items():
        for r in lst:
            pred.append((vid, float(r["segment"][0]), float(r["segment"][1]), r["score"], classes[r["label"]]))
    ap = np.zeros((len(thr), len(classes)))
    for c in range(len(classes)):
        ap[:, c] = official_ap([g[:3] for g in gt if g[3] == c], [p[:4] for p in pred if p[4] == c], thr)
    return ap
