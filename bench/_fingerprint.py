"""The fingerprint of the code that a results file or a shipped checkpoint was made with.

``code_fingerprint()`` returns ``{"behaviour", "source", "commit", "recipe"}``:

* ``behaviour`` (16 hex digits): a hash of the exact bytes a fixed, deterministic CPU computation
  produces with this code (one torch thread, flushed denormals, as every entry point runs). It
  changes when a number of the model, the loss, the training step, the episode sampling or the
  evaluation changes, and only then: a comment, a docstring, a renamed helper or a refactor that
  keeps every float leaves it as it is. This is what decides whether a results file is fresh.
* ``source`` (16 hex digits): a hash of the syntax trees of the model-relevant modules, docstrings
  removed (comments are not in a syntax tree). Informational: it tells two versions of the code
  apart even when they compute the same numbers.
* ``commit``: ``git rev-parse --short HEAD`` of the checkout the code was read from (None outside
  a git checkout), informational.
* ``recipe``: the version of the computation below; a new recipe makes new fingerprints.

The computation (:func:`behaviour_parts`, one hash per part; 4-8 s on one core of an idle 2-core
machine, under a minute on a crowded one):

1. for the presets the results use (``tiny``, ``quick``) and every ablation of
   ``config.ABLATIONS`` (the support-blind control included), on the quick preset: the model's
   initial weights (seed 0, as training seeds it), a training-mode forward on a fixed random
   batch with padded queries, every loss term with a fixed relation draw, the gradients, one
   AdamW step after clipping (the weights after it) and the learning-rate schedule;
2. the shipped world (``data_samples/anet_like``): the first training batch of the quick preset
   (seed 0), a batch of fixed validation episodes, and the fixed episode files;
3. the evaluation: predictions of the initial quick model (seed 0) on fixed validation episodes
   through post-processing (decode, Soft-NMS, seconds) to the results JSON and its mAP; Soft-NMS
   and the box decoding on fixed random inputs;
4. two optimiser steps of ``train()`` itself (quick preset, seed 0, one thread) with a
   validation: its ``metrics.jsonl`` and the weights of its ``best.pt``.

Run as a script it prints the fingerprint (``--parts``: each part's hash), for the code on
``sys.path``: ``PYTHONPATH=/path/to/another/checkout python bench/_fingerprint.py --parts``
fingerprints another version of the code (its own ``data_samples``) with this recipe.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

RECIPE = 1
# the modules whose numbers the results depend on (informational source hash; relative to fscal_edu/)
SOURCES = ("config.py", "stages.py", "parts.py", "attention.py", "model.py", "losses.py", "proposals.py",
           "train.py", "distributed.py", "postprocess.py", "inference.py", "evaluation.py", "checkpoints.py",
           "utils.py", "data/episodes.py", "data/sampling.py", "data/features.py", "data/store.py",
           "data/annotations.py")

_CACHE: dict = {}


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------

class _Hasher:
    """sha256 over a stream of tagged values: tensors by dtype, shape and raw bytes; floats by repr."""

    def __init__(self):
        self.h = hashlib.sha256()

    def add(self, tag: str, value) -> None:
        self.h.update(tag.encode() + b"\0")
        if value is None:
            self.h.update(b"None")
        elif torch.is_tensor(value):
            t = value.detach().cpu().contiguous()
            shape, t = tuple(t.shape), t.reshape(-1)
            self.h.update(f"{t.dtype}{shape}".encode())
            self.h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, np.ndarray):
            self.add(tag, torch.from_numpy(np.ascontiguousarray(value)))
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                self.add(f"{tag}.{k}", value[k])
        elif isinstance(value, (list, tuple)):
            self.h.update(f"[{len(value)}]".encode())
            for i, v in enumerate(value):
                self.add(f"{tag}[{i}]", v)
        else:
            self.h.update(repr(value).encode())

    def hex(self) -> str:
        return self.h.hexdigest()[:16]


def _digest(*pairs) -> str:
    h = _Hasher()
    for tag, value in pairs:
        h.add(tag, value)
    return h.hex()


# ---------------------------------------------------------------------------------------------
# The parts of the computation
# ---------------------------------------------------------------------------------------------

def _code_root() -> Path:
    import fscal_edu
    return Path(fscal_edu.__file__).resolve().parents[1]


def _configs() -> dict:
    """name -> Config: the presets, then every ablation on the quick preset."""
    from fscal_edu.config import ABLATIONS, get_config
    cfgs = {"tiny": get_config("tiny"), "quick": get_config("quick")}
    for name in ABLATIONS:
        cfgs[f"quick+{name}"] = get_config("quick", ablate=[name])
    return cfgs


def _padded_batch(cfg, B: int = 4) -> dict:
    """A fixed random batch with padded queries (lengths T, T, 3T/4, T/2), ground truth and ignores."""
    g = torch.Generator().manual_seed(1234)
    T, T_S, C, K = cfg.data.T, cfg.data.T_S, cfg.data.feature_dim, cfg.data.shots
    lengths = torch.tensor([T, T, 3 * T // 4, T // 2])[:B]
    mask = torch.arange(T)[None] < lengths[:, None]                                   # (B, T)
    query = torch.randn(B, T, C, generator=g) * mask[..., None]                      # (B, T, C)
    support = torch.randn(B, K, T_S, C, generator=g)                                 # (B, K, T_S, C)
    start = torch.rand(B, 2, generator=g) * lengths[:, None] * 0.6                   # (B, 2)
    width = (0.1 + 0.3 * torch.rand(B, 2, generator=g)) * lengths[:, None]
    gt = torch.stack([start, (start + width).minimum(lengths[:, None].float())], -1)  # (B, 2, 2)
    gt_mask = torch.tensor([[True, True], [True, False], [True, True], [True, False]])[:B]
    ignore = gt[:, :1].flip(0).clone()                                                # (B, 1, 2)
    ignore_mask = torch.tensor([[False], [True], [False], [False]])[:B]
    return {"query": query, "support": support, "mask": mask, "gt": gt, "gt_mask": gt_mask,
            "ignore": ignore, "ignore_mask": ignore_mask, "label": torch.tensor([0, 1, 1, 2])[:B]}


def _model_part(cfg) -> str:
    """Initial weights, forward, loss terms, gradients, one AdamW step, the lr schedule of ``cfg``."""
    from fscal_edu import losses
    from fscal_edu.model import FSCAL
    from fscal_edu.train import lr_factor
    from fscal_edu.utils import seed_everything
    h = _Hasher()
    seed_everything(0)
    model = FSCAL(cfg)
    h.add("init", dict(model.state_dict()))
    batch = _padded_batch(cfg)
    model.train()
    out = model(batch["query"], batch["support"], mask=batch["mask"])
    for name in ("logits", "deltas", "anchors", "X_Q", "support_tokens", "relation", "relation_cross", "valid"):
        h.add(name, getattr(out, name, None))
    B, N = out.logits.shape
    kw = {}
    if "draw" in inspect.signature(losses.fscal_loss).parameters:
        kw["draw"] = losses.relation_draw(0, 0, B, N) if hasattr(losses, "relation_draw") \
            else torch.rand(B, N, generator=torch.Generator().manual_seed(5))
    terms = losses.fscal_loss(out, batch, cfg.loss, **kw)
    h.add("terms", {k: v.detach() for k, v in terms.items()})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    h.add("grads", {n: p.grad for n, p in model.named_parameters()})
    h.add("grad_norm", torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
    optimizer.step()
    scheduler.step()
    h.add("after_step", dict(model.state_dict()))
    h.add("lr", scheduler.get_last_lr())
    h.add("schedule", [lr_factor(s, cfg) for s in range(cfg.optim.steps + 1)])
    return h.hex()


def _world():
    from fscal_edu.data.episodes import World
    return World(_code_root() / "data_samples" / "anet_like")


def _batch_tensors(batch: dict) -> dict:
    keep = ("query", "support", "mask", "gt", "gt_mask", "ignore", "ignore_mask", "label", "id", "video",
            "duration", "offset", "axis")
    return {k: batch[k] for k in keep if k in batch}


def _data_part() -> str:
    """The quick preset's first training batch (seed 0), a batch of val episodes, the episode files."""
    from fscal_edu.config import get_config
    from fscal_edu.data.episodes import EpisodeDataset, collate
    from fscal_edu.train import training_loader
    cfg, world = get_config("quick"), _world()
    h = _Hasher()
    params = inspect.signature(training_loader).parameters
    args = (world, cfg, 0, 0, 1) if "start" in params else (world, cfg, 0)
    h.add("train_batch", _batch_tensors(next(iter(training_loader(*args)))))
    episodes = world.episodes("val", cfg.data.shots)[:8]
    items = [EpisodeDataset(world, episodes, cfg.data.T, cfg.data.T_S)[j] for j in range(len(episodes))]
    h.add("val_batch", _batch_tensors(collate(items)))
    for split in ("val", "test"):
        for shots in (1, 5):
            h.add(f"episodes_{split}_{shots}", json.dumps(world.episodes(split, shots), sort_keys=True))
    return h.hex()


