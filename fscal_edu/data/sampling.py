"""Drawing episodes: K support clips of one class from other videos, and a query video that holds it.

Used for the fixed evaluation episodes (``sample_episodes``, saved by ``save_episodes``) and for
the training episodes (:class:`fscal_edu.data.episodes.RandomEpisodes`). Supports are exact
ground-truth crops unless the world's :class:`EpisodeKnobs` loosen them or swap some for outliers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils import FscalError, check_int, where
from .annotations import instances_by_class


def check_shots(shots) -> int:
    """K, the support clips per episode: an integer >= 1."""
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise FscalError(f"{where(field='shots')}: K (support clips per episode) must be an integer "
                         f">= 1, got {shots!r}")
    return int(shots)


def check_pool(pool) -> int:
    """The coarser rate of windows (``data.window_pool``): an integer >= 1."""
    return check_int(pool, at_least=1, field="data.window_pool")


def pooled_rows(length: int, pool: int) -> int:
    """Rows of a video of ``length`` feature rows read at ``pool`` rows per query row."""
    return -(-length // pool)


def sample_episode(by_class: dict, label: str, shots: int, rng: np.random.Generator, eid: str,
                   knobs: "EpisodeKnobs | None" = None) -> dict:
    """One episode of class ``label``: a query video holding it, ``shots`` supports from other videos
    (exact instances, unless ``knobs`` loosen them or swap some for outliers)."""
    check_shots(shots)
    clips = by_class[label]
    videos = sorted({v for v, _ in clips})
    query = videos[rng.integers(len(videos))]
    pool = [(v, seg) for v, seg in clips if v != query]          # supports never from the query
    if len(pool) < shots:
        raise FscalError(f"{where(video=query, field='support')}: class {label!r} has only "
                         f"{len(pool)} clip(s) outside the query, fewer than K = {shots}")
    pick = rng.choice(len(pool), size=shots, replace=False)
    support = [{"video": pool[i][0], "segment": [float(s) for s in pool[i][1]]} for i in sorted(pick)]
    if knobs is not None and knobs.active:
        support = knobs.apply(support, label, query, rng)
    return {"id": eid, "label": label, "query": query, "support": support}


class EpisodeKnobs:
    """How a world's supports differ from exact ground-truth crops (the generator's
    ``support_slack`` and ``outlier_prob``, read from a synthetic world's ``world.json``).

    ``support_slack (lo, hi)``: each boundary reaches out by a share of the clip's length drawn in
    [lo, hi], into background or a neighbouring instance (clipped to the video). ``outlier_prob``:
    each support is, with that chance, an outlier: an instance of the class's twin (when the world
    has twins) or, otherwise or with even odds, a stretch of another video with no instance in it.
    """

    def __init__(self, annotations: dict, support_slack=(0.0, 0.0), outlier_prob: float = 0.0):
        self.db = annotations["database"]
        self.slack, self.outlier_prob = tuple(float(x) for x in support_slack), float(outlier_prob)
        self.active = self.slack[1] > 0 or self.outlier_prob > 0
        self.twin = {t["nodeName"]: t["twin"] for t in annotations.get("taxonomy", ())
                     if isinstance(t, dict) and t.get("twin")}
        self.by_class = instances_by_class(annotations) if self.outlier_prob > 0 else {}

    def apply(self, support: list, label: str, query: str, rng: np.random.Generator) -> list:
        out = []
        for clip in support:
            if self.outlier_prob > 0 and rng.random() < self.outlier_prob:
                clip = self.outlier(clip, label, query, rng)
            if self.slack[1] > 0:
                s, e = clip["segment"]
                a, b = rng.uniform(*self.slack, size=2) * (e - s)
                clip = {"video": clip["video"], "segment": [max(0.0, s - a), min(float(self.db[clip["video"]]["duration"]), e + b)]}
            out.append(clip)
        return out

    def outlier(self, clip: dict, label: str, query: str, rng: np.random.Generator) -> dict:
        length = clip["segment"][1] - clip["segment"][0]
        twins = [(v, seg) for v, seg in self.by_class.get(self.twin.get(label), ()) if v != query]
        if not (twins and rng.random() < 0.5):
            videos = sorted(v for v in self.db if v != query)
            for _ in range(50):                 # a stretch of `length` seconds that holds no instance
                v = videos[rng.integers(len(videos))]
                d = float(self.db[v]["duration"])
                if d <= length:
                    continue
                s = float(rng.uniform(0, d - length))
                if all(a["segment"][1] <= s or a["segment"][0] >= s + length for a in self.db[v]["annotations"]):
                    return {"video": v, "segment": [s, s + length]}
        if twins:                               # the twin asked for, or no background stretch found
            v, seg = twins[rng.integers(len(twins))]
            return {"video": v, "segment": [float(x) for x in seg]}
        return clip                             # neither: the support stays as it was


def sample_episodes(annotations: dict, classes, shots: int, n: int, *, seed: int = 0,
                    prefix: str = "ep", knobs: dict | None = None) -> list[dict]:
    """``n`` episodes balanced over ``classes`` (class ``i % len(classes)`` of a shuffled order);
    ``knobs``: :class:`EpisodeKnobs`'s keyword arguments (loose or outlier supports)."""
    check_shots(shots)
    by_class = instances_by_class(annotations)
    classes = list(classes)
    if not classes:
        raise FscalError(f"{where(field='classes')}: no class to sample episodes from")
    missing = [c for c in classes if c not in by_class]
    if missing:
        raise FscalError(f"{where(field='label')}: class(es) {missing} have no instance in the annotations")
    for c in classes:
        videos = sorted({v for v, _ in by_class[c]})
        if len(by_class[c]) < shots + 1 or len(videos) < 2:
            raise FscalError(f"{where(field='support')}: class {c!r} has {len(by_class[c])} clip(s) "
                             f"in {len(videos)} video(s) ({', '.join(videos[:5])}); a {shots}-shot "
                             f"episode needs K clips outside the query video")
    rng = np.random.default_rng(seed)
    order = [classes[i] for i in rng.permutation(len(classes))]
    how = EpisodeKnobs(annotations, **knobs) if knobs else None
    return [sample_episode(by_class, order[i % len(order)], shots, rng, f"{prefix}_{i:04d}", how)
            for i in range(n)]


