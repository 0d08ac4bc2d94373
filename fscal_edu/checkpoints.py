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
from .utils import FscalError, atomic_path, check_number, get_device, where

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
    """Load a checkpoint dict with ``weights_only=True`` and check it before anything is built from
    it: the format, the config (every field's type and range, :meth:`Config.from_dict`), the state
    dict (names to finite tensors), ``step`` and ``best``. Every problem is one
    :class:`FscalError` naming the file and the field (``model.<parameter>`` for a weight)."""
    path = Path(path)
    state = _unpickle(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise FscalError(f"{where(file=path, field='format')}: not an fscal-edu checkpoint "
                         f"(expected {CHECKPOINT_FORMAT!r}, found {found!r})")
    checkpoint_config(state, path)
    _check_weights(state.get("model"), path)
    if "step" in state and (isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0):
        raise FscalError(f"{where(file=path, field='step')}: must be an integer >= 0, got {state['step']!r:.40}")
    if "best" in state:
        check_number(state["best"], low=-1.0, high=1.0, field="best", file=path)
    return state


def _unpickle(path: Path):
    """``torch.load(weights_only=True)`` with one-line errors; a file holding other Python objects
    is refused with torch's own warning that loading it otherwise can execute code."""
    if not path.is_file():
        raise FscalError(f"{where(file=path)}: checkpoint file is missing")
    if path.stat().st_size == 0:
        raise FscalError(f"{where(file=path)}: the checkpoint file is empty (0 bytes; a copy or a "
                         f"write that did not finish)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the same to the user
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
        if "weights_only" in str(e) and "global" in str(e).lower():     # a class or function to import
            # torch's whole explanation, on one line: what was found, and that weights_only=False
            # would run code from the file
            text = " ".join(ln for ln in lines if not ln.startswith("Check the documentation"))
            raise FscalError(f"{where(file=path)}: refused, the file holds more than weights: "
                             f"{text[:700]}") from None
        raise FscalError(f"{where(file=path)}: not a readable checkpoint (corrupt or not a torch "
                         f"file): {lines[0][:200]}") from None


def checkpoint_config(state: dict, path) -> Config:
    """The checkpoint's :class:`Config`, every field checked before a model is built from it; a
    bad one is an :class:`FscalError` naming the file and the field (``model.d``, ...)."""
    raw = state.get("config")
    if not isinstance(raw, dict):
        raise FscalError(f"{where(file=path, field='config')}: must be an object of config sections, "
                         f"got {type(raw).__name__}")
    try:
        return Config.from_dict(raw)
    except FscalError as e:
        raise FscalError(f"{where(file=path)}, {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise FscalError(f"{where(file=path, field='config')}: {e}") from None


def _check_weights(weights, path) -> None:
    """A state dict: parameter names to real floating-point tensors (every weight of the model is
    one; an integer, boolean or complex tensor would be cast silently), all finite."""
    if not isinstance(weights, dict):
        raise FscalError(f"{where(file=path, field='model')}: must be a state dict (names to tensors), "
                         f"got {type(weights).__name__}")
    for name, value in weights.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise FscalError(f"{where(file=path, field=f'model.{name}')}: must be a tensor, got "
                             f"{type(value).__name__}")
        if not value.is_floating_point():
            raise FscalError(f"{where(file=path, field=f'model.{name}')}: weights must be real floating-point "
                             f"numbers, got {str(value.dtype).removeprefix('torch.')}")
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise FscalError(f"{where(file=path, field=f'model.{name}')}: {bad} of {value.numel()} "
                             f"weights are NaN or inf (a training that diverged, or a damaged file)")


def load_model(path, *, feature_dim: int | None = None, device=None) -> FSCAL:
    """Rebuild the model from a checkpoint (checked by :func:`read_checkpoint` first);
    ``feature_dim`` checks it against the data's width."""
    state = read_checkpoint(path)
    cfg = checkpoint_config(state, path)
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
