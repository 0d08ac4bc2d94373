"""Small helpers shared by the whole package: device, seeds, quick mode, JSON files, showing source.

Process-wide settings (threads, denormal flushing) are not here: they belong to the entry points,
see :mod:`fscal_edu.runtime`.
"""
from __future__ import annotations

import inspect
import json
import os
import random
import re

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
    from pathlib import Path
    path = Path(path)
    if not path.is_file():
        raise FscalError(f"{where(file=path, field='path')}: {what} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FscalError(f"{where(file=path, field='path')}: not readable JSON, {what} ({e})") from None
