"""The data-loading figures: the loader's share of a training step, and memory with workers.

* **share of a step**: :func:`fscal_edu.train.train` (quick preset, ``--steps`` steps, the one
  validation at the end on 8 episodes) with 0 and with 2 DataLoader workers; the training loop
  times how long it waits for each batch (``data_wait_s`` of its summary); share = wait / training
  time.
* **memory**: the same runs as subprocesses, sampled every 50 ms: the proportional set size
  (PSS, ``/proc/PID/smaps_rollup``) summed over the process and its DataLoader workers, so pages
  that forked workers share with their parent (the memory-mapped float16 feature store, the
  libraries) count once, as they occupy memory once. The plain RSS sum is printed beside it: it
  counts shared pages once per process.

Writes ``bench/results/loader.json`` and the "Data loading" section of ``docs/benchmarks.md``.

    python bench/loader.py [--steps 40] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DOC, RESULTS, ROOT, machine, replace_section, write_results

SECTION = "## Data loading"
DATA = ROOT / "data_samples" / "anet_like"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB, from ``/proc/PID/smaps_rollup``; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    fields = {ln.split(":")[0]: int(ln.split()[1]) for ln in text.splitlines()[1:] if ln.split()[1:2]}
    return fields.get("Pss", 0), fields.get("Rss", 0)


def measured_run(workers: int, steps: int, threads: int, out: Path) -> dict:
    """A training run as a subprocess; peak summed PSS / RSS of its process tree; its summary."""
    # train() itself, so that the one validation (at the last step) reads only 8 episodes
    code = (f"import json; from fscal_edu.config import get_config; from fscal_edu.train import train; "
            f"print(json.dumps(train(get_config('quick', steps={steps}, val_episodes=8), {str(DATA)!r}, "
            f"{str(out)!r}, device='cpu', threads={threads}, workers={workers}, progress=False)))")
    cmd = [sys.executable, "-c", code]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_pss = peak_rss = most = 0
    while proc.poll() is None:
        pids = tree(proc.pid)
        pss, rss = map(sum, zip(*(memory_kib(p) for p in pids)))
        peak_pss, peak_rss, most = max(peak_pss, pss), max(peak_rss, rss), max(most, len(pids))
        time.sleep(0.05)
    stdout = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"bench/loader.py: the training run failed: {stdout[-2000:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {"workers": workers, "processes": most, "peak_pss_MiB": round(peak_pss / 1024, 1),
            "peak_rss_sum_MiB": round(peak_rss / 1024, 1), "train_time_s": summary["train_time_s"],
            "data_wait_s": summary["data_wait_s"],
            "data_share": round(summary["data_wait_s"] / summary["train_time_s"], 4),
            "ms_per_step": round(1000 * summary["train_time_s"] / steps, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--out", default=str(RESULTS / "loader.json"))
    p.add_argument("--doc", default=str(DOC))
    args = p.parse_args()
    here = machine()                   # measured before the first run
    rows = []
    with tempfile.TemporaryDirectory(prefix="fscal_loader_") as tmp:
        for w in args.workers:
            rows.append(measured_run(w, args.steps, args.threads, Path(tmp) / f"w{w}"))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for r in rows:
        r["pss_vs_first"] = round(r["peak_pss_MiB"] / base["peak_pss_MiB"] - 1, 4)
    result = {"machine": here, "preset": "quick", "steps": args.steps, "threads": args.threads, "runs": rows}
    write_results(args.out, result)
    table = "\n".join(f"| {r['workers']} | {r['processes']} | {r['ms_per_step']:.0f} | {100 * r['data_share']:.1f} % | "
                      f"{r['peak_pss_MiB']:.0f} ({100 * r['pss_vs_first']:+.1f} %) | {r['peak_rss_sum_MiB']:.0f} |"
                      for r in rows)
    body = (f"\nMachine: {result['machine']}; quick preset, {args.steps} training steps "
            f"(`train(get_config('quick', steps={args.steps}, val_episodes=8), workers=W)`), {args.threads} torch thread(s).\n\n"
            "| DataLoader workers | processes | ms per step | waiting for data | peak PSS, all processes (MiB) "
            "| peak RSS summed (MiB) |\n|---|---|---|---|---|---|\n" + table + "\n\n"
            "*Waiting for data*: the time the loop blocks on the next batch (the workers' start-up "
            "included), as a share of the training time (its one validation, on 8 episodes, included). *PSS* counts a page shared by k processes as 1/k in each, so its "
            "sum is the memory the run really occupies; the RSS sum counts shared pages (the "
            "memory-mapped float16 feature store, the libraries) once per process. Reproduce: "
            "`python bench/loader.py`.\n")
    replace_section(Path(args.doc), SECTION, body)
    print(f"wrote {args.out} and the {SECTION[3:]!r} section of {args.doc}")


if __name__ == "__main__":
    main()
