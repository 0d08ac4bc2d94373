"""``fscal-edu prepare``: a dataset directory (what :class:`~fscal_edu.data.episodes.World` reads)
from real feature files, annotation files and a few-shot split file, checked file by file::

    fscal-edu prepare --features RAW/ --annotations A.csv B.csv --dataset activitynet \\
                      --split-file fewshot_splits.json --out DIR

Bad input stops it with one error line naming the file, the video and the field (and how many
more files are bad); otherwise it writes ``DIR/features/`` (links), ``features.json``,
``annotations.json``, ``splits.json``, fixed ``episodes_{val,test}_{1,5}shot.json`` and
``prepare.json`` (options and summary), and prints a summary table.

**Choices.**

* *Annotations*: ActivityNet JSON files or TSP ground-truth CSVs, one or more, merged (a video in
  two files is an error); a CSV's subset comes from its name (``train``, ``val``/``valid``,
  ``test``) or from ``SUBSET=FILE``. Rows with ``start >= end`` or no length inside the video
  are dropped, rows sticking out of it clipped (the loader's rule), both counted; a video left
  with no instance is left out. Classes, not videos, are split: every video is a candidate.
* *Feature metadata*: ``--resize-length N`` (resized, the ActivityNet habit) or ``--fps``,
  ``--feat-stride``, ``--num-frames`` (strided, the THUMOS habit). Without them, files of one
  length are resized features; files of different lengths are strided ones, with the THUMOS14
  defaults (fps 30, feat_stride 4, num_frames 16: ActionFormer's I3D features) for ``thumos14``
  and an error asking for the options for ``activitynet``. Width: ``--feature-dim``, else the
  width most files have.
* *Checks*: a missing feature file is an error (``--drop-missing`` leaves such videos out); so
  is a file that is unreadable, not 2-D, empty, of another width, with NaN/inf or values beyond
  float16 (the feature store's type), or of the wrong length (``--drop-bad`` leaves them out).
  Length: resized files have exactly ``resize_length`` rows; strided ones about ``duration *
  fps / feat_stride`` (with ``features.json``'s fps, as
  :func:`~fscal_edu.data.features.seconds_to_index` converts), give or take ``--length-tolerance``
  (10%) or ``num_frames / feat_stride + 1`` rows, whichever is more (extractors pad or cut the
  last window). Feature files of videos not in the annotations are reported and ignored.
* *Splits*: ``{"base", "val", "test"}``, or a file of several datasets' splits picked by
  ``--dataset`` (``"activitynet-1.3"``, ``"thumos14"``). A class unknown to the annotations is an
  error, as is one whose every video was dropped. THUMOS14's standard split has no val classes
  (6 base / 14 test): kept so (no val episodes, and ``fscal-edu train`` needs some), unless
  ``--val-from-base N`` moves N base classes (drawn with ``--seed``) to val.
* *Episodes*: ``--val-episodes`` / ``--test-episodes`` per K in (1, 5), seed ``seed * 1000 + K``
  as :func:`~fscal_edu.data.synthetic.write_world`; a class that cannot make a K-shot episode
  whichever of its videos is the query (:func:`~fscal_edu.runs.check_class_counts`, the training
  rule) is skipped and reported, and so are base classes that training would stop at.
* *Output*: feature files are symlinked (``--copy`` copies), so a large dataset is not duplicated
  (the float16 feature store is built on first use). A non-empty ``DIR`` is refused unless
  ``--overwrite``, which moves the old folder aside to ``DIR.replaced-N`` (never deletes it); an
  input inside ``DIR``, or ``DIR`` inside an input or another dataset, is refused.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..utils import FscalError, read_json, where
from .annotations import (SPLIT_NAMES, _outside, labels, load_splits, save_annotations, save_splits,
                          tsp_csv_to_activitynet, validate_annotations)
from .features import FeatureMeta, find_feature_file, read_features
from .store import FLOAT16_MAX, feature_files

DATASETS = {"activitynet": {"split_key": "activitynet-1.3", "strided": {}},
            "thumos14": {"split_key": "thumos14",
                         "strided": {"fps": 30.0, "feat_stride": 4, "num_frames": 16}}}
SUBSET_WORDS = {"training": {"train", "training"}, "validation": {"val", "valid", "validation"},
                "testing": {"test", "testing"}}
STRIDED = ("fps", "feat_stride", "num_frames")
ROWS = ("annotation rows with start >= end (dropped)", "annotation rows outside the video (dropped)",
        "annotation rows sticking out, clipped to the video (kept)", "videos with no (valid) instance (left out)",
        "videos without a feature file (--drop-missing)")            # the summary's first rows, always shown
BAD_REASON = {"path": "unreadable", "header": "unreadable", "shape": "not 2-D (T, C)", "T": "no rows",
              "feats": "NaN, inf or beyond float16", "feature_dim": "wrong width",
              "length": "length vs duration"}


# ---------------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------------

def _subset_and_path(spec: str) -> tuple[str | None, Path]:
    """``SUBSET=FILE`` or ``FILE``; the subset of a CSV given without one comes from its name."""
    m = re.fullmatch(r"([A-Za-z]+)=(.+)", spec)
    subset, path = (m.group(1), Path(m.group(2))) if m and not Path(spec).is_file() else (None, Path(spec))
    if subset is None and path.suffix.lower() == ".csv":
        words = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
        found = [s for s, names in SUBSET_WORDS.items() if words & names]
        if len(found) != 1:
            raise FscalError(f"{where(file=path, field='--annotations')}: cannot tell the subset from "
                             f"the file name; write SUBSET=FILE (e.g. validation={path})")
        subset = found[0]
    elif subset is not None and path.suffix.lower() != ".csv":
        raise FscalError(f"{where(file=path, field='--annotations')}: SUBSET=FILE is for TSP CSV files; "
                         f"an ActivityNet JSON file names each video's subset itself")
    return subset, path


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def drop_bad_rows(raw: dict, dropped: Counter) -> dict:
    """Drop (and count) rows with ``start >= end`` or no length inside the video, count those the
    validator will clip; in place. Malformed entries are left to the validator's errors."""
    db = raw.get("database") if isinstance(raw, dict) else None
    for entry in (db.values() if isinstance(db, dict) else ()):
        d = entry.get("duration") if isinstance(entry, dict) else None
        items = entry.get("annotations") if isinstance(entry, dict) else None
        if not _finite(d) or d <= 0 or not isinstance(items, list):
            continue
        keep = []
        for a in items:
            seg = a.get("segment") if isinstance(a, dict) else None
            if isinstance(seg, (list, tuple)) and len(seg) == 2 and all(_finite(t) for t in seg):
                if _outside(seg, d):
                    dropped[ROWS[0] if seg[0] >= seg[1] else ROWS[1]] += 1
                    continue
                if seg[0] < 0 or seg[1] > d:
                    dropped[ROWS[2]] += 1
            keep.append(a)
        entry["annotations"] = keep
    return raw


