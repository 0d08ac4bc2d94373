"""Few-shot episodes: the sampler, ``episodes.json``, the world loader, and a torch Dataset.

An episode is K trimmed support clips of one class c, cut from videos other
than the query, and one untrimmed query video that holds c. The model never sees the name c:
it is kept in the episode only so that evaluation knows which instances count.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from ..utils import FscalError, read_json, where
from .annotations import instances_by_class, labels, load_annotations, load_splits
from .features import FeatureMeta, check_segment, crop, find_feature_file, seconds_to_index
from .sampling import (EpisodeKnobs, check_pool, check_shots, pooled_rows, sample_episode,  # noqa: F401
                       sample_episodes, save_episodes)
from .store import FeatureStore
from .synthetic import read_world_json


# ---------------------------------------------------------------------------------------------
# Sampling and episode files
# ---------------------------------------------------------------------------------------------

def load_episodes(path, annotations: dict | None = None, *, shots: int | None = None,
                  split: str | None = None, splits: dict | None = None, meta=None) -> list[dict]:
    """Read ``episodes.json`` and check every episode (:func:`validate_episode`).

    With ``annotations``, a support segment that ends past its video is clipped to the video's
    duration and one shorter than one snippet (``meta``, the :class:`FeatureMeta`) is kept; each
    case gives one warning naming the file and the videos, like the annotation loader's clipping.
    """
    path = Path(path)
    raw = read_json(path, "the episodes file")
    if not isinstance(raw, dict) or not isinstance(raw.get("episodes"), list):
        raise FscalError(f"{where(file=path, field='episodes')}: expected {{\"episodes\": [...]}}")
    episodes = check_episodes(raw["episodes"], annotations, file=path, shots=shots, split=split, splits=splits)
    clipped, short = [], []
    for ep in episodes:
        if annotations is None:
            continue
        for clip in ep["support"]:
            start, end = clip["segment"]
            duration = float(annotations["database"][clip["video"]]["duration"])
            if end > duration:
                clip["segment"] = [start, duration]
                clipped.append(clip["video"])
            if meta is not None and min(end, duration) - start < meta.snippet_seconds(duration):
                short.append(clip["video"])
    for videos, what in ((clipped, "clipped {n} support segment(s) that end past their video to its duration"),
                         (short, "{n} support segment(s) are shorter than one feature snippet")):
        if videos:
            names = sorted(set(videos))
            warnings.warn(f"{where(file=path, field='support.segment')}: {what.format(n=len(videos))}, in "
                          f"{len(names)} video(s): {', '.join(names[:5])}" + (", ..." if len(names) > 5 else ""),
                          stacklevel=2)
    return episodes


def check_episodes(episodes, annotations: dict | None = None, *, file=None, shots: int | None = None,
                   split: str | None = None, splits: dict | None = None) -> list[dict]:
    """``episodes`` (a list), each checked by :func:`validate_episode`, their ids unique."""
    if not isinstance(episodes, list):
        raise FscalError(f"{where(file=file, field='episodes')}: expected a list of episodes, got "
                         f"{type(episodes).__name__}")
    first = {}
    for k, ep in enumerate(episodes):
        validate_episode(ep, annotations, file=file, shots=shots, split=split, splits=splits)
        if ep["id"] in first:
            raise FscalError(f"{where(file=file, video=ep['query'], field='id')}: episode id {ep['id']!r} "
                             f"appears twice (episodes {first[ep['id']]} and {k}); ids must be unique")
        first[ep["id"]] = k
    return episodes


def validate_episode(ep: dict, annotations: dict | None, *, file=None, shots: int | None = None,
                     split: str | None = None, splits: dict | None = None) -> None:
    """Clear errors for malformed episodes, naming the file, the video and the field.

    Always: the keys ``id, label, query, support``, exactly ``shots`` support clips (at least one
    if ``shots`` is None), each a dict with ``video`` and a finite ``segment`` with
    ``0 <= start < end``. With ``split`` and ``splits``: the class belongs to that split (a stale
    episodes file whose classes moved is an error). With ``annotations``: the query and support
    videos exist, the query holds the class, no support comes from the query, and each support
    starts before its video's end.
    """
    if not isinstance(ep, dict):
        raise FscalError(f"{where(file=file, field='episodes')}: an episode must be a dict, got {ep!r:.60}")
    for key in ("id", "label", "query", "support"):
        if key not in ep:
            raise FscalError(f"{where(file=file, video=ep.get('query'), field=key)}: episode "
                             f"{ep.get('id')!r} lacks {key!r}")
    for key in ("query", "id", "label"):          # names, never lists or numbers (keys of dicts)
        if not isinstance(ep[key], str) or not ep[key]:
            raise FscalError(f"{where(file=file, video=ep['query'] if isinstance(ep['query'], str) else None, field=key)}"
                             f": episode {ep['id']!r:.60} needs a non-empty string, got {ep[key]!r:.60}")
    name, query, support = ep["id"], ep["query"], ep["support"]
    if not isinstance(support, list) or len(support) < (shots or 1):
        raise FscalError(f"{where(file=file, video=query, field='support')}: episode {name!r} needs a "
                         f"list of {'K = ' + str(shots) if shots else 'at least 1'} support clip(s), "
                         f"got {support!r:.80}")
    if shots is not None and len(support) != shots:
        raise FscalError(f"{where(file=file, video=query, field='support')}: episode {name!r} has "
                         f"{len(support)} support clips; a {shots}-shot episode file needs exactly K = {shots}")
    if splits is not None and split is not None and ep["label"] not in splits.get(split, ()):
        home = next((s for s, names in splits.items() if ep["label"] in names), None)
        raise FscalError(f"{where(file=file, video=query, field='label')}: episode {name!r} has class "
                         f"{ep['label']!r}, which is not in split {split!r}"
                         + (f" (splits.json puts it in {home!r})" if home else "")
                         + "; the episodes file does not match splits.json: sample it again")
    for clip in support:
        if not isinstance(clip, dict) or not isinstance(clip.get("video"), str) or "segment" not in clip:
            raise FscalError(f"{where(file=file, video=query, field='support')}: episode {name!r} has "
                             f"support clip {clip!r:.80}; need {{\"video\": a video id, \"segment\"}}")
        seg = clip["segment"]
        numbers = isinstance(seg, (list, tuple)) and len(seg) == 2 and all(
            isinstance(t, (int, float)) and np.isfinite(t) for t in seg)
        if not numbers or not 0 <= seg[0] < seg[1]:
            raise FscalError(f"{where(file=file, video=clip['video'], field='support.segment')}: "
                             f"episode {name!r} has segment {seg}; need 0 <= start < end")
    if annotations is None:
        return
    db = annotations["database"]
    if query not in db:
        raise FscalError(f"{where(file=file, video=query, field='query')}: episode {name!r} "
                         f"names a video that the annotations do not know")
    if not any(a["label"] == ep["label"] for a in db[query]["annotations"]):
        raise FscalError(f"{where(file=file, video=query, field='label')}: episode {name!r}: the query "
                         f"holds no instance of its class {ep['label']!r}")
    for clip in support:
        v, seg = clip["video"], clip["segment"]
        if v not in db:
            raise FscalError(f"{where(file=file, video=v, field='support.video')}: episode "
                             f"{name!r} names a video that the annotations do not know")
        if v == query:
            raise FscalError(f"{where(file=file, video=v, field='support.video')}: episode "
                             f"{name!r} cuts a support from its own query video")
        if seg[0] >= db[v]["duration"]:
            raise FscalError(f"{where(file=file, video=v, field='support.segment')}: episode "
                             f"{name!r} has segment {seg}, which starts after the video's end "
                             f"({db[v]['duration']} s)")


# ---------------------------------------------------------------------------------------------
# The world on disk
# ---------------------------------------------------------------------------------------------

class World:
    """A dataset directory in the field's formats (the shipped ``data_samples/anet_like`` or real).

    ``annotations.json``, ``splits.json``, ``features.json``, ``features/<video>.<npy|npz|csv|pt>``
    and optional fixed ``episodes_<split>_<K>shot.json``. Features are read once, on first use,
    into the memory-mapped float16 :class:`~fscal_edu.data.store.FeatureStore` (``DIR/.fscal_cache/``),
    which every process and DataLoader worker shares instead of holding its own copy.
    """

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FscalError(f"{where(file=self.root, field='path')}: dataset directory does not exist")
        self.meta = FeatureMeta.load(self.root)
        self.annotations = load_annotations(self.root / "annotations.json")
        self.labels = labels(self.annotations)
        self.splits = load_splits(self.root / "splits.json", classes=self.labels)
        self.label_index = {c: i for i, c in enumerate(self.labels)}
        self.store = FeatureStore(self.root, self.meta.feature_dim)        # built on first use
        # a synthetic world's world.json, checked now (a knob out of range fails before any run starts)
        path = self.root / "world.json"
        self.world_info = read_world_json(path).get("info", {}) if path.is_file() else {}
        self._clips: OrderedDict = OrderedDict()    # (video, segment, length) -> resampled clip
        self._clip_bytes = 0

    def raw_features(self, video_id: str) -> np.ndarray:
        """``(T, C)`` float16 features of one video: a read-only view of the shared store, no copy."""
        if video_id not in self.annotations["database"]:
            at = where(file=self.root / "annotations.json", video=video_id, field="database")
            raise FscalError(f"{at}: unknown video id")
        if video_id not in self.store:
            find_feature_file(self.root / "features", video_id)       # raises: no file for this video
        return self.store[video_id]

    def features(self, video_id: str) -> np.ndarray:
        """``(T, C)`` float32 features of one video (validated: width, NaN, length): a fresh copy
        of the store's rows (:meth:`raw_features` is the shared float16 view)."""
        return np.array(self.raw_features(video_id), dtype=np.float32)

    CLIP_CACHE_BYTES = 512 * 2**20

    def clip(self, video_id: str, segment, length: int) -> np.ndarray:
        """``(length, C)`` float32: ``segment`` (seconds; ``None``: the whole video) resampled to
        ``length`` snippets. Kept in a cache (least recently used out past 512 MB), since
        training episodes draw the same videos and instances again and again; read-only."""
        if segment is not None:
            check_segment(segment, video=video_id)          # end < start would read backwards
        key = (video_id, None if segment is None else tuple(segment), length)
        if key in self._clips:
            self._clips.move_to_end(key)
            return self._clips[key]
        x = self.features(video_id)                                                # (T_video, C)
        start, end = (0.0, float(len(x))) if segment is None else self.to_index(video_id, segment, len(x))
        clip = crop(x, float(start), float(end), length)                           # (length, C)
        clip.flags.writeable = False
        self._clips[key] = clip
        self._clip_bytes += clip.nbytes
        while self._clip_bytes > self.CLIP_CACHE_BYTES and len(self._clips) > 1:
            self._clip_bytes -= self._clips.popitem(last=False)[1].nbytes
        return clip

    @property
    def episode_knobs(self) -> dict:
        """A synthetic world's loose or outlier supports (``world.json``), for training episodes
        drawn like its fixed ones; ``{}`` for real data."""
        config = self.world_info.get("config", {})
        return {k: config[k] for k in ("support_slack", "outlier_prob") if k in config}

    def query_features(self, video_id: str, pool: int = 1, rows: int | None = None) -> np.ndarray:
        """``(ceil(T_video / pool), C)``: the video's rows read at a coarser rate, each the mean of
        ``pool`` consecutive feature rows (``pool = 1``: :meth:`raw_features`, no copy); ``rows``:
        that many rows instead, each the mean of its bin (a video shorter than ``rows``: :meth:`clip`)."""
        raw = self.raw_features(video_id)                                          # (T_video, C)
        if rows is not None and rows >= len(raw):
            return self.clip(video_id, None, rows)
        if rows is None and check_pool(pool) == 1:
            return raw
        rows = rows or pooled_rows(len(raw), pool)
        x = torch.from_numpy(np.asarray(raw, dtype=np.float32))                    # (T_video, C)
        # row j = mean of the feature rows in the j-th of ``rows`` equal bins (about ``pool`` rows each),
        # so that position x on this axis is x * T_video / rows on the file's axis (World.to_index)
        return torch.nn.functional.adaptive_avg_pool1d(rearrange(x, "t c -> c t"), rows).T.numpy()

    def duration(self, video_id: str) -> float:
        return float(self.annotations["database"][video_id]["duration"])

    def episodes(self, split: str, shots: int) -> list[dict]:
        path = self.root / f"episodes_{split}_{shots}shot.json"
        if not path.is_file():
            raise FscalError(f"{where(file=path, field='path')}: no fixed {shots}-shot episodes for "
                             f"split {split!r}")
        return load_episodes(path, self.annotations, shots=shots, split=split, splits=self.splits,
                             meta=self.meta)

    def to_index(self, video_id: str, t, num_snippets: int):
        """Seconds -> snippet coordinates on an axis of ``num_snippets`` snippets of this video."""
        return seconds_to_index(t, duration=self.duration(video_id), num_snippets=num_snippets,
                                meta=self.meta, feat_len=len(self.raw_features(video_id)))