def _evaluation_part() -> str:
    """Post-processing and mAP on fixed predictions (the initial quick model, seed 0); Soft-NMS and
    decode on fixed random inputs."""
    from fscal_edu.config import get_config
    from fscal_edu.inference import evaluate_model
    from fscal_edu.model import FSCAL
    from fscal_edu.postprocess import soft_nms_1d
    from fscal_edu.proposals import decode
    from fscal_edu.utils import seed_everything
    h = _Hasher()
    seed_everything(0)
    model = FSCAL(get_config("quick"))
    for split in ("val", "test"):
        metrics, results = evaluate_model(model, _world(), split, 5, limit=24)
        detections = results.get("results", results)        # the numbers, not the file's header
        h.add(f"{split}_results", json.dumps(detections, sort_keys=True))
        h.add(f"{split}_metrics", json.dumps(metrics, sort_keys=True, default=repr))
    g = torch.Generator().manual_seed(7)
    start = torch.rand(200, generator=g) * 100
    segments = torch.stack([start, start + 1 + 20 * torch.rand(200, generator=g)], -1)     # (200, 2)
    scores = torch.rand(200, generator=g)                                                  # (200,)
    h.add("soft_nms", soft_nms_1d(segments, scores, sigma=0.5))
    anchors = torch.stack([start[:50], start[:50] + 8], -1)                                 # (50, 2)
    h.add("decode", decode(anchors, 0.3 * torch.randn(50, 2, generator=g)))
    return h.hex()


