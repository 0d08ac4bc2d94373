"""SIGKILL a tiny-preset `fscal-edu train` at random instants, resume it, compare with an uninterrupted run.

    python bench/kill_resume.py [--kills 20] [--seed 0] [--steps 200] [--out runs/kill_resume]

One uninterrupted reference run, then trials until ``--kills`` of them were killed: each starts the
same run in a fresh directory, kills its process group with SIGKILL after a delay drawn uniformly
over the reference run's wall time (so start-up, steps, validations and checkpoint writes are all
hit; a trial whose run ended before its delay is kept but does not count as a kill), then runs
``--resume`` (or, if the kill came before ``config.json`` existed, the original command) until it
exits 0. A trial passes when the final ``last.pt`` weights equal the reference's and
``metrics.jsonl`` is byte-identical. Results: ``bench/results/kill_resume.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import ROOT, machine, write_results

from fscal_edu.checkpoints import read_checkpoint

STEPS = 200


def launch(args, out, resume):
    cmd = [sys.executable, "-m", "fscal_edu.cli", "train", *args, "--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=ROOT)


def state(out: Path) -> dict:
    """What the directory held right after the kill, and the phase the kill hit."""
    last = out / "last.pt"
    log = out / "metrics.jsonl"
    files = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    step = read_checkpoint(last)["step"] if last.is_file() else None
    lines = log.read_text().count("\n") if log.is_file() else None
    phase = ("start-up (nothing written)" if "config.json" not in files else
             "before the first checkpoint" if step is None else
             "after the last step" if lines is not None and lines >= step and step == STEPS else
             f"after the checkpoint of step {step}")
    return {"phase": phase, "files": files, "last_step": step, "log_lines": lines,
            "torn_log": bool(lines is not None and log.read_bytes()[-1:] not in (b"", b"\n"))}


def same(a: Path, b: Path) -> dict:
    sa, sb = read_checkpoint(a / "last.pt")["model"], read_checkpoint(b / "last.pt")["model"]
    return {"weights": all(torch.equal(sa[k], sb[k]) for k in sa),
            "metrics": (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes(),
            "best": read_checkpoint(a / "best.pt")["step"] == read_checkpoint(b / "best.pt")["step"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=str(ROOT / "runs" / "kill_resume"))
    p.add_argument("--result", default=str(ROOT / "bench" / "results" / "kill_resume.json"))
    a = p.parse_args()
    here = machine()                    # measured before the reference run
    global STEPS
    STEPS = a.steps
    args = ["--data", str(ROOT / "data_samples" / "anet_like"), "--preset", "tiny", "--steps", str(a.steps),
            "--threads", "1", "--seed", "0"]
    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    ref = launch(args, root / "reference", False)
    assert ref.wait() == 0, ref.stderr.read()
    wall = time.perf_counter() - t0
    rng = np.random.default_rng(a.seed)
    trials = []
    kills, i = 0, -1
    while kills < a.kills and i < 3 * a.kills:
        i += 1
        out = root / f"trial_{i:02d}"
        delay = float(rng.uniform(0, wall))
        proc = launch(args, out, False)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        after_kill = state(out)
        resumes = 0
        while True:
            proc = launch(args, out, (out / "config.json").exists())
            rc = proc.wait()
            resumes += 1
            if rc == 0:
                break
            err = proc.stderr.read().strip().splitlines()
            trials.append({"trial": i, "error": err[-1] if err else rc})
            break
        result = {"trial": i, "delay_s": round(delay, 2), "killed": killed, "after_kill": after_kill,
                  "resumes": resumes, **same(root / "reference", out)}
        trials.append(result)
        print(json.dumps(result), flush=True)
        shutil.rmtree(out)
    ok = all(t.get("weights") and t.get("metrics") for t in trials)
    summary = {"what": f"{a.kills} SIGKILLs of `fscal-edu train --preset tiny --steps {a.steps} --threads 1`, "
                       f"each followed by --resume", "reference_wall_s": round(wall, 2),
               "killed": sum(t.get("killed", False) for t in trials), "all_identical": ok,
               "phases": {ph: sum(t.get("after_kill", {}).get("phase") == ph for t in trials)
                          for ph in sorted({t.get("after_kill", {}).get("phase") for t in trials} - {None})},
               "trials": trials}
    summary["machine"] = here
    write_results(a.result, summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