def load_world(root) -> World:
    return World(root)


# ---------------------------------------------------------------------------------------------
# Tensors for the model
# ---------------------------------------------------------------------------------------------

def window_starts(length: int, T: int, stride: int) -> list[int]:
    """Starts of the windows of ``T`` snippets, every ``stride``, that cover a video of ``length``
    snippets; the last window ends at the video's end (one window, padded, if ``length <= T``)."""
    if length <= T:
        return [0]
    starts = list(range(0, length - T + 1, stride))
    return starts if starts[-1] == length - T else starts + [length - T]


def _segments(world: World, video: str, anns, axis: int, offset: int, span: int) -> np.ndarray:
    """``anns`` (annotation dicts) in snippet coordinates of a window ``[offset, offset + span)`` of
    an axis of ``axis`` snippets, clipped to the window; those outside it dropped: ``(G, 2)``."""
    seg = np.asarray([a["segment"] for a in anns], dtype=np.float64).reshape(-1, 2)
    seg = np.clip(np.asarray(world.to_index(video, seg, axis), dtype=np.float64) - offset, 0.0, span)
    return seg[seg[:, 1] - seg[:, 0] > 1e-6].astype(np.float32)


def episode_tensors(world: World, ep: dict, T: int, T_S: int, *, mode: str = "resample",
                    start: int = 0, foreign=(), pool: int = 1, average: bool = False) -> dict:
    """One episode as tensors: query ``(T, C)`` with its ``mask (T,)``, supports ``(K, T_S, C)``,
    ground truth ``(G, 2)``.

    Each support segment is cut out of its video and resampled to T_S snippets. The query:

    - ``mode="resample"``: the whole video resampled to T snippets (``mask`` all True; ``average``:
      each the mean of its bin of the video's rows, :meth:`World.query_features`);
    - ``mode="window"``: the T snippets from ``start`` at the features' own rate, the tail past the
      video's end zero and masked (``mask`` False); with ``pool > 1`` the video is first read at a
      coarser rate (:meth:`World.query_features`: each row the mean of ``pool`` rows).

    Ground truth: the query's instances of the episode's class, in snippet coordinates of the
    query tensor (clipped to a window). ``offset`` and ``axis`` map them back: ``x + offset`` is a
    position on an axis of ``axis`` snippets of the video. ``ignore``: the query's instances of
    the classes in ``foreign`` (training: classes outside the training split), never negatives.
    """
    q = ep["query"]
    X_S = np.stack([world.clip(c["video"], c["segment"], T_S) for c in ep["support"]])  # (K, T_S, C)
    anns = world.annotations["database"][q]["annotations"]
    if mode == "resample":
        X_Q = world.query_features(q, rows=T) if average else world.clip(q, None, T)    # (T, C)
        mask, axis, span = np.ones(T, dtype=bool), T, T                                # (T,)
    elif mode == "window":
        raw = world.query_features(q, pool)                                  # (T_video / pool, C)
        axis, span = len(raw), min(T, len(raw) - start)
        X_Q = np.zeros((T, raw.shape[1]), dtype=np.float32)                            # (T, C)
        X_Q[:span] = raw[start:start + span]
        mask = np.arange(T) < span                                                     # (T,)
    else:
        raise FscalError(f"{where(field='data.query_mode')}: unknown mode {mode!r}")
    gt = _segments(world, q, [a for a in anns if a["label"] == ep["label"]], axis, start, span)
    ignore = _segments(world, q, [a for a in anns if a["label"] in foreign], axis, start, span)
    return {"query": torch.tensor(X_Q), "support": torch.from_numpy(X_S), "gt": torch.from_numpy(gt),
            "mask": torch.from_numpy(mask), "ignore": torch.from_numpy(ignore),
            "label": world.label_index[ep["label"]], "id": ep["id"], "video": q,
            "duration": world.duration(q), "offset": float(start), "axis": axis}


