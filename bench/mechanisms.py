"""When does each stage matter? For each stage, a sweep of the world knob that
exists for it, Δ = full − (that stage off), 3 seeds per setting.

Worlds are the anet profile with one mechanism knob set (``fscal_edu.data.synthetic``, written
once to ``runs/mechanisms/worlds/``); models are the quick preset, 5-shot, trained from scratch;
scores are mAP@0.5 on each world's fixed 5-shot test episodes. Every run leaves
``runs/mechanisms/<world>_<model>_s<seed>.json`` (:func:`prefix`; resumable; several processes can share
the job list with ``--worker i/n``); ``--skips`` probes every finished full model with each stage and all three skipped at
inference; ``--report`` writes ``bench/results/mechanisms.json`` and the
"Mechanisms" section of ``docs/benchmarks.md``.

    python bench/mechanisms.py --worlds
    python bench/mechanisms.py --seeds 0 1 2 --worker 0/2 &  python bench/mechanisms.py --seeds 0 1 2 --worker 1/2
    python bench/mechanisms.py --report
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch
from _common import (DOC, RESULTS as RESULTS_DIR, ROOT, atomic_write_json, machine, measured_on, replace_section,
                     train_and_evaluate, write_results)

from fscal_edu import stages
from fscal_edu.checkpoints import load_model
from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.data.synthetic import PROFILES, write_world
from fscal_edu.inference import evaluate_model
from fscal_edu.report_stages import mechanisms_markdown, pooled_markdown, skips_markdown
from fscal_edu.runtime import configure_process
from fscal_edu.stats import welch

RUNS = ROOT / "runs" / "mechanisms"
RESULTS = RESULTS_DIR / "mechanisms.json"
SECTION = "## Mechanisms"
# sweep -> (the stage, knob name, its values weakest first, fixed knobs, why); the stage's ablation
# ``no_<stage>`` turns it off. A stage may have several sweeps (one per candidate mechanism).
SWEEPS = {
    "qtos": ("qtos", "support_slack", [(0.0, 0.0), (0.25, 0.5), (0.5, 1.0)], {},
             "loose supports: the query's proposals can mark which support snippets matter"),
    "dynamics": ("dynamics", "tempo_concentration", [8.0, 2.0, 0.5], {"twin_mode": "swap", "phases_per_class": 4},
                 "freer tempo, twins one neighbouring swap apart, 4 phases per class"),
    "stoq": ("stoq", "scene_norm", [0.0, 2.0, 4.0], {"scene_span": "phases"},
             "a scene in the span of the phases, growing: context that looks like action"),
    # outlier supports (the twin class or background): every stage treats supports one by one
    # (QtoS each support alone, Dynamics-CA individual-to-all, StoQ each support snippet votes)
    # while a summary averages the outlier in; one world and one full model per setting for the three
    "qtos_outliers": ("qtos", "outlier_prob", [0.0, 0.2, 0.4], {}, "outlier supports: each support read on its own"),
    "dynamics_outliers": ("dynamics", "outlier_prob", [0.0, 0.2, 0.4], {},
                          "outlier supports: each support read against all the others"),
    "stoq_outliers": ("stoq", "outlier_prob", [0.0, 0.2, 0.4], {},
                      "outlier supports: each support snippet votes for the proposals it resembles"),
    # an action in V variants, V growing: a summary of supports of mixed variants matches no instance
    "stoq_variants": ("stoq", "variants_per_class", [1, 2, 4], {},
                      "variants: each support snippet votes for the proposals of its own variant"),
    "qtos_variants": ("qtos", "variants_per_class", [1, 2, 4], {},
                      "variants: the query's proposals mark the supports of its variant"),
    "dynamics_variants": ("dynamics", "variants_per_class", [1, 2, 4], {},
                          "variants: each support read against supports of other variants"),
}
# sweeps over the same knob share their worlds and full models: run files are named by the group
GROUP = {"qtos_outliers": "outliers", "dynamics_outliers": "outliers", "stoq_outliers": "outliers",
         "qtos_variants": "variants", "dynamics_variants": "variants", "stoq_variants": "variants"}
# a setting that leaves the anet profile as it is uses the runs of that world made under this prefix
# (same world bytes, same config, same seed: the same training, deterministic on CPU)
DEFAULT_WORLD = "outliers_0"


def label(value) -> str:
    return "-".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def group(sweep: str) -> str:
    return GROUP.get(sweep, sweep)


def prefix(sweep: str, value) -> str:
    """Run files of one setting: ``<group>_<value>``, or the default world's runs."""
    _, knob, _, fixed, _ = SWEEPS[sweep]
    if not fixed and getattr(PROFILES["anet"], knob) == value:
        return DEFAULT_WORLD
    return f"{group(sweep)}_{label(value)}"


def off(sweep: str) -> str:
    """The ablation that turns the sweep's stage off."""
    return f"no_{SWEEPS[sweep][0]}"


def world_dir(sweep: str, value) -> Path:
    """The world of one knob setting, generated on first use (seed 0, 300 test episodes per K)."""
    _, knob, _, fixed, _ = SWEEPS[sweep]
    path = RUNS / "worlds" / prefix(sweep, value)
    if not (path / "world.json").is_file():
        cfg = dataclasses.replace(PROFILES["anet"], **fixed, **{knob: value})
        write_world(path, cfg, seed=0, n_test_episodes=300, n_val_episodes=100)
    return path


