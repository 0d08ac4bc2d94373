"""Long videos read as windows against resampled to T, on the thumos_like world.

For each seed, trains the quick preset from scratch three ways on ``data_samples/thumos_like``:

- ``window``: queries read as windows of T = 128 snippets at the features' own rate (the default
  for strided features), the full model;
- ``resample``: every query resampled to T = 128 snippets (the ActivityNet habit), the full model;
- ``blind``: windows, the support-blind control;

evaluates the fixed 5-shot test episodes (each model the way it was trained, and the windowed
model also with resampled queries, a probe of the reading alone), and writes
``bench/results/windows.json`` (after every run: resumable) and the "Long videos" section of
``docs/benchmarks.md``.

    python bench/windows.py --seeds 0 1 2 [--runs runs/windows] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine, measured_on, replace_section, write_results  # noqa: E402

from fscal_edu.checkpoints import load_model  # noqa: E402
from fscal_edu.config import get_config  # noqa: E402
from fscal_edu.data.episodes import World  # noqa: E402
from fscal_edu.inference import evaluate_model  # noqa: E402
from fscal_edu.runtime import configure_process  # noqa: E402
from fscal_edu.stats import format_p, welch  # noqa: E402
from fscal_edu.train import train  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "windows.json"
SECTION = "## Long videos: windows against resampling"
VARIANTS = {"window": dict(query_mode="window"), "resample": dict(query_mode="resample"),
            "blind": dict(query_mode="window", ablate=["blind"])}


def config(name: str):
    opts = dict(VARIANTS[name])
    return get_config("quick", ablate=opts.pop("ablate", []), **opts)


def run_one(world: World, name: str, seed: int, runs: Path) -> dict:
    run = runs / f"{name}_s{seed}"
    t0 = time.perf_counter()
    train(config(name), world, run, seed=seed, device="cpu", threads=torch.get_num_threads(), progress=False,
          overwrite=True, feature_dim="data")
    secs = time.perf_counter() - t0
    model = load_model(run / "best.pt", device="cpu")
    row = {"model": name, "seed": seed, "train_s": round(secs, 1), "threads": torch.get_num_threads(),
           "machine": machine()}
    for shots in (5, 1):
        m, _ = evaluate_model(model, world, "test", shots)
        row[f"mAP@0.5_{shots}shot"], row[f"average_mAP_{shots}shot"] = m["mAP@0.5"], m["average_mAP"]
    if name == "window":      # the same weights, the queries resampled: the reading alone
        model.cfg = model.cfg.replace(query_mode="resample")
        m, _ = evaluate_model(model, world, "test", 5)
        row["mAP@0.5_5shot_read_resampled"] = m["mAP@0.5"]
    return row


def compare(rows, a: str, b: str, key: str = "mAP@0.5_5shot") -> dict:
    x = [r[key] for r in rows if r["model"] == a]
    y = [r[key] for r in rows if r["model"] == b]
    if len(x) < 2 or len(y) < 2:
        return {"a": a, "b": b, "key": key, "delta": None}
    w = welch(x, y)
    return {"a": a, "b": b, "key": key, "delta": statistics.mean(x) - statistics.mean(y), "t": w.t,
            "df": w.df, "p": w.p}


def write_docs(rows, seeds, world: World) -> None:
    def mean_sd(name, key):
        vals = [r[key] for r in rows if r["model"] == name and key in r]
        if not vals:
            return "-"
        return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"

    lengths = [len(world.raw_features(v)) for v in world.annotations["database"]]
    lines = ["", f"Machine: {measured_on(rows, f'{platform.machine()}, 2 cores shared with other jobs, torch {torch.__version__}, CPU')}. "
             f"Quick preset (T = 128 snippets per window, stride 64), fixed test episodes of "
             f"`data_samples/thumos_like` ({len(lengths)} videos of {min(lengths)}-{max(lengths)} snippets, "
             f"median {statistics.median(lengths):.0f}; test classes never seen in training).", "",
             "| model | seed | 5-shot mAP@0.5 | 5-shot average mAP | 1-shot mAP@0.5 | windowed model, queries resampled | training (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['seed']} | {r['mAP@0.5_5shot']:.3f} | {r['average_mAP_5shot']:.3f} | "
              f"{r['mAP@0.5_1shot']:.3f} | {r.get('mAP@0.5_5shot_read_resampled', float('nan')):.3f} | "
              f"{r['train_s']:.0f} |".replace("nan", "-") for r in rows]
    lines += ["", "Means ± standard deviations over seeds:", "",
              "| model | 5-shot mAP@0.5 | 1-shot mAP@0.5 |", "|---|---|---|"]
    lines += [f"| {n} | {mean_sd(n, 'mAP@0.5_5shot')} | {mean_sd(n, 'mAP@0.5_1shot')} |" for n in VARIANTS]
    lines += ["", "Welch's t-test (Welch–Satterthwaite degrees of freedom) on the 5-shot mAP@0.5:", ""]
    for c in (compare(rows, "window", "resample"), compare(rows, "window", "blind")):
        if c["delta"] is not None:
            lines.append(f"- {c['a']} − {c['b']}: {c['delta']:+.3f} (t = {c['t']:.2f}, df = {c['df']:.1f}, "
                         f"{format_p(c['p'])})")
    lines += ["", "Training time is the wall time of each run as it happened (validation included, on a "
              "machine shared with other jobs).", "",
              f"Reproduce: `python bench/windows.py --seeds {' '.join(map(str, seeds))}`", ""]
    replace_section(ROOT / "docs" / "benchmarks.md", SECTION, "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", default=str(ROOT / "runs" / "windows"))
    p.add_argument("--data", default=str(ROOT / "data_samples" / "thumos_like"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    p.add_argument("--docs-only", action="store_true", help="rewrite the docs section from the results file")
    args = p.parse_args()
    configure_process(threads=args.threads)
    world = World(args.data)
    rows = json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else []
    if not args.docs_only:
        for seed in args.seeds:
            for name in args.only:
                if any(r["model"] == name and r["seed"] == seed for r in rows):
                    continue                       # resumable: finished runs are kept
                rows.append(run_one(world, name, seed, Path(args.runs)))
                print(rows[-1], flush=True)
                rows.sort(key=lambda r: (list(VARIANTS).index(r["model"]), r["seed"]))
                write_results(RESULTS, {"runs": rows, "tests": [compare(rows, "window", "resample"),
                                                         compare(rows, "window", "blind")]})
    write_docs(rows, args.seeds, world)


if __name__ == "__main__":
    main()
