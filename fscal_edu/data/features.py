"""Per-snippet video features: readers, ``features.json``, resampling, seconds <-> index.

Every reader returns a float32 array of shape ``(T, C)``: one row per snippet (a short window of
frames summarised by a pretrained backbone), C features per row.

**Coordinate convention (one for the whole package).** A feature axis of ``T`` snippets is a
continuous line from 0 to T on which snippet ``i`` covers ``[i, i + 1)`` and sits at its centre
``i + 0.5``. Proposals, anchors and ground truth in "snippet coordinates" all live on this line.
``seconds_to_index`` / ``index_to_seconds`` are the only place that converts to and from seconds.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils import FscalError, check_int, read_json, where

FEATURE_SUFFIXES = (".npy", ".npz", ".csv", ".pt")


@dataclass
class FeatureMeta:
    """The contents of ``features.json`` beside the feature files.

    Either resized features (``resize_length``: every video resampled to the same T, the
    ActivityNet habit) or strided ones (``fps``, ``feat_stride``, ``num_frames``: one feature
    every ``feat_stride`` frames, each summarising a window of ``num_frames`` frames).
    """

    feature_dim: int
    fps: float | None = None
    feat_stride: int | None = None
    num_frames: int | None = None
    resize_length: int | None = None

    @property
    def strided(self) -> bool:
        return self.resize_length is None

    @classmethod
    def load(cls, path) -> "FeatureMeta":
        path = Path(path)
        if path.is_dir():
            path = path / "features.json"
        raw = read_json(path, "features.json")
        if not isinstance(raw, dict) or "feature_dim" not in raw:
            raise FscalError(f"{where(file=path, field='feature_dim')}: required key is missing")
        kinds = {"feature_dim": int, "fps": float, "feat_stride": int, "num_frames": int, "resize_length": int}
        for key, kind in kinds.items():
            value = raw.get(key)
            if value is None and key != "feature_dim":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or (kind is int and not float(value).is_integer()) or not math.isfinite(value):
                raise FscalError(f"{where(file=path, field=key)}: must be a positive {'integer' if kind is int else 'number'}"
                                 f" (a JSON number, not a string), got {value!r}")
        meta = cls(**{k: (int(v) if kinds[k] is int else v) for k, v in raw.items()
                      if k in kinds and v is not None})
        if meta.feature_dim <= 0:
            raise FscalError(f"{where(file=path, field='feature_dim')}: must be a positive integer")
        if meta.resize_length is None:
            for key in ("fps", "feat_stride", "num_frames"):
                value = getattr(meta, key)
                if value is None or value <= 0:
                    raise FscalError(f"{where(file=path, field=key)}: strided features need a "
                                     f"positive {key} (or give resize_length instead)")
        elif meta.resize_length <= 0:
            raise FscalError(f"{where(file=path, field='resize_length')}: must be positive")
        return meta

    def snippet_seconds(self, duration: float) -> float:
        """How many seconds one snippet of a video of ``duration`` seconds covers."""
        return self.feat_stride / self.fps if self.strided else duration / self.resize_length

    def save(self, directory) -> Path:
        path = Path(directory) / "features.json"
        data = {k: v for k, v in asdict(self).items() if v is not None}
        path.write_text(json.dumps(data, indent=1) + "\n")
        return path


def _read_csv(path: Path, video_id: str) -> np.ndarray:
    """A BSN/BMN feature CSV: the header ``f0,f1,...``, then one row per snippet."""
    lines = path.read_text().splitlines()
    header = lines[0].strip().split(",") if lines else []
    if not header or not all(h.startswith("f") and h[1:].isdigit() for h in header):
        raise FscalError(f"{where(file=path, video=video_id, field='header')}: a BSN/BMN feature CSV "
                         f"starts with the header f0,f1,...; got {header[:3]}...")
    rows = [line for line in lines[1:] if line.strip()]
    if not rows:            # header only: zero snippets (read_features says so)
        return np.zeros((0, len(header)), np.float32)
    return np.loadtxt(rows, delimiter=",", dtype=np.float32, ndmin=2)


def _read_raw(path: Path, video_id: str):
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "rb") as f:
            x = np.load(f, allow_pickle=False)
            extra = len(f.read())             # np.save writes nothing after the array
        if extra:
            raise FscalError(f"{where(file=path, video=video_id, field='path')}: {extra} byte(s) after the "
                             f"array of shape {x.shape} (a damaged or concatenated file)")
        return x
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "feats" not in z.files:
                raise FscalError(f"{where(file=path, video=video_id, field='feats')}: .npz has no key "
                                 f"'feats' (keys: {z.files})")
            return z["feats"]
    if suffix == ".csv":
        return _read_csv(path, video_id)
    if suffix == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "feats" in obj:
            obj = obj["feats"]
        if not isinstance(obj, torch.Tensor):
            raise FscalError(f"{where(file=path, video=video_id, field='feats')}: .pt must hold a "
                             f"tensor (or a dict with key 'feats'), got {type(obj).__name__}")
        if obj.is_complex() or obj.dtype == torch.bool:      # .float() would drop or cast silently
            return obj.numpy()
        return obj.float().numpy()
    raise FscalError(f"{where(file=path, video=video_id, field='path')}: unknown feature format "
                     f"{suffix!r}; use one of {FEATURE_SUFFIXES}")


def read_features(path, *, expected_dim: int | None = None, video_id: str | None = None) -> np.ndarray:
    """Read one video's features from ``.npy``, ``.npz`` (key ``feats``), ``.csv`` or ``.pt``.

    Returns float32 ``(T, C)``. Rejects, naming file, video and field: a missing or unreadable
    file, values that are not real numbers (complex, bool, text), a shape other than 2-D, zero snippets, a width other than ``expected_dim``, NaN or inf.
    """
    path = Path(path)
    video_id = video_id if video_id is not None else path.stem
    if not path.is_file():
        raise FscalError(f"{where(file=path, video=video_id, field='path')}: feature file is missing")
    try:
        x = _read_raw(path, video_id)
    except FscalError:
        raise
    except Exception as e:  # a truncated or foreign file (the reason without object addresses: same on every run)
        why = re.sub(r"<([\w.]+) object at 0x[0-9a-f]+>", r"<\1>", " ".join(str(e).split()))
        raise FscalError(f"{where(file=path, video=video_id, field='path')}: feature file is "
                         f"unreadable ({why})") from None
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":             # complex, bool, text, ...: never cast silently
        raise FscalError(f"{where(file=path, video=video_id, field='dtype')}: features must be real "
                         f"numbers (float or integer), got dtype {x.dtype}")
    if x.ndim != 2:
        raise FscalError(f"{where(file=path, video=video_id, field='shape')}: features must be "
                         f"2-D (T, C), got shape {x.shape}")
    if x.shape[0] == 0:
        raise FscalError(f"{where(file=path, video=video_id, field='T')}: zero-length video (no snippets)")
    if expected_dim is not None and x.shape[1] != expected_dim:
        raise FscalError(f"{where(file=path, video=video_id, field='feature_dim')}: features have "
                         f"width {x.shape[1]}, features.json says {expected_dim}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        rows = np.unique(np.nonzero(~np.isfinite(x))[0])
        raise FscalError(f"{where(file=path, video=video_id, field='feats')}: NaN or inf in "
                         f"{len(rows)} snippet(s), first at snippet {rows[0]}")
    return x


def find_feature_file(feature_dir, video_id: str) -> Path:
    """``<feature_dir>/<video_id>.<npy|npz|csv|pt>``; a clear error if none exists."""
    feature_dir = Path(feature_dir)
    for suffix in FEATURE_SUFFIXES:
        p = feature_dir / f"{video_id}{suffix}"
        if p.is_file():
            return p
    at = where(file=feature_dir / f"{video_id}.npy", video=video_id, field="path")
    raise FscalError(f"{at}: no feature file for this video (looked for {', '.join(FEATURE_SUFFIXES)})")


def interpolation_weights(positions: torch.Tensor, T: int):
    """The one interpolation rule of the package: where a continuous position reads a ``T``-snippet axis.

    Snippet ``i`` sits at ``i + 0.5``. A position ``x`` between two centres mixes its neighbours
    ``lo = floor(x - 0.5)`` and ``hi = lo + 1`` linearly; beyond the first or last centre it
    takes that snippet (clamped):

        read(x) = (1 - w) * f[lo] + w * f[hi],   w = (x - 0.5) - lo

    ``positions (...)`` -> ``lo (...)`` and ``hi (...)`` long, ``w (...)`` in the dtype of
    ``positions`` (differentiable in ``positions``). :func:`interpolate_at` gathers with it,
    :func:`fscal_edu.proposals.roi_align_matrix` writes it as the rows of a matrix.
    """
    p = (positions - 0.5).clamp(0, T - 1)                      # (...) on the centre grid
    lo = p.detach().floor().long().clamp(max=T - 1)
    hi = (lo + 1).clamp(max=T - 1)
    return lo, hi, p - lo.to(p.dtype)                          # (...) each


def interpolate_at(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Read features at continuous positions: ``x (..., T, C)``, ``positions (..., P)`` -> ``(..., P, C)``.

    Snippet ``i`` sits at ``i + 0.5``; a position between two centres mixes them linearly and a
    position beyond the first or last centre takes that snippet (clamped,
    :func:`interpolation_weights`). Differentiable in both ``x`` and ``positions``; the one
    interpolation rule behind resampling, support crops and RoIAlign.
    """
    lo, hi, w = interpolation_weights(positions, x.shape[-2])  # (..., P) each
    w = w.unsqueeze(-1)                                        # (..., P, 1)
    idx = lambda i: i.unsqueeze(-1).expand(*i.shape, x.shape[-1])  # noqa: E731
    # read(x) = (1 - w) f[lo] + w f[hi]                                               (..., P, C)
    return torch.gather(x, -2, idx(lo)) * (1 - w) + torch.gather(x, -2, idx(hi)) * w


