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
    cfg = checkpoint_config(state, path)
    _check_weights(state.get("model"), path)
    _check_fit(state, cfg, path)
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


def _check_fit(state: dict, cfg: Config, path) -> None:
    """The weights fit the model the config builds (names and shapes), and what a resume restores
    (``optimizer``, ``scheduler``, ``torch_rng``, where present) fits it too: a damaged ``last.pt``
    is one line naming the field, never an error deep inside ``load_state_dict``."""
    model = FSCAL(cfg)                              # the config is checked: its size is bounded
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = state["model"]
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        name = (missing or unexpected)[0]
        raise FscalError(f"{where(file=path, field=f'model.{name}')}: weights do not fit the config "
                         f"({len(missing)} missing, {len(unexpected)} unexpected; e.g. {name!r})")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise FscalError(f"{where(file=path, field=f'model.{name}')}: shape {tuple(weights[name].shape)}, "
                             f"the config's model has {shape}")
    if "optimizer" in state:
        _check_optimizer(state["optimizer"], [tuple(p.shape) for p in model.parameters()], path)
    if "scheduler" in state and not (isinstance(state["scheduler"], dict)
                                     and type(state["scheduler"].get("last_epoch")) is int):
        raise FscalError(f"{where(file=path, field='scheduler')}: not a learning-rate schedule's state")
    rng = state.get("torch_rng")
    if "torch_rng" in state and not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8
                                     and rng.shape == torch.get_rng_state().shape):
        raise FscalError(f"{where(file=path, field='torch_rng')}: not torch's random state")


def _check_optimizer(opt, shapes: list, path) -> None:
    """An AdamW state for parameters of ``shapes``: groups covering each parameter once, finite
    numbers, moment tensors of their parameter's shape."""
    def bad(field: str, what: str):
        return FscalError(f"{where(file=path, field=f'optimizer.{field}')}: {what}")
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list):
        raise bad("param_groups", "not an optimizer's state (needs 'state' and 'param_groups')")
    seen = []
    for g in opt["param_groups"]:
        if not isinstance(g, dict) or not isinstance(g.get("params"), list):
            raise bad("param_groups", "each group needs a list of 'params'")
        for key in ("lr", "eps", "weight_decay"):
            if key in g:
                check_number(g[key], low=0.0, field=f"optimizer.{key}", file=path)
        seen += g["params"]
    if any(type(i) is not int for i in seen) or sorted(seen) != list(range(len(shapes))):
        raise bad("params", f"the groups must list each of the model's {len(shapes)} parameters once "
                            f"(0 to {len(shapes) - 1}), got {str(seen)[:60]}")
    for i, entry in opt["state"].items():
        if type(i) is not int or not 0 <= i < len(shapes) or not isinstance(entry, dict):
            raise bad("state", f"an entry for parameter {i!r} of {len(shapes)}")
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point() or not torch.isfinite(value).all():
                raise bad(f"state.{key}", f"parameter {i}: must be a finite floating-point tensor")
            if key != "step" and tuple(value.shape) != shapes[i]:
                raise bad(f"state.{key}", f"parameter {i}: shape {tuple(value.shape)}, the parameter has {shapes[i]}")


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