def jobs(seeds) -> list[tuple]:
    """Seed-major (every setting gets seed 0 first), strongest setting first within a seed."""
    out = [(sweep, value, model, seed) for seed in seeds for sweep, (_, _, values, _, _) in SWEEPS.items()
           for value in reversed(values) for model in ("full", off(sweep))]
    seen = set()      # one world's model runs once per seed, whichever sweeps read it
    key = lambda j: (prefix(j[0], j[1]), j[2], j[3])   # noqa: E731
    return [j for j in out if not (key(j) in seen or seen.add(key(j)))]


def run_one(sweep: str, value, model: str, seed: int, here: str) -> dict:
    done = RUNS / f"{prefix(sweep, value)}_{model}_s{seed}.json"
    if done.is_file():
        return json.loads(done.read_text())
    world = World(world_dir(sweep, value))
    run = RUNS / f"{prefix(sweep, value)}_{model}_s{seed}"
    m, secs = train_and_evaluate(get_config("quick", ablate=[] if model == "full" else [model]), world, run,
                                 seed=seed)
    row = {"sweep": sweep, "stage": SWEEPS[sweep][0], "knob": SWEEPS[sweep][1], "value": value, "model": model,
           "seed": seed, "mAP@0.5": m["mAP@0.5"], "train_s": round(secs, 1), "threads": torch.get_num_threads(),
           "machine": here}
    atomic_write_json(done, row, indent=None)
    return row


def skips() -> tuple:
    """What ``--skips`` bypasses: each registered stage alone, then all of them (``"qtos,dynamics,stoq"``)."""
    return (*stages.names(), ",".join(stages.names()))


def skip_probe(done: Path) -> dict:
    """Inference-time probes of one trained full model: each stage, and all three, bypassed
    (``forward(skip=...)``) on the same test episodes; written into its run file."""
    row = json.loads(done.read_text())
    if row["model"] != "full" or "skipped" in row:
        return row
    value = tuple(row["value"]) if isinstance(row["value"], list) else row["value"]
    world = World(world_dir(row.get("sweep", row["stage"]), value))
    model = load_model(done.with_suffix("") / "best.pt", device="cpu")
    row["skipped"] = {sk: evaluate_model(model, world, "test", 5, skip=sk)[0]["mAP@0.5"] for sk in skips()}
    atomic_write_json(done, row, indent=None)
    return row


def pick(rows: list, sweep: str, value, model: str, skip: str | None = None) -> list:
    """The seeds' mAP@0.5 of one model at one knob setting; ``rows`` are ``(file stem, row)``."""
    head = f"{prefix(sweep, value)}_{model}_s"
    rows = [r for stem, r in rows if stem.startswith(head) and stem[len(head):].isdigit()]
    if skip is not None:          # the full model with stages bypassed at inference (where probed)
        return [r["skipped"][skip] for r in rows if skip in r.get("skipped", {})]
    return [r["mAP@0.5"] for r in rows]


def report() -> dict:
    rows = [(p.stem, json.loads(p.read_text())) for p in sorted(RUNS.glob("*_s*.json"))]
    if not rows:                                 # never overwrite the results with an empty summary
        raise SystemExit(f"bench/mechanisms.py: no run files in {RUNS}: nothing to report ({RESULTS.name} kept)")
    out = []
    for sweep, (stage, knob, values, fixed, why) in SWEEPS.items():
        for value in values:
            full, ablated = pick(rows, sweep, value, "full"), pick(rows, sweep, value, off(sweep))
            item = {"sweep": sweep, "world": prefix(sweep, value), "stage": stage, "knob": knob, "value": value, "fixed": fixed, "why": why,
                    "full": full, off(sweep): ablated}
            skipped = {sk: pick(rows, sweep, value, "full", sk) for sk in skips()}
            if any(skipped.values()):
                item["full_skipped"] = skipped
            if full and ablated:
                item["delta"] = statistics.mean(full) - statistics.mean(ablated)
            if len(full) > 1 and len(ablated) > 1:
                w = welch(full, ablated)
                item |= {"t": w.t, "df": w.df, "p": w.p}
            out.append(item)
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result = {"machine": measured_on([r for _, r in rows], old.get("machine", "not recorded")), "sweeps": out}
    write_results(RESULTS, result)
    lines = ["", mechanisms_markdown(result), "", pooled_markdown(result), "", skips_markdown(result)]
    lines += ["", "Reproduce: `python bench/mechanisms.py --seeds 0 1 2` (then `--report`)", ""]
    replace_section(DOC, SECTION, "\n".join(lines))
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", default="0/1", help="i/n: run every n-th job, starting at i")
    p.add_argument("--report", action="store_true", help="only summarise the finished runs")
    p.add_argument("--skips", action="store_true", help="probe every finished full model with stages skipped")
    p.add_argument("--worlds", action="store_true", help="only generate the worlds (before several workers start)")
    args = p.parse_args()
    if args.report:
        report()
        return
    configure_process(threads=args.threads)
    i, n = (int(x) for x in args.worker.split("/"))
    if args.skips:
        for k, done in enumerate(sorted(RUNS.glob("*_full_s*.json"))):
            if k % n == i:
                print(json.dumps(skip_probe(done)), flush=True)
        return
    if args.worlds:
        for sweep, (_, _, values, _, _) in SWEEPS.items():
            for value in values:
                print("world", world_dir(sweep, value), flush=True)
        return
    here = machine()                             # measured before the first run
    for k, job in enumerate(jobs(args.seeds)):
        if k % n == i:
            print(json.dumps(run_one(*job, here)), flush=True)


if __name__ == "__main__":
    main()
