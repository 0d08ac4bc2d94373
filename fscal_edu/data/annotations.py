"""Temporal annotations (ActivityNet JSON) and class splits (``splits.json``).

The field stores ground truth in the ActivityNet format, times in seconds::

    {"version": ..., "taxonomy": [...],
     "database": {video_id: {"subset": "validation", "duration": 126.1, "fps": 30.0,
                             "annotations": [{"label": "Beer pong", "segment": [61.4, 64.6]}]}}}

and few-shot class splits as ``{"base": [...], "val": [...], "test": [...]}``: disjoint lists of
class names (base classes train the model; val and test classes are never seen in training).

**Validation policy.** Every loader validates, and bad input raises :class:`FscalError` naming the
file, the video and the field: a missing ``database``/``duration``/``annotations``/``label``/
``segment`` key, a non-positive (zero-length) duration, a non-finite number, a segment with
``start >= end``, a segment lying wholly outside ``[0, duration]``. A segment that merely *sticks
out* of ``[0, duration]`` is **clipped** to it with a :func:`warnings.warn` naming the file and the
videos (``clip=True``, the default), because real ActivityNet has such rows (568 of 7654 in
validation end a few milliseconds to seconds past the reported duration); ``clip=False`` rejects
them instead. The TSP CSV converter can drop the rows the validator would reject
(``tsp_csv_to_activitynet(..., drop_invalid=True)``, one warning that counts them).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import warnings
from pathlib import Path

from ..utils import FscalError, check_video_id, read_json, where

SPLIT_NAMES = ("base", "val", "test")
TSP_COLUMNS = ("video-name", "t-start", "t-end", "action-label", "video-duration", "filename",
               "fps", "video-frames", "temporal-region-label")


def _number(value, *, positive=False, **at) -> float:
    """``value`` as a finite float (a positive one if asked), else an error naming ``at``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FscalError(f"{where(**at)}: must be a number, got {value!r}")
    if not math.isfinite(value):
        raise FscalError(f"{where(**at)}: must be finite, got {value!r}")
    if positive and value <= 0:
        raise FscalError(f"{where(**at)}: must be positive, got {value!r}"
                         + (" (zero-length video)" if at.get("field") == "duration" else ""))
    return float(value)


def _require(entry, key, kind=object, prefix="", **at):
    """``entry[key]``, or an error naming ``at`` and the field if it is missing or not a ``kind``."""
    if not isinstance(entry, dict) or key not in entry:
        raise FscalError(f"{where(**at, field=prefix + key)}: required key is missing")
    if not isinstance(entry[key], kind):
        raise FscalError(f"{where(**at, field=prefix + key)}: must be a {kind.__name__}, "
                         f"got {type(entry[key]).__name__}")
    return entry[key]


def _check_segment(seg, duration, clip, **at) -> list | None:
    """The segment, clipped to ``[0, duration]`` if needed; None if it was clipped (to count)."""
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise FscalError(f"{where(**at)}: must be [start, end], got {seg!r}")
    start, end = (_number(v, **at) for v in seg)
    if start >= end:
        raise FscalError(f"{where(**at)}: start {start} is not before end {end}")
    if start >= duration or end <= 0:
        raise FscalError(f"{where(**at)}: [{start}, {end}] lies outside the video "
                         f"[0, {duration}]")
    if start >= 0 and end <= duration:
        return None
    if not clip:
        raise FscalError(f"{where(**at)}: [{start}, {end}] sticks out of the video "
                         f"[0, {duration}] (clip=True would clip it)")
    return [max(start, 0.0), min(end, duration)]