class EpisodeDataset(Dataset):
    """Fixed episodes (a list of dicts, e.g. ``world.episodes("test", 5)``) as tensors.

    ``mode="window"``: one item per window of each episode's query (:func:`window_starts`, every
    ``stride`` snippets); the items of one episode share its ``id``, and predictions merge them.
    """

    def __init__(self, world: World, episodes: list[dict], T: int, T_S: int, *, mode: str = "resample",
                 stride: int | None = None, pool: int = 1, average: bool = False):
        self.world, self.episodes, self.T, self.T_S, self.mode = world, episodes, T, T_S, mode
        self.pool, self.average = check_pool(pool), average
        if mode == "window":
            stride = stride or max(1, T // 2)
            self.items = [(i, s) for i, ep in enumerate(episodes)
                          for s in window_starts(pooled_rows(len(world.raw_features(ep["query"])), self.pool),
                                                 T, stride)]
        else:
            self.items = [(i, 0) for i in range(len(episodes))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, j):
        i, start = self.items[j]
        return episode_tensors(self.world, self.episodes[i], self.T, self.T_S, mode=self.mode, start=start,
                               pool=self.pool, average=self.average)


class RandomEpisodes(Dataset):
    """Training episodes drawn afresh from one split's classes; item ``i`` depends only on (seed, i).

    That makes a run repeatable and a resumed run draw exactly the episodes it would have drawn.
    Instances of classes outside the split in a query come with the episode as ``ignore``: the
    loss never uses them as negatives (no val/test class reaches training, not even as "no").
    ``mode="window"``: the query is one window of T snippets; with probability ``neg_frac`` it
    starts anywhere (it may hold no instance of the class: a negative window), otherwise it holds
    a randomly chosen instance of the class whole (when the instance fits in T); ``pool``: windows
    read at a coarser rate, ``average``: resampled queries averaged (:func:`episode_tensors`).
    """

    def __init__(self, world: World, split: str, shots: int, length: int, T: int, T_S: int, seed: int = 0,
                 *, mode: str = "resample", neg_frac: float = 0.1, twin_partners: bool = False, pool: int = 1,
                 average: bool = False):
        self.world, self.shots, self.length, self.T, self.T_S, self.seed = world, check_shots(shots), length, T, T_S, seed
        self.mode, self.neg_frac, self.pool, self.average = mode, neg_frac, check_pool(pool), average
        if not world.splits.get(split):
            raise FscalError(f"{where(file=world.root / 'splits.json', field=split)}: no classes in split "
                             f"{split!r} to draw training episodes from")
        self.classes = list(world.splits[split])
        self.foreign = frozenset(world.labels) - set(self.classes)
        self.by_class = {c: v for c, v in instances_by_class(world.annotations).items() if c in set(self.classes)}
        self.knobs = EpisodeKnobs(world.annotations, **world.episode_knobs)
        # twin_partners: item 2i+1 draws the twin of item 2i's class (when it has one in the split),
        # so that the relation loss's cross-episode negatives (episode b with b-1's supports) are hard
        self.twin = self.knobs.twin if twin_partners else {}     # class -> its twin (the taxonomy's)

    def __len__(self):
        return self.length

    def window_start(self, ep: dict, rng: np.random.Generator) -> int:
        """Where a training window starts in the query of ``ep`` (see the class docstring)."""
        q, T = ep["query"], self.T
        length = pooled_rows(len(self.world.raw_features(q)), self.pool)
        if length <= T:
            return 0
        if rng.random() < self.neg_frac:
            return int(rng.integers(length - T + 1))
        segs = [a["segment"] for a in self.world.annotations["database"][q]["annotations"] if a["label"] == ep["label"]]
        s, e = np.asarray(self.world.to_index(q, segs[rng.integers(len(segs))], length), dtype=np.float64)
        lo, hi = int(np.ceil(e)) - T, int(np.floor(s))           # windows [start, start + T) holding [s, e]
        lo, hi = max(0, min(lo, hi)), min(length - T, max(lo, hi))
        return int(rng.integers(min(lo, hi), max(lo, hi) + 1))

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        label = self.classes[rng.integers(len(self.classes))]
        if self.twin and i % 2:                  # the class of item i - 1 (its first draw), then its twin
            before = self.classes[np.random.default_rng([self.seed, i - 1]).integers(len(self.classes))]
            label = self.twin[before] if self.twin.get(before) in self.by_class else label
        ep = sample_episode(self.by_class, label, self.shots, rng, f"train_{i}", self.knobs)
        start = self.window_start(ep, rng) if self.mode == "window" else 0
        return episode_tensors(self.world, ep, self.T, self.T_S, mode=self.mode, start=start, foreign=self.foreign,
                               pool=self.pool, average=self.average)


def collate(items: list[dict]) -> dict:
    """Stack episodes into a batch; ground truth padded to the largest count, with a mask.

    query ``(B, T, C)`` with ``mask (B, T)`` (True = a real snippet), support ``(B, K, T_S, C)``,
    gt ``(B, G, 2)``, gt_mask ``(B, G)``, ignore ``(B, G', 2)`` with ignore_mask ``(B, G')``,
    label ``(B,)`` (class index, used only by the training losses), plus lists of ids, videos,
    durations, offsets and axes (:func:`episode_tensors`).
    """
    if not items:
        raise FscalError(f"{where(field='batch')}: no episode to collate")
    for key, what in (("support", "support clips (K, T_S, C)"), ("query", "query snippets (T, C)")):
        first = items[0]
        for it in items[1:]:
            if it[key].shape != first[key].shape:
                raise FscalError(f"{where(video=it['video'], field=key)}: episode {it['id']!r} has "
                                 f"{what} {tuple(it[key].shape)}, episode {first['id']!r} has "
                                 f"{tuple(first[key].shape)}; one batch needs one shape (K = "
                                 f"{len(first['support'])})")

    def padded(key):
        G = max(1, max(len(it.get(key, ())) for it in items))
        seg, real = torch.zeros(len(items), G, 2), torch.zeros(len(items), G, dtype=torch.bool)
        for b, it in enumerate(items):
            n = len(it.get(key, ()))
            if n:
                seg[b, :n], real[b, :n] = it[key], True
        return seg, real

    gt, gt_mask = padded("gt")
    ignore, ignore_mask = padded("ignore")
    T = items[0]["query"].shape[0]
    return {"query": torch.stack([it["query"] for it in items]),
            "mask": torch.stack([it["mask"] if "mask" in it else torch.ones(T, dtype=torch.bool) for it in items]),
            "support": torch.stack([it["support"] for it in items]),
            "gt": gt, "gt_mask": gt_mask, "ignore": ignore, "ignore_mask": ignore_mask,
            "label": torch.tensor([it["label"] for it in items]),
            "id": [it["id"] for it in items], "video": [it["video"] for it in items],
            "duration": [it["duration"] for it in items],
            "offset": [it.get("offset", 0.0) for it in items], "axis": [it.get("axis", T) for it in items]}