def read_annotations(specs, dropped: Counter) -> tuple[dict, set]:
    """Every annotation file read, cleaned (:func:`drop_bad_rows`), validated, merged; and the
    videos left out with no valid instance."""
    database, origin = {}, {}
    for spec in specs:
        subset, path = _subset_and_path(str(spec))
        if path.suffix.lower() == ".csv":
            raw = tsp_csv_to_activitynet({subset: path})
        else:
            raw = read_json(path, "the annotations file")
        with warnings.catch_warnings():         # the clipping warning: counted in the summary instead
            warnings.simplefilter("ignore")
            ann = validate_annotations(drop_bad_rows(raw, dropped), file=path)
        for video, entry in ann["database"].items():
            if video in origin:
                raise FscalError(f"{where(file=path, video=video, field='database')}: the video is also "
                                 f"in {str(origin[video])!r}; give each video once")
            origin[video] = path
            if entry["annotations"]:
                database[video] = entry
            else:
                dropped[ROWS[3]] += 1
    names = ", ".join(Path(str(s).split("=")[-1]).name for s in specs)
    ann = {"version": f"fscal-edu prepare from {names}", "taxonomy": [], "database": dict(sorted(database.items()))}
    return ann, set(origin) - set(database)


def read_split_file(path, dataset: str, classes) -> dict:
    """The split of ``dataset`` in ``path`` (a plain split file or one keyed by dataset), checked."""
    path = Path(path)
    raw = read_json(path, "the split file")
    key = DATASETS[dataset]["split_key"] if isinstance(raw, dict) and "base" not in raw else None
    return load_splits(path, classes=classes, dataset=key)


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------

