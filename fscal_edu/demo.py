"""``fscal-edu demo``: the main job in one command.

1. Load the shipped world and show one 5-shot test episode (what the model sees).
2. Get the full model and the support-blind control: load the shipped checkpoints
   (``data_samples/checkpoints``, found by :func:`fscal_edu.runtime.shipped`) when present, else
   train both with the quick preset.
3. Evaluate both and training-free prototype matching on the same fixed test episodes, print
   the table.
"""
from __future__ import annotations

import time
from pathlib import Path

from .baselines import evaluate_prototype
from .config import get_config
from .data.episodes import World
from .checkpoints import load_model
from .inference import evaluate_model
from .runtime import shipped
from .train import train


def shipped_checkpoint(name: str) -> Path:
    """The shipped checkpoint of ``name`` ("full" or "blind"); it may be absent (then train it)."""
    return shipped("checkpoints") / f"{name}.pt"


def __getattr__(attr: str):
    """``SHIPPED``: ``{"full": path, "blind": path}``, looked up when first asked for."""
    if attr == "SHIPPED":
        return {name: shipped_checkpoint(name) for name in ("full", "blind")}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def describe_episode(world: World, ep: dict) -> str:
    """A few lines on one episode; the class name is shown to the student, never to the model."""
    db = world.annotations["database"]
    q = db[ep["query"]]
    lines = [f"episode {ep['id']}: common class {ep['label']!r} (hidden from the model)",
             f"  query {ep['query']}: {q['duration']:.1f} s, {len(world.raw_features(ep['query']))} snippets "
             f"x {world.meta.feature_dim} features"]
    for a in q["annotations"]:
        mark = "<- common action" if a["label"] == ep["label"] else "   distractor"
        lines.append(f"    {a['segment'][0]:7.1f} - {a['segment'][1]:7.1f} s  {a['label']:14s} {mark}")
    for c in ep["support"]:
        lines.append(f"  support from {c['video']}: {c['segment'][0]:.1f} - {c['segment'][1]:.1f} s")
    return "\n".join(lines)


def load_or_train(name: str, world: World, *, out, preset: str = "quick", seed: int = 0, device="cpu",
                  force_train: bool = False, threads: int | None = None, run=None):
    """The model of ``name`` ("full" or "blind"): the ``best.pt`` of ``run``, a run folder the
    student has just trained, when it holds one; else the shipped checkpoint if present; else
    train it into ``out``.

    Returns ``(model, seconds spent training or None)``; says which of the three it did.
    """
    if run is not None and (Path(run) / "best.pt").is_file() and not force_train:
        print(f"{name}: evaluating the run you trained, {Path(run).as_posix()}/best.pt")
        return load_model(Path(run) / "best.pt", feature_dim=world.meta.feature_dim, device=device), None
    path = shipped_checkpoint(name)
    if path.is_file() and not force_train:
        print(f"{name}: loading the shipped checkpoint {path.parent.name}/{path.name}")
        return load_model(path, feature_dim=world.meta.feature_dim, device=device), None
    print(f"{name}: training the {preset} preset from scratch (seed {seed})")
    t0 = time.perf_counter()
    train(get_config(preset, ablate=["blind"] if name == "blind" else []), world, out, seed=seed, device=device,
          threads=threads, overwrite=True, feature_dim="data")
    return load_model(Path(out) / "best.pt", device=device), time.perf_counter() - t0


def run_demo(data=None, *, seed: int = 0, force_train: bool = False, out="runs/demo", shots: int = 5) -> dict:
    """The tour, printed: the world and one episode, then the full model, the blind control and
    prototype matching on the same fixed ``shots``-shot test episodes. ``data=None``: the shipped
    world and its shipped checkpoints; another world (or ``force_train``) trains both models into
    ``out/full`` and ``out/blind``. Returns ``{name: {"mAP@0.5": .., "average_mAP": ..}}``."""
    path = Path(data) if data is not None else shipped("anet_like")
    world = World(path)
    episodes = world.episodes("test", shots)
    print(f"world {path}: {len(world.annotations['database'])} videos, classes base/val/test = "
          f"{len(world.splits['base'])}/{len(world.splits['val'])}/{len(world.splits['test'])}, "
          f"{len(episodes)} fixed {shots}-shot test episodes\n")
    print(describe_episode(world, episodes[0]) + "\n")

    rows = {}
    for name in ("full", "blind"):
        model, secs = load_or_train(name, world, out=Path(out) / name, seed=seed,
                                    force_train=force_train or data is not None)
        metrics, _ = evaluate_model(model, world, "test", shots)
        rows[name] = (metrics, secs)
    rows["prototype"] = (evaluate_prototype(world, "test", shots)[0], None)

    print(f"\n{shots}-shot test episodes (pooled FS-CAL protocol; per-class in the last column)")
    print(f"{'model':12s} {'mAP@0.5':>8s} {'avg mAP':>8s} {'per-class':>9s} {'train s':>8s}")
    for name, (m, secs) in rows.items():
        t = f"{secs:8.1f}" if secs is not None else f"{'-':>8s}"
        print(f"{name:12s} {m['mAP@0.5']:8.3f} {m['average_mAP']:8.3f} {m['per_class']['mAP@0.5']:9.3f} {t}")
    return {name: {"mAP@0.5": round(m["mAP@0.5"], 4), "average_mAP": round(m["average_mAP"], 4)}
            for name, (m, _) in rows.items()}
