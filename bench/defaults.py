"""The experiments that decide the model's defaults, each 3 seeds, same budget.

Every variant is today's full model (quick preset, 5-shot, ``data_samples/anet_like``) with one
switch changed: the support summary (``mean``, the paper-literal bag; ``pooled``, attention
pooling; ``aligned``, today's default), the stages' added term (``kept``, the paper; ``centred``;
``gated``; ``null``), StoQ's ``mass_norm`` off, and cross-episode negatives from the twin class.
For each trained model it scores the fixed 5-shot test episodes as trained and with all three
stages skipped at inference (does the model *use* its stages?), and records the learned gates.

Each run leaves ``runs/defaults/<variant>_s<seed>.json``; finished runs are kept (resumable). The
summary (means, Welch tests against ``full``) goes to ``bench/results/defaults.json`` after every
run and to the "Defaults" section of ``docs/benchmarks.md``
(:func:`fscal_edu.report_stages.defaults_markdown`, the table notebook 08 shows too).

    python bench/defaults.py --seeds 0 1 2 [--threads 1] [--only full centred]
    python bench/defaults.py --report          # the docs section from the results file alone
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import DOC, RESULTS as RESULTS_DIR, ROOT, atomic_write_json, machine, measured_on, replace_section, write_results

from fscal_edu import stages
from fscal_edu.checkpoints import load_model
from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.inference import evaluate_model
from fscal_edu.report_stages import defaults_markdown
from fscal_edu.runtime import configure_process
from fscal_edu.stats import welch
from fscal_edu.train import train

RESULTS = RESULTS_DIR / "defaults.json"
SECTION = "## Defaults"
# variant -> (switches changed from today's full model, what it tests)
VARIANTS = {
    "full": ({}, "today's defaults: aligned summary, added term kept, mass_norm on"),
    "mean_summary": ({"support_summary": "mean"}, "summary: the paper-literal mean (a bag)"),
    "pooled_summary": ({"support_summary": "pooled"}, "summary: attention pooling"),
    "centred": ({"added_term": "centred"}, "added term: the part shared by all targets removed"),
    "gated": ({"added_term": "gated"}, "added term: a zero-initialised gate per stage"),
    "null": ({"added_term": "null"}, "added term: a learned null target"),
    "no_mass_norm": ({"mass_norm": False}, "mass_norm off"),
    "twin_negatives": ({"twin_negatives": True}, "cross-episode negatives from the twin class"),
}


def run_one(world: World, name: str, seed: int, runs: Path, here: str) -> dict:
    done = runs / f"{name}_s{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    cfg = get_config("quick", **VARIANTS[name][0])
    run = runs / f"{name}_s{seed}"
    train(cfg, world, run, seed=seed, device="cpu", threads=torch.get_num_threads(), progress=False, overwrite=True)
    model = load_model(run / "best.pt", device="cpu")
    row = {"variant": name, "seed": seed, "train_s": round(time.perf_counter() - t0, 1),
           "threads": torch.get_num_threads(), "machine": here}
    row["mAP@0.5"] = evaluate_model(model, world, "test", 5)[0]["mAP@0.5"]
    row["mAP@0.5_stages_skipped"] = evaluate_model(model, world, "test", 5, skip=stages.names())[0]["mAP@0.5"]
    if cfg.switches.added_term == "gated":
        row["gates"] = {s: round(float(getattr(model, s).gate), 4) for s in stages.names()}
    done.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(done, row, indent=None)
    return row


def summary(rows: list[dict]) -> list[dict]:
    base = [r["mAP@0.5"] for r in rows if r["variant"] == "full"]
    out = []
    for name, (switches, what) in VARIANTS.items():
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        vals = [r["mAP@0.5"] for r in mine]
        skipped = [r["mAP@0.5_stages_skipped"] for r in mine]
        item = {"variant": name, "switches": switches, "what": what, "seeds": [r["seed"] for r in mine],
                "mean": statistics.mean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
                "stages_skipped_mean": statistics.mean(skipped),
                "skip_cost": statistics.mean(v - s for v, s in zip(vals, skipped))}
        if name != "full" and len(vals) > 1 and len(base) > 1:
            w = welch(vals, base)
            item |= {"delta": w.diff, "t": w.t, "df": w.df, "p": w.p}
        if any("gates" in r for r in mine):
            item["gates"] = {s: statistics.mean(r["gates"][s] for r in mine) for s in stages.names()}
        out.append(item)
    return out


def write_docs(result: dict) -> None:
    """The "Defaults" section of ``docs/benchmarks.md``: the table of
    :func:`fscal_edu.report_stages.defaults_markdown` (one generator, shared with notebook 08)."""
    body = "\n".join(["", defaults_markdown(result), "", "Reproduce: `python bench/defaults.py --seeds 0 1 2`", ""])
    replace_section(DOC, SECTION, body)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", default=str(ROOT / "runs" / "defaults"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    p.add_argument("--report", "--docs-only", dest="report", action="store_true",
                   help="train nothing: rewrite the docs section from the results file")
    args = p.parse_args()
    if args.report:
        write_docs(json.loads(RESULTS.read_text()))
        return
    configure_process(threads=args.threads)
    here = machine()                             # measured before the first run
    world = World(ROOT / "data_samples" / "anet_like")
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    rows = old.get("runs", [])
    for seed in args.seeds:                      # seed-major: every variant gets seed 0 first
        for name in args.only:
            if any(r["variant"] == name and r["seed"] == seed for r in rows):
                continue
            rows.append(run_one(world, name, seed, Path(args.runs), here))
            print(json.dumps(rows[-1]), flush=True)
            rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
            result = {"machine": measured_on(rows, old.get("machine", "not recorded")),
                      "runs": rows, "summary": summary(rows)}
            write_results(RESULTS, result)
            write_docs(result)


if __name__ == "__main__":
    main()