def _field(e: Exception) -> str:
    m = re.search(r"field '([^']+)'", str(e))
    return m.group(1) if m else "path"


def read_shapes(files: dict, progress: bool = True) -> tuple[dict, dict]:
    """``({video: (T, C)}, {video: (field, message)})``: every file read and checked for values."""
    from tqdm.auto import tqdm
    shapes, bad = {}, {}
    for video, path in tqdm(files.items(), desc="check features", disable=None if progress else True,
                            leave=False):
        try:
            x = read_features(path, video_id=video)                             # (T, C) float32
            big = float(np.abs(x).max())
            if big > FLOAT16_MAX:
                raise FscalError(f"{where(file=path, video=video, field='feats')}: values up to {big:.3g} "
                                 f"do not fit the float16 feature store (|x| <= {FLOAT16_MAX:.0f})")
            shapes[video] = x.shape
        except FscalError as e:
            bad[video] = (_field(e), str(e))
    return shapes, bad


def feature_meta(opts, dataset: str, dim: int, lengths) -> FeatureMeta:
    """``features.json`` from the options, the dataset's defaults and the files' lengths."""
    given = {k: getattr(opts, k, None) for k in STRIDED}
    if opts.resize_length is not None:
        return FeatureMeta(dim, resize_length=opts.resize_length)
    if all(v is None for v in given.values()) and len(set(lengths)) <= 1:
        return FeatureMeta(dim, resize_length=int(next(iter(lengths), 1)))
    values = {k: v if v is not None else DATASETS[dataset]["strided"].get(k) for k, v in given.items()}
    for k, v in values.items():
        if v is None:
            raise FscalError(f"{where(field='--' + k.replace('_', '-'))}: the feature files have different lengths ("
                             f"{min(lengths)} to {max(lengths)} rows), so they are strided: give --fps, "
                             f"--feat-stride and --num-frames (or --resize-length N if they are resized, "
                             f"e.g. --resize-length {Counter(lengths).most_common(1)[0][0]}, the most "
                             f"common length)")
    return FeatureMeta(dim, fps=float(values["fps"]), feat_stride=int(values["feat_stride"]),
                       num_frames=int(values["num_frames"]))


def length_problem(meta: FeatureMeta, T: int, duration: float, tolerance: float) -> str | None:
    """Why ``T`` rows do not fit a video of ``duration`` seconds, or None."""
    if not meta.strided:
        return None if T == meta.resize_length else (f"has {T} rows; resized features have "
                                                     f"resize_length = {meta.resize_length} rows each")
    expected = duration * meta.fps / meta.feat_stride
    slack = max(tolerance * expected, meta.num_frames / meta.feat_stride + 1)
    if abs(T - expected) <= slack:
        return None
    return (f"has {T} rows; a video of {duration:.2f} s at fps {meta.fps:g} and feat_stride "
            f"{meta.feat_stride} has about {expected:.0f} (+- {slack:.0f}; --length-tolerance {tolerance:g})")


