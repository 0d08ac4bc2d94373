"""Long actions in long videos: how to read a query whose instances are long against the window.

For each world and seed, trains the quick preset (5-shot) from scratch and scores the fixed 5-shot
test episodes (mAP@0.5 and average mAP), one setting at a time:

- ``resample``: every query resampled to T = 128 rows;
- ``window``: windows of T = 128 rows at the features' own rate, stride 64 (today's default for
  strided features);
- ``window+merge``: the same windowed model, with detections that meet or overlap at a window edge
  merged into one segment before Soft-NMS (an inference option: no extra training);
- ``resample_mean`` (``--extra``): every query resampled to T rows, each the mean of its bin
  (``data.resample_average``), a probe of why ``pool`` wins: averaging, or one rate for every video;
- ``pool``: windows read at a coarser rate, ``pool`` rows per query row, so that the p95 training
  instance is at most half a window (``query_mode_rule(..., long="pool")``; skipped where that
  rate is 1, i.e. where it is ``window``); ``pool+merge``: the same model with the edge merge.

Worlds: the generator's ``long`` profile (videos of 6-15 minutes at one row per second, instances of
1-3 minutes) and ``anet_strided`` profile (ActivityNet with strided features), both generated at
seed 0 into ``--worlds`` on first use, and ``data_samples/thumos_like``. The queue is seed-major;
the results file is written after every run, and runs already in it are skipped (resumable).

    python bench/long_instances.py --seeds 0 1 2 [--results bench/results/long_instances.json]
    python bench/long_instances.py --report      # the tables, as markdown for docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (the machine, measured)

import fscal_edu.train as train_module  # noqa: E402
from fscal_edu.checkpoints import load_model  # noqa: E402
from fscal_edu.config import get_config  # noqa: E402
from fscal_edu.data.episodes import RandomEpisodes, World  # noqa: E402
from fscal_edu.data.sampling import LONG_INSTANCES, query_mode_rule  # noqa: E402
from fscal_edu.data.synthetic import write_world  # noqa: E402
from fscal_edu.inference import evaluate_model  # noqa: E402
from fscal_edu.runtime import configure_process  # noqa: E402
from fscal_edu.stats import format_p, welch  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "long_instances.json"
WORLDS = ("long", "anet_strided", "thumos_like")
TRAINED = ("resample", "window", "pool")                 # trained settings, in queue order
SETTINGS = ("resample", "resample_mean", "window", "window+merge", "pool", "pool+merge")   # reported
EXTRA = ("resample_mean",)     # probes run after the main queue (--extra): resampling that averages
TITLES = {"long": "long-instance world (`long` profile)", "anet_strided": "ActivityNet with strided features "
          "(`anet_strided` profile)", "thumos_like": "`data_samples/thumos_like`"}


def world_dir(name: str, worlds: Path) -> Path:
    """The world's directory: ``data_samples/thumos_like``, or a generated profile (written once)."""
    if name == "thumos_like":
        return ROOT / "data_samples" / "thumos_like"
    out = worlds / name
    if not (out / "world.json").is_file():
        write_world(out, name, seed=0, n_test_episodes=200, n_val_episodes=100)
    return out


def setting_config(setting: str, pool: int):
    if setting in ("resample", "resample_mean"):
        return get_config("quick", query_mode="resample", resample_average=setting == "resample_mean")
    return get_config("quick", query_mode="window", window_pool=pool if setting == "pool" else 1)


def train_one(world: World, cfg, run: Path, seed: int) -> float:
    """Train (a run killed half-way resumes from its ``last.pt``, to the same numbers); the training
    windows read at ``cfg.data.window_pool`` rows per query row."""
    t0 = time.perf_counter()
    original = train_module.RandomEpisodes
    train_module.RandomEpisodes = functools.partial(RandomEpisodes, pool=cfg.data.window_pool,
                                                    average=cfg.data.resample_average)
    resume = (run / "last.pt").is_file()
    try:
        train_module.train(cfg, world, run, seed=seed, device="cpu", progress=False, overwrite=not resume,
                           resume=resume, feature_dim="data")
    finally:
        train_module.RandomEpisodes = original
    return time.perf_counter() - t0


def score(model, world: World, **changes) -> dict:
    model.cfg = model.cfg.replace(**changes)
    m, _ = evaluate_model(model, world, "test", 5)
    return {"mAP@0.5": m["mAP@0.5"], "average_mAP": m["average_mAP"]}


