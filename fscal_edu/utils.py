"""Small helpers shared by the whole package: device, seeds, quick mode, JSON files, atomic writes,
range checks, showing source.

Process-wide settings (threads, denormal flushing) are not here: they belong to the entry points,
see :mod:`fscal_edu.runtime`.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch


def check_device(name) -> str | None:
    """A device name checked: ``None``/``"auto"`` -> None (the best available), else ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``, present on this machine; anything else is an
    :class:`FscalError` naming the field ``device``."""
    if name is None or isinstance(name, torch.device):
        return None if name is None else str(name)
    text = str(name).strip().lower()
    if text in ("", "auto"):
        return None
    if text == "cpu":
        return text
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m:
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise FscalError(f"{where(field='device')}: {name!r} is not available ({why}); use cpu or auto")
        if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
            raise FscalError(f"{where(field='device')}: {name!r} is not available (this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s))")
        return text
    if text == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise FscalError(f"{where(field='device')}: 'mps' is not available on this machine; use cpu or auto")
        return text
    raise FscalError(f"{where(field='device')}: unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps")


def get_device(name=None) -> torch.device:
    """The one device helper: ``cuda`` if present, then ``mps``, then ``cpu``; ``name`` (a string or
    a ``torch.device``) overrides, checked by :func:`check_device`."""
    if isinstance(name, torch.device):
        return name
    name = check_device(name)
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so that a CPU run repeats to the same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def is_quick() -> bool:
    """Quick mode (``FSCAL_QUICK=1``): notebooks and CI use small settings and shipped results."""
    return os.environ.get("FSCAL_QUICK", "0").lower() not in ("", "0", "false", "no")


def show_source(obj) -> None:
    """Print the real source of a library object, so a notebook shows the code instead of copying it."""
    print(inspect.getsource(obj))


class FscalError(ValueError):
    """Bad input: the message names the file, the video and the field at fault."""


def where(file=None, video=None, field=None) -> str:
    """Format the 'file / video / field' prefix that every bad-input error carries."""
    parts = []
    if file is not None:
        parts.append(f"file {str(file)!r}")
    if video is not None:
        parts.append(f"video {video!r}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts) if parts else "input"


def read_json(path, what: str = "file"):
    """The one JSON reader: the parsed content of ``path``, or an :class:`FscalError` naming the file.

    ``what`` names the file in the messages (``"features.json"``, ``"the annotations file"``): a
    missing file, unreadable bytes (not UTF-8) and invalid JSON each say so.
    """
    path = Path(path)
    if not path.is_file():
        raise FscalError(f"{where(file=path, field='path')}: {what} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys, parse_int=_small_int)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FscalError(f"{where(file=path, field='path')}: not readable JSON, {what} ({e})") from None
    except _JsonRuleBroken as e:
        raise FscalError(f"{where(file=path, field=e.field)}: {e.problem} ({what})") from None


# What a video id may be: it names the video's feature file, so letters, digits, "_", "-" and "."
# (not first), nothing that moves to another folder ("/", "\\", ".."): e.g. "v_---9CpRcKoU",
# "video_test_0000004", "test_action_28a_05"
VIDEO_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
VIDEO_ID_RULE = "letters, digits, '_', '-' and '.' (not first), at most 200 characters"


def check_video_id(video, *, file=None, field: str = "video id") -> str:
    """``video`` if it follows :data:`VIDEO_ID`, else an :class:`FscalError` that states the rule."""
    if not isinstance(video, str) or not VIDEO_ID.fullmatch(video):
        raise FscalError(f"{where(file=file, video=video if isinstance(video, str) else None, field=field)}: "
                         f"a video id may hold {VIDEO_ID_RULE}, got {video!r}")
    return video


class _JsonRuleBroken(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def _unique_keys(pairs: list) -> dict:
    """A JSON object whose keys are unique: a repeated key would silently keep its last value."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _JsonRuleBroken(key, f"the key {key!r} appears twice in one object; keep one")
        out[key] = value
    return out


def _small_int(text: str) -> int:
    """A JSON integer of at most 18 digits (no count, id or length of this project is longer)."""
    if len(text.lstrip("-")) > 18:
        raise _JsonRuleBroken("number", f"an integer of {len(text.lstrip('-'))} digits ({text[:12]}...) is out of range")
    return int(text)


# ---------------------------------------------------------------------------------------------
# Atomic writes: the one home (checkpoints, run files, the feature store, bench results)
# ---------------------------------------------------------------------------------------------

def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX); where a folder cannot be opened (Windows),
    the rename is still atomic, only not forced to disk."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, *, mode: int | None = None):
    """Yield a temporary path beside ``path``; when the block ends without an error, the temporary
    file is forced to disk (``fsync``), renamed onto ``path`` (``os.replace``, atomic) and the folder
    is synced. On an error the temporary file is removed and ``path`` is left as it was.

    So a reader (or a crash, or a kill) sees the old file or the new one, never half a file. The
    temporary name is unique (``tempfile.mkstemp``), so processes writing the same target at the
    same time do not collide; ``mode`` sets the permissions (default: what ``open`` would give).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        if mode is None:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        yield tmp
        fd = os.open(tmp, os.O_RDWR)          # the writer may have closed (or replaced) the file
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_folder(path.parent)


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path, obj, *, indent: int | None = 1, mode: int | None = None) -> Path:
    """Write ``obj`` as JSON (and a final newline) to ``path`` atomically (:func:`atomic_path`)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", mode=mode)


# ---------------------------------------------------------------------------------------------
# Range checks: the one home for "an integer >= n" and "a number in [low, high]"
# ---------------------------------------------------------------------------------------------

def check_int(value, *, at_least: int, field: str, file=None) -> int:
    """``value`` as an ``int`` >= ``at_least``, else an :class:`FscalError` naming ``field`` (and
    ``file``). Booleans and floats are refused (``shots=True`` or ``T=2.5`` are mistakes)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < at_least:
        raise FscalError(f"{where(file=file, field=field)}: must be an integer >= {at_least}, got {value!r}")
    return int(value)


def check_number(value, *, field: str, low: float | None = None, high: float | None = None,
                 file=None) -> float:
    """``value`` as a finite ``float`` with ``low <= value <= high`` (a bound left ``None`` is open),
    else an :class:`FscalError` naming ``field`` (and ``file``)."""
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not is_number or not math.isfinite(value) or (low is not None and value < low) \
            or (high is not None and value > high):
        span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise FscalError(f"{where(file=file, field=field)}: must be a finite number in {span}, got {value!r}")
    return float(value)
