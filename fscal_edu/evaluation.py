"""Detection mAP exactly as the official ActivityNet evaluator computes it, and the FS-CAL protocol.

**Average precision of one class** (ActivityNet ``eval_detection.py``, after Pascal VOC):

1. rank all predictions of the class, over all videos, by score (highest first; ties keep the
   order of the results file, a stable sort);
2. walk down the ranking; a prediction is a **true positive** at threshold θ if its video holds a
   ground-truth instance of the class that no better-ranked prediction has taken yet and whose
   tIoU with it is >= θ: it takes the one with the highest tIoU (ties: the instance listed last,
   as the official ``argsort()[::-1]``). Otherwise it is a **false positive**: a duplicate of an
   instance already found, a poor overlap, or a video with no instance of that label at all;
3. after k predictions, ``precision_k = TP_k / k`` and ``recall_k = TP_k / n_gt``;
4. VOC-2011 all-point interpolation: make precision non-increasing from the right and sum it
   over the recall steps, ``AP = sum_k (r_k - r_{k-1}) * max_{j >= k} p_j``.

mAP at θ is the mean AP over the ground truth's classes (a class without predictions scores 0),
and ``average_mAP`` the mean over θ in 0.5:0.05:0.95. The official evaluator loops over
predictions one by one in python; here the matching runs rank by rank for all (class, video)
groups at once, which gives the same numbers (tests compare with a line-by-line port) in a
fraction of the time.

**FS-CAL protocol** (Yang et al. 2020): the ground truth of an episode is
the query's instances of the episode's class. The headline pools every episode's predictions into
one ranking under one label, ``"common"``; the per-class variant groups the episodes by their
hidden class and averages AP over classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .postprocess import results_json
from .proposals import TIOU_THRESHOLDS, tiou
from .utils import FscalError, read_json, where

COMMON = "common"


# ---------------------------------------------------------------------------------------------
# Reading the two JSON files into flat arrays
# ---------------------------------------------------------------------------------------------

def _load(obj, what: str):
    """A parsed JSON dict, or the path of one (then errors name the file)."""
    if isinstance(obj, (str, Path)):
        return read_json(obj, f"the {what} JSON"), str(obj)
    return obj, None


def _section(data, key: str, file, what: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise FscalError(f"{where(file=file, field=key)}: an ActivityNet {what} JSON needs a "
                         f"{key!r} object")
    return data[key]


def _fields(entry, keys, file, video, index):
    """``entry[key]`` for each key, or an error naming the entry and the missing field."""
    for key in keys:
        if not isinstance(entry, dict) or key not in entry:
            raise FscalError(f"{where(file=file, video=video, field=key)}: entry {index} has no {key!r}")
    return [entry[k] for k in keys]


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_thresholds(tiou_thresholds) -> np.ndarray:
    """tIoU thresholds as a float array: at least one, each in (0, 1]."""
    if tiou_thresholds is None:
        return TIOU_THRESHOLDS
    values = list(np.atleast_1d(np.asarray(tiou_thresholds, dtype=object)))
    if not values or not all(_is_number(t) and 0 < t <= 1 for t in values):
        raise FscalError(f"{where(field='tiou_thresholds')}: need one or more tIoU thresholds, each "
                         f"in (0, 1], got {list(values)!r}")
    return np.asarray(values, dtype=np.float64)


def _numbers(values, owners, file, field):
    """A float64 array from a list, or an error naming the first bad entry's video."""
    shape = (2,) if field == "segment" else ()
    if not values:
        return np.zeros((0, *shape))
    # JSON numbers only: np.asarray would turn "0.9" and true into numbers without a word
    for i, v in enumerate(values):
        parts = v if shape and isinstance(v, (list, tuple)) and len(v) == 2 else [v]
        if shape and parts is not v or not all(_is_number(p) for p in parts):
            raise FscalError(f"{where(file=file, video=owners[i], field=field)}: expected "
                             f"{'[start, end], two numbers' if shape else 'a number'}, got {v!r}")
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        x = None
    if x is None or x.shape[1:] != shape:
        for i, v in enumerate(values):
            try:
                ok = np.asarray(v, dtype=np.float64).shape == shape
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise FscalError(f"{where(file=file, video=owners[i], field=field)}: expected "
                                 f"{'[start, end]' if shape else 'a number'}, got {v!r}")
    bad = np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))
    if len(bad):
        raise FscalError(f"{where(file=file, video=owners[bad[0]], field=field)}: NaN or inf "
                         f"({values[bad[0]]!r}; {len(bad)} such entries)")
    if field == "segment":
        bad = np.flatnonzero(x[:, 1] < x[:, 0])
        if len(bad):
            raise FscalError(f"{where(file=file, video=owners[bad[0]], field=field)}: inverted segment "
                             f"{values[bad[0]]!r} (end < start; {len(bad)} such entries)")
    return x


