"""The feature store: every video's features packed once into one memory-mapped float16 array.

Reading ``features/<video>.npy`` file by file and keeping a dict of float32 arrays costs each
process its own copy: with R training ranks and W DataLoader workers each, the features sit in
memory R x (W + 1) times. The store packs them instead, on first use, into

    DIR/.fscal_cache/features-<fingerprint>.npy    float16 (sum of T_v, C): the videos one after another
    DIR/.fscal_cache/features-<fingerprint>.json   {"videos": {video_id: [start_row, T_v]}, "shape", ...}

and opens the pack with ``np.load(mmap_mode="r")``: the operating system's page cache holds it
once, shared by every process that maps it, and a video is a zero-copy slice of rows.

* The fingerprint hashes the name, size and modification time of every feature file and the
  feature width of ``features.json``: change a file and the store is rebuilt.
* Building reads every file with :func:`fscal_edu.data.features.read_features`, so bad input
  (wrong width, NaN, zero length) stops the build with the usual error naming file, video and field.
  Values beyond float16's range (|x| > 65504) are an error too, not a silent inf.
* Writes are atomic (:func:`fscal_edu.utils.atomic_path`: a unique temporary name, fsync, then
  ``os.replace``): processes that build at the same time write the same bytes, and a reader never
  sees half a pack.
* Where ``DIR`` is read-only, the cache goes to ``$FSCAL_CACHE_DIR`` (or ``~/.cache/fscal-edu``)
  under a folder named after a hash of ``DIR``'s path.

**Choice.** Features are stored as float16 (the shipped world's files are float16 already, so for
it the store is exact); real float32 features are rounded to float16 (about 3 significant digits),
which halves memory and disk and is what the model's bf16/fp16 training reads anyway.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..utils import FscalError, atomic_path, atomic_write_text, where
from .features import FEATURE_SUFFIXES, read_features

STORE_VERSION = 1
SHARED = 0o644                 # pack and index readable by every user of a shared dataset
CACHE_NAME = ".fscal_cache"
FLOAT16_MAX = float(np.finfo(np.float16).max)


def feature_files(feature_dir) -> dict[str, Path]:
    """``{video_id: path}`` of every feature file; a video with several formats takes the first
    of :data:`FEATURE_SUFFIXES` (the order :func:`find_feature_file` looks in)."""
    found: dict[str, Path] = {}
    rank = {s: i for i, s in enumerate(FEATURE_SUFFIXES)}
    feature_dir = Path(feature_dir)
    if not feature_dir.is_dir():
        return found
    for entry in os.scandir(feature_dir):
        p = Path(entry.path)
        if entry.is_file() and p.suffix.lower() in rank:
            old = found.get(p.stem)
            if old is None or rank[p.suffix.lower()] < rank[old.suffix.lower()]:
                found[p.stem] = p
    return dict(sorted(found.items()))


def fingerprint(files: dict[str, Path], feature_dim: int) -> str:
    """A hash of (name, size, mtime) of every file, the feature width and the store's version."""
    h = hashlib.sha256(f"v{STORE_VERSION} C={feature_dim}\n".encode())
    for vid, p in files.items():
        st = p.stat()
        h.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cache_dir_for(root) -> Path:
    """``DIR/.fscal_cache`` when writable, else a per-dataset folder under the user's cache."""
    root = Path(root)
    beside = root / CACHE_NAME
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    base = Path(os.environ.get("FSCAL_CACHE_DIR") or Path.home() / ".cache" / "fscal-edu")
    folder = base / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _peek_shape(path: Path) -> tuple | None:
    """The array shape of a ``.npy`` without reading it (header only); None for other formats."""
    if path.suffix.lower() != ".npy":
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape
    except Exception:
        return None                                        # read_features says what is wrong


