"""The feature store: every video's features packed once into one memory-mapped float16 array.

Reading ``features/<video>.npy`` file by file and keeping a dict of float32 arrays costs each
process its own copy: with R training ranks and W DataLoader workers each, the features sit in
memory R x (W + 1) times. The store packs them instead, on first use, into

    DIR/.fscal_cache/features-<fingerprint>.npy    float16 (sum of T_v, C): the videos one after another
    DIR/.fscal_cache/features-<fingerprint>.json   {"videos": {video_id: [start_row, T_v]}, "shape", ...}

and opens the pack with ``np.load(mmap_mode="r")``: the operating system's page cache holds it
once, shared by every process that maps it, and a video is a zero-copy slice of rows.

* The fingerprint hashes the name, size, modification time, inode and status-change time of
  every feature file and the feature width of ``features.json``: change a file and the store is
  rebuilt, even when it is rewritten in place with its old size and modification time (writing
  sets the status-change time, which no user call can set back).
* The cache is derived data, never trusted: the index is checked against the pack (version, width,
  shape, dtype, every video's rows) when it is opened, and each video's rows against the CRC-32
  recorded at build time when they are first read. Any inconsistency (a truncated, emptied or
  garbled file, a NaN written into the pack, one of the two files missing) rebuilds the cache with
  one warning line.
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
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..utils import FscalError, atomic_path, atomic_write_text, where
from .features import FEATURE_SUFFIXES, read_features

STORE_VERSION = 2             # 2: a CRC-32 per video in the index
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
    """A hash of (name, size, mtime, inode, ctime) of every file, the feature width and the
    store's version: one ``stat`` per file, so cheap for 15,000 files. The status-change time
    (``st_ctime_ns``) moves on every write and cannot be set back (``os.utime`` sets only the
    access and modification times), so content rewritten in place is caught; the inode catches
    a file replaced by another."""
    h = hashlib.sha256(f"v{STORE_VERSION} C={feature_dim}\n".encode())
    for vid, p in files.items():
        st = p.stat()
        h.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\t{st.st_ctime_ns}\n".encode())
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


class StaleCache(Exception):
    """The cache on disk does not match what it claims to hold (the message says how)."""


def _index_rows(meta, videos: list[str], feature_dim: int) -> tuple[dict, dict, tuple]:
    """``{video: (first_row, T_v)}``, ``{video: crc32}`` and the pack's shape from a parsed index,
    or :class:`StaleCache` when it is not the index of this version, width and list of videos."""
    if not isinstance(meta, dict):
        raise StaleCache("the index is not a JSON object")
    if meta.get("version") != STORE_VERSION or meta.get("feature_dim") != feature_dim \
            or meta.get("dtype") != "float16":
        raise StaleCache("the index has another version, width or dtype")
    shape, rows, crcs = meta.get("shape"), meta.get("videos"), meta.get("crc32")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(n) is int for n in shape)):
        raise StaleCache(f"the index's shape is {shape!r:.40}")
    if not isinstance(rows, dict) or not isinstance(crcs, dict) or sorted(rows) != videos \
            or sorted(crcs) != videos:
        raise StaleCache("the index lists other videos than features/")
    index, row = {}, 0
    for vid in videos:                                    # packed in sorted order, one after another
        entry = rows[vid]
        if not (isinstance(entry, list) and len(entry) == 2 and all(type(n) is int for n in entry)
                and entry[0] == row and entry[1] >= 1 and type(crcs[vid]) is int):
            raise StaleCache(f"the index's entry of video {vid!r} is broken")
        index[vid] = (row, entry[1])
        row += entry[1]
    if (row, feature_dim) != tuple(shape):
        raise StaleCache(f"the index's shape {shape} does not add up to its videos ({row} rows)")
    return index, crcs, (row, feature_dim)


def open_cache(pack: Path, index: Path, videos: list[str], feature_dim: int):
    """``(rows, crcs, memory map)`` of a cache pair checked against each other, or
    :class:`StaleCache` saying what is inconsistent (never a JSON, mmap or EOF error)."""
    for path in (index, pack):
        if not path.is_file():
            raise StaleCache(f"{path.name} is missing")
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise StaleCache(f"the index is not readable JSON ({str(e)[:80]})") from None
    rows, crcs, shape = _index_rows(meta, videos, feature_dim)
    try:
        packed = np.load(pack, mmap_mode="r", allow_pickle=False)       # (sum T_v, C) float16
    except Exception as e:  # noqa: BLE001 - a truncated, emptied or garbled .npy fails in many ways
        raise StaleCache(f"the pack is not a readable .npy ({str(e).splitlines()[0][:80] if str(e) else type(e).__name__})") from None
    if packed.dtype != np.float16 or packed.shape != shape:
        raise StaleCache(f"the pack holds {packed.dtype} {packed.shape}, the index says float16 {shape}")
    return rows, crcs, packed


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
        self._crc: dict[str, int] = {}
        self._verified: set[str] = set()

    # --- opening and building ------------------------------------------------------------------

    def _open(self, problem: str | None = None) -> None:
        """Open the cache of the current feature files; build it when there is none, and rebuild
        it, with one warning line, when it is inconsistent (``problem``: found while reading)."""
        files = feature_files(self.feature_dir)
        fp = fingerprint(files, self.feature_dim)
        folder = cache_dir_for(self.root)
        pack, index = folder / f"features-{fp}.npy", folder / f"features-{fp}.json"
        if problem is None and (pack.is_file() or index.is_file()):
            try:
                self._use(pack, *open_cache(pack, index, list(files), self.feature_dim))
                return
            except StaleCache as e:
                problem = str(e)
        if problem is not None:
            warnings.warn(f"{where(file=pack.with_suffix('.*'), field='cache')}: the feature cache is "
                          f"inconsistent ({problem}); rebuilding it from {self.feature_dir}", stacklevel=4)
        self._build(files, pack, index)
        for old in folder.glob("features-*"):              # stale packs of older file versions
            if old.name not in (pack.name, index.name) and not old.name.endswith(".tmp"):
                try:
                    old.unlink()
                except OSError:
                    pass
        try:
            self._use(pack, *open_cache(pack, index, list(files), self.feature_dim))
        except StaleCache as e:                             # changed while we built: say so, once
            raise FscalError(f"{where(file=pack, field='cache')}: the feature cache just built is "
                             f"inconsistent ({e}); is another program writing {folder}?") from None

    def _use(self, pack: Path, rows: dict, crcs: dict, packed: np.ndarray) -> None:
        self._index, self._crc, self._pack, self._path = rows, crcs, packed, pack
        self._verified: set[str] = set()

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
            videos, crcs, row = {}, {}, 0
            for vid, p in files.items():      # pass 2: read, check, round to float16, write
                x = read_features(p, expected_dim=C, video_id=vid)                 # (T_v, C) float32
                big = np.abs(x).max()
                if big > FLOAT16_MAX:
                    raise FscalError(f"{where(file=p, video=vid, field='feats')}: values up to {big:.3g} "
                                     f"do not fit the float16 feature store (|x| <= {FLOAT16_MAX:.0f}); "
                                     f"rescale the features")
                out[row:row + len(x)] = x
                videos[vid] = [row, len(x)]
                crcs[vid] = zlib.crc32(np.ascontiguousarray(x, dtype=np.float16))
                row += len(x)
            out.flush()
            del out
        atomic_write_text(index, json.dumps({"version": STORE_VERSION, "feature_dim": C, "shape": [total, C],
                                             "dtype": "float16", "videos": videos,
                                             "crc32": crcs}) + "\n", mode=SHARED)

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
        """``(T, C)`` float16 rows of one video: a view of the map, no copy. ``KeyError`` if absent.

        The first read of a video in this process checks its rows against the CRC-32 recorded at
        build time; rows changed since (a NaN or garbage written into the pack) rebuild the cache."""
        start, n = self.index[video_id]
        rows = self.pack[start:start + n]                                           # (T_v, C) float16
        if video_id not in self._verified:
            if zlib.crc32(rows) != self._crc[video_id]:
                self._open(problem=f"the rows of video {video_id!r} differ from those written")
                start, n = self.index[video_id]
                rows = self.pack[start:start + n]
            self._verified.add(video_id)
        return rows

    def length(self, video_id: str) -> int:
        return self.index[video_id][1]

    def __getstate__(self):
        return {"root": self.root, "feature_dim": self.feature_dim}

    def __setstate__(self, state):
        self.__init__(state["root"], state["feature_dim"])