def run_setting(name: str, world: World, setting: str, seed: int, pool: int, runs: Path, have=()) -> list[dict]:
    """Train one setting (unless its row is in ``have``: then only the missing edge-merged reading
    of its model), score it and its edge-merged reading: result rows."""
    cfg = setting_config(setting, pool)
    run = runs / f"{name}_{setting}_s{seed}"
    secs = None if setting in have else train_one(world, cfg, run, seed)
    model = load_model(run / "best.pt", device="cpu")
    base = {"world": name, "seed": seed, "pool": cfg.data.window_pool, "threads": torch.get_num_threads()}
    rows = [] if setting in have else [base | {"setting": setting, "train_s": round(secs, 1)} | score(model, world)]
    if not setting.startswith("resample") and setting + "+merge" not in have:
        rows.append(base | {"setting": setting + "+merge"} | score(model, world, window_merge=True))
    return rows


def queue(seeds, worlds, pools: dict, settings=TRAINED) -> list[tuple]:
    """Seed-major: every (world, setting) of seed 0, then of seed 1, ..."""
    return [(s, w, st) for s in seeds for w in worlds for st in settings if not (st == "pool" and pools[w] == 1)]


def reuse_windows_results(payload: dict, seeds) -> None:
    """``thumos_like``'s resampled and windowed runs of ``bench/windows.py`` (same preset, world,
    seeds, code path): taken over for the seeds missing here, once this file's own seed-0 run of the
    setting reproduced its number exactly (then they are the same runs; training them again would
    cost 4-7 minutes each). Their edge-merged reading is not measured (seed 0: +0.00004)."""
    path = ROOT / "bench" / "results" / "windows.json"
    if not path.is_file():
        return
    for setting in ("resample", "window"):
        theirs = {r["seed"]: r for r in json.loads(path.read_text())["runs"] if r["model"] == setting}
        mine = {r["seed"]: r for r in payload["runs"] if r["world"] == "thumos_like" and r["setting"] == setting}
        if 0 not in mine or 0 not in theirs or mine[0]["mAP@0.5"] != theirs[0]["mAP@0.5_5shot"]:
            continue
        for seed in seeds:
            if seed not in mine and seed in theirs:
                r = theirs[seed]
                payload["runs"].append({"world": "thumos_like", "seed": seed, "pool": 1, "threads": r["threads"],
                                        "setting": setting, "train_s": r["train_s"], "mAP@0.5": r["mAP@0.5_5shot"],
                                        "average_mAP": r["average_mAP_5shot"], "source": "bench/results/windows.json"})


def commit_of() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_common.stamped(payload), indent=1) + "\n")   # "code": the code that made it
    os.replace(tmp, path)


def mean_sd(vals) -> str:
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def auto_setting(info: dict) -> str:
    """The setting that ``query_mode_rule`` picks (with ``LONG_INSTANCES`` for long instances)."""
    rule = info.get("pool_rule" if LONG_INSTANCES == "pool" else "rule", "")
    return "resample" if rule.startswith("query mode: resample") else "pool" if " rate " in rule else "window"


def world_table(payload: dict, name: str) -> list[str]:
    rows = [r for r in payload["runs"] if r["world"] == name]
    info = payload.get("worlds", {}).get(name, {})
    ref = [r["mAP@0.5"] for r in rows if r["setting"] == "resample"]
    lines = [f"**{TITLES[name]}**: `auto`: {info.get('pool_rule' if LONG_INSTANCES == 'pool' else 'rule', '')}; median instance "
             f"{info.get('instance_rows_median', float('nan')):.0f} rows, p95 "
             f"{info.get('instance_rows_p95', float('nan')):.0f}, median video "
             f"{info.get('video_rows_median', float('nan')):.0f} rows.", "",
             "| setting | seeds | mAP@0.5 | average mAP | Δ mAP@0.5 vs resample | Welch's t (df), p | training (s) |",
             "|---|---|---|---|---|---|---|"]
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting]
        if not mine:
            continue
        x = [r["mAP@0.5"] for r in mine]
        label = setting.replace("pool", f"pool {mine[0]['pool']}") + (" (`auto`)" if setting == auto_setting(info) else "")
        secs = [r["train_s"] for r in mine if "train_s" in r]
        test = "-"
        if setting != "resample" and len(x) > 1 and len(ref) > 1:
            w = welch(x, ref)
            test = f"{w.diff:+.3f} | {w.t:.2f} ({w.df:.1f}), {format_p(w.p)}"
        lines.append(f"| {label} | {len(x)} | {mean_sd(x)} | {mean_sd([r['average_mAP'] for r in mine])} | "
                     + (test if test != "-" else "- | -") + (f" | {statistics.mean(secs):.0f} |" if secs else " | - |"))
    return lines + [""]


