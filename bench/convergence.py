"""How fast the quick preset learns, in wall time, and what it ends at.

One quick-preset 5-shot training run on ``data_samples/anet_like`` per call of :func:`run`, timed
from the call to each validation (the 100 fixed val episodes every ``eval_every`` steps, the
validation included in the time), then its best checkpoint scored on the 300 fixed 5-shot test
episodes. ``load`` starts that many CPU-bound processes beside the run (a busy laptop), and
``threads=None`` lets ``train()`` choose the thread count by its policy (one per free core).

    python bench/convergence.py --seeds 0 1 2 [--threads N] [--load 2]

Results are kept in ``bench/results/convergence.json``, one entry per (seed, threads, load): a
run that is already there is not trained again, so an interrupted sweep resumes.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import ROOT, atomic_write_json, busy, evaluate_best, machine

from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.runtime import configure_process
from fscal_edu.train import train

DATA = ROOT / "data_samples" / "anet_like"
RESULTS = ROOT / "bench" / "results" / "convergence.json"


def before() -> list:
    """Test mAP@0.5 of the quick full model as first trained by ``bench/train_seeds.py`` (before the
    thread policy and the faster forward), one per seed."""
    rows = json.loads((ROOT / "bench" / "results" / "train_seeds.json").read_text())
    return [r["mAP@0.5"] for r in sorted(rows, key=lambda r: r["seed"] or 0) if r["model"] == "full"]


def time_to(curve: list, share: float) -> float | None:
    """Wall time at which validation mAP@0.5 first reached ``share`` of its final value."""
    final = curve[-1]["val_mAP@0.5"]
    return next((c["time_s"] for c in curve if c["val_mAP@0.5"] >= share * final), None)


def run(seed: int = 0, threads: int | None = None, load: int = 0, preset: str = "quick", **overrides) -> dict:
    """Train once (5-shot) and return the validation curve against wall time and the test mAP."""
    configure_process()                                 # denormals; the thread count is train()'s
    cfg = get_config(preset, shots=5, **overrides)
    world = World(DATA)
    here = machine()                                    # measured before the run (and its load) starts
    curve, chosen = [], {}
    with tempfile.TemporaryDirectory() as tmp, busy(load):
        start = time.perf_counter()

        def callback(record):
            if "val_mAP@0.5" in record:
                curve.append({"step": record["step"], "time_s": round(time.perf_counter() - start, 1),
                              "val_mAP@0.5": round(record["val_mAP@0.5"], 4)})
        summary = train(cfg, world, Path(tmp) / "run", seed=seed, device="cpu", threads=threads,
                        progress=False, callback=callback)
        wall = time.perf_counter() - start
        chosen = json.loads((Path(tmp) / "run" / "config.json").read_text()).get("threads")
        test = evaluate_best(Path(tmp) / "run", world, shots=5)
    return {"seed": seed, "preset": cfg.preset, "steps": cfg.optim.steps, "load": load,
            "threads_asked": threads, "threads": chosen, "wall_s": round(wall, 1),
            "train_time_s": summary["train_time_s"], "data_wait_s": summary.get("data_wait_s"),
            "curve": curve, "final_val_mAP@0.5": curve[-1]["val_mAP@0.5"],
            "time_to_90pct_s": time_to(curve, 0.9), "test_mAP@0.5": round(test["mAP@0.5"], 4),
            "test_average_mAP": round(test["average_mAP"], 4), "load_average_before": os.getloadavg(), "machine": here}


def key(seed: int, threads: int | None, load: int) -> str:
    return f"seed{seed}_threads{threads or 'policy'}_load{load}"


def cached_run(seed: int, threads: int | None = None, load: int = 0, results: Path = RESULTS,
               fresh: bool = False) -> dict:
    """:func:`run`, kept in ``results``; an entry already there is reused unless ``fresh``."""
    done = json.loads(results.read_text()) if results.is_file() else {}
    k = key(seed, threads, load)
    if fresh or k not in done:
        done[k] = run(seed, threads, load)
        results.parent.mkdir(exist_ok=True)
        atomic_write_json(results, done)
    return done[k]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: train()'s policy)")
    p.add_argument("--load", type=int, default=0, help="CPU-bound processes running beside the training")
    p.add_argument("--fresh", action="store_true", help="train again even if the results file has the run")
    args = p.parse_args(argv)
    for seed in args.seeds:
        r = cached_run(seed, args.threads, args.load, fresh=args.fresh)
        print(json.dumps({k: v for k, v in r.items() if k != "curve"}))


if __name__ == "__main__":
    main()
