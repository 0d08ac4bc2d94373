"""The first table of the course: full model vs support-blind control vs prototype matching.

Trains the quick preset from scratch (full and blind) for each seed on data_samples/anet_like,
evaluates the fixed 5-shot test episodes, and writes bench/results/train_seeds.json and the
"Full model against its controls" section of docs/benchmarks.md.

    python bench/train_seeds.py --seeds 0 1 2 [--runs runs/seeds] [--ship]

One torch thread per training by default (``--threads``): a CPU run repeats exactly for a given
code, seed and thread count, so seed 0 here is the run of ``data_samples/checkpoints/runs/full``
and the one a student trains in notebook 07 (``--threads 1``). ``--ship`` copies seed 0's best
checkpoints to data_samples/checkpoints/{full,blind}.pt.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

import torch
from _common import DOC, RESULTS, ROOT, atomic_write_json, machine, replace_section, train_and_evaluate, write_results

from fscal_edu.baselines import evaluate_prototype
from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.runtime import configure_process
from fscal_edu.utils import read_json

SECTION = "## Full model against its controls"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", default=str(ROOT / "runs" / "seeds"))
    p.add_argument("--data", default=str(ROOT / "data_samples" / "anet_like"))
    p.add_argument("--ship", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["full", "blind"], nargs="+", default=["full", "blind"])
    args = p.parse_args()
    configure_process(threads=args.threads)
    here = machine()                    # measured now, before the first training
    world = World(args.data)
    rows = []
    for seed in args.seeds:
        for name in args.only:
            run = Path(args.runs) / f"{name}_s{seed}"
            done = run / "result.json"
            if done.is_file():          # resumable: a finished run is read back, not retrained
                rows.append(read_json(done, "a result row"))
                continue
            m, secs = train_and_evaluate(get_config("quick", ablate=["blind"] if name == "blind" else []),
                                         world, run, seed=seed)
            rows.append({"model": name, "seed": seed, "mAP@0.5": m["mAP@0.5"], "average_mAP": m["average_mAP"],
                         "per_class_mAP@0.5": m["per_class"]["mAP@0.5"], "train_s": round(secs, 1),
                         "threads": torch.get_num_threads(), "machine": here})
            atomic_write_json(done, rows[-1], indent=None)
            print(rows[-1], flush=True)
    proto, _ = evaluate_prototype(world, "test", 5)
    rows.append({"model": "prototype", "seed": None, "mAP@0.5": proto["mAP@0.5"],
                 "average_mAP": proto["average_mAP"], "per_class_mAP@0.5": proto["per_class"]["mAP@0.5"],
                 "train_s": 0.0})
    RESULTS.mkdir(exist_ok=True)
    write_results(RESULTS / "train_seeds.json", rows)
    measured_on = next((r["machine"] for r in rows if r.get("machine")), here)

    def cell(name, key):
        vals = [r[key] for r in rows if r["model"] == name]
        return (f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 and key != "train_s"
                else f"{statistics.mean(vals):.0f} ± {statistics.stdev(vals):.0f}" if len(vals) > 1
                else f"{vals[0]:.3f}")

    lines = ["", f"Machine: {measured_on}. Quick preset, "
             f"5-shot, fixed test episodes of `data_samples/anet_like` (test classes never seen in "
             f"training).", "",
             "| model | seed | mAP@0.5 | average mAP | per-class mAP@0.5 | training wall time (s) | torch threads |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['seed'] if r['seed'] is not None else '-'} | {r['mAP@0.5']:.3f} | "
              f"{r['average_mAP']:.3f} | {r['per_class_mAP@0.5']:.3f} | {r['train_s']:.1f} | "
              f"{r.get('threads', '-')} |" for r in rows]
    lines += ["", "Mean ± standard deviation over seeds:", "",
              "| model | mAP@0.5 | average mAP | training time (s) |", "|---|---|---|---|"]
    lines += [f"| {n} | {cell(n, 'mAP@0.5')} | {cell(n, 'average_mAP')} | {cell(n, 'train_s')} |"
              for n in ("full", "blind", "prototype")]
    lines += ["", "Training time includes the validation passes (4 x 100 val episodes). It is the wall time of "
              "each run as it happened; when other jobs share the cores it is inflated several times "
              "(see the clean timing of a quick run below).", "",
              f"Reproduce: `python bench/train_seeds.py --seeds {' '.join(map(str, args.seeds))} --threads {args.threads}`", ""]
    replace_section(DOC, SECTION, "\n".join(lines))
    if args.ship:
        ship = ROOT / "data_samples" / "checkpoints"
        ship.mkdir(exist_ok=True)
        for name in ("full", "blind"):
            shutil.copy(Path(args.runs) / f"{name}_s{args.seeds[0]}" / "best.pt", ship / f"{name}.pt")
        print("shipped", sorted(p.name for p in ship.iterdir()))


if __name__ == "__main__":
    main()