class FeatureStore:
    """All feature files of ``DIR/features`` as one float16 memory map, built on first use.

    ``store[video_id]`` is that video's ``(T, C)`` float16 rows, a read-only view into the map
    (no copy). ``len(store)`` videos; ``video_id in store``. Pickling (DataLoader workers started
    with ``spawn``) sends the paths only; the map is reopened, not copied, on the other side.
    """

    def __init__(self, root, feature_dim: int):
        self.root, self.feature_dim = Path(root), int(feature_dim)
        self.feature_dir = self.root / "features"
        self._pack: np.ndarray | None = None
        self._index: dict[str, tuple[int, int]] | None = None
        self._path: Path | None = None

    # --- opening and building ------------------------------------------------------------------

    def _open(self) -> None:
        files = feature_files(self.feature_dir)
        fp = fingerprint(files, self.feature_dim)
        folder = cache_dir_for(self.root)
        pack, index = folder / f"features-{fp}.npy", folder / f"features-{fp}.json"
        if not (pack.is_file() and index.is_file()):
            self._build(files, pack, index)
            for old in folder.glob("features-*"):          # stale packs of older file versions
                if old.name not in (pack.name, index.name) and not old.name.endswith(".tmp"):
                    try:
                        old.unlink()
                    except OSError:
                        pass
        meta = json.loads(index.read_text())
        self._index = {v: (int(a), int(n)) for v, (a, n) in meta["videos"].items()}
        self._pack = np.load(pack, mmap_mode="r", allow_pickle=False)           # (sum T_v, C) float16
        self._path = pack

    def _build(self, files: dict[str, Path], pack: Path, index: Path) -> None:
        C = self.feature_dim
        lengths = {}
        for vid, p in files.items():          # pass 1: lengths (a .npy header only; others read)
            shape = _peek_shape(p)
            if shape is None or len(shape) != 2 or shape[0] == 0 or shape[1] != C:
                shape = read_features(p, expected_dim=C, video_id=vid).shape   # raises on bad input
            lengths[vid] = int(shape[0])
        total = sum(lengths.values())
        with atomic_path(pack, mode=SHARED) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(total, C))
            videos, row = {}, 0
            for vid, p in files.items():      # pass 2: read, check, round to float16, write
                x = read_features(p, expected_dim=C, video_id=vid)                 # (T_v, C) float32
                big = np.abs(x).max()
                if big > FLOAT16_MAX:
                    raise FscalError(f"{where(file=p, video=vid, field='feats')}: values up to {big:.3g} "
                                     f"do not fit the float16 feature store (|x| <= {FLOAT16_MAX:.0f}); "
                                     f"rescale the features")
                out[row:row + len(x)] = x
                videos[vid] = [row, len(x)]
                row += len(x)
            out.flush()
            del out
        atomic_write_text(index, json.dumps({"version": STORE_VERSION, "feature_dim": C, "shape": [total, C],
                                             "dtype": "float16", "videos": videos}) + "\n", mode=SHARED)

    # --- reading ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The pack's ``.npy`` (its index is the ``.json`` of the same name)."""
        if self._path is None:
            self._open()
        return self._path

    @property
    def index(self) -> dict[str, tuple[int, int]]:
        """``{video_id: (first_row, T_v)}``."""
        if self._index is None:
            self._open()
        return self._index

    @property
    def pack(self) -> np.ndarray:
        """The whole ``(sum T_v, C)`` float16 memory map."""
        if self._pack is None:
            self._open()
        return self._pack

    def __contains__(self, video_id) -> bool:
        return video_id in self.index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, video_id: str) -> np.ndarray:
        """``(T, C)`` float16 rows of one video: a view of the map, no copy. ``KeyError`` if absent."""
        start, n = self.index[video_id]
        return self.pack[start:start + n]

    def length(self, video_id: str) -> int:
        return self.index[video_id][1]

    def __getstate__(self):
        return {"root": self.root, "feature_dim": self.feature_dim}

    def __setstate__(self, state):
        self.__init__(state["root"], state["feature_dim"])