def _training_part() -> str:
    """``train()`` itself: quick preset, 2 steps, validation on 4 episodes after the second, seed 0."""
    from fscal_edu.config import get_config
    from fscal_edu.train import train
    cfg = get_config("quick", steps=2, eval_every=2, val_episodes=4)
    kw = {k: v for k, v in dict(seed=0, threads=1, progress=False, overwrite=True).items()
          if k in inspect.signature(train).parameters}
    h = _Hasher()
    with tempfile.TemporaryDirectory(prefix="fscal-fingerprint-") as tmp, \
            contextlib.redirect_stdout(sys.stderr):
        run = Path(tmp) / "run"
        train(cfg, _world(), run, **kw)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        h.add("records", [{k: v for k, v in r.items() if not k.endswith("_s") and "time" not in k}
                          for r in records])
        h.add("best", dict(torch.load(run / "best.pt", map_location="cpu", weights_only=False)["model"]))
    return h.hex()


@contextlib.contextmanager
def _canonical():
    """One torch thread, flushed denormals; the caller's thread count and random states restored."""
    threads = torch.get_num_threads()
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)          # what every entry point sets (runtime.configure_process)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def behaviour_parts() -> dict:
    """Each part of the computation -> its hash (16 hex digits), or ``"unavailable: ..."`` when the
    code lacks what the part needs (an older version of the code)."""
    parts = {}
    with _canonical():
        jobs = [(f"model:{n}", (lambda c: lambda: _model_part(c))(c)) for n, c in _configs().items()]
        jobs += [("data", _data_part), ("evaluation", _evaluation_part), ("training", _training_part)]
        for name, job in jobs:
            try:
                parts[name] = job()
            except Exception as e:                                   # an older API: say which part
                parts[name] = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return parts


def source_fingerprint(root: Path | None = None) -> str:
    """The syntax trees of :data:`SOURCES` (docstrings removed, comments absent), hashed."""
    pkg = (root or _code_root()) / "fscal_edu"
    h = _Hasher()
    for rel in SOURCES:
        path = pkg / rel
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.add(rel, ast.dump(tree))
    return h.hex()


def git_commit(root: Path | None = None) -> str | None:
    """``git rev-parse --short HEAD`` of the checkout, or None."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root or _code_root(),
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def code_fingerprint(*, parts: bool = False) -> dict:
    """``{"behaviour", "source", "commit", "recipe"}`` of the code on ``sys.path`` (computed once
    per process); ``parts=True`` adds ``"parts"``, the hash of each part of the computation."""
    if "parts" not in _CACHE:
        _CACHE["parts"] = behaviour_parts()
    p = _CACHE["parts"]
    fp = {"behaviour": _digest(*sorted(p.items())), "source": source_fingerprint(), "commit": git_commit(),
          "recipe": RECIPE}
    return fp | {"parts": dict(p)} if parts else fp


if __name__ == "__main__":
    import time
    t0 = time.perf_counter()
    fp = code_fingerprint(parts="--parts" in sys.argv)
    fp["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(fp, indent=1))