def read_ground_truth(ground_truth, subset=None):
    """Flatten an ActivityNet annotation JSON: ``(classes, videos, label (n,), video (n,), segment (n, 2))``.

    ``classes`` in order of first appearance, ``videos`` as listed; only videos of ``subset`` if
    given (then every video needs a ``"subset"``).
    """
    data, file = _load(ground_truth, "ground truth")
    database = _section(data, "database", file, "annotation")
    classes, videos, label, video, segs = {}, [], [], [], []
    for vid, v in database.items():
        if subset is not None:
            if _fields(v, ["subset"], file, vid, "of the database")[0] != subset:
                continue
        anns = _fields(v, ["annotations"], file, vid, "of the database")[0]
        if not isinstance(anns, list):
            raise FscalError(f"{where(file=file, video=vid, field='annotations')}: must be a list")
        videos.append(vid)
        for k, ann in enumerate(anns):
            name, seg = _fields(ann, ["label", "segment"], file, vid, k)
            if not isinstance(name, str):
                raise FscalError(f"{where(file=file, video=vid, field='label')}: entry {k} needs a string, got {name!r:.60}")
            label.append(classes.setdefault(name, len(classes)))
            video.append(len(videos) - 1)
            segs.append(seg)
    owners = [videos[i] for i in video]
    return (list(classes), videos, np.asarray(label, dtype=np.int64), np.asarray(video, dtype=np.int64),
            _numbers(segs, owners, file, "segment"))


def read_predictions(predictions, classes: list, videos: list):
    """Flatten an ActivityNet results JSON: ``(label (p,), video (p,), score (p,), segment (p, 2))``.

    Labels index ``classes`` (a label the ground truth lacks is an error), videos index ``videos``
    extended by the videos that only the predictions name. Entries keep the file's order.
    """
    data, file = _load(predictions, "results")
    results = _section(data, "results", file, "results")
    class_index = {c: i for i, c in enumerate(classes)}
    video_index = {v: i for i, v in enumerate(videos)}
    names, owners, scores, segs, video = [], [], [], [], []
    for vid, entries in results.items():
        if not isinstance(entries, list):
            raise FscalError(f"{where(file=file, video=vid, field='results')}: must be a list of detections")
        vi = video_index.setdefault(vid, len(video_index))
        try:
            names += [entry["label"] for entry in entries]
            scores += [entry["score"] for entry in entries]
            segs += [entry["segment"] for entry in entries]
        except (KeyError, TypeError):  # find the culprit for the message
            for k, entry in enumerate(entries):
                _fields(entry, ["label", "score", "segment"], file, vid, k)
        owners += [vid] * len(entries)
        video += [vi] * len(entries)
    odd = next((i for i, n in enumerate(names) if not isinstance(n, str)), None)
    if odd is not None:                          # a list would fail as a dict key, a number never matches
        raise FscalError(f"{where(file=file, video=owners[odd], field='label')}: a detection's label must "
                         f"be a class name (a string), got {names[odd]!r:.60}")
    label = np.asarray([class_index.get(n, -1) for n in names], dtype=np.int64)
    unknown = np.flatnonzero(label < 0)
    if len(unknown):
        raise FscalError(f"{where(file=file, video=owners[unknown[0]], field='label')}: predicted label "
                         f"{names[unknown[0]]!r} is not a class of the ground truth ({len(unknown)} such "
                         f"detections; known: {classes[:5]}{'...' if len(classes) > 5 else ''})")
    return (label, np.asarray(video, dtype=np.int64), _numbers(scores, owners, file, "score"),
            _numbers(segs, owners, file, "segment"))