def validate_annotations(ann, *, file=None, clip: bool = True) -> dict:
    """Check an ActivityNet-style dict (see the module docstring); return a validated copy.

    Segments sticking out of ``[0, duration]`` are clipped to it (one warning naming the file
    and the videos) when ``clip`` is true, rejected otherwise. The input is never modified.
    """
    database = _require(ann, "database", dict, file=file)
    out = copy.deepcopy(ann)
    clipped = []
    for video, entry in database.items():
        check_video_id(video, file=file, field="database")
        at = dict(file=file, video=video)
        duration = _number(_require(entry, "duration", **at),
                           positive=True, **at, field="duration")
        if "fps" in entry:
            _number(entry["fps"], positive=True, **at, field="fps")
        items = _require(entry, "annotations", list, **at)
        for i, item in enumerate(items):
            _require(item, "label", str, prefix=f"annotations[{i}].", **at)
            seg = _require(item, "segment", prefix=f"annotations[{i}].", **at)
            fixed = _check_segment(seg, duration, clip, **at, field=f"annotations[{i}].segment")
            if fixed is not None:
                out["database"][video]["annotations"][i]["segment"] = fixed
                clipped.append(video)
    if clipped:
        videos = sorted(set(clipped))
        warnings.warn(f"{where(file=file)}: clipped {len(clipped)} segment(s) to the video "
                      f"duration in {len(videos)} video(s): {', '.join(videos[:5])}"
                      + (", ..." if len(videos) > 5 else ""), stacklevel=2)
    return out


def load_annotations(path, *, clip: bool = True) -> dict:
    """Read and validate an ActivityNet JSON file (see :func:`validate_annotations`)."""
    path = Path(path)
    return validate_annotations(read_json(path, "the annotations file"), file=path, clip=clip)


def _ordered(ann: dict) -> dict:
    """A copy with a fixed key order: known keys first, videos sorted by id."""
    def first(d, keys):
        return {**{k: d[k] for k in keys if k in d}, **{k: v for k, v in d.items() if k not in keys}}
    database = {video: first({**entry, "annotations": [first(a, ("label", "segment"))
                                                        for a in entry.get("annotations", [])]},
                             ("subset", "duration", "fps", "annotations"))
                for video, entry in sorted(ann["database"].items())}
    return first({**ann, "database": database}, ("version", "taxonomy", "database"))


def save_annotations(ann: dict, path) -> Path:
    """Write ``ann`` as ActivityNet JSON with a stable key order; ``load_annotations`` reads it back equal."""
    path = Path(path)
    path.write_text(json.dumps(_ordered(ann), indent=1) + "\n")
    return path


def _tsp_rows(path: Path, keep: str):
    """The rows of one TSP ground-truth CSV whose ``temporal-region-label`` is ``keep``."""
    if not path.is_file():
        raise FscalError(f"{where(file=path, field='path')}: file is missing")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TSP_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FscalError(f"{where(file=path, field=missing[0])}: TSP CSV column is missing "
                             f"(need {', '.join(TSP_COLUMNS)})")
        for row in reader:
            if row["temporal-region-label"] == keep:
                yield reader.line_num, row


def _csv_float(row, column, path, line) -> float:
    try:
        value = float(row[column])
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        raise FscalError(f"{where(file=path, video=row['video-name'], field=column)}: line "
                         f"{line}: not a finite number: {row[column]!r}")
    return value


def _outside(segment, duration) -> bool:
    """True for a segment with no length inside ``[0, duration]``: what the validator rejects."""
    start, end = segment
    return start >= end or start >= duration or end <= 0


