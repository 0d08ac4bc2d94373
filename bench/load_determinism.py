"""Same seed and thread count, idle machine vs. two CPU-bound neighbours: identical metrics.jsonl?

    python bench/load_determinism.py [--steps 100] [--threads 2] [--preset quick]

Trains the same run twice with `fscal-edu train` (seed 0): once alone, once beside two busy
`sh -c 'while :; do :; done'` loops, and compares metrics.jsonl byte for byte and the weights of
last.pt. Results: ``bench/results/load_determinism.json``. (A reduction whose order depends on
thread timing, such as CPU ``index_put_(accumulate=True)`` with duplicate indices, makes the
loaded run drift from the first step on.)
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import ROOT, machine, write_results

from fscal_edu.checkpoints import read_checkpoint


def run(out: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fscal_edu.cli", "train", *args, "--out", str(out)], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.perf_counter() - t0, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="quick")
    p.add_argument("--out", default=str(ROOT / "runs" / "load_determinism"))
    p.add_argument("--result", default=str(ROOT / "bench" / "results" / "load_determinism.json"))
    a = p.parse_args()
    here = machine()                    # measured before the idle run
    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    args = ["--data", str(ROOT / "data_samples" / "anet_like"), "--preset", a.preset, "--steps", str(a.steps),
            "--threads", str(a.threads), "--seed", "0"]
    idle_s = run(root / "idle", args)
    busy = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(2)]
    try:
        loaded_s = run(root / "loaded", args)
    finally:
        for b in busy:
            b.kill()
            b.wait()
    logs = [(root / r / "metrics.jsonl").read_bytes() for r in ("idle", "loaded")]
    w = [read_checkpoint(root / r / "last.pt")["model"] for r in ("idle", "loaded")]
    first = next((i + 1 for i, (x, y) in enumerate(zip(logs[0].splitlines(), logs[1].splitlines())) if x != y), None)
    result = {"what": f"fscal-edu train --preset {a.preset} --steps {a.steps} --threads {a.threads} --seed 0, "
                      f"idle vs beside two busy loops", "torch": torch.__version__,
              "identical_metrics_jsonl": logs[0] == logs[1], "first_differing_step": first,
              "identical_weights": all(torch.equal(w[0][k], w[1][k]) for k in w[0]),
              "records": logs[0].count(b"\n"), "wall_s": {"idle": idle_s, "loaded": loaded_s},
              "last_record": json.loads(logs[1].splitlines()[-1])}
    result["machine"] = here
    write_results(a.result, result)
    print(json.dumps(result))
    return 0 if result["identical_metrics_jsonl"] and result["identical_weights"] else 1


if __name__ == "__main__":
    sys.exit(main())