# ---------------------------------------------------------------------------------------------
# Matching and average precision
# ---------------------------------------------------------------------------------------------

def _group_slots(group: np.ndarray, n_groups: int):
    """For items tagged with a group id: each item's rank inside its group (in input order)."""
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=n_groups)
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank, counts


def match_detections(gt_key, gt_segments, pred_key, pred_segments, tiou_thresholds) -> np.ndarray:
    """Greedy matching of ranked predictions: ``tp (P, K)`` bool, True = true positive at θ_k.

    ``*_key`` tag each item with its (class, video) group; predictions come in ranking order (best
    first). A prediction can only match ground truth of its own group, so groups are independent;
    the loop runs over ranks: step r matches the r-th prediction of every group at once, for all
    thresholds at once.
    """
    thr = np.asarray(tiou_thresholds, dtype=np.float64)                  # (K,)
    tp = np.zeros((len(pred_key), len(thr)), dtype=bool)
    keys, gt_group = np.unique(gt_key, return_inverse=True)
    if len(keys) == 0 or len(pred_key) == 0:
        return tp
    # ground truth of every group, padded: (n_groups, M, 2), in file order within a group
    slot, counts = _group_slots(gt_group, len(keys))
    M = int(counts.max())
    gt = np.zeros((len(keys), M, 2))
    real = np.zeros((len(keys), M), dtype=bool)
    gt[gt_group, slot], real[gt_group, slot] = gt_segments, True
    # predictions whose video has ground truth of their label; the others stay false positives
    pos = np.searchsorted(keys, pred_key).clip(max=len(keys) - 1)
    p_idx = np.flatnonzero(keys[pos] == pred_key)
    p_group = pos[p_idx]
    rank, _ = _group_slots(p_group, len(keys))
    by_rank = np.argsort(rank, kind="stable")
    locked = np.zeros((len(keys), len(thr), M), dtype=bool)              # instance already taken at θ
    start = 0
    for stop in np.cumsum(np.bincount(rank)):
        sel = by_rank[start:stop]
        start = stop
        p, g = p_idx[sel], p_group[sel]                                  # one prediction per group
        iou = tiou(pred_segments[p][:, None, :], gt[g])[:, 0, :]         # (n, M)
        iou = np.where(real[g], iou, -1.0)
        free = np.where(locked[g], -1.0, iou[:, None, :])                # (n, K, M)
        best = M - 1 - np.argmax(free[..., ::-1], axis=-1)               # (n, K) ties -> last instance
        hit = np.take_along_axis(free, best[..., None], axis=-1)[..., 0] >= thr   # (n, K)
        tp[p] = hit
        locked[g[:, None], np.arange(len(thr)), best] |= hit
    return tp