def check_segment(segment, *, video=None, file=None, field: str = "segment") -> tuple[float, float]:
    """``(start, end)`` of ``segment``, two finite numbers with ``start < end``, else an
    :class:`FscalError` naming ``file``, ``video`` and ``field``."""
    pair = isinstance(segment, (list, tuple, np.ndarray)) and len(segment) == 2 and all(
        isinstance(t, (int, float, np.number)) and not isinstance(t, (bool, np.bool_)) and np.isfinite(t)
        for t in segment)
    if not (pair and segment[0] < segment[1]):
        raise FscalError(f"{where(file=file, video=video, field=field)}: need [start, end], two finite "
                         f"numbers with start < end, got {segment!r:.60}")
    return float(segment[0]), float(segment[1])


def crop(x, start: float, end: float, length: int):
    """Cut ``[start, end)`` (snippet coordinates) out of ``(T, C)`` features as ``(length, C)``.

    The ``length`` new snippets sit at the centres of ``length`` equal bins of the window.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
        raise FscalError(f"{where(field='length')}: features are cut or resampled to a positive number "
                         f"of snippets, got {length!r}")
    start, end = check_segment((start, end))      # end < start would read the features backwards
    is_np = isinstance(x, np.ndarray)
    t = torch.as_tensor(x, dtype=torch.float32)
    pos = start + (torch.arange(length, dtype=torch.float32) + 0.5) * (end - start) / length
    out = interpolate_at(t, pos)
    return out.numpy() if is_np else out


def resample(x, length: int):
    """Linear resampling of ``(T, C)`` features to ``(length, C)``: the crop of the whole axis.

    New snippet ``j`` sits at ``(j + 0.5) * T / length`` on the old axis. Works on numpy arrays
    and torch tensors.
    """
    return crop(x, 0.0, float(x.shape[0]), length)


def _as_array(v):
    return v if isinstance(v, torch.Tensor) else np.asarray(v, dtype=np.float64)


def _check_axis(duration, num_snippets) -> None:
    """A video's duration (seconds, finite, > 0) and its number of snippets (an integer >= 1)."""
    check_int(num_snippets, at_least=1, field="num_snippets")
    try:
        d = np.asarray(duration.detach().cpu() if isinstance(duration, torch.Tensor) else duration)
        ok = d.dtype.kind in "fiu" and bool(np.all(np.isfinite(d) & (d > 0)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FscalError(f"{where(field='duration')}: a video's duration must be a finite number of "
                         f"seconds > 0, got {duration!r:.60}")


def seconds_to_index(t, *, duration: float, num_snippets: int, meta: FeatureMeta | None = None,
                     feat_len: int | None = None):
    """Seconds -> position on a feature axis of ``num_snippets`` snippets (see module docstring).

    Resized features (``meta`` None or with ``resize_length``): ``index = t / duration * T``.
    Strided features (``fps``, ``feat_stride``, ``num_frames``; the file had ``feat_len`` rows,
    later resampled to ``num_snippets``): feature i's window is centred on frame
    ``i * feat_stride + num_frames / 2``, so ``index = (t * fps - num_frames / 2) / feat_stride + 0.5``
    on the file's axis, then scaled by ``num_snippets / feat_len``.
    """
    _check_axis(duration, num_snippets)
    t = _as_array(t)
    if meta is None or not meta.strided:
        return t / duration * num_snippets
    feat_len = feat_len or num_snippets
    u = (t * meta.fps - meta.num_frames / 2) / meta.feat_stride + 0.5
    return u * num_snippets / feat_len


def index_to_seconds(index, *, duration: float, num_snippets: int, meta: FeatureMeta | None = None,
                     feat_len: int | None = None):
    """The exact inverse of :func:`seconds_to_index`."""
    _check_axis(duration, num_snippets)
    index = _as_array(index)
    if meta is None or not meta.strided:
        return index / num_snippets * duration
    feat_len = feat_len or num_snippets
    u = index * feat_len / num_snippets
    return ((u - 0.5) * meta.feat_stride + meta.num_frames / 2) / meta.fps


def instances_in_snippets(annotations: dict, video: str, num_snippets: int) -> list:
    """A video's instances as ``(start, end, label)`` on an axis of ``num_snippets`` (resized features)."""
    duration = annotations["database"][video]["duration"]
    return [(*seconds_to_index(np.asarray(a["segment"], float), duration=duration,
                               num_snippets=num_snippets).tolist(), a["label"])
            for a in annotations["database"][video]["annotations"]]