def save_episodes(episodes: list[dict], path) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"episodes": episodes}, indent=1) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# How a query is read: the rule of ``--query-mode auto``
# ---------------------------------------------------------------------------------------------

# What --query-mode auto does with instances longer than half a window: "pool" (windows at a
# coarser rate), which beat "resample" by a wide margin on the long and anet_strided worlds
# (bench/long_instances.py; docs/benchmarks.md, "Long instances in long videos")
LONG_INSTANCES = "pool"


@dataclass
class QueryMode:
    """What :func:`query_mode_rule` decided: ``mode`` ("window" or "resample"), ``pool`` (windows read
    at ``pool`` feature rows per query row, ``data.window_pool``), one line of ``reason``, and the
    statistics it read (rows of the feature files)."""

    mode: str
    pool: int
    reason: str
    stats: dict


def instance_rows(world, split: str = "base") -> tuple[np.ndarray, np.ndarray]:
    """Lengths in feature rows of the instances of ``split``'s classes, and of the videos that hold them."""
    classes, inst, videos = set(world.splits.get(split, ())), [], []
    for vid, entry in world.annotations["database"].items():
        segs = [a["segment"] for a in entry["annotations"] if a["label"] in classes]
        if not segs:
            continue
        rows = len(world.raw_features(vid))
        idx = np.asarray(world.to_index(vid, np.asarray(segs, dtype=np.float64), rows))   # (G, 2)
        inst += list(idx[:, 1] - idx[:, 0])
        videos.append(rows)
    if not inst:
        raise FscalError(f"{where(field=split)}: no instance of the {split!r} classes to read lengths from")
    return np.asarray(inst), np.asarray(videos)


def query_mode_rule(world, T: int = 128, *, split: str = "base", share: float = 0.5,
                    long: str = LONG_INSTANCES) -> QueryMode:
    """``--query-mode auto``: how to read the queries of ``world``, decided by how long its training
    instances are against a window of ``T`` rows.

    - Resized features (one length per video): ``resample`` (the rows already span the video).
    - Strided features whose p95 training instance is at most ``share`` of a window: ``window``
      (short instances survive at the features' own rate). With windows every T / 2 rows, an
      instance of at most T / 2 rows lies whole inside at least one window, hence ``share = 0.5``;
      a longer one is cut by an edge in every window that touches it once it passes T rows, and
      in most of them before.
    - Longer instances: a window of T rows cuts most of them, so ``long`` decides: ``"pool"`` (the
      default: windows at a coarser rate, each query row the mean of ``pool`` feature rows, so that
      the p95 instance is ``share`` of a window) or ``"resample"`` (the whole query at T rows). Pooling
      keeps one rate for every video and averages the noise of ``pool`` rows, where resampling picks
      rows at a rate that differs per video; it won by a wide margin in ``bench/long_instances.py``
      (docs/benchmarks.md, "Long instances in long videos").
    """
    if long not in ("resample", "pool"):
        raise FscalError(f"{where(field='long')}: must be 'resample' or 'pool', got {long!r}")
    if not world.meta.strided:
        return QueryMode("resample", 1, f"query mode: resample (features resized to "
                         f"{world.meta.resize_length} rows per video)", {})
    inst, videos = instance_rows(world, split)
    p95 = float(np.percentile(inst, 95))
    stats = {"instance_rows_median": float(np.median(inst)), "instance_rows_p95": p95,
             "video_rows_median": float(np.median(videos)), "instances": len(inst)}
    # share of a window taken by the p95 instance: p95 / T
    frac = p95 / T
    if frac <= share:
        return QueryMode("window", 1, f"query mode: window (p95 instance {p95:.0f} rows = {100 * frac:.0f} % "
                         f"of a {T}-row window)", stats)
    if long == "pool":
        pool = int(np.ceil(p95 / (share * T)))
        return QueryMode("window", pool, f"query mode: window at 1/{pool} rate (p95 instance {p95:.0f} rows > "
                         f"{100 * share:.0f} % of a {T}-row window; {p95 / pool:.0f} rows at 1/{pool})", stats)
    return QueryMode("resample", 1, f"query mode: resample (p95 instance {p95:.0f} rows > {100 * share:.0f} % "
                     f"of a {T}-row window)", stats)