def tsp_csv_to_activitynet(csv_paths: dict, *, keep: str = "Action", drop_invalid: bool = False) -> dict:
    """Convert TSP-style ground-truth CSVs to one ActivityNet dict.

    ``csv_paths`` maps a subset name (``"training"``, ``"validation"``...) to a CSV with the
    columns ``video-name,t-start,t-end,action-label,video-duration,filename,fps,video-frames,
    temporal-region-label`` (one row per temporal region; rows labelled other than ``keep`` are
    background regions and dropped). Videos with no kept row are left out. Videos are sorted by
    id, instances by time.

    By default the rows are copied faithfully, unvalidated: pass the result to
    :func:`validate_annotations` to check it. Real files hold segments that it rejects
    (ActivityNet-1.3 validation: 3 zero-length ones; THUMOS14 test: 26 that start at or after the
    reported duration). ``drop_invalid=True`` drops those segments (``start >= end``, ``start >=
    duration``, ``end <= 0``) with one warning that counts them; a video left with none is left
    out, like a video with no kept row.
    """
    database, dropped = {}, []
    for subset, path in csv_paths.items():
        path = Path(path)
        for line, row in _tsp_rows(path, keep):
            video = row["video-name"]
            entry = {"subset": subset,
                     "duration": _csv_float(row, "video-duration", path, line),
                     "fps": _csv_float(row, "fps", path, line)}
            old = database.setdefault(video, {**entry, "annotations": []})
            if {k: old[k] for k in entry} != entry:
                raise FscalError(f"{where(file=path, video=video, field='video-duration')}: line "
                                 f"{line}: subset, duration or fps differs from an earlier row "
                                 f"({old['subset']}, {old['duration']}, {old['fps']})")
            segment = [_csv_float(row, c, path, line) for c in ("t-start", "t-end")]
            if drop_invalid and _outside(segment, entry["duration"]):
                dropped.append((str(path), video))
                continue
            old["annotations"].append({"label": row["action-label"], "segment": segment})
    empty = sorted(v for v, entry in database.items() if not entry["annotations"])
    for video in empty:
        del database[video]
    for entry in database.values():
        entry["annotations"].sort(key=lambda a: (a["segment"], a["label"]))
    if dropped:
        files, videos = (sorted({d[i] for d in dropped}) for i in (0, 1))
        warnings.warn(f"{where(file=', '.join(files))}: dropped {len(dropped)} segment(s) with no length "
                      f"inside the video (start >= end, start >= video-duration or end <= 0) in "
                      f"{len(videos)} video(s): {', '.join(videos[:5])}"
                      + (", ..." if len(videos) > 5 else "")
                      + (f"; left out {len(empty)} video(s) with no instance left" if empty else ""),
                      stacklevel=2)
    return {"version": f"converted from TSP CSV ({', '.join(csv_paths)})", "taxonomy": [],
            "database": dict(sorted(database.items()))}


def labels(ann: dict) -> list[str]:
    """The sorted class names that occur in ``ann``."""
    return sorted({a["label"] for entry in ann["database"].values() for a in entry["annotations"]})


def instances_by_class(ann: dict, subset: str | None = None) -> dict[str, list]:
    """``{label: [(video_id, (start, end)), ...]}`` in seconds, labels sorted, videos by id.

    ``subset`` keeps only videos whose ``"subset"`` equals it. The few-shot sampler draws its
    supports and queries from these lists.
    """
    out: dict[str, list] = {}
    for video, entry in sorted(ann["database"].items()):
        if subset is not None and entry.get("subset") != subset:
            continue
        for a in entry["annotations"]:
            out.setdefault(a["label"], []).append((video, tuple(a["segment"])))
    return dict(sorted(out.items()))


def validate_splits(raw, *, classes=None, file=None) -> dict:
    """Check a ``{"base", "val", "test"}`` dict of class lists; return just those three lists.

    Errors name the file and the split: a missing split, a non-list or non-string entry, a class
    listed twice, a class in two splits, and (if ``classes`` is given, e.g. ``labels(ann)``) a
    class unknown to the annotations. Other keys (a ``"note"``) are ignored.
    """
    splits, seen = {}, {}
    known = None if classes is None else set(classes)
    for name in SPLIT_NAMES:
        names = _require(raw, name, list, file=file)
        for c in names:
            at = where(file=file, field=name)
            if not isinstance(c, str):
                raise FscalError(f"{at}: class names must be strings, got {c!r}")
            if c in seen:
                raise FscalError(f"{at}: class {c!r} is already in split {seen[c]!r}; "
                                 f"splits must be disjoint")
            if known is not None and c not in known:
                raise FscalError(f"{at}: class {c!r} does not occur in the annotations")
            seen[c] = name
        splits[name] = list(names)
    return splits


def load_splits(path, *, classes=None, dataset: str | None = None) -> dict:
    """Read ``splits.json`` (``{"base", "val", "test"}``) and validate it (:func:`validate_splits`).

    ``dataset`` picks one entry of a file that holds several, like ``real/fewshot_splits.json``
    (``{"activitynet-1.3": {...}, "thumos14": {...}}``).
    """
    path = Path(path)
    raw = read_json(path, "the splits file")
    if dataset is not None:
        raw = _require(raw, dataset, dict, file=path)
    return validate_splits(raw, classes=classes, file=path)


def save_splits(splits: dict, path) -> Path:
    """Write ``{"base", "val", "test"}`` as JSON, one class per line."""
    path = Path(path)
    path.write_text(json.dumps({k: list(splits[k]) for k in SPLIT_NAMES}, indent=1) + "\n")
    return path
