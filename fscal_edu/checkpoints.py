"""Checkpoints: the one file format of fscal-edu, written by training, read by everything else.

A checkpoint is a ``torch.save`` dict: ``format`` (``CHECKPOINT_FORMAT``), ``config``
(:meth:`Config.to_dict`; older checkpoints hold the flat form, which still loads), ``model`` (the
state dict), ``step``, ``best`` (best validation mAP@0.5), ``torch_rng``, ``extra``, and for
``last.pt`` also ``optimizer`` and ``scheduler`` (exact resume).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import Config
from .model import FSCAL
from .utils import FscalError, atomic_path, get_device, where

CHECKPOINT_FORMAT = "fscal-edu-checkpoint-v1"


def save_checkpoint(path, model: FSCAL, optimizer=None, scheduler=None, *, step: int = 0,
                    best: float = -1.0, extra: dict | None = None) -> Path:
    """Write atomically (:func:`fscal_edu.utils.atomic_path`: a temporary file, fsync, rename), so a
    crash never leaves half a file."""
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict(),
             "step": step, "best": best, "torch_rng": torch.get_rng_state(), "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def read_checkpoint(path) -> dict:
    """Load a checkpoint dict with ``weights_only=True``; clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FscalError(f"{where(file=path)}: checkpoint file is missing")
    if path.stat().st_size == 0:
        raise FscalError(f"{where(file=path)}: the checkpoint file is empty (0 bytes; a copy or a "
                         f"write that did not finish)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the same to the user
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise FscalError(f"{where(file=path)}: not a readable checkpoint (corrupt or not a torch "
                         f"file): {first[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise FscalError(f"{where(file=path, field='format')}: not an fscal-edu checkpoint "
                         f"(expected {CHECKPOINT_FORMAT!r}, found {found!r})")
    return state


def load_model(path, *, feature_dim: int | None = None, device=None) -> FSCAL:
    """Rebuild the model from a checkpoint; ``feature_dim`` checks it against the data's width."""
    state = read_checkpoint(path)
    try:
        cfg = Config.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise FscalError(f"{where(file=path, field='config')}: {e}") from None
    if feature_dim is not None and feature_dim != cfg.data.feature_dim:
        raise FscalError(f"{where(file=path, field='feature_dim')}: the checkpoint was trained on "
                         f"features of width {cfg.data.feature_dim}, the data has width {feature_dim}")
    model = FSCAL(cfg)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise FscalError(f"{where(file=path, field='model')}: weights do not fit the config: "
                         f"{str(e).splitlines()[0][:200]}") from None
    return model.to(get_device(device)).eval()