def check_features(opts, ann: dict, dropped: Counter, notes: list, left_out=frozenset()) -> tuple[FeatureMeta, dict]:
    """Match the feature files to the annotated videos and check them; ``(meta, {video: path})``
    of the videos kept. Drops videos from ``ann`` (with ``--drop-missing`` / ``--drop-bad``)."""
    fdir, db = Path(opts.features), ann["database"]
    if not fdir.is_dir():
        raise FscalError(f"{where(file=fdir, field='--features')}: feature directory does not exist")
    files = feature_files(fdir)
    extra = sorted(set(files) - set(db))
    if extra:
        dropped["feature files of videos not in the annotations (ignored)"] += len(extra)
        empty = len(set(extra) & left_out)
        notes.append(f"feature files of videos not in the annotations (ignored): {', '.join(extra[:5])}"
                     + (", ..." if len(extra) > 5 else "")
                     + (f"; {empty} of them are videos left out with no valid instance" if empty else ""))
    missing = [v for v in db if v not in files]
    if missing and not opts.drop_missing:
        try:
            find_feature_file(fdir, missing[0])
        except FscalError as e:
            more = f"; {len(missing) - 1} more video(s) have none" if len(missing) > 1 else ""
            raise FscalError(f"{e}{more}; --drop-missing leaves such videos out") from None
    for v in missing:
        del db[v]
    dropped[ROWS[4]] += len(missing)
    files = {v: files[v] for v in db}
    if not files:
        raise FscalError(f"{where(file=fdir, field='--features')}: no feature file of an annotated video")
    shapes, bad = read_shapes(files, progress=getattr(opts, "progress", True))
    widths = Counter(c for _, c in shapes.values())
    dim = opts.feature_dim or (widths.most_common(1)[0][0] if widths else None)
    for v, (T, C) in shapes.items():
        if C != dim:
            said = "--feature-dim says" if opts.feature_dim else f"{widths[dim]} of {len(shapes)} files have"
            bad[v] = ("feature_dim", f"{where(file=files[v], video=v, field='feature_dim')}: features have "
                                     f"width {C}; {said} {dim}")
    good = {v: s for v, s in shapes.items() if v not in bad}
    if good:
        meta = feature_meta(opts, opts.dataset, dim, [T for T, _ in good.values()])
        for v, (T, _) in good.items():
            why = length_problem(meta, T, float(db[v]["duration"]), opts.length_tolerance)
            if why:
                bad[v] = ("length", f"{where(file=files[v], video=v, field='T')}: {why}")
    if bad and (not opts.drop_bad or not good):
        first = bad[min(bad)][1]
        more = f"; {len(bad) - 1} more bad feature file(s)" if len(bad) > 1 else ""
        raise FscalError(f"{first}{more}" + ("" if opts.drop_bad else "; --drop-bad leaves such videos out"))
    for v, (field, _) in sorted(bad.items()):
        dropped[f"videos with bad features: {BAD_REASON.get(field, field)} (--drop-bad)"] += 1
        del db[v], files[v]
    return meta, files


# ---------------------------------------------------------------------------------------------
# Episodes, output, summary
# ---------------------------------------------------------------------------------------------

def ready_classes(ann: dict, classes, shots: int) -> tuple[list, list]:
    """``(ready, skipped)``: the classes that can make a ``shots``-shot episode whichever of their
    videos is the query (the rule of :func:`fscal_edu.runs.check_class_counts`), and the others."""
    from ..runs import check_class_counts
    ready, skipped, db, holders = [], [], ann["database"], {}
    for v, e in db.items():
        for a in e["annotations"]:
            holders.setdefault(a["label"], set()).add(v)
    for c in classes:
        videos = {v: db[v] for v in sorted(holders.get(c, ()))}
        try:
            check_class_counts(SimpleNamespace(annotations={"database": videos}, root=Path(".")), [c], shots)
            ready.append(c)
        except FscalError:
            skipped.append(c)
    return ready, skipped