def interpolated_ap(precision, recall) -> float:
    """VOC-2011 all-point interpolated AP of one precision/recall curve (the official ``interpolated_prec_rec``).

        p_interp(k) = max_{j >= k} p_j,     AP = sum_k (r_k - r_{k-1}) * p_interp(k)

    with the curve padded by (r=0, p=0) in front and (r=1, p=0) at the end; only the steps where
    recall changes add to the sum.
    """
    mprec = np.hstack([[0.0], precision, [0.0]])
    mrec = np.hstack([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _ranked(ground_truth, predictions, tiou_thresholds, subset):
    """Everything AP needs: classes, n_gt per class, and per class its ranked tp matrix."""
    thr = check_thresholds(tiou_thresholds)
    classes, videos, g_label, g_video, g_seg = read_ground_truth(ground_truth, subset)
    if not classes:
        raise FscalError(f"{where(field='database')}: the ground truth has no instance"
                         + (f" in subset {subset!r}" if subset is not None else ""))
    p_label, p_video, p_score, p_seg = read_predictions(predictions, classes, videos)
    # rank: by class, then by score (highest first, stable)
    order = np.lexsort((-p_score, p_label))
    p_label, p_video, p_score, p_seg = p_label[order], p_video[order], p_score[order], p_seg[order]
    n_videos = int(max(g_video.max(initial=-1), p_video.max(initial=-1))) + 1
    tp = match_detections(g_label * n_videos + g_video, g_seg, p_label * n_videos + p_video, p_seg, thr)
    bounds = np.searchsorted(p_label, np.arange(len(classes) + 1))
    n_gt = np.bincount(g_label, minlength=len(classes))
    per_class = [(tp[bounds[c]:bounds[c + 1]], p_score[bounds[c]:bounds[c + 1]]) for c in range(len(classes))]
    return thr, classes, n_gt, per_class, len(p_label)


def precision_recall(tp: np.ndarray, n_gt: int):
    """Cumulative ``precision, recall (K, P)`` down a ranking, from ``tp (P, K)``."""
    tp_cum = np.cumsum(tp.T, axis=1, dtype=np.float64)                   # (K, P)
    fp_cum = np.cumsum(~tp.T, axis=1, dtype=np.float64)
    return tp_cum / (tp_cum + fp_cum), tp_cum / n_gt


def evaluate_detection(ground_truth, predictions, tiou_thresholds=None, subset=None) -> dict:
    """ActivityNet detection mAP, with the numbers of the official ``eval_detection.py``.

    ``ground_truth``: a parsed ActivityNet annotation JSON (``{"database": ...}``) or its path;
    ``predictions``: a parsed results JSON (``{"results": ...}``) or its path; ``tiou_thresholds``
    default 0.5:0.05:0.95; ``subset`` keeps only those ground-truth videos (predictions are not
    filtered, as in the official evaluator: detections in other videos are false positives).

    Returns ``{"tiou_thresholds", "mAP" (one per threshold), "average_mAP", "mAP@0.5" (None if 0.5
    is not a threshold), "ap_per_class" {label: [AP per threshold]}, "num_classes",
    "num_ground_truth", "num_predictions"}``, plain python numbers.
    """
    thr, classes, n_gt, per_class, n_pred = _ranked(ground_truth, predictions, tiou_thresholds, subset)
    ap = np.zeros((len(thr), len(classes)))                             # (K, n_classes)
    for c, (tp, _) in enumerate(per_class):
        if len(tp):
            precision, recall = precision_recall(tp, n_gt[c])
            ap[:, c] = [interpolated_ap(precision[k], recall[k]) for k in range(len(thr))]
    mAP = ap.mean(axis=1)
    at_05 = np.flatnonzero(np.isclose(thr, 0.5))
    return {"tiou_thresholds": thr.round(10).tolist(), "mAP": mAP.tolist(), "average_mAP": float(mAP.mean()),
            "mAP@0.5": float(mAP[at_05[0]]) if len(at_05) else None,
            "ap_per_class": {name: ap[:, c].tolist() for c, name in enumerate(classes)},
            "num_classes": len(classes), "num_ground_truth": int(n_gt.sum()), "num_predictions": n_pred}


def ranking_table(ground_truth, predictions, label: str, tiou_threshold: float = 0.5) -> dict:
    """The ranked predictions of one class at one threshold, as AP sees them (for teaching).

    Returns numpy arrays ``score``, ``tp``, ``precision``, ``recall`` (one row per prediction, in
    ranking order), ``n_gt`` and the ``ap`` that :func:`evaluate_detection` reports for it.
    """
    thr, classes, n_gt, per_class, _ = _ranked(ground_truth, predictions, [tiou_threshold], None)
    if label not in classes:
        raise FscalError(f"{where(field='label')}: {label!r} is not a class of the ground truth")
    c = classes.index(label)
    tp, score = per_class[c]
    precision, recall = precision_recall(tp, n_gt[c])
    return {"score": score, "tp": tp[:, 0], "precision": precision[0], "recall": recall[0],
            "n_gt": int(n_gt[c]), "ap": interpolated_ap(precision[0], recall[0]) if len(tp) else 0.0}


# ---------------------------------------------------------------------------------------------
# The FS-CAL protocol: episodes -> ActivityNet files
# ---------------------------------------------------------------------------------------------

def _episodes(episodes) -> dict:
    """``{id: episode}`` from a list of episodes or an ``{"episodes": [...]}`` dict."""
    if isinstance(episodes, dict):
        episodes = episodes.get("episodes")
    if not isinstance(episodes, list):
        raise FscalError(f"{where(field='episodes')}: expected a list of episodes or {{\"episodes\": [...]}}")
    out = {}
    for k, ep in enumerate(episodes):
        eid, label, query = _fields(ep, ["id", "label", "query"], None, None, f"episode {k}")
        bad = next((key for key in ("query", "id", "label") if not isinstance(ep[key], str)), None)
        if bad:                                  # a list or a number is never a name
            raise FscalError(f"{where(video=query if isinstance(query, str) else None, field=bad)}: "
                             f"episode {k} needs a string, got {ep[bad]!r:.60}")
        if eid in out:
            raise FscalError(f"{where(video=query, field='id')}: episode id {eid!r} appears twice")
        out[eid] = ep
    return out


def fscal_ground_truth(episodes, annotations: dict, *, pooled: bool = True) -> dict:
    """The ActivityNet ground truth of a set of episodes, keyed by episode id.

    Episode e's "video" holds the query's instances of e's class, labelled ``"common"`` when
    ``pooled`` (the protocol's single ranking) or with the class name (the per-class variant).
    """
    database = _section(annotations, "database", None, "annotation")
    out = {}
    for eid, ep in _episodes(episodes).items():
        video = database.get(ep["query"])
        if not isinstance(video, dict):
            raise FscalError(f"{where(video=ep['query'], field='query')}: episode {eid!r} names a query "
                             f"that the annotations lack")
        anns = _fields(video, ["annotations"], None, ep["query"], "of the database")[0]
        inst = [a["segment"] for a in anns if a.get("label") == ep["label"]]
        if not inst:
            raise FscalError(f"{where(video=ep['query'], field='label')}: episode {eid!r}: the query "
                             f"holds no instance of its class {ep['label']!r}")
        out[eid] = {"subset": video.get("subset"), "duration": video.get("duration"),
                    "annotations": [{"label": COMMON if pooled else ep["label"], "segment": list(s)}
                                    for s in inst]}
    return {"version": "fscal-edu episodes", "taxonomy": [], "database": out}


def fscal_predictions(results: dict, episodes, *, pooled: bool = True) -> dict:
    """A results JSON keyed by episode id, relabelled ``"common"`` (pooled) or with the episode's class."""
    eps = _episodes(episodes)
    out = {}
    for eid, entries in _section(results, "results", None, "results").items():
        if eid not in eps:
            raise FscalError(f"{where(video=eid, field='results')}: predictions for an episode id "
                             f"that is not among the {len(eps)} episodes")
        if not isinstance(entries, list):
            raise FscalError(f"{where(video=eid, field='results')}: must be a list of detections")
        label = COMMON if pooled else eps[eid]["label"]
        out[eid] = [{**entry, "label": label} if isinstance(entry, dict) else entry for entry in entries]
    return results_json(out)


def evaluate_fscal(episodes, annotations: dict, results: dict, tiou_thresholds=None) -> dict:
    """FS-CAL scores of a results JSON keyed by episode id.

    The headline (``"mAP@0.5"``, ``"mAP"`` per threshold, ``"average_mAP"``) pools all episodes
    under one label; ``"per_class"`` holds the same three numbers (and ``"ap_per_class"``) with
    episodes grouped by their hidden class and AP averaged over classes.
    """
    pooled = evaluate_detection(fscal_ground_truth(episodes, annotations, pooled=True),
                                fscal_predictions(results, episodes, pooled=True), tiou_thresholds)
    per_class = evaluate_detection(fscal_ground_truth(episodes, annotations, pooled=False),
                                   fscal_predictions(results, episodes, pooled=False), tiou_thresholds)
    keys = ("mAP@0.5", "average_mAP", "mAP")
    return {**{k: pooled[k] for k in keys}, "tiou_thresholds": pooled["tiou_thresholds"],
            "num_episodes": len(_episodes(episodes)),
            "per_class": {**{k: per_class[k] for k in keys}, "ap_per_class": per_class["ap_per_class"]}}


# ---------------------------------------------------------------------------------------------
# fscal-edu score GT.json PRED.json
# ---------------------------------------------------------------------------------------------

def episode_ap(episodes, annotations: dict, results: dict, *, tiou: float = 0.5) -> dict:
    """AP of every episode on its own, ``{episode id: AP}`` at one tIoU threshold.

    Each episode becomes its own "class" in the ActivityNet evaluator, so its AP ranks only its
    own detections against its own instances: 1.0 when the best-scored detections find every
    instance before any false positive, 0.0 when none reaches the threshold.
    """
    gt = fscal_ground_truth(episodes, annotations)
    for eid, video in gt["database"].items():
        video["annotations"] = [{**a, "label": eid} for a in video["annotations"]]
    preds = fscal_predictions(results, episodes)
    preds["results"] = {eid: [{**d, "label": eid} for d in dets] for eid, dets in preds["results"].items()}
    ap = evaluate_detection(gt, preds, [tiou])["ap_per_class"]
    return {eid: ap[eid][0] for eid in gt["database"]}


def format_table(result: dict) -> str:
    """A small text table of mAP per threshold, the average, and the counts."""
    lines = ["tIoU    mAP", "-----  ------"]
    lines += [f"{t:.2f}   {m:.4f}" for t, m in zip(result["tiou_thresholds"], result["mAP"])]
    lines += ["-----  ------", f"avg    {result['average_mAP']:.4f}",
              f"{result['num_classes']} classes, {result['num_ground_truth']} ground-truth instances, "
              f"{result['num_predictions']} predictions"]
    return "\n".join(lines)


def detection_verdicts(episode: dict, annotations: dict, detections: list, *, iou: float = 0.5) -> list:
    """Match each detection ``{"segment", "score"}`` of one episode with the query's instances:
    ``("hit", tIoU)`` if it covers an instance of the episode's class at ``iou`` or more, else
    ``("<label>", tIoU)`` of the other instance it covers best at ``iou`` or more, else ``("miss",
    best tIoU with the common class)``. The timeline figure colours detections by it."""
    inst = annotations["database"][episode["query"]]["annotations"]
    segs = np.asarray([a["segment"] for a in inst], dtype=np.float64).reshape(-1, 2)
    dets = np.asarray([d["segment"] for d in detections], dtype=np.float64).reshape(-1, 2)
    overlap = tiou(dets, segs)                                                    # (D, I)
    common = np.array([a["label"] == episode["label"] for a in inst], dtype=bool)
    out = []
    for row in overlap:
        best_c = row[common].max(initial=0.0)
        best_o = int(np.argmax(np.where(common, -1.0, row)))
        if best_c >= iou:
            out.append(("hit", float(best_c)))
        elif not common[best_o] and row[best_o] >= iou:
            out.append((inst[best_o]["label"], float(row[best_o])))
        else:
            out.append(("miss", float(best_c)))
    return out
