"""The GPU benchmark: training throughput, memory, bf16 against fp32, 1 against all local GPUs.

One script, at most about 10 minutes on a machine with a GPU:

* for ``fp32`` and ``bf16`` (autocast) on one GPU, and ``bf16`` on all local GPUs through
  ``torchrun`` (DistributedDataParallel; skipped with a single GPU): ``--steps`` training steps
  of the preset (``full`` by default) from scratch, timed between the step callbacks after a few
  warm-up steps, the last step (which validates) excluded;
* steps/s and episodes/s (the preset's global batch per step), peak GPU memory
  (``torch.cuda.max_memory_allocated``; on the CPU the process's peak resident set size);
* the test mAP@0.5 of each run's model after those steps (``--test-episodes`` fixed 5-shot episodes).

Writes ``--out`` (``bench/results/gpu.json``) and, on CUDA, the "GPU" section of
``docs/benchmarks.md`` with the machine as measured when the script starts. On the CPU it is a smoke test of the same code
(``--preset tiny --device cpu``, run by pytest), which writes a markdown file only when ``--doc``
names one.

    python bench/gpu.py                                   # on a GPU machine: full preset
    python bench/gpu.py --preset tiny --device cpu --steps 3 --out /tmp/gpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import DOC, RESULTS, ROOT, machine, replace_section, write_results

from fscal_edu.checkpoints import load_model
from fscal_edu.config import get_config
from fscal_edu.data.episodes import World
from fscal_edu.inference import evaluate_model
from fscal_edu.train import train

SECTION = "## GPU"
DATA = ROOT / "data_samples" / "anet_like"
DEFAULT_STEPS = {"tiny": 20, "quick": 200, "full": 300}


def peak_memory_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024        # Linux: KiB


def timed_training(cfg, run: Path, *, device: str, precision: str, workers: int | None, seed: int = 0) -> dict:
    """Train ``cfg.optim.steps`` steps; time the steps between the callbacks (warm-up and the
    validating last step excluded). Rank 0's figures under torchrun; ``{}`` on the other ranks."""
    stamps = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    summary = train(cfg, DATA, run, seed=seed, device=device, precision=precision, workers=workers,
                    progress=False, callback=lambda record: stamps.append((record["step"], time.perf_counter(),
                                                                           record["loss"])))
    if not stamps:                                    # not rank 0
        return {}
    steps = cfg.optim.steps
    warm = min(5, max(1, steps // 4))
    timed = [(s, t) for s, t, _ in stamps if warm <= s <= steps - 1]       # the ends of steps warm..steps-1
    per_step = (timed[-1][1] - timed[0][1]) / max(1, len(timed) - 1) if len(timed) > 1 else float("nan")
    return {"precision": precision, "steps": steps, "timed_steps": len(timed) - 1,
            "steps_per_s": round(1 / per_step, 3), "episodes_per_s": round(cfg.optim.batch_size / per_step, 1),
            "peak_memory_MiB": round(peak_memory_mib(device), 1), "final_loss": stamps[-1][2],
            "data_wait_s": summary["data_wait_s"], "train_time_s": summary["train_time_s"]}


def test_map(run: Path, device: str, episodes: int) -> float:
    model = load_model(run / "last.pt", device=device)
    metrics, _ = evaluate_model(model, World(DATA), "test", model.cfg.data.shots, limit=episodes, device=device)
    return round(metrics["mAP@0.5"], 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multi_process(args, cfg_overrides: dict, procs: int, run: Path) -> dict:
    """The bf16 run on ``procs`` local processes (one per GPU) through torchrun; rank 0 reports."""
    report = run.with_suffix(".json")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--nnodes=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", str(Path(__file__).resolve()),
           "--worker-report", str(report), "--run-dir", str(run), "--preset", args.preset, "--device", args.device,
           "--steps", str(cfg_overrides["steps"]), "--precision", "bf16"]
    cmd += ["--workers", str(args.workers)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return json.loads(report.read_text())


def overrides_for(preset: str, steps: int) -> dict:
    """Validation only at the end, on at most 64 episodes: the timing is about training."""
    val = get_config(preset).optim.val_episodes
    return {"steps": steps, "eval_every": steps, "val_episodes": min(val, 64)}


def markdown(result: dict) -> str:
    rows = "\n".join(
        f"| {r['procs']} | {r['precision']} | {r['steps_per_s']:.2f} | {r['episodes_per_s']:.0f} | "
        f"{r['peak_memory_MiB']:.0f} | {r['test_mAP@0.5']:.3f} |" for r in result["runs"])
    return (f"\nMachine: {result['machine']}. Preset `{result['preset']}`, "
            f"{result['steps']} steps from scratch per run, {result['workers']} DataLoader workers per process, "
            f"global batch {result['batch_size']} episodes.\n\n"
            "| processes (GPUs) | precision | steps/s | episodes/s | peak memory per process (MiB) | "
            f"test mAP@0.5 after {result['steps']} steps ({result['test_episodes']} episodes) |\n"
            "|---|---|---|---|---|---|\n" + rows + "\n\n"
            "Steps are timed between the training loop's callbacks after the warm-up steps, without "
            "the last (validating) step.\n\nReproduce: `python bench/gpu.py` (`--preset`, `--steps`; "
            "about 10 minutes for the full preset).\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=["tiny", "quick", "full"], default="full")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default: 300 full, 200 quick, 20 tiny)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers per process (default: cores per GPU - 1, 2 to 8; 0 on the CPU)")
    p.add_argument("--test-episodes", type=int, default=300)
    p.add_argument("--procs", type=int, default=None,
                   help="processes of the multi-process run (default: all local GPUs; 1 on the CPU)")
    p.add_argument("--out", default=str(RESULTS / "gpu.json"))
    p.add_argument("--doc", default=None,
                   help="markdown file for the section (default: docs/benchmarks.md on CUDA, none on the CPU)")
    p.add_argument("--worker-report", default=None, help=argparse.SUPPRESS)      # torchrun's side of multi_process
    p.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    args = p.parse_args()
    steps = args.steps or DEFAULT_STEPS[args.preset]
    cfg = get_config(args.preset, **overrides_for(args.preset, steps))
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: --device cuda, but torch sees no GPU (use --device cpu for the smoke test)")
    if args.worker_report:                                 # inside torchrun: one rank of the multi-process run
        r = timed_training(cfg, Path(args.run_dir), device=args.device, precision=args.precision, workers=args.workers)
        if r:
            Path(args.worker_report).write_text(json.dumps(r))
        return

    here = machine(args.device)             # measured before the first run (GPU, CPU, load)
    procs = args.procs or (torch.cuda.device_count() if args.device == "cuda" else 1)
    if args.workers is None:          # on a GPU the batches must keep up: a few workers per process
        args.workers = max(2, min(8, (os.cpu_count() or 2) // procs - 1)) if args.device == "cuda" else 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="fscal_gpu_bench_") as tmp:
        for precision, n in [("fp32", 1), ("bf16", 1)] + ([("bf16", procs)] if procs > 1 else []):
            run = Path(tmp) / f"{precision}_{n}"
            start = time.perf_counter()
            r = (timed_training(cfg, run, device=args.device, precision=precision, workers=args.workers) if n == 1
                 else multi_process(args, overrides_for(args.preset, steps), n, run))
            r.update(procs=n, wall_s=round(time.perf_counter() - start, 1),
                     **{"test_mAP@0.5": test_map(run, args.device, args.test_episodes)})
            print(json.dumps(r), flush=True)
            runs.append(r)
    result = {"machine": here, "host": platform.node(), "device": args.device,
              "torch": torch.__version__, "preset": args.preset, "steps": steps, "batch_size": cfg.optim.batch_size,
              "workers": args.workers, "test_episodes": args.test_episodes, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, result)
    doc = args.doc or (str(DOC) if args.device == "cuda" else None)
    if doc:
        replace_section(Path(doc), SECTION, markdown(result))
    print(f"wrote {out}" + (f" and the {SECTION[3:]!r} section of {doc}" if doc else ""))


if __name__ == "__main__":
    main()
