"""Drawing episodes: K support clips of one class from other videos, and a query video that holds it.

Used for the fixed evaluation episodes (``sample_episodes``, saved by ``save_episodes``) and for
the training episodes (:class:`fscal_edu.data.episodes.RandomEpisodes`). Supports are exact
ground-truth crops unless the world's :class:`EpisodeKnobs` loosen them or swap some for outliers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..utils import FscalError, where
from .annotations import instances_by_class


def check_shots(shots) -> int:
    """K, the support clips per episode: an integer >= 1."""
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise FscalError(f"{where(field='shots')}: K (support clips per episode) must be an integer "
                         f">= 1, got {shots!r}")
    return int(shots)


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