def report(payload: dict) -> str:
    """The section "Long instances in long videos" of docs/benchmarks.md, as markdown."""
    lines = ["## Long instances in long videos", "",
             f"Quick preset, 5-shot, fixed test episodes, seeds {', '.join(map(str, sorted({r['seed'] for r in payload['runs']})))}, "
             f"one thread, CPU ({payload.get('machine', '')}; code at commit(s) "
             f"{', '.join(sorted({r.get('commit', payload.get('commit', '')) [:7] for r in payload['runs'] if not r.get('source')}))}, "
             "the code these settings run is the same in all of them; each row of the results file names its own). "
             "Means ± standard deviations over seeds; Welch's t-test against resampling. `merge`: the "
             "same windowed model, detections that meet at a window edge merged before Soft-NMS. `pool r`: windows "
             "read at 1/r of the feature rate, each row the mean of r rows. `resample_mean` (a probe, seed 0): "
             "resampled queries whose rows are bin means instead of linear interpolation.", ""]
    for name in WORLDS:
        if any(r["world"] == name for r in payload["runs"]):
            lines += world_table(payload, name)
    for setting in ("resample", "window"):
        reused = sorted({r["seed"] for r in payload["runs"] if r.get("source") and r["setting"] == setting})
        if reused:
            lines += [f"`thumos_like`, {setting}, seeds {', '.join(map(str, reused))}: the runs of `bench/windows.py` "
                      "(same preset, world, seeds and code path; its seed 0 reproduced here to the last digit).", ""]
    lines += ["`auto` against resampling (mAP@0.5, means over seeds):", ""]
    for name in WORLDS:
        rows = [r for r in payload["runs"] if r["world"] == name]
        auto = auto_setting(payload.get("worlds", {}).get(name, {}))
        a = [r["mAP@0.5"] for r in rows if r["setting"] == auto]
        b = [r["mAP@0.5"] for r in rows if r["setting"] == "resample"]
        if a and b:
            lines.append(f"- {TITLES[name]}: `auto` = {auto}, {statistics.mean(a):.3f} against "
                         f"{statistics.mean(b):.3f} ({statistics.mean(a) - statistics.mean(b):+.3f}; "
                         f"{len(a)} and {len(b)} seeds)")
    lines += ["", "Reproduce: `python bench/long_instances.py --seeds 0 1 2 --reuse-windows`, the probe with "
              "`--extra --seeds 0 --only-worlds long anet_strided`, then `--report`.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--worlds", default=str(ROOT / "runs" / "worlds"))
    p.add_argument("--only-worlds", nargs="+", choices=WORLDS, default=list(WORLDS))
    p.add_argument("--runs", default=str(ROOT / "runs" / "long_instances"))
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="stop after this many trainings")
    p.add_argument("--report", action="store_true", help="print the tables from the results file")
    p.add_argument("--extra", action="store_true", help="run the probes (resample_mean) instead of the main queue")
    p.add_argument("--reuse-windows", action="store_true",
                   help="take thumos_like's resampled runs from bench/results/windows.json once seed 0 reproduces it")
    args = p.parse_args()
    path = Path(args.results)
    payload = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    if args.report:
        print(report(payload))
        return
    configure_process(threads=args.threads)
    worlds = {w: World(world_dir(w, Path(args.worlds))) for w in args.only_worlds}
    pools = {}
    for name, world in worlds.items():
        rule, pooled = query_mode_rule(world), query_mode_rule(world, long="pool")
        pools[name] = pooled.pool
        payload.setdefault("worlds", {})[name] = {"rule": rule.reason, "pool_rule": pooled.reason} | rule.stats
    commit = commit_of()
    payload.setdefault("commit", commit)              # the first code; each row names its own
    payload["machine"] = _common.machine()                     # measured when this run of the script started
    if args.reuse_windows:
        reuse_windows_results(payload, args.seeds)
    done = 0
    for seed, name, setting in queue(args.seeds, args.only_worlds, pools, EXTRA if args.extra else TRAINED):
        mine = [r for r in payload["runs"] if r["world"] == name and r["seed"] == seed]
        have, reused = {r["setting"] for r in mine}, {r["setting"] for r in mine if r.get("source")}
        if setting in have and (setting.startswith("resample") or setting + "+merge" in have or setting in reused):
            continue                                   # resumable: finished runs are kept
        if args.limit is not None and done >= args.limit:
            break
        rows = [r | {"commit": commit} for r in run_setting(name, worlds[name], setting, seed, pools[name],
                                                            Path(args.runs), have)]
        payload["runs"] += rows
        done += 1
        for r in rows:
            print(json.dumps(r), flush=True)
        save(path, payload)


if __name__ == "__main__":
    main()