def write_episodes(out: Path, ann: dict, splits: dict, opts, notes: list) -> dict:
    """Fixed val/test episodes for K = 1 and 5; ``{(split, K): number written}``."""
    from .episodes import sample_episodes, save_episodes
    counts = {}
    for split, n in (("val", opts.val_episodes), ("test", opts.test_episodes)):
        for shots in (1, 5):
            ready, skipped = ready_classes(ann, splits[split], shots)
            if skipped:
                notes.append(f"{split} {shots}-shot episodes skip {len(skipped)} class(es) with too few clips "
                             f"outside the query: {', '.join(skipped[:5])}" + (", ..." if len(skipped) > 5 else ""))
            counts[split, shots] = n if ready else 0
            if ready and n:
                eps = sample_episodes(ann, ready, shots, n, seed=opts.seed * 1000 + shots,
                                      prefix=f"{split}{shots}shot")
                save_episodes(eps, out / f"episodes_{split}_{shots}shot.json")
    for shots in (1, 5):
        skipped = ready_classes(ann, splits["base"], shots)[1]
        if skipped:
            notes.append(f"{len(skipped)} base class(es) cannot make a {shots}-shot episode (fscal-edu train "
                         f"--shots {shots} stops): {', '.join(skipped[:5])}" + (", ..." if len(skipped) > 5 else ""))
    return counts


def check_out(opts) -> Path:
    """``--out``: new or empty, or ``--overwrite`` (the old folder is moved aside when the dataset
    is written, never deleted); never holding an input or inside one, never inside a dataset
    (:func:`fscal_edu.outputs.check_output`)."""
    from ..outputs import check_output
    out = Path(opts.out)
    at = where(file=out, field="--out")
    if out.exists() and not out.is_dir():
        raise FscalError(f"{at}: is a file; give a folder")
    inputs = [opts.features, opts.split_file, *(_subset_and_path(str(s))[1] for s in opts.annotations)]
    full = out.is_dir() and any(out.iterdir())
    check_output(out, inputs=inputs, replace_dataset=True, overwrite=opts.overwrite and full)
    if full and not opts.overwrite:
        raise FscalError(f"{at}: the folder is not empty; choose a new one or pass --overwrite (which "
                         f"moves the old folder aside to {out.name}.replaced-N first)")
    return out


def write_dataset(out: Path, files: dict, meta: FeatureMeta, ann: dict, splits: dict, copy: bool) -> None:
    """``out/features`` (links or copies), ``features.json``, ``annotations.json``, ``splits.json``;
    a non-empty ``out`` (``--overwrite``, :func:`check_out`) is first moved aside, never deleted."""
    from ..outputs import move_aside
    if out.is_dir() and any(out.iterdir()):
        move_aside(out)
    feats = out / "features"
    feats.mkdir(parents=True)
    for path in files.values():
        if copy:
            shutil.copy2(path, feats / path.name)
        else:
            (feats / path.name).symlink_to(path.resolve())
    meta.save(out)
    save_annotations(ann, out / "annotations.json")
    save_splits(splits, out / "splits.json")


def summarize(ann: dict, splits: dict, episodes: dict) -> dict:
    """Classes, videos, instances and episodes per split, and all together."""
    db, rows = ann["database"], {}
    for split in SPLIT_NAMES:
        mine = set(splits[split])
        inst = [(v, a) for v, e in db.items() for a in e["annotations"] if a["label"] in mine]
        rows[split] = {"classes": len(mine), "videos": len({v for v, _ in inst}), "instances": len(inst),
                       "episodes_1shot": episodes.get((split, 1)), "episodes_5shot": episodes.get((split, 5))}
    rows["all"] = {"classes": len(labels(ann)), "videos": len(db),
                   "instances": sum(len(e["annotations"]) for e in db.values()),
                   "episodes_1shot": None, "episodes_5shot": None}
    return rows


def format_summary(rows: dict, dropped: Counter, notes: list) -> str:
    head = ["split", "classes", "videos", "instances", "episodes K=1", "episodes K=5"]
    lines = ["  ".join(f"{h:>12}" if i else f"{h:<6}" for i, h in enumerate(head))]
    for split, r in rows.items():
        cells = [r[k] for k in ("classes", "videos", "instances", "episodes_1shot", "episodes_5shot")]
        lines.append("  ".join([f"{split:<6}"] + [f"{'-' if c is None else c:>12}" for c in cells]))
    width = max([len(k) for k in dropped] + [30])
    lines += ["", f"{'dropped or ignored':<{width}}  {'count':>7}"]
    lines += [f"{k:<{width}}  {n:>7}" for k, n in dropped.items()] or [f"{'(nothing)':<{width}}  {0:>7}"]
    return "\n".join(lines + ([""] + [f"note: {n}" for n in notes] if notes else []))


def prepare(opts) -> dict:
    """The whole job (see the module docstring); ``opts`` holds the command's options. Returns the
    summary that ``prepare.json`` holds."""
    if opts.dataset not in DATASETS:
        raise FscalError(f"{where(field='--dataset')}: unknown dataset {opts.dataset!r}; use one of {sorted(DATASETS)}")
    for k, v in ((k, getattr(opts, k)) for k in STRIDED):
        if v is not None and (not _finite(v) or v <= 0):
            raise FscalError(f"{where(field='--' + k.replace('_', '-'))}: must be a positive number, got {v!r}")
        if v is not None and opts.resize_length is not None:
            raise FscalError(f"{where(field='--resize-length')}: give either --resize-length (resized features) "
                             f"or --fps/--feat-stride/--num-frames (strided ones), not both")
    if not _finite(opts.length_tolerance) or opts.length_tolerance < 0:
        raise FscalError(f"{where(field='--length-tolerance')}: must be a number >= 0, got {opts.length_tolerance!r}")
    out = check_out(opts)
    dropped, notes = Counter(dict.fromkeys(ROWS, 0)), []
    ann, left_out = read_annotations(opts.annotations, dropped)
    splits = read_split_file(opts.split_file, opts.dataset, labels(ann))
    for name in ("base", "test"):
        if not splits[name]:
            raise FscalError(f"{where(file=opts.split_file, field=name)}: no {name} classes; a dataset needs some")
    meta, files = check_features(opts, ann, dropped, notes, left_out)
    left = set(labels(ann))
    for name in SPLIT_NAMES:
        for c in splits[name]:
            if c not in left:
                raise FscalError(f"{where(file=opts.split_file, field=name)}: class {c!r} has no instance left: "
                                 f"every video holding it was dropped (no feature file or bad features)")
    if opts.val_from_base:
        if opts.val_from_base >= len(splits["base"]):
            raise FscalError(f"{where(field='--val-from-base')}: {opts.val_from_base} of "
                             f"{len(splits['base'])} base classes would leave none to train on")
        rng = np.random.default_rng(opts.seed)
        moved = sorted(str(c) for c in rng.choice(sorted(splits["base"]), opts.val_from_base, replace=False))
        splits = {"base": [c for c in splits["base"] if c not in moved], "val": splits["val"] + moved,
                  "test": splits["test"]}
        notes.append(f"--val-from-base moved {len(moved)} base class(es) to val: {', '.join(moved)}")
    elif not splits["val"]:
        notes.append("val has no classes (the split file's own definition), so no val episodes: fscal-edu "
                     "train validates on val episodes; --val-from-base N moves N base classes to val")
    write_dataset(out, files, meta, ann, splits, opts.copy)
    episodes = write_episodes(out, ann, splits, opts, notes)
    from .episodes import World
    world = World(out)                                          # the result loads as a dataset
    with warnings.catch_warnings(record=True) as caught:       # short supports: a note, not 4 warnings
        warnings.simplefilter("always")
        for split, shots in episodes:
            if episodes[split, shots]:
                world.episodes(split, shots)
    notes += [re.sub(r"^file '.*?(episodes_\w+\.json)', field '[^']+'", r"\1", str(w.message)) for w in caught]
    summary = {"dataset": opts.dataset, "out": str(out), "features": "copied" if opts.copy else "linked",
               "feature_meta": {k: v for k, v in vars(meta).items() if v is not None},
               "splits": summarize(ann, splits, episodes), "dropped": dict(dropped), "notes": notes,
               "options": {k: (list(map(str, v)) if isinstance(v, list) else v) for k, v in vars(opts).items()
                           if k not in ("func", "command") and (v is None or isinstance(v, (str, int, float, list)))}}
    (out / "prepare.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
